"""``GET /v1/items/{item_id}/similar``: item-to-item by embedding ANN or by ALS factors."""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
import orjson
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response

from serving import candidates as cands
from serving.deps import ServicesDep, read_rate_limit
from serving.ranking import top_by_dot
from serving.recommend import _boxed, _connection
from serving.routes.common import ID_PATTERN, MAX_ID
from serving.routes.schemas_api import SimilarItems, error, json_response

router = APIRouter(tags=["items"], dependencies=[Depends(read_rate_limit)])

EXAMPLE = {
    "item_id": "movie-318",
    "method": "embedding",
    "model_version": None,
    "items": [{"item_id": "movie-527", "title": "Schindler's List", "score": 0.83}],
}


@router.get(
    "/v1/items/{item_id}/similar",
    summary="Items similar to an item",
    response_model=None,
    responses={
        200: json_response(SimilarItems, EXAMPLE, "Most similar first."),
        404: error("Unknown item (or not in the production model for method=als).", "no item 'x'"),
        422: error("Invalid parameter.", "k must be <= 100"),
        503: error("Postgres unavailable.", "item store unavailable"),
    },
)
async def similar(
    svc: ServicesDep,
    item_id: Annotated[
        str, Path(min_length=1, max_length=MAX_ID, pattern=ID_PATTERN, examples=["movie-318"])
    ],
    k: Annotated[int, Query(ge=1, le=100)] = 10,
    method: Annotated[
        Literal["embedding", "als"], Query(description="embedding ANN or ALS factors")
    ] = "embedding",
) -> Response:
    """``embedding``: cosine neighbours over ``items.embedding`` (pgvector HNSW). ``als``: items
    whose production ALS factors have the highest dot product with this item's."""
    timeout = svc.settings.serving.request_budget_ms / 1000
    version = None
    try:
        async with _connection(svc.pool, timeout) as conn:
            if method == "als":
                f = svc.models.current
                if f is None:
                    raise HTTPException(404, "no production ALS model is loaded")
                v = f.vector(item_id)
                if v is None:
                    raise HTTPException(404, f"item {item_id!r} is not in ALS model {f.version}")
                # cosine = dot with the unit rows (normalised once per model, not per request)
                unit = v / max(float(np.linalg.norm(v)), 1e-9)
                scored = top_by_dot(unit, f.item_ids, f.unit_factors, k, {item_id})
                pairs = [(c.item_id, c.score) for c in scored]
                version = f.version
            else:
                exists, pairs = await _boxed(cands.similar_items(conn, item_id, k), timeout * 1000)
                if not exists:
                    raise HTTPException(404, f"no item {item_id!r}")
            ids = [p[0] for p in pairs]  # titles from the in-memory catalog (a query only for items it lacks)
            look = await _boxed(svc.catalog.lookup(conn, ids), timeout * 1000)
            meta = {i: m for i in ids if (m := look.meta(i)) is not None}
    except HTTPException:
        raise
    except Exception as exc:
        raise HTTPException(503, f"item store unavailable: {type(exc).__name__}") from None
    body = {
        "item_id": item_id,
        "method": method,
        "model_version": version,
        "items": [
            {"item_id": i, "title": meta[i].title if i in meta else None, "score": round(s, 6)}
            for i, s in pairs
        ],
    }
    return Response(orjson.dumps(body), media_type="application/json")
