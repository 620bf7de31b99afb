"""Experiments end to end against the real Postgres, Redis and Kafka: the admin API, assignment
in the recommendation endpoint, exposures in recommendation_logs, the analysis SQL, the CLI.

All of it runs in a scratch database (``scratch_postgres``): a running experiment changes what
every API process on its database serves, so it must not leak into the shared one.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np
import psycopg
import pytest
from psycopg.types.json import Jsonb
from typer.testing import CliRunner

from lambdarec.settings import Settings, get_settings
from serving.experiments import analysis, stats
from tests.integration.serving_support import World, api_client, seeded_world

pytestmark = pytest.mark.integration


@pytest.fixture
def seed(scratch_postgres: Settings, redis_service: Settings, kafka: Settings) -> Iterator[World]:
    with seeded_world(scratch_postgres, prefix="expt") as w:
        try:
            yield w
        finally:  # one running experiment per database: leave none behind for the next test
            w.conn.execute("UPDATE experiments SET status = 'concluded' WHERE status <> 'concluded'")


@pytest.fixture
def db(seed: World) -> psycopg.Connection:
    return seed.conn


@pytest.fixture
async def client(scratch_postgres: Settings, seed: World) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(scratch_postgres) as c:
        yield c


def taste_user(seed: World, taste: str) -> str:
    """A user whose taste vector is item ``taste``'s embedding (its nearest neighbour)."""
    return seed.user(preference_vector=seed.emb[taste])


def spec(name: str, **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "target_metric": "ctr",
        "minimum_sample_size": 50,
        "variants": [
            {"name": "control", "traffic_percent": 50, "is_control": True,
             "config": {"blend_weights": {"popular": 1.0}}},
            {"name": "personal", "traffic_percent": 50, "config": {"blend_weights": {"realtime": 1.0}}},
        ],
    }  # fmt: skip
    body.update(over)
    return body


