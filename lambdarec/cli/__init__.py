"""The ``lambdarec`` command: one typer app with a sub-app (or command) per area."""

from __future__ import annotations

import sys

import typer
from pydantic import ValidationError
from rich.console import Console

from infra.errors import InfraError
from lambdarec.cli import (
    backfill,
    batch,
    catalog,
    db,
    demo,
    dlq,
    evaluate,
    events,
    experiments,
    infra,
    lake,
    serve,
    stream,
    users,
    world,
)

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    help="lambdarec: real-time recommendations.",
)
app.command()(demo.demo)
app.add_typer(infra.app, name="infra")
app.add_typer(db.app, name="db")
app.add_typer(events.app, name="events")
app.add_typer(dlq.app, name="dlq")
app.add_typer(catalog.app, name="catalog")
app.add_typer(world.app, name="world")
app.command("backfill")(backfill.backfill)
app.add_typer(stream.app, name="stream")
app.add_typer(lake.app, name="lake")
app.add_typer(users.app, name="users")
app.add_typer(batch.app, name="batch")
app.command("scheduler")(batch.scheduler)
app.command("evaluate")(evaluate.evaluate)
app.command("serve")(serve.serve)
app.add_typer(serve.apikey_app, name="apikey")
app.add_typer(experiments.app, name="experiments")


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
