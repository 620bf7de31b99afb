"""The speed layer's hand-built binary COPY of profile rows, read back by Postgres' own parser
(with pgvector's types) rather than compared with fixed bytes."""

from __future__ import annotations

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

from lambdarec.settings import Settings
from streams.processors.profiles import UserUpdate
from streams.sinks.postgres import profile_copy_data


def test_profile_copy_data_round_trips_through_postgres(scratch_postgres: Settings) -> None:
    rng = np.random.default_rng(0)
    ups = [
        UserUpdate(
            "u-ä", [], rng.normal(size=7).astype(np.float32), rng.normal(size=3).astype(np.float32), "v1"
        ),
        UserUpdate("u2", [], None, None, None),
        UserUpdate("u3", [], rng.normal(size=7).astype(np.float32), None, None),
    ]
    with psycopg.connect(scratch_postgres.postgres.url) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        register_vector(conn)
        conn.execute("CREATE TEMP TABLE t (user_id varchar, p vector, a vector, v varchar)")
        with conn.cursor() as cur, cur.copy("COPY t FROM STDIN (FORMAT BINARY)") as cp:
            cp.write(profile_copy_data(ups))
        rows = {r[0]: r[1:] for r in conn.execute("SELECT user_id, p, a, v FROM t").fetchall()}
    assert rows.keys() == {"u-ä", "u2", "u3"}
    for u in ups:
        p, a, v = rows[u.user_id]
        assert v == u.als_version
        for got, want in ((p, u.taste), (a, u.als)):
            if want is None:
                assert got is None
            else:
                np.testing.assert_array_equal(got.to_numpy(), want)
