"""Helpers for the test_batch_* integration tests: a private world (scratch DB, lake root, S3
prefix, model-updates topic) and small synthetic silver tables with a learnable structure."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic
from deltalake import write_deltalake

from batch.lake.storage import Lake
from lambdarec.settings import AlsSettings, Settings
from schemas import model_updates
from schemas.lake import SILVER_INTERACTIONS
from schemas.topics import MODEL_UPDATES, topic_name

N_CLUSTERS, ITEMS_PER_CLUSTER, USERS = 4, 50, 80


@contextlib.contextmanager
def private_world(postgres: Settings, tmp: Path, stem: str, **batch: object) -> Iterator[Settings]:
    """A private batch world: a migrated scratch database, ``tmp`` as lake root and runs dir, a
    unique S3 models prefix and topic prefix (``<stem><random>.``) and a ``model-updates`` topic;
    the models written under the prefix are deleted afterwards. ``batch`` overrides
    ``settings.batch`` (see :func:`batch_settings`)."""
    from infra.postgres import scratch_database
    from schemas.migrate import migrate

    prefix = f"{stem}{uuid.uuid4().hex[:8]}."
    with scratch_database(postgres) as db:
        migrate(db)
        s = batch_settings(db, tmp, prefix, **batch)
        try:
            with model_updates_topic(s):
                yield s
        finally:
            delete_prefix(s, f"{prefix}models/")


def batch_settings(base: Settings, tmp: Path, prefix: str, **batch: object) -> Settings:
    """``base`` pointed at a private lake root, runs dir, S3 models prefix and topic prefix."""
    b = base.batch.model_copy(
        update={
            "runs_dir": tmp / "runs",
            "models_uri": f"s3://{base.s3.models_bucket}/{prefix}models",
            "archive_before_training": False,
            "holdout_min_events": 20,
            "top_n": 10,
            "gate_max_regression": 0.2,
            # the seed's rank 10: the tuned rank 64 buys nothing on 200 items and costs test time
            "als": AlsSettings.seed_defaults(num_user_blocks=2, num_item_blocks=2),
            **batch,
        }
    )
    return base.model_copy(
        update={
            "lake": base.lake.model_copy(update={"root": str(tmp / "lake")}),
            "kafka": base.kafka.model_copy(update={"topic_prefix": prefix}),
            "batch": b,
        }
    )


@contextlib.contextmanager
def model_updates_topic(settings: Settings) -> Iterator[str]:
    """A private one-partition ``model-updates`` topic (announcements never reach real readers)."""
    name = topic_name(settings, MODEL_UPDATES)
    a = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
    for f in a.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)]).values():
        f.result(timeout=30)
    try:
        yield name
    finally:
        for f in a.delete_topics([name]).values():
            with contextlib.suppress(Exception):
                f.result(timeout=30)


def read_updates(settings: Settings, topic: str, timeout: float = 15.0) -> list[model_updates.ModelUpdate]:
    c = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": f"t-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    c.subscribe([topic])
    out = []
    deadline = datetime.now(UTC) + timedelta(seconds=timeout)
    try:
        while datetime.now(UTC) < deadline:
            msg = c.poll(1.0)
            if msg is None:
                if out:
                    break
                continue
            if msg.error() is None:
                out.append(model_updates.decode(msg.value()))
    finally:
        c.close()
    return out


def silver_table(
    start: datetime,
    days: float,
    n: int,
    seed: int,
    *,
    users: int = USERS,
    rating_override: float | None = None,
) -> pa.Table:
    """``n`` silver rows: user u likes cluster ``u % 4`` (90 % of its events), times uniform in
    ``[start, start + days)``."""
    rng = np.random.default_rng(seed)
    u = rng.integers(0, users, n)
    in_cluster = rng.random(n) < 0.9
    cluster = np.where(in_cluster, u % N_CLUSTERS, rng.integers(0, N_CLUSTERS, n))
    item = cluster * ITEMS_PER_CLUSTER + rng.integers(0, ITEMS_PER_CLUSTER, n)
    types = rng.choice(np.array(["view", "click", "play", "like", "rate"]), n, p=[0.4, 0.2, 0.2, 0.1, 0.1])
    rating = np.where(types == "rate", np.where(in_cluster, 5.0, 2.0), np.nan)
    if rating_override is not None:
        rating[types == "rate"] = rating_override
    t0 = start.timestamp()
    ts = np.sort(t0 + rng.random(n) * days * 86400)
    occurred = [datetime.fromtimestamp(x, UTC) for x in ts]
    now = datetime.now(UTC)
    cols = {
        "event_id": [str(uuid.UUID(int=int(rng.integers(0, 2**62)) << 64 | i)) for i in range(n)],
        "user_id": [f"u{x}" for x in u],
        "item_id": [f"i{x}" for x in item],
        "type": types.tolist(),
        "occurred_at": occurred,
        "rating": [None if np.isnan(r) else float(r) for r in rating],
        "schema_version": [1] * n,
        "kafka_partition": [0] * n,
        "kafka_offset": list(range(n)),
        "archived_at": [now] * n,
        "event_date": [o.date() for o in occurred],
    }
    schema = SILVER_INTERACTIONS.schema
    arrays = [
        pa.array(cols[f.name], type=f.type) if f.name in cols else pa.nulls(n, type=f.type) for f in schema
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def append_silver(settings: Settings, table: pa.Table) -> None:
    lake = Lake(settings)
    lake.ensure(SILVER_INTERACTIONS)
    write_deltalake(lake.uri(SILVER_INTERACTIONS), table, mode="append", storage_options=lake.delta_options)


def delete_prefix(settings: Settings, prefix: str) -> None:
    from infra.s3 import s3_client

    s3 = s3_client(settings)
    bucket = settings.s3.models_bucket
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=obj["Key"])
