"""Dependencies the routes declare: settings, the ingest publisher, the serving services, API keys.

Everything lives on ``app.state``, created once per process by :func:`lifespan` (or injected by
:func:`serving.app.create_app` for tests), so a request never builds a client. Startup never
waits for a backing service: the Postgres pool opens in the background, Redis connects lazily,
the model loads in a task; until they are there, requests degrade (see serving/recommend.py)
and ``/readyz`` says which dependency is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.security import APIKeyHeader
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from lambdarec.settings import Settings
from serving import settle_gc
from serving.cache import RecCache
from serving.catalog import Catalog
from serving.experiments.running import RunningExperiments
from serving.models import ModelStore
from serving.publisher import AsyncEventPublisher
from serving.recommend import Services
from serving.security import ApiKey, KeyStore
from serving.serve_log import ServeLog

log = logging.getLogger(__name__)


# async on purpose: FastAPI runs a plain ``def`` dependency in its thread pool, a thread hop
# (and GIL hand-off) per dependency per request that cost more than a cached answer itself
async def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_publisher(request: Request) -> AsyncEventPublisher:
    return request.app.state.publisher


async def get_services(request: Request) -> Services:
    return request.app.state.services


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
PublisherDep = Annotated[AsyncEventPublisher, Depends(get_publisher)]
ServicesDep = Annotated[Services, Depends(get_services)]

api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="lrk_... key (lambdarec apikey create)"
)


async def require_write_key(
    request: Request, response: Response, key: Annotated[str | None, Depends(api_key_header)]
) -> ApiKey | None:
    """401 without a valid key, 429 past the key's per-minute limit (write endpoints)."""
    settings: Settings = request.app.state.settings
    if not settings.serving.require_api_keys:
        return None
    if not key:
        raise HTTPException(401, "missing X-API-Key header", headers={"WWW-Authenticate": "ApiKey"})
    store: KeyStore = request.app.state.keystore
    try:
        found = await store.verify(key)
    except Exception as exc:
        raise HTTPException(503, f"cannot verify API keys right now: {type(exc).__name__}") from None
    if found is None:
        raise HTTPException(401, "invalid or revoked API key", headers={"WWW-Authenticate": "ApiKey"})
    if "write" not in found.scopes and "admin" not in found.scopes:
        raise HTTPException(403, f"API key {found.name!r} lacks the write scope")
    limit = found.rate_limit_per_minute or settings.serving.rate_limit_per_minute
    ok, reset = await store.allow(f"k{found.key_id}", limit)
    if not ok:
        raise HTTPException(
            429, f"rate limit of {limit} requests/minute exceeded", headers={"Retry-After": str(reset)}
        )
    return found


async def read_rate_limit(request: Request) -> None:
    """Per-client-IP limit on the (anonymous) read endpoints."""
    check_read_rate(request.app.state, request.client.host if request.client else "unknown")


def check_read_rate(state: Any, ip: str) -> None:
    """:func:`read_rate_limit` given the app's state and the client address (the recommendation
    fast path, serving/fast_path.py, has no ``Request``); 429 past the limit."""
    settings: Settings = state.settings
    store: KeyStore | None = getattr(state, "keystore", None)
    if store is None:
        return
    limit = settings.serving.anonymous_rate_limit_per_minute
    ok, reset = store.allow_batched(f"ip{ip}", limit)  # no Redis round trip per read
    if not ok:
        raise HTTPException(
            429, f"rate limit of {limit} requests/minute exceeded", headers={"Retry-After": str(reset)}
        )


WriteKeyDep = Annotated[ApiKey | None, Depends(require_write_key)]


async def _configure(conn: AsyncConnection) -> None:
    """Per connection: pgvector types, HNSW search breadth with iterative scans (filtered ANN
    still returns k rows), and a server-side statement timeout as the last guard."""
    from pgvector.psycopg import register_vector_async

    settings_ef = _configure.ef_search  # type: ignore[attr-defined]
    await register_vector_async(conn)
    await conn.execute(f"SET hnsw.ef_search = {int(settings_ef)}")
    with contextlib.suppress(Exception):
        await conn.execute("SET hnsw.iterative_scan = relaxed_order")
    await conn.execute("SET statement_timeout = '2s'")
    # prepared statements + generic plans: planning over rt_user_interactions' partitions costs
    # more than executing the lookups; a generic plan prunes at run time instead
    await conn.execute("SET plan_cache_mode = force_generic_plan")
    await conn.commit()


def build_services(settings: Settings) -> Services:
    """The serving resources of one process (nothing connects yet)."""
    # an ef_search below the LIMIT of the taste-vector ANN makes the iterative scan run a second
    # pass for every list: searching n wide at once costs less Postgres CPU, at no loss of recall
    _configure.ef_search = max(  # type: ignore[attr-defined]
        settings.serving.hnsw_ef_search, settings.serving.candidates_per_source
    )
    pool = AsyncConnectionPool(
        settings.postgres.url,
        min_size=settings.postgres.pool_min,
        max_size=settings.postgres.pool_max,
        open=False,
        configure=_configure,
        kwargs={"autocommit": True, "prepare_threshold": 1},
        timeout=2,
        reconnect_timeout=3600,
    )
    cache = RecCache(settings)
    svc = Services(settings=settings, pool=pool, cache=cache, models=ModelStore(settings))
    svc.catalog = Catalog(
        settings.serving.catalog_refresh_sec,
        settings.serving.catalog_full_refresh_sec,
        dim=settings.embedding.dim,
    )
    svc.serve_log = ServeLog(settings, pool)
    svc.experiments = RunningExperiments(pool)
    svc.variant_config = svc.experiments.config
    return svc


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start the shared publisher and the serving services; on shutdown close what we own.

    Injected objects (``create_app(publisher=..., services=...)``) are started but not closed:
    whoever created them owns them.
    """
    settings: Settings = app.state.settings
    publisher: AsyncEventPublisher | None = getattr(app.state, "publisher", None)
    owned = publisher is None
    if publisher is None:
        publisher = AsyncEventPublisher(settings)
        app.state.publisher = publisher
    publisher.start()

    svc: Services | None = getattr(app.state, "services", None)
    owned_svc = svc is None
    if svc is None:
        svc = build_services(settings)
        app.state.services = svc
    tasks: list[asyncio.Task[Any]] = []
    if owned_svc:
        await svc.pool.open(wait=False)
        tasks.append(asyncio.create_task(svc.models.load_from_registry(svc.pool)))
        svc.models.start_watching()
        svc.catalog.start(svc.pool)
        if svc.serve_log is not None:
            svc.serve_log.start()
        if svc.experiments is not None:
            svc.experiments.start()
    app.state.keystore = KeyStore(svc.pool, svc.cache, settings.serving.rate_limit_per_minute)
    settle_gc()  # start-up heap out of the collector's sight (p99: serving/__init__.py)
    try:
        yield
    finally:
        await app.state.keystore.close()
        for t in tasks:
            t.cancel()
        if owned_svc:
            await svc.models.stop()
            await svc.catalog.stop()
            if svc.experiments is not None:
                await svc.experiments.stop()
            if svc.serve_log is not None:
                await svc.serve_log.close()
            await svc.cache.close()
            await svc.pool.close()
        if owned:
            publisher.close()
