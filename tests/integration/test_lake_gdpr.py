"""GDPR export and erase across Postgres (scratch database), Redis and the lake.

After ``erase`` + VACUUM (retention 0, safety check off), no store returns the user: not Postgres,
not Redis, not any current lake table, and not even the files left in the lake directory (every
Parquet file still there is read back and checked) or the Delta transaction log.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pyarrow.parquet as pq
import pytest
import redis
from typer.testing import CliRunner

from batch.lake.archiver import Archiver
from batch.lake.gdpr import erase_user, export_user, lake_rows
from batch.lake.storage import Lake
from infra.postgres import scratch_database
from lambdarec.settings import Settings
from schemas.lake import ARCHIVE_TABLES
from schemas.migrate import migrate
from schemas.topics import INTERACTIONS, topic_name
from tests.integration.lake_support import lake_settings, lake_topics, produce, produce_workload, workload

pytestmark = pytest.mark.integration


@pytest.fixture
def stores(
    kafka: Settings, postgres: Settings, redis_service: Settings, tmp_path: Path
) -> Iterator[Settings]:
    with scratch_database(postgres) as db:
        migrate(db)
        s = lake_settings(
            db, str(tmp_path / "lake"), f"test.lake-{uuid.uuid4().hex[:10]}.", advance_watermark=False
        )
        s = s.model_copy(update={"redis": redis_service.redis})
        with lake_topics(s):
            yield s


def _subject_events(user: str, n: int = 6) -> list[tuple[bytes, bytes]]:
    now = datetime.now(UTC).isoformat()
    out = []
    for i in range(n):
        ev = {
            "event_id": str(uuid.uuid4()),
            "user_id": user,
            "item_id": f"item-{i}",
            "type": "view",
            "occurred_at": now,
        }
        out.append((user.encode(), json.dumps(ev).encode()))
    out.append((user.encode(), b'{"user_id": "' + user.encode() + b'", "broken": '))  # a dead letter too
    return out


def _seed_postgres(s: Settings, user: str) -> None:
    with psycopg.connect(s.postgres.url, autocommit=True) as conn:
        conn.execute("INSERT INTO user_profiles (user_id, total_interactions) VALUES (%s, 6)", (user,))
        conn.execute(
            "INSERT INTO recommendation_logs (rec_id, user_id, items, algorithm_source) "
            "VALUES (%s, %s, '[{\"item_id\": \"item-1\"}]', 'popular')",
            (f"rec-{user}", user),
        )
        conn.execute(
            "INSERT INTO rt_user_interactions (event_id, user_id, item_id, event_type, occurred_at) "
            "VALUES (%s, %s, 'item-1', 'view', now())",
            (uuid.uuid4(), user),
        )


def _pg_rows(s: Settings, user: str) -> int:
    with psycopg.connect(s.postgres.url) as conn:
        row = conn.execute("SELECT gdpr_export_user(%s)", (user,)).fetchone()
    assert row is not None
    return sum(len(v) for v in row[0].values())


def _scan_lake_files(root: Path, needle: str) -> list[str]:
    """Every file physically left under the lake root that still mentions ``needle``."""
    hits = []
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            for col in table.column_names:
                for v in table.column(col).to_pylist():
                    if v is None:
                        continue
                    text = v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                    if needle in text:
                        hits.append(f"{path}:{col}")
                        break
        elif needle.encode() in path.read_bytes():
            hits.append(str(path))
    return hits


def test_export_then_erase_leaves_no_trace(stores: Settings, tmp_path: Path) -> None:
    s = stores
    subject = f"gdpr-subject-{uuid.uuid4().hex[:8]}"
    w = workload(n=150, seed=9)
    produce_workload(s, w)
    produce(s, topic_name(s, INTERACTIONS), _subject_events(subject))
    assert Archiver(s).run(once=True).caught_up
    _seed_postgres(s, subject)
    r = redis.Redis.from_url(s.redis.url)
    keys = [f"profile:{subject}", f"recs:{subject}:home", subject]
    r.set(keys[0], "x")
    r.hset(keys[1], mapping={"item-1": "0.9"})
    r.rpush(keys[2], "a", "b")
    bystander = f"profile:{subject}-other"  # contains the id, but as part of another id
    r.set(bystander, "keep")
    try:
        # ---- export: one JSON file with every store
        out = tmp_path / "export.json"
        from lambdarec.cli.users import app

        env = {
            "LAMBDAREC_POSTGRES__URL": s.postgres.url,
            "LAMBDAREC_LAKE__ROOT": s.lake.root,
            "LAMBDAREC_REDIS__URL": s.redis.url,
        }
        from lambdarec.settings import get_settings

        get_settings.cache_clear()
        try:
            res = CliRunner().invoke(app, ["export", subject, "--out", str(out)], env=env)
        finally:
            get_settings.cache_clear()
        assert res.exit_code == 0, res.output
        data: dict[str, Any] = json.loads(out.read_text())
        assert out.stat().st_mode & 0o077 == 0  # personal data: owner-only
        assert {k for k, v in data["postgres"].items() if v} == {
            "user_profiles",
            "recommendation_logs",
            "rt_user_interactions",
        }
        assert set(data["redis"]) == set(keys)
        assert data["redis"][keys[1]] == {"type": "hash", "value": {"item-1": "0.9"}}
        assert len(data["lake"]["silver_interactions"]) == 6
        assert len(data["lake"]["bronze_interactions"]) == 7
        assert len(data["lake"]["dead_letters"]) == 1
        assert data["errors"] == {}
        others_before = {n: t.num_rows for n, t in lake_rows(Lake(s), "user-1").items()}

        # ---- erase + vacuum with retention 0 (safety check off: a test, not production)
        rep = erase_user(s, subject, retention_hours=0, enforce_retention=False)
        assert rep.errors == {}
        assert sum(rep.postgres.values()) == 3
        assert rep.redis_keys == 3
        assert rep.lake == {
            "bronze_interactions": 7,
            "silver_interactions": 6,
            "served_recommendations": 0,
            "dead_letters": 1,
        }
        assert rep.vacuumed_files > 0

        # no store returns the user any more
        assert _pg_rows(s, subject) == 0
        assert not r.exists(*keys)
        assert r.get(bystander) == b"keep"
        assert all(t.num_rows == 0 for t in lake_rows(Lake(s), subject).values())
        again = export_user(s, subject)
        assert not any(again["postgres"].values()) and not again["redis"]
        assert not any(again["lake"].values())
        # ... not even the files left on disk, nor the transaction log
        assert _scan_lake_files(Path(s.lake.root), subject) == []
        # everyone else is untouched
        assert {n: t.num_rows for n, t in lake_rows(Lake(s), "user-1").items()} == others_before
        for spec in ARCHIVE_TABLES:
            dt = Lake(s).open(spec)
            assert dt is not None
            dt.to_pyarrow_table()  # every referenced file still exists after VACUUM
    finally:
        r.delete(bystander, *keys)
