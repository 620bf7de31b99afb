"""``lambdarec world generate``: a deterministic synthetic world (catalog, users, events) on disk."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from lambdarec.cli.catalog import progress_bar

app = typer.Typer(
    no_args_is_help=True, help="Synthetic users, items and events for tests, demo and benchmarks."
)
console = Console()
err = Console(stderr=True)

# The world-size options, shared with `lambdarec demo` so both commands size a world alike.
Users = Annotated[int, typer.Option(min=1, help="world size: number of users")]
Items = Annotated[int, typer.Option(min=2, help="world size: number of items")]


def events_option(minimum: int) -> Any:
    """``--events`` (the exact number of events) with a floor: 0 for a bare world, more where a
    pipeline must have something to train on."""
    return typer.Option(min=minimum, help="world size: exact number of events")


@app.command()
def generate(
    users: Users = 2000,
    items: Items = 1000,
    events: Annotated[int, events_option(0)] = 200_000,
    seed: Annotated[int, typer.Option(help="same seed + same options = identical output")] = 42,
    out: Annotated[Path, typer.Option(help="output folder")] = Path("var/world"),
    start: Annotated[str, typer.Option(help="first day, ISO date (UTC)")] = "2026-01-01",
    days: Annotated[float, typer.Option(min=0.01, help="length of the event history")] = 180.0,
    chunk_events: Annotated[
        int, typer.Option(min=1000, help="events per window (bounds memory)")
    ] = 1_000_000,
    id_prefix: Annotated[
        str,
        typer.Option(
            help="namespace of the ids: items <P>i1.., users <P>u1.. (default wi1, wu1; MovieLens ids "
            "are bare numbers, so they never collide)"
        ),
    ] = "w",
    force: Annotated[bool, typer.Option("--force", help="replace a world already in OUT")] = False,
) -> None:
    """Write OUT/catalog.jsonl, OUT/events/*.parquet, OUT/truth/*.parquet and OUT/manifest.json."""
    from batch.world import WorldConfig, generate_world

    try:
        t0 = datetime.fromisoformat(start)
    except ValueError:
        err.print(f"[red]error[/]: --start {start!r} is not an ISO date (YYYY-MM-DD)")
        raise typer.Exit(2) from None
    if t0.tzinfo is None:
        t0 = t0.replace(tzinfo=UTC)
    try:
        cfg = WorldConfig(
            users=users,
            items=items,
            events=events,
            seed=seed,
            start=t0,
            days=days,
            chunk_events=chunk_events,
            id_prefix=id_prefix,
        )
    except ValueError as exc:
        err.print(f"[red]error[/]: {exc}")
        raise typer.Exit(2) from None
    progress = progress_bar(err)
    try:
        with progress:
            task = progress.add_task("events", total=events)
            summary = generate_world(cfg, out, overwrite=force, on_events=lambda n: progress.advance(task, n))
    except FileExistsError as exc:
        err.print(f"[red]error[/]: {exc}")
        raise typer.Exit(2) from None
    t = Table(
        title=f"world in {out} ({summary.seconds:.1f}s, "
        f"{summary.events / max(summary.seconds, 1e-9):,.0f} events/s)"
    )
    t.add_column("event type")
    t.add_column("count", justify="right")
    t.add_column("share", justify="right")
    for typ, n in summary.type_counts.items():
        t.add_row(typ, f"{n:,}", f"{n / max(summary.events, 1):.1%}")
    console.print(t)
    console.print(
        f"{summary.users:,} users, {summary.items:,} items, {summary.events:,} events "
        f"in {summary.parts} part(s), "
        f"{summary.first_event} .. {summary.last_event}; ids {cfg.id_prefix}i1.. (items), "
        f"{cfg.id_prefix}u1.. (users)"
    )
    console.print(f"import the catalog with: lambdarec catalog import {out / 'catalog.jsonl'}")
