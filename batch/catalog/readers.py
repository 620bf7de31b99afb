"""Parsers for every catalog source: MovieLens (ml-latest/ml-25m and ml-100k), RecBole atomic
files (``*.item``), JSONL and CSV.

All parsers share three rules:

* The whole source is parsed and validated **before** anything is written (see ``store.py``), so a
  broken line costs one counted skip, never half a catalog.
* Every problem is a :class:`ParseIssue` naming file, line and field.
* Encodings are explicit: GroupLens' ``u.item`` is Latin-1 (we try UTF-8 first, then fall back to
  Latin-1, which cannot fail, because redistributed copies are sometimes re-encoded); every other
  format must be UTF-8 (a BOM is accepted) or the caller passes ``encoding=``; anything else is a
  :class:`CatalogError` that says which line is not UTF-8 and what to pass instead.

CRLF and lone-CR line endings are accepted everywhere.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from batch.catalog.model import CatalogError, CatalogItem, ParseIssue, ParseResult
from batch.catalog.titles import parse_movielens_title

FORMATS = ("auto", "movielens", "ml100k", "recbole", "jsonl", "csv")

#: ml-100k's u.genre, used when the file is missing (order = flag column order).
ML100K_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
#: Genre spellings that differ between MovieLens releases, mapped to the ml-latest spelling so a
#: catalog imported from either release has one genre vocabulary.
_GENRE_ALIASES = {"Children's": "Children", "Childrens": "Children", "Science Fiction": "Sci-Fi"}
_NO_GENRES = {"", "(no genres listed)", "unknown", "(none)"}
_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTHS = {m: i for i, m in enumerate(_MONTH_NAMES, 1)}
#: Most tags kept per movie (by frequency): ml-25m has movies with thousands of tag applications.
MAX_TAGS = 20


def canonical_genre(name: str) -> str | None:
    """Map a source genre name to the catalog's vocabulary; ``None`` for "no genre" markers."""
    n = " ".join(name.split())
    if n.lower() in _NO_GENRES or n in _NO_GENRES:
        return None
    return _GENRE_ALIASES.get(n, n)


# ---------------------------------------------------------------------------------------- text IO


def read_text(path: Path, encoding: str | None = None, latin1_fallback: bool = False) -> str:
    """Read a whole file as text with an explicit encoding policy (see the module docstring).

    Raises :class:`CatalogError` for a missing, empty, binary or undecodable file.
    """
    if not path.exists():
        raise CatalogError(f"{path}: no such file")
    if not path.is_file():
        raise CatalogError(f"{path}: not a regular file")
    data = path.read_bytes()
    if not data.strip():
        raise CatalogError(f"{path}: file is empty; nothing to import")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise CatalogError(f"{path}: file is UTF-16; re-save it as UTF-8 (or pass --encoding utf-16)")
    if encoding:
        try:
            return data.decode(encoding)
        except (UnicodeDecodeError, LookupError) as exc:
            raise CatalogError(f"{path}: cannot decode as {encoding}: {exc}") from exc
    if b"\x00" in data[:65536]:
        raise CatalogError(f"{path}: contains NUL bytes; this is not a text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if latin1_fallback:
            return data.decode("latin-1")
        line = data.count(b"\n", 0, exc.start) + 1
        raise CatalogError(
            f"{path}:{line}: not valid UTF-8 (byte 0x{data[exc.start]:02x}); if the file is "
            "Latin-1/Windows-1252, pass --encoding latin-1 (or cp1252)"
        ) from exc


def _lines(text: str) -> list[str]:
    """Physical lines, CRLF/CR/LF alike (``str.splitlines`` also splits on rarer separators, so not used)."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _csv_rows(text: str, fname: str, issues: list[ParseIssue]) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number, fields) for each non-empty line of a one-record-per-line CSV.

    GroupLens CSVs never have multi-line fields, so each line is parsed on its own: a stray quote
    then breaks only its own line (a counted skip) instead of swallowing the rest of the file.
    """
    for ln, line in enumerate(_lines(text), 1):
        if not line.strip():
            continue
        try:
            yield ln, next(csv.reader((line,), strict=True))
        except csv.Error as exc:
            issues.append(ParseIssue(fname, ln, "", f"malformed CSV line ({exc})"))


def _header(rows: Iterator[tuple[int, list[str]]], fname: str, required: Iterable[str]) -> dict[str, int]:
    try:
        _, head = next(rows)
    except StopIteration:
        raise CatalogError(f"{fname}: file has no header line") from None
    cols = {h.strip(): i for i, h in enumerate(head)}
    missing = [c for c in required if c not in cols]
    if missing:
        raise CatalogError(f"{fname}:1: header {head!r} lacks column(s) {missing}")
    return cols


def _field_of(exc: ValidationError) -> tuple[str, str]:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ())) or ""
    return loc, err.get("msg", str(exc))


