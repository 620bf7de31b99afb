"""The ``model-updates`` topic: how the batch layer announces a promoted model.

Why a message and not a database poll: the speed layer and serving must switch to a new model
within seconds of its promotion, without restarting, and the layers meet only on topics and
shared storage (Oryx's "model update" topic). The message only *points* at the snapshot
(``schemas/model_snapshot.py``), which stays the single source of the factors.

One JSON object per record, key = ``algorithm``; the topic has one partition, so promotions are
totally ordered and the last record per algorithm is the model in production. A reader that
starts up reads the topic from the beginning and keeps the last announcement per algorithm.

>>> from datetime import UTC, datetime
>>> raw = encode(ModelUpdate(algorithm="als", model_version="v7", snapshot_uri="s3://m/als/v7",
...                          promoted_at=datetime(2024, 5, 1, tzinfo=UTC)))
>>> decode(raw).model_version
'v7'
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec


class ModelUpdate(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """``algorithm``'s production model is now ``model_version``, snapshot at ``snapshot_uri``."""

    kind: Literal["promoted"] = "promoted"
    algorithm: str
    model_version: str
    snapshot_uri: str
    promoted_at: datetime
    model_id: int | None = None


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(ModelUpdate)


def encode(update: ModelUpdate) -> bytes:
    """JSON for the topic (the record key is ``update.algorithm.encode()``)."""
    return _encoder.encode(update)


def decode(raw: bytes | str) -> ModelUpdate:
    """Parse one record; raises ``msgspec.MsgspecError`` on anything else."""
    return _decoder.decode(raw)
