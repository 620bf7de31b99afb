"""Validation shared by the serving routes: ids, genres, year ranges (specific 4xx messages)."""

from __future__ import annotations

import asyncio

from fastapi import HTTPException

from serving.recommend import Services

MAX_ID = 128
ID_PATTERN = r"^[^\s/?#]+$"


async def resolve_genre(svc: Services, genre: str | None) -> str | None:
    """The slug of ``genre`` (slug or name, any case); 422 when unknown. When Postgres cannot be
    asked, the value is passed on as a slug (the query then simply matches nothing)."""
    if genre is None:
        return None
    known = svc.popular.known_genres()
    if known is None:
        try:
            async with svc.pool.connection(timeout=svc.settings.serving.source_timeout_ms / 1000) as conn:
                known = await asyncio.wait_for(svc.popular.genres(conn), 1.0)
        except Exception:
            return genre.strip().lower()
    g = genre.strip().lower()
    for slug, name in known.items():
        if g in (slug, name.lower()):
            return slug
    sample = ", ".join(sorted(known)[:20])
    raise HTTPException(422, f"unknown genre {genre!r}; known genres: {sample}")


def check_years(year_from: int | None, year_to: int | None) -> None:
    if year_from is not None and year_to is not None and year_from > year_to:
        raise HTTPException(422, f"year_from ({year_from}) is after year_to ({year_to})")
