"""The FastAPI application factory. Run with ``uvicorn serving.app:create_app --factory``.

Routers are added here one line each; shared resources come from :mod:`serving.deps`.
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI
from fastapi.openapi.utils import get_openapi

from lambdarec.settings import Settings, get_settings
from schemas import events as ev
from serving import limit_blas_threads
from serving.deps import lifespan, require_write_key
from serving.fast_path import RecommendationFastPath
from serving.publisher import AsyncEventPublisher
from serving.recommend import Services
from serving.routes import dashboard, experiments, health, items, popular, recommendations, users
from serving.routes import events as events_routes


def create_app(
    settings: Settings | None = None,
    *,
    publisher: AsyncEventPublisher | None = None,
    services: Services | None = None,
) -> FastAPI:
    """Build the API. ``publisher`` and ``services`` inject the ingest publisher and the serving
    resources (tests); by default the lifespan creates them from the settings. The event limits
    of ``settings`` become the process-wide limits of :mod:`schemas.events` (one API process
    serves one configuration)."""
    settings = settings or get_settings()
    limit_blas_threads()
    ev.configure(settings.events)
    app = FastAPI(
        title="lambdarec",
        version="0.1.0",
        summary="Real-time recommendations: event ingest and recommendation serving.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    if publisher is not None:
        app.state.publisher = publisher
    if services is not None:
        app.state.services = services
    app.add_middleware(RecommendationFastPath)  # inner: the timing middleware measures it too
    app.add_middleware(health.TimingMiddleware)
    app.include_router(events_routes.router, dependencies=[Depends(require_write_key)])
    app.include_router(recommendations.router)
    app.include_router(items.router)
    app.include_router(popular.router)
    app.include_router(users.router)
    app.include_router(health.router)
    app.include_router(experiments.router)
    app.include_router(dashboard.router)
    _document_event_schema(app, settings)
    return app


def _document_event_schema(app: FastAPI, settings: Settings) -> None:
    """Put InteractionEvent (from the msgspec contract, not a duplicate pydantic model) into the
    OpenAPI components and describe the hand-parsed request body of ``POST /v1/events``."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
        event, defs = ev.schema_components(settings.events, ref_template="#/components/schemas/{name}")
        components = doc.setdefault("components", {}).setdefault("schemas", {})
        components.update(defs)
        components["InteractionEvent"] = event
        post = doc["paths"]["/v1/events"]["post"]
        post.update(events_routes.request_body_openapi(settings))
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
