"""The managed Postgres + pgvector service: health, vector search, bad configuration."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector

from infra import services
from infra.errors import InfraError
from infra.postgres import PostgresService, scratch_database
from lambdarec.settings import Settings
from schemas.migrate import migrate
from tests.ports import free_port

pytestmark = pytest.mark.integration


def _throwaway(tmp_path: Path, url: str, managed: bool = True) -> Settings:
    return Settings(var_dir=tmp_path / "var", postgres={"url": url, "managed": managed})


# ---- the running service ------------------------------------------------------------------------


def test_status_is_healthy_with_version_pid_and_memory(postgres: Settings) -> None:
    (row,) = services.status(postgres, ["postgres"])
    assert row.healthy, row.detail
    assert row.version.startswith("PostgreSQL 18.") and "pgvector 0.8" in row.version
    assert row.pid is not None and row.rss_mb is not None and row.rss_mb > 10
    with psycopg.connect(postgres.postgres.url) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
        superuser = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
        assert superuser == (False,)
        # our tuning file is in effect
        assert conn.execute("SHOW shared_buffers").fetchone() == ("256MB",)


def test_second_up_is_quick_and_keeps_the_server(postgres: Settings) -> None:
    svc = PostgresService(postgres)
    pid = svc.pidfile.read()
    t0 = time.monotonic()
    services.up(postgres, ["postgres"])
    assert time.monotonic() - t0 < 10
    assert svc.pidfile.read() == pid
    assert svc.ping()


def test_wrong_password_does_not_ping(postgres: Settings) -> None:
    url = postgres.postgres.url.replace(":lambdarec@", ":wrong@", 1)
    assert url != postgres.postgres.url
    assert not PostgresService(_throwaway(Path("/nonexistent"), url)).ping()


# ---- pgvector HNSW ------------------------------------------------------------------------------


def test_hnsw_cosine_top_k_matches_numpy_brute_force(postgres: Settings) -> None:
    """Clustered vectors of the configured dimension; the HNSW index must be used and agree with
    an exact numpy search: top-1 always, top-10 at high recall."""
    dim, n, k, n_queries = postgres.embedding.dim, 3000, 10, 25
    rng = np.random.default_rng(20240501)
    centers = rng.normal(size=(40, dim)).astype(np.float32)
    vectors = centers[rng.integers(0, len(centers), n)] + 0.6 * rng.normal(size=(n, dim)).astype(np.float32)
    sources = rng.choice(n, n_queries, replace=False)
    queries = vectors[sources] + 0.05 * rng.normal(size=(n_queries, dim)).astype(np.float32)

    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    qunit = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    exact = np.argsort(-(qunit @ unit.T), axis=1)[:, :k]  # cosine distance ascending

    with scratch_database(postgres) as s:
        migrate(s)
        with psycopg.connect(s.postgres.url, autocommit=True) as conn:
            register_vector(conn)
            copy_sql = "COPY items (item_id, title, embedding) FROM STDIN (FORMAT BINARY)"
            with conn.cursor() as cur, cur.copy(copy_sql) as cp:
                cp.set_types(["varchar", "varchar", "vector"])
                for i, v in enumerate(vectors):
                    cp.write_row([f"i{i}", f"item {i}", v])
            conn.execute("ANALYZE items")
            query = "SELECT item_id FROM items ORDER BY embedding <=> %s LIMIT %s"
            with conn.transaction():
                conn.execute("SET LOCAL hnsw.ef_search = 100")
                plan = conn.execute("EXPLAIN (FORMAT JSON) " + query, (queries[0], k)).fetchone()
                assert plan is not None
                assert '"Index Name": "items_embedding_hnsw_idx"' in json.dumps(plan[0]), plan[0]
                got = [[int(r[0][1:]) for r in conn.execute(query, (q, k)).fetchall()] for q in queries]

    assert [g[0] for g in got] == list(sources)  # the perturbed source is the nearest neighbour
    assert [g[0] for g in got] == list(exact[:, 0])
    recall = np.mean([len(set(g) & set(e)) / k for g, e in zip(got, exact, strict=True)])
    assert recall >= 0.9, f"HNSW recall@{k} {recall:.2f} vs brute force"


# ---- bad configuration --------------------------------------------------------------------------


def test_port_taken_names_the_setting(tmp_path: Path, listener: int) -> None:
    svc = PostgresService(_throwaway(tmp_path, f"postgresql://u:p@127.0.0.1:{listener}/db"))
    with pytest.raises(InfraError, match=rf"port {listener} \(LAMBDAREC_POSTGRES__URL\) is already taken"):
        svc.launch()


def test_managed_server_must_be_local(tmp_path: Path) -> None:
    svc = PostgresService(_throwaway(tmp_path, "postgresql://u:p@db.example.com:5432/db"))
    with pytest.raises(InfraError, match=r"listens on 127\.0\.0\.1 only.*LAMBDAREC_POSTGRES__MANAGED=false"):
        svc.launch()


def test_unreachable_external_postgres_is_a_clear_error(tmp_path: Path) -> None:
    port = free_port()
    s = _throwaway(tmp_path, f"postgresql://u:p@127.0.0.1:{port}/db", managed=False)
    svc = PostgresService(s)
    t0 = time.monotonic()
    assert not svc.ping()
    expected = rf"postgres at 127\.0\.0\.1:{port}/db is external \(managed=false\)"
    with pytest.raises(InfraError, match=expected):
        svc.up()
    assert time.monotonic() - t0 < 15
    assert not (tmp_path / "var" / "postgres").exists()  # nothing installed or started for it
    (row,) = services.status(s, ["postgres"])
    assert not row.healthy and not row.managed and row.pid is None
