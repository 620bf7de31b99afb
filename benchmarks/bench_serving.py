"""Recommendation API throughput and latency, cached and uncached, with wrk over loopback.

What it does (all in a scratch database that is dropped afterwards):

1. migrate, then seed with binary COPY: ``--items`` items with random unit embeddings
   (``embedding.dim``), 20 genres, ``--users`` user profiles with ALS factors (rank 10; 10 % also
   with a taste vector), one batch-view row per user (20 items) and one recent interaction each;
   the HNSW index is built after the load; an ALS snapshot is saved and promoted so serving
   holds the item factors in memory.
2. start ``lambdarec serve`` (``--workers``) against it, with a private topic prefix (so no
   other model promotion is followed) and a short cache TTL (the Redis is shared).
3. wrk: *cached* = 1,000 warmed users; *uncached* = random users out of ``--users`` (each list
   computed once: blend, filters, novelty, MMR over embeddings). Prints req/s and p50/p99.

Usage: ``python -m benchmarks.bench_serving [--users 100000 --items 60000 --duration 20]``
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import psycopg
from pgvector.psycopg import register_vector

from infra.postgres import scratch_database
from lambdarec.settings import PROJECT_ROOT, Settings, get_settings
from schemas.migrate import migrate
from schemas.model_snapshot import ModelSnapshot, save_snapshot

RANK = 10
N_GENRES = 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def seed(settings: Settings, n_users: int, n_items: int, snap_dir: str) -> dict[str, float]:
    """Fill the scratch database; returns seconds per phase."""
    times: dict[str, float] = {}
    rng = np.random.default_rng(42)
    dim = settings.embedding.dim
    t = time.perf_counter()
    migrate(settings)
    conn = psycopg.connect(settings.postgres.url, autocommit=True)
    register_vector(conn)
    conn.execute("DROP INDEX items_embedding_hnsw_idx")
    for g in range(N_GENRES):
        conn.execute("INSERT INTO genres (name, slug) VALUES (%s, %s)", (f"Genre {g}", f"genre-{g}"))
    gids = [r[0] for r in conn.execute("SELECT genre_id FROM genres ORDER BY genre_id")]
    item_ids = [f"bi{i}" for i in range(n_items)]
    pop = rng.pareto(1.5, n_items) * 10
    with conn.cursor().copy(
        "COPY items (item_id, title, release_year, popularity_score, embedding) FROM STDIN (FORMAT BINARY)"
    ) as cp:
        cp.set_types(["varchar", "varchar", "int2", "float8", "vector"])
        for start in range(0, n_items, 5000):
            block = rng.standard_normal((min(5000, n_items - start), dim)).astype(np.float32)
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            for j, v in enumerate(block):
                i = start + j
                cp.write_row((item_ids[i], f"Movie {i}", 1950 + i % 75, float(pop[i]), v))
    with conn.cursor().copy("COPY item_genres (item_id, genre_id) FROM STDIN") as cp:
        for i, iid in enumerate(item_ids):
            cp.write_row((iid, gids[i % N_GENRES]))
            cp.write_row((iid, gids[(i * 7 + 3) % N_GENRES]))
    times["items"] = time.perf_counter() - t

    t = time.perf_counter()
    item_f = (rng.standard_normal((n_items, RANK)) * 0.3).astype(np.float32)
    user_f = (rng.standard_normal((n_users, RANK)) * 0.3).astype(np.float32)
    with conn.cursor().copy(
        "COPY user_profiles (user_id, als_factors, als_model_version, preference_vector, data_usage_consent, "
        "diversity_preference, novelty_preference) FROM STDIN (FORMAT BINARY)"
    ) as cp:
        cp.set_types(["varchar", "vector", "varchar", "vector", "bool", "float4", "float4"])
        for u in range(n_users):
            pref = None
            if u % 10 == 0:
                pref = rng.standard_normal(dim).astype(np.float32)
                pref /= np.linalg.norm(pref)
            cp.write_row((f"bu{u}", user_f[u], "bench-v1", pref, u % 50 != 0, 0.3, 0.2))
    run_id = conn.execute("SELECT begin_batch_recommendations('als', 'bench-v1')").fetchone()[0]  # type: ignore[index]
    with conn.cursor().copy("COPY batch_recommendations (run_id, user_id, recommendations) FROM STDIN") as cp:
        for u in range(n_users):
            picks = rng.integers(0, n_items, 20)
            recs = [{"item_id": item_ids[p], "score": round(1.0 - k * 0.03, 3)} for k, p in enumerate(picks)]
            cp.write_row((run_id, f"bu{u}", json.dumps(recs)))
    conn.execute("SELECT publish_batch_recommendations(%s)", (run_id,))
    with conn.cursor().copy(
        "COPY rt_user_interactions (event_id, user_id, item_id, event_type, occurred_at) FROM STDIN"
    ) as cp:
        import uuid

        for u in range(n_users):
            cp.write_row((uuid.uuid4(), f"bu{u}", item_ids[int(rng.integers(n_items))], "view", "now"))
    times["users"] = time.perf_counter() - t

    t = time.perf_counter()
    conn.execute("SET maintenance_work_mem = '1GB'")
    conn.execute("SET max_parallel_maintenance_workers = 1")
    conn.execute(
        "CREATE INDEX items_embedding_hnsw_idx ON items USING hnsw (embedding vector_cosine_ops) "
        "WITH (m = 16, ef_construction = 64)"
    )
    conn.execute("ANALYZE")
    times["hnsw"] = time.perf_counter() - t

    snap = ModelSnapshot(
        "bench-v1",
        "als",
        np.array([f"bu{u}" for u in range(n_users)], dtype=object),
        np.array(item_ids, dtype=object),
        user_f,
        item_f,
    )
    save_snapshot(snap, snap_dir)
    mid = conn.execute(
        "INSERT INTO models (algorithm, version, status, snapshot_uri) "
        "VALUES ('als', 'bench-v1', 'registered', %s) "
        "RETURNING model_id",
        (snap_dir,),
    ).fetchone()[0]  # type: ignore[index]
    conn.execute("UPDATE models SET status = 'staging' WHERE model_id = %s", (mid,))
    conn.execute("SELECT promote_model(%s)", (mid,))
    conn.close()
    return times


_LUA = """
local n = {n}
local counter = 0
request = function()
  counter = counter + 1
  local u = math.random(0, n - 1)
  return wrk.format("GET", "/v1/users/bu" .. u .. "/recommendations?k=10")
