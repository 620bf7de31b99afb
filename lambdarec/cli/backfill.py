"""``lambdarec backfill``: import interactions (MovieLens ratings, ml-100k u.data, world events)
into Kafka (a replay) or straight into the lake (history). Logic: ``batch/catalog/ratings.py``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from lambdarec.settings import Settings, get_settings
from schemas.events import InteractionEvent

console = Console()
err = Console(stderr=True)


@dataclass
class BackfillResult:
    """What one import did (the demo prints it; the CLI prints it as a table)."""

    fmt: str
    target: str
    events: int
    lines: int
    broken: int
    filtered: int
    unknown_items: int
    unknown_skipped: int
    written: int
    skipped_existing: int
    seconds: float


def _when(text: str | None, opt: str) -> datetime | None:
    if text is None:
        return None
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        err.print(f"[red]error[/]: {opt} {text!r} is not an ISO date/time")
        raise typer.Exit(2) from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def produce_to_kafka(
    settings: Settings,
    events: Iterable[InteractionEvent],
    *,
    speed: float = 0.0,
    on_progress: Callable[[int], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Send ``events`` with the SDK (validated, key = user, idempotent producer); returns how many
    were acknowledged. ``speed`` > 0 replays in event time compressed ``speed`` times (events must
    then come in time order); 0 sends as fast as the broker takes them."""
    from streams.producer import EventProducer

    t0: datetime | None = None
    w0 = time.monotonic()
    n = 0
    with EventProducer(settings) as producer:
        for e in events:
            if speed > 0:
                if t0 is None:
                    t0, w0 = e.occurred_at, time.monotonic()
                ahead = (e.occurred_at - t0).total_seconds() / speed - (time.monotonic() - w0)
                if ahead > 0:
                    producer.flush()  # deliver what is due before waiting
                    sleep(ahead)
            producer.send(e)
            n += 1
            if on_progress is not None and n % 1000 == 0:
                on_progress(1000)
        producer.flush()
        if on_progress is not None and n % 1000:
            on_progress(n % 1000)
        return producer.delivered


def run_backfill(
    settings: Settings,
    path: Path,
    *,
    to: str,
    fmt: str = "auto",
    speed: float = 0.0,
    skip_unknown: bool = False,
    check_items: bool = True,
    since: datetime | None = None,
    before: datetime | None = None,
    users: set[str] | None = None,
    show_issues: int = 10,
    out: Console | None = None,
) -> BackfillResult:
    """Import ``path`` to ``to`` (``kafka`` or ``lake``) with a progress bar and a summary.

    A function (not only a command) so that ``lambdarec demo`` runs exactly what a user runs.
    Raises :class:`batch.catalog.ratings.RatingsImportError` when the source is unusable.
    """
    import psycopg

    from batch.catalog.ratings import load_item_ids, read_interactions, write_to_lake
    from lambdarec.cli.catalog import progress_bar

    out = out or console
    if to not in ("kafka", "lake"):
        raise ValueError(f"--to must be kafka or lake, not {to!r}")
    known: set[str] | None = None
    if check_items:
        with psycopg.connect(settings.postgres.url, connect_timeout=5) as conn:
            known = load_item_ids(conn)
        if not known:
            out.print("[yellow]warning[/]: the catalog is empty; every item will count as unknown")
    src = read_interactions(
        path, fmt, known_items=known, skip_unknown=skip_unknown, since=since, before=before, users=users
    )
    t0 = time.monotonic()
    with progress_bar(err) as prog:
        task = prog.add_task(f"{src.fmt} -> {to}", total=None)
        advance = lambda n: prog.advance(task, n)  # noqa: E731
        if to == "kafka":
            events = src.events()
            if speed > 0:  # a time-compressed replay needs event-time order
                events = iter(sorted(events, key=lambda e: e.occurred_at))
            written, skipped = produce_to_kafka(settings, events, speed=speed, on_progress=advance), 0
        else:
            rep = write_to_lake(settings, src.events(), source_key=src.key, on_progress=advance)
            written, skipped = rep.silver_rows, rep.records - rep.silver_rows
    s = src.stats
    res = BackfillResult(
        src.fmt,
        to,
        s.events,
        s.lines,
        s.broken,
        s.filtered,
        s.unknown_items,
        s.unknown_skipped,
        written,
        skipped,
        time.monotonic() - t0,
    )
    what = "produced" if to == "kafka" else "new silver rows"
    out.print(
        f"[bold]{src.fmt}[/] -> {to}: {s.lines:,} line(s) read, {s.events:,} event(s), {written:,} {what}"
        + (f", {skipped:,} already in the lake" if to == "lake" and skipped else "")
        + f", {s.broken:,} broken, {s.filtered:,} filtered out  ({res.seconds:.1f}s)"
    )
    if s.unknown_items:
        action = "skipped" if skip_unknown else "kept (pass --skip-unknown to drop them)"
        out.print(
            f"[yellow]{s.unknown_items:,} event(s) for items not in the catalog[/], {action}; "
            f"e.g. {', '.join(s.unknown_examples[:5])}"
        )
    if s.issues and show_issues > 0:
        t = Table(title=f"broken lines ({s.broken:,}; first {min(show_issues, len(s.issues))})")
        t.add_column("where")
        t.add_column("what")
        for i in s.issues[:show_issues]:
            t.add_row(f"{i.file}:{i.line}", i.message)
        out.print(t)
    return res


