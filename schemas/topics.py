"""The Kafka topics of lambdarec, declared once. Names get the configured prefix.

Keys: ``interactions`` is keyed by user_id so one user's events stay in order on one partition.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from lambdarec.settings import Settings


@dataclass(frozen=True)
class TopicSpec:
    """A topic's logical name, purpose and config overrides (partitions default from settings)."""

    name: str
    doc: str
    partitions: int | None = None  # None: settings.kafka.partitions
    config: dict[str, str] = field(default_factory=dict)


INTERACTIONS = "interactions"
INTERACTIONS_DLQ = "interactions-dlq"
SERVED = "served-recommendations"
MODEL_UPDATES = "model-updates"

TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(INTERACTIONS, "InteractionEvent v1 JSON, key = user_id"),
    # Dead letters wait for a human (inspect, fix, replay): keep them longer than the source topic.
    TopicSpec(
        INTERACTIONS_DLQ,
        "DeadLetter JSON (streams/dead_letters.py): records that failed decoding, with reason and origin",
        config={"retention.ms": str(30 * 24 * 3600 * 1000)},
    ),
    TopicSpec(SERVED, "every list the API served (for recommendation_logs and the lake)"),
    TopicSpec(MODEL_UPDATES, "promotions announced by the batch layer", partitions=1),
)


# A library does not print: without logging configured, librdkafka's messages are dropped here
# (the producers keep the latest client error and put it in their exceptions instead).
logging.getLogger("lambdarec.kafka").addHandler(logging.NullHandler())


def topic_name(settings: Settings, logical: str) -> str:
    """Physical topic name for a logical one (``interactions`` -> ``lambdarec.interactions``)."""
    return settings.kafka.topic(logical)


def topic_configs(settings: Settings) -> list[tuple[str, int, dict[str, str]]]:
    """(physical name, partitions, config) for every topic, as the admin client creates them."""
    out = []
    for t in TOPICS:
        cfg = {"retention.ms": str(settings.kafka.retention_ms), **t.config}
        out.append((topic_name(settings, t.name), t.partitions or settings.kafka.partitions, cfg))
    return out


def producer_config(settings: Settings, **overrides: object) -> dict[str, object]:
    """librdkafka config for anything that writes our topics (SDK, HTTP ingest, DLQ, replay).

    Idempotent with ``acks=all``: a retry after a lost ack never duplicates or reorders a record
    within a partition, so the per-user order the ``user_id`` key promises holds. Batching and
    compression come from ``settings.events`` (lz4 by default: see benchmarks/bench_ingest.py).
    """
    ev = settings.events
    cfg: dict[str, object] = {
        "bootstrap.servers": settings.kafka.bootstrap_servers,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": ev.linger_ms,
        "compression.type": ev.compression,
        "message.timeout.ms": ev.delivery_timeout_ms,
        "queue.buffering.max.messages": 500_000,
        # librdkafka logs (e.g. "connection refused" every few ms) go to Python logging, not stderr.
        "logger": logging.getLogger("lambdarec.kafka"),
    }
    cfg.update(overrides)
    return cfg
