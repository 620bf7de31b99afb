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


def test_recbole_inter_file(tmp_path: Path) -> None:
    """RecBole's ml-100k.inter holds GroupLens' u.data rows: same events, same ids."""
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    inter = write(
        folder,
        "ml-100k.inter",
        INTER_HEAD + "196\t242\t3\t881250949\n186\t302\t3.0\t891717742.0\nbad\n22\t377\tx\t878887116\n",
    )
    src = read_interactions(folder)
    events = list(src.events())
    assert src.fmt == "recbole" and src.files == [inter]
    assert [(e.user_id, e.item_id, e.rating) for e in events] == [("196", "242", 3.0), ("186", "302", 3.0)]
    assert [(i.line, i.message[:11]) for i in src.stats.issues] == [(4, "expected 4 "), (5, "rating is n")]
    udata = write(tmp_path, "u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    assert [e.event_id for e in read_interactions(udata).events()] == [e.event_id for e in events]
    other = write(tmp_path, "ml-1m.inter", INTER_HEAD + "196\t242\t3\t881250949\n")
    assert next(read_interactions(other).events()).event_id != events[0].event_id
    with pytest.raises(RatingsImportError, match=r"lacks column\(s\) \['rating'"):
        list(read_interactions(write(tmp_path, "x.inter", "user_id:token\titem_id:token\n1\t2\n")).events())
    write(folder, "second.inter", INTER_HEAD)
    with pytest.raises(RatingsImportError, match=r"2 RecBole \.inter files"):
        read_interactions(folder)


def test_wrong_encoding_is_a_counted_skip_or_a_clear_error(tmp_path: Path) -> None:
    """A line that is not UTF-8 is skipped with its line number (never a silently mangled id);
    UTF-16 and binary files are refused before anything is sent."""
    raw = ML_CSV.encode() + "7,caf\u00e9,4.0,1260759144\n".encode("latin-1") + b"8,31,4.0,1260759144\n"
    path = tmp_path / "ratings.csv"
    path.write_bytes(raw)
    src = read_interactions(path)
    events = list(src.events())
    assert [e.user_id for e in events] == ["1", "1", "2", "8"]
    assert src.stats.broken == 1 and src.stats.issues[0].line == 5
    assert "not valid UTF-8 (byte 0xe9 at column 6)" in src.stats.issues[0].message
    (tmp_path / "u16.csv").write_bytes(ML_CSV.encode("utf-16"))
    with pytest.raises(RatingsImportError, match="UTF-16"):
        read_interactions(tmp_path / "u16.csv")
    (tmp_path / "u.data").write_bytes(b"1\t2\x00\x00\x01")
    with pytest.raises(RatingsImportError, match="NUL"):
        read_interactions(tmp_path / "u.data")


def test_duplicate_rows_get_one_event_id(tmp_path: Path) -> None:
    """A rating row that appears twice becomes two events with the same id: every consumer (lake
    silver, speed layer) dedupes by event_id, so it counts once (tests/integration/test_backfill.py)."""
    src = read_interactions(write(tmp_path, "ratings.csv", ML_CSV + "2,10,5.0,835355493\n"))
    ids = [e.event_id for e in src.events()]
    assert len(ids) == 4 and len(set(ids)) == 3 and ids[2] == ids[3]


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


INTER_HEAD = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("ratings.csv", ""),
        ("ratings.csv", "userId,movieId,rating,timestamp\n"),
        ("ratings.csv", "\n\n"),
        ("u.data", ""),
        ("u.data", "\n \n"),
        ("ml-100k.inter", ""),
        ("ml-100k.inter", INTER_HEAD),
    ],
)
def test_empty_file_is_a_clear_error(tmp_path: Path, name: str, text: str) -> None:
    path = write(tmp_path, name, text)
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
