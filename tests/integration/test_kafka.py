"""The real single-node Kafka that infra starts: topics, produce (acks=all), consume in a group."""

from __future__ import annotations

import contextlib
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic

from infra.errors import InfraError
from infra.kafka import KafkaService
from lambdarec.settings import KafkaSettings, Settings
from schemas.topics import topic_configs
from tests.ports import free_port

pytestmark = pytest.mark.integration


def admin_for(settings: Settings) -> AdminClient:
    return AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})


def delete_topics(admin: AdminClient, names: list[str]) -> None:
    for fut in admin.delete_topics(names, request_timeout=30).values():
        with contextlib.suppress(Exception):  # best-effort cleanup
            fut.result()


@pytest.fixture
def fresh_topic(kafka: Settings) -> Iterator[str]:
    """A new 4-partition topic, deleted afterwards."""
    name = f"lambdarec-test.{uuid.uuid4().hex[:12]}"
    admin = admin_for(kafka)
    admin.create_topics([NewTopic(name, num_partitions=4, replication_factor=1)])[name].result(timeout=30)
    yield name
    delete_topics(admin, [name])


def test_service_is_healthy_with_version_and_pid(kafka: Settings) -> None:
    svc = KafkaService(kafka)
    assert svc.ping()
    assert svc.version() == kafka.kafka.version
    st = svc.status()
    assert st.healthy and st.managed == kafka.kafka.managed
    if st.managed:
        assert st.pid is not None
        assert st.rss_mb is not None and st.rss_mb > 50  # a JVM, not a stub


def test_project_topics_exist_with_configured_partitions(kafka: Settings) -> None:
    admin = admin_for(kafka)
    topics = admin.list_topics(timeout=10).topics
    wanted = topic_configs(kafka)
    assert len(wanted) >= 4
    for name, partitions, _ in wanted:
        assert name in topics, f"{name} missing"
        assert len(topics[name].partitions) == partitions, name
    resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name, _, _ in wanted]
    live = {res.name: fut.result(timeout=10) for res, fut in admin.describe_configs(resources).items()}
    for name, _, cfg in wanted:
        assert cfg, name
        assert {key: live[name][key].value for key in cfg} == cfg, name


def test_auto_topic_creation_is_off(kafka: Settings) -> None:
    name = f"lambdarec-test.never-created-{uuid.uuid4().hex[:8]}"
    producer = Producer({"bootstrap.servers": kafka.kafka.bootstrap_servers, "message.timeout.ms": 3000})
    errors: list[KafkaError] = []
    producer.produce(name, b"x", on_delivery=lambda err, _msg: errors.append(err))
    producer.flush(10)
    assert errors and errors[0] is not None  # UNKNOWN_TOPIC_OR_PART, not silently created
    assert name not in admin_for(kafka).list_topics(timeout=10).topics


@pytest.mark.parametrize("group_protocol", ["classic", "consumer"])
def test_produce_and_consume_exactly_once_across_a_group(
    kafka: Settings, fresh_topic: str, group_protocol: str
) -> None:
    """Two consumers of one group split the partitions; each message is read by exactly one of them."""
    n = 400
    servers = kafka.kafka.bootstrap_servers
    group = f"lambdarec-test-{uuid.uuid4().hex[:8]}"
    conf = {
        "bootstrap.servers": servers,
        "group.id": group,
        "group.protocol": group_protocol,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": True,
    }
    if group_protocol == "classic":
        conf["session.timeout.ms"] = 10000
    consumers = [Consumer(conf), Consumer(conf)]
    try:
        for c in consumers:
            c.subscribe([fresh_topic])
        # both members joined and own a disjoint, non-empty share of the 4 partitions
        deadline = time.monotonic() + 60
        while True:
            for c in consumers:
                msg = c.poll(0.2)
                assert msg is None, "nothing was produced yet"
            owned = [{tp.partition for tp in c.assignment()} for c in consumers]
            if all(owned) and owned[0] | owned[1] == {0, 1, 2, 3} and not owned[0] & owned[1]:
                break
            assert time.monotonic() < deadline, f"group never balanced: {owned}"

        producer = Producer({"bootstrap.servers": servers, "acks": "all", "enable.idempotence": True})
        failures: list[KafkaError] = []

        def on_delivery(err: KafkaError | None, _msg: object) -> None:
            if err is not None:
                failures.append(err)

        sent = {f"event-{i}".encode() for i in range(n)}
        for i in range(n):
            producer.produce(
                fresh_topic, key=f"user-{i % 37}", value=f"event-{i}".encode(), on_delivery=on_delivery
            )
        assert producer.flush(30) == 0, "messages still in flight"
        assert failures == []

        got: list[list[bytes]] = [[], []]
        seen_partitions: list[set[int]] = [set(), set()]
        deadline = time.monotonic() + 60
        while sum(map(len, got)) < n and time.monotonic() < deadline:
            for i, c in enumerate(consumers):
                msg = c.poll(0.2)
                if msg is None:
                    continue
                assert msg.error() is None, msg.error()
                got[i].append(msg.value())
                seen_partitions[i].add(msg.partition())
        # drain a little more: a duplicate delivery would show up here
        for _ in range(5):
            for i, c in enumerate(consumers):
                msg = c.poll(0.2)
                if msg is not None and msg.error() is None:
                    got[i].append(msg.value())
        all_got = got[0] + got[1]
        assert len(all_got) == n, f"consumed {len(all_got)} of {n}"
        assert set(all_got) == sent
        assert len(set(all_got)) == n  # no message twice
        assert got[0] and got[1], "both members should have consumed"
        assert not seen_partitions[0] & seen_partitions[1]
    finally:
        for c in consumers:
            c.close()


