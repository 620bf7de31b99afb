"""Synthetic world generation rate (events/s) and the time for a MovieLens-25M-sized world.

    .venv/bin/python -m benchmarks.bench_world                 # 2.5M events, extrapolated to 25M
    .venv/bin/python -m benchmarks.bench_world --events 25000000   # the real thing (~2 min here)

Users and items default to ml-25m's size (162k users, 62k items). The setup (catalog text for
every item, ground truth) is timed separately with a zero-event run, because it does not grow with
the event count; the extrapolation is ``setup + events_time * 25M / events``. Peak RSS is printed
to show that memory is bounded by the chunk size, not by the event count.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
from pathlib import Path

from batch.world import WorldConfig, generate_world


def _run(cfg: WorldConfig, out: Path) -> float:
    t = time.perf_counter()
    generate_world(cfg, out, overwrite=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=162_000)
    ap.add_argument("--items", type=int, default=62_000)
    ap.add_argument("--events", type=int, default=2_500_000)
    ap.add_argument("--chunk-events", type=int, default=1_000_000)
    ap.add_argument("--out", type=Path, default=None, help="keep the output here (default: a temp dir)")
    args = ap.parse_args()

    base = args.out or Path(tempfile.mkdtemp(prefix="bench_world_"))
    try:
        common = {"users": args.users, "items": args.items, "seed": 1, "chunk_events": args.chunk_events}
        setup = _run(WorldConfig(**common, events=0), base / "setup")
        total = _run(WorldConfig(**common, events=args.events), base / "world")
        events_s = max(total - setup, 1e-9)
        size = sum(p.stat().st_size for p in (base / "world" / "events").glob("*.parquet"))
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"world: {args.users:,} users, {args.items:,} items, {args.events:,} events")
        print(f"  setup:   {setup:6.1f} s (catalog text + ground truth; does not grow with events)")
        print(f"  events:  {events_s:6.1f} s = {args.events / events_s:,.0f} events/s")
        print(f"  total:   {total:6.1f} s = {args.events / total:,.0f} events/s overall")
        per_event = size / max(args.events, 1)
        print(f"  parquet: {size / 1e6:,.0f} MB ({per_event:.0f} B/event), peak RSS {rss:,.0f} MB")
        if args.events < 25_000_000:
            est = setup + events_s * 25_000_000 / args.events
            print(f"  25M events (extrapolated from {args.events:,}): {est:,.0f} s = {est / 60:.1f} min")
        result = {"bench": "world", "events": args.events, "events_per_s": args.events / events_s}
        print("BENCH_RESULT " + json.dumps({**result, "setup_s": setup, "total_s": total}), flush=True)
    finally:
        if args.out is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
