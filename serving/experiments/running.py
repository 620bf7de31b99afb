"""The running experiment, held in memory by each API process and refreshed every few seconds.

Why in memory: assignment happens on every recommendation request, whose budget is a few
milliseconds; a Postgres round trip per request would cost more than the hash. Reading the one
running experiment every ``refresh_sec`` (default 5 s) means starting or stopping an experiment
reaches every process within that time. A failed refresh keeps the last known state (a Postgres
hiccup must not switch an experiment off for a few seconds and mix variants into the default).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from serving.background import BackgroundTask, every
from serving.experiments.assignment import Variant, boundaries, bucket, pick

REFRESH_SEC = 5.0

_QUERY = (
    "SELECT e.experiment_id, e.config, v.name, v.traffic_percent, v.config, v.is_control "
    "FROM experiments e JOIN experiment_variants v USING (experiment_id) "
    "WHERE e.status = 'running' ORDER BY e.experiment_id, v.variant_id"
)


@dataclass(frozen=True)
class Assignment:
    """What a request is served under: the experiment, the variant's name and its config."""

    experiment_id: int
    variant: str
    config: Mapping[str, Any]


@dataclass(frozen=True)
class _Running:
    experiment_id: int
    salt: str
    variants: tuple[Variant, ...]
    bounds: tuple[int, ...]


class RunningExperiments:
    """``assign(user)`` and ``config(variant)`` from a periodically refreshed snapshot."""

    def __init__(self, pool: Any, refresh_sec: float = REFRESH_SEC) -> None:
        self.pool = pool
        self.refresh_sec = refresh_sec
        self._current: _Running | None = None
        self._task = BackgroundTask("experiments-refresh")

    @property
    def experiment_id(self) -> int | None:
        return self._current.experiment_id if self._current else None

    def assign(self, user_id: str) -> Assignment | None:
        """The user's variant in the running experiment, or None (no experiment running)."""
        cur = self._current
        if cur is None:
            return None
        v = pick(cur.variants, cur.bounds, bucket(user_id, cur.experiment_id, cur.salt))
        if v is None:
            return None
        return Assignment(cur.experiment_id, v.name, v.config)

    def config(self, variant: str) -> Mapping[str, Any] | None:
        """Config of a variant of the running experiment by name (an explicit ``?variant=``)."""
        cur = self._current
        if cur is None:
            return None
        return next((v.config for v in cur.variants if v.name == variant), None)

    async def refresh(self) -> None:
        """Reload the running experiment (raises on a database error; the loop keeps the old one)."""
        async with self.pool.connection(timeout=2) as conn:
            rows = await (await conn.execute(_QUERY)).fetchall()
        self._current = self._build(rows)

    @staticmethod
    def _build(rows: list[tuple[Any, ...]]) -> _Running | None:
        if not rows:
            return None
        exp_id = rows[0][0]  # at most one runs (migration 010); take the lowest id regardless
        mine = [r for r in rows if r[0] == exp_id]
        variants = tuple(Variant(r[2], r[3], dict(r[4] or {}), bool(r[5])) for r in mine)
        salt = str((mine[0][1] or {}).get("salt", ""))
        return _Running(int(exp_id), salt, variants, tuple(boundaries(variants)))

    def start(self) -> None:
        self._task.start(lambda: every(self.refresh_sec, self.refresh, "running experiments refresh"))

    async def stop(self) -> None:
        await self._task.stop()
