"""Migrations and the migrated schema's rules, against the real Postgres.

Most tests run in a throwaway database on the managed server (``scratch_database``), so they can
migrate from nothing, tamper with bookkeeping and create partitions without touching the shared
``lambdarec`` database other processes use.
"""

from __future__ import annotations

import shutil
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg import errors

from infra.postgres import scratch_database
from lambdarec.settings import EmbeddingSettings, Settings
from schemas.migrate import MIGRATIONS_DIR, MigrationError, load_migrations, migrate, migration_status

pytestmark = pytest.mark.integration

ALL = [m.label for m in load_migrations()]


@pytest.fixture
def fresh(postgres: Settings) -> Iterator[Settings]:
    """Settings pointing at an empty database (pgvector installed, nothing migrated)."""
    if not postgres.postgres.managed:
        pytest.skip("needs the managed Postgres to create throwaway databases")
    with scratch_database(postgres) as s:
        yield s


@pytest.fixture
def db(fresh: Settings) -> Iterator[psycopg.Connection]:
    """An autocommit connection to a freshly migrated throwaway database."""
    migrate(fresh)
    with psycopg.connect(fresh.postgres.url, autocommit=True) as conn:
        yield conn


def _with_dim(s: Settings, dim: int) -> Settings:
    return s.model_copy(update={"embedding": EmbeddingSettings(dim=dim)})


# ---- the migrator ------------------------------------------------------------------------------


def test_shared_database_is_migrated_and_up_to_date(postgres: Settings) -> None:
    assert migrate(postgres) == []
    status = migration_status(postgres)
    assert [f"{v}_{n}" for v, n, _ in status] == ALL
    assert all(at is not None for _, _, at in status)


def test_migrate_twice_applies_nothing_the_second_time(fresh: Settings) -> None:
    assert [at for _, _, at in migration_status(fresh)] == [None] * len(ALL)
    assert migrate(fresh) == ALL
    assert migrate(fresh) == []
    with psycopg.connect(fresh.postgres.url) as conn:
        rows = conn.execute(
            "SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY 1"
        ).fetchall()
        dim = conn.execute("SELECT value FROM schema_settings WHERE key = 'embedding_dim'").fetchone()
    assert [(v, n, c) for v, n, c, _ in rows] == [(m.version, m.name, m.checksum) for m in load_migrations()]
    assert all(isinstance(at, datetime) for *_, at in rows)
    assert dim == (str(fresh.embedding.dim),)


def test_tampered_checksum_is_a_clear_error(fresh: Settings) -> None:
    migrate(fresh)
    with psycopg.connect(fresh.postgres.url, autocommit=True) as conn:
        conn.execute("UPDATE schema_migrations SET checksum = repeat('0', 64) WHERE version = 2")
    with pytest.raises(
        MigrationError, match=r"002_user_profiles was changed after it was applied.*new migration"
    ):
        migrate(fresh)


def test_database_ahead_of_checkout_is_a_clear_error(fresh: Settings, tmp_path: Path) -> None:
    migrate(fresh)
    older = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, older)
    (older / f"{ALL[-1]}.sql").unlink()
    with pytest.raises(MigrationError, match=f"has migration {ALL[-1]}.*this checkout does not have"):
        migrate(fresh, older)


def test_failed_migration_is_rolled_back_and_named(fresh: Settings, tmp_path: Path) -> None:
    d = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, d)
    (d / "999_broken.sql").write_text("CREATE TABLE half_done (x int);\nSELECT 1 / 0;\n")
    with pytest.raises(MigrationError, match="999_broken failed and was rolled back: DivisionByZero"):
        migrate(fresh, d)
    with psycopg.connect(fresh.postgres.url) as conn:
        assert conn.execute("SELECT to_regclass('half_done')").fetchone() == (None,)
        assert conn.execute("SELECT max(version) FROM schema_migrations").fetchone() == (len(ALL),)


def test_concurrent_migrations_are_serialised(fresh: Settings) -> None:
    barrier = threading.Barrier(4)
    results: list[list[str]] = []
    failures: list[BaseException] = []

    def run() -> None:
        barrier.wait()
        try:
            results.append(migrate(fresh))
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert failures == []
    assert sorted(results, key=len) == [[], [], [], ALL]
    with psycopg.connect(fresh.postgres.url) as conn:
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone() == (len(ALL),)


