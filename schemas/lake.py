"""The lake's Delta tables, declared once: Arrow schemas with a doc for every column.

Everything that writes or reads the lake (``batch/lake/*``, Spark jobs, analysts) takes the schema,
partitioning and keys from here, and ``docs/analysts.md`` renders its table reference from
:func:`render_markdown` (a test keeps the two in sync).

Layers:

* **bronze**: every Kafka record exactly as received (payload bytes, key, topic/partition/offset,
  Kafka timestamp), valid or not. The replay source if a decoding rule ever changes.
* **silver**: validated, deduplicated rows (one per ``event_id`` / served item / dead letter).
* **gold**: daily aggregates recomputed by ``lambdarec lake gold``.

Conventions: times are ``timestamp[us, UTC]``; each table is partitioned by a ``date`` column (UTC)
so retention and GDPR deletes rewrite whole days at most; ``kafka_partition``/``kafka_offset`` keep
every row traceable to its record. Columns that identify a person (``user_id``, ``session_id``,
``key``, ``payload``, ``context``) are left out of Delta file statistics (``stats_columns``), so
after an erasure + VACUUM no transaction-log entry still carries them as a min/max value.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class Column:
    """One column: name, Arrow type, nullability and what it means."""

    name: str
    type: pa.DataType
    doc: str
    nullable: bool = True

    def field(self) -> pa.Field:
        return pa.field(self.name, self.type, nullable=self.nullable, metadata={"comment": self.doc})


@dataclass(frozen=True)
class TableSpec:
    """A Delta table of the lake.

    ``key`` identifies a row (deduplication, GDPR deletes); ``date_column`` is the partition column;
    ``user_column`` names the person a row is about (None: no personal data); ``stats_columns`` are
    the only columns Delta keeps min/max statistics for (data skipping without personal data).
    """

    name: str
    layer: str
    doc: str
    columns: tuple[Column, ...]
    date_column: str
    key: tuple[str, ...]
    user_column: str | None
    stats_columns: tuple[str, ...]
    evolves: bool = False  # new optional event fields become columns (schema_mode="merge")

    @property
    def schema(self) -> pa.Schema:
        return pa.schema([c.field() for c in self.columns])

    @property
    def partition_by(self) -> list[str]:
        return [self.date_column]

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.name} has no column {name!r}")


def _kafka_columns() -> tuple[Column, ...]:
    return (
        Column("kafka_partition", pa.int32(), "Kafka partition the record was read from", False),
        Column("kafka_offset", pa.int64(), "Kafka offset of the record (exactly once per partition)", False),
        Column("kafka_timestamp", TS, "Kafka record timestamp (producer create time)"),
        Column("archived_at", TS, "when the archiver committed the row", False),
    )


BRONZE_INTERACTIONS = TableSpec(
    name="bronze_interactions",
    layer="bronze",
    doc="Every record of the interactions topic as received, valid or not, exactly once per offset.",
    columns=(
        Column("topic", pa.string(), "physical Kafka topic", False),
        *_kafka_columns()[:3],
        Column("key", pa.binary(), "record key as bytes (user_id for well-behaved producers)"),
        Column("payload", pa.binary(), "record value as bytes, unchanged (null for a tombstone)"),
        Column("payload_size", pa.int32(), "length of the value in bytes", False),
        Column("valid", pa.bool_(), "true when the value is a valid InteractionEvent v1", False),
        Column("error_reason", pa.string(), "dead-letter reason when not valid (malformed_json, ...)"),
        Column("event_id", pa.string(), "event_id of a valid event"),
        Column(
            "user_id", pa.string(), "user_id of the event (or of an invalid payload, else the key as UTF-8)"
        ),
        _kafka_columns()[3],
        Column("event_date", pa.date32(), "UTC date of occurred_at (valid) or of the Kafka timestamp", False),
    ),
    date_column="event_date",
    key=("kafka_partition", "kafka_offset"),
    user_column="user_id",
    stats_columns=("kafka_partition", "kafka_offset", "kafka_timestamp", "valid", "event_date"),
)

SILVER_INTERACTIONS = TableSpec(
    name="silver_interactions",
    layer="silver",
    doc=(
        "Valid interaction events (schemas/events.py, InteractionEvent v1), one row per event_id "
        "(retries and replays deduplicated). New optional event fields are added as columns."
    ),
    columns=(
        Column("event_id", pa.string(), "producer-chosen UUID; the deduplication key", False),
        Column("user_id", pa.string(), "who acted", False),
        Column("item_id", pa.string(), "on what", False),
        Column(
            "type", pa.string(), "view, click, play, rate, like, dislike, favorite, watchlist, ...", False
        ),
        Column("occurred_at", TS, "event time (client clock)", False),
        Column("rating", pa.float64(), "1.0..5.0 in half steps; set exactly for type 'rate'"),
        Column("value", pa.float64(), "free numeric value (e.g. price for purchase)"),
        Column("watch_duration_sec", pa.float64(), "seconds watched (play)"),
        Column("session_id", pa.string(), "client session"),
        Column("source", pa.string(), "web, mobile, email, push"),
        Column("rec_id", pa.string(), "served list this action responds to (with position)"),
        Column("position", pa.int32(), "0-based index of the item in the served list"),
        Column("context", pa.string(), "free-form context object as JSON text"),
        Column("schema_version", pa.int32(), "event contract version (1)", False),
        Column("received_at", TS, "when the first server accepted the event"),
        *_kafka_columns(),
        Column("event_date", pa.date32(), "UTC date of occurred_at (partition)", False),
    ),
    date_column="event_date",
    key=("event_id",),
    user_column="user_id",
    stats_columns=("event_id", "item_id", "type", "occurred_at", "rec_id", "kafka_offset", "event_date"),
    evolves=True,
)

SERVED_RECOMMENDATIONS = TableSpec(
    name="served_recommendations",
    layer="silver",
    doc="Every served recommendation list, one row per item shown (impressions), deduplicated by rec_id.",
    columns=(
        Column("rec_id", pa.string(), "id of the served list (echoed by feedback events)", False),
        Column("position", pa.int32(), "0-based index of the item in the list", False),
        Column("item_id", pa.string(), "item shown", False),
        Column("score", pa.float64(), "ranking score of the item"),
        Column("item_source", pa.string(), "where this item came from (realtime, batch, popular, ...)"),
        Column("user_id", pa.string(), "who the list was served to", False),
        Column("session_id", pa.string(), "client session"),
        Column("algorithm_source", pa.string(), "realtime, batch, popular, hybrid, cold_start", False),
        Column("model_version", pa.string(), "model that produced the list"),
        Column("experiment_id", pa.int64(), "A/B experiment, if any"),
        Column("variant", pa.string(), "experiment variant"),
        Column("list_size", pa.int32(), "number of items in the served list", False),
        Column("cache_hit", pa.bool_(), "served from the cache"),
        Column("computation_time_ms", pa.float64(), "time to compute the list"),
        Column("context", pa.string(), "request context as JSON text"),
        Column("served_at", TS, "when the API served the list", False),
        *_kafka_columns(),
        Column("served_date", pa.date32(), "UTC date of served_at (partition)", False),
    ),
    date_column="served_date",
    key=("rec_id", "position"),
    user_column="user_id",
    stats_columns=("rec_id", "item_id", "algorithm_source", "served_at", "kafka_offset", "served_date"),
)

DEAD_LETTERS = TableSpec(
    name="dead_letters",
    layer="silver",
    doc=(
        "Records that could not be decoded: from the interactions DLQ topic, and what the archiver "
        "itself rejected on interactions and served-recommendations. One row per original record."
    ),
    columns=(
        Column("letter_id", pa.string(), "origin topic/partition/offset (dedup key across paths)", False),
        Column("reason", pa.string(), "malformed_json, invalid_field, oversized, empty, ...", False),
        Column("error", pa.string(), "what was wrong", False),
        Column("field", pa.string(), "offending field, when known"),
        Column("payload", pa.binary(), "original record value"),
        Column("key", pa.binary(), "original record key"),
        Column("user_id", pa.string(), "best-effort user id (payload user_id or key), for GDPR"),
        Column("origin_topic", pa.string(), "topic of the original record"),
        Column("origin_partition", pa.int32(), "partition of the original record"),
        Column("origin_offset", pa.int64(), "offset of the original record"),
        Column("origin_timestamp", TS, "Kafka timestamp of the original record"),
        Column("dead_lettered_at", TS, "when it was rejected", False),
        Column("observed_topic", pa.string(), "topic the archiver read it from", False),
        Column("kafka_partition", pa.int32(), "partition the archiver read it from", False),
        Column("kafka_offset", pa.int64(), "offset the archiver read it from", False),
        Column("archived_at", TS, "when the archiver committed the row", False),
        Column(
            "dead_letter_date",
            pa.date32(),
            "UTC date of the original record's Kafka timestamp (partition)",
            False,
        ),
    ),
    date_column="dead_letter_date",
    key=("letter_id",),
    user_column="user_id",
    stats_columns=("reason", "origin_topic", "dead_lettered_at", "kafka_offset", "dead_letter_date"),
)

GOLD_POPULARITY_DAILY = TableSpec(
    name="gold_popularity_daily",
    layer="gold",
    doc="Per item and day: engagement counts, ratings, impressions and CTR (also upserted to Postgres).",
    columns=(
        Column("item_id", pa.string(), "item", False),
        Column("date", pa.date32(), "UTC day (partition)", False),
        Column("view_count", pa.int64(), "view events", False),
        Column("click_count", pa.int64(), "click events", False),
        Column("play_count", pa.int64(), "play events", False),
        Column("like_count", pa.int64(), "like events", False),
        Column("rating_count", pa.int64(), "rate events", False),
        Column("average_rating", pa.float64(), "mean rating of the day's rate events"),
        Column("recommendation_count", pa.int64(), "times the item was served (impressions)", False),
        Column("recommendation_click_count", pa.int64(), "impressions that got a click", False),
        Column("ctr", pa.float64(), "recommendation_click_count / recommendation_count"),
        Column("popularity_score", pa.float64(), "sum of event weights (settings.batch.event_weights)"),
        Column("computed_at", TS, "when this row was computed", False),
    ),
    date_column="date",
    key=("item_id", "date"),
    user_column=None,
    stats_columns=("item_id", "date", "popularity_score"),
)

GOLD_CTR_DAILY = TableSpec(
    name="gold_ctr_daily",
    layer="gold",
    doc=(
        "Click-through rate of served lists by day, algorithm_source and position. A click is a "
        "feedback event of settings.lake.click_event_types on that (rec_id, position), attributed to "
        "the day the list was served."
    ),
    columns=(
        Column("date", pa.date32(), "UTC day the lists were served (partition)", False),
        Column("algorithm_source", pa.string(), "realtime, batch, popular, hybrid, cold_start", False),
        Column("position", pa.int32(), "0-based position in the list", False),
        Column("impressions", pa.int64(), "items served at this position", False),
        Column("clicks", pa.int64(), "of those, clicked", False),
        Column("ctr", pa.float64(), "clicks / impressions"),
        Column("computed_at", TS, "when this row was computed", False),
    ),
    date_column="date",
    key=("date", "algorithm_source", "position"),
    user_column=None,
    stats_columns=("date", "algorithm_source", "position"),
)

GOLD_MODEL_METRICS = TableSpec(
    name="gold_model_metrics",
    layer="gold",
    doc="History of model evaluations (Postgres model_performance_logs joined with models).",
    columns=(
        Column("log_id", pa.int64(), "model_performance_logs.log_id", False),
        Column("model_id", pa.int64(), "models.model_id", False),
        Column("algorithm", pa.string(), "als, ease, popularity, ...", False),
        Column("version", pa.string(), "model version", False),
        Column("status", pa.string(), "model status at snapshot time", False),
        Column("phase", pa.string(), "training, validation, offline, online", False),
        Column("k", pa.int32(), "cut-off of the @k metrics"),
        Column("rmse", pa.float64(), "root mean squared error"),
        Column("mae", pa.float64(), "mean absolute error"),
        Column("precision_at_k", pa.float64(), "precision@k"),
        Column("recall_at_k", pa.float64(), "recall@k"),
        Column("ndcg_at_k", pa.float64(), "nDCG@k"),
        Column("map_at_k", pa.float64(), "MAP@k"),
        Column("coverage", pa.float64(), "share of users covered"),
        Column("catalog_coverage", pa.float64(), "share of items recommended"),
        Column("total_users_trained", pa.int64(), "users in the training matrix"),
        Column("total_items_trained", pa.int64(), "items in the training matrix"),
        Column("training_duration_sec", pa.float64(), "fit time"),
        Column("metrics", pa.string(), "any other metrics as JSON text"),
        Column("logged_at", TS, "when the evaluation was logged", False),
        Column("date", pa.date32(), "UTC date of logged_at (partition)", False),
    ),
    date_column="date",
    key=("log_id",),
    user_column=None,
    stats_columns=("log_id", "model_id", "algorithm", "logged_at", "date"),
)

#: tables the archiver writes from Kafka
ARCHIVE_TABLES: tuple[TableSpec, ...] = (
    BRONZE_INTERACTIONS,
    SILVER_INTERACTIONS,
    SERVED_RECOMMENDATIONS,
    DEAD_LETTERS,
)
GOLD_TABLES: tuple[TableSpec, ...] = (GOLD_POPULARITY_DAILY, GOLD_CTR_DAILY, GOLD_MODEL_METRICS)
TABLES: tuple[TableSpec, ...] = ARCHIVE_TABLES + GOLD_TABLES
BY_NAME: dict[str, TableSpec] = {t.name: t for t in TABLES}

#: views (not tables): computed from the tables above by ``batch/lake/feedback.py``
VIEWS: dict[str, str] = {
    "feedback": (
        "silver_interactions rows with a rec_id: how users responded to served lists (the lake side "
        "of Postgres recommendation_feedback). `batch.lake.feedback.feedback_dataset()`."
    ),
}


def render_markdown() -> str:
    """The table reference of docs/analysts.md (between its ``tables:begin/end`` markers)."""
    out: list[str] = []
    for spec in TABLES:
        out.append(f"### `{spec.name}` ({spec.layer})\n")
        out.append(f"{spec.doc}\n")
        key = ", ".join(f"`{k}`" for k in spec.key)
        out.append(f"Partitioned by `{spec.date_column}`; one row per {key}.\n")
        out.append("| column | type | null | meaning |")
        out.append("|---|---|---|---|")
        for c in spec.columns:
            out.append(f"| `{c.name}` | {c.type} | {'yes' if c.nullable else 'no'} | {c.doc} |")
        out.append("")
    out.append("### Views\n")
    for name, doc in VIEWS.items():
        out.append(f"* `{name}`: {doc}")
    return "\n".join(out).rstrip() + "\n"
