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
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import orjson
from psycopg_pool import AsyncConnectionPool

from lambdarec.settings import Settings
from schemas.cache_keys import filter_digest
from serving import candidates as cands
from serving.cache import RecCache
from serving.catalog import Catalog, Lookup
from serving.explain import explain
from serving.models import ModelStore
from serving.ranking import Candidate, Scored, apply_novelty, blend, mmr_unit, normalize, top_by_dot
from serving.serve_log import ServeLog

if TYPE_CHECKING:
    from serving.experiments.running import RunningExperiments

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
    #: item metadata and embeddings in memory (serving/catalog.py); empty until loaded, and
    #: then every item is fetched with its list as before
    catalog: Catalog = field(default_factory=Catalog)
    serve_log: ServeLog | None = None
    #: last good popular list per filter, served stale when Postgres is down
    last_popular: dict[str, list[Candidate]] = field(default_factory=dict)
    #: variant name -> its config (blend_weights, diversity, novelty); the experiments issue
    #: plugs its assignment in here. None: variants only namespace the cache and the logs.
    variant_config: Callable[[str], Mapping[str, Any] | None] | None = None
    #: the running A/B experiment (serving/experiments/running.py): assigns users to variants
    experiments: RunningExperiments | None = None


async def _boxed(aw: Awaitable[T], timeout_ms: float) -> T:
    """``aw`` within ``timeout_ms``, else TimeoutError *at once*.

    Not ``asyncio.wait_for``: it waits for the cancelled work to finish, and psycopg answers a
    cancellation by asking the server to cancel and then waiting for the query to end (up to
    5 + 5 s) - a slow Postgres would hold the request for exactly as long as the time box was
    meant to save. The abandoned work is cancelled in the background; its connection goes back
    to the pool, which discards it if it is still busy."""
    task = asyncio.ensure_future(aw)
    done, _ = await asyncio.wait({task}, timeout=timeout_ms / 1000)
    if not done:
        task.cancel()
        task.add_done_callback(_consume)
        raise TimeoutError(f"over its {timeout_ms:.0f} ms time box")
    return task.result()


