"""``/v1/experiments``: A/B tests through their lifecycle (admin API key).

draft --start--> running --stop--> analyzing --conclude--> concluded (``resume``: analyzing ->
running; ``conclude`` also works from draft or running). Stopping ends exposure at once (within
the API processes' refresh interval); concluding runs the analysis one last time and stores it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, Depends, HTTPException, Path, Query
from psycopg import AsyncConnection

from serving.deps import ServicesDep, WriteKeyDep
from serving.experiments import analysis, store
from serving.experiments.assignment import Variant, assign
from serving.experiments.specs import ExperimentSpec
from serving.recommend import Services
from serving.routes.common import ID_PATTERN, MAX_ID
from serving.routes.schemas_api import error
from serving.security import ApiKey


async def require_admin_key(key: WriteKeyDep) -> ApiKey | None:
    """The write-key checks (401/429) plus the admin scope (403): experiments change what every
    user is served."""
    if key is not None and "admin" not in key.scopes:
        raise HTTPException(
            403, f"API key {key.name!r} lacks the admin scope (lambdarec apikey create --scope admin)"
        )
    return key


router = APIRouter(prefix="/v1/experiments", tags=["experiments"], dependencies=[Depends(require_admin_key)])

ExpId = Annotated[int, Path(ge=1, description="experiment_id")]
ERRORS: dict[int | str, dict[str, Any]] = {
    401: error("Missing/invalid API key.", "missing X-API-Key header"),
    403: error("Key without the admin scope.", "API key 'web' lacks the admin scope"),
    404: error("No such experiment.", "no experiment with id 7"),
    409: error("Illegal in the current state.", "illegal experiment status transition concluded -> running"),
    503: error("Postgres unavailable.", "experiment store unavailable"),
}


@asynccontextmanager
async def _conn(svc: Services, statement_timeout: str | None = None) -> AsyncIterator[AsyncConnection[Any]]:
    """A pooled connection with ExperimentError -> HTTP status; a longer statement timeout inside
    a transaction when asked (the analysis reads every exposure of the experiment)."""
    try:
        async with svc.pool.connection(timeout=2) as conn:
            if statement_timeout is None:
                yield conn
            else:
                async with conn.transaction():
                    await conn.execute(f"SET LOCAL statement_timeout = '{statement_timeout}'")
                    yield conn
    except store.ExperimentError as exc:
        raise HTTPException(exc.status, exc.message) from None
    except (psycopg.Error, OSError, TimeoutError) as exc:
        raise HTTPException(503, f"experiment store unavailable: {type(exc).__name__}") from None


@router.post("", status_code=201, summary="Create a draft experiment", responses=ERRORS)
async def create_experiment(svc: ServicesDep, spec: ExperimentSpec) -> dict[str, Any]:
    """Variants are algorithm configurations (``blend_weights``, ``diversity``, ``novelty``,
    ``model_version``) with traffic shares summing to 100."""
    async with _conn(svc) as conn:
        exp_id = await store.create(conn, spec)
        return await store.get(conn, exp_id)


@router.get("", summary="List experiments", responses=ERRORS)
async def list_experiments(
    svc: ServicesDep,
    status: Annotated[Literal["draft", "running", "analyzing", "concluded"] | None, Query()] = None,
) -> list[dict[str, Any]]:
    async with _conn(svc) as conn:
        return await store.list_all(conn, status)


@router.get("/{experiment_id}", summary="One experiment with variants and results", responses=ERRORS)
async def get_experiment(svc: ServicesDep, experiment_id: ExpId) -> dict[str, Any]:
    async with _conn(svc) as conn:
        return await store.get(conn, experiment_id)


@router.post("/{experiment_id}/analyze", summary="Analyse now and store the results", responses=ERRORS)
async def analyze_experiment(svc: ServicesDep, experiment_id: ExpId) -> dict[str, Any]:
    """CTR, conversion and engagement per variant, tests against the control, the decision."""
    async with _conn(svc, "60s") as conn:
        return await analysis.analyze_experiment(conn, experiment_id)


@router.post("/{experiment_id}/{action}", summary="start | stop | resume | conclude", responses=ERRORS)
async def act(
    svc: ServicesDep, experiment_id: ExpId, action: Literal["start", "stop", "resume", "conclude"]
) -> dict[str, Any]:
    """``conclude`` of an experiment that ran stores a final analysis first."""
    async with _conn(svc, "60s") as conn:
        current = await store.get(conn, experiment_id)
        if action == "conclude" and current["status"] in ("running", "analyzing"):
            await analysis.analyze_experiment(conn, experiment_id)
        exp = await store.transition(conn, experiment_id, action)
    if svc.experiments is not None:  # this process sees the change at once, others within seconds
        with contextlib.suppress(psycopg.Error, OSError, TimeoutError):  # else: the periodic refresh
            await svc.experiments.refresh()
    return exp


@router.get(
    "/{experiment_id}/assignment/{user_id}",
    summary="The variant a user gets (QA)",
    responses=ERRORS,
)
async def assignment(
    svc: ServicesDep,
    experiment_id: ExpId,
    user_id: Annotated[str, Path(min_length=1, max_length=MAX_ID, pattern=ID_PATTERN)],
) -> dict[str, Any]:
    async with _conn(svc) as conn:
        exp = await store.get(conn, experiment_id)
    variants = [
        Variant(v["name"], v["traffic_percent"], v["config"], v["is_control"]) for v in exp["variants"]
    ]
    v = assign(user_id, experiment_id, variants, str(exp["config"].get("salt", "")))
    return {"experiment_id": experiment_id, "user_id": user_id, "variant": v.name if v else None,
            "status": exp["status"]}  # fmt: skip
