"""Exact top-K for every user: blocked score products + a chunk-maximum threshold selection.

Why not Spark's ``ALSModel.recommendForAllUsers``: it shuffles both factor tables, scores blocks in
the JVM and keeps a priority queue per user; for the batch layer's "top 50 for everyone" step the
factors fit in memory on one machine (100k users x 60k items x rank 10 are 6.4 MB of factors), so
one BLAS product per block of users plus a linear-time selection is an order of magnitude
faster (``benchmarks/bench_topk.py`` measures both on the same model).

Memory is bounded by ``memory_mb`` per worker thread: a block of ``B`` users costs ``B * n_items``
float32 scores in one reused buffer plus small selection temporaries (~6 bytes per score in all).
Selection is a chunk-maximum threshold followed by a sort of the few candidates above it (see
:func:`_select_block`), ~10x cheaper than ``np.argpartition`` on whole rows.

Ties are broken deterministically and identically to a stable descending sort (higher score first,
then the lower item index), so results do not depend on block size or thread count and equal the
brute-force ``np.argsort(-scores, kind="stable")[:k]``. Excluded (seen) items are never returned;
when a user has fewer than ``k`` candidates the row is padded with item ``-1`` and score ``-inf``.

>>> import numpy as np
>>> u = np.array([[1.0, 0.0]], dtype=np.float32); v = np.eye(2, dtype=np.float32)
>>> topk_factors(u, v, k=1)[0].tolist()
[[0]]
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

ScoreFn = Callable[[int, int], np.ndarray]
"""``score(start, stop) -> float32 array (stop - start, n_items)`` for the rows ``start:stop``."""

_BYTES_PER_SCORE = 6  # float32 score + chunk maxima + the gathered candidates (see _select_block)


def chunk_size(n_items: int, k: int) -> int:
    """Items per chunk for :func:`_select_block`: balances partitioning ``n_items / c`` chunk
    maxima against gathering ``k * c`` candidates, so about ``sqrt(n_items / k)`` (measured best
    at 60k items, k = 50: c = 24..32); at least ``k`` chunks are needed for the threshold argument."""
    return int(max(1, min(round(np.sqrt(n_items / k)), n_items // max(k, 1))))


def block_rows(n_items: int, memory_mb: float, *, n_rows: int) -> int:
    """How many rows of scores fit in ``memory_mb`` (at least 1, at most ``n_rows``)."""
    rows = int(memory_mb * 1024 * 1024 // max(1, n_items * _BYTES_PER_SCORE))
    return max(1, min(n_rows, rows))


def _mask_seen(scores: np.ndarray, exclude: sp.csr_matrix, start: int, stop: int) -> None:
    """Set the scores of excluded items of rows ``start:stop`` to -inf, in place."""
    indptr = exclude.indptr
    lo, hi = indptr[start], indptr[stop]
    if hi == lo:
        return
    cols = exclude.indices[lo:hi]
    rows = np.repeat(np.arange(stop - start), np.diff(indptr[start : stop + 1]))
    scores[rows, cols] = -np.inf


def _select_block(scores: np.ndarray, k: int, c: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` of each row of ``scores`` (width a multiple of ``c``), ties by lower index.

    Why not ``np.argpartition`` on whole rows: introselect costs ~15 ns per score, which made
    selection 90 % of the runtime. Instead the row is cut into ``n / c`` interleaved chunks
    (chunk ``j`` = columns ``j, j + n/c, j + 2n/c, ...``, so the chunk maxima are one vectorised
    ``max`` over contiguous rows). Let ``t`` be the ``k``-th largest chunk maximum: those ``k``
    maxima are ``k`` scores ``>= t``, so every top-``k`` score is ``>= t``, and every score
    ``>= t`` lies in a chunk whose maximum is ``>= t``. The candidates ``{score >= t}`` — usually a
    little over ``k`` per row, gathered from the few chunks with maximum ``>= t`` — therefore
    contain the exact top-``k`` *including every tie*, and one lexsort by (row, -score, index)
    over them gives the same answer as a stable full sort, whatever the block or thread layout.
    """
    n_rows, n = scores.shape
    nc = n // c
    chunk_max = scores.reshape(n_rows, c, nc).max(axis=1)
    kk = min(k, nc)
    t = np.partition(chunk_max, nc - kk, axis=1)[:, nc - kk]
    sel_r, sel_c = np.nonzero(chunk_max >= t[:, None])
    pos = sel_c[:, None] + nc * np.arange(c)
    vals = scores[sel_r[:, None], pos]
    keep = vals >= t[sel_r][:, None]
    rows = np.broadcast_to(sel_r[:, None], pos.shape)[keep]
    pos, vals = pos[keep], vals[keep]
    order = np.lexsort((pos, -vals, rows))
    rows, pos, vals = rows[order], pos[order], vals[order]
    counts = np.bincount(rows, minlength=n_rows)
    rank = np.arange(rows.size) - (np.cumsum(counts) - counts)[rows]
    take = rank < k
    idx = np.full((n_rows, k), -1, dtype=np.int32)
    top = np.full((n_rows, k), -np.inf, dtype=np.float32)
    idx[rows[take], rank[take]] = pos[take]
    top[rows[take], rank[take]] = vals[take]
    idx[np.isneginf(top)] = -1
    return idx, top


