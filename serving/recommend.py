"""The recommendation service: candidates -> blend -> filters -> novelty -> MMR -> explanations.

Plain async functions over :class:`Services` (pool, cache, model store, popular cache, log);
routes stay thin and tests call :func:`recommend` directly.

Degradation, in order: a source that misses its time box (``serving.source_timeout_ms``) or
fails is dropped; a Postgres that cannot give a connection or a user profile means a
non-personalised list; when even the popular query fails the last popular list this process
saw is served. Every such answer carries ``degraded: true`` and is cached for 30 s only. Only when
nothing at all is available does the caller answer 503 (:class:`NothingToServe`).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import orjson
from psycopg_pool import AsyncConnectionPool

from lambdarec.settings import Settings
from schemas.cache_keys import filter_digest
from serving import candidates as cands
from serving.cache import RecCache
from serving.explain import explain
from serving.models import ModelStore
from serving.ranking import Candidate, Scored, apply_novelty, blend, mmr, top_by_dot
from serving.serve_log import ServeLog

log = logging.getLogger(__name__)
T = TypeVar("T")


class NothingToServe(RuntimeError):
    """No source could produce a single item (Postgres down and no popular list seen yet)."""


@dataclass
class Services:
    """Everything the service functions use; built once per process by ``serving.deps``."""

    settings: Settings
    pool: AsyncConnectionPool
    cache: RecCache
    models: ModelStore
    popular: cands.PopularCache = field(default_factory=cands.PopularCache)
    serve_log: ServeLog | None = None
    #: last good popular list per filter, served stale when Postgres is down
    last_popular: dict[str, list[Candidate]] = field(default_factory=dict)
    #: variant name -> its config (blend_weights, diversity, novelty); the experiments issue
    #: plugs its assignment in here. None: variants only namespace the cache and the logs.
    variant_config: Callable[[str], Mapping[str, Any] | None] | None = None


async def _boxed(aw: Awaitable[T], timeout_ms: float) -> T:
    return await asyncio.wait_for(aw, timeout_ms / 1000)


@dataclass
class RecRequest:
    user_id: str
    k: int
    filters: cands.ItemFilters
    exclude_seen: bool = True
    variant: str | None = None
    variant_config: Mapping[str, Any] | None = None


def cache_key(req: RecRequest, version: int) -> str:
    digest = filter_digest({**req.filters.as_dict(), "k": req.k, "exclude_seen": req.exclude_seen})
    return RecCache.key(req.user_id, version, req.variant or "default", digest)


async def recommend(svc: Services, req: RecRequest) -> dict[str, Any]:
    """A served list: cached per (user, cache version, variant, filters); fresh rec_id per serve."""
    t0 = time.perf_counter()
    version = await svc.cache.version(req.user_id)
    if version is None:  # Redis down: uncached
        payload, _ = await compute(svc, req)
        body, hit = orjson.dumps(payload), False
    else:

        async def _compute() -> tuple[bytes, bool]:
            p, c = await compute(svc, req)
            return orjson.dumps(p), c

        body, hit = await svc.cache.get_or_compute(cache_key(req, version), _compute)
    answer: dict[str, Any] = orjson.loads(body)
    answer["rec_id"] = str(uuid.uuid4())
    answer["user_id"] = req.user_id
    answer["variant"] = req.variant
    answer["cache_hit"] = hit
    answer["computation_time_ms"] = round((time.perf_counter() - t0) * 1000, 3)
    if svc.serve_log is not None:
        svc.serve_log.record(answer)
    return answer


async def compute(svc: Services, req: RecRequest) -> tuple[dict[str, Any], bool]:
    """Compute the list (no cache); returns ``(payload, complete)`` (False when degraded)."""
    cfg = svc.settings.serving
    vc = dict(req.variant_config or {})
    weights: Mapping[str, float] = vc.get("blend_weights") or cfg.blend_weights
    n = cfg.candidates_per_source
    deadline = time.perf_counter() + cfg.request_budget_ms / 1000
    degraded = False
    ctx = cands.UserContext(req.user_id)
    by_source: dict[str, list[Candidate]] = {}
    model_version: str | None = None
    meta: dict[str, cands.ItemMeta] = {}
    vectors: dict[str, np.ndarray] = {}
    cold_start = False

    def left_ms() -> float:
        return max(1.0, min(cfg.source_timeout_ms, (deadline - time.perf_counter()) * 1000))

    try:
        async with svc.pool.connection(timeout=cfg.request_budget_ms / 2000) as conn:
            try:
                ctx = await _boxed(cands.user_context(conn, req.user_id), left_ms())
            except Exception as exc:
                raise _Degrade(exc) from exc
            personal = ctx.consent
            if personal:
                factors = svc.models.current
                if ctx.als_factors is not None and factors is not None:
                    by_source["realtime"] = top_by_dot(ctx.als_factors, factors.item_ids, factors.factors, n)
                    _anchor_by_factors(by_source["realtime"], ctx.recent, factors)
                    model_version = ctx.als_model_version or factors.version
                if ctx.preference_vector is not None:
                    try:
                        ann = await _boxed(
                            cands.ann_by_vector(conn, ctx.preference_vector, n, req.filters), left_ms()
                        )
                    except Exception as exc:
                        raise _Degrade(exc) from exc
                    for c in ann:
                        c.anchor = ctx.recent[0] if ctx.recent else None
                    by_source["realtime"] = by_source.get("realtime", []) + ann
                try:
                    batch, batch_version = await _boxed(cands.batch_candidates(conn, req.user_id), left_ms())
                except Exception as exc:
                    raise _Degrade(exc) from exc
                if batch:
                    by_source["batch"] = batch
                    model_version = model_version or batch_version
            genres = await _boxed(svc.popular.genres(conn), left_ms())
            if personal and not by_source and ctx.favorite_genres:
                cold_start = True
                fav = [g for g in ctx.favorite_genres if g in genres][:3]
                pops: list[Candidate] = []
                for g in fav:
                    f = cands.ItemFilters(g, req.filters.year_from, req.filters.year_to)
                    if req.filters.genre and req.filters.genre != g:
                        continue
                    for c in await _boxed(svc.popular.popular(conn, n, f), left_ms()):
                        pops.append(Candidate(c.item_id, c.score, "popular", genre=genres.get(g, g)))
                by_source["popular"] = pops
            pop = await _boxed(svc.popular.popular(conn, n, req.filters), left_ms())
            if len(svc.last_popular) >= 2048:
                svc.last_popular.clear()
            svc.last_popular[_fkey(req.filters)] = pop
            by_source.setdefault("popular", [])
            genre_name = genres.get(req.filters.genre or "", None)
            by_source["popular"] += [Candidate(c.item_id, c.score, "popular", genre=genre_name) for c in pop]
            banned = set(ctx.disliked) | (ctx.seen if req.exclude_seen else set())
            blended = [s for s in blend(by_source, _weights(weights, by_source)) if s.item_id not in banned]
            pool_ids = [s.item_id for s in blended[: cfg.mmr_pool * 3]]
            anchors = {s.anchor for s in blended[: cfg.mmr_pool * 3] if s.anchor}
            meta = await _boxed(cands.item_meta(conn, pool_ids + sorted(anchors - set(pool_ids))), left_ms())
            ranked = [s for s in blended if s.item_id in meta and req.filters.accepts(meta[s.item_id])]
            ranked = ranked[: cfg.mmr_pool]
            novelty_pref = float(vc.get("novelty", ctx.novelty if personal else 0.0))
            ranked = apply_novelty(
                ranked, {i: m.popularity for i, m in meta.items()}, novelty_pref, cfg.novelty_max_boost
            )
            diversity = float(vc.get("diversity", ctx.diversity if personal else 0.0))
            if diversity > 0 and len(ranked) > req.k:
                try:
                    vectors = await _boxed(cands.item_vectors(conn, [s.item_id for s in ranked]), left_ms())
                except Exception:
                    degraded = True
                    vectors = _factor_vectors(svc, ranked)
                ranked = mmr(ranked, vectors, req.k, diversity)
            items = ranked[: req.k]
    except _Degrade as d:
        log.warning("degraded list for %s: %r", req.user_id, d.__cause__)
        return await _fallback(svc, req, ctx), False
    except Exception as exc:  # pool timeout, connection refused, slow popular query
        log.warning("degraded list for %s: %r", req.user_id, exc)
        return await _fallback(svc, req, ctx), False

    return _payload(items, meta, cold_start, degraded, model_version), not degraded


class _Degrade(Exception):
    """A personalised source failed: answer from the fallback path instead."""


def _fkey(f: cands.ItemFilters) -> str:
    return filter_digest(f.as_dict())


def _weights(weights: Mapping[str, float], by_source: Mapping[str, list[Candidate]]) -> dict[str, float]:
    """Popular only fills in: with personal sources present it keeps its configured weight,
    alone it ranks by itself (weight 1)."""
    w = {s: float(weights.get(s, 0.0)) for s in by_source}
    if set(by_source) <= {"popular"}:
        w["popular"] = 1.0
    return w


def _anchor_by_factors(cands_: list[Candidate], recent: list[str], factors: Any) -> None:
    """'because you watched X': X = the recent item whose factors are closest to the candidate."""
    vecs = [(r, factors.vector(r)) for r in recent]
    vecs = [(r, v) for r, v in vecs if v is not None]
    if not vecs:
        return
    ids = [r for r, _ in vecs]
    mat = np.stack([v for _, v in vecs])
    mat = mat / np.maximum(np.linalg.norm(mat, axis=1, keepdims=True), 1e-9)
    for c in cands_:
        v = factors.vector(c.item_id)
        if v is not None:
            c.anchor = ids[int(np.argmax(mat @ v))]


def _factor_vectors(svc: Services, items: list[Scored]) -> dict[str, np.ndarray]:
    f = svc.models.current
    if f is None:
        return {}
    out = {}
    for s in items:
        v = f.vector(s.item_id)
        if v is not None:
            out[s.item_id] = v
    return out


def _payload(
    items: list[Scored],
    meta: Mapping[str, cands.ItemMeta],
    cold_start: bool,
    degraded: bool,
    model_version: str | None,
) -> dict[str, Any]:
    sources = {s.source for s in items}
    if cold_start:
        algo = "cold_start"
    elif len(sources) == 1:
        algo = next(iter(sources))
    else:
        algo = "hybrid" if sources else "popular"
    out = []
    for s in items:
        m = meta.get(s.item_id)
        anchor = meta.get(s.anchor) if s.anchor else None
        out.append(
            {
                "item_id": s.item_id,
                "title": m.title if m else None,
                "score": round(s.score, 6),
                "source": s.source,
                "explanation": explain(
                    s.source,
                    anchor_title=anchor.title if anchor else None,
                    genre=s.genre,
                    cold_start=cold_start,
                ),
            }
        )
    return {
        "items": out,
        "algorithm_source": algo,
        "model_version": model_version,
        "degraded": degraded,
    }


async def _fallback(svc: Services, req: RecRequest, ctx: cands.UserContext) -> dict[str, Any]:
    """Popular (fresh if Postgres answers within the box, else the last list seen); degraded."""
    cfg = svc.settings.serving
    pop: list[Candidate] | None = None
    meta: dict[str, cands.ItemMeta] = {}
    try:
        async with svc.pool.connection(timeout=cfg.source_timeout_ms / 1000) as conn:
            pop = await _boxed(
                svc.popular.popular(conn, cfg.candidates_per_source, req.filters), cfg.source_timeout_ms
            )
            meta = await _boxed(
                cands.item_meta(conn, [c.item_id for c in pop[: req.k * 3]]), cfg.source_timeout_ms
            )
    except Exception:
        pop = svc.last_popular.get(_fkey(req.filters))
    if pop is None:
        raise NothingToServe("Postgres unavailable and no popular list cached yet")
    banned = set(ctx.disliked) | (ctx.seen if req.exclude_seen else set())
    items = [Scored(c.item_id, c.score, "popular", genre=c.genre) for c in pop if c.item_id not in banned]
    if meta:
        items = [s for s in items if s.item_id in meta]
    top = max((s.score for s in items), default=1.0) or 1.0
    for s in items:
        s.score = s.score / top
    return _payload(items[: req.k], meta, False, True, None)