async def test_lifecycle_assignment_and_exposures(
    client: httpx.AsyncClient, seed: World, db: psycopg.Connection
) -> None:
    admin = {"X-API-Key": seed.key("admin", ["admin"])}
    body = spec(f"{seed.p}blend")

    assert (await client.post("/v1/experiments", json=body)).status_code == 401
    r = await client.post("/v1/experiments", json=body, headers={"X-API-Key": seed.key("writer", ["write"])})
    assert r.status_code == 403 and "admin scope" in r.json()["detail"]
    bad = spec(
        f"{seed.p}bad", variants=[{"name": "a", "traffic_percent": 60}, {"name": "b", "traffic_percent": 30}]
    )
    r = await client.post("/v1/experiments", json=bad, headers=admin)
    assert r.status_code == 422 and "sum to 100" in r.text

    r = await client.post("/v1/experiments", json=body, headers=admin)
    assert r.status_code == 201, r.text
    exp = r.json()
    exp_id = exp["experiment_id"]
    assert exp["status"] == "draft" and [v["name"] for v in exp["variants"]] == ["control", "personal"]
    assert (await client.post("/v1/experiments", json=body, headers=admin)).status_code == 409

    # a draft serves nobody
    user0 = taste_user(seed, f"{seed.p}i3")
    first = (await client.get(f"/v1/users/{user0}/recommendations?k=5")).json()
    assert first["experiment_id"] is None and first["variant"] is None

    r = await client.post(f"/v1/experiments/{exp_id}/start", headers=admin)
    assert r.status_code == 200 and r.json()["status"] == "running" and r.json()["started_at"]
    other = (await client.post("/v1/experiments", json=spec(f"{seed.p}other"), headers=admin)).json()
    r = await client.post(f"/v1/experiments/{other['experiment_id']}/start", headers=admin)
    assert r.status_code == 409 and "already running" in r.json()["detail"]

    # assignment: deterministic per user, both arms used, each arm's config applied
    taste = f"{seed.p}i3"
    users = [taste_user(seed, taste) for _ in range(24)]
    most_popular = db.execute(
        "SELECT item_id FROM items ORDER BY popularity_score DESC, item_id LIMIT 1"
    ).fetchone()
    seen: dict[str, str] = {}
    for u in users:
        a = (await client.get(f"/v1/users/{u}/recommendations?k=5")).json()
        b = (await client.get(f"/v1/users/{u}/recommendations?k=5")).json()
        assert a["experiment_id"] == exp_id and a["variant"] == b["variant"] and b["cache_hit"]
        q = await client.get(f"/v1/experiments/{exp_id}/assignment/{u}", headers=admin)
        assert q.json()["variant"] == a["variant"]
        top = a["items"][0]["item_id"]
        if a["variant"] == "control":  # popularity only: the most popular item
            assert most_popular is not None and top == most_popular[0], a
        else:  # the taste-vector neighbour
            assert top == taste and a["items"][0]["source"] == "realtime", a
        seen[u] = a["variant"]
    assert set(seen.values()) == {"control", "personal"}

    forced = (await client.get(f"/v1/users/{users[0]}/recommendations?k=5&variant=personal")).json()
    assert forced["variant"] == "personal" and forced["experiment_id"] is None
    assert forced["items"][0]["item_id"] == taste  # the variant's config, without an exposure

    svc = client.app.state.services  # type: ignore[attr-defined]
    await svc.serve_log.flush()
    rows = db.execute(
        "SELECT user_id, variant, experiment_id FROM recommendation_logs WHERE user_id LIKE %s",
        (seed.p + "%",),
    ).fetchall()
    exposures = [(u, v) for u, v, e in rows if e == exp_id]
    assert len(exposures) == 2 * len(users) and all(seen[u] == v for u, v in exposures)
    assert sum(1 for _, v, e in rows if e is None and v == "personal") == 1

    # feedback: every "personal" list clicked, no control list: the analysis must say so
    recs = db.execute(
        "SELECT rec_id, user_id, variant FROM recommendation_logs WHERE experiment_id = %s", (exp_id,)
    ).fetchall()
    for rec_id, user, variant in recs:
        if variant == "personal":
            db.execute(
                "INSERT INTO recommendation_feedback (event_id, rec_id, user_id, item_id, position, "
                "event_type, occurred_at) VALUES (%s, %s, %s, %s, 0, 'click', now())",
                (uuid.uuid4(), rec_id, user, taste),
            )
    r = await client.post(f"/v1/experiments/{exp_id}/analyze", headers=admin)
    assert r.status_code == 200, r.text
    res = r.json()
    n_personal = sum(1 for v in seen.values() if v == "personal")
    assert res["variants"]["personal"]["users"] == n_personal
    assert res["variants"]["personal"]["ctr"] == 1.0 and res["variants"]["control"]["ctr"] == 0.0
    assert res["status"] == "insufficient_sample" and res["winner"] is None  # 50 users per arm needed

    r = await client.post(f"/v1/experiments/{exp_id}/stop", headers=admin)
    assert r.json()["status"] == "analyzing"
    after = (await client.get(f"/v1/users/{users[1]}/recommendations?k=5")).json()
    assert after["experiment_id"] is None and after["variant"] is None  # exposure ended at once

    r = await client.post(f"/v1/experiments/{exp_id}/conclude", headers=admin)
    done = r.json()
    assert done["status"] == "concluded" and done["ended_at"] and done["results"]["target_metric"] == "ctr"
    by_name = {v["name"]: v for v in done["variants"]}
    assert by_name["personal"]["impressions"] == 2 * n_personal
    assert by_name["personal"]["clicks"] == 2 * n_personal and by_name["personal"]["ctr"] == 1.0

    r = await client.post(f"/v1/experiments/{exp_id}/start", headers=admin)
    assert r.status_code == 409 and "concluded -> running" in r.json()["detail"]
    assert (await client.get("/v1/experiments/999999", headers=admin)).status_code == 404
    r = await client.post(f"/v1/experiments/{exp_id}/explode", headers=admin)
    assert r.status_code == 422
    listed = (await client.get("/v1/experiments?status=concluded", headers=admin)).json()
    assert exp_id in [e["experiment_id"] for e in listed]


def _simulate(db: psycopg.Connection, exp_id: int, p: str, rng: np.random.Generator) -> dict[str, Any]:
    """Served lists and clicks for two arms with a known CTR lift; returns per-user arrays."""
    truth = {"control": 0.10, "better": 0.14}
    served = datetime.now(UTC) - timedelta(hours=1)
    per_user: dict[str, dict[str, list[float]]] = {}
    with db.cursor() as cur:
        with cur.copy(
            "COPY recommendation_logs (rec_id, user_id, items, algorithm_source, experiment_id, variant, "
            "served_at) FROM STDIN"
        ) as copy:
            feedback = []
            for arm, ctr in truth.items():
                lists_a, clicks_a, plays_a = [], [], []
                for u in range(1200):
                    user = f"{p}{arm}{u}"
                    n_lists = 1 + int(rng.poisson(2))
                    clicked = plays = 0
                    for _ in range(n_lists):
                        rec = str(uuid.uuid4())
                        copy.write_row((rec, user, Jsonb([{"item_id": "x"}]), "hybrid", exp_id, arm, served))
                        if rng.random() < ctr:
                            clicked += 1
                            feedback.append((rec, user, "click"))
                            if rng.random() < 0.5:
                                plays += 1
                                feedback.append((rec, user, "play"))
                    lists_a.append(n_lists)
                    clicks_a.append(clicked)
                    plays_a.append(plays)
                per_user[arm] = {"lists": lists_a, "clicks": clicks_a, "plays": plays_a}
        with cur.copy(
            "COPY recommendation_feedback (event_id, rec_id, user_id, item_id, position, event_type, "
            "occurred_at) FROM STDIN"
        ) as copy:
            for rec, user, kind in feedback:
                copy.write_row((uuid.uuid4(), rec, user, "x", 0, kind, served))
    return per_user


