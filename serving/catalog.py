"""The item catalog in memory: what ranking needs to know about every item, as numpy arrays.

Why: an uncached list used to fetch title, year, popularity, genres and the 768-d embeddings of
its ~180 candidates from Postgres (the costliest query of the path: ~3 ms of Postgres and the
parse of ~60 embeddings per list). Filters, novelty and MMR only need a few numbers per item, so
every API worker holds them for the whole catalog (60k items: ~95 MB, nearly all of it the
embeddings as unit-length float16, whose cosines differ from float32 ones by ~1e-3) and runs
them as array operations over candidate rows.

Freshness (``serving.catalog_refresh_sec``, ``serving.catalog_full_refresh_sec``):

* a candidate the catalog does not know (an item inserted since the last refresh, or any item
  before the first load finished) is fetched from Postgres with its list and kept in a small
  overlay, so new items are served at once, exactly as before the catalog existed;
* every ``catalog_refresh_sec`` (5 s) the rows whose ``items.updated_at`` (a trigger keeps it
  honest on every UPDATE) moved since the previous refresh began, minus 5 s for late commits, are
  re-read, and the catalog is rebuilt when the item count says something was deleted; so title,
  year, popularity, embedding changes and deletions show within ~5-10 s;
* every ``catalog_full_refresh_sec`` (300 s) everything is re-read: changes that do not touch
  ``items`` (an ``item_genres`` edit, a transaction that committed long after its ``now()``) show
  within that bound.

A snapshot is immutable: a refresh builds a new one (in a thread) and swaps the reference, so a
request that awaits between two lookups never sees half an update.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from itertools import repeat
from typing import Any

import numpy as np
from psycopg import AsyncConnection

from serving.background import BackgroundTask, every
from serving.candidates import ItemFilters, ItemMeta, item_meta_and_vectors

log = logging.getLogger(__name__)

#: rows per keyset page of a load: psycopg parses a page (768-d vectors, a numpy array each) on the
#: event loop, so a page is a stall for the requests in flight; 5,000 rows made the loop lag p99
#: 15 ms during a full load (every catalog_full_refresh_sec), 1,000 rows 5-8 ms, 250 rows 3.8 ms (and a
#: full load ran faster)
_CHUNK = 250
#: an updated_at can be older than its commit (now() is the transaction's start): re-read a margin
_MARGIN = timedelta(seconds=5)
_OVERLAY_MAX = 20_000


@dataclass(frozen=True)
class Snapshot:
    """Row ``r`` of every array describes ``item_ids[r]``; ``index`` maps id -> row."""

    item_ids: list[str]
    index: dict[str, int]
    titles: list[str]
    years: np.ndarray  # int32, -1 when unknown
    popularity: np.ndarray  # float64
    genre_slugs: list[str]  # column j of ``genres``
    genre_col: dict[str, int]
    genres: np.ndarray  # (n, G) bool
    vectors: np.ndarray  # (n, dim) float16, unit length; zero rows for items without one
    has_vector: np.ndarray  # bool

    @classmethod
    def empty(cls) -> Snapshot:
        return cls([], {}, [], np.zeros(0, np.int32), np.zeros(0), [], {}, np.zeros((0, 0), bool),
                   np.zeros((0, 0), np.float16), np.zeros(0, bool))  # fmt: skip

    def __len__(self) -> int:
        return len(self.item_ids)

    @cached_property
    def id_rank(self) -> np.ndarray:
        """Rank of each row's id in id order: ranking breaks score ties by id with an integer
        compare (computed in the refresh thread, see :func:`_build`)."""
        rank = np.empty(len(self.item_ids), dtype=np.int64)
        rank[np.argsort(np.asarray(self.item_ids, dtype=object), kind="stable")] = np.arange(len(rank))
        return rank

    def rows(self, item_ids: Sequence[str]) -> np.ndarray:
        """Row of each id, -1 where the snapshot does not hold it."""
        # map() over dict.get: no Python frame per id (a generator costs ~1.5x as much)
        return np.fromiter(map(self.index.get, item_ids, repeat(-1)), dtype=np.int64, count=len(item_ids))

    def accepts(self, rows: np.ndarray, filters: ItemFilters) -> np.ndarray:
        """:meth:`ItemFilters.accepts` for known ``rows`` (all >= 0), as one boolean mask."""
        ok = np.ones(len(rows), dtype=bool)
        if filters.genre:
            col = self.genre_col.get(filters.genre)
            ok &= self.genres[rows, col] if col is not None else False
        if filters.year_from is not None:
            y = self.years[rows]
            ok &= (y >= 0) & (y >= filters.year_from)
        if filters.year_to is not None:
            y = self.years[rows]
            ok &= (y >= 0) & (y <= filters.year_to)
        return ok

    def meta(self, row: int) -> ItemMeta:
        y = int(self.years[row])
        slugs = [self.genre_slugs[j] for j in np.flatnonzero(self.genres[row])]
        return ItemMeta(self.item_ids[row], self.titles[row], None if y < 0 else y,
                        float(self.popularity[row]), slugs)  # fmt: skip


#: 2**112: moves a float16 exponent (bias 15) shifted into float32's exponent field to bias 127
_F16_SCALE = np.float32(2.0**112)
#: sign bit and the 15 low bits of a float16 sign-extended to int32 and shifted left by 13
_F16_BITS = np.int32(-0x70002000)  # 0x8FFFE000


def widen(vectors: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``vectors[rows].astype(np.float32)`` for finite float16 ``vectors``, bit for bit, ~4x as
    fast.

    Why: numpy converts float16 one element at a time in software (~1.7 ns per value on the
    API's CPUs, ~135 us per 100 x 768 block: an eighth of an uncached list), while three
    integer/float passes over the block run vectorised. The float16 bits, sign-extended and
    shifted left by 13, land sign, exponent and mantissa in their float32 places (the sign
    extension's spare ones are masked off); multiplying by 2**112 rebiases the exponent and
    turns float16 subnormals into the right normal float32s. Infinities and NaNs would come out
    as large finite numbers: the catalog's rows are unit length, so it has none."""
    if vectors.dtype != np.float16:  # (a hand-made snapshot in a test)
        return vectors[rows].astype(np.float32)
    out = np.left_shift(vectors.view(np.int16)[rows], 13, dtype=np.int32)
    out &= _F16_BITS
    f = out.view(np.float32)
    f *= _F16_SCALE
    return f