class _Collector:
    """Accumulates validated items, rejecting duplicate ids (first occurrence wins)."""

    def __init__(self, result: ParseResult) -> None:
        self.result = result
        self.seen: dict[str, tuple[str, int]] = {}

    def add(self, fname: str, line: int, fields: dict[str, Any]) -> CatalogItem | None:
        try:
            item = CatalogItem.model_validate(fields)
        except ValidationError as exc:
            fld, msg = _field_of(exc)
            self.result.issues.append(ParseIssue(fname, line, fld, msg))
            return None
        prev = self.seen.get(item.item_id)
        if prev is not None:
            self.result.issues.append(
                ParseIssue(fname, line, "item_id", f"duplicate id {item.item_id} (first at line {prev[1]})")
            )
            return None
        self.seen[item.item_id] = (fname, line)
        self.result.items.append(item)
        return item


def _int(s: str) -> int:
    return int(s.strip())


def _movie_id(
    f: list[str], cols: dict[str, int], fname: str, ln: int, issues: list[ParseIssue]
) -> int | None:
    """The movieId of a GroupLens CSV row, or None after recording why the row is unusable."""
    if len(f) != len(cols):
        issues.append(ParseIssue(fname, ln, "", f"expected {len(cols)} fields, got {len(f)}"))
        return None
    try:
        return _int(f[cols["movieId"]])
    except ValueError:
        issues.append(ParseIssue(fname, ln, "movieId", f"not an integer: {f[cols['movieId']]!r}"))
        return None


# ------------------------------------------------------------------------------ MovieLens (csv)


def parse_movielens(path: Path, encoding: str | None = None) -> ParseResult:
    """ml-latest-small / ml-latest / ml-25m / ml-32m: ``movies.csv`` plus optional links and tags.

    ``path`` is the folder or its ``movies.csv``. ``links.csv`` adds imdb/tmdb ids (blanks are
    normal: not every movie has a tmdbId); ``tags.csv`` adds the :data:`MAX_TAGS` most frequent
    tags per movie (lower-cased).
    """
    folder = path if path.is_dir() else path.parent
    movies = path if path.is_file() else folder / "movies.csv"
    res = ParseResult(fmt="movielens")
    issues = res.issues
    text = read_text(movies, encoding)
    res.files.append(str(movies))
    fname = movies.name
    rows = _csv_rows(text, fname, issues)
    cols = _header(rows, fname, ("movieId", "title", "genres"))
    staged: list[tuple[int, dict[str, Any]]] = []
    for ln, f in rows:
        res.lines_read += 1
        if (mid := _movie_id(f, cols, fname, ln, issues)) is None:
            continue
        t = parse_movielens_title(f[cols["title"]])
        genres = [g for g in (canonical_genre(x) for x in f[cols["genres"]].split("|")) if g]
        staged.append(
            (
                ln,
                {
                    "item_id": mid,
                    "movielens_id": mid,
                    "title": t.title,
                    "original_title": t.original_title,
                    "year": t.year,
                    "genres": genres,
                    "tags": t.aliases,
                    "source": "movielens",
                },
            )
        )
    by_id = {rec["item_id"]: rec for _, rec in staged}

    links = folder / "links.csv"
    if links.exists():
        res.files.append(str(links))
        _apply_links(read_text(links, encoding), links.name, by_id, issues)
    tags = folder / "tags.csv"
    if tags.exists():
        res.files.append(str(tags))
        _apply_tags(read_text(tags, encoding), tags.name, by_id, issues)

    col = _Collector(res)
    for ln, rec in staged:
        col.add(fname, ln, rec)
    return res


