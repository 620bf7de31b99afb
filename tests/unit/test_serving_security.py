"""API key format/hashing and the rate-limit fallback when Redis is down (no services)."""

from __future__ import annotations

import asyncio

from lambdarec.settings import RedisSettings, ServingSettings, Settings
from serving.cache import RecCache
from serving.security import PREFIX_LEN, KeyStore, generate_key, hash_key


def test_keys_are_random_and_only_hashes_are_kept() -> None:
    key, prefix, digest = generate_key()
    assert key.startswith("lrk_") and key[:PREFIX_LEN] == prefix and len(digest) == 64
    assert digest == hash_key(key) and key not in digest
    assert generate_key()[0] != key


def test_rate_limit_falls_back_to_process_window_without_redis() -> None:
    settings = Settings(
        redis=RedisSettings(url="redis://127.0.0.1:1/0"), serving=ServingSettings(redis_timeout_ms=50)
    )
    cache = RecCache(settings)
    store = KeyStore(pool=None, cache=cache, default_limit=2)

    async def run() -> list[bool]:
        out = [(await store.allow("k1", 2))[0] for _ in range(3)]
        await cache.close()
        return out

    assert asyncio.run(run()) == [True, True, False]


def test_malformed_keys_are_refused_without_a_lookup() -> None:
    store = KeyStore(pool=None, cache=None, default_limit=1)  # type: ignore[arg-type]
    assert asyncio.run(store.verify("not-a-key")) is None
    assert asyncio.run(store.verify("lrk_" + "x" * 300)) is None


def test_batched_read_limit_counts_in_process_without_a_round_trip() -> None:
    """The per-IP read limit answers without awaiting Redis (here: none at all) and still
    refuses past the limit; the window is shared with other workers only through the sync."""
    settings = Settings(
        redis=RedisSettings(url="redis://127.0.0.1:1/0"), serving=ServingSettings(redis_timeout_ms=50)
    )
    cache = RecCache(settings)
    store = KeyStore(pool=None, cache=cache, default_limit=3)

    async def run() -> tuple[list[bool], list[bool]]:
        first = [store.allow_batched("ip1", 3)[0] for _ in range(4)]
        await asyncio.sleep(0.3)  # the sync finds Redis down and keeps the counts locally
        later = [store.allow_batched("ip1", 3)[0], store.allow_batched("ip2", 3)[0]]
        await store.close()
        await cache.close()
        return first, later

    first, later = asyncio.run(run())
    assert first == [True, True, True, False]
    assert later == [False, True]
