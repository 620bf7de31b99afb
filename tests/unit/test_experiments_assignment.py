"""Variant assignment (hash buckets), the in-memory running experiment, and spec validation."""

from __future__ import annotations

from decimal import Decimal

import msgspec
import numpy as np
import orjson
import pytest
from pydantic import ValidationError
from scipy import stats as st

from schemas.served import ServedList
from serving.experiments.assignment import BUCKETS, Variant, assign, boundaries, bucket
from serving.experiments.running import RunningExperiments
from serving.experiments.specs import ExperimentSpec
from serving.serve_log import log_record

SPLIT = [Variant("a", Decimal(20)), Variant("b", Decimal(30)), Variant("c", Decimal(50))]


def test_assignment_is_deterministic_and_in_range() -> None:
    users = [f"u{i}" for i in range(2000)]
    first = [assign(u, 7, SPLIT) for u in users]
    assert first == [assign(u, 7, SPLIT) for u in users]
    assert all(0 <= bucket(u, 7) < BUCKETS for u in users)


def test_assignment_follows_the_traffic_split() -> None:
    counts = {"a": 0, "b": 0, "c": 0}
    n = 30_000
    for i in range(n):
        v = assign(f"user-{i}", 42, SPLIT)
        assert v is not None
        counts[v.name] += 1
    observed = [counts["a"], counts["b"], counts["c"]]
    expected = [n * 0.2, n * 0.3, n * 0.5]
    assert st.chisquare(observed, expected).pvalue > 1e-4, observed


def test_experiments_split_users_independently() -> None:
    halves = [Variant("x", Decimal(50)), Variant("y", Decimal(50))]
    table = np.zeros((2, 2))
    for i in range(20_000):
        u = f"user-{i}"
        a, b = assign(u, 1, halves), assign(u, 2, halves)
        assert a is not None and b is not None
        table[a.name == "y", b.name == "y"] += 1
    assert st.chi2_contingency(table).pvalue > 1e-4, table
    salted = sum(
        assign(f"user-{i}", 1, halves) != assign(f"user-{i}", 1, halves, salt="s2") for i in range(2000)
    )
    assert 800 < salted < 1200  # a new salt reshuffles about half of the users


def test_boundaries_cover_every_bucket_exactly() -> None:
    thirds = [Variant("a", Decimal("33.33")), Variant("b", Decimal("33.33")), Variant("c", Decimal("33.34"))]
    assert boundaries(thirds) == [3333, 6666, 10000]
    partial = [Variant("a", Decimal(10)), Variant("b", Decimal(10))]
    assert sum(assign(f"u{i}", 3, partial) is None for i in range(5000)) > 3500  # 80 % not enrolled


def test_running_experiment_snapshot_assigns_and_resolves_configs() -> None:
    rows = [
        (9, {"salt": ""}, "control", Decimal(50), {}, True),
        (9, {"salt": ""}, "diverse", Decimal(50), {"diversity": 0.6}, False),
    ]
    running = RunningExperiments(pool=None)
    assert running.assign("u1") is None and running.config("diverse") is None
    running._current = running._build(rows)
    got = {running.assign(f"u{i}").variant for i in range(200)}  # type: ignore[union-attr]
    assert got == {"control", "diverse"}
    a = running.assign("u1")
    assert a is not None and a.experiment_id == 9
    assert (
        a.variant == assign("u1", 9, [Variant("control", Decimal(50)), Variant("diverse", Decimal(50))]).name
    )  # type: ignore[union-attr]
    assert running.config("diverse") == {"diversity": 0.6} and running.config("nope") is None
    assert running._build([]) is None


def _spec(**over: object) -> dict[str, object]:
    spec: dict[str, object] = {
        "name": "t1",
        "variants": [
            {"name": "control", "traffic_percent": 50, "is_control": True},
            {
                "name": "b",
                "traffic_percent": 50,
                "config": {"blend_weights": {"realtime": 1.0}, "diversity": 0.3},
            },
        ],
    }
    spec.update(over)
    return spec


def test_spec_accepts_a_valid_experiment() -> None:
    s = ExperimentSpec.model_validate(_spec())
    assert s.variants[1].config.diversity == 0.3 and s.target_metric == "ctr"


@pytest.mark.parametrize(
    ("over", "needle"),
    [
        (
            {"variants": [{"name": "a", "traffic_percent": 50}, {"name": "b", "traffic_percent": 40}]},
            "sum to 100",
        ),
        (
            {"variants": [{"name": "a", "traffic_percent": 50}, {"name": "a", "traffic_percent": 50}]},
            "unique",
        ),
        ({"target_metric": "revenue"}, "unknown target_metric"),
        (
            {
                "variants": [
                    {"name": "a", "traffic_percent": 50, "config": {"diversty": 1}},
                    {"name": "b", "traffic_percent": 50},
                ]
            },
            "diversty",
        ),
        (
            {
                "variants": [
                    {"name": "a", "traffic_percent": 50, "config": {"blend_weights": {"realtime": 0}}},
                    {"name": "b", "traffic_percent": 50},
                ]
            },
            "positive weight",
        ),
        ({"variants": [{"name": "a", "traffic_percent": 100}]}, "at least 2"),
        ({"confidence_level": 0.5}, "greater than or equal to 0.8"),
    ],
)
def test_spec_errors_are_specific(over: dict[str, object], needle: str) -> None:
    with pytest.raises(ValidationError, match=needle):
        ExperimentSpec.model_validate(_spec(**over))


def test_an_exposure_is_logged_with_its_experiment_and_variant() -> None:
    answer = {"rec_id": "r1", "user_id": "u1", "items": [], "variant": "diverse", "experiment_id": 9}
    rec = log_record(answer)
    served = msgspec.json.decode(orjson.dumps(rec), type=ServedList)  # what the lake archiver reads
    assert (served.experiment_id, served.variant) == (9, "diverse")
    assert log_record({**answer, "experiment_id": None})["experiment_id"] is None
