"""The model snapshot: the one artefact the batch layer hands to the speed layer and serving.

Why a contract of its own (Oryx's "model update"): ``batch/`` never imports ``streams/`` or
``serving/``; they meet on this format. A snapshot is a directory (local path or
``s3://bucket/prefix``) holding

* ``item_factors.parquet`` — ``id`` (string or int64, as the events carry it), ``factors``
  (``fixed_size_list<float32>[rank]``): what the speed layer loads to fold in new interactions and
  serving uses for item-to-item similarity;
* ``user_factors.parquet`` — same layout for users (optional for readers that only need items);
* ``manifest.json`` — written **last**, so its presence means "complete": format name and
  version, ``model_version``, algorithm, rank, counts, hyperparameters, offline metrics, and the
  size and SHA-256 of each file (checked on load, so a torn or mixed upload is refused instead of
  serving garbage).

Versioning: ``format_version`` is an integer bumped on any incompatible layout change; readers
refuse versions newer than they know (:class:`SnapshotFormatError`) and ignore unknown manifest
keys, so adding metadata is backward compatible. Parquet rather than NPZ because Spark, DuckDB
and pyarrow all read it without our code, and the fixed-size list column converts to a numpy
``(n, rank)`` array without copying.

>>> import numpy as np, tempfile
>>> snap = ModelSnapshot("v1", "als", np.array(["u1"]), np.array(["i1", "i2"]),
...                      np.ones((1, 2), np.float32), np.eye(2, dtype=np.float32))
>>> d = tempfile.mkdtemp()
>>> _ = save_snapshot(snap, d)
>>> load_item_factors(d)[1].shape
(2, 2)
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from lambdarec.settings import S3Settings

FORMAT = "lambdarec.model_snapshot"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ITEM_FILE = "item_factors.parquet"
USER_FILE = "user_factors.parquet"


class SnapshotFormatError(ValueError):
    """The directory is not a (complete, intact, supported) model snapshot."""


@dataclass
class ModelSnapshot:
    """Factors plus id maps: row ``i`` of ``item_factors`` belongs to ``item_ids[i]``."""

    model_version: str
    algorithm: str
    user_ids: np.ndarray
    item_ids: np.ndarray
    user_factors: np.ndarray
    item_factors: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def rank(self) -> int:
        return int(self.item_factors.shape[1])

    def validate(self) -> None:
        """Shapes, dtypes and id uniqueness; raises :class:`SnapshotFormatError`."""
        for side, ids, f in (
            ("user", self.user_ids, self.user_factors),
            ("item", self.item_ids, self.item_factors),
        ):
            if f.ndim != 2 or f.shape[0] != len(ids):
                raise SnapshotFormatError(f"{side}_factors shape {f.shape} does not match {len(ids)} ids")
            if f.shape[1] != self.rank:
                raise SnapshotFormatError(f"{side}_factors rank {f.shape[1]} != item rank {self.rank}")
            if len(np.unique(ids)) != len(ids):
                raise SnapshotFormatError(f"{side}_ids are not unique")
            if not np.isfinite(f).all():
                raise SnapshotFormatError(f"{side}_factors contain NaN or inf")


# ------------------------------------------------------------------------------- file systems
def resolve(uri: str, s3: S3Settings | None = None) -> tuple[pafs.FileSystem, str]:
    """``(filesystem, path)`` for a local path, ``file://`` or ``s3://bucket/prefix`` URI.

    S3 uses ``settings.s3`` (endpoint, keys, region; path-style addressing, as MinIO needs).
    """
    parsed = urlparse(uri)
    if parsed.scheme in ("s3", "s3a"):
        s3 = s3 or S3Settings()
        ep = urlparse(s3.endpoint_url)
        fs = pafs.S3FileSystem(
            access_key=s3.access_key,
            secret_key=s3.secret_key,
            region=s3.region,
            endpoint_override=ep.netloc,
            scheme=ep.scheme,
            force_virtual_addressing=False,
        )
        return fs, f"{parsed.netloc}/{parsed.path.lstrip('/')}".rstrip("/")
    if parsed.scheme in ("", "file"):
        import os

        path = parsed.path if parsed.scheme == "file" else uri
        return pafs.LocalFileSystem(), os.path.abspath(path)
    raise SnapshotFormatError(f"unsupported snapshot location {uri!r} (use a path or s3://bucket/prefix)")


def _factors_table(ids: np.ndarray, factors: np.ndarray) -> pa.Table:
    f = np.ascontiguousarray(factors, dtype=np.float32)
    rank = f.shape[1]
    values = pa.array(f.reshape(-1), type=pa.float32())
    id_arr = pa.array(ids.tolist() if ids.dtype == object else ids)
    if pa.types.is_integer(id_arr.type):
        id_arr = id_arr.cast(pa.int64())
    elif not pa.types.is_string(id_arr.type) and not pa.types.is_large_string(id_arr.type):
        raise SnapshotFormatError(f"ids must be strings or integers, got {id_arr.type}")
    return pa.table({"id": id_arr, "factors": pa.FixedSizeListArray.from_arrays(values, rank)})


def _table_factors(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    col = table.column("factors").combine_chunks()
    rank = col.type.list_size
    factors = col.values.to_numpy(zero_copy_only=False).reshape(len(col), rank)
    ids = table.column("id").to_numpy(zero_copy_only=False)
    return ids, factors


def _write_bytes(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    with fs.open_output_stream(path) as out:
        out.write(data)


def _read_bytes(fs: pafs.FileSystem, path: str) -> bytes:
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except FileNotFoundError as exc:
        raise SnapshotFormatError(f"{path}: missing") from exc


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


# ------------------------------------------------------------------------------- save / load
def save_snapshot(snapshot: ModelSnapshot, uri: str, *, s3: S3Settings | None = None) -> dict[str, Any]:
    """Write ``snapshot`` under ``uri`` (files first, manifest last). Returns the manifest.

    Overwriting an existing snapshot directory is refused: versions are immutable, a new model
    gets a new ``model_version`` (and directory).
    """
    snapshot.validate()
    fs, root = resolve(uri, s3)
    manifest_path = posixpath.join(root, MANIFEST)
    if fs.get_file_info(manifest_path).type != pafs.FileType.NotFound:
        raise FileExistsError(f"{uri}: a snapshot is already there (versions are immutable)")
    fs.create_dir(root, recursive=True)
    files: dict[str, dict[str, Any]] = {}
    for name, ids, factors in (
        (ITEM_FILE, snapshot.item_ids, snapshot.item_factors),
        (USER_FILE, snapshot.user_ids, snapshot.user_factors),
    ):
        data = _parquet_bytes(_factors_table(np.asarray(ids), factors))
        _write_bytes(fs, posixpath.join(root, name), data)
        files[name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "rows": len(ids)}
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_version": snapshot.model_version,
        "algorithm": snapshot.algorithm,
        "rank": snapshot.rank,
        "n_users": len(snapshot.user_ids),
        "n_items": len(snapshot.item_ids),
        "created_at": snapshot.created_at.astimezone(UTC).isoformat(),
        "params": snapshot.params,
        "metrics": snapshot.metrics,
        "extra": snapshot.extra,
        "files": files,
    }
    body = json.dumps(manifest, indent=2, sort_keys=True, default=str).encode()
    if isinstance(fs, pafs.LocalFileSystem):  # atomic rename: readers never see half a manifest
        tmp = manifest_path + ".tmp"
        _write_bytes(fs, tmp, body)
        fs.move(tmp, manifest_path)
    else:  # an S3 PUT is atomic already
        _write_bytes(fs, manifest_path, body)
    return manifest


def read_manifest(uri: str, *, s3: S3Settings | None = None) -> dict[str, Any]:
    """The manifest of the snapshot at ``uri``, checked for format name and version."""
    fs, root = resolve(uri, s3)
    raw = _read_bytes(fs, posixpath.join(root, MANIFEST))
    try:
        manifest = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SnapshotFormatError(f"{uri}/{MANIFEST}: not JSON ({exc})") from exc
    if manifest.get("format") != FORMAT:
        raise SnapshotFormatError(f"{uri}: not a {FORMAT} (format={manifest.get('format')!r})")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise SnapshotFormatError(
            f"{uri}: format_version {version!r} is newer than this reader ({FORMAT_VERSION}); "
            "upgrade lambdarec"
        )
    return manifest


def _load_side(
    fs: pafs.FileSystem, root: str, manifest: dict[str, Any], name: str
) -> tuple[np.ndarray, np.ndarray]:
    meta = manifest["files"][name]
    data = _read_bytes(fs, posixpath.join(root, name))
    if len(data) != meta["bytes"] or hashlib.sha256(data).hexdigest() != meta["sha256"]:
        raise SnapshotFormatError(f"{name}: size/checksum differs from the manifest (torn or mixed upload)")
    ids, factors = _table_factors(pq.read_table(pa.BufferReader(data)))
    if factors.shape != (meta["rows"], manifest["rank"]):
        raise SnapshotFormatError(
            f"{name}: shape {factors.shape} != manifest ({meta['rows']}, {manifest['rank']})"
        )
    return ids, factors


def load_item_factors(
    uri: str, *, s3: S3Settings | None = None
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """``(item_ids, item_factors, manifest)``: what the speed layer and serving need, users skipped."""
    fs, root = resolve(uri, s3)
    manifest = read_manifest(uri, s3=s3)
    ids, factors = _load_side(fs, root, manifest, ITEM_FILE)
    return ids, factors, manifest


def load_snapshot(uri: str, *, s3: S3Settings | None = None) -> ModelSnapshot:
    """The whole snapshot at ``uri`` (verified against its manifest)."""
    fs, root = resolve(uri, s3)
    manifest = read_manifest(uri, s3=s3)
    item_ids, item_factors = _load_side(fs, root, manifest, ITEM_FILE)
    user_ids, user_factors = _load_side(fs, root, manifest, USER_FILE)
    return ModelSnapshot(
        model_version=manifest["model_version"],
        algorithm=manifest["algorithm"],
        user_ids=user_ids,
        item_ids=item_ids,
        user_factors=user_factors,
        item_factors=item_factors,
        params=manifest.get("params", {}),
        metrics=manifest.get("metrics", {}),
        extra=manifest.get("extra", {}),
        created_at=datetime.fromisoformat(manifest["created_at"]),
    )
