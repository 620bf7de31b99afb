"""Catalog parsers: MovieLens (csv), ml-100k (Latin-1), RecBole atomic, JSONL and CSV; good and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from batch.catalog.model import CatalogError, CatalogItem
from batch.catalog.readers import detect_format, parse_catalog

DATA = Path(__file__).resolve().parents[1] / "data" / "movielens"
ML = DATA / "ml-latest-small"
ML100K = DATA / "ml-100k"


def by_id(items: list[CatalogItem]) -> dict[str, CatalogItem]:
    return {i.item_id: i for i in items}


# ------------------------------------------------------------------------------- MovieLens csv


def test_movielens_fixture() -> None:
    res = parse_catalog(ML)
    assert res.fmt == "movielens"
    assert len(res.items) == 41 and res.skipped == 1  # the orphan tag summary
    items = by_id(res.items)
    matrix = items["2571"]
    assert (matrix.title, matrix.year, matrix.genres) == (
        "The Matrix",
        1999,
        ["Action", "Sci-Fi", "Thriller"],
    )
    assert matrix.imdb_id == "tt0133093" and matrix.tmdb_id == 603 and matrix.movielens_id == 2571
    assert items["11"].title == "The American President"  # quoted comma
    assert items["29"].original_title == "La Cité des enfants perdus"
    assert "12 monkeys" in items["32"].tags  # a.k.a. alias kept as a tag
    assert items["114335"].genres == []  # (no genres listed)
    assert items["69849"].tmdb_id is None  # blank tmdbId in links.csv (CRLF file)
    assert items["171749"].year == 2006  # TV series year range
    assert items["1"].tags[:1] == ["pixar"]  # most frequent tag first
    assert "space opera, classic" in items["260"].tags  # quoted comma inside a tag
    orphan = [i for i in res.issues if i.file == "tags.csv"]
    assert orphan and "1 tag(s) for movies not in movies.csv" in orphan[0].message


def test_movielens_file_path_uses_sibling_links(tmp_path: Path) -> None:
    res = parse_catalog(ML / "movies.csv")
    assert by_id(res.items)["1"].tmdb_id == 862


def _write(path: Path, text: str, *, crlf: bool = False, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if crlf:
        text = text.replace("\n", "\r\n")
    path.write_bytes(text.encode(encoding))
    return path


MOVIES = """movieId,title,genres
1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy
11,"American President, The (1995)",Comedy|Drama|Romance
2571,"Matrix, The (1999)",Action|Sci-Fi|Thriller
"""


@pytest.mark.parametrize("crlf", [False, True])
def test_crlf_and_lf_parse_identically(tmp_path: Path, crlf: bool) -> None:
    _write(tmp_path / "movies.csv", MOVIES, crlf=crlf)
    res = parse_catalog(tmp_path)
    assert [i.title for i in res.items] == ["Toy Story", "The American President", "The Matrix"]
    assert [i.content_hash for i in res.items] == [i.content_hash for i in parse_catalog(tmp_path).items]
    assert not res.issues


def test_broken_lines_are_counted_skips_with_file_line_field(tmp_path: Path) -> None:
    text = MOVIES + (
        "abc,Not A Number (2000),Drama\n"  # line 5: bad id
        '99,"Unterminated (2001),Drama\n'  # line 6: stray quote
        "100,Too,Many,Fields (2002),Drama\n"  # line 7: 5 fields
        "101,Fine Movie (2003),Drama\n"
        "1,Toy Story again (1995),Comedy\n"  # line 9: duplicate id
    )
    _write(tmp_path / "movies.csv", text)
    res = parse_catalog(tmp_path)
    assert [i.item_id for i in res.items] == ["1", "11", "2571", "101"]
    problems = {(i.line, i.field): i for i in res.issues}
    assert problems[(5, "movieId")].message.startswith("not an integer")
    assert "malformed CSV" in problems[(6, "")].message
    assert "expected 3 fields, got 5" in problems[(7, "")].message
    assert "duplicate id 1 (first at line 2)" in problems[(9, "item_id")].message
    assert all(i.file == "movies.csv" and i.skipped for i in res.issues)
    assert str(problems[(5, "movieId")]).startswith("movies.csv:5 [movieId]:")


def test_empty_and_header_only_files(tmp_path: Path) -> None:
    _write(tmp_path / "a" / "movies.csv", "")
    with pytest.raises(CatalogError, match="empty"):
        parse_catalog(tmp_path / "a")
    _write(tmp_path / "b" / "movies.csv", "movieId,title,genres\n")
    with pytest.raises(CatalogError, match="no valid items"):
        parse_catalog(tmp_path / "b")
    _write(tmp_path / "c" / "movies.csv", "\n\n  \r\n")
    with pytest.raises(CatalogError, match="empty"):
        parse_catalog(tmp_path / "c")


def test_missing_header_column(tmp_path: Path) -> None:
    _write(tmp_path / "movies.csv", "movieId,name\n1,Toy Story\n")
    with pytest.raises(CatalogError, match=r"lacks column\(s\) \['title', 'genres'\]"):
        parse_catalog(tmp_path, "movielens")


def test_wrong_encoding_is_a_clear_error_or_explicit(tmp_path: Path) -> None:
    _write(
        tmp_path / "movies.csv", MOVIES + '554,"Misérables, Les (1995)",Drama|Musical\n', encoding="latin-1"
    )
    with pytest.raises(CatalogError, match=r"movies.csv:5: not valid UTF-8 .*--encoding latin-1"):
        parse_catalog(tmp_path)
    res = parse_catalog(tmp_path, encoding="latin-1")
    assert by_id(res.items)["554"].title == "Les Misérables"


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "movies.csv").write_bytes(b"\xef\xbb\xbf" + MOVIES.encode())
    assert len(parse_catalog(tmp_path).items) == 3


def test_binary_file_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "movies.csv").write_bytes(b"movieId,title\x00\x00\x01")
    with pytest.raises(CatalogError, match="NUL"):
        parse_catalog(tmp_path)


def test_bad_links_values_keep_the_movie(tmp_path: Path) -> None:
    _write(tmp_path / "movies.csv", MOVIES)
    _write(tmp_path / "links.csv", "movieId,imdbId,tmdbId\n1,0114709,x62\n11,zz,9087\n999,1,2\n")
    res = parse_catalog(tmp_path)
    items = by_id(res.items)
    assert items["1"].imdb_id == "tt0114709" and items["1"].tmdb_id is None
    assert items["11"].imdb_id is None and items["11"].tmdb_id == 9087
    kept = [i for i in res.issues if not i.skipped]
    assert {(i.line, i.field) for i in kept} == {(2, "tmdbId"), (3, "imdbId")}


# ------------------------------------------------------------------------------------ ml-100k


def test_ml100k_latin1_fixture() -> None:
    assert (ML100K / "u.item").read_bytes().find(b"Mis\xe9rables") > 0  # really Latin-1 on disk
    res = parse_catalog(ML100K)
    assert res.fmt == "ml100k" and not res.issues and len(res.items) == 12
    items = by_id(res.items)
    assert items["554"].title == "Les Misérables" and items["554"].genres == ["Drama", "Musical"]
    toy = items["1"]
    assert (toy.title, str(toy.release_date), toy.genres) == (
        "Toy Story",
        "1995-01-01",
        ["Animation", "Children", "Comedy"],
    )
    assert items["267"].title == "unknown" and items["267"].genres == [] and items["267"].year is None
    jedi = items["181"]  # u.item dates the 1997 re-release; the title says 1983
    assert jedi.year == 1983 and jedi.release_date is None
    assert items["1300"].title == "'Til There Was You"


def test_ml100k_reencoded_utf8_and_crlf(tmp_path: Path) -> None:
    text = (ML100K / "u.item").read_bytes().decode("latin-1")
    _write(tmp_path / "u.item", text, crlf=True, encoding="utf-8")
    shutil.copy(ML100K / "u.genre", tmp_path / "u.genre")
    res = parse_catalog(tmp_path)
    assert by_id(res.items)["554"].title == "Les Misérables"
    assert [i.content_hash for i in res.items] == [i.content_hash for i in parse_catalog(ML100K).items]


def test_ml100k_bad_lines_and_default_genres(tmp_path: Path) -> None:
    good = "1|Toy Story (1995)|01-Jan-1995||http://x|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0"
    lines = [
        good,
        "2|Short line (1995)|01-Jan-1995||http://x|0|1",
        "3|Bad flag (1995)|01-Jan-1995||http://x|0|0|0|0|0|0|0|0|2|0|0|0|0|0|0|0|0|0|0",
        "4|Bad date (1995)|1995-01-01||http://x|0|0|0|0|0|0|0|0|1|0|0|0|0|0|0|0|0|0|0",
    ]
    _write(tmp_path / "u.item", "\n".join(lines) + "\n", encoding="latin-1")
    res = parse_catalog(tmp_path / "u.item")  # no u.genre: GroupLens' 19 genres are assumed
    assert [i.item_id for i in res.items] == ["1"]
    assert res.items[0].genres == ["Animation", "Children", "Comedy"]
    assert {(i.line, i.field) for i in res.issues} == {(2, ""), (3, "genres"), (4, "release date")}


# ---------------------------------------------------------------------------------- JSONL / CSV


def test_jsonl_seed_fields_aliases_and_errors(tmp_path: Path) -> None:
    rows = [
        {
            "id": 603,
            "title": "The Matrix",
            "overview": "A hacker learns the truth.",
            "genres": [{"id": 28, "name": "Action"}, {"id": 878, "name": "Science Fiction"}],
            "release_date": "1999-03-30",
            "runtime": 136,
            "director": "Lana Wachowski",
            "main_cast": ["Keanu Reeves", "Carrie-Anne Moss"],
            "vote_average": 8.2,
            "vote_count": 24000,
            "popularity_score": 80.5,
            "imdb_id": "tt0133093",
            "tmdb_id": 603,
            "adult": "false",
            "shiny": 1,
        },
        {"tmdb_id": 862, "title": "Toy Story", "genres": "Animation|Comedy", "runtime": 0},
    ]
    lines = [json.dumps(r) for r in rows] + [
        "{not json",
        json.dumps({"id": 5, "title": "Too good", "tmdb_rating": 11}),
        json.dumps(["a", "list"]),
        json.dumps({"id": 6, "title": "Wrong year", "year": 2001, "release_date": "1999-01-01"}),
        "",
    ]
    _write(tmp_path / "c.jsonl", "\n".join(lines))
    res = parse_catalog(tmp_path / "c.jsonl")
    items = by_id(res.items)
    m = items["603"]
    assert m.genres == ["Action", "Sci-Fi"] and m.tmdb_rating == 8.2 and m.tmdb_vote_count == 24000
    assert m.year == 1999 and m.popularity == 80.5 and m.adult is False and m.main_cast[0] == "Keanu Reeves"
    assert items["862"].runtime is None  # TMDB's 0 = unknown
    issues = {i.line: i for i in res.issues}
    assert "invalid JSON" in issues[3].message
    assert issues[4].field == "tmdb_rating"
    assert "expected a JSON object" in issues[5].message
    assert "does not match release_date" in issues[6].message
    unknown = [i for i in res.issues if not i.skipped]
    assert unknown and unknown[0].field == "shiny"


def test_csv_seed_fields_multiline_overview(tmp_path: Path) -> None:
    text = (
        "item_id,title,overview,genres,main_cast,release_date,tmdb_rating,poster_path\n"
        '1,"Heat","A thief, a cop.\nTwo obsessions.","Action|Crime",'
        '"[""Al Pacino"", ""Robert De Niro""]",1995-12-15,7.9,/heat.jpg\n'
        "2,Broken,,Drama,,not-a-date,,\n"
        "3,Short row\n"
    )
    _write(tmp_path / "items.csv", text, crlf=True)
    assert detect_format(tmp_path / "items.csv") == "csv"
    res = parse_catalog(tmp_path / "items.csv")
    heat = by_id(res.items)["1"]
    assert heat.overview == "A thief, a cop. Two obsessions." and heat.main_cast == [
        "Al Pacino",
        "Robert De Niro",
    ]
    assert heat.genres == ["Action", "Crime"] and heat.poster_path == "/heat.jpg"
    issues = {i.line: i for i in res.issues}
    assert issues[4].field == "release_date"  # the multi-line record took lines 2-3
    assert "expected 8 fields" in issues[5].message


@pytest.mark.parametrize(
    ("rest", "end"),
    [
        ("3,Fine,Comedy\n4,Also Fine,Drama\n", 5),  # no quote after it: runs to the end of the file
        ('3,"Fine",Comedy\n4,Also Fine,Drama\n', 4),  # ends at the next quote, mid-field
        ('3,Fine,Comedy"\n4,Also Fine,Drama\n', 4),  # closes cleanly: two lines became one record
    ],
)
def test_csv_stray_quote_is_an_error_naming_file_line_and_column(tmp_path: Path, rest: str, end: int) -> None:
    """A stray quote used to swallow the lines behind it and count as one skipped line."""
    text = 'item_id,title,genres\n1,Good,Drama\n2,"Bad (2001),Drama\n' + rest
    _write(tmp_path / "items.csv", text)
    with pytest.raises(CatalogError) as err:
        parse_catalog(tmp_path / "items.csv", "csv")
    msg = str(err.value)
    assert msg.startswith("items.csv:3: malformed CSV"), msg
    assert (
        "the quote at column 3" in msg and f"read on to line {end}" in msg and "Nothing was imported" in msg
    )


def test_detect_format(tmp_path: Path) -> None:
    assert detect_format(ML) == "movielens"
    assert detect_format(ML / "movies.csv") == "movielens"
    assert detect_format(ML100K) == "ml100k"
    assert detect_format(ML100K / "u.item") == "ml100k"
    _write(tmp_path / "x.jsonl", "{}\n")
    assert detect_format(tmp_path / "x.jsonl") == "jsonl"
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(CatalogError, match=r"no movies\.csv"):
        detect_format(tmp_path / "empty_dir")
    with pytest.raises(CatalogError, match="no such file"):
        parse_catalog(tmp_path / "missing.csv")
    with pytest.raises(CatalogError, match="unknown format"):
        parse_catalog(ML, "xml")


# ------------------------------------------------------------------------- RecBole atomic files

RECBOLE_HEAD = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"


def test_recbole_item_file(tmp_path: Path) -> None:
    text = RECBOLE_HEAD + (
        "1\tToy Story\t1995\tAnimation Children's Comedy\n"
        "543\tMisérables, Les\t1995\tDrama Musical\r\n"
        "267\tunkonwn\tunkonwn\tunknown\n"
        "1412\tLand Before Time III (1995)\tV\tAnimation\n"
    )
    _write(tmp_path / "ml-100k" / "ml-100k.item", text)
    assert detect_format(tmp_path / "ml-100k") == "recbole"
    assert detect_format(tmp_path / "ml-100k" / "ml-100k.item") == "recbole"
    res = parse_catalog(tmp_path / "ml-100k")
    items = by_id(res.items)
    assert res.fmt == "recbole" and list(items) == ["1", "543", "267", "1412"]
    assert (items["1"].year, sorted(items["1"].genres)) == (1995, ["Animation", "Children", "Comedy"])
    assert items["1"].movielens_id == 1
    assert items["543"].title == "Les Misérables"
    assert (items["267"].title, items["267"].year, items["267"].genres) == ("unknown", None, [])
    assert items["1412"].year == 1995  # from the title; the bad year column is reported, not fatal
    assert [(i.file, i.line, i.field, i.skipped) for i in res.issues] == [
        ("ml-100k.item", 5, "release_year", False)
    ]


def test_recbole_bad_input(tmp_path: Path) -> None:
    _write(
        tmp_path / "a" / "x.item",
        RECBOLE_HEAD
        + "1\tToy Story\t1995\tComedy\n2\tonly two\n1\tDuplicate\t1995\tDrama\n3\t\t1995\tDrama\n",
    )
    res = parse_catalog(tmp_path / "a")
    assert [i.item_id for i in res.items] == ["1"]
    problems = {(i.line, i.field): i.message for i in res.issues}
    assert "expected 4 tab-separated fields, got 2" in problems[(3, "")]
    assert "duplicate id 1 (first at line 2)" in problems[(4, "item_id")]
    assert (5, "title") in problems
    _write(tmp_path / "b" / "x.item", "")
    with pytest.raises(CatalogError, match="empty"):
        parse_catalog(tmp_path / "b")
    _write(tmp_path / "c" / "x.item", RECBOLE_HEAD)
    with pytest.raises(CatalogError, match="no valid items"):
        parse_catalog(tmp_path / "c")
    _write(tmp_path / "d" / "x.item", "id\tname\n1\tToy Story\n")
    with pytest.raises(CatalogError, match=r"x\.item:1: header .* needs item_id"):
        parse_catalog(tmp_path / "d")
    _write(tmp_path / "e" / "x.item", RECBOLE_HEAD)
    _write(tmp_path / "e" / "y.item", RECBOLE_HEAD)
    with pytest.raises(CatalogError, match=r"expected one RecBole \*\.item file, found 2"):
        parse_catalog(tmp_path / "e", "recbole")
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "x.item").write_bytes((RECBOLE_HEAD + "1\tMisérables\t1995\tDrama\n").encode("latin-1"))
    with pytest.raises(CatalogError, match=r"x\.item:2: not valid UTF-8"):
        parse_catalog(tmp_path / "f")


# ----------------------------------------------------------------------------------- the model


def test_content_hash_covers_embedded_text_only() -> None:
    base = CatalogItem(item_id="1", title="Heat", genres=["Crime", "Action"], popularity=1.0)
    same = CatalogItem(
        item_id="1", title="Heat", genres=["Action", "Crime"], popularity=99.0, poster_path="/p.jpg"
    )
    assert base.content_hash == same.content_hash  # genre order and non-text fields do not count
    assert (
        base.content_hash != CatalogItem(item_id="1", title="Heat 2", genres=["Crime", "Action"]).content_hash
    )
    assert base.content_hash != CatalogItem(item_id="1", title="Heat", genres=["Crime"]).content_hash
    assert "Genres: Action, Crime." in base.embedding_text()


def test_item_id_accepts_integers_and_rejects_control_chars() -> None:
    assert CatalogItem(item_id=42, title="x").item_id == "42"  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        CatalogItem(item_id="a\nb", title="x")
    with pytest.raises(ValueError):
        CatalogItem(item_id="1", title="   ")
