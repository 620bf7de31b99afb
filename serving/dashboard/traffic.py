"""Served lists and their clicks: CTR by list source over time, CTR by position and item source.

A list counts as clicked when any event of :data:`CLICK_EVENTS` carries its ``rec_id`` (the
same rule as the experiment analysis); position CTR is per (list, position) with at least one
such event, over the lists long enough to have that position.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from psycopg import AsyncConnection

from serving.experiments.analysis import CLICK_EVENTS

MAX_POSITION = 20

_BY_SOURCE = """
WITH l AS (
    SELECT rec_id, algorithm_source, cache_hit, date_bin(%(bin)s, served_at, '2000-01-01') AS t
      FROM recommendation_logs WHERE served_at >= now() - %(window)s
), c AS (
    SELECT DISTINCT f.rec_id FROM recommendation_feedback f JOIN l USING (rec_id)
     WHERE f.event_type = ANY(%(clicks)s)
)
SELECT l.t, l.algorithm_source, count(*) AS lists, count(c.rec_id) AS clicked,
       count(*) FILTER (WHERE l.cache_hit) AS cache_hits
  FROM l LEFT JOIN c USING (rec_id) GROUP BY 1, 2 ORDER BY 1, 2
"""

_BY_POSITION = """
WITH l AS (
    SELECT rec_id, items FROM recommendation_logs WHERE served_at >= now() - %(window)s
), imp AS (
    SELECT (e.pos - 1)::int AS position, coalesce(e.item ->> 'source', 'unknown') AS source, l.rec_id
      FROM l, jsonb_array_elements(l.items) WITH ORDINALITY AS e(item, pos)
     WHERE e.pos <= %(maxpos)s
), clk AS (
    SELECT DISTINCT f.rec_id, f.position FROM recommendation_feedback f JOIN l USING (rec_id)
     WHERE f.event_type = ANY(%(clicks)s) AND f.position < %(maxpos)s
)
SELECT imp.position, imp.source, count(*) AS impressions, count(clk.rec_id) AS clicks
  FROM imp LEFT JOIN clk ON clk.rec_id = imp.rec_id AND clk.position = imp.position
 GROUP BY 1, 2 ORDER BY 1, 2
"""


def bin_for(hours: int) -> timedelta:
    """Time bucket for a window: 5 min up to 6 h, hourly up to 3 days, daily beyond."""
    if hours <= 6:
        return timedelta(minutes=5)
    if hours <= 72:
        return timedelta(hours=1)
    return timedelta(days=1)


async def ctr_by_source(conn: AsyncConnection[Any], hours: int) -> list[dict[str, Any]]:
    """Rows ``{t, source, lists, clicked, cache_hits}`` per time bucket and list source."""
    cur = await conn.execute(
        _BY_SOURCE, {"bin": bin_for(hours), "window": timedelta(hours=hours), "clicks": CLICK_EVENTS}
    )
    cols = ("t", "source", "lists", "clicked", "cache_hits")
    return [dict(zip(cols, r, strict=True)) for r in await cur.fetchall()]


async def ctr_by_position(conn: AsyncConnection[Any], hours: int) -> list[dict[str, Any]]:
    """Rows ``{position, source, impressions, clicks}`` (0-based position, the item's source)."""
    cur = await conn.execute(
        _BY_POSITION, {"window": timedelta(hours=hours), "maxpos": MAX_POSITION, "clicks": CLICK_EVENTS}
    )
    cols = ("position", "source", "impressions", "clicks")
    return [dict(zip(cols, r, strict=True)) for r in await cur.fetchall()]
