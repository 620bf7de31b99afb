"""``lambdarec backfill`` against real services: MovieLens ratings into a private lake (twice:
the second import writes nothing) and into a private Kafka topic (consumed back and decoded)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer

from batch.lake.events import read_bronze, read_silver
from batch.lake.storage import Lake
from lambdarec.cli.backfill import run_backfill
from lambdarec.settings import Settings
from schemas import events as ev
from schemas.topics import INTERACTIONS, topic_name
from tests.integration.lake_support import lake_settings, lake_topics

pytestmark = pytest.mark.integration

RATINGS = (
    "userId,movieId,rating,timestamp\n"
    "1,31,2.5,1260759144\n"
    "1,1029,0.5,1260759179\n"
    "2,10,5.0,835355493\n"
    "this line is broken\n"
    "3,99999999,4.0,1260759200\n"
)


@pytest.fixture
def ratings(tmp_path: Path) -> Path:
    p = tmp_path / "ratings.csv"
    p.write_text(RATINGS)
    return p


def test_backfill_to_lake_is_idempotent(postgres: Settings, ratings: Path, tmp_path: Path) -> None:
    settings = lake_settings(postgres, str(tmp_path / "lake"), f"bf-{uuid.uuid4().hex[:8]}.")
    first = run_backfill(settings, ratings, to="lake", check_items=False)
    assert (first.events, first.broken, first.written) == (4, 1, 4)
    again = run_backfill(settings, ratings, to="lake", check_items=False)
    assert again.written == 0 and again.skipped_existing == 4
    lake = Lake(settings)
    silver = read_silver(lake).to_pylist()
    assert sorted((r["user_id"], r["item_id"], r["rating"]) for r in silver) == [
        ("1", "1029", 1.0),
        ("1", "31", 2.5),
        ("2", "10", 5.0),
        ("3", "99999999", 4.0),
    ]
    assert {r["type"] for r in silver} == {"rate"}
    assert read_bronze(lake).num_rows == 4  # the re-import committed nothing
    assert all(r["topic"].startswith("backfill.movielens.") for r in read_bronze(lake).to_pylist())


def test_unknown_items_are_checked_against_postgres(
    postgres: Settings, ratings: Path, tmp_path: Path
) -> None:
    import psycopg

    with psycopg.connect(postgres.postgres.url) as conn:
        known = {
            r[0]
            for r in conn.execute("SELECT item_id FROM items WHERE item_id IN ('31','1029','10','99999999')")
        }
    settings = lake_settings(postgres, str(tmp_path / "lake"), "unused.")
    res = run_backfill(settings, ratings, to="lake", skip_unknown=True)
    assert "99999999" not in known
    assert res.unknown_items == 4 - len(known)
    assert res.unknown_skipped == res.unknown_items
    assert res.written == len(known)


def test_backfill_to_kafka_replays_valid_events(kafka: Settings, ratings: Path, tmp_path: Path) -> None:
    settings = lake_settings(kafka, str(tmp_path / "lake"), f"bf-{uuid.uuid4().hex[:8]}.")
    with lake_topics(settings, partitions=1):
        res = run_backfill(settings, ratings, to="kafka", check_items=False, speed=1e9)
        assert res.written == 4
        c = Consumer(
            {
                "bootstrap.servers": settings.kafka.bootstrap_servers,
                "group.id": f"bf-test-{uuid.uuid4()}",
                "auto.offset.reset": "earliest",
            }
        )
        try:
            c.subscribe([topic_name(settings, INTERACTIONS)])
            got: list[ev.InteractionEvent] = []
            for _ in range(60):
                msg = c.poll(1.0)
                if msg is not None and not msg.error():
                    got.append(ev.decode(msg.value()))
                if len(got) == 4:
                    break
        finally:
            c.close()
    # --speed replays in event-time order
    assert [e.occurred_at for e in got] == sorted(e.occurred_at for e in got)
    assert {(e.user_id, e.item_id) for e in got} == {
        ("1", "31"),
        ("1", "1029"),
        ("2", "10"),
        ("3", "99999999"),
    }


def test_duplicate_rows_land_once(postgres: Settings, tmp_path: Path) -> None:
    """The same rating row twice in one file (and once more in a second file) is one silver row:
    imported events have deterministic ids and silver inserts by event_id only if absent."""
    settings = lake_settings(postgres, str(tmp_path / "lake"), f"bf-{uuid.uuid4().hex[:8]}.")
    dup = tmp_path / "a" / "ratings.csv"
    dup.parent.mkdir()
    dup.write_text("userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n1,31,2.5,1260759144\n")
    first = run_backfill(settings, dup, to="lake", check_items=False)
    assert first.events == 2
    other = tmp_path / "b" / "ratings.csv"
    other.parent.mkdir()
    other.write_text("userId,movieId,rating,timestamp\n2,10,5.0,835355493\n1,31,2.5,1260759144\n")
    run_backfill(settings, other, to="lake", check_items=False)
    silver = read_silver(Lake(settings)).to_pylist()
    assert sorted((r["user_id"], r["item_id"]) for r in silver) == [("1", "31"), ("2", "10")]
