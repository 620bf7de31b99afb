"""``GET /v1/popular``: what is popular (optionally in one genre) over the last days."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, HTTPException, Query, Response

from schemas.cache_keys import filter_digest
from serving import candidates as cands
from serving.deps import ServicesDep, read_rate_limit
from serving.explain import explain
from serving.recommend import _boxed, _connection
from serving.routes.common import resolve_genre
from serving.routes.schemas_api import PopularItems, error, json_response

router = APIRouter(tags=["popular"], dependencies=[Depends(read_rate_limit)])

EXAMPLE = {
    "genre": "drama",
    "window": 7,
    "items": [
        {
            "item_id": "movie-318",
            "title": "The Shawshank Redemption",
            "score": 812.0,
            "explanation": "popular in Drama",
        }
    ],
    "degraded": False,
}


@router.get(
    "/v1/popular",
    summary="Popular items",
    response_model=None,
    responses={
        200: json_response(PopularItems, EXAMPLE, "Most popular first."),
        422: error("Invalid parameter.", "unknown genre 'x'"),
        503: error("Nothing can be served.", "popularity unavailable"),
    },
)
async def popular(
    svc: ServicesDep,
    genre: Annotated[str | None, Query(min_length=1, max_length=100, examples=["drama"])] = None,
    window: Annotated[int, Query(ge=1, le=365, description="days of popularity_metrics")] = 7,
    k: Annotated[int, Query(ge=1, le=100)] = 20,
) -> Response:
    """Sums ``popularity_metrics`` over ``window`` days (falls back to ``items.popularity_score``
    on a quiet catalog); cached in process for 30 s."""
    slug = await resolve_genre(svc, genre)
    filters = cands.ItemFilters(slug)
    timeout = svc.settings.serving.request_budget_ms / 1000
    degraded = False
    meta: dict[str, cands.ItemMeta] = {}
    try:
        async with _connection(svc.pool, timeout) as conn:  # time boxes that do not wait (recommend.py)
            pop = await _boxed(svc.popular.popular(conn, k, filters, window), timeout * 1000)
            genres = await _boxed(svc.popular.genres(conn), timeout * 1000)
            ids = [
                c.item_id for c in pop
            ]  # titles from the in-memory catalog (a query only for items it lacks)
            look = await _boxed(svc.catalog.lookup(conn, ids), timeout * 1000)
            meta = {i: m for i in ids if (m := look.meta(i)) is not None}
        # remembered for a Postgres outage (a longer list of the same filter, e.g. a list's, stays)
        key = filter_digest(filters.as_dict())
        if len(pop) > len(svc.last_popular.get(key, ())) and len(svc.last_popular) < 2048:
            svc.last_popular[key] = pop
    except Exception:
        stale = svc.last_popular.get(filter_digest(filters.as_dict()))
        if not stale:
            raise HTTPException(503, "popularity unavailable (Postgres down)") from None
        pop, genres, degraded = stale[:k], {}, True
    name = genres.get(slug or "", slug)
    body = {
        "genre": slug,
        "window": window,
        "items": [
            {
                "item_id": c.item_id,
                "title": meta[c.item_id].title if c.item_id in meta else None,
                "score": round(c.score, 6),
                "explanation": explain("popular", genre=name),
            }
            for c in pop
        ],
        "degraded": degraded,
    }
    return Response(orjson.dumps(body), media_type="application/json")