def _apply_links(text: str, fname: str, by_id: dict[int, dict[str, Any]], issues: list[ParseIssue]) -> None:
    rows = _csv_rows(text, fname, issues)
    cols = _header(rows, fname, ("movieId", "imdbId", "tmdbId"))
    unknown = 0
    for ln, f in rows:
        if (mid := _movie_id(f, cols, fname, ln, issues)) is None:
            continue
        rec = by_id.get(mid)
        if rec is None:
            unknown += 1
            continue
        imdb, tmdb = f[cols["imdbId"]].strip(), f[cols["tmdbId"]].strip()
        if imdb:
            if imdb.isdigit():
                rec["imdb_id"] = f"tt{int(imdb):07d}"
            else:
                issues.append(
                    ParseIssue(fname, ln, "imdbId", f"not numeric: {imdb!r}; ignored", skipped=False)
                )
        if tmdb:
            try:
                rec["tmdb_id"] = _int(tmdb)
            except ValueError:
                issues.append(
                    ParseIssue(fname, ln, "tmdbId", f"not an integer: {tmdb!r}; ignored", skipped=False)
                )
    if unknown:
        issues.append(ParseIssue(fname, 0, "movieId", f"{unknown} row(s) for movies not in movies.csv"))


def _apply_tags(text: str, fname: str, by_id: dict[int, dict[str, Any]], issues: list[ParseIssue]) -> None:
    rows = _csv_rows(text, fname, issues)
    cols = _header(rows, fname, ("movieId", "tag"))
    counts: dict[int, Counter[str]] = {}
    unknown = 0
    for ln, f in rows:
        if (mid := _movie_id(f, cols, fname, ln, issues)) is None:
            continue
        if mid not in by_id:
            unknown += 1
            continue
        tag = " ".join(f[cols["tag"]].split()).lower()
        if tag:
            counts.setdefault(mid, Counter())[tag] += 1
    for mid, c in counts.items():
        top = sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_TAGS]
        by_id[mid]["tags"] = [*by_id[mid]["tags"], *(t for t, _ in top)]
    if unknown:
        issues.append(ParseIssue(fname, 0, "movieId", f"{unknown} tag(s) for movies not in movies.csv"))


# ---------------------------------------------------------------------------------- ml-100k


def _ml100k_date(s: str) -> date:
    """``"01-Jan-1995"`` -> date; month names parsed without the C locale's help."""
    d, m, y = s.strip().split("-")
    return date(int(y), _MONTHS[m.lower()], int(d))


