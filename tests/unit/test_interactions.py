"""batch/interactions.py: events -> confidence/ratings matrices, and evaluation file readers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from batch.interactions import explicit_matrix, implicit_matrix, read_interaction_file
from lambdarec.settings import BatchSettings

T0 = pd.Timestamp("2025-01-01", tz="UTC")


def _events(rows: list[tuple[str, str, str, float, float | None]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"user_id": u, "item_id": i, "type": t, "occurred_at": T0 + pd.Timedelta(days=d), "rating": r}
            for u, i, t, d, r in rows
        ]
    )


def _value(im, user: str, item: str) -> float:  # type: ignore[no-untyped-def]
    u = im.user_index().get_loc(user)
    i = im.item_index().get_loc(item)
    return float(im.matrix[u, i])


def test_weights_decay_and_negative_pairs_dropped() -> None:
    s = BatchSettings(
        event_weights={"view": 1.0, "purchase": 8.0, "dislike": -4.0}, rate_weight=4.0, half_life_days=10
    )
    ev = _events(
        [
            ("u1", "a", "view", 10, None),
            ("u1", "a", "view", 0, None),  # 10 days old at 'now' = day 10: half weight
            ("u1", "b", "purchase", 10, None),
            ("u1", "c", "view", 10, None),
            ("u1", "c", "dislike", 10, None),  # 1 - 4 < 0: dropped
            ("u2", "a", "rate", 10, 5.0),  # +4
            ("u2", "b", "rate", 10, 1.0),  # -4: dropped
            ("u2", "d", "share", 10, None),  # unknown type: weight 0, dropped
        ]
    )
    im = implicit_matrix(ev, s)
    assert _value(im, "u1", "a") == pytest.approx(1.5)
    assert _value(im, "u1", "b") == pytest.approx(8.0)
    assert _value(im, "u2", "a") == pytest.approx(4.0)
    assert im.matrix.nnz == 3
    assert "c" not in set(im.to_frame()["item_id"]) and "d" not in set(im.item_ids)


def test_confidence_is_capped_and_deterministic() -> None:
    s = BatchSettings(event_weights={"play": 2.0}, max_confidence=5.0)
    ev = _events([("u", "x", "play", 1, None)] * 10)
    a, b = implicit_matrix(ev, s), implicit_matrix(ev.sample(frac=1, random_state=1), s)
    assert _value(a, "u", "x") == pytest.approx(5.0)
    np.testing.assert_array_equal(a.matrix.toarray(), b.matrix.toarray())


def test_explicit_matrix_keeps_latest_rating() -> None:
    ev = _events([("u", "x", "rate", 2, 4.0), ("u", "x", "rate", 1, 2.0), ("u", "y", "view", 3, None)])
    im = explicit_matrix(ev)
    assert im.shape == (1, 1) and _value(im, "u", "x") == 4.0


def test_readers(tmp_path: Path) -> None:
    (tmp_path / "u.data").write_text("196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    df = read_interaction_file(tmp_path / "u.data")
    assert df.columns.tolist() == ["user_id", "item_id", "rating", "timestamp"] and len(df) == 2
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n")
    df = read_interaction_file(tmp_path / "ratings.csv")
    assert df.loc[0, "item_id"] == 31 and df.loc[0, "rating"] == 2.5
    pd.DataFrame({"user_id": ["a"], "item_id": ["b"]}).to_parquet(tmp_path / "x.parquet")
    assert read_interaction_file(tmp_path / "x.parquet").loc[0, "item_id"] == "b"
    (tmp_path / "bad.csv").write_text("foo,bar\n1,2\n")
    with pytest.raises(ValueError, match="user_id"):
        read_interaction_file(tmp_path / "bad.csv")
