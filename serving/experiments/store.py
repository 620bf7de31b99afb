"""Experiments in Postgres: create, read, move through the lifecycle.

The lifecycle rules live in the database (migration 005's trigger: legal moves, >= 2 variants
summing to 100 % before running, frozen allocation; migration 010: one running experiment at a
time), so this module only translates their errors into :class:`ExperimentError` with an HTTP
status. The API (async pool) and the CLI (``asyncio.run``) share these functions.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import AsyncConnection, errors
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from serving.experiments.specs import ExperimentSpec

#: API verbs -> the status they move to
ACTIONS = {"start": "running", "stop": "analyzing", "resume": "running", "conclude": "concluded"}

_EXP_COLS = (
    "experiment_id, name, description, status, target_metric, minimum_sample_size, confidence_level, "
    "config, planned_end_at, started_at, ended_at, winner_variant, p_value, effect_size, "
    "statistical_significance, results, created_by, created_at, updated_at"
)
_VAR_COLS = (
    "variant_id, name, is_control, traffic_percent, config, model_id, impressions, clicks, conversions, "
    "ctr, metrics"
)


class ExperimentError(Exception):
    """A refused experiment operation; ``status`` is the HTTP status the API answers with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def create(conn: AsyncConnection[Any], spec: ExperimentSpec) -> int:
    """Insert a draft experiment and its variants in one transaction; returns its id."""
    config = {"minimum_detectable_effect": spec.minimum_detectable_effect, "power": spec.power}
    try:
        async with conn.transaction():
            model_ids = {
                v.name: await _check_model(conn, v.config.model_version)
                for v in spec.variants
                if v.config.model_version is not None
            }
            cur = await conn.execute(
                "INSERT INTO experiments (name, description, target_metric, minimum_sample_size, "
                "confidence_level, config, planned_end_at, created_by) VALUES (%s,%s,%s,%s,%s,%s,%s,%s) "
                "RETURNING experiment_id",
                (
                    spec.name,
                    spec.description,
                    spec.target_metric,
                    spec.minimum_sample_size,
                    spec.confidence_level,
                    Jsonb(config),
                    spec.planned_end_at,
                    spec.created_by,
                ),
            )
            row = await cur.fetchone()
            assert row is not None
            exp_id = int(row[0])
            for v in spec.variants:
                await conn.execute(
                    "INSERT INTO experiment_variants (experiment_id, name, is_control, traffic_percent, "
                    "config, model_id) VALUES (%s,%s,%s,%s,%s,%s)",
                    (
                        exp_id,
                        v.name,
                        v.is_control,
                        v.traffic_percent,
                        Jsonb(v.config.model_dump(exclude_none=True)),
                        model_ids.get(v.name),
                    ),
                )
    except errors.UniqueViolation:
        raise ExperimentError(409, f"an experiment named {spec.name!r} already exists") from None
    except errors.CheckViolation as exc:
        raise ExperimentError(422, exc.diag.message_primary or str(exc)) from None
    return exp_id


async def _check_model(conn: AsyncConnection[Any], version: str) -> int:
    cur = await conn.execute(
        "SELECT model_id FROM models WHERE version = %s ORDER BY model_id DESC LIMIT 1", (version,)
    )
    row = await cur.fetchone()
    if row is None:
        raise ExperimentError(422, f"unknown model_version {version!r}: no such model in the registry")
    return int(row[0])


async def get(conn: AsyncConnection[Any], experiment_id: int) -> dict[str, Any]:
    """The experiment with its variants (404 when it does not exist)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"SELECT {_EXP_COLS} FROM experiments WHERE experiment_id = %s", (experiment_id,))
        exp = await cur.fetchone()
        if exp is None:
            raise ExperimentError(404, f"no experiment with id {experiment_id}")
        await cur.execute(
            f"SELECT {_VAR_COLS} FROM experiment_variants WHERE experiment_id = %s ORDER BY variant_id",
            (experiment_id,),
        )
        exp["variants"] = await cur.fetchall()
    return exp


async def find_id(conn: AsyncConnection[Any], ref: str) -> int:
    """An experiment id from an id or a name (the CLI accepts either)."""
    if ref.isdigit():
        return int(ref)
    cur = await conn.execute("SELECT experiment_id FROM experiments WHERE name = %s", (ref,))
    row = await cur.fetchone()
    if row is None:
        raise ExperimentError(404, f"no experiment named {ref!r}")
    return int(row[0])


async def list_all(conn: AsyncConnection[Any], status: str | None = None) -> list[dict[str, Any]]:
    """All experiments (newest first), optionally of one status, with their variants."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {_EXP_COLS} FROM experiments WHERE %(s)s::text IS NULL OR status = %(s)s "
            "ORDER BY experiment_id DESC",
            {"s": status},
        )
        exps = await cur.fetchall()
        ids = [e["experiment_id"] for e in exps]
        await cur.execute(
            f"SELECT experiment_id, {_VAR_COLS} FROM experiment_variants WHERE experiment_id = ANY(%s) "
            "ORDER BY variant_id",
            (ids,),
        )
        by_exp: dict[int, list[dict[str, Any]]] = {}
        for v in await cur.fetchall():
            by_exp.setdefault(v.pop("experiment_id"), []).append(v)
    for e in exps:
        e["variants"] = by_exp.get(e["experiment_id"], [])
    return exps


async def transition(conn: AsyncConnection[Any], experiment_id: int, action: str) -> dict[str, Any]:
    """Apply ``action`` (start, stop, resume, conclude); the trigger judges whether it is legal."""
    to = ACTIONS.get(action)
    if to is None:
        raise ExperimentError(422, f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
    try:
        async with conn.transaction():  # a savepoint when nested: a refusal leaves the caller usable
            cur = await conn.execute(
                "UPDATE experiments SET status = %s WHERE experiment_id = %s RETURNING status",
                (to, experiment_id),
            )
            found = await cur.fetchone()
        if found is None:
            raise ExperimentError(404, f"no experiment with id {experiment_id}")
    except errors.UniqueViolation:
        cur = await conn.execute("SELECT experiment_id, name FROM experiments WHERE status = 'running'")
        row = await cur.fetchone()
        other = f"{row[1]!r} (id {row[0]})" if row else "another experiment"
        raise ExperimentError(
            409, f"{other} is already running: stop or conclude it first (one experiment at a time)"
        ) from None
    except errors.CheckViolation as exc:
        raise ExperimentError(409, exc.diag.message_primary or str(exc)) from None
    except psycopg.Error as exc:
        raise ExperimentError(503, f"experiment store unavailable: {type(exc).__name__}") from None
    return await get(conn, experiment_id)
