"""The Kafka topics of lambdarec, declared once. Names get the configured prefix.

Keys: ``interactions`` is keyed by user_id so one user's events stay in order on one partition.
"""

from __future__ import annotations

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
    TopicSpec(INTERACTIONS_DLQ, "records that failed decoding/validation, with reason and origin"),
    TopicSpec(SERVED, "every list the API served (for recommendation_logs and the lake)"),
    TopicSpec(MODEL_UPDATES, "promotions announced by the batch layer", partitions=1),
)


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
