"""Postgres side of the speed layer: one transaction per batch, idempotent by construction.

Why these statements: faust is at-least-once and has known double processing after rebalances,
so a batch may be written twice (or by two workers). Every write is therefore idempotent on its
own, independent of the state's dedupe:

* ``rt_user_interactions``: ``INSERT ... ON CONFLICT (event_id, occurred_at) DO NOTHING``; the
  ``RETURNING`` rows are exactly the events stored *now*, and only those are added to the
  profile counters (``total_interactions``, ``last_interaction_at``), in the same statement;
* ``recommendation_feedback``: ``ON CONFLICT (event_id) DO NOTHING``;
* the vectors are *set* (not added) from the state, so writing them again is harmless.

Rows travel by binary ``COPY`` into session temp tables (``ON COMMIT DELETE ROWS``) and then
one ``INSERT ... SELECT`` each: a batch of 5000 events is four statements, not 5000. The profile
rows' COPY stream is built here in one buffer (:func:`profile_copy_data`, the vectors of the whole
batch converted by one numpy call) instead of through pgvector's per-value dumper.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import psycopg
from pgvector.psycopg import register_vector_async
from psycopg.types.json import Jsonb

from lambdarec.settings import Settings
from streams.processors.profiles import BatchResult, UserUpdate

log = logging.getLogger(__name__)

RT_COLUMNS = (
    "event_id",
    "user_id",
    "item_id",
    "event_type",
    "rating",
    "value",
    "watch_duration_sec",
    "session_id",
    "source",
    "rec_id",
    "position",
    "context",
    "occurred_at",
    "received_at",
)
RT_TYPES = (
    "uuid",
    "varchar",
    "varchar",
    "varchar",
    "real",
    "float8",
    "real",
    "varchar",
    "varchar",
    "varchar",
    "int4",
    "jsonb",
    "timestamptz",
    "timestamptz",
)
_COLS = ", ".join(RT_COLUMNS)

SETUP = """
CREATE TEMP TABLE IF NOT EXISTS speed_rt_batch (
    event_id uuid, user_id varchar(128), item_id varchar(128), event_type varchar(16), rating real,
    value double precision, watch_duration_sec real, session_id varchar(128), source varchar(16),
    rec_id varchar(128), position integer, context jsonb, occurred_at timestamptz, received_at timestamptz
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS speed_profile_batch (
    user_id varchar(128), preference_vector vector, als_factors vector, als_model_version varchar(100)
) WITH (toast_tuple_target = 8160) ON COMMIT DELETE ROWS;
"""
# toast_tuple_target: a 768-d vector (3 KiB) made every staged profile row go to TOAST (chunked
# into the temp table's toast relation, then reassembled by the INSERT ... SELECT); kept inline up
# to a page instead, the COPY costs the server ~7 µs per row instead of 12-16. Larger rows (a
# dimension above ~2000) are still toasted, so nothing fails.

# Insert the events; count only the rows stored now into the profile, and set the vectors.
WRITE_PROFILES = f"""
WITH ins AS (
    INSERT INTO rt_user_interactions ({_COLS})
    SELECT {_COLS} FROM speed_rt_batch
    ON CONFLICT (event_id, occurred_at) DO NOTHING
    RETURNING user_id, occurred_at
), counts AS (
    SELECT user_id, count(*) AS n, max(occurred_at) AS last FROM ins GROUP BY user_id
)
INSERT INTO user_profiles AS p (user_id, total_interactions, last_interaction_at,
                                preference_vector, preference_updated_at, als_factors, als_model_version)
SELECT b.user_id, coalesce(c.n, 0), c.last, b.preference_vector,
       CASE WHEN b.preference_vector IS NULL THEN NULL ELSE now() END, b.als_factors, b.als_model_version
  FROM speed_profile_batch b LEFT JOIN counts c USING (user_id)
 ORDER BY b.user_id
ON CONFLICT (user_id) DO UPDATE SET
    total_interactions = p.total_interactions + EXCLUDED.total_interactions,
    last_interaction_at = GREATEST(p.last_interaction_at, EXCLUDED.last_interaction_at),
    preference_vector = COALESCE(EXCLUDED.preference_vector, p.preference_vector),
    preference_updated_at = COALESCE(EXCLUDED.preference_updated_at, p.preference_updated_at),
    als_factors = COALESCE(EXCLUDED.als_factors, p.als_factors),
    als_model_version = CASE WHEN EXCLUDED.als_factors IS NULL THEN p.als_model_version
                             ELSE EXCLUDED.als_model_version END
"""

WRITE_FEEDBACK = """
INSERT INTO recommendation_feedback (event_id, rec_id, user_id, item_id, position, event_type,
       rating, watch_duration_sec, time_to_event_sec, session_id, occurred_at, received_at)
SELECT t.event_id, t.rec_id, t.user_id, t.item_id, t.position, t.event_type, t.rating, t.watch_duration_sec,
       extract(epoch FROM t.occurred_at - l.served_at), t.session_id, t.occurred_at, t.received_at
  FROM speed_rt_batch t LEFT JOIN recommendation_logs l ON l.rec_id = t.rec_id
 WHERE t.rec_id IS NOT NULL
ON CONFLICT (event_id) DO NOTHING
"""


_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, no header extension
_COPY_TRAILER = b"\xff\xff"
_NULL = b"\xff\xff\xff\xff"
_FOUR_FIELDS = b"\x00\x04"
_LEN = struct.Struct(">i")


def vector_fields(vectors: Sequence[np.ndarray | None]) -> list[bytes]:
    """Each vector as one binary COPY field: length, then pgvector's binary ``vector`` (``>HH``
    dimensions and 0, big-endian float32s); NULL for None.

    Why not pgvector's dumper: it builds a ``Vector`` (two copies and a byteswap) per value,
    several µs each; here all vectors of one size are converted in one numpy call.
    """
    out = [_NULL] * len(vectors)
    by_dim: dict[int, list[int]] = {}
    for n, v in enumerate(vectors):
        if v is not None:
            by_dim.setdefault(len(v), []).append(n)
    for dim, idx in by_dim.items():
        raw = np.stack([vectors[n] for n in idx]).astype(">f4").tobytes()  # type: ignore[misc]
        head = struct.pack(">iHH", 4 + 4 * dim, dim, 0)
        step = 4 * dim
        for j, n in enumerate(idx):
            out[n] = head + raw[j * step : (j + 1) * step]
    return out


def _text_field(s: str | None) -> bytes:
    if s is None:
        return _NULL
    b = s.encode()
    return _LEN.pack(len(b)) + b


def profile_copy_data(updates: Sequence[UserUpdate]) -> bytes:
    """The whole binary COPY stream of ``speed_profile_batch`` rows (user_id, preference_vector,
    als_factors, als_model_version) for ``updates``: one buffer, one ``write``."""
    taste = vector_fields([u.taste for u in updates])
    als = vector_fields([u.als for u in updates])
    parts = [_COPY_SIGNATURE]
    for u, t, a in zip(updates, taste, als, strict=True):
        parts += (_FOUR_FIELDS, _text_field(u.user_id), t, a, _text_field(u.als_version))
    parts.append(_COPY_TRAILER)
    return b"".join(parts)


def _ts(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000.0, UTC)


class PostgresSink:
    """One async connection of one worker; ``write_batch`` is the only writer of the hot path."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.conn: psycopg.AsyncConnection[Any] | None = None

    async def connect(self) -> psycopg.AsyncConnection[Any]:
        """(Re)connect: pgvector types registered, temp tables created."""
        if self.conn is not None and not self.conn.closed:
            return self.conn
        conn = await psycopg.AsyncConnection.connect(
            self.settings.postgres.url, application_name=f"{self.settings.stream.app_id}-worker"
        )
        await register_vector_async(conn)
        await conn.execute(SETUP)
        await conn.commit()
        self.conn = conn
        return conn

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()
            self.conn = None

    async def write_batch(self, result: BatchResult) -> tuple[int, int]:
        """Write the batch's events, feedback and profiles in one transaction.

        Returns (profiles written, feedback candidates). Raises psycopg errors; nothing is
        committed then, and the caller must not ack the batch.
        """
        if not result.users:
            return 0, 0
        conn = await self.connect()
        feedback = 0
        try:
            async with conn.cursor() as cur:
                async with cur.copy(f"COPY speed_rt_batch ({_COLS}) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(RT_TYPES)
                    write = copy.write_row
                    for upd in result.users.values():
                        for it in upd.events:
                            e = it.event
                            if e.rec_id is not None:
                                feedback += 1
                            await write(
                                (
                                    e.event_id,
                                    e.user_id,
                                    e.item_id,
                                    e.type,  # StrEnum: dumped as its value
                                    e.rating,
                                    e.value,
                                    e.watch_duration_sec,
                                    e.session_id,
                                    e.source,
                                    e.rec_id,
                                    e.position,
                                    Jsonb(e.context) if e.context is not None else None,
                                    e.occurred_at,
                                    e.received_at or _ts(it.timestamp_ms),
                                )
                            )
                async with cur.copy(
                    "COPY speed_profile_batch (user_id, preference_vector, als_factors, als_model_version)"
                    " FROM STDIN (FORMAT BINARY)"
                ) as copy:
                    await copy.write(profile_copy_data(list(result.users.values())))
                await cur.execute(WRITE_PROFILES)
                if feedback:
                    await cur.execute(WRITE_FEEDBACK)
            await conn.commit()
        except BaseException:
            await self._abort()
            raise
        return len(result.users), feedback

    async def _abort(self) -> None:
        conn = self.conn
        if conn is None:
            return
        try:
            await conn.rollback()
        except Exception:  # a broken connection: drop it, connect() makes a new one
            log.warning("postgres rollback failed; reconnecting on next batch", exc_info=True)
            try:
                await conn.close()
            finally:
                self.conn = None

    async def load_embeddings(self, item_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """``item_id -> embedding`` (float32) for those of ``item_ids`` that have one."""
        conn = await self.connect()
        async with conn.cursor(binary=True) as cur:
            await cur.execute(
                "SELECT item_id, embedding FROM items WHERE item_id = ANY(%s) AND embedding IS NOT NULL",
                (list(item_ids),),
            )
            rows = await cur.fetchall()
        await conn.rollback()  # end the read transaction (no idle-in-transaction between batches)
        return {r[0]: _as_array(r[1]) for r in rows}

    async def maintain(self) -> list[tuple[Any, ...]]:
        """Run ``rt_interactions_maintain()`` (drops only archived partitions; see 003_interactions)."""
        async with await psycopg.AsyncConnection.connect(self.settings.postgres.url, autocommit=True) as conn:
            cur = await conn.execute("SELECT * FROM rt_interactions_maintain()")
            return list(await cur.fetchall())

    async def production_model(self, algorithm: str) -> tuple[str, str] | None:
        """(version, snapshot_uri) of ``algorithm``'s production model in the registry, if any."""
        async with await psycopg.AsyncConnection.connect(self.settings.postgres.url, autocommit=True) as conn:
            cur = await conn.execute(
                "SELECT version, snapshot_uri FROM models WHERE algorithm = %s AND status = 'production'",
                (algorithm,),
            )
            row = await cur.fetchone()
        return (row[0], row[1]) if row and row[1] else None


def unique(items: Iterable[str]) -> list[str]:
    """Distinct values in first-seen order."""
    return list(dict.fromkeys(items))


def _as_array(v: Any) -> np.ndarray:
    """pgvector's binary loader yields ``Vector``; the text one a numpy array."""
    return np.asarray(v.to_numpy() if hasattr(v, "to_numpy") else v, dtype=np.float32)
