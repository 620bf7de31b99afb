"""``GET/PUT /v1/users/{user_id}/preferences``: stated preferences and consents.

A PUT bumps the user's cache version (``schemas/cache_keys.py``) so the next list reflects it.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import psycopg
from fastapi import APIRouter, Depends, HTTPException, Path
from psycopg.types.json import Jsonb

from schemas.cache_keys import version_key
from serving.deps import ServicesDep, WriteKeyDep, read_rate_limit
from serving.routes.common import ID_PATTERN, MAX_ID, resolve_genre
from serving.routes.schemas_api import Preferences, PreferencesOut, error

router = APIRouter(tags=["users"])

UserId = Annotated[str, Path(min_length=1, max_length=MAX_ID, pattern=ID_PATTERN, examples=["u42"])]
_COLS = (
    "favorite_genres",
    "diversity_preference",
    "novelty_preference",
    "algorithm_preference",
    "preferred_decade",
    "data_usage_consent",
    "allow_demographic_targeting",
)


@router.get(
    "/v1/users/{user_id}/preferences",
    response_model=PreferencesOut,
    summary="A user's preferences",
    dependencies=[Depends(read_rate_limit)],
    responses={
        404: error("No such user.", "no profile for user 'u42'"),
        503: error("Postgres unavailable.", "profile store unavailable"),
    },
)
async def get_preferences(svc: ServicesDep, user_id: UserId) -> PreferencesOut:
    try:
        async with svc.pool.connection(timeout=1) as conn:
            row = await asyncio.wait_for(
                (
                    await conn.execute(
                        f"SELECT {', '.join(_COLS)} FROM user_profiles WHERE user_id = %s", (user_id,)
                    )
                ).fetchone(),
                1.0,
            )
    except Exception as exc:
        raise HTTPException(503, f"profile store unavailable: {type(exc).__name__}") from None
    if row is None:
        raise HTTPException(404, f"no profile for user {user_id!r}")
    values = dict(zip(_COLS, row, strict=True))
    values["favorite_genres"] = [str(g) for g in values["favorite_genres"]]
    return PreferencesOut(user_id=user_id, **values)


@router.put(
    "/v1/users/{user_id}/preferences",
    response_model=PreferencesOut,
    summary="Set a user's preferences (API key)",
    responses={
        401: error("Missing/invalid API key.", "missing X-API-Key header"),
        422: error("Invalid body.", "unknown genre 'x'"),
        429: error("Rate limited.", "rate limit of 600 requests/minute exceeded"),
        503: error("Postgres unavailable.", "profile store unavailable"),
    },
)
async def put_preferences(
    svc: ServicesDep, user_id: UserId, prefs: Preferences, _key: WriteKeyDep
) -> PreferencesOut:
    """Create or replace the user's preferences; genres must exist (slugs or names)."""
    genres = []
    for g in prefs.favorite_genres:
        slug = await resolve_genre(svc, g)
        if slug and slug not in genres:
            genres.append(slug)
    prefs = prefs.model_copy(update={"favorite_genres": genres})
    values = prefs.model_dump()
    values["favorite_genres"] = Jsonb(genres)
    cols = ", ".join(_COLS)
    sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in _COLS)
    try:
        async with svc.pool.connection(timeout=1) as conn:
            await asyncio.wait_for(
                conn.execute(
                    f"INSERT INTO user_profiles (user_id, {cols}) "
                    f"VALUES (%s, {', '.join(['%s'] * len(_COLS))}) "
                    f"ON CONFLICT (user_id) DO UPDATE SET {sets}",
                    (user_id, *[values[c] for c in _COLS]),
                ),
                2.0,
            )
    except psycopg.DataError as exc:  # a value the columns cannot hold: the client's fault
        raise HTTPException(422, f"invalid preference value: {exc.diag.message_primary}") from None
    except Exception as exc:
        raise HTTPException(503, f"profile store unavailable: {type(exc).__name__}") from None
    if svc.cache.available:
        try:
            await svc.cache.client.incr(version_key(user_id))
        except Exception as exc:
            svc.cache._trip(exc)
    return PreferencesOut(user_id=user_id, **prefs.model_dump())
