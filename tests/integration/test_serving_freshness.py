"""End to end freshness: a real event through Kafka and a real ``lambdarec stream worker`` changes
the user's list served by the API (cache on), without a batch run.

The speed layer commits the profile (taste vector, ALS fold-in, rt row) and bumps
``rec:ver:{user}``; the API's cached list becomes unreachable and the next request recomputes.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from lambdarec.settings import Settings
from schemas import events as ev
from schemas.events import EventType, InteractionEvent
from serving.app import create_app
from tests.integration.stream_support import publish_model, stream_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def test_event_through_stream_worker_changes_the_served_list(
    settings: Settings, kafka: Settings, postgres: Settings, redis_service: Settings, tmp_path: Path
) -> None:
    extra: dict[str, str] = {}  # the default flush interval: what users get
    with stream_env(settings, tmp_path, extra_env=extra) as se:
        publish_model(se, "v1", seed=3)
        se.start_worker()
        user = f"fresh-{uuid.uuid4().hex[:8]}"
        with se.pg() as conn:
            conn.execute("INSERT INTO user_profiles (user_id, data_usage_consent) VALUES (%s, true)", (user,))
        app = create_app(se.settings)
        try:
            async with (
                app.router.lifespan_context(app),
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c,
            ):
                svc = app.state.services
                await svc.pool.wait(timeout=10)
                deadline = time.monotonic() + 60
                while svc.models.current is None and time.monotonic() < deadline:  # watcher loads v1
                    await _sleep(0.2)
                # warm-up: the worker owns its partitions and has applied a first batch
                warm = f"warm-{uuid.uuid4().hex[:8]}"
                producer = se.producer()
                producer.send(_play(warm, se.item_ids[1]))
                producer.flush(10)
                se.wait_for(
                    lambda: (
                        se.scalar("SELECT count(*) FROM rt_user_interactions WHERE user_id = %s", warm) == 1
                    ),
                    60,
                    "warm-up event applied",
                )
                took: list[float] = []
                for n, who in enumerate([user, *[f"fresh-{uuid.uuid4().hex[:8]}" for _ in range(4)]]):
                    if who != user:
                        with se.pg() as conn:
                            conn.execute(
                                "INSERT INTO user_profiles (user_id, data_usage_consent) VALUES (%s, true)",
                                (who,),
                            )
                    url = f"/v1/users/{who}/recommendations?k=5"
                    before = (await c.get(url)).json()
                    again = (await c.get(url)).json()
                    assert again["cache_hit"] is True and before["algorithm_source"] == "popular"
                    watched = se.item_ids[17 + n]
                    t0 = time.monotonic()
                    producer.send(_play(who, watched))
                    producer.flush(10)
                    after = before
                    while time.monotonic() - t0 < 30:
                        after = (await c.get(url)).json()
                        if after["algorithm_source"] != "popular":
                            break
                        await _sleep(0.01)
                    took.append(time.monotonic() - t0)
                    ids = [i["item_id"] for i in after["items"]]
                    assert after["algorithm_source"] in ("realtime", "hybrid"), after
                    assert watched not in ids and after["cache_hit"] is False
                    assert any(i["explanation"].startswith("because you watched") for i in after["items"])
                producer.close()
                print("event -> changed list (s):", " ".join(f"{t:.2f}" for t in took))
                # the bar: within a second (median of five; a loaded CI box gets some slack on
                # the slowest one)
                assert sorted(took)[len(took) // 2] < 1.0, took
                assert max(took) < 5.0, took
        finally:
            ev.configure(None)


def _play(user: str, item: str) -> InteractionEvent:
    return InteractionEvent(
        event_id=uuid.uuid4(), user_id=user, item_id=item, type=EventType.PLAY, occurred_at=datetime.now(UTC)
    )


async def _sleep(s: float) -> None:
    import asyncio

    await asyncio.sleep(s)
