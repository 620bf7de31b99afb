"""schemas/model_snapshot.py: round trip, integrity checks, immutability, versioning."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from schemas.model_snapshot import (
    FORMAT_VERSION,
    ITEM_FILE,
    MANIFEST,
    USER_FILE,
    ModelSnapshot,
    SnapshotFormatError,
    load_item_factors,
    load_snapshot,
    read_manifest,
    save_snapshot,
)


def _snapshot(ids: str = "str", rank: int = 4) -> ModelSnapshot:
    rng = np.random.default_rng(0)
    if ids == "str":
        users, items = np.array(["u1", "u2", "u3"], dtype=object), np.array(["m10", "m20"], dtype=object)
    else:
        users, items = np.array([1, 2, 3]), np.array([10, 20])
    return ModelSnapshot(
        model_version="2025-01-01T02-00-00Z-als",
        algorithm="als",
        user_ids=users,
        item_ids=items,
        user_factors=rng.standard_normal((3, rank)).astype(np.float32),
        item_factors=rng.standard_normal((2, rank)).astype(np.float32),
        params={"rank": rank, "reg_param": 0.1},
        metrics={"ndcg@10": 0.5},
        extra={"trained_on_rows": 123},
    )


@pytest.mark.parametrize("ids", ["str", "int"])
def test_round_trip(tmp_path: Path, ids: str) -> None:
    snap = _snapshot(ids)
    manifest = save_snapshot(snap, str(tmp_path / "v1"))
    back = load_snapshot(str(tmp_path / "v1"))
    assert back.model_version == snap.model_version and back.algorithm == "als"
    assert back.user_ids.tolist() == snap.user_ids.tolist()
    assert back.item_ids.tolist() == snap.item_ids.tolist()
    np.testing.assert_array_equal(back.user_factors, snap.user_factors)
    np.testing.assert_array_equal(back.item_factors, snap.item_factors)
    assert back.item_factors.dtype == np.float32
    assert back.params == snap.params and back.metrics == snap.metrics and back.extra == snap.extra
    assert back.created_at == snap.created_at
    assert manifest["format_version"] == FORMAT_VERSION and manifest["rank"] == 4
    assert manifest["files"][ITEM_FILE]["rows"] == 2 and manifest["files"][USER_FILE]["rows"] == 3


def test_item_factors_only_and_readable_without_our_code(tmp_path: Path) -> None:
    save_snapshot(_snapshot(), str(tmp_path))
    ids, factors, manifest = load_item_factors(str(tmp_path))
    assert ids.tolist() == ["m10", "m20"] and factors.shape == (2, 4) and manifest["n_users"] == 3
    table = pq.read_table(tmp_path / ITEM_FILE)  # plain Parquet: Spark/DuckDB read it as is
    assert table.schema.field("factors").type.list_size == 4
    assert table.column("id").to_pylist() == ["m10", "m20"]


def test_snapshots_are_immutable(tmp_path: Path) -> None:
    save_snapshot(_snapshot(), str(tmp_path))
    with pytest.raises(FileExistsError):
        save_snapshot(_snapshot(), str(tmp_path))


def test_tampered_or_torn_files_are_refused(tmp_path: Path) -> None:
    save_snapshot(_snapshot(), str(tmp_path / "a"))
    f = tmp_path / "a" / ITEM_FILE
    f.write_bytes(f.read_bytes()[:-3] + b"xyz")
    with pytest.raises(SnapshotFormatError, match="checksum"):
        load_item_factors(str(tmp_path / "a"))
    save_snapshot(_snapshot(), str(tmp_path / "b"))
    (tmp_path / "b" / USER_FILE).unlink()
    with pytest.raises(SnapshotFormatError, match="missing"):
        load_snapshot(str(tmp_path / "b"))


def test_incomplete_or_foreign_directories(tmp_path: Path) -> None:
    with pytest.raises(SnapshotFormatError, match="missing"):
        read_manifest(str(tmp_path))  # files without manifest = not (yet) a snapshot
    (tmp_path / MANIFEST).write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(SnapshotFormatError, match="not a"):
        read_manifest(str(tmp_path))


def test_newer_format_version_is_refused(tmp_path: Path) -> None:
    save_snapshot(_snapshot(), str(tmp_path))
    m = json.loads((tmp_path / MANIFEST).read_text())
    m["format_version"] = FORMAT_VERSION + 1
    m["some_future_key"] = 1
    (tmp_path / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(SnapshotFormatError, match="newer"):
        read_manifest(str(tmp_path))
    m["format_version"] = FORMAT_VERSION  # unknown keys alone are fine
    (tmp_path / MANIFEST).write_text(json.dumps(m))
    assert read_manifest(str(tmp_path))["some_future_key"] == 1


def test_validation(tmp_path: Path) -> None:
    bad = _snapshot()
    bad.item_factors = bad.item_factors[:1]
    with pytest.raises(SnapshotFormatError, match="shape"):
        save_snapshot(bad, str(tmp_path / "x"))
    dup = _snapshot()
    dup.user_ids = np.array(["u1", "u1", "u3"], dtype=object)
    with pytest.raises(SnapshotFormatError, match="unique"):
        save_snapshot(dup, str(tmp_path / "y"))
    nan = _snapshot()
    nan.user_factors[0, 0] = np.nan
    with pytest.raises(SnapshotFormatError, match="NaN"):
        save_snapshot(nan, str(tmp_path / "z"))
    assert not (tmp_path / "x").exists()
