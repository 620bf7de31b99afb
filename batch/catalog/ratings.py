"""Interaction import: MovieLens ``ratings.csv``, ml-100k ``u.data``, RecBole ``*.inter`` atomic
files and the synthetic world's events Parquet become :class:`~schemas.events.InteractionEvent`
v1, then go either to Kafka (a replay, like live traffic) or straight into the lake's
bronze/silver tables (history).

Why both targets: a replay through Kafka exercises the whole pipeline (speed layer, archiver)
and is what the demo does with the *newer* events; a multi-million-row history does not need the
speed layer and would take hours through it, so the *older* events are written into the lake
directly, with the same row builders and exactly-once commits the archiver uses
(:mod:`batch.lake.events`, :mod:`batch.lake.txn`): the lake cannot tell a backfilled row from an
archived one except by its ``topic`` (``backfill.<source>.<hash>``). The Kafka side
(``produce_to_kafka``) lives in ``lambdarec/cli/backfill.py``: the SDK is in ``streams/`` and the
layers do not import each other.

Rules:

* MovieLens ratings become ``type=rate`` with ``rating = normalize_rating(source)`` (0.5 -> 1.0)
  and ``occurred_at`` from the Unix timestamp. ``event_id = uuid5(source, user, item, timestamp)``,
  so importing the same file twice (from any path, to either target) yields the same ids and the
  consumers' dedupe by ``event_id`` makes it a no-op. World events keep their own ids and types.
* A line that cannot be parsed is counted and kept as a :class:`LineIssue` with its line number;
  the import goes on. An empty file (or one with only a header) is an :class:`RatingsImportError`.
* Item ids not in the catalog are counted (``unknown_items``) and kept unless ``skip_unknown``.

>>> src = read_interactions(Path("ml-latest-small"))          # doctest: +SKIP
>>> events = list(src.events())                               # doctest: +SKIP
>>> write_to_lake(settings, events, source_key=src.key)       # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lambdarec.settings import Settings
from schemas import events as ev

#: Formats :func:`read_interactions` understands.
FORMATS = ("auto", "movielens", "ml100k", "recbole", "world")
#: uuid5 namespace of imported events: changing it would change every backfilled event_id.
EVENT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://lambdarec.dev/import/interactions")
#: How many problems are kept with their line numbers (all are counted).
MAX_ISSUES = 1000


class RatingsImportError(ValueError):
    """The source cannot be imported at all (missing, empty, wrong header): nothing was sent."""


@dataclass(frozen=True)
class LineIssue:
    """One line that was skipped, and why (``line`` is 1-based, the header being line 1)."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


@dataclass
class ImportStats:
    """Counts of one pass over a source (filled while :meth:`InteractionSource.events` runs)."""

    lines: int = 0
    events: int = 0
    broken: int = 0
    filtered: int = 0
    unknown_items: int = 0
    unknown_skipped: int = 0
    issues: list[LineIssue] = field(default_factory=list)
    unknown_examples: list[str] = field(default_factory=list)

    def issue(self, file: str, line: int, message: str) -> None:
        self.broken += 1
        if len(self.issues) < MAX_ISSUES:
            self.issues.append(LineIssue(file, line, message))


def event_id_for(source: str, user: str, item: str, timestamp: str) -> uuid.UUID:
    """The deterministic id of an imported rating: same source row -> same id, on every import.

    >>> str(event_id_for("movielens", "1", "31", "964982703"))[:8]
    '7d3c5b0d'
    """
    return uuid.uuid5(EVENT_NAMESPACE, f"{source}:{user}:{item}:{timestamp}")


def rating_event(source: str, user: str, item: str, rating: float, timestamp: str) -> ev.InteractionEvent:
    """A ``rate`` event from one source rating row (raises ValueError with the reason)."""
    user, item, timestamp = user.strip(), item.strip(), timestamp.strip()
    if not user or not item:
        raise ValueError("empty user or item id")
    try:
        ts = int(timestamp)
    except ValueError:
        raise ValueError(f"timestamp is not an integer: {timestamp!r}") from None
    try:
        occurred = datetime.fromtimestamp(ts, UTC)
    except (OverflowError, OSError, ValueError):
        raise ValueError(f"timestamp out of range: {ts}") from None
    # from_mapping runs every contract rule (id lengths, control characters, future times).
    try:
        return ev.from_mapping(
            {
                "event_id": str(event_id_for(source, user, item, str(ts))),
                "user_id": user,
                "item_id": item,
                "type": "rate",
                "rating": ev.normalize_rating(rating),
                "occurred_at": occurred.isoformat(),
            },
            strict=False,
        )
    except ev.EventValidationError as exc:
        raise ValueError(str(exc)) from None


