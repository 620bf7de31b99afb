"""Model registry operations over the ``models`` table and its Postgres functions (migration 004).

Why thin wrappers and no state machine in Python: the lifecycle (training -> registered -> staging
-> production -> deprecated) is enforced by a trigger and ``promote_model()`` in the database, so
every writer (this pipeline, an operator in psql, a future service) obeys the same rules and a
promotion deprecates the previous production model in the same transaction. Each function takes
a psycopg connection so the caller decides the transaction boundaries (``batch/publish.py`` promotes
and flips the batch view in one transaction).

Every operation is idempotent where a resumed run may repeat it: registering a version that
exists returns the existing row; moving a model to the status it already has is a no-op.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb


@dataclass(frozen=True)
class ModelRow:
    """One ``models`` row (the fields the pipeline uses)."""

    model_id: int
    algorithm: str
    version: str
    status: str
    snapshot_uri: str | None
    metrics: dict[str, Any]
    hyperparameters: dict[str, Any]


_COLS = "model_id, algorithm, version, status, snapshot_uri, metrics, hyperparameters"


def _row(r: dict[str, Any] | None) -> ModelRow | None:
    return None if r is None else ModelRow(**r)


def _json_safe(d: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN/inf: store them as null (a NaN metric means "not measured")."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, float) and not math.isfinite(v):
            out[k] = None
        elif isinstance(v, dict):
            out[k] = _json_safe(v)
        else:
            out[k] = v
    return out


def get_model(conn: psycopg.Connection, model_id: int) -> ModelRow | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return _row(cur.execute(f"SELECT {_COLS} FROM models WHERE model_id = %s", (model_id,)).fetchone())


def find_model(conn: psycopg.Connection, algorithm: str, version: str) -> ModelRow | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return _row(
            cur.execute(
                f"SELECT {_COLS} FROM models WHERE algorithm = %s AND version = %s", (algorithm, version)
            ).fetchone()
        )


def production_model(conn: psycopg.Connection, algorithm: str) -> ModelRow | None:
    """The algorithm's production model, if any (the unique index allows at most one)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return _row(
            cur.execute(
                f"SELECT {_COLS} FROM models WHERE algorithm = %s AND status = 'production'", (algorithm,)
            ).fetchone()
        )


def create_candidate(
    conn: psycopg.Connection, algorithm: str, version: str, hyperparameters: dict[str, Any]
) -> ModelRow:
    """Insert a ``training`` row for ``(algorithm, version)`` or return the existing one."""
    existing = find_model(conn, algorithm, version)
    if existing is not None:
        return existing
    with conn.cursor(row_factory=dict_row) as cur:
        r = cur.execute(
            "INSERT INTO models (algorithm, version, status, hyperparameters)"
            f" VALUES (%s, %s, 'training', %s) RETURNING {_COLS}",
            (algorithm, version, Jsonb(_json_safe(hyperparameters))),
        ).fetchone()
    row = _row(r)
    assert row is not None
    return row


def register(
    conn: psycopg.Connection,
    model_id: int,
    *,
    snapshot_uri: str,
    metrics: dict[str, Any],
    trained_at: datetime,
) -> ModelRow:
    """``training -> registered`` with its snapshot and offline metrics (no-op when already past)."""
    m = get_model(conn, model_id)
    if m is None:
        raise LookupError(f"no model {model_id}")
    if m.status == "training":
        conn.execute(
            "UPDATE models SET snapshot_uri = %s, metrics = %s, trained_at = %s, status = 'registered' "
            "WHERE model_id = %s",
            (snapshot_uri, Jsonb(_json_safe(metrics)), trained_at, model_id),
        )
    out = get_model(conn, model_id)
    assert out is not None
    return out


def set_status(conn: psycopg.Connection, model_id: int, status: str) -> ModelRow:
    """Move a model to ``status`` (the trigger refuses illegal moves); same status = no-op."""
    m = get_model(conn, model_id)
    if m is None:
        raise LookupError(f"no model {model_id}")
    if m.status != status:
        conn.execute("UPDATE models SET status = %s WHERE model_id = %s", (status, model_id))
    out = get_model(conn, model_id)
    assert out is not None
    return out


def update_metrics(conn: psycopg.Connection, model_id: int, metrics: dict[str, Any]) -> None:
    """Merge ``metrics`` into the model's metrics (e.g. the gate's verdict)."""
    conn.execute(
        "UPDATE models SET metrics = metrics || %s WHERE model_id = %s",
        (Jsonb(_json_safe(metrics)), model_id),
    )


def promote(conn: psycopg.Connection, model_id: int) -> int | None:
    """``promote_model()``: staging -> production, the previous production -> deprecated, in the
    caller's transaction. Returns the deprecated model's id (None if there was none)."""
    r = conn.execute("SELECT promote_model(%s)", (model_id,)).fetchone()
    return None if r is None else r[0]


def log_performance(
    conn: psycopg.Connection,
    model_id: int,
    metrics: dict[str, float],
    *,
    k: int,
    phase: str = "offline",
    **cols: Any,
) -> int:
    """One ``model_performance_logs`` row from an evaluation dict (``ndcg@10``, ... keys)."""

    def g(key: str) -> float | None:
        v = metrics.get(key)
        return float(v) if v is not None and math.isfinite(float(v)) else None

    r = conn.execute(
        "INSERT INTO model_performance_logs (model_id, phase, k, rmse, precision_at_k, recall_at_k, "
        "ndcg_at_k, map_at_k, coverage, catalog_coverage, total_users_trained, total_items_trained, "
        "training_duration_sec, metrics) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
        "RETURNING log_id",
        (
            model_id,
            phase,
            k,
            g("rmse"),
            g(f"precision@{k}"),
            g(f"recall@{k}"),
            g(f"ndcg@{k}"),
            g(f"map@{k}"),
            g("user_coverage"),
            g("catalog_coverage"),
            cols.get("total_users_trained"),
            cols.get("total_items_trained"),
            cols.get("training_duration_sec"),
            Jsonb(_json_safe(dict(metrics))),
        ),
    ).fetchone()
    assert r is not None
    return int(r[0])
