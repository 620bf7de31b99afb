"""Ingest throughput on this machine: SDK producer (acks=all) and HTTP ``POST /v1/events``.

Prints figures, it is not a timed test. Needs the local Kafka (``lambdarec infra up kafka``); uses
private ``bench.*`` topics and deletes them afterwards. Run::

    .venv/bin/python -m benchmarks.bench_ingest [--events 300000] [--http-events 200000]

* SDK: pre-built events through ``EventProducer.send`` (validate + encode + produce) and raw JSON
  through ``send_json`` (decode + encode + produce), each with every compression codec; events/s
  include the final flush, i.e. every record acknowledged by the broker (acks=all, idempotent).
* HTTP: a real uvicorn server (separate process, 1 worker) on loopback; an async httpx client
  keeps ``--concurrency`` batch requests of ``--batch`` events in flight; events/s counts 202s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
from confluent_kafka.admin import AdminClient, NewTopic
from rich.console import Console
from rich.table import Table

from lambdarec.settings import Settings, get_settings
from schemas import events as ev
from streams.producer import EventProducer

console = Console()

_KAFKA_LOG = logging.getLogger("lambdarec.kafka")  # quiet: librdkafka logs to Python logging


def make_events(n: int) -> list[dict[str, Any]]:
    base = datetime(2024, 1, 1, tzinfo=UTC)
    types = list(ev.EventType)
    out = []
    for i in range(n):
        t = types[i % len(types)]
        d: dict[str, Any] = {
            "event_id": str(uuid.uuid4()),
            "user_id": f"u{i % 50_000}",
            "item_id": f"i{(i * 7919) % 20_000}",
            "type": t.value,
            "occurred_at": (base + timedelta(seconds=i)).isoformat(),
        }
        if t is ev.EventType.RATE:
            d["rating"] = (i % 9 + 2) / 2
        if i % 4 == 0:
            d["source"] = "web"
            d["context"] = {"device": "ios"}
        out.append(d)
    return out


@contextmanager
def bench_topic(settings: Settings, name: str, partitions: int = 6) -> Iterator[str]:
    conf: dict[str, Any] = {"bootstrap.servers": settings.kafka.bootstrap_servers, "logger": _KAFKA_LOG}
    admin = AdminClient(conf)
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(timeout=30)
    time.sleep(1)  # metadata propagation
    try:
        yield name
    finally:
        admin.delete_topics([name])[name].result(timeout=30)


def bench_sdk(settings: Settings, payloads: list[bytes], compression: str, mode: str) -> dict[str, float]:
    structs = [ev.decode(p) for p in payloads] if mode == "send" else []
    tx = {"bytes": 0}

    def on_stats(raw: str) -> None:
        tx["bytes"] = sum(b.get("txbytes", 0) for b in json.loads(raw)["brokers"].values())

    with bench_topic(settings, f"bench.sdk-{uuid.uuid4().hex[:8]}") as topic:
        producer = EventProducer(
            settings,
            topic=topic,
            config={"compression.type": compression, "stats_cb": on_stats, "statistics.interval.ms": 500},
        )
        t0 = time.perf_counter()
        if mode == "send":
            for e in structs:
                producer.send(e)
        else:
            for p in payloads:
                producer.send_json(p)
        producer.flush()
        elapsed = time.perf_counter() - t0
        time.sleep(0.6)  # one more stats report
        producer._producer.poll(0)
        producer.close()
    return {"rate": len(payloads) / elapsed, "mb": tx["bytes"] / 1e6, "delivered": producer.delivered}


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("uvicorn exited")
        try:
            httpx.get(f"{url}/openapi.json", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise TimeoutError("uvicorn did not start")


async def _drive(
    url: str, bodies: list[bytes], concurrency: int, key: str = ""
) -> tuple[int, float, list[int]]:
    """POST every body with ``concurrency`` requests in flight; (events accepted, seconds, statuses)."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)
    accepted = 0
    statuses: list[int] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def worker() -> None:
            nonlocal accepted
            while not queue.empty():
                body = queue.get_nowait()
                r = await client.post(
                    "/v1/events", content=body, headers={"content-type": "application/json", "x-api-key": key}
                )
                statuses.append(r.status_code)
                if r.status_code == 202:
                    accepted += len(r.json()["accepted"])

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return accepted, time.perf_counter() - t0, statuses


