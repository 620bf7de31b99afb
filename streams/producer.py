"""The Python SDK for sending interaction events: :class:`EventProducer`.

Why a wrapper and not a bare ``confluent_kafka.Producer``: the wrapper guarantees the three things
every producer of ``interactions`` must get right, so callers cannot forget them:

* nothing invalid reaches the topic: each event is validated against the v1 contract before it is
  queued (:class:`schemas.events.EventValidationError`, nothing sent);
* the key is ``user_id`` (per-user order) and the producer is idempotent with ``acks=all``;
* delivery failures are not lost in a callback: they are collected and :meth:`EventProducer.flush`
  raises :class:`DeliveryError` listing them (and the records still undelivered at the timeout).

>>> with EventProducer(settings) as producer:          # doctest: +SKIP
...     producer.send(event)                            # validated, queued, batched
...     producer.send_json(b'{"event_id": ...}')        # raw JSON in, canonical JSON out
... # leaving the block flushes; raises DeliveryError if anything was not acknowledged
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import msgspec
from confluent_kafka import KafkaError, Message, Producer

from lambdarec.settings import Settings, get_settings
from schemas import events as ev
from schemas.topics import INTERACTIONS, producer_config, topic_name


@dataclass(frozen=True)
class DeliveryFailure:
    """One record the broker did not acknowledge."""

    event_id: str | None
    key: str | None
    error: str
    code: str
    retriable: bool


class DeliveryError(RuntimeError):
    """Records were not acknowledged: failed (``failures``) or still queued at the timeout
    (``undelivered``). The message says which and why, e.g. the broker being unreachable."""

    def __init__(
        self, failures: list[DeliveryFailure], undelivered: int = 0, cause: str | None = None
    ) -> None:
        self.failures = failures
        self.undelivered = undelivered
        self.cause = cause
        parts = []
        if failures:
            first = failures[0]
            parts.append(f"{len(failures)} record(s) failed (first: {first.code}: {first.error})")
        if undelivered:
            parts.append(f"{undelivered} record(s) not acknowledged before the timeout")
        if cause:
            parts.append(f"likely cause: {cause}")
        super().__init__("; ".join(parts) or "delivery failed")


def _event_id_of(value: bytes | None) -> str | None:
    """Best-effort id of a failed record (only on the failure path, so decoding cost is fine)."""
    if not value:
        return None
    try:
        return str(msgspec.json.decode(value, type=dict[str, Any]).get("event_id"))
    except (msgspec.MsgspecError, AttributeError):
        return None


class EventProducer:
    """Validated, idempotent, batched producer of InteractionEvent v1 to the interactions topic.

    Not thread-safe for :meth:`flush` bookkeeping across threads; use one per thread or guard it.
    ``config`` overrides librdkafka settings (e.g. ``{"message.timeout.ms": 5000}``).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        topic: str | None = None,
        config: dict[str, Any] | None = None,
        poll_every: int = 1000,
    ) -> None:
        self.settings = settings or get_settings()
        self.topic = topic or topic_name(self.settings, INTERACTIONS)
        cfg = producer_config(self.settings, **{"client.id": "lambdarec-sdk", **(config or {})})
        cfg["on_delivery"] = self._on_delivery
        # Successes are counted, not reported one by one: a Python callback per acknowledged
        # record costs ~1 µs, a tenth of the budget at 100k events/s.
        cfg["delivery.report.only.error"] = True
        cfg["error_cb"] = self._on_client_error
        self._producer = Producer(cfg)
        self._poll_every = max(1, poll_every)
        self._lock = threading.Lock()
        self._failures: list[DeliveryFailure] = []
        self._last_client_error: str | None = None
        self._since_poll = 0
        self._closed = False
        #: records queued / failed since construction
        self.sent = 0
        self.failed = 0
        self._acked = 0

    # ---- callbacks (run inside poll()/flush() on the calling thread) --------------------------
    @property
    def delivered(self) -> int:
        """Records acknowledged by the broker, as of the last :meth:`flush` (or close).

        Only failures are reported one by one, so successes are known when a flush settles
        everything: then acknowledged = sent - failed. (``len()`` in between also counts queued
        client events such as statistics, so it cannot give an exact figure mid-stream.)"""
        return self._acked

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:  # only with delivery.report.only.error overridden
            return
        key = msg.key()
        failure = DeliveryFailure(
            event_id=_event_id_of(msg.value()),
            key=key.decode(errors="replace") if key else None,
            error=err.str(),
            code=err.name(),
            retriable=err.retriable(),
        )
        with self._lock:
            self.failed += 1
            self._failures.append(failure)

    def _on_client_error(self, err: KafkaError) -> None:
        # Connection-level errors (broker down, auth) do not fail records by themselves: records
        # fail at message.timeout.ms. Keep the latest so DeliveryError can say *why*.
        self._last_client_error = f"{err.name()}: {err.str()}"
        if err.fatal():
            with self._lock:
                self._failures.append(DeliveryFailure(None, None, err.str(), err.name(), False))

    # ---- sending -------------------------------------------------------------------------------
    def send(self, event: ev.InteractionEvent) -> None:
        """Validate ``event`` and queue it (key = user_id). Raises EventValidationError, nothing sent."""
        self._produce(event.key, ev.validate(event))

    def send_json(self, raw: bytes | str) -> ev.InteractionEvent:
        """Validate one JSON event and queue its canonical encoding. The fast path for files and
        pipes: decode once (msgspec), encode once, no intermediate dicts. Returns the event."""
        event = ev.decode(raw)
        self._produce(event.key, ev.encode(event))
        return event

    def send_many(self, events: Iterable[ev.InteractionEvent]) -> int:
        """Send each event; returns how many were queued. Stops at the first invalid one (raises)."""
        n = 0
        for event in events:
            self.send(event)
            n += 1
        return n

    def _produce(self, key: bytes, value: bytes) -> None:
        if self._closed:
            raise RuntimeError("EventProducer is closed")
        while True:
            try:
                self._producer.produce(self.topic, value, key)
                break
            except BufferError:
                # Local queue full: the broker is slower than we are (or down). Serve delivery
                # reports until there is room: backpressure instead of unbounded memory.
                self._producer.poll(0.05)
        self.sent += 1
        self._since_poll += 1
        if self._since_poll >= self._poll_every:
            self._since_poll = 0
            self._producer.poll(0)

    # ---- completion ----------------------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> int:
        """Wait until every queued record is acknowledged or failed; returns the number
        acknowledged so far. Raises DeliveryError if any record failed since the last flush or is
        still queued after ``timeout`` seconds (default: the delivery timeout plus a margin)."""
        if timeout is None:
            timeout = self.settings.events.delivery_timeout_ms / 1000 + 5
        deadline = time.monotonic() + timeout
        remaining = len(self._producer)
        while remaining and time.monotonic() < deadline:
            remaining = self._producer.flush(min(1.0, max(0.0, deadline - time.monotonic())))
        with self._lock:
            failures, self._failures = self._failures, []
            self._acked = max(self._acked, self.sent - self.failed - remaining)
        if failures or remaining:
            raise DeliveryError(failures, remaining, self._last_client_error or self._diagnose())
        return self.delivered

    def _diagnose(self) -> str | None:
        """Why records time out when the client saw no connection error: usually a topic that does
        not exist (with auto-create off librdkafka just waits for it until message.timeout.ms)."""
        try:
            md = self._producer.list_topics(self.topic, timeout=2).topics.get(self.topic)
        except Exception:  # the broker is unreachable: nothing more to learn
            return None
        if md is not None and md.error is not None:
            return f"topic {self.topic!r}: {md.error.str()}"
        return None

    def close(self, timeout: float | None = None) -> None:
        """Flush (raising on undelivered records) and refuse further sends."""
        if self._closed:
            return
        try:
            self.flush(timeout)
        finally:
            self._closed = True

    def __len__(self) -> int:
        """Records queued and not yet acknowledged or failed."""
        return len(self._producer)

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
            return
        # An exception is already propagating: still try to deliver what was queued, but do not
        # replace the original error with a DeliveryError.
        with contextlib.suppress(DeliveryError):
            self.close()
