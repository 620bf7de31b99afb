"""The real redis-server that infra starts: basic commands and the cache configuration."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from infra.errors import InfraError
from infra.redis import RedisService
from lambdarec.settings import RedisSettings, Settings

pytestmark = pytest.mark.integration


@pytest.fixture
def r(redis_service: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_service.redis.url, decode_responses=True)
    yield client
    client.close()


def _bytes(size: str) -> int:
    """Redis' own memory units: k/m/g are powers of 1000, kb/mb/gb powers of 1024."""
    units = {"k": 1000, "m": 1000**2, "g": 1000**3, "kb": 1024, "mb": 1024**2, "gb": 1024**3}
    s = size.strip().lower()
    for unit in sorted(units, key=len, reverse=True):
        if s.endswith(unit):
            return int(s[: -len(unit)]) * units[unit]
    return int(s)


def test_set_get_expire(r: redis.Redis) -> None:
    key = f"lambdarec-test:{uuid.uuid4().hex}"
    assert r.set(key, "v1") is True
    assert r.get(key) == "v1"
    assert r.ttl(key) == -1  # no expiry yet
    assert r.pexpire(key, 300) is True
    assert 0 < r.pttl(key) <= 300
    deadline = time.monotonic() + 5
    while r.exists(key) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert r.get(key) is None
    assert r.exists(key) == 0


def test_cache_config_from_settings(r: redis.Redis, redis_service: Settings) -> None:
    assert r.config_get("maxmemory-policy") == {"maxmemory-policy": "allkeys-lru"}
    assert int(r.config_get("maxmemory")["maxmemory"]) == _bytes(redis_service.redis.maxmemory)
    assert r.config_get("save") == {"save": ""}  # a cache: no snapshots
    assert r.config_get("appendonly") == {"appendonly": "no"}
    assert r.config_get("bind")["bind"] == "127.0.0.1"
    assert Path(r.config_get("dir")["dir"]) == redis_service.var_dir / "redis"


def test_service_health_version_pid(redis_service: Settings, r: redis.Redis) -> None:
    svc = RedisService(redis_service)
    assert svc.ping()
    version = svc.version()
    assert version == r.info("server")["redis_version"]
    assert int(version.split(".")[0]) >= 6
    st = svc.status()
    assert st.healthy and st.version == version and st.pid is not None
    assert st.rss_mb is not None and st.rss_mb > 0
    assert st.pid == r.info("server")["process_id"]  # the pid file names the server that answers


def test_second_up_reuses_the_running_server(redis_service: Settings, r: redis.Redis) -> None:
    before = r.info("server")["run_id"]
    took = RedisService(redis_service).up()
    assert took < 5
    assert r.info("server")["run_id"] == before


def test_start_on_a_taken_port_names_the_setting(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        s = Settings(var_dir=tmp_path / "var", redis=RedisSettings(url=f"redis://127.0.0.1:{port}/0"))
        svc = RedisService(s)
        assert not svc.ping()  # something listens, but it is not Redis
        with pytest.raises(InfraError) as exc:
            svc.up()
    assert "LAMBDAREC_REDIS__URL" in str(exc.value)
    assert f"port {port}" in str(exc.value)
    assert svc.pidfile.read() is None