def test_embedding_dim_is_templated_and_a_change_is_refused(fresh: Settings) -> None:
    migrate(_with_dim(fresh, 16))
    with psycopg.connect(fresh.postgres.url) as conn:
        types = dict(
            conn.execute(
                "SELECT attrelid::regclass::text || '.' || attname, format_type(atttypid, atttypmod) "
                "FROM pg_attribute WHERE attname IN ('embedding', 'preference_vector', 'als_factors') "
                "AND attrelid IN ('items'::regclass, 'user_profiles'::regclass)"
            ).fetchall()
        )
    assert types == {
        "items.embedding": "vector(16)",
        "user_profiles.preference_vector": "vector(16)",
        "user_profiles.als_factors": "vector",
    }
    with pytest.raises(
        MigrationError, match="migrated with embedding dim 16 but LAMBDAREC_EMBEDDING__DIM is 32"
    ):
        migrate(_with_dim(fresh, 32))


# ---- partitions of rt_user_interactions -------------------------------------------------------


def _partitions(conn: psycopg.Connection) -> set[str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'rt_user_interactions'::regclass"
    ).fetchall()
    return {r[0] for r in rows}


def _maintain(conn: psycopg.Connection, now: datetime) -> list[tuple[str, str, int | None]]:
    rows = conn.execute(
        "SELECT action, partition_name, moved_rows FROM rt_interactions_maintain(%s)", (now,)
    ).fetchall()
    return [(a, p, m) for a, p, m in rows]


def _event(conn: psycopg.Connection, at: datetime, event_id: uuid.UUID | None = None) -> str:
    """Insert a view event idempotently; returns the partition that holds it."""
    eid = event_id or uuid.uuid4()
    conn.execute(
        "INSERT INTO rt_user_interactions (event_id, user_id, item_id, event_type, occurred_at) "
        "VALUES (%s, 'u1', 'i1', 'view', %s) ON CONFLICT (event_id, occurred_at) DO NOTHING",
        (eid, at),
    )
    row = conn.execute(
        "SELECT tableoid::regclass::text FROM rt_user_interactions WHERE event_id = %s", (eid,)
    ).fetchone()
    assert row is not None
    return str(row[0])


def test_migration_prepares_the_current_window(db: psycopg.Connection) -> None:
    now = datetime.now(UTC)
    parts = _partitions(db)
    assert "rt_user_interactions_default" in parts
    assert f"rt_user_interactions_p{now:%Y%m%d}" in parts
    assert f"rt_user_interactions_p{now + timedelta(hours=24):%Y%m%d}" in parts
    # by day (012): 48 h back and 24 h ahead is 4 partitions, not 73 hourly ones
    assert len(parts - {"rt_user_interactions_default"}) == 4, parts
    assert _event(db, now) == f"rt_user_interactions_p{now:%Y%m%d}"


def test_partition_maintenance_creates_moves_and_drops_only_archived(db: psycopg.Connection) -> None:
    t0 = datetime(2035, 6, 1, 12, 30, tzinfo=UTC)
    # an event far ahead of any partition waits in DEFAULT instead of failing the insert
    assert _event(db, datetime(2035, 6, 1, 13, 5, tzinfo=UTC)) == "rt_user_interactions_default"

    actions = _maintain(db, t0)
    created = {p for a, p, _ in actions if a == "created"}
    # [t0 - 48 h, t0 + 24 h] by day: 2035-05-30 .. 2035-06-02
    assert created == {f"rt_user_interactions_p203505{d}" for d in (30, 31)} | {
        f"rt_user_interactions_p203506{d:02}" for d in (1, 2)
    }
    assert ("created", "rt_user_interactions_p20350601", 1) in actions  # moved out of DEFAULT
    assert _maintain(db, t0) == []  # idempotent

    # idempotent insert: a retried event is stored once
    eid = uuid.uuid4()
    at = datetime(2035, 6, 1, 14, 15, tzinfo=UTC)
    assert _event(db, at, eid) == _event(db, at, eid) == "rt_user_interactions_p20350601"
    assert db.execute("SELECT count(*) FROM rt_user_interactions WHERE event_id = %s", (eid,)).fetchone() == (
        1,
    )

    # nothing archived yet: three days later nothing may be dropped
    later = t0 + timedelta(days=3)
    assert not [a for a in _maintain(db, later) if a[0] == "dropped"]
    assert "rt_user_interactions_p20350530" in _partitions(db)

    # the lake archived everything before 2035-06-01 14:00: drop exactly the days wholly below it
    # (set directly: advance_archive_watermark refuses times after the real clock's now)
    db.execute("UPDATE archive_watermarks SET archived_through = '2035-06-01 14:00+00'")
    dropped = {p for a, p, _ in _maintain(db, later) if a == "dropped"}
    parts = _partitions(db)
    # (the migration's own partitions, around the real today, go too)
    assert {"rt_user_interactions_p20350530", "rt_user_interactions_p20350531"} <= dropped
    assert "rt_user_interactions_p20350601" in parts  # 14:00-24:00 not archived yet
    assert _event(db, at, eid) == "rt_user_interactions_p20350601"


