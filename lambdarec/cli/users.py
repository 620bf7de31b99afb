"""``lambdarec users export USER`` and ``lambdarec users erase USER``: GDPR requests.

The logic lives in ``batch/lake/gdpr.py`` (Postgres, Redis and the lake); this is the shell.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from lambdarec.settings import get_settings

app = typer.Typer(no_args_is_help=True, help="GDPR: export or erase everything stored about a user.")
console = Console()
err_console = Console(stderr=True)


@app.command()
def export(
    user: Annotated[str, typer.Argument(help="the user_id")],
    out: Annotated[Path | None, typer.Option(help="JSON file (default: ./gdpr-export-<user>.json)")] = None,
) -> None:
    """Write everything stored about USER (Postgres, Redis, lake) to one JSON file."""
    from batch.lake.gdpr import write_export

    path = out or Path(f"gdpr-export-{''.join(c if c.isalnum() or c in '-_.' else '_' for c in user)}.json")
    data = write_export(get_settings(), user, path)
    pg = sum(len(v) for v in data["postgres"].values() if isinstance(v, list))
    lake = sum(len(v) for v in data["lake"].values())
    console.print(
        f"wrote {path}: {pg} Postgres row(s), {len(data['redis'])} Redis key(s), {lake} lake row(s)"
    )
    for store, err in data["errors"].items():
        err_console.print(f"[red]{store} not exported[/]: {err}")
    if data["errors"]:
        raise typer.Exit(1)


@app.command()
def erase(
    user: Annotated[str, typer.Argument(help="the user_id")],
    yes: Annotated[bool, typer.Option("--yes", help="do not ask for confirmation")] = False,
    vacuum: Annotated[bool, typer.Option(help="VACUUM the lake tables right after the delete")] = True,
    retention_hours: Annotated[
        int | None, typer.Option(help="VACUUM retention (default: settings.lake.vacuum_retention_hours)")
    ] = None,
    force: Annotated[
        bool, typer.Option(help="allow a retention below the tables' own (breaks time travel)")
    ] = False,
) -> None:
    """Remove USER from Postgres, Redis and the lake (Delta DELETE, then VACUUM)."""
    from batch.lake.gdpr import erase_user

    if not yes:
        typer.confirm(f"Erase every trace of user {user!r}? This cannot be undone", abort=True)
    rep = erase_user(
        get_settings(), user, vacuum=vacuum, retention_hours=retention_hours, enforce_retention=not force
    )
    console.print(f"postgres: {sum(rep.postgres.values())} row(s) deleted {rep.postgres}")
    console.print(f"redis: {rep.redis_keys} key(s) deleted")
    console.print(
        f"lake: {sum(rep.lake.values())} row(s) deleted {rep.lake}; {rep.vacuumed_files} file(s) vacuumed"
    )
    if rep.files_gone_by:
        console.print(
            "old lake files holding the rows are removed by the first VACUUM after "
            f"{rep.files_gone_by:%Y-%m-%d %H:%M} UTC (the archiver's scheduled maintenance runs it); "
            "Kafka copies expire with the topic retention"
        )
    for store, err in rep.errors.items():
        err_console.print(f"[red]{store} not erased[/]: {err}")
    if rep.errors:
        raise typer.Exit(1)