end
"""


def wrk(url: str, n_users: int, duration: int, conns: int, threads: int) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(_LUA.replace("{n}", str(n_users)))
        script = f.name
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}s", "--latency", "-s", script, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    os.unlink(script)

    def ms(label: str) -> float:
        m = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            return float("nan")
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "p50_ms": ms("50"),
        "p90_ms": ms("90"),
        "p99_ms": ms("99"),
        "non_2xx": float(errors.group(1)) if errors else 0.0,
    }


def _warm(url: str, n: int) -> None:
    """Request users ``bu0..bu{n-1}`` (4 at a time) until every list is cached."""
    import asyncio

    async def run() -> None:
        sem = asyncio.Semaphore(4)
        async with httpx.AsyncClient(timeout=30) as c:

            async def one(u: int) -> bool:
                async with sem:
                    r = await c.get(f"{url}/v1/users/bu{u}/recommendations?k=10")
                    return bool(r.json().get("cache_hit"))

            for _ in range(5):
                if all(await asyncio.gather(*(one(u) for u in range(n)))):
                    return

    asyncio.run(run())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--items", type=int, default=60_000)
    ap.add_argument("--duration", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--connections", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--cached-users", type=int, default=200, help="users warmed before the cached runs")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install -y wrk")
    base = get_settings()
    snap_dir = tempfile.mkdtemp(prefix="bench-serving-snap-")
    with scratch_database(base, "lambdarec_bench_serving") as settings:
        t0 = time.perf_counter()
        phases = seed(settings, args.users, args.items, snap_dir)
        print(f"seeded {args.users} users / {args.items} items in {time.perf_counter() - t0:.0f} s {phases}")
        port = _free_port()
        env = {
            **os.environ,
            "LAMBDAREC_POSTGRES__URL": settings.postgres.url,
            "LAMBDAREC_POSTGRES__POOL_MAX": "8",
            "LAMBDAREC_KAFKA__TOPIC_PREFIX": f"bench{port}.",
            "LAMBDAREC_SERVING__CACHE_TTL_SEC": "300",
            "LAMBDAREC_SERVING__ANONYMOUS_RATE_LIMIT_PER_MINUTE": "100000000",
        }
        server = subprocess.Popen(
            [
                str(PROJECT_ROOT / ".venv/bin/lambdarec"),
                "serve",
                "--port",
                str(port),
                "--workers",
                str(args.workers),
            ],
            env=env,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("server not ready")
                time.sleep(0.5)
            time.sleep(3)  # model load from the registry
            sample = httpx.get(f"{url}/v1/users/bu1/recommendations?k=10", timeout=10).json()
            print(
                "sample:",
                sample["algorithm_source"],
                [i["source"] for i in sample["items"]],
                sample["computation_time_ms"],
                "ms",
            )
            _warm(url, args.cached_users)
            results = {}
            for conns in args.connections:
                results[f"cached_c{conns}"] = wrk(url, args.cached_users, args.duration, conns, args.threads)
                results[f"uncached_c{conns}"] = wrk(url, args.users, args.duration, conns, args.threads)
            conn = psycopg.connect(settings.postgres.url, autocommit=True)
            hits = conn.execute(
                "SELECT count(*), avg(cache_hit::int), percentile_cont(0.5) WITHIN GROUP (ORDER BY "
                "computation_time_ms) FILTER (WHERE NOT cache_hit) FROM recommendation_logs"
            ).fetchone()
            assert hits is not None
            conn.close()
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
            shutil.rmtree(snap_dir, ignore_errors=True)
        print(
            json.dumps(
                {
                    "args": vars(args),
                    "results": results,
                    "logged_lists": hits[0],
                    "cache_hit_ratio": hits[1],
                    "server_p50_uncached_compute_ms": hits[2],
                },
                default=str,
                indent=2,
            )
        )
        Path(PROJECT_ROOT / "var").mkdir(exist_ok=True)


if __name__ == "__main__":
    main()
