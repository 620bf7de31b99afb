"""Item embeddings for the taste vector, cached in the worker and loaded from Postgres in batches.

Why a cache and not a join: the taste update needs the embedding of every item a batch touches;
items repeat a lot (popular items dominate), so each is fetched once (one ``= ANY(...)`` query
for all misses of a batch) and kept, up to ``max_items`` (oldest loaded dropped first).
Items without an embedding yet are remembered as missing for ``missing_ttl_sec`` and then asked
for again, so a freshly embedded item starts counting within a minute without a query per event.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence

import numpy as np

Loader = Callable[[Sequence[str]], Awaitable[Mapping[str, np.ndarray]]]


class EmbeddingCache:
    """``await cache.ensure(ids)`` then read ``cache.vectors[id]`` (absent: no embedding)."""

    def __init__(self, loader: Loader, *, max_items: int = 200_000, missing_ttl_sec: float = 60.0) -> None:
        self._loader = loader
        self.max_items = max_items
        self.missing_ttl_sec = missing_ttl_sec
        self.vectors: dict[str, np.ndarray] = {}
        self._missing: dict[str, float] = {}  # item -> ask again after (monotonic)
        self.loads = 0  # Postgres round trips (for tests and metrics)

    async def ensure(self, item_ids: Iterable[str]) -> Mapping[str, np.ndarray]:
        """Load what is neither cached nor recently known to be missing; returns ``vectors``."""
        now = time.monotonic()
        vectors, missing = self.vectors, self._missing
        want = [i for i in dict.fromkeys(item_ids) if i not in vectors and missing.get(i, 0.0) <= now]
        if want:
            self.loads += 1
            found = await self._loader(want)
            vectors.update(found)
            until = now + self.missing_ttl_sec
            for i in want:
                if i not in found:
                    missing[i] = until
            self._trim()
        return vectors

    def _trim(self) -> None:
        over = len(self.vectors) - self.max_items
        if over > 0:
            for k in list(self.vectors)[:over]:
                del self.vectors[k]
        if len(self._missing) > self.max_items:
            now = time.monotonic()
            self._missing = {k: t for k, t in self._missing.items() if t > now}
