"""Helpers for the test_events_* integration tests: private topics, read-back, a real server.

Every test uses its own topics (``test.events-<uuid>``) so tests stay independent of each other
and of whatever else is running against the shared local broker.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import uvicorn
from confluent_kafka import Consumer, Message, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from lambdarec.settings import Settings
from tests.ports import free_port

_KAFKA_LOG = logging.getLogger("lambdarec.kafka")  # quiet: librdkafka logs to Python logging


def admin(settings: Settings) -> AdminClient:
    return AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers, "logger": _KAFKA_LOG})


@contextmanager
def temp_topics(settings: Settings, *partitions: int) -> Iterator[list[str]]:
    """Create one fresh topic per entry of ``partitions``; delete them afterwards."""
    names = [f"test.events-{uuid.uuid4().hex[:12]}" for _ in partitions]
    with created_topics(
        settings,
        [NewTopic(n, num_partitions=p, replication_factor=1) for n, p in zip(names, partitions, strict=True)],
    ) as created:
        yield created


@contextmanager
def created_topics(settings: Settings, topics: list[NewTopic]) -> Iterator[list[str]]:
    """Create ``topics`` and wait until the broker's metadata shows them; delete them afterwards."""
    names = [t.topic for t in topics]
    a = admin(settings)
    for f in a.create_topics(topics).values():
        f.result(timeout=30)
    _wait_for_metadata(a, names)
    try:
        yield names
    finally:
        for f in a.delete_topics(names).values():
            with contextlib.suppress(Exception):  # best-effort cleanup
                f.result(timeout=30)


def _wait_for_metadata(a: AdminClient, names: list[str], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        md = a.list_topics(timeout=5).topics
        if all(n in md and md[n].error is None and md[n].partitions for n in names):
            return
        time.sleep(0.1)
    raise TimeoutError(f"topics {names} not visible in metadata")


def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": f"probe-{uuid.uuid4()}"})
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
    finally:
        c.close()


def consume_all(settings: Settings, topic: str, timeout: float = 60) -> list[Message]:
    """Every record of ``topic`` up to its current end offsets (errors raise)."""
    ends = {p: hi for p, hi in end_offsets(settings, topic).items() if hi > 0}
    c = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": f"test-read-{uuid.uuid4()}",
            "enable.auto.commit": False,
        }
    )
    out: list[Message] = []
    try:
        c.assign([TopicPartition(topic, p, 0) for p in ends])
        deadline = time.monotonic() + timeout
        while ends and time.monotonic() < deadline:
            for m in c.consume(1000, timeout=0.5):
                if m.error():
                    raise RuntimeError(m.error())
                out.append(m)
                if m.offset() + 1 >= ends.get(m.partition(), 0):
                    ends.pop(m.partition(), None)
        if ends:
            raise TimeoutError(f"{topic}: partitions {sorted(ends)} not fully read in {timeout}s")
    finally:
        c.close()
    return out


def event_dict(i: int, **over: Any) -> dict[str, Any]:
    """A valid event; ``i`` picks the user (20 users) and makes times increase."""
    d: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "user_id": f"user-{i % 20}",
        "item_id": f"item-{i % 97}",
        "type": "view",
        "occurred_at": (datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=i)).isoformat(),
        "value": float(i),
    }
    d.update(over)
    return d


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run ``app`` on a real uvicorn server on a free loopback port (in a thread); yield its URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
