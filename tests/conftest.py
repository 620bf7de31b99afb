"""Shared fixtures. Integration fixtures start the *real* service (idempotent: seconds when it is
already up) through infra, exactly as ``lambdarec infra up NAME`` would."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from infra import services
from lambdarec.settings import Settings, get_settings


@pytest.fixture
def listener() -> Iterator[int]:
    """A port on 127.0.0.1 that this test process listens on (for "port already taken" tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.fixture(scope="session")
def settings() -> Settings:
    return get_settings()


def _up(settings: Settings, name: str) -> None:
    services.up(settings, [name])


@pytest.fixture(scope="session")
def kafka(settings: Settings) -> Settings:
    """Kafka up, project topics created. Returns the settings (use settings.kafka...)."""
    _up(settings, "kafka")
    return settings


@pytest.fixture(scope="session")
def postgres(settings: Settings) -> Settings:
    """Postgres+pgvector up and migrated."""
    _up(settings, "postgres")
    from schemas.migrate import migrate

    migrate(settings)
    return settings


@pytest.fixture(scope="session")
def redis_service(settings: Settings) -> Settings:
    _up(settings, "redis")
    return settings


@pytest.fixture(scope="session")
def s3(settings: Settings) -> Settings:
    """MinIO (or the configured S3) up with buckets created."""
    _up(settings, "minio")
    return settings


@pytest.fixture(scope="session")
def spark_jars(settings: Settings, s3: Settings) -> Settings:
    _up(settings, "spark")
    return settings


@pytest.fixture
def spark(settings: Settings, spark_jars: Settings):  # type: ignore[no-untyped-def]
    """A SparkSession with Delta and s3a configured (jars installed once under var/).

    Function-scoped on purpose: get_spark caches one session per process and replaces it when a
    test asks for another configuration (the batch tests do), so holding one across tests would
    hand out a stopped session. Asking again is free when the cached one still fits."""
    from infra.spark import get_spark

    return get_spark(settings)


@pytest.fixture(scope="session")
def scratch_postgres(postgres: Settings) -> Iterator[Settings]:
    """A throwaway, fully migrated database on the managed server (dropped at the end), for tests
    whose state would disturb others sharing the main database (e.g. a running experiment changes
    what every API process serves)."""
    from infra.postgres import scratch_database
    from schemas.migrate import migrate

    with scratch_database(postgres, prefix="lambdarec_exp") as s:
        migrate(s)
        yield s


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of headless Chromium, installed from Debian's package when missing (infra/chromium.py)."""
    from infra.chromium import ensure_chromium

    return ensure_chromium()