def bench_http(
    settings: Settings, events: list[dict[str, Any]], batch: int, concurrency: int
) -> dict[str, float]:
    prefix = f"bench-{uuid.uuid4().hex[:8]}."
    with bench_topic(settings, f"{prefix}interactions"):
        port = _free_port()
        env = {**os.environ, "LAMBDAREC_KAFKA__TOPIC_PREFIX": prefix}
        cmd = [sys.executable, "-m", "uvicorn", "serving.app:create_app", "--factory"]
        cmd += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"]
        proc = subprocess.Popen(cmd, env=env)
        key_name, key = _api_key(settings)  # the write endpoint needs a key (serving.require_api_keys)
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_http(url, proc)
            bodies = [orjson.dumps(events[i : i + batch]) for i in range(0, len(events), batch)]
            asyncio.run(_drive(url, bodies[:4], concurrency, key))  # warm-up (connections, producer)
            accepted, elapsed, statuses = asyncio.run(_drive(url, bodies, concurrency, key))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            _drop_api_key(settings, key_name)
    bad = [s for s in statuses if s != 202]
    return {"rate": accepted / elapsed, "accepted": accepted, "errors": len(bad)}


def _api_key(settings: Settings) -> tuple[str, str]:
    """A write key without a practical rate limit, as a producing service would have."""
    from schemas.migrate import connect
    from serving.security import create_key_sync

    name = f"bench-ingest-{uuid.uuid4().hex[:8]}"
    with connect(settings) as conn:
        key = create_key_sync(conn, name, ["write"], 10**9)
        conn.commit()
    return name, key


def _drop_api_key(settings: Settings, name: str) -> None:
    from schemas.migrate import connect

    with connect(settings) as conn:
        conn.execute("DELETE FROM api_keys WHERE name = %s", (name,))
        conn.commit()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=300_000, help="SDK events per run")
    ap.add_argument("--http-events", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=500, help="events per HTTP request")
    ap.add_argument("--concurrency", type=int, default=8, help="HTTP requests in flight")
    ap.add_argument("--codecs", default="lz4,zstd,none")
    ap.add_argument("--repeat", type=int, default=3, help="SDK rounds (best and median reported)")
    args = ap.parse_args()
    settings = get_settings()

    payloads = [orjson.dumps(d) for d in make_events(args.events)]
    avg = sum(map(len, payloads)) / len(payloads)
    sdk = Table(title=f"SDK EventProducer, {args.events:,} events (~{avg:.0f} B JSON), acks=all, idempotent")
    for col in ("path", "compression", "best events/s", "median events/s", "MB on the wire"):
        sdk.add_column(col, justify="right" if col != "path" else "left")
    runs: dict[tuple[str, str], list[dict[str, float]]] = {}
    # Rounds interleave the variants so that each sees the same background load.
    for round_no in range(args.repeat):
        for codec in args.codecs.split(","):
            for mode in ("send", "send_json"):
                r = bench_sdk(settings, payloads, codec, mode)
                assert r["delivered"] == args.events
                runs.setdefault((mode, codec), []).append(r)
                console.print(f"  round {round_no + 1} {mode:<9} {codec:<5} {r['rate']:>10,.0f} events/s")
    for (mode, codec), rs in runs.items():
        rates = sorted(r["rate"] for r in rs)
        median = statistics.median(rates)
        sdk.add_row(mode, codec, f"{rates[-1]:,.0f}", f"{median:,.0f}", f"{rs[0]['mb']:.1f}")
    console.print(sdk)

    events = make_events(args.http_events)
    h = bench_http(settings, events, args.batch, args.concurrency)
    http = Table(title="HTTP POST /v1/events (uvicorn, 1 worker, loopback)")
    for col in ("batch", "in flight", "events", "non-202", "events/s"):
        http.add_column(col, justify="right")
    http.add_row(
        str(args.batch), str(args.concurrency), f"{h['accepted']:,}", str(h["errors"]), f"{h['rate']:,.0f}"
    )
    console.print(http)
    best = {f"{mode}/{codec}": max(r["rate"] for r in rs) for (mode, codec), rs in runs.items()}
    result = {"bench": "ingest", "sdk_best_events_per_s": best, "http_events_per_s": h["rate"]}
    print("BENCH_RESULT " + json.dumps({**result, "http_errors": h["errors"]}), flush=True)


if __name__ == "__main__":
    main()
