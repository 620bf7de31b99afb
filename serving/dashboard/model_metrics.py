"""Offline quality per model version from the registry (``models`` + ``model_performance_logs``)."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

_QUERY = """
SELECT m.model_id, m.algorithm, m.version, m.status, p.phase, p.k, p.rmse, p.mae, p.precision_at_k,
       p.recall_at_k, p.ndcg_at_k, p.map_at_k, p.coverage, p.catalog_coverage, p.logged_at
  FROM model_performance_logs p JOIN models m USING (model_id)
 ORDER BY p.logged_at, p.log_id
 LIMIT %(limit)s
"""


async def model_metrics(conn: AsyncConnection[Any], limit: int = 500) -> list[dict[str, Any]]:
    """Every evaluation, oldest first (the charts draw versions in the order they were evaluated)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_QUERY, {"limit": limit})
        return await cur.fetchall()


async def models(conn: AsyncConnection[Any]) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT model_id, algorithm, version, status, trained_at, promoted_at FROM models "
            "ORDER BY model_id DESC LIMIT 50"
        )
        return await cur.fetchall()
