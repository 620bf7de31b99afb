# lambdarec's own processes (stream worker, API, batch scheduler). The services themselves come
# from docker-compose.yml. Spark runs in local mode inside the batch container by default; set
# LAMBDAREC_SPARK__MASTER to use a cluster.

# Stage 1: Spark extras (Delta, hadoop-aws, JDBC) from Maven Central, never at run time.
FROM maven:3.9-eclipse-temurin-17 AS jars
COPY infra/spark/pom.xml /build/pom.xml
RUN mvn -q -f /build/pom.xml dependency:copy-dependencies -DoutputDirectory=/jars

FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends openjdk-17-jre-headless curl \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY requirements.lock pyproject.toml README.md ./
RUN pip install --no-cache-dir uv==0.13.9 && uv pip install --system --no-cache -r requirements.lock
COPY lambdarec lambdarec
COPY infra infra
COPY schemas schemas
COPY streams streams
COPY batch batch
COPY serving serving
RUN uv pip install --system --no-deps -e .
COPY --from=jars /jars /var/lib/lambdarec/spark-jars
ENV LAMBDAREC_VAR_DIR=/var/lib/lambdarec
RUN touch /var/lib/lambdarec/spark-jars.installed
EXPOSE 8000
CMD ["lambdarec", "--help"]
