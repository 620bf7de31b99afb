"""GDPR (seed 004): export and erase everything stored about one user, in every store.

* **Postgres**: ``gdpr_export_user(id)`` / ``gdpr_forget_user(id)`` (migration 008) cover every
  table with a ``user_id`` column, found from the catalog.
* **Redis**: keys that name the user as a ``:``-separated segment (``profile:u1``,
  ``recs:u1:home``, or the bare id), found with ``SCAN MATCH`` and removed with ``UNLINK``.
* **Lake**: every archive table with a ``user_column`` (bronze also by record key). The day
  partitions holding the user's rows are rewritten without them (:func:`erase_lake` says why not
  ``DELETE``); the commit's predicate names only days, and with the stats exclusion in
  ``schemas/lake.py`` no log entry names the user afterwards. The rewrite only hides the old
  files: they stay (time travel) until VACUUM removes them once they are older than
  ``vacuum_retention_hours``. :func:`erase_user` vacuums right away with that
  retention, and the archiver's scheduled maintenance finishes the job when the retention has
  passed (docs/analysts.md, "When erased data disappears").
* **Kafka** is not rewritten: records age out with the topic retention (7 days for interactions,
  30 for the DLQ), and the archiver never re-reads offsets it has committed.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from deltalake import CommitProperties, write_deltalake
from deltalake.exceptions import CommitFailedError

from batch.lake.storage import Lake
from lambdarec.settings import Settings
from schemas.lake import ARCHIVE_TABLES, BRONZE_INTERACTIONS, TableSpec

log = logging.getLogger(__name__)


def _jsonable(v: Any) -> Any:
    if isinstance(v, bytes):
        try:
            return v.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(v).decode()}
    if isinstance(v, datetime | date):
        return v.isoformat()
    if isinstance(v, Decimal):
        return float(v)
    if isinstance(v, dict):
        return {
            (k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k)): _jsonable(x)
            for k, x in v.items()
        }
    if isinstance(v, list | tuple | set):
        return [_jsonable(x) for x in v]
    return v


# ---- lake ------------------------------------------------------------------------------------


def _user_filter(spec: TableSpec, user_id: str) -> ds.Expression:
    assert spec.user_column is not None
    flt = ds.field(spec.user_column) == user_id
    if spec.name == BRONZE_INTERACTIONS.name:
        flt = flt | (ds.field("key") == pa.scalar(user_id.encode(), pa.binary()))
    return flt


def lake_rows(lake: Lake, user_id: str, columns: dict[str, list[str]] | None = None) -> dict[str, pa.Table]:
    """The user's rows in every archive table (tables that do not exist are skipped)."""
    out = {}
    for spec in ARCHIVE_TABLES:
        if spec.user_column is None:
            continue
        data = lake.dataset(spec)
        if data is None:
            continue
        cols = (columns or {}).get(spec.name)
        out[spec.name] = data.to_table(columns=cols, filter=_user_filter(spec, user_id))
    return out


def _user_mask(spec: TableSpec, rows: pa.Table, user_id: str) -> pa.ChunkedArray:
    assert spec.user_column is not None
    mask = pc.fill_null(pc.equal(rows.column(spec.user_column), user_id), False)
    if spec.name == BRONZE_INTERACTIONS.name:
        by_key = pc.fill_null(pc.equal(rows.column("key"), pa.scalar(user_id.encode(), pa.binary())), False)
        mask = pc.or_(mask, by_key)
    return mask


def erase_lake(lake: Lake, user_id: str, attempts: int = 10) -> dict[str, int]:
    """Remove the user's rows from every archive table; returns rows removed per table.

    Each day partition holding the user's rows is rewritten without them, in one overwrite
    commit whose predicate names only the day (``"event_date" = '2025-01-01'``). Why not
    ``DeltaTable.delete``: its predicate (which would name the user or their ids) is stored in
    the log, and delta-rs 1.6 writes the surviving rows back as Arrow ``string_view``, which
    pyarrow (and so DuckDB over Arrow datasets) cannot filter (delta-io/delta-rs#4579). The
    rewrite runs on the snapshot it read: if the archiver appends to the same day meanwhile, the
    commit conflicts and the day is redone (up to ``attempts`` times; erasure is idempotent, so a
    run that gives up on a very busy day can simply be repeated).
    """
    out: dict[str, int] = {}
    for spec in ARCHIVE_TABLES:
        if spec.user_column is None or lake.open(spec) is None:
            continue
        date_col = spec.date_column
        removed = 0
        dt = lake.open(spec)
        assert dt is not None
        hit = dt.to_pyarrow_dataset().to_table(columns=[date_col], filter=_user_filter(spec, user_id))
        for day in sorted(set(hit.column(date_col).to_pylist())):
            for attempt in range(attempts):
                dt = lake.open(spec)
                assert dt is not None
                rows = dt.to_pyarrow_dataset().to_table(filter=ds.field(date_col) == day)
                mask = _user_mask(spec, rows, user_id)
                n = int(pc.sum(mask).as_py() or 0)
                if n == 0:
                    break
                keep = rows.filter(pc.invert(mask))
                try:
                    write_deltalake(
                        dt,
                        keep,
                        mode="overwrite",
                        predicate=f"\"{date_col}\" = '{day.isoformat()}'",
                        commit_properties=CommitProperties(custom_metadata={"lambdarec.operation": "erase"}),
                    )
                    removed += n
                    break
                except CommitFailedError:
                    if attempt == attempts - 1:
                        raise
                    log.info("erase: %s %s changed meanwhile; redoing the day", spec.name, day)
                    time.sleep(min(5.0, 0.5 * (attempt + 1)))
        out[spec.name] = removed
    return out


