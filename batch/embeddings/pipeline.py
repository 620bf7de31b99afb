"""``lambdarec catalog embed``: (re-)embed exactly the items whose vector is missing or stale.

An item needs embedding when it has no vector, when its ``content_hash`` differs from
``embedding_content_hash`` (its text changed since it was embedded), or when ``embedding_model``
is not the current provider's :attr:`model_id` (vectors of two models are not comparable). So a
re-run after an unchanged re-import embeds nothing, and a changed title re-embeds one item.

Batches are committed one by one: the work is idempotent, so an interrupted run resumes where it
stopped. Each write is guarded by the content hash the text was read with; an item edited while it
was being embedded keeps its new hash and is simply picked up by the next run.

Bulk mode (first load, refit, model change: most of the catalog pending): maintaining the HNSW
index row by row costs several milliseconds per 768-d vector, while building it once after the
load is 3-4x cheaper (pgvector's own advice). So the HNSW index is dropped, every vector written
and the index re-created from its exact stored definition, all in ONE transaction: a failure rolls
back to the old vectors *and* the old index. The price is that ``items`` is locked for the
duration, so bulk mode is for loads, not for a live catalog's trickle of edits.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

from batch.catalog.model import embedding_text
from batch.embeddings import get_provider, model_path
from batch.embeddings.base import EmbeddingProvider, FittedProvider, is_fittable

#: One row of _TEXT_SQL: item_id, content_hash, title, original_title, tagline, overview, tags, genres.
Row = tuple[Any, ...]

#: Bulk mode when at least this many items and this share of the catalog are pending.
BULK_MIN_ITEMS = 5000
BULK_SHARE = 0.5

_TEXT_SQL = """
SELECT i.item_id, i.content_hash, i.title, i.original_title, i.tagline, i.overview, i.tags,
       COALESCE(array_agg(g.name ORDER BY g.name) FILTER (WHERE g.name IS NOT NULL), ARRAY[]::text[])
           AS genres
FROM items i
LEFT JOIN item_genres ig ON ig.item_id = i.item_id
LEFT JOIN genres g ON g.genre_id = ig.genre_id
{where}
GROUP BY i.item_id
ORDER BY i.item_id
"""


@dataclass
class EmbedStats:
    """What a run did: how many items were stale, embedded, and whether the model was (re)fitted."""

    provider: str
    model_id: str
    pending: int = 0
    embedded: int = 0
    raced: int = 0
    fitted: bool = False
    fit_seconds: float = 0.0
    embed_seconds: float = 0.0
    bulk: bool = False
    index_seconds: float = 0.0

    @property
    def items_per_sec(self) -> float:
        return self.embedded / self.embed_seconds if self.embed_seconds else 0.0


def _texts(rows: Sequence[Row]) -> list[str]:
    return [embedding_text(r[2], r[3], r[4], r[5], list(r[7]), list(r[6] or [])) for r in rows]


def _iter_rows(
    conn: psycopg.Connection, where: str, params: Sequence[object], size: int
) -> Iterator[list[Row]]:
    with conn.cursor(name="embed_text_cursor") as cur:
        cur.itersize = size
        cur.execute(_TEXT_SQL.format(where=where), params)
        while rows := cur.fetchmany(size):
            yield rows


def fit_on_catalog(conn: psycopg.Connection, provider: FittedProvider) -> int:
    """Fit a learning provider on every item's text. Returns the number of items."""
    texts: list[str] = []
    for rows in _iter_rows(conn, "", (), 10_000):
        texts.extend(_texts(rows))
    conn.commit()
    if not texts:
        raise ValueError("the catalog is empty: import items first (lambdarec catalog import)")
    provider.fit(texts)
    return len(texts)


def pending_count(conn: psycopg.Connection, model_id: str) -> int:
    """Items whose embedding is missing or stale for ``model_id``."""
    row = conn.execute(
        """SELECT count(*) FROM items WHERE embedding IS NULL
               OR embedding_content_hash IS DISTINCT FROM content_hash
               OR embedding_model IS DISTINCT FROM %s""",
        (model_id,),
    ).fetchone()
    conn.commit()
    return int(row[0]) if row else 0


def write_vectors(
    conn: psycopg.Connection,
    ids: Sequence[str],
    hashes: Sequence[str | None],
    vectors: np.ndarray,
    model_id: str,
) -> int:
    """Store vectors (binary COPY into a temp table, one UPDATE), guarded by content hash. Commits."""
    with conn.transaction(), conn.cursor() as cur:
        # (DROP first: inside a caller's open transaction this block is a savepoint, ON COMMIT
        # DROP has not fired yet, and the previous batch's table would still be there.)
        cur.execute("DROP TABLE IF EXISTS pg_temp.embed_stage")
        cur.execute(
            "CREATE TEMP TABLE embed_stage (item_id text, content_hash text, embedding vector) ON COMMIT DROP"
        )
        with cur.copy(
            "COPY embed_stage (item_id, content_hash, embedding) FROM STDIN WITH (FORMAT BINARY)"
        ) as cp:
            cp.set_types(["text", "text", "vector"])
            for iid, h, v in zip(ids, hashes, vectors, strict=True):
                cp.write_row((iid, h, v))
        cur.execute(
            """UPDATE items i SET embedding = s.embedding, embedding_model = %s,
                      embedding_content_hash = s.content_hash, embedded_at = now()
               FROM embed_stage s
               WHERE i.item_id = s.item_id AND i.content_hash IS NOT DISTINCT FROM s.content_hash""",
            (model_id,),
        )
        return cur.rowcount