def parse_ml100k(path: Path, encoding: str | None = None) -> ParseResult:
    """ml-100k: ``u.item`` (``|``-separated, Latin-1, 5 fields + 19 genre flags) with ``u.genre``.

    ``path`` is the folder or ``u.item`` itself. The IMDb column of u.item is a search URL, not an
    id, so it is not kept; ml-100k has no links file.
    """
    folder = path if path.is_dir() else path.parent
    item_file = path if path.is_file() else folder / "u.item"
    res = ParseResult(fmt="ml100k")
    issues = res.issues
    genre_file = folder / "u.genre"
    genres: list[str] = list(ML100K_GENRES)
    if genre_file.exists():
        res.files.append(str(genre_file))
        gtext = read_text(genre_file, encoding, latin1_fallback=True)
        parsed: dict[int, str] = {}
        for ln, line in enumerate(_lines(gtext), 1):
            if not line.strip():
                continue
            name, sep, idx = line.rpartition("|")
            if not sep or not idx.strip().isdigit():
                raise CatalogError(f"{genre_file.name}:{ln}: expected 'name|index', got {line!r}")
            parsed[int(idx)] = name.strip()
        if sorted(parsed) != list(range(len(parsed))):
            raise CatalogError(
                f"{genre_file.name}: genre indexes {sorted(parsed)} are not 0..{len(parsed) - 1}"
            )
        genres = [parsed[i] for i in range(len(parsed))]
    text = read_text(item_file, encoding, latin1_fallback=True)
    res.files.append(str(item_file))
    fname = item_file.name
    nfields = 5 + len(genres)
    col = _Collector(res)
    for ln, line in enumerate(_lines(text), 1):
        if not line.strip():
            continue
        res.lines_read += 1
        f = line.split("|")
        if len(f) != nfields:
            issues.append(ParseIssue(fname, ln, "", f"expected {nfields} '|'-separated fields, got {len(f)}"))
            continue
        try:
            mid = _int(f[0])
        except ValueError:
            issues.append(ParseIssue(fname, ln, "movie id", f"not an integer: {f[0]!r}"))
            continue
        flags = f[5:]
        if any(x.strip() not in ("0", "1") for x in flags):
            issues.append(ParseIssue(fname, ln, "genres", "genre flags must be 0 or 1"))
            continue
        rel: date | None = None
        if f[2].strip():
            try:
                rel = _ml100k_date(f[2])
            except (ValueError, KeyError):
                issues.append(ParseIssue(fname, ln, "release date", f"not DD-Mon-YYYY: {f[2]!r}"))
                continue
        t = parse_movielens_title(f[1])
        gl = [g for g, flag in zip(genres, flags, strict=True) if flag.strip() == "1"]
        col.add(
            fname,
            ln,
            {
                "item_id": mid,
                "movielens_id": mid,
                "title": t.title,
                "original_title": t.original_title,
                "year": t.year or (rel.year if rel else None),
                # u.item's date is often a later (video/re-)release: keep it only when it agrees
                # with the title's year, so release_year always means the original release.
                "release_date": rel if rel and (t.year is None or rel.year == t.year) else None,
                "genres": [g for g in (canonical_genre(x) for x in gl) if g],
                "tags": t.aliases,
                "source": "ml100k",
            },
        )
    return res


# ------------------------------------------------------------------------- RecBole atomic files

#: RecBole column names (without the ``:type`` suffix) -> CatalogItem fields.
_RECBOLE_FIELDS = {
    "item_id": "item_id",
    "movie_title": "title",
    "title": "title",
    "release_year": "year",
    "year": "year",
    "class": "genres",
    "genre": "genres",
    "genres": "genres",
}
#: RecBole's ml-100k writes this for item 267, whose GroupLens title and date are "unknown"/empty.
_RECBOLE_UNKNOWN = {"unknown", "unkonwn", ""}


def recbole_file(path: Path, suffix: str) -> Path:
    """The one ``*.<suffix>`` atomic file of a RecBole dataset folder (or ``path`` itself)."""
    if path.is_file():
        return path
    found = sorted(path.glob(f"*.{suffix}"))
    if len(found) != 1:
        raise CatalogError(
            f"{path}: expected one RecBole *.{suffix} file, found {len(found)}"
            + (f" ({', '.join(p.name for p in found)})" if found else "")
        )
    return found[0]


