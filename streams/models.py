"""Which ALS model the fold-in uses, and switching to a new one without stopping.

Why a watcher per worker (not a faust agent): an agent on the one-partition ``model-updates``
topic would run on *one* worker of the consumer group; every worker needs every promotion. So
each worker reads the topic with its own group-less consumer, from the beginning (the last
announcement per algorithm is the model in production), and keeps following it. If the topic
holds no announcement (e.g. expired by retention), the model registry in Postgres is asked once.

Loading happens in a thread (``asyncio.to_thread``): parquet decoding and ``YᵀY`` do not block
the event loop, the agent keeps processing with the old model, and the new one replaces it
between two batches (the agent reads :attr:`ModelHolder.current` once per batch). User states of
the old model are rebuilt lazily (``streams/processors/foldin.py``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer

from lambdarec.settings import Settings
from schemas import model_updates
from schemas.model_snapshot import load_item_factors
from schemas.topics import MODEL_UPDATES, topic_name
from streams.processors.foldin import FoldInModel

log = logging.getLogger(__name__)


def load_fold_in_model(snapshot_uri: str, settings: Settings, version: str | None = None) -> FoldInModel:
    """The fold-in model of the snapshot at ``snapshot_uri`` (the one loading function).

    Hyperparameters come from the snapshot manifest's ``params`` (``alpha``, ``reg_param``,
    ``scale_reg``) when the trainer recorded them, else from ``settings.batch.als``: the fold-in
    must use the regularisation and confidence scaling the item factors were trained with.
    """
    ids, factors, manifest = load_item_factors(snapshot_uri, s3=settings.s3)
    params: dict[str, Any] = manifest.get("params") or {}
    als = settings.batch.als
    return FoldInModel.from_factors(
        version or str(manifest["model_version"]),
        ids,
        factors,
        alpha=float(params.get("alpha", als.alpha)),
        reg=float(params.get("reg_param", params.get("regParam", als.reg_param))),
        scale_reg=bool(params.get("scale_reg", True)),
        max_confidence=float(params.get("max_confidence", settings.batch.max_confidence)),
    )


class ModelHolder:
    """The current fold-in model (None until one is promoted) and its swaps."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.current: FoldInModel | None = None
        self.on_change: Callable[[FoldInModel], None] | None = None
        #: set once the watcher has read the topic up to its end (and loaded what it found), so
        #: the first batches after a (re)start fold in against the production model, not none
        self.ready = asyncio.Event()

    async def switch(self, update: model_updates.ModelUpdate) -> None:
        """Load ``update``'s snapshot in a thread and make it current (a failed load keeps the old)."""
        if self.current is not None and self.current.version == update.model_version:
            return
        try:
            model = await asyncio.to_thread(
                load_fold_in_model, update.snapshot_uri, self.settings, update.model_version
            )
        except Exception:
            log.exception(
                "cannot load model %s from %s; keeping the current one",
                update.model_version,
                update.snapshot_uri,
            )
            return
        self.current = model
        log.info(
            "fold-in model is now %s (%d items, rank %d)", model.version, len(model.item_index), model.rank
        )
        if self.on_change is not None:
            self.on_change(model)


async def watch_model_updates(
    settings: Settings,
    holder: ModelHolder,
    *,
    registry_fallback: Callable[[str], Awaitable[tuple[str, str] | None]] | None = None,
    poll_timeout_ms: int = 1000,
) -> None:
    """Follow ``model-updates`` forever, switching ``holder`` to each promotion of our algorithm."""
    algorithm = settings.stream.model_algorithm
    consumer = AIOKafkaConsumer(
        topic_name(settings, MODEL_UPDATES),
        bootstrap_servers=settings.kafka.bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        caught_up = False
        while True:
            batches = await consumer.getmany(timeout_ms=poll_timeout_ms)
            latest: model_updates.ModelUpdate | None = None
            for records in batches.values():
                for rec in records:
                    try:
                        upd = model_updates.decode(rec.value or b"")
                    except msgspec.MsgspecError:
                        log.warning("ignoring unreadable model update at offset %s", rec.offset)
                        continue
                    if upd.algorithm == algorithm:
                        latest = upd
            if latest is not None:
                await holder.switch(latest)
            if not caught_up and not batches:
                caught_up = True
                if holder.current is None and registry_fallback is not None:
                    found = await registry_fallback(algorithm)
                    if found is not None:
                        version, uri = found
                        await holder.switch(
                            model_updates.ModelUpdate(
                                algorithm=algorithm,
                                model_version=version,
                                snapshot_uri=uri,
                                promoted_at=datetime.now(UTC),
                            )
                        )
                holder.ready.set()
    finally:
        await consumer.stop()