def test_hourly_partitions_merge_into_daily_ones_with_their_rows(fresh: Settings, tmp_path: Path) -> None:
    """A database migrated before 012 (hourly partitions, rows in them and in DEFAULT) keeps
    every row when 012 merges the hours into days."""
    old = tmp_path / "migrations"
    old.mkdir()
    for f in sorted(MIGRATIONS_DIR.glob("*.sql")):
        if int(f.name[:3]) < 12:
            shutil.copy(f, old / f.name)
    migrate(fresh, old)
    with psycopg.connect(fresh.postgres.url, autocommit=True) as conn:
        now = datetime.now(UTC)
        hourly = {_event(conn, now - timedelta(hours=h)) for h in (0, 1, 5, 30)}
        assert all(len(p) == len("rt_user_interactions_p") + 10 for p in hourly), hourly
        waiting = _event(conn, now + timedelta(days=5))  # beyond the window: waits in DEFAULT
        assert waiting == "rt_user_interactions_default"
        before = conn.execute("SELECT event_id, occurred_at FROM rt_user_interactions ORDER BY 1").fetchall()

        assert migrate(fresh)[0] == "012_rt_interactions_daily"
        after = conn.execute(
            "SELECT event_id, occurred_at, tableoid::regclass::text FROM rt_user_interactions ORDER BY 1"
        ).fetchall()
        assert [(e, t) for e, t, _ in after] == before
        assert {p for _, t, p in after if t <= now} == {
            f"rt_user_interactions_p{t:%Y%m%d}" for _, t, _ in after if t <= now
        }
        assert not [p for p in _partitions(conn) if len(p) == len("rt_user_interactions_p") + 10]
        assert _maintain(conn, now) == []  # the window is complete


def test_archive_watermark_only_moves_forward(db: psycopg.Connection) -> None:
    q = "SELECT advance_archive_watermark('rt_user_interactions', %s)"
    t1 = datetime(2026, 1, 2, tzinfo=UTC)
    assert db.execute(q, (t1,)).fetchone() == (t1,)
    assert db.execute(q, (t1 - timedelta(days=1),)).fetchone() == (t1,)
    with pytest.raises(errors.InvalidParameterValue, match="not in the future"):
        db.execute(q, (datetime.now(UTC) + timedelta(days=1),))
    with pytest.raises(errors.InvalidParameterValue, match="no archive watermark for table nope"):
        db.execute("SELECT advance_archive_watermark('nope', now())")


def test_interaction_rows_follow_the_event_contract(db: psycopg.Connection) -> None:
    insert = (
        "INSERT INTO rt_user_interactions (event_id, user_id, item_id, event_type, rating, rec_id, position, "
        "occurred_at) VALUES (gen_random_uuid(), 'u', 'i', %s, %s, %s, %s, now())"
    )
    db.execute(insert, ("rate", 4.5, "r1", 0))
    for bad in (("rate", None, None, None), ("view", 4.0, None, None), ("rate", 4.25, None, None),
                ("view", None, "r1", None), ("teleport", None, None, None)):  # fmt: skip
        with pytest.raises(errors.CheckViolation):
            db.execute(insert, bad)


# ---- model registry -----------------------------------------------------------------------------