def _float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"rating is not a number: {text!r}") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise ValueError(f"rating is not a finite number: {text!r}")
    return v


@dataclass
class InteractionSource:
    """A parsed-on-demand source of events. ``events()`` streams (memory stays flat); the filters
    apply while streaming and the counts land in ``stats``."""

    fmt: str
    files: list[Path]
    known_items: set[str] | None = None
    skip_unknown: bool = False
    since: datetime | None = None
    before: datetime | None = None
    users: set[str] | None = None
    stats: ImportStats = field(default_factory=ImportStats)

    @property
    def key(self) -> str:
        """Names this import (format, file names and sizes, filters): the lake's commit id, so
        re-running the same import commits nothing new and a different one is its own stream."""
        parts = [self.fmt, *(f"{p.name}:{p.stat().st_size}" for p in self.files)]
        parts += [str(self.since), str(self.before), ",".join(sorted(self.users or ()))]
        return f"{self.fmt}.{hashlib.sha256('|'.join(parts).encode()).hexdigest()[:12]}"

    def events(self) -> Iterator[ev.InteractionEvent]:
        """Yield every valid event that passes the filters, in file order."""
        self.stats = ImportStats()
        raw = {
            "movielens": self._movielens,
            "ml100k": self._ml100k,
            "recbole": self._recbole,
            "world": self._world,
        }[self.fmt]()
        for e in raw:
            if (
                (self.since is not None and e.occurred_at < self.since)
                or (self.before is not None and e.occurred_at >= self.before)
                or (self.users is not None and e.user_id not in self.users)
            ):
                self.stats.filtered += 1
                continue
            if self.known_items is not None and e.item_id not in self.known_items:
                self.stats.unknown_items += 1
                if len(self.stats.unknown_examples) < 10 and e.item_id not in self.stats.unknown_examples:
                    self.stats.unknown_examples.append(e.item_id)
                if self.skip_unknown:
                    self.stats.unknown_skipped += 1
                    continue
            self.stats.events += 1
            yield e

    # ---- readers ------------------------------------------------------------------------------

    def _lines(self, path: Path) -> Iterator[tuple[int, str]]:
        """Non-empty lines, CRLF/CR/LF alike. A line that is not UTF-8 is a counted skip naming
        its line (ids are compared byte for byte with the catalog's, so a mis-decoded id would be
        a silent "unknown item"); ``surrogateescape`` keeps the bad bytes visible to that check."""
        with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as fh:
            for ln, line in enumerate(fh, 1):
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue
                if not line.isascii():
                    try:
                        line.encode("utf-8")
                    except UnicodeEncodeError as exc:
                        byte = ord(line[exc.start]) - 0xDC00
                        self.stats.issue(
                            path.name,
                            ln,
                            f"not valid UTF-8 (byte 0x{byte:02x} at column {exc.start + 1}); "
                            "re-save the file as UTF-8",
                        )
                        continue
                yield ln, line

    def _movielens(self) -> Iterator[ev.InteractionEvent]:
        """MovieLens ``ratings.csv``: comma-separated, header ``userId,movieId,rating,timestamp``."""
        yield from self._headed(self.files[0], ",", ("userId", "movieId", "rating", "timestamp"), "movielens")

    def _ml100k(self) -> Iterator[ev.InteractionEvent]:
        path = self.files[0]
        for ln, line in self._lines(path):
            self.stats.lines += 1
            f = line.split("\t")
            if len(f) != 4:
                self.stats.issue(path.name, ln, f"expected 4 tab-separated fields, got {len(f)}")
                continue
            try:
                yield rating_event("ml100k", f[0], f[1], _float(f[2]), f[3])
            except ValueError as exc:
                self.stats.issue(path.name, ln, str(exc))
        if self.stats.lines == 0:
            raise RatingsImportError(f"{path}: file is empty; nothing to import")

    def _recbole(self) -> Iterator[ev.InteractionEvent]:
        """RecBole ``*.inter``: tab-separated, header ``user_id:token item_id:token rating:float
        timestamp:float``. ml-100k's copy holds exactly GroupLens' u.data rows, so its events get
        the ``ml100k`` ids (importing both is a no-op the second time); other datasets get
        ``recbole:<name>``."""
        path = self.files[0]
        yield from self._headed(
            path,
            "\t",
            ("user_id", "item_id", "rating", "timestamp"),
            "ml100k" if path.stem == "ml-100k" else f"recbole:{path.stem}",
            typed_header=True,
        )

    def _headed(
        self,
        path: Path,
        sep: str,
        columns: tuple[str, str, str, str],
        source: str,
        *,
        typed_header: bool = False,
    ) -> Iterator[ev.InteractionEvent]:
        """A delimited file whose header names its ``(user, item, rating, timestamp)`` columns, in
        any order and among others. ``typed_header``: RecBole's ``name:type`` header cells, whose
        ``float``-typed timestamps are whole seconds written as ``123.0``."""
        lines = self._lines(path)
        try:
            _, head = next(lines)
        except StopIteration:
            raise RatingsImportError(f"{path}: file is empty; nothing to import") from None
        cols = {(h.split(":", 1)[0] if typed_header else h).strip(): i for i, h in enumerate(head.split(sep))}
        missing = [c for c in columns if c not in cols]
        if missing:
            hint = " (RecBole atomic .inter)" if typed_header else ""
            raise RatingsImportError(f"{path.name}:1: header {head!r} lacks column(s) {missing}{hint}")
        n = len(cols)
        u, m, r, t = (cols[c] for c in columns)
        kind = "comma" if sep == "," else "tab"
        for ln, line in lines:
            self.stats.lines += 1
            f = line.split(sep)
            if len(f) != n:
                self.stats.issue(path.name, ln, f"expected {n} {kind}-separated fields, got {len(f)}")
                continue
            ts = f[t]
            if typed_header:  # a float-typed column: whole seconds as "123.0"
                ts = ts.strip().removesuffix(".0")
            try:
                yield rating_event(source, f[u], f[m], _float(f[r]), ts)
            except ValueError as exc:
                self.stats.issue(path.name, ln, str(exc))
        if self.stats.lines == 0:
            raise RatingsImportError(f"{path}: only a header, no ratings; nothing to import")

    def _world(self) -> Iterator[ev.InteractionEvent]:
        import pyarrow.parquet as pq

        for path in self.files:
            pf = pq.ParquetFile(path)
            row = 0
            for batch in pf.iter_batches(batch_size=50_000):
                for rec in batch.to_pylist():
                    row += 1
                    self.stats.lines += 1
                    data: dict[str, Any] = {k: v for k, v in rec.items() if v is not None}
                    try:
                        if isinstance(data.get("context"), str):
                            data["context"] = json.loads(data["context"])
                        yield ev.from_mapping(data, strict=False)
                    except (ev.EventValidationError, json.JSONDecodeError) as exc:
                        self.stats.issue(path.name, row, f"row {row}: {exc}")
        if self.stats.lines == 0:
            raise RatingsImportError(f"{', '.join(str(p) for p in self.files)}: no events; nothing to import")


