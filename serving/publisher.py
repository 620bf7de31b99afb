"""Async bridge to Kafka for the API: await a batch's broker acknowledgements without blocking.

Why here and not ``streams.producer.EventProducer``: the layers never import each other, and the
API needs a different shape anyway: an asyncio future per *batch*, resolved by the delivery
callbacks running on a dedicated poll thread. Both producers share their librdkafka config
(idempotent, acks=all, compression) through :func:`schemas.topics.producer_config`.

One ``call_soon_threadsafe`` per batch (not per record) keeps the event loop free of wake-ups at
high rates.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Sequence

from confluent_kafka import KafkaError, Message, Producer

from lambdarec.settings import Settings
from schemas.topics import INTERACTIONS, producer_config, topic_name


class PublishUnavailable(RuntimeError):
    """Nothing was queued: the local queue is full or the publisher is not running."""


_PENDING = "pending"


class _PendingBatch:
    """Delivery state of one batch: per record None (acknowledged), an error, or _PENDING."""

    __slots__ = ("future", "lock", "loop", "pending", "results")

    def __init__(self, loop: asyncio.AbstractEventLoop, n: int) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.pending = n
        self.results: list[str | None] = [_PENDING] * n
        self.lock = threading.Lock()  # ack (poll thread) vs give_up (event loop)

    def ack(self, index: int, err: KafkaError | None, _msg: Message) -> None:
        """Delivery callback (poll thread)."""
        self._settle(index, None if err is None else f"{err.name()}: {err.str()}")

    def give_up(self, index: int, reason: str) -> None:
        """A record that was never queued."""
        self._settle(index, reason)

    def _settle(self, index: int, result: str | None) -> None:
        with self.lock:
            self.results[index] = result
            self.pending -= 1
            done = self.pending == 0
        if done:
            self.loop.call_soon_threadsafe(self._resolve)

    def _resolve(self) -> None:
        if not self.future.done():
            self.future.set_result(None)


class AsyncEventPublisher:
    """A shared idempotent producer plus a poll thread; :meth:`publish` awaits acknowledgements."""

    def __init__(self, settings: Settings, *, topic: str | None = None, config: dict | None = None) -> None:
        self.settings = settings
        self.topic = topic or topic_name(settings, INTERACTIONS)
        self.timeout = settings.events.ingest_delivery_timeout_ms / 1000
        self._config = producer_config(
            settings,
            **{
                "client.id": "lambdarec-api",
                "message.timeout.ms": settings.events.ingest_delivery_timeout_ms,
                "error_cb": self._on_client_error,
                **(config or {}),
            },
        )
        self._producer: Producer | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        #: the latest connection-level error, to explain a 503
        self.last_client_error: str | None = None

    def _on_client_error(self, err: KafkaError) -> None:
        self.last_client_error = f"{err.name()}: {err.str()}"

    def start(self) -> None:
        """Create the producer and start serving its callbacks (idempotent)."""
        if self._producer is not None:
            return
        self._producer = Producer(self._config)
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll_loop, name="kafka-ingest-poll", daemon=True)
        self._thread.start()

    def _poll_loop(self) -> None:
        assert self._producer is not None
        while not self._stop.is_set():
            self._producer.poll(0.1)

    async def publish(self, records: Sequence[tuple[bytes, bytes]]) -> list[str | None]:
        """Queue ``(key, value)`` records and wait for the broker. Returns, per record, None when
        acknowledged or the reason it was not (failed, or not acknowledged within the timeout).
        Raises PublishUnavailable, with nothing queued, when the local queue cannot take them."""
        producer = self._producer
        if producer is None:
            raise PublishUnavailable("the ingest producer is not running")
        if not records:
            return []
        loop = asyncio.get_running_loop()
        batch = _PendingBatch(loop, len(records))
        queued = 0
        try:
            for i, (key, value) in enumerate(records):
                producer.produce(self.topic, value, key, on_delivery=functools.partial(batch.ack, i))
                queued += 1
        except BufferError:
            if queued == 0:
                raise PublishUnavailable("the ingest queue is full (broker slow or down)") from None
            # Part of the batch is queued: the rest is reported as not accepted, never silently.
            for i in range(queued, len(records)):
                batch.give_up(i, "local queue full (broker slow or down)")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(batch.future), self.timeout + 2)
        reason = f"not acknowledged within {self.timeout:g}s"
        if self.last_client_error:
            reason += f" (last broker error: {self.last_client_error})"
        # Records still pending at the timeout are unconfirmed: they may yet be written, and the
        # event_id makes the client's retry safe.
        with batch.lock:
            return [reason if r is _PENDING else r for r in batch.results]

    def close(self, timeout: float = 10.0) -> int:
        """Stop polling and flush; returns the number of records still undelivered."""
        if self._producer is None:
            return 0
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        left = self._producer.flush(timeout)
        self._producer = None
        return left
