"""Candidate sources and item metadata: the only SQL of the recommendation path.

Why one module: every query here is time-boxed by the caller and must stay an index lookup
(user_profiles PK, rt_user_interactions (user_id, occurred_at), the batch view's active
partition, the items HNSW index, popularity_metrics (date, score)). Popular lists are the same
for everybody, so they are kept in process for ``_POPULAR_TTL`` seconds.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, overload

import numpy as np
import orjson
from psycopg import AsyncConnection

from serving.ranking import Candidate

_POPULAR_TTL = 30.0
_GENRES_TTL = 300.0


@dataclass(slots=True)
class UserContext:
    """What ranking needs to know about a user (defaults describe an unknown user)."""

    user_id: str
    exists: bool = False
    consent: bool = False
    als_factors: np.ndarray | None = None
    als_model_version: str | None = None
    preference_vector: np.ndarray | None = None
    favorite_genres: list[str] = field(default_factory=list)
    diversity: float = 0.5
    novelty: float = 0.5
    seen: set[str] = field(default_factory=set)
    disliked: set[str] = field(default_factory=set)
    recent: list[str] = field(default_factory=list)  # most recent positive items, newest first

    @property
    def personalized(self) -> bool:
        return self.consent and (
            self.als_factors is not None or self.preference_vector is not None or bool(self.recent)
        )


@dataclass(slots=True)
class ItemMeta:
    item_id: str
    title: str
    year: int | None
    popularity: float
    genres: list[str]  # slugs


_USER_SQL = """
WITH h AS (
    SELECT r.item_id, r.occurred_at AS t,
           (r.event_type = 'dislike' OR (r.event_type = 'rate' AND r.rating <= 2)) AS bad
      FROM rt_user_interactions r WHERE r.user_id = %(u)s
    UNION ALL
    SELECT f.item_id, f.occurred_at, (f.event_type = 'dislike' OR (f.event_type = 'rate' AND f.rating <= 2))
      FROM recommendation_feedback f WHERE f.user_id = %(u)s AND f.event_type NOT IN ('view', 'click')
), g AS (
    SELECT item_id, max(t) AS t, bool_or(bad) AS bad FROM h GROUP BY item_id
)
SELECT p.user_id IS NOT NULL, coalesce(p.data_usage_consent, false), p.als_factors, p.als_model_version,
       p.preference_vector, coalesce(p.favorite_genres, '[]'::jsonb),
       coalesce(p.diversity_preference, 0.5), coalesce(p.novelty_preference, 0.5),
       (SELECT coalesce(array_agg(item_id ORDER BY t DESC), '{}') FROM g),
       (SELECT coalesce(array_agg(item_id), '{}') FROM g WHERE bad)
  FROM (SELECT %(u)s::varchar AS id) u
  LEFT JOIN user_profiles p ON p.user_id = u.id
"""


def _vec(v: Any) -> np.ndarray | None:
    if v is None:
        return None
    if hasattr(v, "to_numpy"):  # pgvector.Vector (untyped vector columns)
        v = v.to_numpy()
    arr = np.asarray(v, dtype=np.float32)
    return arr if arr.size and np.isfinite(arr).all() else None


# the user's row of the batch view rides on the profile query: one statement, one round trip
# (pipeline mode also made it one round trip, but its protocol handling cost ~0.8 ms per list)
_USER_BATCH_SQL = (
    _USER_SQL.rstrip()
    + """
  LEFT JOIN LATERAL (
    SELECT b.recommendations, b.model_version FROM current_batch_recommendations b
     WHERE b.user_id = u.id AND (b.expires_at IS NULL OR b.expires_at > now()) LIMIT 1
  ) b ON true