def _model(db: psycopg.Connection, version: str, status: str = "training") -> int:
    row = db.execute(
        "INSERT INTO models (algorithm, version, status, snapshot_uri) "
        "VALUES ('als', %s, %s, %s) RETURNING model_id",
        (version, status, f"s3://lambdarec-models/als/{version}"),
    ).fetchone()
    assert row is not None
    return int(row[0])


def _status(db: psycopg.Connection, model_id: int, status: str) -> None:
    db.execute("UPDATE models SET status = %s WHERE model_id = %s", (status, model_id))


def test_model_lifecycle_rejects_illegal_transitions(db: psycopg.Connection) -> None:
    m1 = _model(db, "v1")
    with pytest.raises(errors.CheckViolation, match="illegal model status transition training -> production"):
        _status(db, m1, "production")
    with pytest.raises(errors.CheckViolation, match="starts as training or registered"):
        _model(db, "v0", "production")
    for s in ("registered", "staging", "production"):
        _status(db, m1, s)
    with pytest.raises(errors.CheckViolation, match="production -> training"):
        _status(db, m1, "training")
    row = db.execute("SELECT registered_at, promoted_at FROM models WHERE model_id = %s", (m1,)).fetchone()
    assert row is not None and all(row)

    # one production model per algorithm; promote_model swaps them in one transaction
    m2 = _model(db, "v2", "registered")
    _status(db, m2, "staging")
    with pytest.raises(errors.UniqueViolation, match="models_one_production_per_algorithm"):
        _status(db, m2, "production")
    assert db.execute("SELECT promote_model(%s)", (m2,)).fetchone() == (m1,)
    rows = db.execute(
        "SELECT model_id, status FROM models WHERE version IN ('v1', 'v2') ORDER BY 1"
    ).fetchall()
    assert rows == [(m1, "deprecated"), (m2, "production")]
    with pytest.raises(errors.CheckViolation, match="only a staging model can be promoted"):
        db.execute("SELECT promote_model(%s)", (m1,))


def test_experiment_lifecycle_and_frozen_allocation(db: psycopg.Connection) -> None:
    row = db.execute(
        "INSERT INTO experiments (name) VALUES ('blend-test') RETURNING experiment_id"
    ).fetchone()
    assert row is not None
    exp = row[0]
    add = (
        "INSERT INTO experiment_variants (experiment_id, name, traffic_percent, is_control) "
        "VALUES (%s, %s, %s, %s)"
    )
    db.execute(add, (exp, "control", 50, True))
    with pytest.raises(errors.CheckViolation, match="needs >= 2 variants"):
        db.execute("UPDATE experiments SET status = 'running' WHERE experiment_id = %s", (exp,))
    with pytest.raises(errors.CheckViolation, match=r"would get 110\.00 % of traffic"):
        db.execute(add, (exp, "treatment", 60, False))
    db.execute(add, (exp, "treatment", 50, False))
    db.execute("UPDATE experiments SET status = 'running' WHERE experiment_id = %s", (exp,))
    with pytest.raises(errors.CheckViolation, match="can only change while it is draft"):
        db.execute("UPDATE experiment_variants SET traffic_percent = 40 WHERE name = 'control'")
    db.execute("UPDATE experiment_variants SET impressions = 10, clicks = 3 WHERE name = 'control'")
    assert db.execute("SELECT ctr FROM experiment_variants WHERE name = 'control'").fetchone() == (0.3,)
    with pytest.raises(errors.CheckViolation, match="running -> draft"):
        db.execute("UPDATE experiments SET status = 'draft' WHERE experiment_id = %s", (exp,))


# ---- batch view swap ----------------------------------------------------------------------------


def _run(db: psycopg.Connection, version: str, users: list[str]) -> int:
    row = db.execute("SELECT begin_batch_recommendations('als', %s)", (version,)).fetchone()
    assert row is not None
    run_id = int(row[0])
    with db.cursor() as cur:
        cur.executemany(
            "INSERT INTO batch_recommendations (run_id, user_id, recommendations) VALUES (%s, %s, %s)",
            [(run_id, u, f'[{{"item_id": "{version}", "score": 1.0}}]') for u in users],
        )
    return run_id


