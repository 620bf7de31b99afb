"""``lambdarec db migrate|status``: the Postgres schema, versioned in schemas/migrations."""

from __future__ import annotations

import typer
from rich.console import Console

from lambdarec.settings import get_settings

app = typer.Typer(no_args_is_help=True, help="Postgres schema migrations.")
console = Console()


@app.command()
def migrate() -> None:
    """Apply every migration not yet recorded in schema_migrations (idempotent)."""
    from schemas.migrate import migrate as run

    applied = run(get_settings())
    console.print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none (up to date)'}")


@app.command()
def status() -> None:
    """List applied and pending migrations."""
    from schemas.migrate import migration_status

    for version, name, applied_at in migration_status(get_settings()):
        console.print(f"{version}  {name:<40} {applied_at or '[yellow]pending[/]'}")