@dataclass(slots=True)
class _Extra:
    """An item fetched on demand (not in the snapshot yet), or a known-missing id (meta None)."""

    expires: float
    meta: ItemMeta | None
    vector: np.ndarray | None  # unit length, float32


class Lookup:
    """The items of one list: snapshot rows where possible, on-demand extras for the rest.

    It is also the list's key space: ranking works on integer *keys*, the snapshot row of an
    item it holds and ``len(snapshot) + j`` for the ``j``-th other id met (an item fetched on
    demand, or one unknown to the catalog), so every step runs on arrays and an id is a string
    again only for the items served."""

    def __init__(self, snap: Snapshot, extras: dict[str, _Extra]) -> None:
        self.snap = snap
        self._extras = extras
        self._n = len(snap)
        self._other: list[str] = []  # ids of keys n, n+1, ...
        self._other_key: dict[str, int] = {}
        #: overlay entries this list relies on, held here: see :meth:`Catalog.fetch`
        self._pinned: dict[str, _Extra] = {}

    def _extra(self, item_id: str) -> _Extra | None:
        e = self._pinned.get(item_id)
        return e if e is not None else self._extras.get(item_id)

    def pin(self, item_id: str, extra: _Extra) -> None:
        self._pinned[item_id] = extra

    # -- keys ----------------------------------------------------------------------------
    def key(self, item_id: str) -> int:
        row = self.snap.index.get(item_id)
        if row is not None:
            return row
        key = self._other_key.get(item_id)
        if key is None:
            key = self._other_key[item_id] = self._n + len(self._other)
            self._other.append(item_id)
        return key

    def keys(self, item_ids: Sequence[str]) -> np.ndarray:
        """Key of each id (int64)."""
        keys = self.snap.rows(item_ids)
        for i in np.flatnonzero(keys < 0).tolist():
            keys[i] = self.key(item_ids[i])
        return keys

    def item_id(self, key: int) -> str:
        return self.snap.item_ids[key] if key < self._n else self._other[key - self._n]

    def tie_rank(self, keys: np.ndarray) -> np.ndarray:
        """Ranks that order ``keys`` as their ids sort (for score ties)."""
        if not self._other or not (keys >= self._n).any():
            return self.snap.id_rank[keys]
        ids = np.asarray([self.item_id(k) for k in keys.tolist()], dtype=object)
        return np.argsort(np.argsort(ids, kind="stable"), kind="stable")

    def missing(self, keys: np.ndarray) -> list[str]:
        """Ids of ``keys`` that are neither in the snapshot nor fetched and still fresh (what
        :meth:`Catalog.fetch` must query); the fresh fetched ones are pinned."""
        now = time.monotonic()
        out = []
        for k in keys[keys >= self._n].tolist():
            item_id = self._other[k - self._n]
            e = self._extra(item_id)
            if e is None or e.expires < now:
                out.append(item_id)
            else:
                self._pinned[item_id] = e
        return out

    def title_of(self, key: int) -> str | None:
        """:meth:`title` by key: a snapshot row is a list index, no id lookup."""
        if key < self._n:
            return self.snap.titles[key]
        e = self._extra(self._other[key - self._n])
        return None if e is None or e.meta is None else e.meta.title

    def meta_of(self, key: int) -> ItemMeta | None:
        if key < self._n:
            return self.snap.meta(key)
        e = self._extra(self._other[key - self._n])
        return None if e is None else e.meta

    def accepts(self, keys: np.ndarray, filters: ItemFilters) -> np.ndarray:
        """Known and accepted by ``filters``, per key."""
        inside = keys < self._n
        if inside.all():
            return self.snap.accepts(keys, filters)
        ok = np.zeros(len(keys), dtype=bool)
        ok[inside] = self.snap.accepts(keys[inside], filters)
        for i in np.flatnonzero(~inside).tolist():
            m = self.meta_of(int(keys[i]))
            ok[i] = m is not None and filters.accepts(m)
        return ok

    def popularity_of(self, keys: np.ndarray) -> np.ndarray:
        inside = keys < self._n
        if inside.all():
            return self.snap.popularity[keys]
        out = np.zeros(len(keys))
        out[inside] = self.snap.popularity[keys[inside]]
        for i in np.flatnonzero(~inside).tolist():
            m = self.meta_of(int(keys[i]))
            out[i] = m.popularity if m is not None else 0.0
        return out

    def unit_of(self, keys: np.ndarray) -> np.ndarray:
        """(len(keys), dim) float32 unit rows; zero rows for items without an embedding."""
        dim = self.snap.vectors.shape[1] if self._n else 0
        if not dim:
            extras = (*self._pinned.values(), *self._extras.values())
            dim = next((len(e.vector) for e in extras if e.vector is not None), 0)
        inside = keys < self._n
        if dim and inside.all() and self.snap.vectors.shape[1] == dim:
            return widen(self.snap.vectors, keys)
        out = np.zeros((len(keys), max(dim, 1)), dtype=np.float32)
        if inside.any() and self.snap.vectors.shape[1] == dim:
            out[inside] = widen(self.snap.vectors, keys[inside])
        for i in np.flatnonzero(~inside).tolist():
            e = self._extra(self._other[int(keys[i]) - self._n])
            if e is not None and e.vector is not None and len(e.vector) == dim:
                out[i] = e.vector
        return out

    # -- by id ---------------------------------------------------------------------------
    def meta(self, item_id: str) -> ItemMeta | None:
        """The item's metadata, None when neither the snapshot nor a fetch knows it."""
        return self.meta_of(self.key(item_id))