def parse_recbole(path: Path, encoding: str | None = None) -> ParseResult:
    """RecBole atomic files (``ml-100k.item``: tab-separated, header ``name:type``; the copy of
    ml-100k that ships inside the recbole wheel is one). Titles are MovieLens titles without the
    "(year)" (the year is its own ``release_year`` column); ``class`` holds space-separated genres.

    RecBole ids are the source dataset's ids (ml-100k's movie id), so interactions from the
    matching ``*.inter`` file refer to them, and a GroupLens ``u.item`` import of the same release
    upserts the same rows.
    """
    item_file = recbole_file(path, "item")
    res = ParseResult(fmt="recbole")
    issues = res.issues
    text = read_text(item_file, encoding)
    res.files.append(str(item_file))
    fname = item_file.name
    lines = ((ln, line) for ln, line in enumerate(_lines(text), 1) if line.strip())
    try:
        _, head = next(lines)
    except StopIteration:
        raise CatalogError(f"{fname}: file has no header line") from None
    names = [h.split(":", 1)[0].strip() for h in head.split("\t")]
    cols = {n: i for i, n in enumerate(names)}
    if "item_id" not in cols or not ({"movie_title", "title"} & set(cols)):
        raise CatalogError(
            f"{fname}:1: header {head!r} needs item_id:token and movie_title:token_seq (RecBole atomic .item)"
        )
    col = _Collector(res)
    for ln, line in lines:
        res.lines_read += 1
        f = line.split("\t")
        if len(f) != len(names):
            issues.append(
                ParseIssue(fname, ln, "", f"expected {len(names)} tab-separated fields, got {len(f)}")
            )
            continue
        raw = {_RECBOLE_FIELDS[n]: f[i].strip() for n, i in cols.items() if n in _RECBOLE_FIELDS}
        mid = raw["item_id"]
        title = raw.get("title", "")
        t = parse_movielens_title("unknown" if title == "unkonwn" else title)
        year: int | None = t.year
        y = raw.get("year", "")
        if y and y not in _RECBOLE_UNKNOWN:
            if y.isdigit():
                year = int(y)
            else:
                issues.append(
                    ParseIssue(fname, ln, "release_year", f"not a year: {y!r}; ignored", skipped=False)
                )
        genres = [g for g in (canonical_genre(x) for x in raw.get("genres", "").split()) if g]
        col.add(
            fname,
            ln,
            {
                "item_id": mid,
                "movielens_id": int(mid) if mid.isdigit() else None,
                "title": t.title,
                "original_title": t.original_title,
                "year": year,
                "genres": genres,
                "tags": t.aliases,
                "source": "recbole",
            },
        )
    return res


# ------------------------------------------------------------------------- seed fields (JSON/CSV)

#: Accepted spellings of the seed's movie fields (TMDB exports use vote_average/vote_count, ...).
_ALIASES: dict[str, str] = {
    "id": "item_id",
    "movie_id": "item_id",
    "movieId": "item_id",
    "description": "overview",
    "release_year": "year",
    "cast": "main_cast",
    "vote_average": "tmdb_rating",
    "vote_count": "tmdb_vote_count",
    "imdb_rating": "omdb_rating",
    "imdb_vote_count": "omdb_vote_count",
    "omdb_id": "imdb_id",
    "popularity_score": "popularity",
    "poster_url": "poster_path",
    "backdrop_url": "backdrop_path",
    "language": "original_language",
}
_LIST_FIELDS = {"genres", "main_cast", "tags"}
_KNOWN = set(CatalogItem.model_fields) - {"source"}
_IGNORED = {
    "created_at",
    "updated_at",
    "views",
    "like_count",
    "our_rating",
    "slug",
    "embedding",
    "content_hash",
}


def _as_list(v: Any) -> list[str]:
    """Lists may come as JSON arrays, arrays of ``{"name": ...}`` (TMDB), or ``|``/``,`` separated text."""
    if v is None:
        return []
    if isinstance(v, list):
        return [str(x["name"]) if isinstance(x, dict) and "name" in x else str(x) for x in v]
    s = str(v).strip()
    if not s:
        return []
    if s.startswith("["):
        try:
            return _as_list(json.loads(s))
        except json.JSONDecodeError:
            pass
    sep = "|" if "|" in s else ","
    return [x.strip() for x in s.split(sep)]


