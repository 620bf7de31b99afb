"""``lambdarec serve`` (the API under uvicorn) and ``lambdarec apikey create|revoke``."""

from __future__ import annotations

from typing import Annotated

import typer

from lambdarec.settings import get_settings

apikey_app = typer.Typer(no_args_is_help=True, help="API keys for the write endpoints (stored hashed).")


def serve(
    host: Annotated[str | None, typer.Option(help="bind address (default: api.host)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default: api.port)")] = None,
    workers: Annotated[int | None, typer.Option(help="worker processes (default: api.workers)")] = None,
    loglevel: Annotated[str, typer.Option(help="debug, info, warning, error")] = "warning",
) -> None:
    """Run the recommendation API (``serving.app:create_app``) with uvicorn (uvloop, httptools)."""
    import uvicorn

    api = get_settings().api
    uvicorn.run(
        "serving.app:create_app",
        factory=True,
        host=host or api.host,
        port=port or api.port,
        workers=workers or api.workers,
        log_level=loglevel,
        access_log=False,
        loop="uvloop",  # explicit: "auto" silently falls back to asyncio/h11 (2-3x the cost)
        http="httptools",
        backlog=2048,
    )


@apikey_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="who the key is for, e.g. web-frontend")],
    scope: Annotated[list[str] | None, typer.Option(help="write (default) and/or admin")] = None,
    rate_limit: Annotated[int | None, typer.Option(help="requests/minute (default: serving's)")] = None,
) -> None:
    """Create a key and print it once (only its sha256 is stored)."""
    from schemas.migrate import connect
    from serving.security import create_key_sync

    with connect(get_settings()) as conn:
        key = create_key_sync(conn, name, scope or ["write"], rate_limit)
        conn.commit()
    typer.echo(key)


@apikey_app.command("revoke")
def revoke(prefix: Annotated[str, typer.Argument(help="the first 12 characters of the key")]) -> None:
    """Refuse a key from now on (cached verifications expire within a minute)."""
    from schemas.migrate import connect

    with connect(get_settings()) as conn:
        n = conn.execute(
            "UPDATE api_keys SET revoked_at = now() WHERE prefix = %s AND revoked_at IS NULL", (prefix[:12],)
        ).rowcount
        conn.commit()
    typer.echo(f"revoked {n} key(s)")