def detect_format(path: Path) -> tuple[str, list[Path]]:
    """(format, files) of a folder or file: ratings.csv -> movielens, u.data -> ml100k,
    ``*.inter`` -> recbole, ``events/*.parquet`` or ``*.parquet`` -> world."""
    if not path.exists():
        raise RatingsImportError(f"{path}: no such file or folder")
    if path.is_dir():
        if (path / "ratings.csv").is_file():
            return "movielens", [path / "ratings.csv"]
        if (path / "u.data").is_file():
            return "ml100k", [path / "u.data"]
        inter = sorted(path.glob("*.inter"))
        if len(inter) == 1:
            return "recbole", inter
        if len(inter) > 1:
            raise RatingsImportError(
                f"{path}: {len(inter)} RecBole .inter files ({', '.join(p.name for p in inter)}); name one"
            )
        parts = sorted((path / "events").glob("*.parquet")) or sorted(path.glob("*.parquet"))
        if parts:
            return "world", parts
        raise RatingsImportError(
            f"{path}: no ratings.csv, u.data, RecBole *.inter or events/*.parquet in this folder"
        )
    name = path.name.lower()
    if name.endswith(".parquet"):
        return "world", [path]
    if name == "u.data" or name.endswith((".data", ".tsv")):
        return "ml100k", [path]
    if name.endswith(".inter"):
        return "recbole", [path]
    if name.endswith(".csv"):
        return "movielens", [path]
    raise RatingsImportError(f"{path}: cannot tell the format; pass --format movielens|ml100k|recbole|world")


