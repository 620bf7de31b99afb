"""RecCache on the real Redis: single flight per key, version invalidation, degraded TTL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from lambdarec.settings import Settings
from schemas.cache_keys import version_key
from serving.cache import DEGRADED_TTL, LOCK_PREFIX, RecCache

pytestmark = pytest.mark.integration


class CountingCompute:
    """A list computation that takes ``delay`` seconds and counts its runs, so a test can tell
    how many callers actually computed (single flight) and which run a cached value came from."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.calls = 0

    async def __call__(self) -> tuple[bytes, bool]:
        self.calls += 1
        n = self.calls
        await asyncio.sleep(self.delay)
        return b"list-%d" % n, True


@pytest.fixture
async def cache(redis_service: Settings) -> AsyncIterator[RecCache]:
    c = RecCache(redis_service)
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture
async def user(cache: RecCache) -> AsyncIterator[str]:
    """A fresh user id; its version, lists and locks are deleted afterwards (the Redis is shared)."""
    u = f"cache-{uuid.uuid4().hex[:8]}"
    try:
        yield u
    finally:
        await cache.client.delete(version_key(u), *[k async for k in cache.client.scan_iter(f"rec:*:{u}:*")])


async def test_concurrent_misses_compute_once_and_versions_invalidate(cache: RecCache, user: str) -> None:
    compute = CountingCompute(0.1)
    v0 = await cache.version(user)
    assert v0 == 0
    key0 = cache.key(user, v0, "default", "-")
    results = await asyncio.gather(*(cache.get_or_compute(key0, compute) for _ in range(20)))
    assert compute.calls == 1 and {r[0] for r in results} == {b"list-1"}
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


async def test_lookup_takes_the_lock_on_a_miss_in_the_same_round_trip(
    cache: RecCache, user: str, redis_service: Settings
) -> None:
    other = RecCache(redis_service)  # another API worker
    compute = CountingCompute(0.05)
    try:
        assert await cache.lookup_or_lock(user, "default", "-") == (0, None, True)  # the leader
        assert await other.lookup_or_lock(user, "default", "-") == (0, None, False)  # lock held
        key = cache.key(user, 0, "default", "-")
        assert await cache.client.exists(LOCK_PREFIX + key) == 1
        # the follower waits for the leader's list instead of computing it too
        follower = asyncio.create_task(other.get_or_compute(key, compute, known_miss=True, locked=False))
        assert await cache.get_or_compute(key, compute, known_miss=True, locked=True) == (b"list-1", False)
        assert await follower == (b"list-1", False) and compute.calls == 1  # the leader computed, once
        assert await cache.client.exists(LOCK_PREFIX + key) == 0  # dropped with the store
        assert await other.lookup_or_lock(user, "default", "-") == (0, b"list-1", False)  # a hit: no lock
        assert await cache.client.exists(LOCK_PREFIX + key) == 0
    finally:
        await other.close()