# ---- redis -----------------------------------------------------------------------------------


def _glob_escape(s: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in s)


def redis_keys(client: Any, user_id: str) -> list[bytes]:
    """Keys naming the user as a ``:``-separated segment (or equal to the id)."""
    found = []
    needle = user_id.encode()
    for key in client.scan_iter(match=f"*{_glob_escape(user_id)}*", count=1000):
        k = key if isinstance(key, bytes) else str(key).encode()
        if k == needle or needle in k.split(b":"):
            found.append(k)
    return sorted(found)


def _redis_value(client: Any, key: bytes) -> Any:
    kind = client.type(key)
    kind = kind.decode() if isinstance(kind, bytes) else str(kind)
    if kind == "string":
        return {"type": kind, "value": _jsonable(client.get(key))}
    if kind == "hash":
        return {"type": kind, "value": _jsonable(client.hgetall(key))}
    if kind == "list":
        return {"type": kind, "value": _jsonable(client.lrange(key, 0, -1))}
    if kind == "set":
        return {"type": kind, "value": _jsonable(sorted(client.smembers(key)))}
    if kind == "zset":
        return {"type": kind, "value": _jsonable(client.zrange(key, 0, -1, withscores=True))}
    return {"type": kind, "value": None}


def _redis(settings: Settings) -> Any:
    import redis

    return redis.Redis.from_url(settings.redis.url, socket_timeout=5)


# ---- the two operations ----------------------------------------------------------------------


def export_user(settings: Settings, user_id: str) -> dict[str, Any]:
    """Everything stored about ``user_id`` as one JSON-ready dict: ``postgres``, ``redis``,
    ``lake`` (per store; a store that cannot be reached is reported under ``errors``)."""
    out: dict[str, Any] = {
        "user_id": user_id,
        "exported_at": datetime.now(UTC).isoformat(),
        "postgres": {},
        "redis": {},
        "lake": {},
        "errors": {},
    }
    try:
        import psycopg

        with psycopg.connect(settings.postgres.url, connect_timeout=5) as conn:
            row = conn.execute("SELECT gdpr_export_user(%s)", (user_id,)).fetchone()
            out["postgres"] = _jsonable(row[0] if row else {})
    except Exception as exc:  # one store down must not hide the others
        out["errors"]["postgres"] = str(exc).strip()[:300]
    try:
        r = _redis(settings)
        out["redis"] = {k.decode(errors="replace"): _redis_value(r, k) for k in redis_keys(r, user_id)}
    except Exception as exc:
        out["errors"]["redis"] = str(exc).strip()[:300]
    try:
        for name, table in lake_rows(Lake(settings), user_id).items():
            out["lake"][name] = [_jsonable(r) for r in table.to_pylist()]
    except Exception as exc:
        out["errors"]["lake"] = str(exc).strip()[:300]
    return out


def write_export(settings: Settings, user_id: str, path: Path) -> dict[str, Any]:
    """:func:`export_user` into one JSON file (created with mode 0600: it is personal data)."""
    data = export_user(settings, user_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.touch(mode=0o600)
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
    tmp.replace(path)
    return data


@dataclass
class EraseReport:
    user_id: str
    postgres: dict[str, int] = field(default_factory=dict)
    redis_keys: int = 0
    lake: dict[str, int] = field(default_factory=dict)
    vacuumed_files: int = 0
    files_gone_by: datetime | None = None  # when VACUUM may remove the last old file
    errors: dict[str, str] = field(default_factory=dict)


def erase_user(
    settings: Settings,
    user_id: str,
    *,
    vacuum: bool = True,
    retention_hours: int | None = None,
    enforce_retention: bool = True,
) -> EraseReport:
    """Remove ``user_id`` from Postgres, Redis and the lake, then VACUUM the lake tables.

    With the default retention the deleted rows' old files remain for ``vacuum_retention_hours``
    (readable only by time travel); ``files_gone_by`` says when the next VACUUM removes them.
    Every store is attempted even if another fails; failures are in ``errors`` (re-run to finish).
    """
    from batch.lake.maintenance import vacuum as run_vacuum

    rep = EraseReport(user_id)
    try:
        import psycopg

        with psycopg.connect(settings.postgres.url, autocommit=True, connect_timeout=5) as conn:
            rows = conn.execute("SELECT table_name, deleted_rows FROM gdpr_forget_user(%s)", (user_id,))
            rep.postgres = {t: int(n) for t, n in rows.fetchall()}
    except Exception as exc:
        rep.errors["postgres"] = str(exc).strip()[:300]
    try:
        r = _redis(settings)
        keys = redis_keys(r, user_id)
        if keys:
            r.unlink(*keys)
        rep.redis_keys = len(keys)
    except Exception as exc:
        rep.errors["redis"] = str(exc).strip()[:300]
    try:
        lake = Lake(settings)
        rep.lake = erase_lake(lake, user_id)
        hours = settings.lake.vacuum_retention_hours if retention_hours is None else retention_hours
        if vacuum:
            touched = tuple(s for s in ARCHIVE_TABLES if rep.lake.get(s.name))
            removed = run_vacuum(
                settings, touched, retention_hours=hours, enforce_retention=enforce_retention
            )
            rep.vacuumed_files = sum(len(v) for v in removed.values())
        rep.files_gone_by = datetime.now(UTC) + timedelta(hours=hours)
    except Exception as exc:
        rep.errors["lake"] = str(exc).strip()[:300]
    log.info("erased user (postgres %s, redis %d keys, lake %s)", rep.postgres, rep.redis_keys, rep.lake)
    return rep


__all__ = ["EraseReport", "erase_lake", "erase_user", "export_user", "lake_rows", "write_export"]