def read_interactions(
    path: Path,
    fmt: str = "auto",
    *,
    known_items: set[str] | None = None,
    skip_unknown: bool = False,
    since: datetime | None = None,
    before: datetime | None = None,
    users: set[str] | None = None,
) -> InteractionSource:
    """Open a source (nothing is parsed until :meth:`InteractionSource.events` is iterated)."""
    if fmt not in FORMATS:
        raise RatingsImportError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    detected, files = detect_format(path)
    if fmt != "auto" and fmt != detected:
        if path.is_dir():
            raise RatingsImportError(f"{path}: --format {fmt} but the folder holds a {detected} source")
        detected = fmt
    for f in files:
        if f.stat().st_size == 0:
            raise RatingsImportError(f"{f}: file is empty; nothing to import")
        if detected != "world":
            with f.open("rb") as fh:
                head = fh.read(65536)
            if head.startswith((b"\xff\xfe", b"\xfe\xff")):
                raise RatingsImportError(f"{f}: file is UTF-16; re-save it as UTF-8")
            if b"\x00" in head:
                raise RatingsImportError(f"{f}: contains NUL bytes; this is not a text file")
    return InteractionSource(
        detected, files, known_items, skip_unknown, since, before, set(users) if users else None
    )


def load_item_ids(conn: Any) -> set[str]:
    """Every ``items.item_id`` (a psycopg connection): what "unknown item" is checked against."""
    return {r[0] for r in conn.execute("SELECT item_id FROM items")}


# ---- targets ------------------------------------------------------------------------------------


@dataclass
class LakeBackfillReport:
    """What :func:`write_to_lake` committed (rows 0 and skipped > 0: this import was done before)."""

    topic: str
    records: int = 0
    bronze_rows: int = 0
    silver_rows: int = 0
    skipped: int = 0
    commits: int = 0
    seconds: float = 0.0


def write_to_lake(
    settings: Settings,
    events: Iterable[ev.InteractionEvent],
    *,
    source_key: str,
    chunk_rows: int = 100_000,
    on_progress: Callable[[int], None] | None = None,
) -> LakeBackfillReport:
    """Write ``events`` into bronze and silver as history, exactly once per ``source_key``.

    Each chunk becomes a pseudo Kafka micro-batch on topic ``backfill.<source_key>`` (partition 0,
    offsets = position in the import) and is committed by :func:`batch.lake.txn.commit_exactly_once`
    with the archiver's own writers: a re-run (or a resumed, interrupted one) skips every chunk
    already committed, and silver's insert-if-absent by ``event_id`` drops events already in the
    lake from any other path (an earlier import, the archiver).
    """
    from batch.lake import events as lake_events
    from batch.lake.storage import Lake
    from batch.lake.txn import DedupIndex, KafkaRecord, commit_exactly_once
    from schemas.lake import BRONZE_INTERACTIONS, SILVER_INTERACTIONS

    t_start = time.monotonic()
    lake = Lake(settings)
    topic = f"backfill.{source_key}"
    report = LakeBackfillReport(topic)
    bronze, silver = lake.ensure(BRONZE_INTERACTIONS), lake.ensure(SILVER_INTERACTIONS)
    silver_write = lake_events.silver_writer(
        DedupIndex(SILVER_INTERACTIONS, "event_id", settings.lake.dedup_cache_max_ids),
        settings.lake.max_extra_columns,
    )

    def flush(records: list[KafkaRecord]) -> None:
        if not records:
            return
        archived_at = datetime.now(UTC)
        batch = lake_events.decode_interactions(records)
        ranges = {(topic, 0): records[-1].offset}
        b = commit_exactly_once(
            bronze,
            BRONZE_INTERACTIONS,
            lake_events.bronze_rows(batch, archived_at),
            ranges,
            lake_events.write_bronze,
        )
        s = commit_exactly_once(
            silver, SILVER_INTERACTIONS, lake_events.silver_rows(batch, archived_at), ranges, silver_write
        )
        report.bronze_rows += b.rows
        report.silver_rows += s.rows
        report.skipped += s.skipped_rows
        report.commits += int(b.version is not None) + int(s.version is not None)
        if on_progress is not None:
            on_progress(len(records))

    chunk: list[KafkaRecord] = []
    for offset, e in enumerate(events):
        ms = int(e.occurred_at.timestamp() * 1000)
        chunk.append(KafkaRecord(topic, 0, offset, ms, e.key, ev.encode(e)))
        report.records += 1
        if len(chunk) >= chunk_rows:
            flush(chunk)
            chunk = []
    flush(chunk)
    report.seconds = time.monotonic() - t_start
    return report


__all__ = [
    "FORMATS",
    "ImportStats",
    "InteractionSource",
    "LakeBackfillReport",
    "LineIssue",
    "RatingsImportError",
    "detect_format",
    "event_id_for",
    "load_item_ids",
    "rating_event",
    "read_interactions",
    "write_to_lake",
]
