"""Redis cache of recommendation lists, keyed by the speed layer's per-user version.

Key scheme: :mod:`schemas.cache_keys` (the contract with the speed layer, which ``INCR``s
``rec:ver:{user}`` after committing new events; every older list becomes unreachable at once).

Why two levels of stampede protection: an in-process single-flight (one computation per key
per worker, others await its future) plus a short Redis lock (``SET NX PX``) across workers
and hosts; a follower that does not get the lock waits up to ``cache_wait_ms`` for the leader's
list, then computes itself (a slow leader must not stall everybody).

Why one Lua script for a hit (:meth:`RecCache.lookup`): the version and the list are two
dependent GETs, i.e. two round trips through redis-py per cached answer; the script reads the
version and the list under it in one. (It builds the list key inside Redis, so in Redis Cluster
both keys would need a common hash tag; lambdarec runs one Redis.)

Why a breaker: when Redis is down every call would wait its socket timeout; after one failure
the cache is bypassed for ``_BREAK_SEC`` and lists are served uncached.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

from lambdarec.settings import Settings
from schemas.cache_keys import LIST_PREFIX, list_key, version_key
from serving.redis_wire import PipelinedRedis

log = logging.getLogger(__name__)

_BREAK_SEC = 2.0
LOCK_PREFIX = "rec:lock:"
#: seconds a degraded list stays cached: sheds load while a store is slow, recovers quickly
DEGRADED_TTL = 30

#: KEYS[1] = version key; ARGV = the list key around its version -> {version or '0', list or nil}
_LOOKUP = """
local v = redis.call('GET', KEYS[1]) or '0'
return {v, redis.call('GET', ARGV[1] .. v .. ARGV[2])}
"""


#: :data:`_LOOKUP` that, on a miss, also takes the single-flight lock of the list key (``SET NX PX``):
#: ARGV[3] = lock prefix, ARGV[4] = lock ms -> {version, list} or {version, nil, 1 = locked / 0}
_LOOKUP_LOCK = """
local v = redis.call('GET', KEYS[1]) or '0'
local key = ARGV[1] .. v .. ARGV[2]
local list = redis.call('GET', key)
if list then return {v, list} end
local got = redis.call('SET', ARGV[3] .. key, '1', 'NX', 'PX', ARGV[4])
if got then return {v, false, 1} end
return {v, false, 0}
"""


#: KEYS[1] = list key, KEYS[2] = its lock; ARGV = list, TTL s: store the list and drop the lock
#: (one EVALSHA: a redis-py pipeline of the same two commands cost ~25 % more client CPU)
_STORE = """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('DEL', KEYS[2])
return 1
"""


def list_key_parts(user_id: str, variant: str, digest: str) -> tuple[str, str]:
    """``list_key`` split around the version (what :data:`_LOOKUP` joins back together)."""
    key = list_key(user_id, 0, variant, digest)
    head = len(LIST_PREFIX) + len(user_id) + 1
    return key[:head], key[head + 1 :]


class RecCache:
    """Async Redis access for serving (lists, versions, locks); never raises on Redis failure."""

    def __init__(self, settings: Settings) -> None:
        cfg = settings.serving
        timeout = cfg.redis_timeout_ms / 1000
        self.client = aioredis.Redis.from_url(
            settings.redis.url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            max_connections=64,
        )
        #: every command of this class goes through one auto-pipelined connection
        #: (serving/redis_wire.py); ``client`` (redis-py) serves the other users of the app's Redis
        #: (the rate-limit pipelines in serving/security.py, INCR in the users route, PING)
        self.wire = PipelinedRedis(settings.redis.url, timeout)
        self.ttl = cfg.cache_ttl_sec
        self.lock_ms = cfg.cache_lock_ms
        self.wait_ms = cfg.cache_wait_ms
        self._broken_until = 0.0
        self._inflight: dict[str, asyncio.Future[Any]] = {}

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._broken_until

    def _trip(self, exc: BaseException) -> None:
        if self.available:
            log.warning("redis unavailable (%s): serving uncached for %.0f s", exc, _BREAK_SEC)
        self._broken_until = time.monotonic() + _BREAK_SEC

    async def _call(self, coro: Awaitable[Any]) -> Any:
        try:
            return await coro
        except (aioredis.RedisError, OSError, TimeoutError) as exc:
            self._trip(exc)
            return None

    async def version(self, user_id: str) -> int | None:
        """The user's cache version (0 when never bumped); None when Redis is unavailable."""
        if not self.available:
            return None
        raw = await self._call(self.wire.execute("GET", version_key(user_id)))
        if raw is None:
            return 0 if self.available else None
        return int(raw)

    async def lookup(self, user_id: str, variant: str, digest: str) -> tuple[int | None, bytes | None]:
        """``(version, cached list)`` in one round trip; ``(None, None)`` when Redis is unavailable."""
        if not self.available:
            return None, None
        head, tail = list_key_parts(user_id, variant, digest)
        res = await self._call(self.wire.evalsha(_LOOKUP, [version_key(user_id)], [head, tail]))
        if res is None:
            return None, None
        return int(res[0]), res[1]

    async def lookup_or_lock(
        self, user_id: str, variant: str, digest: str
    ) -> tuple[int | None, bytes | None, bool]:
        """:meth:`lookup`, and on a miss the list key's lock in the same round trip:
        ``(version, list, locked)``. An uncached list used to cost three round trips (lookup,
        ``SET NX``, store); pass ``locked`` on to :meth:`get_or_compute`."""
        if not self.available:
            return None, None, False
        head, tail = list_key_parts(user_id, variant, digest)
        res = await self._call(
            self.wire.evalsha(_LOOKUP_LOCK, [version_key(user_id)], [head, tail, LOCK_PREFIX, self.lock_ms])
        )
        if res is None:
            return None, None, False
        return int(res[0]), res[1], len(res) > 2 and int(res[2]) == 1

    async def get(self, key: str) -> bytes | None:
        if not self.available:
            return None
        return await self._call(self.wire.execute("GET", key))

    async def put(self, key: str, value: bytes, ttl: int | None = None) -> None:
        if self.available:
            await self._call(self.wire.execute("SET", key, value, "EX", ttl or self.ttl))

    async def get_or_compute(
        self,
        key: str,
        compute: Callable[[], Awaitable[tuple[bytes, bool]]],
        *,
        known_miss: bool = False,
        locked: bool | None = None,
    ) -> tuple[bytes, bool]:
        """``(value, cache_hit)``. ``compute`` returns ``(value, complete)``: a degraded
        answer is cached for ``DEGRADED_TTL`` only (it sheds load under overload; an hour would
        hide the recovery). ``known_miss``: the caller just looked (:meth:`lookup`), skip the GET.
        ``locked``: what :meth:`lookup_or_lock` found (True: this caller holds the lock; False:
        somebody else does); None: take the lock here."""
        if not known_miss:
            cached = await self.get(key)
            if cached is not None:
                return cached, True
        fut = self._inflight.get(key)
        if fut is not None:  # same worker, same key: share the leader's result
            value, _ = await asyncio.shield(fut)
            return value, False
        fut = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            result = await self._lead(key, compute, locked)
            fut.set_result(result)
            return result[0], False
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved: followers may not exist
            raise
        finally:
            self._inflight.pop(key, None)

    async def _lead(
        self, key: str, compute: Callable[[], Awaitable[tuple[bytes, bool]]], locked: bool | None = None
    ) -> tuple[bytes, bool]:
        lock = LOCK_PREFIX + key
        if self.available:
            if locked is None:
                got = await self._call(self.wire.execute("SET", lock, b"1", "NX", "PX", self.lock_ms))
            else:
                got = True if locked else None
            if got is None and self.available and self.wait_ms > 0:
                # another process computes this key: wait a little for its list
                deadline = time.monotonic() + self.wait_ms / 1000
                while time.monotonic() < deadline:
                    await asyncio.sleep(0.02)
                    cached = await self.get(key)
                    if cached is not None:
                        return cached, True
        value, complete = await compute()
        if self.available:  # store the list and drop the lock in one round trip
            await self._call(
                self.wire.evalsha(_STORE, [key, lock], [value, self.ttl if complete else DEGRADED_TTL])
            )
        return value, complete

    @staticmethod
    def key(user_id: str, version: int, variant: str, digest: str) -> str:
        return list_key(user_id, version, variant, digest)

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except Exception:
            return False

    async def close(self) -> None:
        self.wire.close()
        await self.client.aclose()
