"""The one SparkSession factory: Delta Lake + s3a on ``settings.s3``, jars from ``var/spark-jars``.

Every Spark job (batch ALS, compaction, backfills, tests) calls :func:`get_spark`; nothing else
builds a session, so master, memory, jars and object-store credentials are configured in one place.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from infra.errors import InfraError
from lambdarec.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

_lock = threading.Lock()
_session: SparkSession | None = None
_session_conf: dict[str, str] = {}


def to_spark_path(path: str | Path) -> str:
    """A lake path as Spark's Hadoop filesystems want it.

    ``s3://bucket/x`` (the form used in settings and by delta-rs/boto3) becomes ``s3a://bucket/x``
    (Hadoop's S3A connector); ``s3a://`` and local paths are returned unchanged.
    """
    p = str(path)
    if p.startswith("s3://"):
        return "s3a://" + p[len("s3://") :]
    return p


def jar_paths(settings: Settings) -> list[Path]:
    """The extra jars ``lambdarec infra up spark`` put in ``settings.spark.jars_dir``."""
    from infra.spark import SparkService

    svc = SparkService(settings)
    if not svc.is_installed():
        raise InfraError(
            f"Spark jars are missing in {settings.spark.jars_dir} (LAMBDAREC_SPARK__JARS_DIR): "
            "run `lambdarec infra up spark`"
        )
    return svc.jars()


def cds_java_options(archive: Path) -> str:
    """JVM options that map the class-data-sharing archive made by ``infra up spark``.

    AppCDS cuts the driver JVM's class loading (~40% of session start CPU). A stale or foreign
    archive (other JDK, other pyspark) is rejected by the JVM itself and silently ignored.
    """
    if not archive.exists() or " " in str(archive):
        return ""
    return f"-XX:SharedArchiveFile={archive} -Xlog:cds=off -Xlog:cds+dynamic=off"


def spark_conf(settings: Settings, app_name: str = "lambdarec") -> dict[str, str]:
    """Every Spark setting lambdarec uses, as a plain dict (what :func:`get_spark` applies)."""
    from infra.spark import SparkService

    sp, s3 = settings.spark, settings.s3
    local = sp.master.startswith("local")
    jars = jar_paths(settings)
    endpoint = urlparse(s3.endpoint_url)
    conf: dict[str, str] = {
        "spark.master": sp.master,
        "spark.app.name": app_name,
        "spark.driver.memory": sp.driver_memory,
        "spark.sql.shuffle.partitions": str(sp.shuffle_partitions),
        # Delta Lake
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        # Delta's log replay defaults to 50 partitions: far too many for small local tables
        "spark.databricks.delta.snapshotPartitions": str(max(1, sp.shuffle_partitions)),
        # s3a on settings.s3 (MinIO or any S3-compatible store)
        "spark.hadoop.fs.s3a.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "spark.hadoop.fs.s3a.endpoint": s3.endpoint_url,
        "spark.hadoop.fs.s3a.endpoint.region": s3.region,
        "spark.hadoop.fs.s3a.access.key": s3.access_key,
        "spark.hadoop.fs.s3a.secret.key": s3.secret_key,
        "spark.hadoop.fs.s3a.aws.credentials.provider": (
            "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider"
        ),
        "spark.hadoop.fs.s3a.path.style.access": "true",
        "spark.hadoop.fs.s3a.connection.ssl.enabled": str(endpoint.scheme == "https").lower(),
        # plain JSSE: the optional wildfly-openssl jar is not installed
        "spark.hadoop.fs.s3a.ssl.channel.mode": "default_jsse",
        # quiet, small and fast on a laptop-sized box
        "spark.log.level": "WARN",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.warehouse.dir": str(settings.var_dir / "spark-warehouse"),
    }
    if java_opts := cds_java_options(SparkService(settings).cds_archive):
        conf["spark.driver.extraJavaOptions"] = java_opts
    if local:
        conf.update(
            {
                # A local master's executor is the driver's own JVM, so the jars go on that JVM's
                # class path at launch and nowhere else. Listed in spark.jars (even as local: URIs)
                # Spark 4 copies all ~700 MB of them into a temp userFiles dir per session, which a
                # killed job leaves behind in /tmp.
                "spark.driver.extraClassPath": os.pathsep.join(str(j) for j in jars),
                "spark.driver.host": "127.0.0.1",
                "spark.driver.bindAddress": "127.0.0.1",
                "spark.default.parallelism": str(sp.shuffle_partitions),
            }
        )
    else:
        # A cluster master: the driver serves spark.jars and every executor downloads them at
        # application start (~700 MB each, almost all the AWS SDK bundle). Executors must reach the
        # driver, or put the same jars on every node (spark.executor.extraClassPath in the
        # cluster's spark-defaults.conf) and keep this list for the driver.
        conf["spark.jars"] = ",".join(str(j) for j in jars)
    return conf


def get_spark(settings: Settings, app_name: str = "lambdarec") -> SparkSession:
    """The process-wide SparkSession for ``settings`` (created on first call, then reused).

    Calling it again with settings that change the Spark configuration stops the old session and
    starts a new one; JVM-level options (driver memory, the jar list on the driver classpath) only
    take effect in a fresh process.
    """
    global _session, _session_conf
    conf = spark_conf(settings, app_name)
    with _lock:
        if _session is not None and _session._sc._jsc is not None:  # still alive
            if conf == _session_conf:
                return _session
            log.warning("Spark settings changed: restarting the SparkSession")
            _session.stop()
            _session = None
        _session = _build(conf)
        _session_conf = conf
        return _session


def _build(conf: dict[str, str]) -> SparkSession:
    from pyspark.sql import SparkSession

    if conf["spark.master"].startswith("local"):
        # bind and advertise loopback only (also skips the "hostname resolves to a loopback
        # address" lookup and its warning)
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = SparkSession.builder
    for k, v in conf.items():
        builder = builder.config(k, v)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session


def stop_spark() -> None:
    """Stop the process-wide session (tests, CLI commands that finish)."""
    global _session
    with _lock:
        if _session is not None:
            _session.stop()
            _session = None


def train_cds(archive: Path, conf: dict[str, str]) -> None:
    """Run a small local Delta/parquet workload in a JVM that dumps the classes it loaded to
    ``archive`` when it exits (``-XX:ArchiveClassesAtExit``). Called in a child process by
    ``SparkService``; never from a process that already has a session."""
    import tempfile

    conf = {
        **conf,
        "spark.master": "local[2]",
        "spark.app.name": "lambdarec-cds-training",
        "spark.driver.extraJavaOptions": (
            f"-XX:ArchiveClassesAtExit={archive} -Xlog:cds=off -Xlog:cds+dynamic=off"
        ),
    }
    spark = _build(conf)
    with tempfile.TemporaryDirectory(prefix="lambdarec-cds-") as tmp:
        df = spark.createDataFrame([(1, "a", 0.5), (2, "b", 1.5)], ["id", "user", "score"])
        path = str(Path(tmp) / "t")
        df.write.format("delta").save(path)
        df.write.format("delta").mode("append").save(path)
        spark.read.format("delta").load(path).groupBy("user").count().collect()
        spark.read.format("delta").option("versionAsOf", 0).load(path).collect()
        spark.sql(f"DESCRIBE HISTORY delta.`{path}`").collect()
        df.write.parquet(str(Path(tmp) / "p"))
        spark.read.parquet(str(Path(tmp) / "p")).collect()
    gateway_proc = spark.sparkContext._gateway.proc  # type: ignore[union-attr]
    spark.stop()
    # the JVM exits (and writes the archive) when its stdin closes; wait for it
    gateway_proc.stdin.close()
    gateway_proc.wait(timeout=300)


if __name__ == "__main__":  # python -m infra.spark.session ARCHIVE CONF_JSON
    import json
    import sys

    train_cds(Path(sys.argv[1]), json.loads(sys.argv[2]))
