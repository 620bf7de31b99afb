"""Lake root -> table URIs and delta-rs storage options: the one place that knows where tables live.

``settings.lake.root`` is a local directory or ``s3://bucket/prefix``. For ``s3://`` the object store
is ``settings.s3`` (MinIO locally, any S3-compatible store in production) with path-style requests
(``infra.s3.delta_storage_options``). Concurrent-writer safety needs no extra option with delta-rs
1.x: commits are written with ``If-None-Match: *`` (a conditional put, which MinIO, R2 and AWS S3
honour), so neither a DynamoDB lock nor ``AWS_S3_ALLOW_UNSAFE_RENAME`` is needed. The retry knobs
are deliberately small (``storage_max_retries``, ``storage_timeout_seconds``): a request fails fast
and the archiver's own backoff loop (which re-checks what was committed) decides when to retry.

>>> lake = Lake(settings)                                    # doctest: +SKIP
>>> dt = lake.ensure(SILVER_INTERACTIONS)                    # created on first use
>>> lake.dataset(SILVER_INTERACTIONS).to_table().num_rows    # doctest: +SKIP
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from lambdarec.settings import Settings
from schemas.lake import TableSpec

if TYPE_CHECKING:
    import pyarrow.dataset as ds

log = logging.getLogger(__name__)


def storage_options(settings: Settings) -> dict[str, str] | None:
    """Object-store options for ``settings.lake.root`` that any reader understands (deltalake,
    polars ``scan_delta``, ...): endpoint, keys, region, path style. None for a local root."""
    root = settings.lake.root
    if not root.startswith(("s3://", "s3a://")):
        return None
    from infra.s3 import delta_storage_options

    return delta_storage_options(settings)


def delta_options(settings: Settings) -> dict[str, str] | None:
    """:func:`storage_options` plus delta-rs' request retry and timeout knobs (small on purpose:
    the archiver's own backoff loop owns retrying, see the module doc)."""
    opts = storage_options(settings)
    if opts is None:
        return None
    lk = settings.lake
    timeout = f"{max(1, int(lk.storage_timeout_seconds))}s"
    return {
        **opts,
        "max_retries": str(lk.storage_max_retries),
        "retry_timeout": timeout,
        "timeout": timeout,
        "connect_timeout": "5s",
    }


def table_configuration(settings: Settings, spec: TableSpec) -> dict[str, str | None]:
    """Delta table properties every lake table is created with."""
    return {
        # data skipping without personal data in the log (see schemas/lake.py)
        "delta.dataSkippingStatsColumns": ",".join(spec.stats_columns),
        "delta.logRetentionDuration": f"interval {settings.lake.log_retention_days} days",
        "delta.deletedFileRetentionDuration": f"interval {settings.lake.vacuum_retention_hours} hours",
        "delta.checkpointInterval": "50",
    }


class Lake:
    """The lake of one ``Settings``: table URIs, storage options, open/create/read helpers."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        root = settings.lake.root.rstrip("/")
        if root.startswith("s3a://"):
            root = "s3://" + root[len("s3a://") :]
        if root.startswith("file://"):
            root = root[len("file://") :]
        if not root.startswith("s3://"):
            root = str(Path(root).expanduser().resolve())
        self.root = root
        #: for analysts' readers (polars, deltalake): endpoint and credentials only
        self.storage_options = storage_options(settings)
        #: for the pipeline's own delta-rs calls: plus retry/timeout settings
        self.delta_options = delta_options(settings)

    @property
    def is_s3(self) -> bool:
        return self.root.startswith("s3://")

    def uri(self, spec: TableSpec | str) -> str:
        """Where a table lives (``<root>/<table name>``)."""
        name = spec if isinstance(spec, str) else spec.name
        return f"{self.root}/{name}"

    def spark_path(self, spec: TableSpec | str) -> str:
        """The same table as Spark's Hadoop filesystems spell it (``s3a://``)."""
        uri = self.uri(spec)
        return "s3a://" + uri[len("s3://") :] if uri.startswith("s3://") else uri

    def open(self, spec: TableSpec | str) -> DeltaTable | None:
        """The table at its latest version, or None if it does not exist yet."""
        try:
            return DeltaTable(self.uri(spec), storage_options=self.delta_options)
        except TableNotFoundError:
            return None

    def ensure(self, spec: TableSpec) -> DeltaTable:
        """Open the table, creating it (empty, with the spec's schema and properties) if missing."""
        dt = self.open(spec)
        if dt is not None:
            return dt
        if not self.is_s3:
            Path(self.uri(spec)).mkdir(parents=True, exist_ok=True)
        log.info("creating Delta table %s", self.uri(spec))
        return DeltaTable.create(
            self.uri(spec),
            spec.schema,
            mode="ignore",  # a concurrent creator won: use its table
            partition_by=spec.partition_by,
            name=spec.name,
            description=spec.doc,
            configuration=table_configuration(self.settings, spec),
            storage_options=self.delta_options,
        )

    def dataset(self, spec: TableSpec | str) -> ds.Dataset | None:
        """A pyarrow dataset of the table's current files (None if the table does not exist).

        The way in for DuckDB and pyarrow readers (duckdb's delta extension is not needed).
        """
        dt = self.open(spec)
        return None if dt is None else dt.to_pyarrow_dataset()


def utcnow() -> datetime:
    return datetime.now(UTC)
