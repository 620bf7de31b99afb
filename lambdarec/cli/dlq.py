"""``lambdarec dlq inspect`` and ``lambdarec dlq replay``: the dead-letter topic of interactions.

The logic lives in :mod:`streams.dead_letters` (``inspect_dlq``, ``replay_dlq``); this is the shell.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from lambdarec.settings import get_settings

app = typer.Typer(no_args_is_help=True, help="Dead letters of the interactions topic: inspect, replay.")
console = Console()


def _preview(payload: bytes, width: int = 80) -> str:
    text = payload.decode("utf-8", errors="replace").replace("\n", "\\n")
    return text if len(text) <= width else text[: width - 1] + "…"


@app.command()
def inspect(
    topic: Annotated[str | None, typer.Option(help="physical DLQ topic (default: from settings)")] = None,
    samples: Annotated[int, typer.Option(help="sample records shown per reason")] = 3,
    max_records: Annotated[int, typer.Option(help="stop after this many records (0: all)")] = 0,
) -> None:
    """Count dead letters by reason and field, and show a few samples (reads all, commits nothing)."""
    from streams.dead_letters import inspect_dlq

    s = inspect_dlq(get_settings(), topic=topic, samples=samples, max_records=max_records)
    if not s.total:
        console.print(f"{s.topic}: empty")
        return
    console.print(f"[bold]{s.topic}[/]: {s.total:,} dead letter(s)")
    counts = Table()
    counts.add_column("reason")
    counts.add_column("count", justify="right")
    for reason, n in s.by_reason.most_common():
        counts.add_row(reason, f"{n:,}")
    if s.unreadable:
        counts.add_row("[red](not a DeadLetter record)[/]", f"{s.unreadable:,}")
    console.print(counts)
    if s.by_field:
        fields = Table(title="invalid fields")
        fields.add_column("field")
        fields.add_column("count", justify="right")
        for name, n in s.by_field.most_common():
            fields.add_row(name, f"{n:,}")
        console.print(fields)
    if s.samples:
        t = Table(title="samples")
        for col in ("dlq p/offset", "origin", "reason", "error", "payload"):
            t.add_column(col, overflow="fold")
        for p, off, dl in s.samples:
            origin = f"{dl.topic}[{dl.partition}]@{dl.offset}" if dl.topic else "-"
            error = f"{dl.field}: {dl.error}" if dl.field else dl.error
            t.add_row(f"{p}/{off}", origin, dl.reason, error, _preview(dl.payload))
        console.print(t)


@app.command()
def replay(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="re-validate only; produce and commit nothing")
    ] = False,
    group: Annotated[str, typer.Option(help="consumer group whose offsets mark what was replayed")] = (
        "lambdarec-dlq-replay"
    ),
    topic: Annotated[str | None, typer.Option(help="physical DLQ topic (default: from settings)")] = None,
    target: Annotated[str | None, typer.Option(help="where valid events go (default: interactions)")] = None,
) -> None:
    """Re-validate dead letters not replayed yet by GROUP and re-produce the now-valid ones."""
    from streams.dead_letters import replay_dlq

    r = replay_dlq(get_settings(), topic=topic, target=target, group=group, dry_run=dry_run)
    verb = "would replay" if dry_run else "replayed"
    console.print(f"[bold]{r.topic}[/] -> {r.target} (group {r.group}){' [dry run]' if dry_run else ''}")
    table = Table()
    table.add_column("")
    table.add_column("count", justify="right")
    table.add_row("dead letters scanned", f"{r.scanned:,}")
    table.add_row(verb, f"{r.replayed:,}")
    for reason, n in r.still_invalid.most_common():
        table.add_row(f"still invalid: {reason}", f"{n:,}")
    if r.unreadable:
        table.add_row("not a DeadLetter record", f"{r.unreadable:,}")
    console.print(table)
    if not dry_run and r.committed:
        console.print(f"committed offsets for {r.group}: {dict(sorted(r.committed.items()))}")