class Catalog:
    """The current :class:`Snapshot` of one API process, refreshed in the background."""

    def __init__(
        self,
        refresh_sec: float = 5.0,
        full_refresh_sec: float = 300.0,
        margin: timedelta = _MARGIN,
        dim: int = 0,
    ) -> None:
        self.snapshot = Snapshot.empty()
        self.dim = dim  # of items.embedding (0: from the first embedding read)
        self.margin = margin
        self.refresh_sec = refresh_sec
        self.full_refresh_sec = full_refresh_sec
        self.loaded_at: float | None = None  # monotonic time of the last full load
        self._watermark: datetime | None = None  # re-read rows updated after this (DB clock)
        self._extras: dict[str, _Extra] = {}
        self._task = BackgroundTask("item-catalog")

    # -- per request ---------------------------------------------------------------------
    def view(self) -> Lookup:
        """A :class:`Lookup` over the current snapshot and what was fetched on demand so far (no
        query); ids it lacks (:meth:`Lookup.missing`) are fetched with :meth:`fetch`."""
        return Lookup(self.snapshot, self._extras)

    async def lookup(self, conn: AsyncConnection, item_ids: Iterable[str]) -> Lookup:
        """A :class:`Lookup` over ``item_ids``; ids neither in the snapshot nor already fetched
        are fetched now in one query (time-boxed by the caller), so a new item is never missed."""
        look = self.view()
        await self.fetch(conn, look, look.missing(look.keys(list(item_ids))))
        return look

    async def fetch(self, conn: AsyncConnection, look: Lookup, item_ids: list[str]) -> None:
        """Fetch ``item_ids`` (from :meth:`Lookup.missing`) in one query and pin them in ``look``.

        Pinned, because the shared overlay is not stable across an await: a full load that lands
        meanwhile drops the entries its snapshot now holds, and ``look`` keeps the older one."""
        if not item_ids:
            return
        unknown = list(dict.fromkeys(item_ids))
        meta, vectors = await item_meta_and_vectors(conn, unknown, unknown)
        if len(self._extras) + len(unknown) > _OVERLAY_MAX:
            self._extras.clear()
        expires = time.monotonic() + self.refresh_sec
        for i in unknown:
            v = vectors.get(i)
            if v is not None:
                n = float(np.linalg.norm(v))
                v = (v / n).astype(np.float32) if n > 0 else None
            e = self._extras[i] = _Extra(expires, meta.get(i), v)
            look.pin(i, e)

    # -- background ----------------------------------------------------------------------
    async def load(self, pool: Any) -> None:
        """Read the whole catalog (keyset pages of ``_CHUNK`` rows) and swap it in."""
        start = await self._db_now(pool)
        rows = await self._fetch(pool, since=None, dim=self.dim)
        self.snapshot = await asyncio.to_thread(_build, rows)
        del rows
        gc.freeze()  # 60k ids and titles are long-lived: keep full collections from walking them
        self.loaded_at = time.monotonic()
        self._watermark = start - self.margin
        self._drop_extras_in(self.snapshot)
        log.info("item catalog: %d items loaded", len(self.snapshot))

    async def refresh(self, pool: Any) -> int:
        """Apply the rows whose ``updated_at`` moved since the previous refresh began (minus a
        margin for late commits); a full reload when the item count says something was deleted.
        Returns the number of rows applied.

        The watermark is the database clock when the previous refresh began, not the newest
        ``updated_at`` seen: a bulk load stamps 60k rows with one ``now()``, and a margin behind
        the newest stamp would re-read all of them at every refresh."""
        snap = self.snapshot
        if self.loaded_at is None or self._watermark is None:
            await self.load(pool)
            return len(self.snapshot)
        start = await self._db_now(pool)
        async with pool.connection(timeout=5) as conn:
            row = await (await conn.execute("SELECT count(*) FROM items")).fetchone()
        dim = snap.vectors.shape[1] if len(snap) else self.dim
        rows = await self._fetch(pool, since=self._watermark, dim=dim)
        new_ids = sum(1 for r in rows.meta if r[0] not in snap.index)
        # a deletion (or a race), or the first embeddings of a catalog that had none: rebuild
        if int(row[0]) != len(snap) + new_ids or rows.dim != dim:
            await self.load(pool)
            return len(self.snapshot)
        if rows:
            self.snapshot = await asyncio.to_thread(_apply, snap, rows)
            self._drop_extras_in(self.snapshot)
        self._watermark = start - self.margin
        return len(rows)

    @staticmethod
    async def _db_now(pool: Any) -> datetime:
        async with pool.connection(timeout=5) as conn:
            row = await (await conn.execute("SELECT now()")).fetchone()
        return row[0]

    def _drop_extras_in(self, snap: Snapshot) -> None:
        for i in [i for i in self._extras if i in snap.index]:
            del self._extras[i]

    async def _fetch(self, pool: Any, since: datetime | None, dim: int = 0) -> _Rows:
        """Items (all, or those updated after ``since``) in keyset pages; each page's embeddings
        become unit float16 rows at once, so a full load never holds the catalog as float32
        (60k x 768: 184 MB) next to the per-row arrays psycopg returns."""
        out = _Rows(dim)
        async with pool.connection(timeout=5) as conn:
            genres = await (await conn.execute("SELECT genre_id, slug FROM genres")).fetchall()
            out.genres = {r[0]: r[1] for r in genres}
            after: tuple[Any, ...] = ("",) if since is None else (since, "")
            while True:
                query = _PAGE_SQL if since is None else _CHANGED_PAGE_SQL
                page = await (await conn.execute(query, (*after, _CHUNK), binary=True)).fetchall()
                if page:
                    await asyncio.to_thread(out.add, page)
                if len(page) < _CHUNK:
                    return out
                after = (page[-1][0],) if since is None else (page[-1][6], page[-1][0])

    async def step(self, pool: Any) -> None:
        """A full load when due (or never done), else a refresh of what changed."""
        if self.loaded_at is None or time.monotonic() - self.loaded_at >= self.full_refresh_sec:
            await self.load(pool)
        else:
            await self.refresh(pool)

    async def run(self, pool: Any) -> None:
        """Load, then refresh forever; a failure keeps the current snapshot and retries."""
        await every(self.refresh_sec, lambda: self.step(pool), "item catalog refresh")

    def start(self, pool: Any) -> None:
        self._task.start(lambda: self.run(pool))

    async def stop(self) -> None:
        await self._task.stop()


