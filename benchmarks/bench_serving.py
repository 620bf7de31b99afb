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
   Before the first uncached run, ``--warmup`` seconds of uncached load are discarded: the first
   seconds after the API starts measured p99 of 230-440 ms while its connection pools grew and
   the new Postgres backends warmed their caches (the steady state is what the figures are for).

Usage: ``python -m benchmarks.bench_serving [--users 100000 --items 60000 --duration 20]``
"""

from __future__ import annotations

import argparse
import contextlib
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
from pgvector.psycopg import register_vector

from infra.postgres import PostgresService, scratch_database
from lambdarec.settings import PROJECT_ROOT, Settings, get_settings
from schemas.migrate import migrate
from schemas.model_snapshot import ModelSnapshot, save_snapshot
from schemas.topics import topic_configs

RANK = 10
N_GENRES = 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def kept_database(base: Settings, name: str) -> Iterator[tuple[Settings, bool]]:
    """A named database that survives the run (seeding 100k users and the HNSW index takes
    minutes; repeated measurements should not pay it). Yields (settings, already seeded)."""
    from psycopg import sql

    svc = PostgresService(base)
    owner = svc._url.username or "lambdarec"
    with svc.admin_connect() as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE template0 ENCODING 'UTF8'").format(
                    sql.Identifier(name), sql.Identifier(owner)
                )
            )
    with svc.admin_connect(name) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    url = svc._url._replace(path=f"/{name}").geturl()
    settings = base.model_copy(update={"postgres": base.postgres.model_copy(update={"url": url})})
    with psycopg.connect(url, autocommit=True) as conn:
        seeded = conn.execute("SELECT to_regclass('bench_seeded') IS NOT NULL").fetchone()[0]  # type: ignore[index]
    yield settings, bool(seeded)


class Embeddings:
    """Item embeddings and taste vectors of the seeded catalog.

    ``random``: uniform random unit vectors. No neighbourhoods at all: the worst case for HNSW
    (every hop of the graph search is as far as the next) and unlike any real catalog.
    ``clustered``: what ``lambdarec world`` gets from embedding genre-laden synopses, roughly: an
    item is its primary genre's direction, half its second genre's, a sub-topic (20 per genre)
    and noise; a taste vector (what the speed layer folds from the items a user played) leans to
    one or two genres. Neighbours share genres and sub-topics, as on a real catalog.
    """

    def __init__(self, kind: str, dim: int, rng: np.random.Generator) -> None:
        self.kind, self.dim, self.rng = kind, dim, rng
        self.genre = self._unit(rng.standard_normal((N_GENRES, dim)))
        self.topic = self._unit(rng.standard_normal((N_GENRES * 20, dim)))

    @staticmethod
    def _unit(m: np.ndarray) -> np.ndarray:
        return (m / np.linalg.norm(m, axis=-1, keepdims=True)).astype(np.float32)

    def items(self, start: int, n: int) -> np.ndarray:
        noise = self._unit(self.rng.standard_normal((n, self.dim)))
        if self.kind == "random":
            return noise
        i = np.arange(start, start + n)
        g1, g2 = i % N_GENRES, (i * 7 + 3) % N_GENRES  # the genres seed() gives item i
        sub = g1 * 20 + (i // N_GENRES) % 20
        return self._unit(self.genre[g1] + 0.5 * self.genre[g2] + 0.7 * self.topic[sub] + 0.6 * noise)

    def taste(self) -> np.ndarray:
        noise = self._unit(self.rng.standard_normal(self.dim))
        if self.kind == "random":
            return noise
        a, b = self.rng.integers(N_GENRES, size=2)
        t = self.rng.integers(20)
        return self._unit(self.genre[a] + 0.5 * self.genre[b] + 0.5 * self.topic[a * 20 + t] + 0.6 * noise)


def seed(
    settings: Settings, n_users: int, n_items: int, snap_dir: str, embeddings: str = "random"
) -> dict[str, float]:
    """Fill the scratch database; returns seconds per phase."""
    times: dict[str, float] = {}
    rng = np.random.default_rng(42)
    dim = settings.embedding.dim
    emb = Embeddings(embeddings, dim, rng)
    t = time.perf_counter()
    migrate(settings)
    conn = psycopg.connect(settings.postgres.url, autocommit=True)
    register_vector(conn)
    conn.execute("DROP INDEX items_embedding_hnsw_idx")  # built after the load (an HNSW insert is slow)
    conn.execute("DROP INDEX IF EXISTS items_embedding_half_hnsw_idx")
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
            block = emb.items(start, min(5000, n_items - start))
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
                pref = emb.taste()
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
    conn.execute(  # as migration 011 makes it
        f"CREATE INDEX items_embedding_half_hnsw_idx ON items USING hnsw ((embedding::halfvec({dim})) "
        "halfvec_cosine_ops) WITH (m = 16, ef_construction = 64)"
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
    conn.execute("CREATE TABLE bench_seeded (users int, items int, snapshot text, embeddings text)")
    conn.execute("INSERT INTO bench_seeded VALUES (%s, %s, %s, %s)", (n_users, n_items, snap_dir, embeddings))
    conn.close()
    return times


_LUA = """
math.randomseed(os.time() + {seed})
local n = {n}
local step = {step}
local path = "{path}"
hits = 0
request = function()
  local u = math.random(0, math.floor((n - 1) / step)) * step
  return wrk.format("GET", (string.gsub(path, "{user}", "bu" .. u)))
