"""Interaction import (``batch/catalog/ratings.py``): parsing, ids, filters, errors. No services."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from batch.catalog.ratings import (
    RatingsImportError,
    event_id_for,
    rating_event,
    read_interactions,
)
from schemas.events import EventType

ML_CSV = "userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n1,1029,0.5,1260759179\n2,10,5.0,835355493\n"


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_movielens_ratings_become_rate_events(tmp_path: Path) -> None:
    src = read_interactions(write(tmp_path, "ratings.csv", ML_CSV))
    events = list(src.events())
    assert src.fmt == "movielens"
    assert [(e.user_id, e.item_id, e.rating) for e in events] == [
        ("1", "31", 2.5),
        ("1", "1029", 1.0),
        ("2", "10", 5.0),
    ]
    assert all(e.type is EventType.RATE for e in events)
    assert events[0].occurred_at == datetime.fromtimestamp(1260759144, UTC)
    assert src.stats.lines == 3 and src.stats.events == 3 and src.stats.broken == 0


def test_event_ids_are_deterministic_across_paths_and_runs(tmp_path: Path) -> None:
    a = [e.event_id for e in read_interactions(write(tmp_path, "ratings.csv", ML_CSV)).events()]
    (tmp_path / "copy").mkdir()
    b = [e.event_id for e in read_interactions(write(tmp_path / "copy", "ratings.csv", ML_CSV)).events()]
    assert a == b and len(set(a)) == 3
    assert a[0] == event_id_for("movielens", "1", "31", "1260759144")
    # the same rating from another source is another event
    assert event_id_for("ml100k", "1", "31", "1260759144") != a[0]


def test_ml100k_u_data(tmp_path: Path) -> None:
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    write(folder, "u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    src = read_interactions(folder)
    events = list(src.events())
    assert src.fmt == "ml100k"
    assert [(e.user_id, e.item_id, e.rating) for e in events] == [("196", "242", 3.0), ("186", "302", 3.0)]


def test_broken_lines_are_counted_with_line_numbers(tmp_path: Path) -> None:
    text = ML_CSV + "bad,line\n3,4,x,1\n3,4,3.0,notatime\n\n4,5,4.0,99999999999999\n5,6,4.0,1\n"
    src = read_interactions(write(tmp_path, "ratings.csv", text))
    events = list(src.events())
    assert len(events) == 4
    assert src.stats.broken == 4
    lines = [i.line for i in src.stats.issues]
    assert lines == [5, 6, 7, 9]
    msgs = " | ".join(i.message for i in src.stats.issues)
    assert "expected 4" in msgs and "not a number" in msgs and "not an integer" in msgs


def test_unknown_items_counted_and_optionally_skipped(tmp_path: Path) -> None:
    path = write(tmp_path, "ratings.csv", ML_CSV)
    kept = read_interactions(path, known_items={"31"})
    assert len(list(kept.events())) == 3
    assert kept.stats.unknown_items == 2 and kept.stats.unknown_examples == ["1029", "10"]
    skipped = read_interactions(path, known_items={"31"}, skip_unknown=True)
    assert [e.item_id for e in skipped.events()] == ["31"]
    assert skipped.stats.unknown_skipped == 2


def test_time_and_user_filters(tmp_path: Path) -> None:
    path = write(tmp_path, "ratings.csv", ML_CSV)
    cut = datetime.fromtimestamp(1260759150, UTC)
    assert [e.item_id for e in read_interactions(path, before=cut).events()] == ["31", "10"]
    assert [e.item_id for e in read_interactions(path, since=cut).events()] == ["1029"]
    src = read_interactions(path, users={"2"})
    assert [e.user_id for e in src.events()] == ["2"] and src.stats.filtered == 2


@pytest.mark.parametrize("text", ["", "userId,movieId,rating,timestamp\n", "\n\n"])
def test_empty_file_is_a_clear_error(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, "ratings.csv", text)
    with pytest.raises(RatingsImportError, match=r"empty|nothing to import"):
        list(read_interactions(path).events())


def test_wrong_header_and_unknown_source(tmp_path: Path) -> None:
    with pytest.raises(RatingsImportError, match="lacks column"):
        list(read_interactions(write(tmp_path, "ratings.csv", "a,b\n1,2\n")).events())
    with pytest.raises(RatingsImportError, match=r"no ratings\.csv"):
        read_interactions(_empty_dir(tmp_path))
    with pytest.raises(RatingsImportError, match="no such file"):
        read_interactions(tmp_path / "missing.csv")


def _empty_dir(tmp_path: Path) -> Path:
    d = tmp_path / "empty"
    d.mkdir()
    return d


def test_world_parquet_keeps_ids_and_types(tmp_path: Path) -> None:
    from batch.world import WorldConfig, generate_world

    generate_world(WorldConfig(users=20, items=10, events=500, days=2), tmp_path / "w")
    src = read_interactions(tmp_path / "w")
    events = list(src.events())
    assert src.fmt == "world" and len(events) == 500 and src.stats.broken == 0
    assert len({e.type for e in events}) > 1
    again = [e.event_id for e in read_interactions(tmp_path / "w").events()]
    assert again == [e.event_id for e in events]


def test_rating_event_normalizes_and_validates() -> None:
    assert rating_event("movielens", "1", "2", 0.5, "1").rating == 1.0
    assert rating_event("movielens", "1", "2", 3.75, "1").rating == 4.0
    with pytest.raises(ValueError, match="empty"):
        rating_event("movielens", " ", "2", 3.0, "1")
    with pytest.raises(ValueError, match="occurred_at"):
        rating_event("movielens", "1", "2", 3.0, str(10**10))  # year 2286: in the future