def backfill(
    path: Annotated[Path, typer.Argument(help="ratings.csv, u.data, a world folder or their folder")],
    to: Annotated[str, typer.Option("--to", help="kafka (replay) or lake (history)")] = "lake",
    fmt: Annotated[str, typer.Option("--format", "-f", help="auto|movielens|ml100k|recbole|world")] = "auto",
    speed: Annotated[
        float, typer.Option(min=0, help="kafka: replay N times faster than event time (0: flat out)")
    ] = 0.0,
    skip_unknown: Annotated[
        bool, typer.Option("--skip-unknown", help="drop events whose item is not in the catalog")
    ] = False,
    check_items: Annotated[
        bool, typer.Option("--check-items/--no-check-items", help="look item ids up in Postgres")
    ] = True,
    since: Annotated[str | None, typer.Option(help="only events at or after this ISO time")] = None,
    before: Annotated[str | None, typer.Option(help="only events before this ISO time")] = None,
    user: Annotated[list[str] | None, typer.Option(help="only this user's events (repeatable)")] = None,
    show_issues: Annotated[int, typer.Option(help="how many broken lines to list")] = 10,
) -> None:
    """Import interactions: ratings become `rate` events with deterministic ids (re-import = no-op)."""
    import psycopg

    from batch.catalog.ratings import RatingsImportError
    from streams.producer import DeliveryError

    if to not in ("kafka", "lake"):
        err.print(f"[red]error[/]: --to must be kafka or lake, not {to!r}")
        raise typer.Exit(2)
    try:
        run_backfill(
            get_settings(),
            path,
            to=to,
            fmt=fmt,
            speed=speed,
            skip_unknown=skip_unknown,
            check_items=check_items,
            since=_when(since, "--since"),
            before=_when(before, "--before"),
            users=set(user) if user else None,
            show_issues=show_issues,
        )
    except RatingsImportError as exc:
        err.print(f"[red]error[/]: {exc}")
        raise typer.Exit(2) from None
    except DeliveryError as exc:
        err.print(f"[red]error[/]: Kafka did not take the events: {exc}")
        raise typer.Exit(1) from None
    except psycopg.OperationalError as exc:
        err.print(
            f"[red]error[/]: cannot reach Postgres to check item ids ({exc}); start it with "
            "`lambdarec infra up postgres` or pass --no-check-items"
        )
        raise typer.Exit(2) from None