def _normalize_record(raw: dict[str, Any], source: str) -> tuple[dict[str, Any], set[str]]:
    """Map a seed-style record onto CatalogItem fields. Returns (fields, unknown keys)."""
    out: dict[str, Any] = {}
    unknown: set[str] = set()
    for k, v in raw.items():
        key = _ALIASES.get(k, k)
        if key in _IGNORED:
            continue
        if key not in _KNOWN:
            unknown.add(k)
            continue
        if isinstance(v, str) and not v.strip() and key not in _LIST_FIELDS:
            v = None
        if v is None:
            continue
        if key in _LIST_FIELDS:
            v = _as_list(v)
        if key == "genres":
            v = [g for g in (canonical_genre(x) for x in v) if g]
        if key == "runtime" and str(v).strip() in ("0", "0.0"):
            continue  # TMDB writes 0 for "unknown"
        if key == "adult" and isinstance(v, str):
            v = v.strip().lower() in ("1", "true", "t", "yes", "y")
        if key == "imdb_id" and isinstance(v, int | str) and str(v).strip().isdigit():
            v = f"tt{int(v):07d}"
        out[key] = v
    if "item_id" not in out and "tmdb_id" in out:
        out["item_id"] = out["tmdb_id"]
    out["source"] = source
    return out, unknown


def parse_jsonl(path: Path, encoding: str | None = None) -> ParseResult:
    """One JSON object per line with the seed's movie fields (see ``_ALIASES`` for accepted names)."""
    res = ParseResult(fmt="jsonl")
    text = read_text(path, encoding)
    res.files.append(str(path))
    col = _Collector(res)
    unknown: set[str] = set()
    for ln, line in enumerate(_lines(text), 1):
        if not line.strip():
            continue
        res.lines_read += 1
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            res.issues.append(
                ParseIssue(path.name, ln, "", f"invalid JSON ({exc.msg} at column {exc.colno})")
            )
            continue
        if not isinstance(raw, dict):
            res.issues.append(
                ParseIssue(path.name, ln, "", f"expected a JSON object, got {type(raw).__name__}")
            )
            continue
        rec, unk = _normalize_record(raw, "jsonl")
        unknown |= unk
        col.add(path.name, ln, rec)
    _note_unknown(res, path.name, unknown)
    return res


def parse_csv(path: Path, encoding: str | None = None) -> ParseResult:
    """A CSV with a header of the seed's movie fields. Multi-line quoted fields (overviews) are fine."""
    res = ParseResult(fmt="csv")
    text = read_text(path, encoding)
    res.files.append(str(path))
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        head = next(reader)
    except (StopIteration, csv.Error) as exc:
        raise CatalogError(f"{path.name}:1: cannot read the header ({exc})") from exc
    head = [h.strip() for h in head]
    if not ({"title"} <= set(head) and ({"item_id", "id", "movie_id", "movieId", "tmdb_id"} & set(head))):
        raise CatalogError(f"{path.name}:1: header needs 'title' and an id column (item_id, id or tmdb_id)")
    col = _Collector(res)
    unknown: set[str] = set()
    while True:
        line = reader.line_num + 1
        try:
            f = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise CatalogError(_unclosed_quote(path.name, text, line, reader.line_num, str(exc))) from exc
        if not any(x.strip() for x in f):
            continue
        res.lines_read += 1
        if len(f) != len(head):
            if reader.line_num > line:  # one record over several lines: a quote joined them
                why = f"as one record of {len(f)} fields, not {len(head)}"
                raise CatalogError(_unclosed_quote(path.name, text, line, reader.line_num, why))
            res.issues.append(ParseIssue(path.name, line, "", f"expected {len(head)} fields, got {len(f)}"))
            continue
        rec, unk = _normalize_record(dict(zip(head, f, strict=True)), "csv")
        unknown |= unk
        col.add(path.name, line, rec)
    _note_unknown(res, path.name, unknown)
    return res


