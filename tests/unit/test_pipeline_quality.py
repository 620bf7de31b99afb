"""great-expectations validation of training events (batch/quality.py) on small frames."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from batch.quality import validate_events

NOW = datetime(2026, 11, 25, tzinfo=UTC)


def _events(n: int = 20) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(n)],
            "user_id": [f"u{i % 4}" for i in range(n)],
            "item_id": [f"i{i % 5}" for i in range(n)],
            "type": ["rate" if i % 3 == 0 else "view" for i in range(n)],
            "occurred_at": [NOW - timedelta(hours=i) for i in range(n)],
            "rating": [4.0 if i % 3 == 0 else np.nan for i in range(n)],
        }
    )


def test_clean_events_pass() -> None:
    r = validate_events(_events(), catalog_items={f"i{i}" for i in range(5)}, now=NOW)
    assert r.success, r.text()
    assert "passed" in r.text() and r.notes == []


def test_bad_events_fail_with_a_readable_report() -> None:
    df = _events()
    df.loc[0, "rating"] = 7.0
    df.loc[1, "occurred_at"] = NOW + timedelta(days=2)
    df.loc[2, "event_id"] = "e3"
    df.loc[4, "user_id"] = None
    df.loc[5, "type"] = "teleport"
    r = validate_events(df, catalog_items={"i0"}, now=NOW, min_known_item_share=0.9)
    assert not r.success
    text = r.text()
    for part in ("rating", "occurred_at in the future", "event_id", "user_id", "type", "item_id unknown"):
        assert part in text, (part, text)
    assert r.as_dict()["n_rows"] == 20


def test_empty_catalog_skips_coverage_with_a_note() -> None:
    r = validate_events(_events(), catalog_items=set(), now=NOW)
    assert r.success and "not checked" in r.notes[0]


def test_missing_column_fails() -> None:
    r = validate_events(_events().drop(columns=["event_id"]), catalog_items=None, now=NOW)
    assert not r.success and "event_id" in " ".join(r.notes)
