"""``lambdarec infra up|down|status|logs``: the local services, without Docker."""

from __future__ import annotations

import subprocess
from typing import Annotated

import typer
from rich.console import Console

from infra import services
from lambdarec.settings import get_settings

app = typer.Typer(no_args_is_help=True, help="Start, stop and inspect the real services.")
console = Console()

Names = Annotated[list[str] | None, typer.Argument(help="services (default: all)")]


@app.command()
def up(names: Names = None) -> None:
    """Install once (downloads, builds), start, and bootstrap topics/buckets/databases. Idempotent."""
    timings = services.up(get_settings(), names)
    console.print(f"all up in {sum(timings.values()):.1f}s")


@app.command()
def down(names: Names = None) -> None:
    """Stop the local services (data is kept under var/)."""
    services.down(get_settings(), names)
    console.print("stopped")


@app.command()
def status(names: Names = None) -> None:
    """Health, version, address, pid and memory of each service. Exit 1 if any is down."""
    rows = services.status(get_settings(), names)
    console.print(services.status_table(rows))
    if not all(r.healthy for r in rows):
        raise typer.Exit(1)


@app.command()
def logs(name: str, lines: int = 50, follow: bool = typer.Option(False, "--follow", "-f")) -> None:
    """Show the log of one service."""
    path = services.log_path(get_settings(), name)
    if not path.exists():
        console.print(f"no log yet at {path}")
        raise typer.Exit(1)
    subprocess.run(["tail", f"-n{lines}", *(["-f"] if follow else []), str(path)], check=False)