def _consume(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: an abandoned source's error is expected, not news


_returning: set[asyncio.Task[None]] = set()


@contextlib.asynccontextmanager
async def _connection(pool: AsyncConnectionPool, timeout: float) -> AsyncIterator[Any]:
    """``pool.connection()``, except that after a failure (e.g. an abandoned time box) the
    connection goes back in the background: returning it waits for the abandoned query's
    cancellation, which on a slow Postgres is the very wait the time box avoids."""
    conn = await pool.getconn(timeout=timeout)
    try:
        yield conn
    except BaseException:
        task = asyncio.get_running_loop().create_task(pool.putconn(conn))
        _returning.add(task)
        task.add_done_callback(_returning.discard)
        task.add_done_callback(_consume)
        raise
    await pool.putconn(conn)


@dataclass
class RecRequest:
    user_id: str
    k: int
    filters: cands.ItemFilters
    exclude_seen: bool = True
    variant: str | None = None
    variant_config: Mapping[str, Any] | None = None
    #: set when the variant was assigned by the running experiment (an exposure, logged)
    experiment_id: int | None = None


_DIGESTS: dict[tuple[Any, ...], str] = {}


def cache_parts(req: RecRequest, model_version: str | None = None) -> tuple[str, str]:
    """``(variant namespace, filter digest)`` of the request's cache key (digests memoised: a
    canonical JSON dump and a sha256 per cached answer add up).

    The namespace carries the production model version the API holds: a promotion makes every
    list cached under the old model unreachable at once (they age out by LRU/TTL), instead of
    serving the old model's lists for up to ``cache_ttl_sec`` to users without new events."""
    f = req.filters
    memo = (f.genre, f.year_from, f.year_to, req.k, req.exclude_seen)
    digest = _DIGESTS.get(memo)
    if digest is None:
        digest = filter_digest({**f.as_dict(), "k": req.k, "exclude_seen": req.exclude_seen})
        if len(_DIGESTS) >= 4096:  # client-chosen combinations: bound the memory
            _DIGESTS.clear()
        _DIGESTS[memo] = digest
    # an assigned variant is namespaced by its experiment: "control" of two experiments differs
    variant = f"x{req.experiment_id}.{req.variant}" if req.experiment_id else req.variant or "default"
    if model_version:
        variant = f"{variant}@{model_version}"
    return variant, digest


def cache_key(req: RecRequest, version: int, model_version: str | None = None) -> str:
    return RecCache.key(req.user_id, version, *cache_parts(req, model_version))


async def recommend(svc: Services, req: RecRequest) -> dict[str, Any]:
    """A served list: cached per (user, cache version, variant, filters); fresh rec_id per serve."""
    t0 = time.perf_counter()
    model = svc.models.current
    model_version = model.version if model is not None else None
    # one round trip: the version, the list under it, and on a miss the list key's lock
    version, cached, locked = await svc.cache.lookup_or_lock(req.user_id, *cache_parts(req, model_version))
    if cached is not None:
        body, hit = cached, True
    elif version is None:  # Redis down: uncached
        payload, _ = await compute(svc, req)
        body, hit = orjson.dumps(payload), False
    else:

        async def _compute() -> tuple[bytes, bool]:
            p, c = await compute(svc, req)
            return orjson.dumps(p), c

        body, hit = await svc.cache.get_or_compute(
            cache_key(req, version, model_version), _compute, known_miss=True, locked=locked
        )
    answer: dict[str, Any] = orjson.loads(body)
    answer["rec_id"] = str(uuid.uuid4())
    answer["user_id"] = req.user_id
    answer["variant"] = req.variant
    answer["experiment_id"] = req.experiment_id
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
    cold_start = False

    def left_ms() -> float:
        return max(1.0, min(cfg.source_timeout_ms, (deadline - time.perf_counter()) * 1000))

    try:
        async with _connection(svc.pool, cfg.request_budget_ms / 2000) as conn:
            try:  # profile and batch view in one round trip
                ctx, batch, batch_version = await _boxed(
                    cands.user_context_and_batch(conn, req.user_id), left_ms()
                )
            except Exception as exc:
                raise _Degrade(exc) from exc
            personal = ctx.consent
            if personal:
                factors = svc.models.current
                # a fold-in vector lives in the latent space of the model it was solved against:
                # against another model's item factors its dot products mean nothing. After a
                # promotion, users the speed layer has not re-folded yet get the batch view (the new
                # model's lists) and their taste vector instead, until their next event.
                if (
                    ctx.als_factors is not None
                    and factors is not None
                    and ctx.als_model_version in (None, factors.version)
                ):
                    by_source["realtime"] = top_by_dot(ctx.als_factors, factors.item_ids, factors.factors, n)
                    _anchor_by_factors(by_source["realtime"], ctx.recent, factors)
                    model_version = factors.version
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
                if batch:
                    by_source["batch"] = batch
                    model_version = model_version or batch_version
            # in-process caches answer without a time-boxed task (an asyncio task and a wait each)
            genres = svc.popular.cached_genres()
            if genres is None:
                genres = await _boxed(svc.popular.genres(conn), left_ms())
            if personal and not by_source and ctx.favorite_genres:
                fav = [g for g in ctx.favorite_genres if g in genres][:3]
                pops: list[Candidate] = []
                for g in fav:
                    f = cands.ItemFilters(g, req.filters.year_from, req.filters.year_to)
                    if req.filters.genre and req.filters.genre != g:
                        continue
                    got = await _boxed(svc.popular.popular(conn, n, f), left_ms())
                    # each list on its own scale (popularity_metrics sums, or the items'
                    # popularity_score when the genre had no traffic): min-max per genre into
                    # [1, 2], so genres interleave and every one outranks the trending filler
                    for c, s in zip(got, normalize([c.score for c in got]), strict=True):
                        pops.append(Candidate(c.item_id, 1.0 + s, "popular", genre=genres.get(g, g)))
                cold_start = bool(pops)
                by_source["popular"] = pops
            pop = svc.popular.cached(n, req.filters)
            if pop is None:
                pop = await _boxed(svc.popular.popular(conn, n, req.filters), left_ms())
            if len(svc.last_popular) >= 2048:
                svc.last_popular.clear()
            svc.last_popular[_fkey(req.filters)] = pop
            by_source.setdefault("popular", [])
            genre_name = genres.get(req.filters.genre or "", None)
            # cold start: trending only fills in after the favourite genres (scores in [0, 0.5])
            pop_scores = [0.5 * s for s in normalize([c.score for c in pop])] if cold_start else None
            by_source["popular"] += [
                Candidate(c.item_id, pop_scores[i] if pop_scores else c.score, "popular", genre=genre_name)
                for i, c in enumerate(pop)
            ]
            banned = set(ctx.disliked) | (ctx.seen if req.exclude_seen else set())
            head = blend(by_source, _weights(weights, by_source), banned=banned, limit=cfg.mmr_pool * 3)
            head_ids = [s.item_id for s in head]
            anchors = {s.anchor for s in head if s.anchor}
            diversity = float(vc.get("diversity", ctx.diversity if personal else 0.0))
            # metadata and embeddings come from the in-memory catalog; only items it does not
            # hold yet (new since its last refresh) cost a query
            want = head_ids + sorted(anchors - set(head_ids))
            look = svc.catalog.held(want)
            if look is None:
                look = await _boxed(svc.catalog.lookup(conn, want), left_ms())
            keep = np.flatnonzero(look.filter_mask(head_ids, req.filters))[: cfg.mmr_pool]
            ranked = [head[i] for i in keep]
            ids = [s.item_id for s in ranked]
            novelty_pref = float(vc.get("novelty", ctx.novelty if personal else 0.0))
            ranked = apply_novelty(
                ranked, dict(zip(ids, look.popularity(ids).tolist(), strict=True)), novelty_pref,
                cfg.novelty_max_boost,
            )  # fmt: skip
            if diversity > 0 and len(ranked) > req.k:
                ranked = mmr_unit(ranked, look.unit_vectors([s.item_id for s in ranked]), req.k, diversity)
            items = ranked[: req.k]
            meta = _metas(look, items)
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
    known = [(c, row) for c in cands_ if (row := factors.index.get(c.item_id)) is not None]
    if not known:
        return
    # one (candidates x recent) product instead of a mat-vec per candidate
    best = (factors.factors[[row for _, row in known]] @ mat.T).argmax(axis=1)
    for (c, _), b in zip(known, best, strict=True):
        c.anchor = ids[int(b)]


def _metas(look: Lookup, items: list[Scored]) -> dict[str, cands.ItemMeta]:
    """Metadata of the served items and of their anchors (titles for the payload)."""
    want = {s.item_id for s in items} | {s.anchor for s in items if s.anchor}
    return {i: m for i in want if (m := look.meta(i)) is not None}


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
        async with _connection(svc.pool, cfg.source_timeout_ms / 1000) as conn:
            pop = await _boxed(
                svc.popular.popular(conn, cfg.candidates_per_source, req.filters), cfg.source_timeout_ms
            )
            ids = [c.item_id for c in pop[: req.k * 3]]
            look = await _boxed(svc.catalog.lookup(conn, ids), cfg.source_timeout_ms)
            meta = {i: m for i in ids if (m := look.meta(i)) is not None}
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