end
response = function(status, headers, body)
  if string.find(body, '"cache_hit":true', 1, true) then hits = hits + 1 end
end
-- pacing: the thread's requests take successive slots {interval} ms apart (the thread's share of
-- the rate), whichever connection is free; a request late for its slot goes at once and the
-- schedule restarts from now (no catch-up burst). A fixed per-connection delay reached only
-- 75-95 % of the rate asked, since each connection also waited for its answers.
local interval = {interval}
if interval > 0 then
  local ffi = require("ffi")
  ffi.cdef[[
    typedef struct { long tv_sec; long tv_nsec; } lr_timespec;
    int clock_gettime(int clk, lr_timespec *ts);
  ]]
  local ts = ffi.new("lr_timespec")
  local function now_ms()
    ffi.C.clock_gettime(1, ts)
    return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
  end
  local due = nil
  delay = function()
    local t = now_ms()
    due = (due or t) + interval
    if due < t then due = t end
    return math.floor(due - t)
  end
end
local threads = {}
setup = function(thread) table.insert(threads, thread) end
done = function(summary, latency, requests)
  local total = 0
  for _, t in ipairs(threads) do total = total + t:get("hits") end
  io.write(string.format("CACHE_HITS %d\\n", total))
end
"""


def wrk(
    url: str,
    n_users: int,
    duration: int,
    conns: int,
    threads: int,
    rate: float = 0.0,
    path: str = "/v1/users/{user}/recommendations?k=10",
    step: int = 1,
) -> dict[str, float]:
    """One wrk run. ``rate`` > 0 paces the requests (Lua ``delay``, see :data:`_LUA`) to ``rate``
    req/s in total: wrk is closed-loop, and p99 at saturation says nothing about p99 at a given
    load. ``path``: the request's path, ``{user}`` replaced by a random bench user (one whose
    number is a multiple of ``step``)."""
    interval = threads * 1000 / rate if rate > 0 else 0.0
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(
            _LUA.replace("{n}", str(n_users))
            .replace("{step}", str(step))
            .replace("{path}", path)
            .replace("{interval}", f"{interval:.4f}")
            .replace("{seed}", str(int.from_bytes(os.urandom(2), "little")))
        )
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
    total = re.search(r"(\d+) requests in", out)
    hits = re.search(r"CACHE_HITS (\d+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    n = float(total.group(1)) if total else float("nan")
    return {
        "rps": rps,
        "p50_ms": ms("50"),
        "p90_ms": ms("90"),
        "p99_ms": ms("99"),
        "non_2xx": float(errors.group(1)) if errors else 0.0,
        "hit_ratio": round(float(hits.group(1)) / n, 3) if hits and n else float("nan"),
    }


def cpu_seconds(server_pid: int, db_url: str) -> dict[str, dict[int, float]]:
    """CPU seconds used so far, per process, by the API (all uvicorn processes) and by the
    Postgres backends serving the bench database: per request, this is what the box pays
    whatever else runs on it, so it stays meaningful when latencies are blurred by other load."""
    import psutil

    def times(pids: list[int]) -> dict[int, float]:
        out = {}
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                t = psutil.Process(pid).cpu_times()
                out[pid] = t.user + t.system
        return out

    server = psutil.Process(server_pid)
    with psycopg.connect(db_url, autocommit=True) as conn:
        dbname = conn.info.dbname
        pids = [r[0] for r in conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (dbname,))]
    return {
        "api": times([server_pid, *(c.pid for c in server.children(recursive=True))]),
        "postgres": times(pids),
    }


def cpu_ms_per_request(before: dict[int, float], after: dict[int, float], requests: float) -> float:
    """Over the processes alive at both ends (a backend that came or went is left out)."""
    used = sum(after[p] - before[p] for p in after.keys() & before.keys())
    return round(used * 1000 / max(requests, 1.0), 3)


def _wait_idle(server_pid: int, timeout: float = 120.0) -> None:
    """Until the API processes use < 5 % of a core over a second (their background start-up,
    e.g. loading the item catalog, would otherwise be billed to the first run's requests)."""
    import psutil

    procs = [psutil.Process(server_pid), *psutil.Process(server_pid).children(recursive=True)]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = sum(sum(p.cpu_times()[:2]) for p in procs)
        time.sleep(1.0)
        if sum(sum(p.cpu_times()[:2]) for p in procs) - before < 0.05:
            return
    print("API processes still busy after start-up; measuring anyway", flush=True)


def invalidate(settings: Settings, n_users: int) -> None:
    """INCR every bench user's cache version (what the speed layer does on new events), so the
    next request of each is a miss whatever earlier runs cached."""
    import redis

    r = redis.Redis.from_url(settings.redis.url)
    for start in range(0, n_users, 10_000):
        pipe = r.pipeline(transaction=False)
        for u in range(start, min(n_users, start + 10_000)):
            pipe.incr(f"rec:ver:bu{u}")
            pipe.expire(f"rec:ver:bu{u}", 3600)
        pipe.execute()
    r.close()


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
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument(
        "--warmup",
        type=int,
        default=5,
        help="seconds of uncached load, discarded, before the measured runs: the API's first"
        " seconds open and warm its Postgres connections (pool growth, each backend's caches)",
    )
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--connections", type=int, nargs="+", default=[16])
    ap.add_argument(
        "--rate",
        type=float,
        nargs="+",
        default=[0.0, 1000.0],
        help="target req/s; 0 = flat out",
    )
    ap.add_argument("--cached-users", type=int, default=1000, help="users warmed before the cached runs")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--paths",
        nargs="+",
        default=["cached", "uncached"],
        choices=["cached", "uncached", "uncached_taste", "healthz"],
        help="uncached_taste: only users with a taste vector (every 10th: the pgvector ANN runs for "
        "each list, as for every user with events in a live system); healthz: GET /healthz, the "
        "cheapest FastAPI route - the floor HTTP sets on this box",
    )
    ap.add_argument(
        "--keep-db",
        metavar="NAME",
        help="seed into (or reuse) this database and keep it: repeated runs skip the minutes of seeding",
    )
    ap.add_argument(
        "--embeddings",
        choices=["random", "clustered"],
        default="random",
        help="item embeddings and taste vectors when seeding (see Embeddings); a kept database "
        "keeps what it was seeded with, so give each kind its own --keep-db name",
    )
    ap.add_argument("--serve-env", nargs="*", default=[], metavar="K=V", help="extra LAMBDAREC_* for the API")
    ap.add_argument(
        "--in-process",
        type=int,
        metavar="N",
        help="only time compute() in process for N uncached lists (needs --keep-db, seeded); "
        "prints CPU ms per list of this process and of its Postgres backend",
    )
    ap.add_argument(
        "--freshness",
        type=int,
        metavar="N",
        help="only measure event -> changed list, N events (see freshness())",
    )
    args = ap.parse_args()
    if args.freshness:
        print(json.dumps({"freshness": freshness(args.freshness)}, indent=2))
        return
    if args.in_process:
        if not args.keep_db:
            sys.exit("--in-process needs --keep-db NAME (a seeded database)")
        with kept_database(get_settings(), args.keep_db) as (settings, seeded):
            if not seeded:
                sys.exit(f"{args.keep_db} is not seeded: run the wrk bench with it once")
            print(json.dumps({"in_process": in_process(settings, args.in_process)}, indent=2))
        return
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install -y wrk")
    base = get_settings()
    if args.keep_db:
        snap_dir = str(base.var_dir / "bench-serving" / args.keep_db)
        db: contextlib.AbstractContextManager[tuple[Settings, bool]] = kept_database(base, args.keep_db)
    else:
        snap_dir = tempfile.mkdtemp(prefix="bench-serving-snap-")
        db = _scratch(base)
    with db as (settings, seeded):
        t0 = time.perf_counter()
        if seeded:
            migrate(settings)  # a database kept from an older checkout gets the new migrations
            with psycopg.connect(settings.postgres.url) as c:
                print("kept database:", c.execute("SELECT * FROM bench_seeded").fetchone())
                # the serve log of earlier runs is output, not seed: left to grow (0.8M rows, 0.9 GB
                # after a day of runs) it put autovacuum and a bigger index into the figures
                c.execute("TRUNCATE recommendation_logs")
        else:
            phases = seed(settings, args.users, args.items, snap_dir, args.embeddings)
            print(
                f"seeded {args.users} users / {args.items} items in {time.perf_counter() - t0:.0f} s {phases}"
            )
        port = _free_port()
        topics = contextlib.ExitStack()  # the API's topics under a private prefix, deleted after
        topics.enter_context(_private_topics(settings, f"bench{port}."))
        env = {
            **os.environ,
            "LAMBDAREC_POSTGRES__URL": settings.postgres.url,
            "LAMBDAREC_KAFKA__TOPIC_PREFIX": f"bench{port}.",
            "LAMBDAREC_SERVING__CACHE_TTL_SEC": "300",
            "LAMBDAREC_SERVING__ANONYMOUS_RATE_LIMIT_PER_MINUTE": "100000000",
            **dict(kv.split("=", 1) for kv in args.serve_env),
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
        results: dict[str, dict[str, float]] = {}
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
            deadline = time.monotonic() + 120  # the model loads from the registry in the background
            loaded = 0  # every worker loads its own copy: ask until 20 answers in a row say loaded
            while loaded < 20:
                model = httpx.get(f"{url}/readyz", timeout=5).json()["checks"].get("model", "none")
                loaded = 0 if "none" in model else loaded + 1
                if time.monotonic() > deadline:
                    raise RuntimeError("model not loaded")
                time.sleep(0.05 if loaded else 0.5)
            _wait_idle(server.pid)  # start-up work (the workers' item catalog loads) out of the figures
            sample = httpx.get(f"{url}/v1/users/bu1/recommendations?k=10", timeout=10).json()
            print(
                "sample:",
                sample["algorithm_source"],
                [i["source"] for i in sample["items"]],
                sample["computation_time_ms"],
                "ms",
            )
            if args.warmup > 0 and any(p.startswith("uncached") for p in args.paths):
                warm = wrk(url, args.users, args.warmup, max(args.connections), args.threads)
                print(f"warm-up: {warm['rps']:.0f} req/s, p99 {warm['p99_ms']} ms (discarded)", flush=True)
            for conns in args.connections:
                for rate in args.rate:
                    tag = f"c{conns}_r{int(rate) or 'max'}"
                    for path in args.paths:
                        route = "/v1/users/{user}/recommendations?k=10"
                        if path == "cached":
                            _warm(url, args.cached_users)
                        elif path.startswith("uncached"):
                            invalidate(settings, args.users)
                        else:
                            route = "/healthz"
                        n = args.cached_users if path == "cached" else args.users
                        step = 10 if path == "uncached_taste" else 1
                        before = cpu_seconds(server.pid, settings.postgres.url)
                        res = wrk(url, n, args.duration, conns, args.threads, rate, route, step)
                        after = cpu_seconds(server.pid, settings.postgres.url)
                        done = res["rps"] * args.duration
                        for part in ("api", "postgres"):
                            per_req = cpu_ms_per_request(before[part], after[part], done)
                            res[f"{part}_cpu_ms_per_req"] = per_req
                        results[f"{path}_{tag}"] = res
                        print(path, tag, res, flush=True)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
            topics.close()
            if not args.keep_db:
                shutil.rmtree(snap_dir, ignore_errors=True)
        print(json.dumps({"args": vars(args), "results": results}, default=str, indent=2))
        print("BENCH_RESULT " + json.dumps({"bench": "serving", "results": results}, default=str), flush=True)


@contextlib.contextmanager
def _private_topics(settings: Settings, prefix: str) -> Iterator[None]:
    """Every project topic under ``prefix``, as ``lambdarec infra up`` creates them: the serve
    log really reaches Kafka (the broker does not auto-create topics: without them every record
    was dropped by librdkafka, work the figures then missed) and the model watcher finds its
    topic (it logged "not found" every second)."""
    from infra.kafka import KafkaService

    private = settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"topic_prefix": prefix})}
    )
    kafka = KafkaService(private)
    kafka.bootstrap()
    try:
        yield
    finally:
        admin = kafka.admin()
        names = [name for name, _, _ in topic_configs(private)]
        for fut in admin.delete_topics(names, request_timeout=30).values():
            with contextlib.suppress(Exception):  # best effort: a leftover topic is only clutter
                fut.result()


