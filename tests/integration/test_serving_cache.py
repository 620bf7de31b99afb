"""RecCache on the real Redis: single flight per key, version invalidation, degraded TTL."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from lambdarec.settings import Settings
from schemas.cache_keys import version_key
from serving.cache import DEGRADED_TTL, LOCK_PREFIX, RecCache

pytestmark = pytest.mark.integration


async def test_concurrent_misses_compute_once_and_versions_invalidate(redis_service: Settings) -> None:
    cache = RecCache(redis_service)
    user = f"cache-{uuid.uuid4().hex[:8]}"
    calls = 0

    async def compute() -> tuple[bytes, bool]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.1)
        return b"list-%d" % calls, True

    try:
        v0 = await cache.version(user)
        assert v0 == 0
        key0 = cache.key(user, v0, "default", "-")
        results = await asyncio.gather(*(cache.get_or_compute(key0, compute) for _ in range(20)))
        assert calls == 1 and {r[0] for r in results} == {b"list-1"}
        assert (await cache.get_or_compute(key0, compute)) == (b"list-1", True)

        await cache.client.incr(version_key(user))  # what the speed layer does
        v1 = await cache.version(user)
        assert v1 == 1
        value, hit = await cache.get_or_compute(cache.key(user, v1, "default", "-"), compute)
        assert (value, hit) == (b"list-2", False)

        async def degraded() -> tuple[bytes, bool]:
            return b"fallback", False

        dkey = cache.key(user, v1, "other", "-")
        await cache.get_or_compute(dkey, degraded)
        assert 0 < await cache.client.ttl(dkey) <= DEGRADED_TTL

        # the one-round-trip lookup (Lua) sees the same version and list as the two GETs
        assert await cache.lookup(user, "default", "-") == (1, b"list-2")
        await cache.client.incr(version_key(user))
        assert await cache.lookup(user, "default", "-") == (2, None)
        assert await cache.lookup(f"{user}-new", "default", "-") == (0, None)
    finally:
        await cache.client.delete(
            version_key(user), *[k async for k in cache.client.scan_iter(f"rec:list:{user}:*")]
        )
        await cache.close()


async def test_lookup_takes_the_lock_on_a_miss_in_the_same_round_trip(redis_service: Settings) -> None:
    cache = RecCache(redis_service)
    other = RecCache(redis_service)  # another API worker
    user = f"cache-{uuid.uuid4().hex[:8]}"
    calls = 0

    async def compute() -> tuple[bytes, bool]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return b"list", True

    try:
        assert await cache.lookup_or_lock(user, "default", "-") == (0, None, True)  # the leader
        assert await other.lookup_or_lock(user, "default", "-") == (0, None, False)  # lock held
        key = cache.key(user, 0, "default", "-")
        assert await cache.client.exists(LOCK_PREFIX + key) == 1
        # the follower waits for the leader's list instead of computing it too
        follower = asyncio.create_task(other.get_or_compute(key, compute, known_miss=True, locked=False))
        assert await cache.get_or_compute(key, compute, known_miss=True, locked=True) == (b"list", False)
        assert await follower == (b"list", False) and calls == 1  # the leader computed, once
        assert await cache.client.exists(LOCK_PREFIX + key) == 0  # dropped with the store
        assert await other.lookup_or_lock(user, "default", "-") == (0, b"list", False)  # a hit: no lock
        assert await cache.client.exists(LOCK_PREFIX + key) == 0
    finally:
        await cache.client.delete(
            version_key(user), *[k async for k in cache.client.scan_iter(f"rec:*:{user}:*")]
        )
        await cache.close()
        await other.close()
