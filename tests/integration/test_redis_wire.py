"""serving/redis_wire.py against the real Redis: ordering, batching, errors, scripts, timeouts."""

from __future__ import annotations

import asyncio
import socket
import uuid

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from lambdarec.settings import Settings
from serving import redis_wire
from serving.redis_wire import PipelinedRedis

pytestmark = pytest.mark.integration


async def test_concurrent_commands_leave_in_one_write_and_get_their_own_replies(
    redis_service: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = PipelinedRedis(redis_service.redis.url, 2.0)
    p = f"wire:{uuid.uuid4().hex}:"
    writes: list[int] = []
    flush = redis_wire._Protocol.flush

    def counting(self: redis_wire._Protocol) -> None:
        writes.append(len(self.out))
        flush(self)

    monkeypatch.setattr(redis_wire._Protocol, "flush", counting)
    try:
        await r.execute("PING")  # connected
        writes.clear()
        await asyncio.gather(*(r.execute("SET", f"{p}{i}", f"v{i}", "EX", 60) for i in range(50)))
        got = await asyncio.gather(*(r.execute("GET", f"{p}{i}") for i in range(50)))
        assert got == [f"v{i}".encode() for i in range(50)]
        assert writes == [50, 50]  # each gather's commands in one write
    finally:
        await r.execute("DEL", *[f"{p}{i}" for i in range(50)])
        r.close()


async def test_an_error_reply_fails_its_command_only(redis_service: Settings) -> None:
    r = PipelinedRedis(redis_service.redis.url, 2.0)
    key = f"wire:{uuid.uuid4().hex}"
    try:
        ok, bad, after = await asyncio.gather(
            r.execute("SET", key, "x", "EX", 60),
            r.execute("INCR", key),  # not an integer
            r.execute("GET", key),
            return_exceptions=True,
        )
        assert ok == b"OK" and after == b"x"
        assert isinstance(bad, ResponseError) and "not an integer" in str(bad)
    finally:
        await r.execute("DEL", key)
        r.close()


async def test_evalsha_loads_a_script_redis_does_not_know(redis_service: Settings) -> None:
    r = PipelinedRedis(redis_service.redis.url, 2.0)
    script = f"return {{ARGV[1], '{uuid.uuid4().hex}'}}"  # a script this Redis has never seen
    try:
        first = await r.evalsha(script, [], ["a"])
        again = await r.evalsha(script, [], ["b"])  # now by its sha
        assert first[0] == b"a" and again[0] == b"b" and first[1] == again[1]
    finally:
        r.close()


async def test_a_silent_server_times_out_and_the_next_command_reconnects() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    r = PipelinedRedis(f"redis://127.0.0.1:{port}/0", 0.2)
    try:
        with pytest.raises(RedisTimeoutError, match="did not answer GET within 200 ms"):
            await r.execute("GET", "k")
        first = r._proto
        await asyncio.sleep(0)  # the abort completes on the next loop iteration
        assert first is not None and first.transport is None  # dropped: a stalled Redis collects no queue
        with pytest.raises(RedisTimeoutError):
            await r.execute("GET", "k")
        assert r._proto is not first  # a new connection
    finally:
        r.close()
        listener.close()


async def test_nothing_listening_is_a_connection_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = PipelinedRedis(f"redis://127.0.0.1:{port}/0", 1.0)
    with pytest.raises(RedisConnectionError, match=f"cannot connect to Redis at 127.0.0.1:{port}"):
        await r.execute("PING")


def test_urls() -> None:
    r = PipelinedRedis("rediss://u:p%40ss@cache.example:6390/3", 1.0)
    assert (r.tls, r.host, r.port, r.db, r.username, r.password) == (
        True,
        "cache.example",
        6390,
        3,
        "u",
        "p@ss",
    )
    with pytest.raises(ValueError, match=r"LAMBDAREC_REDIS__URL 'unix:///tmp/r\.sock'"):
        PipelinedRedis("unix:///tmp/r.sock", 1.0)


def test_a_new_event_loop_gets_a_new_connection(redis_service: Settings) -> None:
    r = PipelinedRedis(redis_service.redis.url, 2.0)
    assert asyncio.run(r.execute("PING")) == b"PONG"
    first = r._proto
    assert asyncio.run(r.execute("PING")) == b"PONG"  # the first loop is closed
    assert r._proto is not first
    r.close()
