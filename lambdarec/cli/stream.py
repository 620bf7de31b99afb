"""``lambdarec stream worker``: run one worker of the speed layer (``streams/app.py``).

Start as many as you like with the same settings: they share the interactions partitions
through the consumer group ``stream.app_id``. On one host give each its own ``--web-port``
(its table directory is derived from the port).
"""

from __future__ import annotations

from typing import Annotated

import typer

from lambdarec.settings import get_settings

app = typer.Typer(no_args_is_help=True, help="The speed layer (faust): stream workers.")


@app.command()
def worker(
    web_port: Annotated[int | None, typer.Option(help="web/metrics port (default: stream.web_port)")] = None,
    loglevel: Annotated[str, typer.Option(help="debug, info, warning, error")] = "info",
) -> None:
    """Consume interactions and keep profiles, vectors and the hot table current (until SIGTERM)."""
    from streams.app import run_worker

    settings = get_settings()
    if web_port is not None:
        settings = settings.model_copy(
            update={"stream": settings.stream.model_copy(update={"web_port": web_port})}
        )
    run_worker(settings, loglevel=loglevel)
