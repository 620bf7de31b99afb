"""One multiplexed, auto-pipelined Redis connection for the serving hot path.

Why not redis-py here: each of its async commands costs ~85 µs of CPU on this kind of VM (a
pooled connection taken and returned, a retry wrapper, ``asyncio.wait_for`` spawning a task, one
write and one wake-up per command), against ~35 µs for the same round trip on a bare asyncio
connection. A cache miss makes two calls and a hit one, so redis-py was ~30 % of an uncached
list's API CPU. Here every command issued during one event-loop iteration (concurrent requests
of a worker) leaves in a single write, and replies, parsed by hiredis (what redis-py uses too),
are matched to their commands in order: Redis answers a connection's commands in the order it
received them.

Only what the cache needs: ``execute`` and ``evalsha`` (with the script sent again on
``NOSCRIPT``). Errors are redis-py's exception types, so callers catch one family. When the
oldest unanswered command is past the timeout, every pending command fails and the connection is
dropped (a stalled Redis should not collect a queue); the next command reconnects.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from typing import Any
from urllib.parse import unquote, urlparse

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError


def _pack(args: tuple[Any, ...]) -> bytes:
    return hiredis.pack_command(args)


class _Protocol(asyncio.Protocol):
    """One Redis connection: commands queued per loop iteration, replies matched in order, and a
    watchdog instead of a timer per command (``asyncio.timeout`` per call cost ~20 µs)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.loop = asyncio.get_running_loop()
        self.reader = hiredis.Reader()
        #: (future, command name, deadline) of every command sent and not answered yet
        self.waiting: deque[tuple[asyncio.Future[Any], Any, float]] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost: BaseException | None = None
        #: commands packed since the last write; flushed once per loop iteration
        self.out: list[bytes] = []
        self._watching = False

    def send(self, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        if self.transport is None:
            fut.set_exception(RedisConnectionError(f"Redis connection lost: {self.lost}"))
            return fut
        self.waiting.append((fut, args[0], loop.time() + self.timeout))
        if not self.out:
            loop.call_soon(self.flush)
        self.out.append(_pack(args))
        if not self._watching:
            self._watching = True
            loop.call_later(self.timeout / 4, self._watch)
        return fut

    def flush(self) -> None:
        out, self.out = self.out, []
        if self.transport is not None:  # else connection_lost has failed the futures already
            self.transport.write(b"".join(out))

    def _watch(self) -> None:
        """The oldest unanswered command past its deadline: Redis is stalled or gone. Fail every
        pending command and drop the connection (the next command reconnects)."""
        self._watching = False
        if not self.waiting or self.transport is None:
            return
        loop = asyncio.get_running_loop()
        if loop.time() >= self.waiting[0][2]:
            name = self.waiting[0][1]
            name = name.decode() if isinstance(name, bytes) else str(name)
            self.fail(RedisTimeoutError(f"Redis did not answer {name} within {self.timeout * 1000:.0f} ms"))
            self.transport.abort()
            return
        self._watching = True
        loop.call_later(self.timeout / 4, self._watch)

    def fail(self, exc: BaseException) -> None:
        while self.waiting:
            fut = self.waiting.popleft()[0]
            if not fut.done():
                fut.set_exception(exc)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            fut = self.waiting.popleft()[0]
            if fut.done():  # cancelled by its caller
                continue
            if isinstance(reply, hiredis.ReplyError):
                msg = str(reply)
                fut.set_exception(NoScriptError(msg) if msg.startswith("NOSCRIPT") else ResponseError(msg))
            else:
                fut.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or RedisConnectionError("Redis closed the connection")
        self.transport = None
        self.fail(RedisConnectionError(f"Redis connection lost: {self.lost}"))


class PipelinedRedis:
    """``await execute("GET", key)``: one connection, commands of a loop iteration in one write."""

    def __init__(self, url: str, timeout: float) -> None:
        u = urlparse(url)
        if u.scheme not in {"redis", "rediss"}:
            raise ValueError(f"LAMBDAREC_REDIS__URL {url!r}: serving speaks redis:// or rediss:// (TLS)")
        self.tls = u.scheme == "rediss"
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port or 6379
        self.db = int(u.path.lstrip("/") or 0)
        self.password = unquote(u.password) if u.password else None
        self.username = unquote(u.username) if u.username else None
        self.timeout = timeout
        self._proto: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None
        self._sha: dict[str, str] = {}

    async def _connection(self) -> _Protocol:
        proto = self._proto
        if proto is not None and proto.transport is not None:
            if proto.loop is asyncio.get_running_loop():
                return proto
            self.close()  # made on another event loop (tests, a restarted app): unusable here
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
        try:
            return await asyncio.shield(self._connecting)
        finally:
            if self._connecting is not None and self._connecting.done():
                self._connecting = None

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.timeout):
            try:
                _, proto = await loop.create_connection(
                    lambda: _Protocol(self.timeout), self.host, self.port, ssl=self.tls or None
                )
            except OSError as exc:
                raise RedisConnectionError(
                    f"cannot connect to Redis at {self.host}:{self.port}: {exc}"
                ) from exc
            self._proto = proto
            hello: list[tuple[Any, ...]] = []
            if self.password is not None:
                hello.append(
                    ("AUTH", self.password)
                    if self.username is None
                    else ("AUTH", self.username, self.password)
                )
            if self.db:
                hello.append(("SELECT", self.db))
            for args in hello:
                await proto.send(args)
        return proto

    async def execute(self, *args: Any) -> Any:
        proto = await self._connection()
        if proto.transport is None:  # lost while we waited for it
            proto = await self._connection()
        return await proto.send(args)

    async def evalsha(self, script: str, keys: list[Any], args: list[Any]) -> Any:
        """``EVALSHA``; on ``NOSCRIPT`` (a restarted or flushed Redis) ``EVAL`` loads it again."""
        sha = self._sha.get(script)
        if sha is None:
            sha = self._sha[script] = hashlib.sha1(script.encode()).hexdigest()
        try:
            return await self.execute("EVALSHA", sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self.execute("EVAL", script, len(keys), *keys, *args)

    def close(self) -> None:
        proto, self._proto = self._proto, None
        if proto is not None and proto.transport is not None:
            if proto.loop.is_closed():  # its loop can no longer run the abort; the socket goes with it
                proto.transport = None
                return
            proto.transport.abort()
