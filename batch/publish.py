"""Task 5's writers: the batch view in Postgres and the promotion on the ``model-updates`` topic.

Why the versioned-run swap (migration 006): the top-N lists of a run are COPYed into their own
partition while readers keep seeing the previous run in full; ``publish_batch_recommendations()``
flips the single "active" pointer in one short transaction. :func:`promote_and_publish` calls
``promote_model()`` in that *same* transaction, so the registry's production model and the lists
served from ``current_batch_recommendations`` always belong to the same model: a crash before the
commit leaves both as they were, after it both are new.

The announcement (:func:`announce`) happens after the commit: the topic is the only coupling to
the speed layer and serving (``schemas/model_updates.py``), and re-announcing the same model on a
resumed run is harmless (readers keep the last record per algorithm).
"""

from __future__ import annotations

import json
from datetime import datetime

import numpy as np
import psycopg

from lambdarec.settings import Settings
from schemas import model_updates
from schemas.topics import MODEL_UPDATES, producer_config, topic_name


def find_loading_run(conn: psycopg.Connection, algorithm: str, version: str) -> int | None:
    """A run of this model still ``loading`` (a resumed task 5 discards and rewrites it)."""
    r = conn.execute(
        "SELECT run_id FROM batch_recommendation_runs WHERE algorithm = %s AND model_version = %s "
        "AND status = 'loading' ORDER BY run_id DESC LIMIT 1",
        (algorithm, version),
    ).fetchone()
    return None if r is None else int(r[0])


def active_run(conn: psycopg.Connection) -> tuple[int, str, str] | None:
    """``(run_id, algorithm, model_version)`` of the run readers see now."""
    r = conn.execute(
        "SELECT run_id, algorithm, model_version FROM batch_recommendation_runs WHERE status = 'active'"
    ).fetchone()
    return None if r is None else (int(r[0]), str(r[1]), str(r[2]))


def _rec_json(item_ids: np.ndarray, idx: np.ndarray, scores: np.ndarray) -> str:
    ok = idx >= 0
    return json.dumps(
        [
            {"item_id": str(item_ids[i]), "score": round(float(s), 6)}
            for i, s in zip(idx[ok], scores[ok], strict=True)
        ],
        separators=(",", ":"),
    )


def load_batch_run(
    conn: psycopg.Connection,
    *,
    algorithm: str,
    model_version: str,
    expires_at: datetime,
    user_ids: np.ndarray,
    item_ids: np.ndarray,
    top_idx: np.ndarray,
    top_scores: np.ndarray,
) -> tuple[int, int]:
    """Write a complete new run (users with an empty list are skipped). Returns ``(run_id, rows)``.

    A leftover ``loading`` run of the same model (a crash mid-COPY) is discarded first, so the
    function can be repeated safely. Nothing becomes visible until :func:`promote_and_publish`.
    """
    stale = find_loading_run(conn, algorithm, model_version)
    if stale is not None:
        conn.execute("SELECT discard_batch_recommendations(%s)", (stale,))
    r = conn.execute(
        "SELECT begin_batch_recommendations(%s, %s, %s)", (algorithm, model_version, expires_at)
    ).fetchone()
    assert r is not None
    run_id = int(r[0])
    rows = 0
    with (
        conn.cursor() as cur,
        cur.copy("COPY batch_recommendations (run_id, user_id, recommendations) FROM STDIN") as cp,
    ):
        for u in range(len(user_ids)):
            if top_idx[u, 0] < 0:
                continue
            cp.write_row((run_id, str(user_ids[u]), _rec_json(item_ids, top_idx[u], top_scores[u])))
            rows += 1
    return run_id, rows


def promote_and_publish(conn: psycopg.Connection, model_id: int, run_id: int) -> tuple[int | None, int]:
    """In one transaction: ``promote_model(model_id)`` (staging -> production) and
    ``publish_batch_recommendations(run_id)``. Returns ``(deprecated model id, users published)``.

    Idempotent for a resumed run: an already-production model is not promoted again, an already
    active run is not published again.
    """
    with conn.transaction():
        status = conn.execute(
            "SELECT status FROM models WHERE model_id = %s FOR UPDATE", (model_id,)
        ).fetchone()
        previous: int | None = None
        if status is None:
            raise LookupError(f"no model {model_id}")
        if status[0] != "production":
            r = conn.execute("SELECT promote_model(%s)", (model_id,)).fetchone()
            previous = None if r is None or r[0] is None else int(r[0])
        run = conn.execute(
            "SELECT status, user_count FROM batch_recommendation_runs WHERE run_id = %s", (run_id,)
        ).fetchone()
        if run is None:
            raise LookupError(f"no batch recommendation run {run_id}")
        if run[0] == "active":
            users = int(run[1] or 0)
        else:
            u = conn.execute("SELECT publish_batch_recommendations(%s)", (run_id,)).fetchone()
            users = int(u[0]) if u else 0
    return previous, users


def announce(settings: Settings, update: model_updates.ModelUpdate, *, timeout: float = 30.0) -> None:
    """Produce the promotion on ``model-updates`` (key = algorithm) and wait for the broker's ack."""
    from confluent_kafka import KafkaException, Producer

    errors: list[str] = []

    def on_delivery(err: object, _msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    producer = Producer(producer_config(settings, **{"client.id": "lambdarec-batch"}))
    producer.produce(
        topic_name(settings, MODEL_UPDATES),
        key=update.algorithm.encode(),
        value=model_updates.encode(update),
        on_delivery=on_delivery,
    )
    left = producer.flush(timeout)
    if left or errors:
        raise KafkaException(
            f"model-updates announcement of {update.algorithm} {update.model_version} not acknowledged "
            f"({'; '.join(errors) or f'{left} record(s) still queued after {timeout:.0f}s'})"
        )
