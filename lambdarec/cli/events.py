"""``lambdarec events produce FILE`` and ``lambdarec events schema``.

``produce`` sends a JSONL or CSV file of InteractionEvent v1 through the SDK producer: every line is
validated first, invalid lines are reported with their line numbers and counted (never sent), and
the command exits non-zero unless every line was valid and acknowledged.
"""

from __future__ import annotations

import contextlib
import csv
import io
import time
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import msgspec
import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from lambdarec.settings import get_settings
from schemas import events as ev

app = typer.Typer(no_args_is_help=True, help="Interaction events: produce files, export the contract.")
console = Console()
err_console = Console(stderr=True)


class FileFormat(StrEnum):
    AUTO = "auto"
    JSONL = "jsonl"
    CSV = "csv"


def _csv_rows(f: io.BufferedReader) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row) with empty cells dropped and ``context`` parsed as JSON."""
    text = io.TextIOWrapper(f, encoding="utf-8", newline="")
    reader = csv.DictReader(text)
    try:
        for row in reader:
            data: dict[str, Any] = {k: v for k, v in row.items() if k and v not in (None, "")}
            if "context" in data:
                # Not JSON: left as a string, and validation reports "context: expected object".
                with contextlib.suppress(msgspec.DecodeError):
                    data["context"] = msgspec.json.decode(data["context"])
            yield reader.line_num, data
    finally:
        text.detach()  # the caller owns (and closes) the binary file


def _detect(path: Path, fmt: FileFormat) -> FileFormat:
    if fmt is not FileFormat.AUTO:
        return fmt
    return FileFormat.CSV if path.suffix.lower() == ".csv" else FileFormat.JSONL


@app.command()
def produce(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="JSONL (one event per line) or CSV")
    ],
    fmt: Annotated[
        FileFormat, typer.Option("--format", help="default: from the file suffix")
    ] = FileFormat.AUTO,
    topic: Annotated[
        str | None, typer.Option(help="physical topic (default: the interactions topic)")
    ] = None,
    show_errors: Annotated[int, typer.Option(help="print at most this many invalid lines")] = 20,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Validate and produce every event of FILE to Kafka (key = user_id), then print a summary."""
    from streams.producer import DeliveryError, EventProducer

    settings = get_settings()
    fmt = _detect(file, fmt)
    total_bytes = file.stat().st_size
    invalid: list[tuple[int, str]] = []
    n_invalid = 0
    lines = 0
    delivery_error: DeliveryError | None = None
    t0 = time.perf_counter()
    producer = EventProducer(settings, topic=topic)
    bar = Progress(
        TextColumn("[bold]producing[/] {task.fields[sent]:,} sent, {task.fields[bad]:,} invalid"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=err_console,
        disable=not progress,
    )

    def reject(line_no: int, exc: ev.EventValidationError) -> None:
        nonlocal n_invalid
        n_invalid += 1
        if len(invalid) < show_errors:
            invalid.append((line_no, str(exc)))

    with bar, file.open("rb") as f:
        task = bar.add_task("produce", total=total_bytes, sent=0, bad=0)
        if fmt is FileFormat.CSV:
            for line_no, row in _csv_rows(f):
                lines += 1
                try:
                    producer.send(ev.from_mapping(row, strict=False))
                except ev.EventValidationError as exc:
                    reject(line_no, exc)
                if lines % 5000 == 0:
                    bar.update(task, completed=f.tell(), sent=producer.sent, bad=n_invalid)
        else:
            for line_no, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                lines += 1
                try:
                    producer.send_json(line)
                except ev.EventValidationError as exc:
                    reject(line_no, exc)
                if lines % 5000 == 0:
                    bar.update(task, completed=f.tell(), sent=producer.sent, bad=n_invalid)
        bar.update(task, completed=total_bytes, sent=producer.sent, bad=n_invalid)
        try:
            producer.close()
        except DeliveryError as exc:
            delivery_error = exc
    elapsed = time.perf_counter() - t0

    for line_no, msg in invalid:
        err_console.print(f"[yellow]line {line_no}[/]: {msg}")
    if n_invalid > len(invalid):
        err_console.print(f"... and {n_invalid - len(invalid)} more invalid line(s)")
    table = Table(title=f"{file.name} -> {producer.topic}")
    table.add_column("")
    table.add_column("count", justify="right")
    table.add_row("events read", f"{lines:,}")
    table.add_row("invalid (not sent)", f"{n_invalid:,}")
    table.add_row("sent", f"{producer.sent:,}")
    table.add_row("acknowledged", f"{producer.delivered:,}")
    table.add_row("failed", f"{producer.failed + (delivery_error.undelivered if delivery_error else 0):,}")
    table.add_row("seconds", f"{elapsed:.2f}")
    table.add_row("events/s", f"{producer.delivered / elapsed:,.0f}" if elapsed else "-")
    console.print(table)
    if delivery_error is not None:
        err_console.print(f"[red]delivery failed[/]: {delivery_error}")
        raise typer.Exit(2)
    if n_invalid:
        raise typer.Exit(1)


@app.command()
def schema(
    check: Annotated[bool, typer.Option(help="only verify the committed file is up to date")] = False,
    path: Annotated[Path, typer.Option(help="where the JSON Schema lives")] = ev.JSON_SCHEMA_PATH,
) -> None:
    """Regenerate (or --check) the JSON Schema of InteractionEvent v1 from schemas/events.py."""
    if check:
        current = path.read_text() if path.exists() else ""
        if current != ev.json_schema_text():
            err_console.print(f"[red]{path} is out of date[/]: run `lambdarec events schema`")
            raise typer.Exit(1)
        console.print(f"{path} is up to date")
        return
    console.print(f"wrote {ev.write_json_schema(path)}")