def test_bootstrap_is_idempotent_and_adds_partitions(kafka: Settings) -> None:
    prefix = f"lambdarec-test-{uuid.uuid4().hex[:8]}."
    small = kafka.model_copy(
        update={"kafka": kafka.kafka.model_copy(update={"topic_prefix": prefix, "partitions": 2})}
    )
    bigger = kafka.model_copy(
        update={"kafka": kafka.kafka.model_copy(update={"topic_prefix": prefix, "partitions": 3})}
    )
    admin = admin_for(kafka)
    names = [name for name, _, _ in topic_configs(small)]
    try:
        KafkaService(small).bootstrap()
        KafkaService(small).bootstrap()  # second run: nothing to do, no error
        topics = admin.list_topics(timeout=10).topics
        assert {name: len(topics[name].partitions) for name in names} == {
            name: parts for name, parts, _ in topic_configs(small)
        }
        assert 2 in {len(topics[name].partitions) for name in names}
        KafkaService(bigger).bootstrap()
        topics = admin.list_topics(timeout=10).topics
        assert {name: len(topics[name].partitions) for name in names} == {
            name: parts for name, parts, _ in topic_configs(bigger)
        }
        assert 3 in {len(topics[name].partitions) for name in names}
        # a declared config that drifted on the cluster is set back; others stay as they are
        target = names[0]
        res = ConfigResource(
            ConfigResource.Type.TOPIC,
            target,
            incremental_configs=[
                ConfigEntry("retention.ms", "1234", incremental_operation=AlterConfigOpType.SET),
                ConfigEntry("segment.ms", "3600000", incremental_operation=AlterConfigOpType.SET),
            ],
        )
        admin.incremental_alter_configs([res])[res].result(timeout=10)
        KafkaService(bigger).bootstrap()
        probe = ConfigResource(ConfigResource.Type.TOPIC, target)
        live = admin.describe_configs([probe])[probe].result(timeout=10)
        assert live["retention.ms"].value == str(kafka.kafka.retention_ms)
        assert live["segment.ms"].value == "3600000"
    finally:
        delete_topics(admin, names)


# ---- bad input: no service needed ------------------------------------------------------------
def _throwaway(tmp_path: Path, port: int, controller_port: int) -> Settings:
    return Settings(
        var_dir=tmp_path / "var",
        kafka=KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}", controller_port=controller_port),
    )


@pytest.mark.parametrize("which", ["broker", "controller"])
def test_start_on_a_listener_names_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, which: str
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        free = free_port()
        port, cport = (taken, free) if which == "broker" else (free, taken)
        svc = KafkaService(_throwaway(tmp_path, port, cport))
        monkeypatch.setattr(svc, "is_installed", lambda: True)  # skip the jar copy: fail before any JVM
        with pytest.raises(InfraError) as exc:
            svc.up()
    msg = str(exc.value)
    setting = (
        "LAMBDAREC_KAFKA__BOOTSTRAP_SERVERS" if which == "broker" else "LAMBDAREC_KAFKA__CONTROLLER_PORT"
    )
    assert setting in msg
    assert f"port {taken}" in msg
    assert svc.pidfile.read() is None  # nothing was started
    assert not (tmp_path / "var" / "kafka" / "data").exists()


def test_missing_java_is_an_infra_error_with_a_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    svc = KafkaService(_throwaway(tmp_path, free_port(), free_port()))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(InfraError, match=r"'java' is not installed.*openjdk"):
        svc.install()
    assert not svc.is_installed()


def test_external_cluster_that_does_not_answer(tmp_path: Path) -> None:
    s = _throwaway(tmp_path, free_port(), free_port())
    s.kafka.managed = False
    svc = KafkaService(s)
    assert not svc.ping()
    with pytest.raises(InfraError, match="external"):
        svc.up()
    assert svc.pidfile.read() is None


def test_external_cluster_is_only_probed_and_bootstrapped(kafka: Settings, tmp_path: Path) -> None:
    """managed=false against the running broker: ping + topics, no process of ours, no files."""
    prefix = f"lambdarec-test-{uuid.uuid4().hex[:8]}."
    ext = Settings(
        var_dir=tmp_path / "var",
        kafka=kafka.kafka.model_copy(update={"managed": False, "topic_prefix": prefix}),
    )
    svc = KafkaService(ext)
    names = [name for name, _, _ in topic_configs(ext)]
    try:
        svc.up()
        assert svc.status().healthy and svc.status().pid is None and not svc.status().managed
        assert set(names) <= set(admin_for(kafka).list_topics(timeout=10).topics)
        svc.down()  # a no-op for an external cluster: the broker keeps running
        assert KafkaService(kafka).ping()
        assert not (tmp_path / "var" / "kafka").exists()
    finally:
        delete_topics(admin_for(kafka), names)
