"""API keys (sha256-hashed, looked up by prefix) and per-key rate limits.

Key format ``lrk_<8 chars>_<32 chars>``: the first 12 characters are the public prefix stored in
clear (unique index) so verification is one PK-like lookup plus a constant-time compare of
``sha256(key)``; the secret itself is never stored. Verified keys are remembered in process for
``_KEY_TTL`` seconds (revocation takes effect within that time) so a write does not cost a
Postgres round trip.

Rate limit: a fixed one-minute window per key (``INCR rl:{id}:{minute}`` + ``EXPIRE``) in Redis,
shared by all workers; when Redis is down the same window is counted in process (per worker),
so limits loosen but never vanish.

The anonymous per-IP limit of the read endpoints (:meth:`KeyStore.allow_batched`) must not cost
a Redis round trip on every cached answer (that was a third of a cache hit): requests are
counted in process and the counts are pushed with ``INCRBY`` every ``_SYNC_SEC`` by a background
task, which brings back the total of all workers. A client may overshoot by what the other
workers admitted in the last ``_SYNC_SEC``: fine for a 6,000/minute abuse guard, not for a
per-key quota, which stays exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

from serving.cache import RecCache

PREFIX_LEN = 12
_KEY_TTL = 60.0
_SYNC_SEC = 0.1


@dataclass(frozen=True)
class ApiKey:
    key_id: int
    name: str
    scopes: tuple[str, ...]
    rate_limit_per_minute: int | None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def generate_key() -> tuple[str, str, str]:
    """``(key, prefix, sha256)`` of a fresh random key."""
    key = f"lrk_{secrets.token_hex(4)}_{secrets.token_urlsafe(24)}"
    return key, key[:PREFIX_LEN], hash_key(key)


def create_key_sync(conn: Any, name: str, scopes: list[str], rate_limit: int | None = None) -> str:
    """Insert a new key (psycopg sync connection); returns the key, shown exactly once."""
    key, prefix, digest = generate_key()
    conn.execute(
        "INSERT INTO api_keys (prefix, key_hash, name, scopes, rate_limit_per_minute) "
        "VALUES (%s, %s, %s, %s, %s)",
        (prefix, digest, name, scopes, rate_limit),
    )
    return key


class KeyStore:
    """Verifies presented keys against ``api_keys`` (cached) and counts their requests."""

    def __init__(self, pool: Any, cache: RecCache, default_limit: int) -> None:
        self.pool = pool
        self.cache = cache
        self.default_limit = default_limit
        self._known: dict[str, tuple[float, ApiKey | None]] = {}
        self._local: dict[tuple[str, int], int] = {}
        #: batched limiter: counts not yet pushed, and the all-worker totals Redis last returned
        self._pending: dict[str, int] = {}
        self._shared: dict[str, int] = {}
        self._sync_task: asyncio.Task[None] | None = None

    async def verify(self, key: str) -> ApiKey | None:
        """The key's record, or None (unknown, wrong secret, revoked, malformed)."""
        if not key.startswith("lrk_") or len(key) < PREFIX_LEN + 8 or len(key) > 128:
            return None
        digest = hash_key(key)
        now = time.monotonic()
        hit = self._known.get(digest)
        if hit is not None and now - hit[0] < _KEY_TTL:
            return hit[1]
        async with self.pool.connection(timeout=1) as conn:
            row = await (
                await conn.execute(
                    "SELECT key_id, key_hash, name, scopes, rate_limit_per_minute FROM api_keys "
                    "WHERE prefix = %s AND revoked_at IS NULL",
                    (key[:PREFIX_LEN],),
                )
            ).fetchone()
        found = None
        if row is not None and hmac.compare_digest(row[1].strip(), digest):
            found = ApiKey(int(row[0]), row[2], tuple(row[3]), row[4])
        if len(self._known) > 10_000:
            self._known.clear()
        self._known[digest] = (now, found)
        return found

    async def allow(self, bucket: str, limit: int) -> tuple[bool, int]:
        """Count one request of ``bucket`` in the current minute: ``(allowed, seconds to reset)``."""
        now = time.time()
        minute = int(now // 60)
        reset = 60 - int(now % 60)
        rkey = f"rl:{bucket}:{minute}"
        count: int | None = None
        if self.cache.available:
            try:
                pipe = self.cache.client.pipeline(transaction=False)
                pipe.incr(rkey)
                pipe.expire(rkey, 61)
                count = int((await pipe.execute())[0])
            except Exception as exc:
                self.cache._trip(exc)
        if count is None:
            if len(self._local) > 50_000:
                self._local = {k: v for k, v in self._local.items() if k[1] == minute}
            count = self._local.get((bucket, minute), 0) + 1
            self._local[(bucket, minute)] = count
        return count <= limit, reset

    def allow_batched(self, bucket: str, limit: int) -> tuple[bool, int]:
        """Like :meth:`allow`, without waiting for Redis (see the module docstring)."""
        now = time.time()
        minute = int(now // 60)
        reset = 60 - int(now % 60)
        rkey = f"rl:{bucket}:{minute}"
        pending = self._pending.get(rkey, 0) + 1
        self._pending[rkey] = pending
        if self._sync_task is None or self._sync_task.done():
            self._sync_task = asyncio.get_running_loop().create_task(self._sync(), name="rate-limit-sync")
        return self._shared.get(rkey, 0) + pending <= limit, reset

    async def _sync(self) -> None:
        """Push pending counts (``INCRBY``, one pipeline) until there are none; without Redis the
        counts are added to the process's own totals instead."""
        while self._pending:
            await asyncio.sleep(_SYNC_SEC)
            batch, self._pending = self._pending, {}
            totals: list[int] | None = None
            if self.cache.available:
                try:
                    pipe = self.cache.client.pipeline(transaction=False)
                    for rkey, n in batch.items():
                        pipe.incrby(rkey, n)
                        pipe.expire(rkey, 61)
                    totals = [int(v) for v in (await pipe.execute())[::2]]
                except Exception as exc:
                    self.cache._trip(exc)
            current = f":{int(time.time() // 60)}"
            self._shared = {k: v for k, v in self._shared.items() if k.endswith(current)}
            for i, (rkey, n) in enumerate(batch.items()):
                self._shared[rkey] = totals[i] if totals is not None else self._shared.get(rkey, 0) + n

    async def close(self) -> None:
        if self._sync_task is not None:
            self._sync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._sync_task
