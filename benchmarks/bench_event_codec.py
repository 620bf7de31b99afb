"""Decode+validate speed of InteractionEvent: msgspec (the contract) vs an equivalent pydantic v2 model.

Why: every event crosses this code at least twice (ingest, speed layer), so the codec is chosen by
measurement. Both sides get the same 100k JSON payloads (a realistic mix: every type, ratings on
``rate``, some contexts and served-list references) and enforce the same rules, including the
cross-field ones and the future-timestamp check. Run::

    .venv/bin/python -m benchmarks.bench_event_codec [--n 100000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator
from rich.console import Console
from rich.table import Table

from schemas import events as ev

_LIM = ev.limits()


# pydantic-core's Rust regex has no trailing-newline quirk, so the plain pattern is exact here.
PId = Annotated[str, Field(min_length=1, max_length=ev.ID_MAX_LENGTH, pattern=r"^[^\x00-\x1f\x7f]+$")]


class PydanticEvent(BaseModel):
    """The same contract as schemas.events.InteractionEvent, written the idiomatic pydantic way."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    event_id: uuid.UUID
    user_id: PId
    item_id: PId
    type: ev.EventType
    occurred_at: AwareDatetime
    rating: Annotated[float, Field(ge=1, le=5, multiple_of=0.5)] | None = None
    value: Annotated[float, Field(allow_inf_nan=False)] | None = None
    watch_duration_sec: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    session_id: PId | None = None
    source: ev.Source | None = None
    rec_id: PId | None = None
    position: Annotated[int, Field(ge=0, le=ev.POSITION_MAX)] | None = None
    context: dict[str, Any] | None = None
    schema_version: Literal[1] = 1
    received_at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _cross_field(self) -> PydanticEvent:
        if (self.type == ev.EventType.RATE) != (self.rating is not None):
            raise ValueError("rating: required exactly when type is 'rate'")
        if (self.rec_id is None) != (self.position is None):
            raise ValueError("rec_id and position must be set together")
        if self.context is not None:
            if len(self.context) > _LIM.max_context_keys:
                raise ValueError("context: too many keys")
            if len(orjson.dumps(self.context)) > _LIM.max_context_bytes:
                raise ValueError("context: too large")
        if self.occurred_at.timestamp() > time.time() + _LIM.future_tolerance_sec:
            raise ValueError("occurred_at: in the future")
        return self


def make_payloads(n: int, seed: int = 7) -> list[bytes]:
    """n distinct valid event payloads, encoded independently of either library (orjson)."""
    rnd = random.Random(seed)
    types = list(ev.EventType)
    base = datetime(2024, 1, 1, tzinfo=UTC)
    out = []
    for i in range(n):
        t = rnd.choice(types)
        d: dict[str, Any] = {
            "event_id": str(uuid.UUID(int=rnd.getrandbits(128), version=4)),
            "user_id": f"u{rnd.randrange(100_000)}",
            "item_id": f"i{rnd.randrange(50_000)}",
            "type": t.value,
            "occurred_at": (base + timedelta(seconds=rnd.randrange(30_000_000))).isoformat(),
        }
        if t is ev.EventType.RATE:
            d["rating"] = rnd.randrange(2, 11) / 2
        if t is ev.EventType.PLAY:
            d["watch_duration_sec"] = round(rnd.random() * 7200, 1)
        if t is ev.EventType.PURCHASE:
            d["value"] = round(rnd.random() * 30, 2)
        if i % 3 == 0:
            d["session_id"] = f"s{rnd.randrange(1_000_000)}"
            d["source"] = rnd.choice(["web", "mobile", "email", "push"])
        if i % 4 == 0:
            d["rec_id"] = str(uuid.UUID(int=rnd.getrandbits(128), version=4))
            d["position"] = rnd.randrange(20)
        if i % 5 == 0:
            d["context"] = {"device": rnd.choice(["ios", "android", "desktop"]), "experiment": "exp-a"}
        out.append(orjson.dumps(d))
    return out


def measure(
    fns: dict[str, Callable[[bytes], object]], payloads: list[bytes], repeat: int
) -> dict[str, float]:
    """Best-of-``repeat`` events/s per codec. The codecs take turns within each round so that both
    see the same background load (the machine is shared; noise only ever slows a run down)."""
    best = dict.fromkeys(fns, math.inf)
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for p in payloads:
                fn(p)
            best[name] = min(best[name], time.perf_counter() - t0)
    return {name: len(payloads) / t for name, t in best.items()}


def run(n: int = 100_000, repeat: int = 3) -> dict[str, float]:
    payloads = make_payloads(n)
    # Both must accept every payload, otherwise the comparison is meaningless.
    for p in payloads[:2000]:
        ev.decode(p)
        PydanticEvent.model_validate_json(p)
    return measure(
        {
            "msgspec (schemas.events.decode)": ev.decode,
            "pydantic v2 (model_validate_json)": PydanticEvent.model_validate_json,
        },
        payloads,
        repeat,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    results = run(args.n, args.repeat)
    ref = results["pydantic v2 (model_validate_json)"]
    table = Table(title=f"InteractionEvent decode+validate, {args.n:,} JSON payloads, best of {args.repeat}")
    table.add_column("codec")
    table.add_column("events/s", justify="right")
    table.add_column("µs/event", justify="right")
    table.add_column("vs pydantic", justify="right")
    for name, rate in results.items():
        table.add_row(name, f"{rate:,.0f}", f"{1e6 / rate:.2f}", f"{rate / ref:.1f}x")
    Console().print(table)
    print("BENCH_RESULT " + json.dumps({"bench": "event_codec", "events_per_s": results}), flush=True)


if __name__ == "__main__":
    main()
