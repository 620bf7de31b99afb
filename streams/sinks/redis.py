"""Invalidate users' cached recommendations after their new events are committed.

One ``INCR rec:ver:{user}`` per user (key scheme: ``schemas/cache_keys.py``) invalidates every
(variant, filter) list serving cached for them, sent as one pipelined round trip per batch.
"""

from __future__ import annotations

from collections.abc import Collection

import redis.asyncio as aioredis

from schemas.cache_keys import version_key


class CacheInvalidator:
    """Bumps cache versions. Runs after the Postgres commit, so a serve that misses the cache
    afterwards reads the new profile; a crash in between redelivers and bumps again (harmless)."""

    def __init__(self, url: str) -> None:
        self.client = aioredis.from_url(url)

    async def invalidate(self, user_ids: Collection[str]) -> None:
        if not user_ids:
            return
        async with self.client.pipeline(transaction=False) as pipe:
            for u in user_ids:
                pipe.incr(version_key(u))
            await pipe.execute()

    async def close(self) -> None:
        await self.client.aclose()