def topk_blocked(
    score: ScoreFn,
    n_rows: int,
    n_items: int,
    k: int,
    *,
    exclude: sp.csr_matrix | None = None,
    memory_mb: float = 64,
    n_threads: int = 1,
    _score_into: Callable[[int, int, np.ndarray], None] | None = None,  # writes a padded block
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` item indices and scores of every row, from any row-block scoring function.

    ``exclude`` is a CSR matrix of shape ``(n_rows, n_items)`` whose non-zeros are never
    recommended (items seen in training). ``n_threads > 1`` scores blocks concurrently with BLAS
    limited to one thread each (products and numpy reductions release the GIL). Each thread reuses
    one score buffer, so large runs do not page-fault fresh memory per block.
    Returns ``(int32 [n_rows, k], float32 [n_rows, k])``.
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    if exclude is not None:
        if exclude.shape != (n_rows, n_items):
            raise ValueError(f"exclude has shape {exclude.shape}, expected {(n_rows, n_items)}")
        exclude = sp.csr_matrix(exclude)
    out_idx = np.empty((n_rows, k), dtype=np.int32)
    out_score = np.empty((n_rows, k), dtype=np.float32)
    if n_rows == 0:
        return out_idx, out_score
    c = chunk_size(max(n_items, 1), k)
    n_pad = -(-max(n_items, 1) // c) * c
    step = block_rows(n_pad, memory_mb, n_rows=n_rows)
    starts = range(0, n_rows, step)
    local = threading.local()

    def run(start: int) -> None:
        stop = min(n_rows, start + step)
        buf = getattr(local, "buf", None)
        if buf is None:
            buf = local.buf = np.empty((step, n_pad), dtype=np.float32)
        view = buf[: stop - start]
        if _score_into is not None:
            _score_into(start, stop, view)  # fills at least view[:, :n_items]
        else:
            view[:, :n_items] = score(start, stop)
        view[:, n_items:] = -np.inf  # padding columns are never selected
        if exclude is not None:
            _mask_seen(view, exclude, start, stop)
        out_idx[start:stop], out_score[start:stop] = _select_block(view, k, c)

    if n_threads <= 1 or len(starts) <= 1:
        for start in starts:
            run(start)
    else:
        with threadpool_limits(limits=1), ThreadPoolExecutor(max_workers=n_threads) as pool:
            for fut in [pool.submit(run, s) for s in starts]:
                fut.result()
    return out_idx, out_score


def topk_factors(
    user_factors: np.ndarray,
    item_factors: np.ndarray,
    k: int = 50,
    *,
    exclude: sp.csr_matrix | None = None,
    memory_mb: float = 64,
    n_threads: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` items by dot product ``user_factors @ item_factors.T`` for every user (float32)."""
    if k < 1:
        raise ValueError("k must be >= 1")
    u = np.ascontiguousarray(user_factors, dtype=np.float32)
    vt = np.ascontiguousarray(np.asarray(item_factors, dtype=np.float32).T)
    if u.shape[1] != vt.shape[0]:
        raise ValueError(f"rank mismatch: users {u.shape[1]}, items {vt.shape[0]}")

    n_items = vt.shape[1]
    c = chunk_size(max(n_items, 1), k)
    n_pad = -(-max(n_items, 1) // c) * c  # same padding as topk_blocked
    vt_pad = np.zeros((vt.shape[0], n_pad), dtype=np.float32)
    vt_pad[:, :n_items] = vt

    def score(start: int, stop: int) -> np.ndarray:
        return u[start:stop] @ vt

    def score_into(start: int, stop: int, out: np.ndarray) -> None:
        np.matmul(u[start:stop], vt_pad, out=out)  # straight into the reused buffer: no temporaries

    return topk_blocked(
        score,
        u.shape[0],
        vt.shape[1],
        k,
        exclude=exclude,
        memory_mb=memory_mb,
        n_threads=n_threads,
        _score_into=score_into,
    )


def topk_bruteforce(scores: np.ndarray, k: int, exclude: sp.csr_matrix | None = None) -> np.ndarray:
    """Reference implementation for tests: stable full sort of dense ``scores``. Returns indices."""
    s = np.array(scores, dtype=np.float32)
    if exclude is not None:
        s[exclude.toarray() != 0] = -np.inf
    order = np.argsort(-s, axis=1, kind="stable")[:, :k].astype(np.int32)
    top = np.take_along_axis(s, order, axis=1)
    order[np.isneginf(top)] = -1
    if order.shape[1] < k:
        order = np.pad(order, ((0, 0), (0, k - order.shape[1])), constant_values=-1)
    return order