def embed_catalog(
    conn: psycopg.Connection,
    *,
    provider_name: str,
    dim: int,
    models_dir: Path,
    refit: bool = False,
    batch_size: int = 512,
    rebuild_index: str = "auto",
    provider: EmbeddingProvider | None = None,
    on_total: Callable[[int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> EmbedStats:
    """Embed new or changed items with the named provider; see the module docstring.

    ``rebuild_index``: ``auto`` switches to bulk mode when at least :data:`BULK_MIN_ITEMS` items
    and :data:`BULK_SHARE` of the catalog are pending (first load, refit, model change);
    ``always``/``never`` force it on/off.
    """
    if rebuild_index not in ("auto", "always", "never"):
        raise ValueError(f"rebuild_index must be auto, always or never, not {rebuild_index!r}")
    register_vector(conn)
    prov = provider or get_provider(provider_name, dim, models_dir)
    fitted = False
    fit_s = 0.0
    if is_fittable(prov) and (refit or not prov.is_fitted):
        t = time.perf_counter()
        fit_on_catalog(conn, prov)
        prov.save(model_path(models_dir, prov.name, dim))
        fitted, fit_s = True, time.perf_counter() - t
    stats = EmbedStats(provider=prov.name, model_id=prov.model_id, fitted=fitted, fit_seconds=fit_s)
    stats.pending = pending_count(conn, prov.model_id)
    if on_total:
        on_total(stats.pending)
    if not stats.pending:
        return stats

    # Read the pending ids first (a named cursor cannot stay open across the per-batch commits).
    where = """WHERE i.embedding IS NULL OR i.embedding_content_hash IS DISTINCT FROM i.content_hash
                     OR i.embedding_model IS DISTINCT FROM %s"""
    rows_all: list[Row] = []
    for rows in _iter_rows(conn, where, (prov.model_id,), 10_000):
        rows_all.extend(rows)
    total = conn.execute("SELECT count(*) FROM items").fetchone()[0]  # type: ignore[index]
    conn.commit()
    stats.bulk = rebuild_index == "always" or (
        rebuild_index == "auto" and stats.pending >= max(BULK_MIN_ITEMS, BULK_SHARE * total)
    )
    t0 = time.perf_counter()
    if stats.bulk:
        with conn.transaction():
            defs = hnsw_indexes(conn)
            for name, _ in defs:
                conn.execute(f"DROP INDEX {name}")
            _embed_rows(conn, prov, rows_all, dim, batch_size, stats, on_progress)
            t1 = time.perf_counter()
            conn.execute("SET LOCAL maintenance_work_mem = '1GB'")
            for _, ddl in defs:
                conn.execute(ddl)
            stats.index_seconds = time.perf_counter() - t1
    else:
        _embed_rows(conn, prov, rows_all, dim, batch_size, stats, on_progress)
    stats.embed_seconds = time.perf_counter() - t0
    return stats


def _embed_rows(
    conn: psycopg.Connection,
    prov: EmbeddingProvider,
    rows_all: Sequence[Row],
    dim: int,
    batch_size: int,
    stats: EmbedStats,
    on_progress: Callable[[int], None] | None,
) -> None:
    for s in range(0, len(rows_all), batch_size):
        rows = rows_all[s : s + batch_size]
        vecs = prov.embed(_texts(rows))
        if vecs.shape != (len(rows), dim):
            raise ValueError(f"provider {prov.name} returned {vecs.shape}, expected ({len(rows)}, {dim})")
        done = write_vectors(conn, [r[0] for r in rows], [r[1] for r in rows], vecs, prov.model_id)
        stats.embedded += done
        stats.raced += len(rows) - done
        if on_progress:
            on_progress(len(rows))


def hnsw_indexes(conn: psycopg.Connection) -> list[tuple[str, str]]:
    """(qualified name, CREATE INDEX statement) of every HNSW index on the ``items`` table in use."""
    return [
        (f"{r[0]}.{r[1]}", r[2])
        for r in conn.execute(
            """SELECT schemaname, indexname, indexdef FROM pg_indexes
               WHERE tablename = 'items' AND indexdef ILIKE '%%USING hnsw%%'
                 AND schemaname = (SELECT n.nspname FROM pg_class c
                                   JOIN pg_namespace n ON n.oid = c.relnamespace
                                   WHERE c.oid = 'items'::regclass)"""
        ).fetchall()
    ]


def similar_items(
    conn: psycopg.Connection, item_id: str, k: int = 10, ef_search: int = 100
) -> list[tuple[str, str, float]]:
    """The k items most similar to ``item_id`` by cosine (HNSW), as (item_id, title, similarity)."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(max(ef_search, k)),))
        cur.execute(
            """SELECT i.item_id, i.title, 1 - (i.embedding <=> q.embedding) AS sim
               FROM items i, (SELECT embedding FROM items WHERE item_id = %s) q
               WHERE i.item_id <> %s AND i.embedding IS NOT NULL
               ORDER BY i.embedding <=> q.embedding
               LIMIT %s""",
            (item_id, item_id, k),
        )
        return [(r[0], r[1], float(r[2])) for r in cur.fetchall()]