async def test_analysis_sql_matches_the_statistics_on_the_same_simulated_traffic(
    scratch_postgres: Settings, seed: World, db: psycopg.Connection
) -> None:
    exp_id = db.execute(
        "INSERT INTO experiments (name, minimum_sample_size, config) VALUES (%s, 500, %s) "
        "RETURNING experiment_id",
        (f"{seed.p}sim", Jsonb({"minimum_detectable_effect": 0.2})),
    ).fetchone()[0]  # type: ignore[index]
    for name, ctl in (("control", True), ("better", False)):
        db.execute(
            "INSERT INTO experiment_variants (experiment_id, name, is_control, traffic_percent) "
            "VALUES (%s, %s, %s, 50)",
            (exp_id, name, ctl),
        )
    db.execute("UPDATE experiments SET status = 'running' WHERE experiment_id = %s", (exp_id,))
    per_user = _simulate(db, exp_id, seed.p, np.random.default_rng(11))

    async with await psycopg.AsyncConnection.connect(scratch_postgres.postgres.url, autocommit=True) as conn:
        res = await analysis.analyze_experiment(conn, exp_id)

    expected = stats.analyze(
        [
            stats.VariantData(
                arm,
                len(d["lists"]),
                stats.RatioStats.of(d["clicks"], d["lists"]),
                sum(c > 0 for c in d["clicks"]),
                {"plays_per_user": stats.MeanStats.of(d["plays"])},
                arm == "control",
            )
            for arm, d in per_user.items()
        ],
        target_metric="ctr",
        minimum_sample_size=500,
        minimum_detectable_effect=0.2,
    )
    got, want = res["comparisons"]["ctr"]["better"], expected["comparisons"]["ctr"]["better"]
    assert got["difference"] == pytest.approx(want["difference"])
    assert got["p_value"] == pytest.approx(want["p_value"], rel=1e-6)
    assert res["comparisons"]["plays_per_user"]["better"]["p_value"] == pytest.approx(
        expected["comparisons"]["plays_per_user"]["better"]["p_value"], rel=1e-6
    )
    assert res["status"] == "winner" and res["winner"] == "better" and got["ci_low"] > 0
    assert res["sample_size"]["required_per_variant"] == expected["sample_size"]["required_per_variant"]

    row = db.execute(
        "SELECT winner_variant, p_value, effect_size, statistical_significance FROM experiments "
        "WHERE experiment_id = %s",
        (exp_id,),
    ).fetchone()
    assert row is not None and row[0] == "better" and row[1] == pytest.approx(res["p_value"])
    assert row[2] == pytest.approx(got["difference"]) and row[3] == pytest.approx(1 - res["p_value"])
    arms = dict(
        db.execute(
            "SELECT name, impressions FROM experiment_variants WHERE experiment_id = %s", (exp_id,)
        ).fetchall()
    )
    assert arms["better"] == sum(per_user["better"]["lists"])


def test_cli_lifecycle(
    scratch_postgres: Settings, db: psycopg.Connection, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lambdarec.cli import app

    monkeypatch.setenv("LAMBDAREC_POSTGRES__URL", scratch_postgres.postgres.url)
    get_settings.cache_clear()
    name = f"cli{uuid.uuid4().hex[:8]}"
    path = tmp_path / "exp.yaml"
    path.write_text(
        f"name: {name}\ntarget_metric: conversion\nvariants:\n"
        "  - {name: control, traffic_percent: 50, is_control: true}\n"
        "  - {name: calm, traffic_percent: 50, config: {diversity: 0.1}}\n"
    )
    runner = CliRunner()
    try:
        r = runner.invoke(app, ["experiments", "create", str(path)])
        assert r.exit_code == 0, r.output
        assert name in r.output and "draft" in r.output
        r = runner.invoke(app, ["experiments", "start", name])
        assert r.exit_code == 0 and "running" in r.output, r.output
        r = runner.invoke(app, ["experiments", "list", "--status", "running"])
        assert name in r.output
        r = runner.invoke(app, ["experiments", "stop", name])
        assert r.exit_code == 0 and "analyzing" in r.output, r.output
        r = runner.invoke(app, ["experiments", "conclude", name])
        assert r.exit_code == 0 and "concluded" in r.output and "decision" in r.output, r.output
        r = runner.invoke(app, ["experiments", "start", name])
        assert r.exit_code == 1 and "concluded -> running" in r.output
        r = runner.invoke(app, ["experiments", "show", "no-such-experiment"])
        assert r.exit_code == 1 and "no experiment named" in r.output
        path.write_text(f"name: {name}x\nvariants: [{{name: a, traffic_percent: 100}}]\n")
        r = runner.invoke(app, ["experiments", "create", str(path)])
        assert r.exit_code == 2 and "invalid experiment spec" in r.output
    finally:
        get_settings.cache_clear()
