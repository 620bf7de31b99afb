"""Microbenchmark of the speed layer's own per-batch work, without Kafka or faust.

    .venv/bin/python -m benchmarks.bench_stream_batch [--events 40000] [--batch 1000] [--dim 768]

Why: ``bench_stream`` measures the whole worker, where faust's per-record machinery and the
shared box's noise blur our part. This runs exactly the calls ``streams/app.py`` makes per batch
(state decode, ``EmbeddingCache.ensure``, ``apply_batch``, ``PostgresSink.write_batch``, Redis
``invalidate``, state encode) in a private world (scratch database seeded with ``--items``
embedded items, an ALS model of ``--rank``), on ``make_events``'s Zipf users, and prints the
process CPU microseconds per event of each stage (``time.process_time``: our CPU only) and the
CPU the Postgres server process of the sink's connection spent on the batch's writes (psutil on
its ``pg_backend_pid()``: the server runs on the same box, so it competes with the worker).

The first ``--warm`` events fill the states (users come back, as in production) and the
embedding cache; only the batches after them are measured.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import itertools
import pstats
import tempfile
import time
from collections import defaultdict

import msgspec
import numpy as np
import psutil

from infra.postgres import scratch_database
from lambdarec.settings import get_settings
from schemas.migrate import migrate
from streams.app import profile_config
from streams.embeddings import EmbeddingCache
from streams.processors.foldin import FoldInModel
from streams.processors.profiles import Incoming, apply_batch
from streams.sinks.postgres import PostgresSink, unique
from streams.sinks.redis import CacheInvalidator
from streams.state import UserState, decode_state, encode_state
from tests.integration.stream_support import make_events, seed_items


async def run(args: argparse.Namespace) -> dict[str, float]:
    base = get_settings()
    base = base.model_copy(update={"embedding": base.embedding.model_copy(update={"dim": args.dim})})
    with tempfile.TemporaryDirectory(), scratch_database(base, prefix="lambdarec_benchbatch") as s:
        migrate(s)
        item_ids = seed_items(s, args.items, args.dim)
        rng = np.random.default_rng(0)
        model = FoldInModel.from_factors("bench", item_ids, rng.normal(size=(len(item_ids), args.rank)) * 0.1)
        config = profile_config(s)
        pg = PostgresSink(s)
        cache = CacheInvalidator(s.redis.url)
        emb = EmbeddingCache(pg.load_embeddings)
        conn = await pg.connect()
        await conn.execute("SELECT * FROM rt_interactions_maintain()")  # daily partitions, as in production
        pid = (await (await conn.execute("SELECT pg_backend_pid()")).fetchone() or [0])[0]
        await conn.commit()
        backend = psutil.Process(pid)
        server_cpu = 0.0
        events = make_events(args.warm + args.events, users=args.users, items=item_ids, seed=1, rec_every=50)
        # a private Redis key space: the bench's users are not anybody's
        tag = f"bench-{time.time_ns()}-"
        events = [msgspec.structs.replace(e, user_id=tag + e.user_id) for e in events]
        table: dict[bytes, bytes] = {}
        cpu: dict[str, float] = defaultdict(float)
        wall: dict[str, float] = defaultdict(float)
        sizes: list[int] = []
        measured = 0
        prof = cProfile.Profile() if args.profile else None
        for start in range(0, len(events), args.batch):
            chunk = events[start : start + args.batch]
            measuring = start >= args.warm
            items = [Incoming(e, 0, start + k, None) for k, e in enumerate(chunk)]
            laps: list[tuple[str, float, float]] = []

            def lap(name: str, laps: list[tuple[str, float, float]] = laps) -> None:
                laps.append((name, time.process_time(), time.perf_counter()))

            if prof is not None and measuring:
                prof.enable()
            lap("")
            users = unique(it.event.user_id for it in items)
            states: dict[str, UserState] = {u: decode_state(table.get(u.encode())) for u in users}
            lap("state_decode")
            vectors = await emb.ensure(unique(it.event.item_id for it in items))
            lap("embeddings")
            result = apply_batch(items, states, embeddings=vectors, model=model, config=config)
            lap("apply_batch")
            b0 = backend.cpu_times()
            await pg.write_batch(result)
            lap("postgres")
            b1 = backend.cpu_times()
            if measuring:
                server_cpu += b1.user + b1.system - b0.user - b0.system
            await cache.invalidate(list(result.users))
            lap("redis")
            for u in result.users:
                v = encode_state(states[u])
                table[u.encode()] = v
                if measuring:
                    sizes.append(len(v))
            lap("state_encode")
            if prof is not None:
                prof.disable()
            if measuring:
                measured += len(chunk)
                for (_, c0, w0), (name, c1, w1) in itertools.pairwise(laps):
                    cpu[name] += c1 - c0
                    wall[name] += w1 - w0
        await pg.close()
        if args.users:
            await cache.client.delete(*[f"rec:ver:{tag}user-{i}" for i in range(args.users)])
        await cache.close()
    if prof is not None:
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    out = {f"cpu_us_{k}": 1e6 * v / measured for k, v in cpu.items()}
    out |= {f"wall_us_{k}": 1e6 * v / measured for k, v in wall.items()}
    out["cpu_us_total"] = 1e6 * sum(cpu.values()) / measured
    out["wall_us_total"] = 1e6 * sum(wall.values()) / measured
    out["pg_server_cpu_us"] = 1e6 * server_cpu / measured
    out["state_bytes_mean"] = float(np.mean(sizes))
    out["events"] = measured
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=40_000, help="measured events")
    p.add_argument("--warm", type=int, default=40_000, help="events applied first, not measured")
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--users", type=int, default=20_000)
    p.add_argument("--items", type=int, default=3_000)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--rank", type=int, default=10)
    p.add_argument("--profile", action="store_true", help="print cProfile's top functions too")
    args = p.parse_args()
    r = asyncio.run(run(args))
    stages = ["state_decode", "embeddings", "apply_batch", "postgres", "redis", "state_encode", "total"]
    print(f"{int(r['events'])} events, batches of {args.batch}, dim {args.dim}, rank {args.rank}")
    print(f"{'stage':<14}{'CPU us/event':>14}{'wall us/event':>15}")
    for st in stages:
        print(f"{st:<14}{r[f'cpu_us_{st}']:>14.1f}{r[f'wall_us_{st}']:>15.1f}")
    print(f"postgres server CPU: {r['pg_server_cpu_us']:.1f} us/event (10 ms clock ticks: use >= 20k events)")
    print(f"changelog value: {r['state_bytes_mean']:.0f} bytes per user on average")
    per_s = 1e6 / r["cpu_us_total"]
    print(f"our CPU per event: {r['cpu_us_total']:.1f} us ({per_s:.0f} events per CPU-second)")


if __name__ == "__main__":
    main()