"""
).replace(
    "(SELECT coalesce(array_agg(item_id), '{}') FROM g WHERE bad)\n",
    # ::text: the same bytes jsonb's binary form sends, parsed by orjson instead of json.loads
    "(SELECT coalesce(array_agg(item_id), '{}') FROM g WHERE bad), "
    "b.recommendations::text, b.model_version\n",
)


@dataclass(slots=True)
class IdList:
    """A source's candidates as parallel lists, best first (no object per item): the ranking
    maps the ids to catalog rows in one go."""

    ids: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    anchors: list[str | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True, slots=True)
class AnnQuery:
    """The taste-vector search to run with the profile (:func:`user_context_batch_and_ann`)."""

    n: int
    filters: ItemFilters
    #: the dimension of the items' embeddings (of the half-precision index expression)
    dim: int


_ANN_SQL: dict[tuple[str, int], str] = {}


def _user_batch_ann_sql(cond: str, dim: int) -> str:
    """:data:`_USER_BATCH_SQL` plus the ids :func:`ann_ids` would return for the profile's own
    preference vector, when the user consents and the vector has ``dim`` dimensions (else NULL:
    the CASE keeps the correlated search from running at all)."""
    sql = _ANN_SQL.get((cond, dim))
    if sql is None:
        half = f"halfvec({dim})"  # must match the index expression (see ann_ids)
        ann = (
            ", CASE WHEN p.data_usage_consent AND vector_dims(p.preference_vector) = "
            f"{dim} THEN ARRAY(SELECT i.item_id FROM items i WHERE i.embedding IS NOT NULL{cond} "
            f"ORDER BY i.embedding::{half} <=> p.preference_vector::{half} LIMIT %(ann_n)s) END\n"
        )
        sql = _USER_BATCH_SQL.replace(", b.model_version\n", ", b.model_version" + ann, 1)
        assert sql != _USER_BATCH_SQL
        if len(_ANN_SQL) >= 64:
            _ANN_SQL.clear()
        _ANN_SQL[(cond, dim)] = sql
    return sql


async def user_context_batch_and_ann(
    conn: AsyncConnection, user_id: str, ann: AnnQuery | None = None
) -> tuple[UserContext, IdList, str | None, list[str] | None]:
    """The user's profile, consent, seen and disliked items, and their row of the batch view, in
    one statement (each extra round trip is another trip through the event loop's queue); with
    ``ann`` also the :func:`ann_ids` of the user's preference vector in the same statement
    (None when it did not run: no consent, no vector, or one of another dimension, which
    :func:`ann_ids` then answers on its own).

    Why: a taste-vector user's list cost two round trips, the second only to send back the
    vector the first had just read; each statement costs the API ~0.1 ms of CPU however small.
    The search is the same one (the half-precision HNSW index, scanned with the vector of the
    joined profile row as its parameter)."""
    params: dict[str, Any] = {"u": user_id}
    if ann is None:
        sql = _USER_BATCH_SQL
    else:
        cond, fparams = ann.filters.sql(named="ann_f")
        sql = _user_batch_ann_sql(cond, ann.dim)
        params.update(fparams, ann_n=ann.n)
    row = await (await conn.execute(sql, params, binary=True)).fetchone()
    assert row is not None
    # model_version is NOT NULL in a batch run: NULL means the user has no batch row
    batch = _batch_list(_json(row[10])) if row[11] is not None else IdList()
    ids = row[12] if ann is not None else None
    return _context(user_id, row[:10]), batch, row[11], ids


def _context(user_id: str, row: Any) -> UserContext:
    exists, consent, als, als_ver, pref, fav, div, nov, seen, disliked = row
    return UserContext(
        user_id=user_id,
        exists=bool(exists),
        consent=bool(consent),
        als_factors=_vec(als),
        als_model_version=als_ver,
        preference_vector=_vec(pref),
        favorite_genres=[str(g) for g in fav if isinstance(g, str | int)],
        diversity=float(div),
        novelty=float(nov),
        seen=set(seen),
        disliked=set(disliked),
        recent=[i for i in seen if i not in set(disliked)][:5],
    )


@dataclass(slots=True)
class ItemFilters:
    genre: str | None = None  # slug
    year_from: int | None = None
    year_to: int | None = None

    @overload
    def sql(self, alias: str = "i", *, named: None = None) -> tuple[str, list[Any]]: ...
    @overload
    def sql(self, alias: str = "i", *, named: str) -> tuple[str, dict[str, Any]]: ...

    def sql(self, alias: str = "i", *, named: str | None = None) -> tuple[str, Any]:
        """``AND ...`` conditions on items ``alias`` and their parameters (positional; with
        ``named``, ``%(<named>_genre)s``-style placeholders and a dict, for a statement that
        uses named parameters)."""
        parts: list[str] = []
        params: dict[str, Any] = {}

        def ph(name: str) -> str:
            return "%s" if named is None else f"%({named}_{name})s"

        if self.genre:
            parts.append(
                f"EXISTS (SELECT 1 FROM item_genres ig JOIN genres g ON g.genre_id = ig.genre_id "
                f"WHERE ig.item_id = {alias}.item_id AND g.slug = {ph('genre')})"
            )
            params["genre"] = self.genre
        if self.year_from is not None:
            parts.append(f"{alias}.release_year >= {ph('year_from')}")
            params["year_from"] = self.year_from
        if self.year_to is not None:
            parts.append(f"{alias}.release_year <= {ph('year_to')}")
            params["year_to"] = self.year_to
        cond = "".join(" AND " + p for p in parts)
        if named is None:
            return cond, list(params.values())
        return cond, {f"{named}_{k}": v for k, v in params.items()}

    def accepts(self, meta: ItemMeta) -> bool:
        if self.genre and self.genre not in meta.genres:
            return False
        if self.year_from is not None and (meta.year is None or meta.year < self.year_from):
            return False
        return not (self.year_to is not None and (meta.year is None or meta.year > self.year_to))

    def as_dict(self) -> dict[str, Any]:
        return {
            k: v
            for k, v in (("genre", self.genre), ("year_from", self.year_from), ("year_to", self.year_to))
            if v is not None
        }


async def ann_ids(conn: AsyncConnection, vector: np.ndarray, n: int, filters: ItemFilters) -> list[str]:
    """Items nearest to ``vector`` (cosine, HNSW with iterative scan so filters still fill
    ``n``), nearest first, without their similarity.

    The search runs on the half-precision index of migration 011 (half the pages per hop). The
    similarity is left out because it is the one column that reads ``items.embedding`` (a
    TOASTed 3 kB vector per row: ~0.45 ms of Postgres per list of 100); the API computes it from
    the unit rows of its in-memory catalog instead (``serving.recommend._ann_pool``)."""
    cond, params = filters.sql()
    half = f"halfvec({len(vector)})"  # must match the index expression (the column's dimension)
    rows = await (
        await conn.execute(
            f"SELECT i.item_id FROM items i WHERE i.embedding IS NOT NULL{cond} "
            f"ORDER BY i.embedding::{half} <=> %s::{half} LIMIT %s",
            (*params, vector, n),
            binary=True,
        )
    ).fetchall()
    return [r[0] for r in rows]


async def similar_items(conn: AsyncConnection, item_id: str, n: int) -> tuple[bool, list[tuple[str, float]]]:
    """(item exists, [(item_id, cosine similarity)]) by pgvector ANN over ``items.embedding``."""
    row = await (
        await conn.execute("SELECT embedding FROM items WHERE item_id = %s", (item_id,), binary=True)
    ).fetchone()
    if row is None:
        return False, []
    if row[0] is None:
        return True, []
    rows = await (
        await conn.execute(
            "SELECT item_id, 1 - (embedding <=> %s) FROM items WHERE embedding IS NOT NULL AND item_id <> %s "
            "ORDER BY embedding <=> %s LIMIT %s",
            (row[0], item_id, row[0], n),
            binary=True,
        )
    ).fetchall()
    return True, [(r[0], float(r[1])) for r in rows]


def _json(text: str | None) -> Any:
    """A jsonb value sent as text: orjson (~4x as fast as the json.loads psycopg's jsonb loader
    runs), json.loads for what orjson refuses (integers beyond 64 bits)."""
    if text is None:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def _batch_list(recs: Any) -> IdList:
    """The batch view's ``recommendations`` JSON (``[{item_id, score, because}]``); an entry
    without a numeric score ranks by its position."""
    out = IdList()
    for pos, rec in enumerate(recs or []):
        if isinstance(rec, dict) and isinstance(iid := rec.get("item_id"), str):
            score = rec.get("score")
            because = rec.get("because")
            out.ids.append(iid)
            out.scores.append(float(score) if isinstance(score, int | float) else -float(pos))
            out.anchors.append(because if isinstance(because, str) else None)
    return out


class PopularCache:
    """Process-local cache of popular lists (identical for everyone; 30 s is fresh enough)."""

    def __init__(self) -> None:
        self._lists: dict[tuple[Any, ...], tuple[float, list[Candidate]]] = {}
        self._genres: tuple[float, dict[str, str]] | None = None

    def cached(self, n: int, filters: ItemFilters, window_days: int | None = 7) -> list[Candidate] | None:
        """The list :meth:`popular` would return without a query, or None (the uncached path
        skips a time-boxed task per cached source: each one is an asyncio task and a wait)."""
        hit = self._lists.get((n, filters.genre, filters.year_from, filters.year_to, window_days))
        return hit[1] if hit is not None and time.monotonic() - hit[0] < _POPULAR_TTL else None

    def cached_genres(self) -> dict[str, str] | None:
        g = self._genres
        return g[1] if g is not None and time.monotonic() - g[0] < _GENRES_TTL else None

    async def popular(
        self, conn: AsyncConnection, n: int, filters: ItemFilters, window_days: int | None = 7
    ) -> list[Candidate]:
        """Top items of the last ``window_days`` of popularity_metrics; falls back to
        ``items.popularity_score`` when the window holds nothing (fresh install, no traffic)."""
        key = (n, filters.genre, filters.year_from, filters.year_to, window_days)
        hit = self._lists.get(key)
        now = time.monotonic()
        if hit is not None and now - hit[0] < _POPULAR_TTL:
            return hit[1]
        cond, params = filters.sql()
        rows: list[Any] = []
        if window_days:
            rows = await (
                await conn.execute(
                    "SELECT m.item_id, sum(coalesce(m.popularity_score, m.view_count + 2 * m.play_count "
                    "+ 3 * m.like_count + m.click_count)) AS s FROM popularity_metrics m "
                    f"JOIN items i ON i.item_id = m.item_id WHERE m.date > current_date - %s{cond} "
                    "GROUP BY m.item_id ORDER BY s DESC NULLS LAST, m.item_id LIMIT %s",
                    (window_days, *params, n),
                )
            ).fetchall()
        if not rows:
            rows = await (
                await conn.execute(
                    f"SELECT i.item_id, i.popularity_score FROM items i WHERE true{cond} "
                    "ORDER BY i.popularity_score DESC, i.item_id LIMIT %s",
                    (*params, n),
                )
            ).fetchall()
        out = [Candidate(r[0], float(r[1] or 0.0), "popular", genre=filters.genre) for r in rows]
        if len(self._lists) >= 2048:  # filter combinations are client-chosen: bound the memory
            self._lists.clear()
        self._lists[key] = (now, out)
        return out

    async def genres(self, conn: AsyncConnection) -> dict[str, str]:
        """slug -> display name of every genre (validates ``genre=`` and favourite genres)."""
        now = time.monotonic()
        if self._genres is not None and now - self._genres[0] < _GENRES_TTL:
            return self._genres[1]
        rows = await (await conn.execute("SELECT slug, name FROM genres")).fetchall()
        found = {r[0]: r[1] for r in rows}
        self._genres = (now, found)
        return found

    def known_genres(self) -> dict[str, str] | None:
        return None if self._genres is None else self._genres[1]


async def item_meta(conn: AsyncConnection, item_ids: list[str]) -> dict[str, ItemMeta]:
    """Title, year, popularity and genre slugs of ``item_ids``."""
    if not item_ids:
        return {}
    rows = await (
        await conn.execute(
            "SELECT i.item_id, i.title, i.release_year, i.popularity_score, "
            "coalesce((SELECT array_agg(g.slug) FROM item_genres ig "
            "JOIN genres g ON g.genre_id = ig.genre_id WHERE ig.item_id = i.item_id), '{}') "
            "FROM items i WHERE i.item_id = ANY(%b)",
            (item_ids,),
        )
    ).fetchall()
    return {r[0]: ItemMeta(r[0], r[1], r[2], float(r[3] or 0.0), list(r[4])) for r in rows}


async def item_meta_and_vectors(
    conn: AsyncConnection, item_ids: list[str], vector_ids: list[str]
) -> tuple[dict[str, ItemMeta], dict[str, np.ndarray]]:
    """:func:`item_meta` of ``item_ids`` and the embeddings of ``vector_ids`` (a subset: MMR only
    needs the head of the list) in one round trip."""
    if not item_ids:
        return {}, {}
    rows = await (
        await conn.execute(
            "SELECT i.item_id, i.title, i.release_year, i.popularity_score, "
            "coalesce((SELECT array_agg(g.slug) FROM item_genres ig "
            "JOIN genres g ON g.genre_id = ig.genre_id WHERE ig.item_id = i.item_id), '{}'), "
            "CASE WHEN i.item_id = ANY(%b) THEN i.embedding END "
            # %b: a text-format array runs a quoting regex per id (~0.3 ms per list)
            "FROM items i WHERE i.item_id = ANY(%b)",
            (vector_ids, item_ids),
            binary=True,
        )
    ).fetchall()
    meta = {r[0]: ItemMeta(r[0], r[1], r[2], float(r[3] or 0.0), list(r[4])) for r in rows}
    return meta, {r[0]: v for r in rows if (v := _vec(r[5])) is not None}


async def item_vectors(conn: AsyncConnection, item_ids: list[str]) -> dict[str, np.ndarray]:
    """Embeddings of ``item_ids`` (for MMR similarity)."""
    if not item_ids:
        return {}
    rows = await (
        await conn.execute(
            "SELECT item_id, embedding FROM items WHERE item_id = ANY(%b) AND embedding IS NOT NULL",
            (item_ids,),
            binary=True,  # a text vector costs ~0.5 ms to parse; binary is a memcpy
        )
    ).fetchall()
    return {r[0]: v for r in rows if (v := _vec(r[1])) is not None}
