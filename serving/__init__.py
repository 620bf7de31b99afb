"""Serving layer: the FastAPI recommendation API.

Process tuning lives here because it must happen before (BLAS) or right after (GC) the modules
that need it are loaded.

Why BLAS is pinned to one thread here, before numpy is loaded by any serving module: the
per-request linear algebra is tiny (60k x rank-10 mat-vec, MMR over 60 vectors), and OpenBLAS's
worker threads turned the 0.3 ms mat-vec into 13 ms of wall time and spun the cores that the
event loop, Postgres and Redis need (measured on the 2-core box, see docs/serving.md). An API
process gets its parallelism from uvicorn workers, not from BLAS threads.
"""

from __future__ import annotations

import gc
import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")


def limit_blas_threads() -> None:
    """The same limit when numpy was loaded before this package (tests, embedding apps)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # scikit-learn's dependency; without it only the env variables act
        return
    threadpool_limits(1, user_api="blas")


def settle_gc() -> None:
    """Move everything alive now (FastAPI's routes and models, pydantic schemas, the item
    factors) out of the collector's sight and collect the young generations less often.

    Why: measured on a cached-answer loop, CPython's default thresholds ran a full collection
    every few thousand requests that walked the whole start-up heap: a 100 ms pause, i.e. the
    p99 of everything in flight. Frozen and with gen0 at 20,000 allocations, the longest
    collection was 6.5 ms. Call it again after a big swap (a new model) to freeze that too.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)
