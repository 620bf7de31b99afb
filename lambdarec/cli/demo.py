"""``lambdarec demo``: the main job, end to end, from a fresh machine.

Today: services up (installing them on first use), migrations, and a smoke round trip through
every service. Each later layer (events, speed, lake, batch, serving) adds its step here.
"""

from __future__ import annotations

import time

import typer
from rich.console import Console
from rich.table import Table

from infra import services
from infra.smoke import run_smoke
from lambdarec.settings import get_settings

console = Console()


def demo() -> None:
    """Set everything up and run the pipeline end to end, with a report."""
    settings = get_settings()
    t0 = time.monotonic()
    console.rule("[bold]1. services")
    services.up(settings, console=console)
    console.rule("[bold]2. schema")
    from schemas.migrate import migrate

    applied = migrate(settings)
    console.print(f"migrations applied now: {len(applied)}")
    console.rule("[bold]3. smoke run through every service")
    results = run_smoke(settings)
    t = Table()
    for col in ("service", "result", "detail", "s"):
        t.add_column(col)
    for r in results:
        t.add_row(r.service, "[green]ok[/]" if r.ok else "[red]FAILED[/]", r.detail, f"{r.seconds:.1f}")
    console.print(t)
    console.print(services.status_table(services.status(settings)))
    console.print(f"demo finished in {time.monotonic() - t0:.0f}s")
    if not all(r.ok for r in results):
        raise typer.Exit(1)