def in_process(settings: Settings, n: int) -> dict[str, Any]:
    """``compute()`` (no cache, no HTTP) for ``n`` random users, one at a time, in this process:
    CPU ms per list of this process and of its Postgres backend, split by user kind (taste vector
    = ANN in Postgres, every 10th user; the others ALS + batch + popular). The figure that
    isolates the recommendation path from uvicorn, Redis and wrk."""
    import asyncio

    import psutil

    from serving import limit_blas_threads
    from serving.candidates import ItemFilters
    from serving.deps import build_services
    from serving.recommend import RecRequest, compute

    limit_blas_threads()
    rng = np.random.default_rng(7)
    with psycopg.connect(settings.postgres.url) as c:
        n_users = int(c.execute("SELECT users FROM bench_seeded").fetchone()[0])  # type: ignore[index]

    async def run() -> dict[str, Any]:
        svc = build_services(settings)
        svc.serve_log = None
        svc.experiments = None
        await svc.pool.open(wait=True)
        await svc.models.load_from_registry(svc.pool)
        catalog = getattr(svc, "catalog", None)  # the in-memory catalog, when this code has one
        if catalog is not None:
            t = time.perf_counter()
            await catalog.load(svc.pool)
            rss = psutil.Process().memory_info().rss / 2**20
            print(
                f"catalog: {len(catalog.snapshot)} items loaded in {time.perf_counter() - t:.1f} s; "
                f"RSS {rss:.0f} MB"
            )
        me = psutil.Process()
        print(f"RSS {me.memory_info().rss / 2**20:.0f} MB (peak {_peak_rss_mb():.0f} MB)")

        def cpu(p: psutil.Process) -> float:
            t = p.cpu_times()
            return t.user + t.system

        def pg_cpu() -> dict[int, float]:
            return cpu_seconds(me.pid, settings.postgres.url)["postgres"]

        def pg_used(before: dict[int, float]) -> float:
            # backends that came during the run count whole; one that went is lost (printed)
            after = pg_cpu()
            return sum(t - before.get(p, 0.0) for p, t in after.items())

        out: dict[str, Any] = {}
        for kind, pick in (
            ("als", lambda: int(rng.integers(n_users // 10)) * 10 + 1),
            ("taste_vector", lambda: int(rng.integers(n_users // 10)) * 10),
        ):
            for _ in range(20):  # warm-up: prepared statements, caches
                await compute(svc, RecRequest(f"bu{pick()}", 10, ItemFilters()))
            me0, pg0, w0 = cpu(me), pg_cpu(), time.perf_counter()
            degraded = 0
            for _ in range(n):
                _, ok = await compute(svc, RecRequest(f"bu{pick()}", 10, ItemFilters()))
                degraded += not ok
            wall = time.perf_counter() - w0
            out[kind] = {
                "lists": n,
                "api_cpu_ms_per_list": round((cpu(me) - me0) * 1000 / n, 3),
                "postgres_cpu_ms_per_list": round(pg_used(pg0) * 1000 / n, 3),
                "wall_ms_per_list": round(wall * 1000 / n, 3),
                "degraded": degraded,
            }
        await svc.pool.close()
        return out

    return asyncio.run(run())


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def freshness(n: int) -> dict[str, float]:
    """Event produced -> the next response reflects it, ``n`` times (one user each, in turn).

    A private world (stream_support: scratch database, own topics, a real ``lambdarec stream
    worker`` with its default settings), the API in process with the cache on: each user's
    popular list is cached first, then one ``play`` event is produced and the list polled every
    10 ms until it is personalised (serving_support.changed_list_latencies, the loop of
    tests/integration/test_serving_freshness.py). The clock starts before the event is sent
    and flushed, so the figure includes the client side of the produce.
    """
    import asyncio

    from tests.integration.serving_support import changed_list_latencies
    from tests.integration.stream_support import publish_model, stream_env

    with tempfile.TemporaryDirectory() as tmp, stream_env(get_settings(), Path(tmp)) as se:
        publish_model(se, "v1", seed=3)
        se.start_worker()
        took_in_order = [run.seconds for run in asyncio.run(changed_list_latencies(se, n))]
    print("freshness per event (s, in order):", " ".join(f"{t:.2f}" for t in took_in_order))
    took = sorted(took_in_order)
    q = np.quantile(np.asarray(took) * 1000, [0.5, 0.9, 0.99])
    return {
        "events": n,
        "p50_ms": round(q[0], 1),
        "p90_ms": round(q[1], 1),
        "p99_ms": round(q[2], 1),
        "max_ms": round(took[-1] * 1000, 1),
    }


@contextlib.contextmanager
def _scratch(base: Settings) -> Iterator[tuple[Settings, bool]]:
    with scratch_database(base, "lambdarec_bench_serving") as settings:
        yield settings, False


if __name__ == "__main__":
    main()
