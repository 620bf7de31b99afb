"""Property-based fuzzing of the file importers (batch/catalog): catalogs and ratings.

Any file either fails as a whole with the documented error (CatalogError / RatingsImportError,
whose message names the file) or parses; a parse accounts for every data line (an item or a
counted skip, never silently dropped) and keeps every good line, so an import is never a "half
catalog" that looks complete. Files are written per example under one tmp dir (no services).
"""

from __future__ import annotations

import json
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from batch.catalog.model import CatalogError
from batch.catalog.ratings import RatingsImportError, read_interactions
from batch.catalog.readers import parse_catalog

FAST = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
# garbage that can never be a valid row with a colliding id: no digits, no line breaks
NO_DIGITS = st.characters(
    blacklist_categories=("Nd", "Cs"), blacklist_characters="\r\n\x00\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
)
garbage_line = st.text(NO_DIGITS, min_size=1, max_size=60).filter(lambda s: s.strip() != "")


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="fuzz-catalog-") as d:
        yield Path(d)


def _file(scratch: Path, name: str, data: bytes) -> Path:
    folder = scratch / uuid.uuid4().hex
    folder.mkdir()
    path = folder / name
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------------------ random bytes
@FAST
@given(st.binary(max_size=400), st.sampled_from(["movies.csv", "catalog.jsonl", "items.csv"]))
def test_random_bytes_catalog_is_a_clear_error_or_a_counted_parse(
    scratch: Path, data: bytes, name: str
) -> None:
    fmt = {"movies.csv": "movielens", "catalog.jsonl": "jsonl", "items.csv": "csv"}[name]
    path = _file(scratch, name, data)
    try:
        res = parse_catalog(path, fmt)
    except CatalogError as exc:
        assert path.name in str(exc), str(exc)
        return
    assert len(res.items) + res.skipped <= max(res.lines_read, 0) + len(res.issues)
    assert all(i.line >= 0 and i.message for i in res.issues)


@FAST
@given(st.binary(max_size=400))
def test_random_bytes_ratings_is_a_clear_error_or_a_counted_parse(scratch: Path, data: bytes) -> None:
    path = _file(scratch, "ratings.csv", data)
    try:
        src = read_interactions(path, "movielens")
        events = list(src.events())
    except RatingsImportError as exc:
        assert "ratings.csv" in str(exc), str(exc)
        return
    assert len(events) + src.stats.broken == src.stats.lines


# ------------------------------------------------------------------------------ good + bad lines
@st.composite
def mixed_lines(draw: st.DrawFn) -> tuple[list[str], list[int]]:
    """Data lines: good ones (ids 1..n, in order) with garbage lines interleaved."""
    n_good = draw(st.integers(1, 15))
    lines: list[str] = []
    good: list[int] = []
    for i in range(1, n_good + 1):
        lines += draw(st.lists(garbage_line, max_size=2))
        lines.append(f'{i},"Title {i}, The (19{i + 80})",Drama|Comedy')
        good.append(i)
    lines += draw(st.lists(garbage_line, max_size=2))
    return lines, good


@FAST
@given(mixed_lines(), st.sampled_from(["\n", "\r\n"]))
def test_movielens_keeps_every_good_line_and_counts_every_bad_one(
    scratch: Path, data: tuple[list[str], list[int]], eol: str
) -> None:
    lines, good = data
    path = _file(scratch, "movies.csv", eol.join(["movieId,title,genres", *lines]).encode())
    res = parse_catalog(path, "movielens")
    assert sorted(int(i.item_id) for i in res.items) == good
    assert len(res.items) + res.skipped == len(lines), [str(i) for i in res.issues]


@FAST
@given(mixed_lines())
def test_csv_catalog_never_drops_good_lines_silently(
    scratch: Path, data: tuple[list[str], list[int]]
) -> None:
    lines, good = data
    path = _file(scratch, "items.csv", "\n".join(["item_id,title,genres", *lines]).encode())
    try:
        res = parse_catalog(path, "csv")
    except CatalogError as exc:  # a stray quote before the first good line: nothing usable, said so
        assert "rest of file unreadable" in str(exc), str(exc)
        return
    kept = sorted(int(i.item_id) for i in res.items)
    # either every good line made it, or the parse says loudly that the rest of the file was lost
    unreadable = [i for i in res.issues if "rest of file unreadable" in i.message]
    assert kept == good or unreadable, [str(i) for i in res.issues]
    assert all(str(i) for i in res.issues)


@FAST
@given(st.lists(st.one_of(garbage_line, st.just("1,31,4.5,964982703")), min_size=1, max_size=12))
def test_ratings_every_line_is_an_event_or_a_counted_issue(scratch: Path, rows: list[str]) -> None:
    path = _file(scratch, "ratings.csv", "\n".join(["userId,movieId,rating,timestamp", *rows]).encode())
    src = read_interactions(path, "movielens")
    events = list(src.events())
    assert len(events) == rows.count("1,31,4.5,964982703")
    assert len(events) + src.stats.broken == len(rows) == src.stats.lines


@FAST
@given(
    st.sampled_from(
        ["'; DROP TABLE items; --", "../../etc/passwd", "..\\x", "%00", "$(id)", "a" * 129, "\u202e", "x\ty"]
    )
)
def test_sql_and_path_like_ids_are_plain_ids_or_counted_skips(scratch: Path, item_id: str) -> None:
    path = _file(scratch, "catalog.jsonl", json.dumps({"item_id": item_id, "title": "T"}).encode())
    try:
        res = parse_catalog(path, "jsonl")
    except CatalogError as exc:  # the only line was refused: the error says which field and why
        assert "catalog.jsonl:1 [item_id]" in str(exc), str(exc)
        return
    assert len(res.items) + res.skipped == 1
    if res.items:
        assert res.items[0].item_id == item_id.strip()
