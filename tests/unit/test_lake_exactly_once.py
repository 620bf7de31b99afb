"""Exactly-once mechanics on a local Delta table, without Kafka: offsets in the commit, replay,
partial overlap, empty batches, zombie writers, deduplication, decoding into rows."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake.exceptions import CommitFailedError, SchemaMismatchError

from batch.lake.archiver import Archiver, compute_watermark, is_transient
from batch.lake.events import bronze_rows, decode_interactions, silver_rows
from batch.lake.storage import Lake
from batch.lake.txn import (
    SOURCE_TOPIC,
    DedupIndex,
    KafkaRecord,
    app_id,
    commit_exactly_once,
    committed_offsets,
    drop_committed,
)
from lambdarec.settings import Settings
from schemas.lake import BRONZE_INTERACTIONS, DEAD_LETTERS, SILVER_INTERACTIONS
from schemas.topics import INTERACTIONS, INTERACTIONS_DLQ, SERVED, topic_name

NOW = datetime.now(UTC)


def _event(i: int, **kw: object) -> bytes:
    ev = {
        "event_id": str(uuid.UUID(int=i + 1)),
        "user_id": f"u{i % 3}",
        "item_id": f"i{i % 5}",
        "type": "view",
        "occurred_at": (NOW - timedelta(minutes=i)).isoformat(),
    }
    ev.update(kw)
    return json.dumps(ev).encode()


def _records(topic: str, values: list[bytes], partition: int = 0, start: int = 0) -> list[KafkaRecord]:
    return [
        KafkaRecord(topic, partition, start + n, 1_700_000_000_000, b"u", v) for n, v in enumerate(values)
    ]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(lake={"root": str(tmp_path / "lake"), "advance_watermark": False})


def test_app_ids_and_committed_offsets(settings: Settings) -> None:
    dt = Lake(settings).ensure(BRONZE_INTERACTIONS)
    assert app_id("t", 3) == "kafka/t/3"
    assert committed_offsets(dt, [("t", 0)]) == {("t", 0): -1}


def test_replaying_a_batch_writes_nothing_twice(settings: Settings) -> None:
    lake = Lake(settings)
    dt = lake.ensure(BRONZE_INTERACTIONS)
    recs = _records("t", [_event(i) for i in range(10)])
    rows = bronze_rows(decode_interactions(recs), NOW)

    def append(dt, rows, props):  # type: ignore[no-untyped-def]
        from batch.lake.events import write_bronze

        return write_bronze(dt, rows, props)

    first = commit_exactly_once(dt, BRONZE_INTERACTIONS, rows, {("t", 0): 9}, append)
    assert first.rows == 10 and first.version == 1
    assert committed_offsets(dt, [("t", 0)]) == {("t", 0): 9}
    # the same batch again (crash after the Delta commit, before the Kafka commit): no new version
    again = commit_exactly_once(dt, BRONZE_INTERACTIONS, rows, {("t", 0): 9}, append)
    assert again.version is None and again.skipped_rows == 10
    # an overlapping batch 5..14 only adds 10..14
    recs2 = _records("t", [_event(i) for i in range(5, 15)], start=5)
    rows2 = bronze_rows(decode_interactions(recs2), NOW)
    third = commit_exactly_once(dt, BRONZE_INTERACTIONS, rows2, {("t", 0): 14}, append)
    assert third.rows == 5 and third.skipped_rows == 5
    offs = sorted(lake.open(BRONZE_INTERACTIONS).to_pyarrow_table().column("kafka_offset").to_pylist())  # type: ignore[union-attr]
    assert offs == list(range(15))


def test_empty_batch_still_commits_offsets(settings: Settings) -> None:
    dt = Lake(settings).ensure(DEAD_LETTERS)
    from batch.lake.dead_letters import dead_letter_rows, dead_letter_writer

    rows = dead_letter_rows([], NOW)
    res = commit_exactly_once(
        dt,
        DEAD_LETTERS,
        rows,
        {("t", 0): 41, ("t", 1): 7},
        dead_letter_writer(DedupIndex(DEAD_LETTERS, "letter_id")),
    )
    assert res.rows == 0 and res.version == 1
    assert committed_offsets(dt, [("t", 0), ("t", 1)]) == {("t", 0): 41, ("t", 1): 7}


def test_zombie_writer_with_the_same_offsets_is_rejected(settings: Settings) -> None:
    lake = Lake(settings)
    lake.ensure(BRONZE_INTERACTIONS)
    a, b = lake.open(BRONZE_INTERACTIONS), lake.open(BRONZE_INTERACTIONS)
    assert a is not None and b is not None
    rows = bronze_rows(decode_interactions(_records("t", [_event(1)])), NOW)
    # both "instances" checked the offsets on the same snapshot; the second commit must fail ...
    from deltalake import CommitProperties, Transaction

    from batch.lake.events import write_bronze

    props = CommitProperties(app_transactions=[Transaction(app_id("t", 0), 0)])
    write_bronze(a, rows.drop_columns([SOURCE_TOPIC]), props)
    with pytest.raises(CommitFailedError):
        write_bronze(b, rows.drop_columns([SOURCE_TOPIC]), props)
    # ... and the retry (what the archiver does) finds the offsets done
    res = commit_exactly_once(b, BRONZE_INTERACTIONS, rows, {("t", 0): 0}, write_bronze)
    assert res.version is None
    assert lake.open(BRONZE_INTERACTIONS).to_pyarrow_table().num_rows == 1  # type: ignore[union-attr]


def test_drop_committed_per_topic_partition() -> None:
    t = pa.table(
        {
            SOURCE_TOPIC: ["a", "a", "a", "b", "b"],
            "kafka_partition": pa.array([0, 0, 1, 0, 0], pa.int32()),
            "kafka_offset": pa.array([4, 5, 4, 4, 5], pa.int64()),
        }
    )
    out = drop_committed(t, {("a", 0): 4, ("a", 1): -1, ("b", 0): 5})
    assert list(
        zip(out.column(SOURCE_TOPIC).to_pylist(), out.column("kafka_offset").to_pylist(), strict=True)
    ) == [
        ("a", 5),
        ("a", 4),
    ]


def test_silver_dedups_within_batch_and_against_the_table(settings: Settings) -> None:
    lake = Lake(settings)
    dt = lake.ensure(SILVER_INTERACTIONS)
    idx = DedupIndex(SILVER_INTERACTIONS, "event_id")
    from batch.lake.events import silver_writer

    write = silver_writer(idx, max_extra_columns=8)
    values = [_event(1), _event(2), _event(1)]  # a retry inside the batch
    rows = silver_rows(decode_interactions(_records("t", values)), NOW)
    assert commit_exactly_once(dt, SILVER_INTERACTIONS, rows, {("t", 0): 2}, write).rows == 2
    # the same events re-sent later (new offsets): already in the table
    rows = silver_rows(decode_interactions(_records("t", [_event(2), _event(3)], start=3)), NOW)
    assert commit_exactly_once(dt, SILVER_INTERACTIONS, rows, {("t", 0): 4}, write).rows == 1
    # a foreign commit (e.g. a GDPR rewrite) invalidates the cache; the table stays the truth
    dt.delete("event_id = 'nope'")
    rows = silver_rows(decode_interactions(_records("t", [_event(3), _event(4)], start=5)), NOW)
    assert commit_exactly_once(dt, SILVER_INTERACTIONS, rows, {("t", 0): 6}, write).rows == 1
    ids = lake.open(SILVER_INTERACTIONS).to_pyarrow_table().column("event_id").to_pylist()  # type: ignore[union-attr]
    assert sorted(ids) == sorted(str(uuid.UUID(int=i + 1)) for i in (1, 2, 3, 4))


def test_new_optional_fields_become_columns(settings: Settings) -> None:
    lake = Lake(settings)
    dt = lake.ensure(SILVER_INTERACTIONS)
    from batch.lake.events import silver_writer

    write = silver_writer(DedupIndex(SILVER_INTERACTIONS, "event_id"), max_extra_columns=2)
    values = [
        _event(1, device_class="tv", score_hint=3),
        _event(2, score_hint=2.5, nested={"a": 1}),
        _event(3, **{"Bad Name": 1, "event_date": "spoof"}),  # not a column name / reserved
    ]
    rows = silver_rows(decode_interactions(_records("t", values)), NOW)
    commit_exactly_once(dt, SILVER_INTERACTIONS, rows, {("t", 0): 2}, write)
    table = lake.open(SILVER_INTERACTIONS).to_pyarrow_table()  # type: ignore[union-attr]
    extra = [n for n in table.column_names if n not in SILVER_INTERACTIONS.column_names]
    assert extra == ["device_class", "nested"]  # max_extra_columns=2, alphabetical
    assert table.schema.field("device_class").type == pa.string()
    by_id = {r["event_id"]: r for r in table.to_pylist()}
    assert by_id[str(uuid.UUID(int=2))]["device_class"] == "tv"
    assert by_id[str(uuid.UUID(int=3))]["nested"] == '{"a":1}'
    # later events without the field still append (nulls); another type is cast to the column type
    rows = silver_rows(
        decode_interactions(_records("t", [_event(4), _event(5, device_class=7)], start=3)), NOW
    )
    commit_exactly_once(dt, SILVER_INTERACTIONS, rows, {("t", 0): 4}, write)
    table = lake.open(SILVER_INTERACTIONS).to_pyarrow_table()  # type: ignore[union-attr]
    assert table.num_rows == 5


def test_bronze_keeps_everything_silver_only_valid() -> None:
    values = [_event(1), b"{broken", b"", _event(2, type="rate")]  # rate without rating: invalid
    batch = decode_interactions(_records("t", values))
    bronze = bronze_rows(batch, NOW)
    assert bronze.num_rows == 4
    assert bronze.column("valid").to_pylist() == [True, False, False, False]
    assert bronze.column("error_reason").to_pylist()[1:] == ["malformed_json", "empty", "invalid_field"]
    assert bronze.column("payload").to_pylist()[1] == b"{broken"
    assert bronze.column("user_id").to_pylist() == ["u1", "u", "u", "u2"]  # payload, key, key, payload
    assert silver_rows(batch, NOW).num_rows == 1
    assert len(batch.dead_letters) == 3


def test_archiver_write_batch_routes_every_topic(settings: Settings) -> None:
    arch = Archiver(settings)
    inter, served, dlq = (topic_name(settings, t) for t in (INTERACTIONS, SERVED, INTERACTIONS_DLQ))
    lst = {
        "rec_id": "r1",
        "user_id": "u1",
        "algorithm_source": "batch",
        "served_at": NOW.isoformat(),
        "items": [{"item_id": "i1", "score": 0.9}, {"item_id": "i2"}],
    }
    recs = (
        _records(inter, [_event(1, rec_id="r1", position=1, type="click"), b"nope"])
        + _records(served, [json.dumps(lst).encode(), b"[1]"])
        + _records(dlq, [b"\x00garbage"])
    )
    res = arch.write_batch(recs)
    assert {k: v.rows for k, v in res.items()} == {
        "bronze_interactions": 2,
        "silver_interactions": 1,
        "served_recommendations": 2,
        "dead_letters": 3,
    }
    # replay of the whole batch after a crash: every table skips it
    res = arch.write_batch(recs)
    assert all(v.version is None for v in res.values())
    # and a fresh archiver would start after the batch on every partition
    parts = [(inter, 0), (served, 0), (dlq, 0), (inter, 1)]
    assert arch.lake_positions(parts) == {(inter, 0): 2, (served, 0): 2, (dlq, 0): 1, (inter, 1): 0}


def test_watermark_rules() -> None:
    t_obs = NOW.timestamp()
    tp0, tp1 = ("t", 0), ("t", 1)
    # caught up everywhere: observation time minus lateness
    mark = compute_watermark({tp0: 5, tp1: 3}, {tp0: 5, tp1: 3}, {}, t_obs, 60)
    assert mark is not None and abs((NOW - timedelta(seconds=60) - mark).total_seconds()) < 0.01
    # lagging partition: its last archived record's timestamp bounds the watermark
    last = {tp1: int((NOW - timedelta(hours=1)).timestamp() * 1000)}
    mark = compute_watermark({tp0: 5, tp1: 2}, {tp0: 5, tp1: 3}, last, t_obs, 0)
    assert mark is not None and abs((NOW - timedelta(hours=1) - mark).total_seconds()) < 0.01
    # lagging with nothing archived yet: no watermark at all
    assert compute_watermark({tp0: 0}, {tp0: 3}, {}, t_obs, 0) is None
    assert compute_watermark({}, {}, {}, t_obs, 0) is None


def test_transient_errors() -> None:
    assert is_transient(OSError("Generic S3 error: connection refused"))
    assert is_transient(CommitFailedError("Concurrent transaction failed."))
    assert not is_transient(SchemaMismatchError("Cannot cast schema"))
    assert not is_transient(ValueError("bug"))


def test_crash_point_parsing(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    monkeypatch.setenv("LAMBDAREC_LAKE_CRASH_POINT", "after_commit:silver_interactions@3")
    assert Archiver(settings)._crash == ("after_commit:silver_interactions", 3)
    monkeypatch.setenv("LAMBDAREC_LAKE_CRASH_POINT", "before_offset_commit")
    assert Archiver(settings)._crash == ("before_offset_commit", 1)
    monkeypatch.delenv("LAMBDAREC_LAKE_CRASH_POINT")
    a = Archiver(settings)
    assert a._crash is None
    a.crash_point("before_offset_commit")  # a no-op when unset


def test_offsets_survive_checkpoints(settings: Settings) -> None:
    """The table is created with checkpointInterval=50: offsets must be read back from the
    checkpoint (Parquet) and the JSON commits after it alike."""
    from batch.lake.events import write_bronze

    lake = Lake(settings)
    dt = lake.ensure(BRONZE_INTERACTIONS)
    for i in range(55):
        rows = bronze_rows(
            decode_interactions(_records("t", [_event(i)], partition=i % 2, start=i // 2)), NOW
        )
        commit_exactly_once(dt, BRONZE_INTERACTIONS, rows, {("t", i % 2): i // 2}, write_bronze)
    fresh = lake.open(BRONZE_INTERACTIONS)
    assert fresh is not None and fresh.version() == 55
    assert any(
        p.name.endswith(".checkpoint.parquet")
        for p in (Path(lake.uri(BRONZE_INTERACTIONS)) / "_delta_log").iterdir()
    )
    assert committed_offsets(fresh, [("t", 0), ("t", 1)]) == {("t", 0): 27, ("t", 1): 26}


def test_a_bad_record_seen_on_both_paths_is_one_dead_letter(settings: Settings) -> None:
    """The speed layer dead-letters a record to the DLQ; the archiver rejects the same record on
    the interactions topic: both copies carry the same origin, so the table keeps one row."""
    from schemas.dead_letters import DeadLetter, Reason, encode_dead_letter

    arch = Archiver(settings)
    inter, dlq = topic_name(settings, INTERACTIONS), topic_name(settings, INTERACTIONS_DLQ)
    bad = KafkaRecord(inter, 0, 0, 1_700_000_000_000, b"u1", b"{nope")
    letter = DeadLetter(
        reason=Reason.MALFORMED_JSON,
        error="malformed JSON",
        payload=b"{nope",
        key=b"u1",
        topic=inter,
        partition=0,
        offset=0,
        source_timestamp_ms=1_700_000_000_000,
        dead_lettered_at=NOW,
    )
    res = arch.write_batch(
        [bad, KafkaRecord(dlq, 0, 0, 1_700_000_000_500, b"u1", encode_dead_letter(letter))]
    )
    assert res["dead_letters"].rows == 1
    table = Lake(settings).open(DEAD_LETTERS).to_pyarrow_table()  # type: ignore[union-attr]
    assert table.column("letter_id").to_pylist() == [f"{inter}/0/0"]
    assert table.column("user_id").to_pylist() == ["u1"]


def test_scheduled_maintenance_runs_between_batches(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import batch.lake.maintenance as maintenance

    calls: list[bool] = []
    monkeypatch.setattr(maintenance, "maintain", lambda s, recent_only: calls.append(recent_only))
    s = settings.model_copy(
        update={"lake": settings.lake.model_copy(update={"maintenance_interval_minutes": 1})}
    )
    arch = Archiver(s)
    arch._maybe_maintain()
    assert calls == []  # not due yet
    arch._last_maintenance -= 61
    arch._maybe_maintain()
    assert calls == [True]  # recent partitions only
    off = Archiver(
        settings.model_copy(
            update={"lake": settings.lake.model_copy(update={"maintenance_interval_minutes": 0})}
        )
    )
    off._last_maintenance -= 10**6
    off._maybe_maintain()
    assert calls == [True]
