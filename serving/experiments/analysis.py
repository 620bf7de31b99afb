"""Analysis of an experiment from Postgres: exposures (``recommendation_logs`` rows carrying the
experiment id) joined by ``rec_id`` with their feedback (``recommendation_feedback``), reduced to
per-user sums per variant in one query, tested by :mod:`serving.experiments.stats`, and written
back to the result columns of ``experiments`` and ``experiment_variants``.

Only assigned exposures count: a request that forced ``?variant=`` is logged with its variant but
without the experiment id, so QA traffic cannot bias the result.

What counts as a click on a served list: any ``click``, ``view``, ``play`` or ``purchase`` event
whose ``rec_id`` is the list's (:data:`CLICK_EVENTS`).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from serving.experiments.stats import MeanStats, RatioStats, VariantData, analyze
from serving.experiments.store import ExperimentError

CLICK_EVENTS = ["click", "view", "play", "purchase"]

_SUMS = """
WITH exposure AS (
    SELECT rec_id, user_id, variant FROM recommendation_logs
     WHERE experiment_id = %(id)s AND variant IS NOT NULL
), fb AS (
    SELECT f.rec_id,
           bool_or(f.event_type = ANY(%(clicks)s)) AS clicked,
           count(*) FILTER (WHERE f.event_type = 'play') AS plays,
           coalesce(sum(f.watch_duration_sec), 0) AS watch,
           sum(f.rating) AS rating_sum, count(f.rating) AS ratings
      FROM recommendation_feedback f JOIN exposure e USING (rec_id)
     GROUP BY f.rec_id
), per_user AS (
    SELECT e.variant, e.user_id,
           count(*)::float8 AS lists,
           count(*) FILTER (WHERE fb.clicked)::float8 AS clicked,
           coalesce(sum(fb.plays), 0)::float8 AS plays,
           coalesce(sum(fb.watch), 0)::float8 AS watch,
           (sum(fb.rating_sum) / nullif(sum(fb.ratings), 0))::float8 AS rating
      FROM exposure e LEFT JOIN fb USING (rec_id)
     GROUP BY e.variant, e.user_id
)
SELECT variant, count(*) AS users,
       sum(clicked), sum(lists), sum(clicked * clicked), sum(lists * lists), sum(clicked * lists),
       count(*) FILTER (WHERE clicked > 0) AS converted,
       sum(clicked / lists), sum((clicked / lists) ^ 2),
       sum(plays), sum(plays ^ 2), sum(watch), sum(watch ^ 2),
       count(rating), coalesce(sum(rating), 0), coalesce(sum(rating ^ 2), 0)
  FROM per_user GROUP BY variant
"""


def variant_data(name: str, is_control: bool, row: tuple[Any, ...] | None) -> VariantData:
    """A ``_SUMS`` row (or None: no exposures yet) as the statistics module's input."""
    if row is None:
        return VariantData(name, 0, RatioStats(0, 0, 0, 0, 0, 0), 0, {}, is_control)
    users = int(row[1])
    f = [float(x or 0) for x in row[2:]]
    lists = RatioStats(users, f[0], f[1], f[2], f[3], f[4])
    means = {
        "ctr_per_user": MeanStats(users, f[6], f[7]),
        "plays_per_user": MeanStats(users, f[8], f[9]),
        "watch_time_per_user": MeanStats(users, f[10], f[11]),
        "rating": MeanStats(int(f[12]), f[13], f[14]),
    }
    return VariantData(name, users, lists, int(f[5]), means, is_control)


async def analyze_experiment(conn: AsyncConnection[Any], experiment_id: int) -> dict[str, Any]:
    """Compute the experiment's results now and store them; returns the results document."""
    data, result = await compute_results(conn, experiment_id)
    await _store(conn, experiment_id, data, result)
    return result


async def compute_results(
    conn: AsyncConnection[Any], experiment_id: int
) -> tuple[list[VariantData], dict[str, Any]]:
    """The experiment's per-variant data and results as of now, without storing them (dashboard)."""
    cur = await conn.execute(
        "SELECT status, target_metric, confidence_level, minimum_sample_size, config "
        "FROM experiments WHERE experiment_id = %s",
        (experiment_id,),
    )
    exp = await cur.fetchone()
    if exp is None:
        raise ExperimentError(404, f"no experiment with id {experiment_id}")
    status, target, confidence, min_n, config = exp
    if status == "draft":
        raise ExperimentError(409, f"experiment {experiment_id} is draft: start it before analysing it")
    cur = await conn.execute(
        "SELECT name, is_control FROM experiment_variants WHERE experiment_id = %s ORDER BY variant_id",
        (experiment_id,),
    )
    arms = await cur.fetchall()
    cur = await conn.execute(_SUMS, {"id": experiment_id, "clicks": CLICK_EVENTS})
    sums = {r[0]: r for r in await cur.fetchall()}
    data = [variant_data(name, ctl, sums.get(name)) for name, ctl in arms]
    cfg = config or {}
    try:
        result = analyze(
            data,
            target_metric=target,
            confidence_level=round(float(confidence), 4),
            minimum_sample_size=int(min_n),
            minimum_detectable_effect=float(cfg.get("minimum_detectable_effect", 0.05)),
            power=float(cfg.get("power", 0.8)),
        )
    except ValueError as exc:
        raise ExperimentError(422, f"cannot analyse experiment {experiment_id}: {exc}") from None
    return data, result


async def _store(
    conn: AsyncConnection[Any], experiment_id: int, data: list[VariantData], res: dict[str, Any]
) -> None:
    p = res["p_value"]
    async with conn.transaction():
        await conn.execute(
            "UPDATE experiments SET winner_variant = %s, p_value = %s, effect_size = %s, "
            "statistical_significance = %s, results = %s WHERE experiment_id = %s",
            (
                res["winner"],
                p,
                res["effect_size"],
                None if p is None else 1 - p,
                Jsonb({**res, "analyzed_at": _now_iso()}),
                experiment_id,
            ),
        )
        for v in data:
            metrics = {k: val for k, val in res["variants"][v.name].items() if _is_num(val)}
            await conn.execute(
                "UPDATE experiment_variants SET impressions = %s, clicks = %s, conversions = %s, "
                "metrics = %s WHERE experiment_id = %s AND name = %s",
                (int(v.lists.den), int(v.lists.num), v.converted, Jsonb(metrics), experiment_id, v.name),
            )


def _is_num(x: Any) -> bool:
    return isinstance(x, int | float) and not (isinstance(x, float) and not math.isfinite(x))


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()