def _current(db: psycopg.Connection, user: str) -> tuple[str, str] | None:
    row = db.execute(
        "SELECT model_version, recommendations->0->>'item_id' "
        "FROM current_batch_recommendations WHERE user_id = %s",
        (user,),
    ).fetchone()
    return None if row is None else (row[0], row[1])


def test_batch_recommendations_swap_atomically_and_roll_back(db: psycopg.Connection) -> None:
    r1 = _run(db, "v1", ["a", "b"])
    assert _current(db, "a") is None  # loading runs are invisible
    assert db.execute("SELECT publish_batch_recommendations(%s)", (r1,)).fetchone() == (2,)
    assert _current(db, "a") == ("v1", "v1")

    r2 = _run(db, "v2", ["a", "c"])
    assert _current(db, "a") == ("v1", "v1") and _current(db, "c") is None
    db.execute("SELECT publish_batch_recommendations(%s)", (r2,))
    # the whole set switched: b is gone (not in v2), c appeared
    assert (_current(db, "a"), _current(db, "b"), _current(db, "c")) == (("v2", "v2"), None, ("v2", "v2"))

    db.execute("SELECT publish_batch_recommendations(%s)", (r1,))  # rollback to the retired run
    assert _current(db, "b") == ("v1", "v1")

    empty = _run(db, "v3", [])
    with pytest.raises(errors.CheckViolation, match="has no rows"):
        db.execute("SELECT publish_batch_recommendations(%s)", (empty,))
    with pytest.raises(errors.CheckViolation, match="is active"):
        db.execute("SELECT discard_batch_recommendations(%s)", (r1,))

    # keep only one retired run: publishing r4 retires r1 and drops r2's partition
    r4 = _run(db, "v4", ["a"])
    db.execute("SELECT publish_batch_recommendations(%s, 1)", (r4,))
    status = dict(db.execute("SELECT run_id, status FROM batch_recommendation_runs").fetchall())
    assert status[r1] == "retired" and status[r2] == "discarded" and status[r4] == "active"
    assert db.execute("SELECT to_regclass(%s)", (f"batch_recommendations_r{r2}",)).fetchone() == (None,)


# ---- GDPR ---------------------------------------------------------------------------------------


def test_every_user_table_is_found_and_forgotten(db: psycopg.Connection) -> None:
    tables = {r[0] for r in db.execute("SELECT gdpr_user_tables()::text").fetchall()}
    assert tables == {
        "user_profiles",
        "rt_user_interactions",
        "batch_recommendations",
        "recommendation_logs",
        "recommendation_feedback",
    }
    db.execute("INSERT INTO user_profiles (user_id) VALUES ('gdpr-u'), ('other')")
    _event(db, datetime.now(UTC))  # user u1: not ours
    db.execute(
        "INSERT INTO rt_user_interactions (event_id, user_id, item_id, event_type, occurred_at) "
        "VALUES (gen_random_uuid(), 'gdpr-u', 'i1', 'click', now())"
    )
    db.execute(
        "INSERT INTO recommendation_logs (rec_id, user_id, items, algorithm_source) "
        "VALUES ('r1', 'gdpr-u', '[]', 'batch')"
    )
    db.execute(
        "INSERT INTO recommendation_feedback "
        "(event_id, rec_id, user_id, item_id, position, event_type, occurred_at) "
        "VALUES (gen_random_uuid(), 'r1', 'gdpr-u', 'i1', 0, 'click', now())"
    )
    db.execute("SELECT publish_batch_recommendations(%s)", (_run(db, "v1", ["gdpr-u", "other"]),))

    export = db.execute("SELECT gdpr_export_user('gdpr-u')").fetchone()
    assert export is not None
    assert {t: len(rows) for t, rows in export[0].items()} == dict.fromkeys(tables, 1)
    deleted = dict(db.execute("SELECT * FROM gdpr_forget_user('gdpr-u')").fetchall())
    assert deleted == dict.fromkeys(tables, 1)
    after = db.execute("SELECT gdpr_export_user('gdpr-u')").fetchone()
    assert after is not None and all(rows == [] for rows in after[0].values())
    assert db.execute("SELECT count(*) FROM user_profiles WHERE user_id = 'other'").fetchone() == (1,)
