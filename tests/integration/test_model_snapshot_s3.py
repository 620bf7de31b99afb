"""Model snapshots on the object store (MinIO via the ``s3`` fixture)."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from lambdarec.settings import Settings
from schemas.model_snapshot import ModelSnapshot, load_item_factors, load_snapshot, save_snapshot

pytestmark = pytest.mark.integration


def test_round_trip_on_s3(s3: Settings) -> None:
    rng = np.random.default_rng(0)
    snap = ModelSnapshot(
        model_version="it-" + uuid.uuid4().hex[:8],
        algorithm="als",
        user_ids=np.array(["u1", "u2"], dtype=object),
        item_ids=np.array(["i1", "i2", "i3"], dtype=object),
        user_factors=rng.standard_normal((2, 5)).astype(np.float32),
        item_factors=rng.standard_normal((3, 5)).astype(np.float32),
    )
    uri = f"s3://{s3.s3.models_bucket}/test-snapshots/{snap.model_version}"
    save_snapshot(snap, uri, s3=s3.s3)
    back = load_snapshot(uri, s3=s3.s3)
    np.testing.assert_array_equal(back.item_factors, snap.item_factors)
    assert back.user_ids.tolist() == ["u1", "u2"]
    ids, factors, manifest = load_item_factors(uri, s3=s3.s3)
    assert ids.tolist() == ["i1", "i2", "i3"] and manifest["model_version"] == snap.model_version
    np.testing.assert_array_equal(factors, snap.item_factors)
    with pytest.raises(FileExistsError):
        save_snapshot(snap, uri, s3=s3.s3)
