"""``GET /v1/users/{user_id}/recommendations``: a personalised, explained list (cached)."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response

from serving.candidates import ItemFilters
from serving.deps import ServicesDep, read_rate_limit
from serving.recommend import NothingToServe, RecRequest, Services, recommend
from serving.routes.common import ID_PATTERN, MAX_ID, check_years, resolve_genre
from serving.routes.schemas_api import REC_EXAMPLE, RecommendationList, error, json_response

router = APIRouter(tags=["recommendations"], dependencies=[Depends(read_rate_limit)])

RESPONSES = {
    200: json_response(RecommendationList, REC_EXAMPLE, "The list (fresh rec_id on every call)."),
    422: error("Invalid parameter.", "year_from (2020) is after year_to (1990)"),
    429: error("Rate limited.", "rate limit of 6000 requests/minute exceeded"),
    503: error("Nothing can be served.", "no recommendation source is available"),
}


#: the query parameters' bounds, shared with the fast path (serving/fast_path.py), which must
#: accept nothing that this route's validation would reject
K_MAX = 100
YEAR_MIN, YEAR_MAX = 1800, 2200
GENRE_MAX = 100
VARIANT_MAX = 64
VARIANT_PATTERN = r"^[A-Za-z0-9_.-]+$"
PATH = "/v1/users/{user_id}/recommendations"


@router.get(
    PATH,
    summary="Recommendations for a user",
    response_model=None,
    responses=RESPONSES,  # type: ignore[arg-type]
)
async def get_recommendations(
    svc: ServicesDep,
    user_id: Annotated[str, Path(min_length=1, max_length=MAX_ID, pattern=ID_PATTERN, examples=["u42"])],
    k: Annotated[int, Query(ge=1, le=K_MAX, description="list length")] = 10,
    genre: Annotated[str | None, Query(min_length=1, max_length=GENRE_MAX, examples=["drama"])] = None,
    year_from: Annotated[int | None, Query(ge=YEAR_MIN, le=YEAR_MAX)] = None,
    year_to: Annotated[int | None, Query(ge=YEAR_MIN, le=YEAR_MAX)] = None,
    exclude_seen: Annotated[bool, Query(description="drop items the user interacted with")] = True,
    variant: Annotated[
        str | None,
        Query(
            min_length=1, max_length=VARIANT_MAX, pattern=VARIANT_PATTERN, description="experiment variant"
        ),
    ] = None,
) -> Response:
    """Blend of the speed layer (ALS fold-in and taste-vector ANN), the batch view and popularity,
    re-ranked by MMR (the user's diversity_preference) with a novelty boost; users without data
    usage consent get a non-personalised list. ``degraded: true`` marks a fallback answer."""
    body = await answer(svc, user_id, k, genre, year_from, year_to, exclude_seen, variant)
    return Response(body, media_type="application/json")


async def answer(
    svc: Services,
    user_id: str,
    k: int = 10,
    genre: str | None = None,
    year_from: int | None = None,
    year_to: int | None = None,
    exclude_seen: bool = True,
    variant: str | None = None,
) -> bytes:
    """The JSON body of a list for validated parameters (HTTPException for a 4xx/503): the one
    implementation behind this route and the fast path."""
    check_years(year_from, year_to)
    if k > svc.settings.serving.max_k:
        raise HTTPException(422, f"k={k} exceeds serving.max_k={svc.settings.serving.max_k}")
    slug = await resolve_genre(svc, genre)
    config = svc.variant_config(variant) if (variant and svc.variant_config) else None
    experiment_id = None
    if variant is None and svc.experiments is not None:  # the running A/B test assigns (in memory)
        assigned = svc.experiments.assign(user_id)
        if assigned is not None:
            experiment_id, variant, config = assigned.experiment_id, assigned.variant, assigned.config
    req = RecRequest(
        user_id, k, ItemFilters(slug, year_from, year_to), exclude_seen, variant, config, experiment_id
    )
    try:
        served = await recommend(svc, req)
    except NothingToServe as exc:
        raise HTTPException(503, f"no recommendation source is available: {exc}") from None
    return orjson.dumps(served)
