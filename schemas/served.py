"""The contract of the ``served-recommendations`` topic: one JSON object per list the API served.

The API (``serving/serve_log.py``) encodes it, the lake archiver (``batch/lake/served.py``) decodes
it; both go through this module so the two sides cannot drift. Its fields are the columns of
Postgres ``recommendation_logs`` (``schemas/migrations/006_recommendations.sql``)::

    {"rec_id": "r-1", "user_id": "u1", "algorithm_source": "hybrid", "served_at": "2025-01-01T10:00:00Z",
     "items": [{"item_id": "i9", "score": 0.93, "source": "realtime"}, ...],
     "session_id": null, "model_version": "als-v3", "experiment_id": null, "variant": null,
     "context": {}, "computation_time_ms": 12.5, "cache_hit": false}

Evolution as for events: optional fields are added, unknown fields are ignored by readers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class ServedItem(msgspec.Struct, frozen=True):
    """One item of a served list, in served order."""

    item_id: Id
    score: float | None = None
    source: str | None = None


class ServedList(msgspec.Struct, kw_only=True, frozen=True):
    """One served list (a ``recommendation_logs`` row) as read from the served topic."""

    rec_id: Id
    user_id: Id
    algorithm_source: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
    served_at: Annotated[datetime, msgspec.Meta(tz=True)]
    items: list[ServedItem]
    session_id: str | None = None
    model_version: str | None = None
    experiment_id: int | None = None
    variant: str | None = None
    context: dict[str, Any] | None = None
    computation_time_ms: float | None = None
    cache_hit: bool | None = None


_decoder = msgspec.json.Decoder(ServedList)


def decode_served_list(raw: bytes) -> ServedList:
    """Parse one topic record (raises ``msgspec.MsgspecError`` naming the bad field)."""
    return _decoder.decode(raw)


_json = msgspec.json.Encoder()


def encode_served(served: ServedList) -> bytes:
    """JSON for the served topic (for producers and tests)."""
    return _json.encode(served)
