"""Redis key scheme of the recommendation cache, written once for the speed layer and serving.

Why a per-user version counter instead of deleting keys: serving caches one list per
(user, variant, filter) combination, and the speed layer cannot know which combinations exist.
Every cached list key embeds the user's current version, so one ``INCR rec:ver:{user}`` makes
all of them unreachable at once (they then age out by their TTL); no SCAN, no key registry.

* ``rec:ver:{user_id}``: integer version, ``INCR`` by the speed layer after it committed new
  events of the user to Postgres (:func:`version_key`). A missing key reads as version 0.
* ``rec:list:{user_id}:{version}:{variant}:{filter_digest}``: one cached list
  (:func:`list_key`), written by serving with a TTL (the cache must never outlive a version
  key: a version key that is read on every request is more recently used than any list stored
  under an older version, so ``allkeys-lru`` evicts those lists first; and if a version key is
  evicted anyway, ``INCR`` restarts at 1, whose lists are long expired by their TTL).

Serving: ``ver = GET rec:ver:{u} or 0``; look up ``list_key(u, ver, variant, digest)``; on a miss
compute and ``SET ... EX ttl``. A write racing an ``INCR`` lands under the old version and is never
read again.

>>> version_key("u1")
'rec:ver:u1'
>>> list_key("u1", 3, "als", filter_digest({"genre": "drama"}))
'rec:list:u1:3:als:285818964a51'
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

VERSION_PREFIX = "rec:ver:"
LIST_PREFIX = "rec:list:"
NO_FILTER = "-"


def version_key(user_id: str) -> str:
    """Key of the user's cache version counter (``INCR`` it to invalidate all their lists)."""
    return f"{VERSION_PREFIX}{user_id}"


def filter_digest(filters: Mapping[str, Any] | None) -> str:
    """Stable short digest of request filters (key order and whitespace do not matter)."""
    if not filters:
        return NO_FILTER
    text = json.dumps(filters, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def list_key(user_id: str, version: int, variant: str, digest: str = NO_FILTER) -> str:
    """Key of one cached recommendation list under the user's ``version``."""
    return f"{LIST_PREFIX}{user_id}:{version}:{variant}:{digest}"
