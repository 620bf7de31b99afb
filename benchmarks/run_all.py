"""Run every benchmark in benchmarks/ and print one table of the headline figures.

    .venv/bin/python -m benchmarks.run_all                 # quick sizes (~15-25 min on 2 shared cores)
    .venv/bin/python -m benchmarks.run_all --size full     # each benchmark's own defaults (hours)
    .venv/bin/python -m benchmarks.run_all --only ingest serving --json var/bench/latest.json
    .venv/bin/python -m benchmarks.run_all --from-logs var/bench/20260101-120000   # table only
    .venv/bin/python -m benchmarks.run_all --only ingest --log-dir var/bench/20260101-120000  # redo one

Each benchmark runs as its own process (``python -m benchmarks.bench_X ...``), its output is kept
in ``var/bench/<timestamp>/<name>.log``, and its figures come from the one machine-readable line
it prints last (``BENCH_RESULT {json}``); this script never measures anything itself. A benchmark
that fails or times out is reported as such in the table (with its log) and the others still run.
Needs the services (``lambdarec infra up``) and ``wrk`` for the serving benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.table import Table

from lambdarec.settings import PROJECT_ROOT

MARK = "BENCH_RESULT "
console = Console()


@dataclass(frozen=True)
class Bench:
    name: str
    module: str
    quick: list[str]
    full: list[str]
    timeout_min: float  # quick; full gets 8x


BENCHES: list[Bench] = [
    Bench("event_codec", "bench_event_codec", ["--n", "20000", "--repeat", "2"], [], 5),
    Bench(
        "ingest",
        "bench_ingest",
        ["--events", "50000", "--http-events", "20000", "--repeat", "1", "--codecs", "lz4"],
        [],
        10,
    ),
    Bench("world", "bench_world", ["--users", "20000", "--items", "5000", "--events", "200000"], [], 10),
    Bench("catalog", "bench_catalog", ["--items", "5000", "--sample", "500"], [], 15),
    Bench("lake", "bench_lake", ["--events", "20000", "--impressions", "500000"], [], 15),
    Bench(
        "stream",
        "bench_stream",
        [
            "--events",
            "5000",
            "--users",
            "2000",
            "--items",
            "500",
            "--dim",
            "64",
            "--workers",
            "1",
            "--seconds",
            "5",
        ],
        [],
        20,
    ),
    Bench(
        "serving",
        "bench_serving",
        [
            "--users",
            "5000",
            "--items",
            "3000",
            "--duration",
            "5",
            "--cached-users",
            "500",
            "--rate",
            "0",
            "500",
        ],
        [],
        20,
    ),
    Bench("topk", "bench_topk", ["--users", "20000", "--items", "10000", "--spark-users", "5000"], [], 15),
    Bench("batch", "bench_batch", ["--events", "100000", "--users", "5000", "--items", "2000"], [], 30),
    Bench("offline_eval", "bench_offline_eval", ["--dataset", "synthetic", "--no-spark"], [], 20),
]


# ------------------------------------------------------------------------------------- running
def run_one(b: Bench, size: str, log_dir: Path) -> tuple[str, list[dict[str, Any]], float]:
    """Run one benchmark; returns (status, its BENCH_RESULT objects, seconds)."""
    args = b.quick if size == "quick" else b.full
    cmd = [sys.executable, "-m", f"benchmarks.{b.module}", *args]
    log = log_dir / f"{b.name}.log"
    timeout = b.timeout_min * 60 * (1 if size == "quick" else 8)
    console.print(f"[bold]{b.name}[/]: {' '.join(cmd[1:])}  (log {log})")
    t0 = time.monotonic()
    with log.open("w") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        try:
            proc = subprocess.run(
                cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT, timeout=timeout, check=False
            )
            status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
        except subprocess.TimeoutExpired:
            status = f"timed out after {timeout / 60:.0f} min"
    elapsed = time.monotonic() - t0
    results = parse_results(log.read_text(errors="replace"))
    if status == "ok" and not results:
        status = "no BENCH_RESULT line"
    console.print(f"  {status} in {elapsed:.0f}s")
    return status, results, elapsed


def parse_results(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        if line.startswith(MARK):
            out.append(json.loads(line[len(MARK) :]))
    return out


# ------------------------------------------------------------------------------------- figures
Row = tuple[str, str, str]  # (figure, value, where from / how)


def _fmt(v: float | None, unit: str = "", digits: int = 0) -> str:
    if v is None or v != v:  # None or NaN
        return "-"
    return f"{v:,.{digits}f}{unit}"


def _ingest(rs: list[dict[str, Any]]) -> list[Row]:
    r = rs[-1]
    sdk = r["sdk_best_events_per_s"]
    best = max(sdk, key=sdk.get)
    return [
        ("ingest, SDK (acks=all)", _fmt(sdk[best], " events/s"), f"best path/codec: {best}"),
        ("ingest, HTTP POST /v1/events", _fmt(r["http_events_per_s"], " events/s"), "1 uvicorn worker"),
    ]


def _stream(rs: list[dict[str, Any]]) -> list[Row]:
    rows: list[Row] = []
    for r in rs:
        w = r["workers"]
        rows.append(
            (
                f"stream, {w} worker(s)",
                _fmt(r["events_per_s"], " events/s"),
                f"{r['events']:,} events end to end",
            )
        )
        rows.append(
            (
                f"freshness p50 / p99 ({w} worker(s))",
                f"{_fmt(r['p50_ms'], ' ms')} / {_fmt(r['p99_ms'], ' ms')}",
                f"Kafka record -> profile committed, at {r['latency_rate']:,.0f} events/s",
            )
        )
    return rows


def _serving(rs: list[dict[str, Any]]) -> list[Row]:
    rows: list[Row] = []
    for key, r in rs[-1]["results"].items():
        path, conns, rate = key.split("_")
        load = "flat out" if rate == "rmax" else f"at {rate[1:]} req/s"
        rows.append(
            (
                f"serving {path}, p50 / p99 ({load}, {conns[1:]} conns)",
                f"{_fmt(r.get('p50_ms'), ' ms', 1)} / {_fmt(r.get('p99_ms'), ' ms', 1)}",
                f"{_fmt(r.get('rps'), ' req/s')}",
            )
        )
    return rows


def _batch(rs: list[dict[str, Any]]) -> list[Row]:
    r = rs[-1]
    return [
        (
            f"batch cycle ({r['events'] / 1e6:.2f}M events)",
            _fmt(r["total_s"], " s"),
            f"~{r['extrapolated_total_s'] / 60:,.0f} min extrapolated to {r['target_events'] / 1e6:.0f}M",
        )
    ]


def _topk(rs: list[dict[str, Any]]) -> list[Row]:
    r = rs[-1]
    sp = r.get("speedup_vs_spark")
    return [
        (
            f"top-{r['k']} speed-up over Spark",
            f"{sp:.1f}x" if sp else "-",
            f"{r['users']:,} users x {r['items']:,} items (recommendForAllUsers)",
        )
    ]


def _offline(rs: list[dict[str, Any]]) -> list[Row]:
    rows: list[Row] = []
    for r in rs:
        ours = [x for x in r["rows"] if not str(x["model"]).startswith("MS ref") and "ndcg@10" in x]
        if not ours:
            continue
        promoted = [x for x in ours if "PROMOTED" in str(x["model"])]
        pick = promoted[0] if promoted else max(ours, key=lambda x: x["ndcg@10"])
        rows.append((f"offline nDCG@10, {r['dataset']}", f"{pick['ndcg@10']:.4f}", str(pick["model"])))
    return rows


def _codec(rs: list[dict[str, Any]]) -> list[Row]:
    rates = rs[-1]["events_per_s"]
    best = max(rates, key=rates.get)
    return [("event decode + validate", _fmt(rates[best], " events/s"), best)]


def _catalog(rs: list[dict[str, Any]]) -> list[Row]:
    r = rs[-1]
    return [
        ("catalog import", _fmt(r["import_items_per_s"], " items/s"), f"{r['items']:,} items, COPY + upsert"),
        ("catalog embed", _fmt(r["embed_items_per_s"], " items/s"), "end to end, tf-idf"),
    ]


def _lake(rs: list[dict[str, Any]]) -> list[Row]:
    r = rs[-1]
    rows: list[Row] = []
    if "archive_records_per_s" in r:
        rows.append(
            ("lake archive (Kafka -> Delta on S3)", _fmt(r["archive_records_per_s"], " records/s"), "")
        )
    for engine, secs in (r.get("query_s") or {}).items():
        rows.append((f"analyst query, {engine}", _fmt(secs, " s", 2), "daily CTR by algorithm"))
    return rows


def _world(rs: list[dict[str, Any]]) -> list[Row]:
    r = rs[-1]
    return [("synthetic world", _fmt(r["events_per_s"], " events/s"), f"{r['events']:,} events")]


FIGURES: dict[str, Callable[[list[dict[str, Any]]], list[Row]]] = {
    "ingest": _ingest,
    "stream": _stream,
    "serving": _serving,
    "batch": _batch,
    "topk": _topk,
    "offline_eval": _offline,
    "event_codec": _codec,
    "catalog": _catalog,
    "lake": _lake,
    "world": _world,
}
ORDER = [
    "ingest",
    "stream",
    "serving",
    "batch",
    "topk",
    "offline_eval",
    "event_codec",
    "catalog",
    "lake",
    "world",
]


def machine() -> str:
    load = os.getloadavg()
    mem = psutil.virtual_memory().total / 2**30
    cpu = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        cpu = next(
            (ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), cpu
        )
    except OSError:
        pass
    return f"{cpu}, {psutil.cpu_count()} CPUs, {mem:.0f} GiB RAM, load avg {load[0]:.1f} at the end"


def table(outcome: dict[str, tuple[str, list[dict[str, Any]], float]], title: str) -> Table:
    t = Table(title=title)
    t.add_column("figure")
    t.add_column("value", justify="right")
    t.add_column("notes / benchmark", overflow="fold")
    for name in ORDER:
        if name not in outcome:
            continue
        status, results, secs = outcome[name]
        if results:
            try:
                rows = FIGURES[name](results)
            except (KeyError, TypeError, ValueError) as exc:
                rows = [(name, "-", f"result not understood: {exc!r}")]
        else:
            rows = []
        for fig, val, note in rows:
            t.add_row(fig, val, f"{note}  [dim]({name})[/]" if note else f"[dim]{name}[/]")
        if status != "ok":
            t.add_row(f"[red]{name}[/]", "[red]-[/]", f"[red]{status}[/] ({secs:.0f}s): see its log")
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--size", choices=["quick", "full"], default="quick", help="quick sizes or each bench's own"
    )
    ap.add_argument("--only", nargs="+", choices=[b.name for b in BENCHES], help="run just these")
    ap.add_argument("--skip", nargs="+", default=[], choices=[b.name for b in BENCHES])
    ap.add_argument("--json", type=Path, default=None, help="also write every result here")
    ap.add_argument(
        "--from-logs", type=Path, default=None, help="rebuild the table from a previous run's logs"
    )
    ap.add_argument(
        "--log-dir", type=Path, default=None, help="write the logs here (e.g. re-run one bench into a run)"
    )
    args = ap.parse_args()

    outcome: dict[str, tuple[str, list[dict[str, Any]], float]] = {}
    if args.from_logs:
        for b in BENCHES:
            log = args.from_logs / f"{b.name}.log"
            if log.exists():
                res = parse_results(log.read_text(errors="replace"))
                outcome[b.name] = ("ok" if res else "no BENCH_RESULT line", res, 0.0)
        log_dir = args.from_logs
    else:
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        log_dir = args.log_dir or PROJECT_ROOT / "var" / "bench" / f"{stamp}-{args.size}"
        log_dir.mkdir(parents=True, exist_ok=True)
        for b in BENCHES:
            if (args.only and b.name not in args.only) or b.name in args.skip:
                continue
            outcome[b.name] = run_one(b, args.size, log_dir)
    title = f"lambdarec benchmarks ({args.size}; logs {log_dir})\n{machine()}"
    console.print(table(outcome, title))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "size": args.size,
            "machine": machine(),
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "logs": str(log_dir),
            "benchmarks": {n: {"status": s, "seconds": t, "results": r} for n, (s, r, t) in outcome.items()},
        }
        args.json.write_text(json.dumps(payload, indent=2, default=str))
    if any(s != "ok" for s, _, _ in outcome.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