def _unclosed_quote(fname: str, text: str, line: int, end: int, why: str) -> str:
    """The error for a record that a quote ran past the end of its line.

    Why an error and not a skipped line: CSV allows line breaks inside quotes (``parse_csv``
    accepts multi-line overviews), so after a stray ``"`` the parser cannot tell where the record
    was meant to end; it reads on to the next quote or the end of the file. Skipping that as one
    line lost every item behind it while reporting a single skip, so the file is refused, pointing
    at the quote, and nothing is imported.
    """
    lines = _lines(text)
    row = lines[line - 1] if 0 < line <= len(lines) else ""
    opened, quoted = 0, False
    for i, ch in enumerate(row):
        if ch == '"':
            if not quoted:
                opened = i + 1
            quoted = not quoted
    where = f"the quote at column {opened}" if quoted else "a quote"
    return (
        f"{fname}:{line}: malformed CSV (rest of file unreadable): {where} opens a field that does not"
        f" close on this line, so the CSV reader read on to line {end} ({why}); a stray '\"'? Close"
        ' it, or double a quote inside a quoted field (""). Nothing was imported.'
    )


def _note_unknown(res: ParseResult, fname: str, unknown: set[str]) -> None:
    if unknown:
        res.issues.append(
            ParseIssue(fname, 0, ",".join(sorted(unknown)), "unknown field(s) ignored", skipped=False)
        )


# ------------------------------------------------------------------------------------- dispatch


def detect_format(path: Path) -> str:
    """Guess the format from names and, for a bare ``.csv``, its header."""
    if path.is_dir():
        if (path / "movies.csv").exists():
            return "movielens"
        if (path / "u.item").exists():
            return "ml100k"
        if any(path.glob("*.item")):
            return "recbole"
        for name in ("catalog.jsonl", "items.jsonl", "movies.jsonl"):
            if (path / name).exists():
                return "jsonl"
        raise CatalogError(f"{path}: no movies.csv, u.item, RecBole *.item or *.jsonl catalog in this folder")
    if not path.exists():
        raise CatalogError(f"{path}: no such file or folder")
    name = path.name.lower()
    if name == "u.item":
        return "ml100k"
    if name.endswith(".item"):
        return "recbole"
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if name.endswith(".csv"):
        with path.open("rb") as fh:
            head = fh.readline().decode("utf-8-sig", errors="replace")
        return "movielens" if "movieId" in head and "genres" in head and "overview" not in head else "csv"
    raise CatalogError(f"{path}: cannot tell the format; pass --format movielens|ml100k|recbole|jsonl|csv")


def parse_catalog(path: Path, fmt: str = "auto", encoding: str | None = None) -> ParseResult:
    """Parse any supported source into validated items + issues. Raises CatalogError if unusable."""
    if fmt not in FORMATS:
        raise CatalogError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    if fmt == "auto":
        fmt = detect_format(path)
    if path.is_dir():
        if fmt == "jsonl":
            found = [p for n in ("catalog.jsonl", "items.jsonl", "movies.jsonl") if (p := path / n).exists()]
            if not found:
                raise CatalogError(f"{path}: no catalog.jsonl, items.jsonl or movies.jsonl in this folder")
            path = found[0]
        elif fmt == "csv":
            raise CatalogError(f"{path}: --format csv needs a file, not a folder")
    parser = {
        "movielens": parse_movielens,
        "ml100k": parse_ml100k,
        "recbole": parse_recbole,
        "jsonl": parse_jsonl,
        "csv": parse_csv,
    }[fmt]
    res = parser(path, encoding)
    if not res.items:
        detail = f"; first problem: {res.issues[0]}" if res.issues else ""
        raise CatalogError(
            f"{path}: no valid items ({res.lines_read} line(s) read, {res.skipped} skipped){detail}"
        )
    return res
