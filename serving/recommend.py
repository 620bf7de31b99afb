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
from serving.models import ItemFactors, ModelStore
from serving.ranking import (
    Blended,
    Candidate,
    Pool,
    Scored,
    blend_rows,
    minmax,
    mmr_order,
    novelty_boost,
    top_scores,
)
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
    """Compute the list (no cache); returns ``(payload, complete)`` (False when degraded).

    Every step after the queries works on integer item keys (catalog rows, see
    :class:`serving.catalog.Lookup`) held in arrays: sources arrive as keys and scores, the blend,
    the banned items, filters, novelty and MMR are array operations, and Python objects are made
    for the ``k`` served items only."""
    cfg = svc.settings.serving
    vc = dict(req.variant_config or {})
    weights: Mapping[str, float] = vc.get("blend_weights") or cfg.blend_weights
    n = cfg.candidates_per_source
    deadline = time.perf_counter() + cfg.request_budget_ms / 1000
    degraded = False
    ctx = cands.UserContext(req.user_id)
    model_version: str | None = None
    titles: dict[str, str] = {}
    cold_start = False
    look = svc.catalog.view()

    def left_ms() -> float:
        return max(1.0, min(cfg.source_timeout_ms, (deadline - time.perf_counter()) * 1000))

    async def fetch_missing(conn: Any, keys: np.ndarray) -> None:
        # items the catalog does not hold yet are fetched with the list (catalog.py's docstring)
        missing = look.missing(keys)
        if missing:
            await _boxed(svc.catalog.fetch(conn, look, missing), left_ms())

    try:
        async with _connection(svc.pool, cfg.request_budget_ms / 2000) as conn:
            pools: dict[str, list[Pool]] = {}
            # profile, batch view and the taste-vector search in one round trip (the search
            # needs the embeddings' dimension: until the catalog knows it, a query of its own)
            dim = look.snap.vectors.shape[1] if len(look.snap) else 0
            ann_q = cands.AnnQuery(n, req.filters, dim) if dim else None
            try:
                ctx, batch, batch_version, ann = await _boxed(
                    cands.user_context_batch_and_ann(conn, req.user_id, ann_q), left_ms()
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
                    # an empty source still counts as present (popular keeps its own weight)
                    pools["realtime"] = [_als_pool(look, ctx, factors, n)]
                    model_version = factors.version
                if ctx.preference_vector is not None:
                    try:
                        if ann is None:
                            ann = await _boxed(
                                cands.ann_ids(conn, ctx.preference_vector, n, req.filters), left_ms()
                            )
                        keys = look.keys(ann)
                        await fetch_missing(conn, keys)
                    except Exception as exc:
                        raise _Degrade(exc) from exc
                    pools.setdefault("realtime", []).append(_ann_pool(look, ctx, keys))
                if batch:
                    pools["batch"] = [
                        Pool("batch", look.keys(batch.ids), np.asarray(batch.scores, dtype=np.float64),
                             np.asarray([-1 if a is None else look.key(a) for a in batch.anchors], np.int64))
                    ]  # fmt: skip
                    model_version = model_version or batch_version
            # in-process caches answer without a time-boxed task (an asyncio task and a wait each)
            genres = svc.popular.cached_genres()
            if genres is None:
                genres = await _boxed(svc.popular.genres(conn), left_ms())
            if personal and not pools and ctx.favorite_genres:
                fav = [g for g in ctx.favorite_genres if g in genres][:3]
                for g in fav:
                    f = cands.ItemFilters(g, req.filters.year_from, req.filters.year_to)
                    if req.filters.genre and req.filters.genre != g:
                        continue
                    got = await _boxed(svc.popular.popular(conn, n, f), left_ms())
                    # each list on its own scale (popularity_metrics sums, or the items'
                    # popularity_score when the genre had no traffic): min-max per genre into
                    # [1, 2], so genres interleave and every one outranks the trending filler
                    keys, scores = _popular_keys(look, got)
                    if len(keys):
                        pools.setdefault("popular", []).append(
                            Pool(
                                "popular",
                                keys,
                                1.0 + minmax(scores),
                                genres=_same(genres.get(g, g), len(keys)),
                            )
                        )
                cold_start = "popular" in pools
            pop = svc.popular.cached(n, req.filters)
            if pop is None:
                pop = await _boxed(svc.popular.popular(conn, n, req.filters), left_ms())
            if len(svc.last_popular) >= 2048:
                svc.last_popular.clear()
            svc.last_popular[_fkey(req.filters)] = pop
            genre_name = genres.get(req.filters.genre or "", None)
            keys, scores = _popular_keys(look, pop)
            # cold start: trending only fills in after the favourite genres (scores in [0, 0.5])
            pools.setdefault("popular", []).append(
                Pool("popular", keys, 0.5 * minmax(scores) if cold_start else scores,
                     genres=_same(genre_name, len(keys)) if genre_name else None)
            )  # fmt: skip
            by_source = {src: Pool.concat(src, ps) for src, ps in pools.items()}
            bad = ctx.disliked | ctx.seen if req.exclude_seen else ctx.disliked
            banned = look.keys(list(bad)) if bad else None
            head = blend_rows(
                list(by_source.values()), _weights(weights, by_source), look.tie_rank,
                banned=banned, limit=cfg.mmr_pool * 3,
            )  # fmt: skip
            diversity = float(vc.get("diversity", ctx.diversity if personal else 0.0))
            # metadata and embeddings come from the in-memory catalog; only items it does not
            # hold yet (new since its last refresh) cost a query
            anchors = head.anchors[head.anchors >= 0]
            await fetch_missing(conn, np.concatenate([head.keys, anchors]) if len(anchors) else head.keys)
            # the steps below reorder rows of ``head``: they carry the row numbers (``sel``) and
            # the keys and scores they need, and the other columns are taken once, at the end
            sel = np.flatnonzero(look.accepts(head.keys, req.filters))[: cfg.mmr_pool]
            keys, scores = head.keys[sel], head.scores[sel]
            novelty_pref = float(vc.get("novelty", ctx.novelty if personal else 0.0))
            if novelty_pref > 0 and cfg.novelty_max_boost > 0 and len(sel):
                scores = scores + novelty_boost(look.popularity_of(keys), novelty_pref, cfg.novelty_max_boost)
                order = np.lexsort((look.tie_rank(keys), -scores))
                sel, keys, scores = sel[order], keys[order], scores[order]
            if diversity > 0 and len(sel) > req.k:
                pick = np.asarray(mmr_order(scores, look.unit_of(keys), req.k, diversity), dtype=np.int64)
                sel, scores = sel[pick], scores[pick]
            served = head.take(sel[: req.k])
            served.scores = scores[: req.k]
            items = served.scored(look.item_id)
            titles = _titles(look, served)
    except _Degrade as d:
        log.warning("degraded list for %s: %r", req.user_id, d.__cause__)
        return await _fallback(svc, req, ctx), False
    except Exception as exc:  # pool timeout, connection refused, slow popular query
        log.warning("degraded list for %s: %r", req.user_id, exc)
        return await _fallback(svc, req, ctx), False

    return _payload(items, titles, cold_start, degraded, model_version), not degraded


class _Degrade(Exception):
    """A personalised source failed: answer from the fallback path instead."""


def _fkey(f: cands.ItemFilters) -> str:
    return filter_digest(f.as_dict())


def _weights(weights: Mapping[str, float], by_source: Mapping[str, Any]) -> dict[str, float]:
    """Popular only fills in: with personal sources present it keeps its configured weight,
    alone it ranks by itself (weight 1)."""
    w = {s: float(weights.get(s, 0.0)) for s in by_source}
    if set(by_source) <= {"popular"}:
        w["popular"] = 1.0
    return w


def _same(value: Any, n: int) -> np.ndarray:
    out = np.empty(n, dtype=object)
    out[:] = [value] * n
    return out


#: id(popular list) -> (the list, the snapshot, its keys, its scores): a popular list is shared by
#: every request for 30 s, so its ids map to catalog rows once per (list, snapshot)
_POPULAR_KEYS: dict[int, tuple[list[Candidate], Any, np.ndarray, np.ndarray]] = {}


def _popular_keys(look: Lookup, pop: list[Candidate]) -> tuple[np.ndarray, np.ndarray]:
    hit = _POPULAR_KEYS.get(id(pop))
    if hit is not None and hit[0] is pop and hit[1] is look.snap:
        return hit[2], hit[3]
    keys = look.keys([c.item_id for c in pop])
    scores = np.asarray([c.score for c in pop], dtype=np.float64)
    if (keys < len(look.snap)).all():  # keys of ids outside the snapshot belong to this request only
        if len(_POPULAR_KEYS) >= 256:
            _POPULAR_KEYS.clear()
        _POPULAR_KEYS[id(pop)] = (pop, look.snap, keys, scores)
    return keys, scores


def _als_pool(look: Lookup, ctx: cands.UserContext, factors: ItemFactors, n: int) -> Pool:
    """The user's top ``n`` items by ALS score, as catalog keys, each anchored on the recent item
    whose factors are closest ('because you watched X')."""
    assert ctx.als_factors is not None
    all_scores = factors.scores(ctx.als_factors)
    if all_scores is None:
        return Pool("realtime", np.zeros(0, np.int64), np.zeros(0))
    rows, scores = top_scores(all_scores, n)
    keys = factors.catalog_rows(look.snap)[rows]
    for i in np.flatnonzero(keys < 0).tolist():  # not in the catalog (yet): a key of its own
        keys[i] = look.key(str(factors.item_ids[rows[i]]))
    anchors = None
    known = [(r, row) for r in ctx.recent if (row := factors.index.get(r)) is not None]
    if known and len(rows):
        mat = factors.factors[[row for _, row in known]]
        mat = mat / np.maximum(np.linalg.norm(mat, axis=1, keepdims=True), 1e-9)
        # one (candidates x recent) product instead of a mat-vec per candidate
        best = (factors.factors[rows] @ mat.T).argmax(axis=1)
        anchors = np.asarray([look.key(r) for r, _ in known], dtype=np.int64)[best]
    return Pool("realtime", keys, scores, anchors)


def _ann_pool(look: Lookup, ctx: cands.UserContext, keys: np.ndarray) -> Pool:
    """The taste vector's nearest items with their cosine similarity, from the catalog's unit
    rows (float16: within ~1e-3 of Postgres' float32 cosine; the ANN query no longer reads the
    embeddings), anchored on the most recent item."""
    assert ctx.preference_vector is not None
    v = ctx.preference_vector.astype(np.float32)
    unit = look.unit_of(keys)
    norm = float(np.linalg.norm(v))
    sims = (
        (unit @ (v / norm)).astype(np.float64)
        if norm > 0 and unit.shape[1] == len(v)
        else np.zeros(len(keys))
    )
    anchor = look.key(ctx.recent[0]) if ctx.recent else -1
    return Pool("realtime", keys, sims, np.full(len(keys), anchor, dtype=np.int64))


def _titles(look: Lookup, served: Blended) -> dict[str, str]:
    """Titles of the served items and of their anchors (for the payload), looked up by key."""
    want = set(served.keys.tolist()) | {a for a in served.anchors.tolist() if a >= 0}
    return {look.item_id(k): t for k in want if (t := look.title_of(k)) is not None}


def _payload(
    items: list[Scored],
    titles: Mapping[str, str],
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
        anchor = titles.get(s.anchor) if s.anchor else None
        out.append(
            {
                "item_id": s.item_id,
                "title": titles.get(s.item_id),
                "score": round(s.score, 6),
                "source": s.source,
                "explanation": explain(
                    s.source,
                    anchor_title=anchor,
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
    return _payload(items[: req.k], {i: m.title for i, m in meta.items()}, False, True, None)