_COLUMNS = (
    "SELECT i.item_id, i.title, i.release_year, i.popularity_score, "
    "coalesce((SELECT array_agg(ig.genre_id) FROM item_genres ig WHERE ig.item_id = i.item_id), '{}'), "
    "i.embedding, i.updated_at FROM items i "
)
_PAGE_SQL = _COLUMNS + "WHERE i.item_id > %s ORDER BY i.item_id LIMIT %s"
#: the refresh every few seconds, in keyset pages over ``items_updated_at_idx`` (migration 013):
#: an index range scan however the statement is planned. Why not the full load's pages with
#: ``AND updated_at > %s``: ordered by item_id, the planner walked the primary key and filtered
#: every row (~10 ms of Postgres per worker and refresh at 60k items, growing with the catalog)
_CHANGED_PAGE_SQL = (
    _COLUMNS + "WHERE (i.updated_at, i.item_id) > (%s, %s) ORDER BY i.updated_at, i.item_id LIMIT %s"
)


class _Rows:
    """Fetched items: metadata tuples and unit float16 embedding blocks, page by page."""

    def __init__(self, dim: int) -> None:
        self.dim = dim  # 0: taken from the first embedding seen
        self.genres: dict[int, str] = {}
        self.meta: list[tuple[Any, ...]] = []
        self._blocks: list[tuple[int, list[Any]]] = []  # (first row, raw vectors) until dim known
        self._vecs: list[np.ndarray] = []
        self._has: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self.meta)

    def add(self, page: list[Any]) -> None:
        if not self.dim:
            self.dim = next((len(_arr(r[5])) for r in page if r[5] is not None), 0)
        vecs, has = _unit16([r[5] for r in page], self.dim)
        self.meta.extend(r[:5] for r in page)
        self._vecs.append(vecs)
        self._has.append(has)

    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(n, dim) float16 and the has-vector mask; rows of pages before the dimension was known
        (no embedding at all) are zeros."""
        dim = self.dim
        vecs = [v if v.shape[1] == dim else np.zeros((len(v), dim), np.float16) for v in self._vecs]
        if not vecs:
            return np.zeros((0, dim), np.float16), np.zeros(0, bool)
        return np.concatenate(vecs), np.concatenate(self._has)


def _arr(v: Any) -> np.ndarray:
    return v.to_numpy() if hasattr(v, "to_numpy") else np.asarray(v, dtype=np.float32)


def _unit16(vectors: list[Any], dim: int) -> tuple[np.ndarray, np.ndarray]:
    mat = np.zeros((len(vectors), dim), dtype=np.float32)
    has = np.zeros(len(vectors), dtype=bool)
    for r, v in enumerate(vectors):
        if v is None:
            continue
        a = _arr(v)
        if a.shape == (dim,):
            mat[r] = a
            has[r] = True
    norms = np.linalg.norm(mat, axis=1, keepdims=True)
    has &= (norms[:, 0] > 0) & np.isfinite(norms[:, 0])
    mat = np.divide(mat, norms, out=np.zeros_like(mat), where=has[:, None])
    return mat.astype(np.float16), has


def _columns(rows: _Rows, slugs: list[str]) -> dict[str, Any]:
    col = {s: j for j, s in enumerate(slugs)}
    meta = rows.meta
    g = np.zeros((len(meta), len(slugs)), dtype=bool)
    for r, row in enumerate(meta):
        for gid in row[4]:
            j = col.get(rows.genres.get(gid, ""))
            if j is not None:
                g[r, j] = True
    vecs, has = rows.vectors()
    return {
        "ids": [r[0] for r in meta],
        "titles": [r[1] for r in meta],
        "years": np.fromiter((-1 if r[2] is None else r[2] for r in meta), np.int32, len(meta)),
        "pop": np.fromiter((float(r[3] or 0.0) for r in meta), np.float64, len(meta)),
        "genres": g,
        "vecs": vecs,
        "has": has,
    }


def _build(rows: _Rows) -> Snapshot:
    slugs = sorted(set(rows.genres.values()))
    c = _columns(rows, slugs)
    snap = Snapshot(c["ids"], {i: n for n, i in enumerate(c["ids"])}, c["titles"], c["years"], c["pop"],
                    slugs, {s: j for j, s in enumerate(slugs)}, c["genres"], c["vecs"], c["has"])  # fmt: skip
    _ = snap.id_rank  # here, in the refresh thread, not in the first request that ranks
    return snap


def _apply(snap: Snapshot, rows: _Rows) -> Snapshot:
    """``snap`` with ``rows`` replacing the rows of their ids and appending new ids (``rows``
    were fetched with the snapshot's dimension)."""
    slugs = sorted(set(rows.genres.values()) | set(snap.genre_slugs))
    c = _columns(rows, slugs)
    n_new = sum(1 for i in c["ids"] if i not in snap.index)
    n = len(snap) + n_new
    ids, titles, index = list(snap.item_ids), list(snap.titles), dict(snap.index)
    for i in c["ids"]:
        if i not in index:
            index[i] = len(ids)
            ids.append(i)
            titles.append("")
    target = np.asarray([index[i] for i in c["ids"]], dtype=np.int64)
    for i, t in zip(target, c["titles"], strict=True):
        titles[i] = t

    def grow(a: np.ndarray, fill: Any) -> np.ndarray:
        out = np.full((n, *a.shape[1:]), fill, dtype=a.dtype)
        out[: len(a)] = a
        return out

    g = np.zeros((n, len(slugs)), dtype=bool)
    old_cols = [slugs.index(s) for s in snap.genre_slugs]
    if len(snap):
        g[: len(snap), old_cols] = snap.genres
    years, pop = grow(snap.years, -1), grow(snap.popularity, 0.0)
    vecs, has = grow(snap.vectors, 0), grow(snap.has_vector, False)
    years[target], pop[target], g[target], vecs[target], has[target] = (
        c["years"], c["pop"], c["genres"], c["vecs"], c["has"])  # fmt: skip
    out = Snapshot(ids, index, titles, years, pop, slugs, {s: j for j, s in enumerate(slugs)}, g, vecs,
                   has)  # fmt: skip
    _ = out.id_rank  # here, in the refresh thread, not in the first request that ranks
    return out
