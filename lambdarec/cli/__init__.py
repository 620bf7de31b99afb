"""The ``lambdarec`` command: one typer app with a sub-app per area (infra, db, ...)."""

from __future__ import annotations

import sys

import typer
from pydantic import ValidationError
from rich.console import Console

from infra.errors import InfraError
from lambdarec.cli import db as db_cli
from lambdarec.cli.demo import demo
from lambdarec.cli import infra as infra_cli

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    help="lambdarec: real-time recommendations.",
)
app.command()(demo)
app.add_typer(infra_cli.app, name="infra")
app.add_typer(db_cli.app, name="db")
# Sub-apps of later areas register here, one line each.


def main() -> None:
    """Entry point: turn known configuration/infra errors into one readable line and exit 2."""
    err = Console(stderr=True)
    try:
        app()
    except ValidationError as exc:
        err.print(f"[red]invalid settings[/]: {exc}")
        sys.exit(2)
    except InfraError as exc:
        err.print(f"[red]error[/]: {exc}")
        sys.exit(2)
