"""Speed-layer benchmark: sustained end-to-end events/s and event-to-profile latency.

    .venv/bin/python -m benchmarks.bench_stream [--events 40000] [--dim 768] [--workers 1 2]

For each worker count, in a private world (scratch database, fresh topics, own consumer group;
``tests/integration/stream_support.py``) with an ALS model promoted:

1. **throughput**: produce ``--events`` events as fast as the SDK can and time until every one is
   committed in Postgres (``rt_user_interactions`` rows, which commit in the same transaction as
   the profiles). Reported as events/s end to end, plus the workers' CPU seconds (the machine is
   shared, so events per worker-CPU-second is the steadier figure);
2. **latency**: produce at a fixed rate (``--rate``, default half the measured throughput) for
   ``--seconds`` and read the workers' ``lambdarec_stream_event_to_profile_seconds`` histograms
   (Kafka record time -> Postgres commit): p50 / p99, interpolated within buckets.

Also prints the mean batch size and where a batch's time goes
(``lambdarec_stream_batch_stage_seconds``).

Batch delivery (``streams/consumer.py``), 2026-11-25, shared 2-core box (load 3.5-4.5 from other
work), 40k events, 20k Zipf users, dim 768, rank 10, 6 partitions, RocksDB; baseline = the
per-record faust path (7d3843d) run back to back with ``PYTHONPATH`` at that tree:

* 1 worker: 12.4k events/s end to end vs 6.3k (19.4k vs 9.0k events per worker-CPU-second;
  another pair: 7.4k vs 3.8k/s, 20.9k vs 8.4k per CPU-s);
* 2 workers: 9.8k events/s, 17.3k per worker-CPU-s, p50 140 / p99 596 ms at 4.9k/s (the
  baseline stalled after an offset hole and never finished its throughput run);
* latency, 1 worker, fixed rate: at 4,000/s p50 92 / p99 270 ms (baseline p50 1.55 / p99
  2.9 s); at 5,000/s p50 152 / p99 549 ms; at 6,200/s p99 2.9 s (behind): sustained with
  p99 < 1 s is ~5k events/s on that loaded box (``docs/speed_layer.md``).

Where a worker's CPU goes now (py-spy, 100k events): our batch step ~78 % (apply_batch ~39 %,
changelog writes ~10 %, decode ~8 %, Postgres client ~8 %, Redis ~4 %), the consumer ~13 %
(building faust Messages ~7 %, aiokafka's record parsing in its thread ~6 %); faust's
per-record machinery (~35 % before) is gone. Before: faust's own consumer loop cost ~50 µs of
CPU per record (two asyncio tasks per message in ``Consumer._drain_messages``).

Per-batch overhead trimmed (issue #5), 2026-11-25, same box (load 2-3.8 from other work),
``--workers 1 --events 100000 --seconds 3``, baseline = fcd7652 run back to back: changelog
records as whole record batches (``streams.app.produce_batches``), one msgspec call for a
batch's valid records (``streams.dead_letters.decode_plain_events``), lean ``BatchMessage``,
``gc.freeze`` + gen0 threshold 20,000 (``streams.app.tune_gc``):

* events per worker-CPU-second, 5 pairs: 23.3k/17.5k, 25.9k/19.0k, 23.8k/18.7k, 24.9k/19.7k,
  23.1k/17.6k (~+30 %); at 40k events and a fixed 6,000/s latency rate: 24.8k, 23.7k vs
  19.6k, 20.2k;
* end to end: 12-16k events/s vs 10.6-14k; wall-clock rates followed the box's load more
  than the code;
* latency: where the worker keeps up, p50 100-250 ms / p99 575-860 ms for both; runs where
  the (shared) box starved it fall behind (batches at ~4,400, p50 ~1.1 s, p99 ~2.9 s) for the
  baseline too, more often for the new code, which is tested at higher rates (half its
  throughput) and in 2 of 4 runs at a fixed 6,000/s (baseline 0 of 2): re-measure idle.

The GC tuning is most of the gain: the same new code without ``tune_gc`` did 16.3k events per
worker-CPU-s (150k events, py-spy attached; with it 21.1k in the same setting), and py-spy
charged the collections to the allocating frames (``_decode`` 14 %, ``__post_init__`` 4.6 %).

py-spy, 150k events, steady state, baseline -> after: ``_decode`` 20.6 % -> 5.0 % (mostly the
garbage collector, charged to the allocating frame: ``InteractionEvent.__post_init__``
13 % -> 0.3 %), apply_batch 33 -> 41 %, Postgres sink
8.5 -> 8.2 %, drain loop 2.4 -> 4.3 % (aiokafka's record parsing; ``BatchMessage`` 0.4 %),
changelog sends (faust/aiokafka ``send`` ~1.5 % -> ``produce_batches`` 0.7 %), RocksDB puts
1.8 -> 3.2 %, encode_state 1.4 -> 2.7 %, state decode 1.9 -> 4.2 % (shares of a smaller total).
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import threading
import time
from collections import defaultdict
from functools import partial
from pathlib import Path
from typing import Any

import psutil

from lambdarec.settings import get_settings
from tests.integration.stream_support import StreamEnv, Worker, make_events, metric, publish_model, stream_env

_BUCKET = re.compile(
    r'^lambdarec_stream_event_to_profile_seconds_bucket\{[^}]*le="([^"]+)"[^}]*\} (\S+)$', re.M
)
_STAGE = re.compile(r'^lambdarec_stream_batch_stage_seconds_sum\{[^}]*stage="([^"]+)"[^}]*\} (\S+)$', re.M)
_BATCHES = re.compile(r"^lambdarec_stream_batch_size_(sum|count)\{[^}]*\} (\S+)$", re.M)
_FAILURES = re.compile(r'^lambdarec_stream_batch_failures_total\{[^}]*error="([^"]+)"[^}]*\} (\S+)$', re.M)


def buckets(workers: list[Worker]) -> dict[float, float]:
    """Cumulative latency histogram summed over workers: upper bound -> count."""
    out: dict[float, float] = defaultdict(float)
    for w in workers:
        for le, n in _BUCKET.findall(w.metrics()):
            out[float(le)] += float(n)
    return dict(out)


def quantile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """``q`` quantile of the observations made between two histogram snapshots."""
    bounds = sorted(after)
    cum = [after[b] - before.get(b, 0.0) for b in bounds]
    total = cum[-1]
    if total <= 0:
        return float("nan")
    target = q * total
    lo_b, lo_c = 0.0, 0.0
    for b, c in zip(bounds, cum, strict=True):
        if c >= target:
            if b == float("inf"):
                return lo_b
            return lo_b + (b - lo_b) * ((target - lo_c) / (c - lo_c) if c > lo_c else 1.0)
        lo_b, lo_c = b, c
    return bounds[-1]


def cpu_seconds(workers: list[Worker]) -> float:
    total = 0.0
    for w in workers:
        try:
            t = psutil.Process(w.proc.pid).cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def produce_at(se: StreamEnv, events: list, rate: float) -> None:
    """Send ``events`` at about ``rate`` per second (in 20 ms slices)."""
    with se.producer() as p:
        t0 = time.monotonic()
        for k, e in enumerate(events):
            p.send(e)
            if k % 50 == 0:
                ahead = k / rate - (time.monotonic() - t0)
                if ahead > 0.02:
                    time.sleep(ahead)


def _model_loaded(worker: Worker) -> bool:
    return bool(metric(worker.metrics(), "lambdarec_stream_model_info") == 1)


def run(n_workers: int, args: argparse.Namespace) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory() as tmp,
        stream_env(
            get_settings(), Path(tmp), partitions=args.partitions, dim=args.dim, n_items=args.items
        ) as se,
    ):
        publish_model(se, "bench", rank=args.rank)
        workers = [se.start_worker() for _ in range(n_workers)]
        for w in workers:
            se.wait_for(partial(_model_loaded, w), 60, "model")
        # warm-up (connections, caches, JIT-less but import-heavy first batches)
        warm = make_events(2000, users=args.users, items=se.item_ids, seed=99)
        se.produce(warm)
        se.wait_for(lambda: se.rt_count() >= len(warm), 120, "warm-up")

        events = make_events(args.events, users=args.users, items=se.item_ids, seed=1, rec_every=50)
        base = se.rt_count()
        cpu0 = cpu_seconds(workers)
        t0 = time.monotonic()
        se.produce(events)
        t_prod = time.monotonic() - t0
        se.wait_for(lambda: se.rt_count() >= base + len(events), 900, "throughput run")
        elapsed = time.monotonic() - t0
        cpu = cpu_seconds(workers) - cpu0
        tput = len(events) / elapsed

        rate = args.rate or max(500.0, 0.5 * tput)
        n_lat = int(rate * args.seconds)
        lat_events = make_events(n_lat, users=args.users, items=se.item_ids, seed=2)
        time.sleep(2)
        h0 = buckets(workers)
        base = se.rt_count()
        th = threading.Thread(target=produce_at, args=(se, lat_events, rate))
        th.start()
        th.join()
        se.wait_for(lambda: se.rt_count() >= base + n_lat, 300, "latency run")
        time.sleep(0.5)
        h1 = buckets(workers)
        stages: dict[str, float] = defaultdict(float)
        sizes: dict[str, float] = defaultdict(float)
        failures: dict[str, float] = defaultdict(float)
        for w in workers:
            text = w.metrics()
            for name, v in _STAGE.findall(text):
                stages[name] += float(v)
            for name, v in _BATCHES.findall(text):
                sizes[name] += float(v)
            for name, v in _FAILURES.findall(text):
                failures[name] += float(v)
        return {
            "workers": n_workers,
            "events": len(events),
            "produce_s": t_prod,
            "elapsed_s": elapsed,
            "events_per_s": tput,
            "worker_cpu_s": cpu,
            "events_per_cpu_s": len(events) / cpu if cpu else float("nan"),
            "latency_rate": rate,
            "p50_ms": 1000 * quantile(h0, h1, 0.50),
            "p99_ms": 1000 * quantile(h0, h1, 0.99),
            "mean_batch": sizes["sum"] / sizes["count"] if sizes["count"] else float("nan"),
            "failures": dict(failures),  # failed batch attempts by error (retried): should be {}
            **{f"stage_{k}_s": v for k, v in stages.items()},
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=40_000)
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--items", type=int, default=3_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--rank", type=int, default=10)
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument(
        "--rate", type=float, default=0.0, help="latency phase rate (default: half the throughput)"
    )
    ap.add_argument("--seconds", type=float, default=15.0, help="latency phase duration")
    args = ap.parse_args()
    print(f"bench_stream: {args.events} events, {args.users} users, {args.items} items, dim {args.dim}, "
          f"rank {args.rank}, {args.partitions} partitions, {psutil.cpu_count()} cores, "
          f"load {psutil.getloadavg()[0]:.1f}")  # fmt: skip
    for n in args.workers:
        r = run(n, args)
        print(
            f"workers={n}: {r['events_per_s']:,.0f} events/s end-to-end"
            f" ({r['events']:,} in {r['elapsed_s']:.1f}s;"
            f" produce {r['produce_s']:.1f}s), {r['events_per_cpu_s']:,.0f} events/worker-CPU-s;"
            f" latency at {r['latency_rate']:,.0f}/s: p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms"
        )
        stages = {k[6:-2]: v for k, v in r.items() if k.startswith("stage_")}
        total = stages.pop("total", 0.0) or 1.0
        print(
            f"  mean batch {r['mean_batch']:,.0f} events; batch time: "
            + ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in sorted(stages.items()))
        )
        print(f"  failed batch attempts: {r['failures'] or 'none'}; load now {psutil.getloadavg()[0]:.1f}")
        print("BENCH_RESULT " + json.dumps({"bench": "stream", **r}), flush=True)


if __name__ == "__main__":
    main()
