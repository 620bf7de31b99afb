"""The dashboard in a real browser: the API on a real uvicorn server (scratch database with seeded
served lists, feedback, models, an analysed experiment, recent events), every page loaded in
headless Chromium; the charts must have been drawn by plotly (``js-plotly-plot`` containers with
``main-svg`` layers) with the seeded values in them, and a screenshot of each page is kept in
``test-artifacts/screenshots/`` for a person to look at.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import numpy as np
import psycopg
import pytest
from psycopg.types.json import Jsonb

from infra import chromium as browser
from lambdarec.settings import PROJECT_ROOT, Settings
from schemas import events as ev
from schemas.migrate import connect
from serving.app import create_app
from serving.experiments import analysis
from tests.integration.events_support import serve

pytestmark = pytest.mark.integration

SHOTS = PROJECT_ROOT / "test-artifacts" / "screenshots"
SOURCES = ("realtime", "batch", "popular")


class Seeded:
    def __init__(self) -> None:
        self.p = f"dash{uuid.uuid4().hex[:6]}-"
        self.versions = [f"{self.p}als-v{i}" for i in range(1, 4)]
        self.experiment_id = 0
        self.experiment = f"{self.p}diversity"


def _seed_traffic(conn: psycopg.Connection, s: Seeded, rng: np.random.Generator) -> None:
    """40 h of served lists (10 items, mixed sources) whose top positions get clicked more."""
    now = datetime.now(UTC)
    logs, feedback = [], []
    for h in range(40):
        for _ in range(15):
            rec, user = str(uuid.uuid4()), f"{s.p}u{rng.integers(50)}"
            items = [
                {"item_id": f"i{j}", "score": 1 - j / 10, "source": SOURCES[(j + h) % 3]} for j in range(10)
            ]
            algo = ("hybrid", "batch", "popular", "realtime")[int(rng.integers(4))]
            served = now - timedelta(hours=h, minutes=int(rng.integers(60)))
            logs.append((rec, user, Jsonb(items), algo, bool(rng.random() < 0.6), served))
            for pos in range(10):
                if rng.random() < 0.3 / (1 + pos):
                    feedback.append((uuid.uuid4(), rec, user, f"i{pos}", pos, "click", served))
    with conn.cursor() as cur:
        with cur.copy(
            "COPY recommendation_logs (rec_id, user_id, items, algorithm_source, cache_hit, served_at) "
            "FROM STDIN"
        ) as copy:
            for row in logs:
                copy.write_row(row)
        with cur.copy(
            "COPY recommendation_feedback (event_id, rec_id, user_id, item_id, position, event_type, "
            "occurred_at) FROM STDIN"
        ) as copy:
            for row in feedback:
                copy.write_row(row)
        with cur.copy(
            "COPY rt_user_interactions (event_id, user_id, item_id, event_type, occurred_at, received_at) "
            "FROM STDIN"
        ) as copy:
            for _ in range(300):
                t = now - timedelta(seconds=int(rng.integers(3600)))
                copy.write_row((uuid.uuid4(), f"{s.p}u{rng.integers(50)}", "i1", "view", t, t))


def _seed_models(conn: psycopg.Connection, s: Seeded) -> None:
    for i, version in enumerate(s.versions):
        model_id = conn.execute(
            "INSERT INTO models (algorithm, version, status, snapshot_uri) "
            "VALUES ('als', %s, 'registered', %s) RETURNING model_id",
            (version, f"s3://models/{version}"),
        ).fetchone()[0]  # type: ignore[index]
        conn.execute(
            "INSERT INTO model_performance_logs (model_id, phase, k, rmse, ndcg_at_k, coverage, "
            "catalog_coverage) VALUES (%s, 'validation', 10, %s, %s, %s, %s)",
            (model_id, 0.95 - 0.05 * i, 0.20 + 0.03 * i, 0.80 + 0.05 * i, 0.30 + 0.1 * i),
        )


async def _seed_experiment(
    settings: Settings, conn: psycopg.Connection, s: Seeded, rng: np.random.Generator
) -> None:
    """A concluded two-arm experiment whose results were stored by the real analysis."""
    exp_id = conn.execute(
        "INSERT INTO experiments (name, minimum_sample_size) VALUES (%s, 100) RETURNING experiment_id",
        (s.experiment,),
    ).fetchone()[0]  # type: ignore[index]
    s.experiment_id = exp_id
    for name, ctl, cfg in (("control", True, {}), ("diverse", False, {"diversity": 0.5})):
        conn.execute(
            "INSERT INTO experiment_variants (experiment_id, name, is_control, traffic_percent, config) "
            "VALUES (%s, %s, %s, 50, %s)",
            (exp_id, name, ctl, Jsonb(cfg)),
        )
    conn.execute("UPDATE experiments SET status = 'running' WHERE experiment_id = %s", (exp_id,))
    served = datetime.now(UTC) - timedelta(hours=2)
    with conn.cursor() as cur:
        rows, clicks = [], []
        for arm, ctr in (("control", 0.10), ("diverse", 0.16)):
            for u in range(600):
                for _ in range(2):
                    rec, user = str(uuid.uuid4()), f"{s.p}{arm}{u}"
                    rows.append((rec, user, Jsonb([{"item_id": "i1"}]), "hybrid", exp_id, arm, served))
                    if rng.random() < ctr:
                        clicks.append((uuid.uuid4(), rec, user, "i1", 0, "click", served))
        with cur.copy(
            "COPY recommendation_logs (rec_id, user_id, items, algorithm_source, experiment_id, variant, "
            "served_at) FROM STDIN"
        ) as copy:
            for r in rows:
                copy.write_row(r)
        with cur.copy(
            "COPY recommendation_feedback (event_id, rec_id, user_id, item_id, position, event_type, "
            "occurred_at) FROM STDIN"
        ) as copy:
            for r in clicks:
                copy.write_row(r)
    async with await psycopg.AsyncConnection.connect(settings.postgres.url, autocommit=True) as aconn:
        await analysis.analyze_experiment(aconn, exp_id)
    conn.execute("UPDATE experiments SET status = 'concluded' WHERE experiment_id = %s", (exp_id,))


@pytest.fixture
async def site(
    scratch_postgres: Settings, redis_service: Settings, kafka: Settings, chromium: str
) -> AsyncIterator[tuple[str, Seeded]]:
    conn = connect(scratch_postgres)
    conn.autocommit = True
    conn.execute("UPDATE experiments SET status = 'concluded' WHERE status <> 'concluded'")
    s = Seeded()
    rng = np.random.default_rng(5)
    try:
        _seed_traffic(conn, s, rng)
        _seed_models(conn, s)
        await _seed_experiment(scratch_postgres, conn, s, rng)
        with serve(create_app(scratch_postgres)) as url:
            yield url, s
    finally:
        conn.close()
        ev.configure(None)


def _charts(dom: str) -> int:
    return len(re.findall(r'class="[^"]*js-plotly-plot', dom))


def _check_page(url: str, name: str, min_charts: int, needles: list[str]) -> str:
    dom = browser.dump_dom(url)
    assert _charts(dom) >= min_charts, (name, _charts(dom))
    assert dom.count('class="main-svg"') >= 2 * min_charts, name  # plotly drew every chart
    for needle in needles:
        assert needle in dom, (name, needle)
    shot = browser.screenshot(url, SHOTS / f"{name}.png")
    assert shot.stat().st_size > 20_000  # a page with charts, not a blank canvas
    return dom


async def test_every_dashboard_page_renders_its_charts_in_chromium(site: tuple[str, Seeded]) -> None:
    base, s = site
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        js = await http.get("/dashboard/static/plotly.min.js")
        assert (
            js.status_code == 200 and js.headers["content-encoding"] == "gzip" and "plotly" in js.text[:500]
        )
        html = (await http.get("/dashboard")).text
        assert '<script src="/dashboard/static/plotly.min.js">' in html and "cdn" not in html.lower()
        r = await http.get("/dashboard?hours=0")
        assert r.status_code == 422 and "greater than or equal to 1" in r.text
        assert (await http.get("/dashboard/experiments/999999")).status_code == 404

    _check_page(
        f"{base}/dashboard", "overview", 3, ["CTR by algorithm source", "CTR by position", "realtime"]
    )
    dom = _check_page(
        f"{base}/dashboard/experiments", "experiments", 1, [s.experiment, f"{s.experiment}: ctr per variant"]
    )
    assert re.search(rf">{re.escape(s.experiment)}<.*?concluded.*?>diverse<", dom, re.S)
    _check_page(
        f"{base}/dashboard/experiments/{s.experiment_id}",
        "experiment",
        2,
        ["delta-method z", "two-proportion z", "winner"],
    )
    _check_page(f"{base}/dashboard/models", "models", 4, [*s.versions, "RMSE", "nDCG@k"])
    _check_page(f"{base}/dashboard/health", "health", 3, ["Events committed per minute", "consumer lag"])
