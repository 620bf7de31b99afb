"""Dependencies the routes declare: the settings and the shared ingest publisher.

Both live on ``app.state``, created once per process by :func:`lifespan` (or injected by
:func:`serving.app.create_app` for tests), so a request never builds a Kafka client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, Request

from lambdarec.settings import Settings
from serving.publisher import AsyncEventPublisher


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_publisher(request: Request) -> AsyncEventPublisher:
    return request.app.state.publisher


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
PublisherDep = Annotated[AsyncEventPublisher, Depends(get_publisher)]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start the shared publisher with the app; on shutdown flush what is still in flight.

    An injected publisher (``create_app(publisher=...)``) is started (idempotent) but not closed:
    whoever created it owns it.
    """
    publisher: AsyncEventPublisher | None = getattr(app.state, "publisher", None)
    owned = publisher is None
    if publisher is None:
        publisher = AsyncEventPublisher(app.state.settings)
        app.state.publisher = publisher
    publisher.start()
    try:
        yield
    finally:
        if owned:
            publisher.close()
