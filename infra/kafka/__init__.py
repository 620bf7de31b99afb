"""A single-node Apache Kafka (KRaft: broker + controller in one JVM) from the Maven Central jars.

Install: ``mvn dependency:copy-dependencies`` of ``infra/kafka/pom.xml`` (``-Dkafka.version`` from
``settings.kafka.version``) into ``var/kafka/libs``; ``~/.m2`` is the download cache, so a second
install (or a resumed one) copies from disk. Start: ``java -cp 'libs/*' kafka.Kafka server.properties``
with the config generated from settings on every start and the storage formatted once (the cluster
id is kept in ``var/kafka/cluster.id``). With ``kafka.managed=false`` only ``ping`` and the topic
bootstrap run, against ``kafka.bootstrap_servers``.
"""

from __future__ import annotations

import base64
import logging
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import psutil

from infra.errors import InfraError
from infra.process import (
    done_marker,
    ensure_port_free,
    port_open,
    require_tool,
    run_checked,
    spawn,
    stop_pid,
    wait_until,
)
from infra.service import Service

HERE = Path(__file__).resolve().parent
POM = HERE / "pom.xml"
LOG4J_CONFIG = HERE / "log4j2.properties"
NODE_ID = 1
#: a log bigger than this is moved to kafka.log.1 before the next start
LOG_ROTATE_BYTES = 50 * 2**20

JAVA_HINT = (
    "Kafka needs Java 17+ (Debian: apt-get install -y openjdk-17-jre-headless), "
    "or set LAMBDAREC_KAFKA__MANAGED=false and point LAMBDAREC_KAFKA__BOOTSTRAP_SERVERS at a cluster"
)
MVN_HINT = "the Kafka jars are fetched with Maven (Debian: apt-get install -y maven)"

# librdkafka logs every refused connection; a probe of a stopped broker should stay quiet.
_rdkafka_log = logging.getLogger("infra.kafka.librdkafka")
_rdkafka_log.addHandler(logging.NullHandler())
_rdkafka_log.propagate = False


def new_cluster_id() -> str:
    """A Kafka cluster id: a random UUID, base64url without padding, not starting with '-'."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


class KafkaService(Service):
    name = "kafka"
    start_timeout = 120.0

    # ---- what the base class asks ------------------------------------------------------------
    @property
    def managed(self) -> bool:
        return self.settings.kafka.managed

    @property
    def address(self) -> str:
        return self.settings.kafka.bootstrap_servers

    @property
    def libs(self) -> Path:
        return self.home / "libs"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def config_file(self) -> Path:
        return self.home / "server.properties"

    @property
    def cluster_id_file(self) -> Path:
        return self.home / "cluster.id"

    def installed_version(self) -> str | None:
        marker = done_marker(self.libs)
        if not marker.exists() or not self.libs.is_dir():
            return None
        return marker.read_text().strip() or None

    def is_installed(self) -> bool:
        return self.installed_version() == self.settings.kafka.version

    def install(self) -> None:
        """Copy the jars of settings.kafka.version into var/kafka/libs (temp dir, rename, marker last)."""
        require_tool("java", JAVA_HINT)
        mvn = require_tool("mvn", MVN_HINT)
        version = self.settings.kafka.version
        old = self.installed_version()
        pid = self.pidfile.read()
        if old and old != version and pid is not None:
            raise InfraError(
                f"LAMBDAREC_KAFKA__VERSION changed from {old} to {version} while Kafka {old} runs "
                f"(pid {pid}): run `lambdarec infra down kafka` first, then `lambdarec infra up kafka`"
            )
        self.home.mkdir(parents=True, exist_ok=True)
        tmp = self.home / "libs.tmp"
        shutil.rmtree(tmp, ignore_errors=True)  # a previous interrupted install: redo the copy
        cmd: list[str | Path] = [
            mvn,
            "-q",
            "-B",
            "-Dstyle.color=never",
            "-f",
            POM,
            "dependency:copy-dependencies",
            f"-Dkafka.version={version}",
            f"-DoutputDirectory={tmp}",
            "-DincludeScope=runtime",
        ]
        try:
            run_checked(cmd, f"fetching the Kafka {version} jars from Maven Central")
        except InfraError:
            # one retry: a dropped connection, or another mvn writing the same ~/.m2 file at once
            shutil.rmtree(tmp, ignore_errors=True)
            time.sleep(2)
            run_checked(cmd, f"fetching the Kafka {version} jars from Maven Central (retry)")
        if not (tmp / f"kafka_2.13-{version}.jar").exists():
            raise InfraError(
                f"Maven finished but {tmp} has no kafka_2.13-{version}.jar (LAMBDAREC_KAFKA__VERSION)"
            )
        marker = done_marker(self.libs)
        marker.unlink(missing_ok=True)
        if self.libs.exists():
            shutil.rmtree(self.libs)
        tmp.rename(self.libs)
        marker.write_text(version + "\n")

    # ---- start -------------------------------------------------------------------------------
    def server_properties(self) -> str:
        k = self.settings.kafka
        props = {
            "process.roles": "broker,controller",
            "node.id": str(NODE_ID),
            # a static one-voter quorum: the controller port can change without re-formatting
            "controller.quorum.voters": f"{NODE_ID}@127.0.0.1:{k.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{k.port},CONTROLLER://127.0.0.1:{k.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{k.port}",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": str(k.partitions),
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "offsets.topic.replication.factor": "1",
            # 50 by default: a single dev broker needs far fewer, and creates them faster
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "auto.create.topics.enable": "false",
            "group.initial.rebalance.delay.ms": "0",
            "log.retention.ms": str(k.retention_ms),
        }
        lines = ["# generated by infra/kafka from lambdarec settings on every start; edits are lost"]
        lines += [f"{key}={value}" for key, value in props.items()]
        return "\n".join(lines) + "\n"

    def java_cmd(self, main_class: str, *args: str | Path) -> list[str | Path]:
        java = require_tool("java", JAVA_HINT)
        return [
            java,
            f"-Xmx{self.settings.kafka.heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35",
            "-XX:+ExplicitGCInvokesConcurrent",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
            f"-Dkafka.logs.dir={self.settings.log_dir}",
            "-cp",
            f"{self.libs}/*",
            main_class,
            *args,
        ]

    def format_storage(self) -> None:
        """Format the log dir once, with the cluster id kept under var/kafka (reused if present)."""
        if (self.data_dir / "meta.properties").exists():
            return
        if self.cluster_id_file.exists():
            cluster_id = self.cluster_id_file.read_text().strip()
        else:
            cluster_id = new_cluster_id()
            self.cluster_id_file.write_text(cluster_id + "\n")
        run_checked(
            self.java_cmd(
                "kafka.tools.StorageTool",
                "format",
                "--cluster-id",
                cluster_id,
                "--config",
                self.config_file,
                "--ignore-formatted",
            ),
            f"formatting the Kafka storage in {self.data_dir}",
        )

    def launch(self) -> int:
        k = self.settings.kafka
        ensure_port_free(k.port, "LAMBDAREC_KAFKA__BOOTSTRAP_SERVERS")
        ensure_port_free(k.controller_port, "LAMBDAREC_KAFKA__CONTROLLER_PORT")
        if k.port == k.controller_port:
            raise InfraError(
                f"LAMBDAREC_KAFKA__CONTROLLER_PORT ({k.controller_port}) must differ from the broker port "
                "in LAMBDAREC_KAFKA__BOOTSTRAP_SERVERS"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(self.server_properties())
        self.format_storage()
        if self.log_file.exists() and self.log_file.stat().st_size > LOG_ROTATE_BYTES:
            self.log_file.replace(self.log_file.with_name(self.log_file.name + ".1"))
        return spawn(self.java_cmd("kafka.Kafka", self.config_file), self.log_file, cwd=self.home)

    def shutdown(self, pid: int) -> None:
        """SIGTERM starts Kafka's controlled shutdown (flush, close logs): give it time to finish."""
        stop_pid(pid, timeout=60.0)

    # ---- probes ------------------------------------------------------------------------------
    def admin(self) -> Any:
        from confluent_kafka.admin import AdminClient

        conf: dict[str, Any] = {
            "bootstrap.servers": self.settings.kafka.bootstrap_servers,
            "logger": _rdkafka_log,
            "socket.connection.setup.timeout.ms": 2000,
        }
        return AdminClient(conf)

    def ping(self) -> bool:
        """A real metadata request (broker list + topics), not just an open port."""
        servers = [hp.strip().rpartition(":") for hp in self.settings.kafka.bootstrap_servers.split(",")]
        if not any(port_open(host.strip("[]"), int(port)) for host, _, port in servers):
            return False
        from confluent_kafka import KafkaException

        try:
            md = self.admin().list_topics(timeout=3)
        except KafkaException:
            return False
        return bool(md.brokers)

    def version(self) -> str:
        """The Kafka version of the jars we run (managed), '' for an external cluster."""
        if not self.managed:
            return ""
        pid = self.pidfile.read()
        if pid is not None:  # the jars the running JVM was started with
            try:
                cp = psutil.Process(pid).cmdline()
                libs = Path(cp[cp.index("-cp") + 1].rstrip("*"))
                jars = sorted(libs.glob("kafka_2.13-*.jar"))
                if jars:
                    return jars[0].stem.removeprefix("kafka_2.13-")
            except (psutil.Error, ValueError, IndexError):
                pass
        return self.installed_version() or ""

    # ---- topics ------------------------------------------------------------------------------
    def bootstrap(self) -> None:
        """Create the project topics that are missing and grow any that has too few partitions."""
        from confluent_kafka import KafkaError, KafkaException
        from confluent_kafka.admin import NewPartitions, NewTopic

        from schemas.topics import topic_configs

        wanted = topic_configs(self.settings)
        admin = self.admin()
        try:
            existing = admin.list_topics(timeout=10).topics
        except KafkaException as exc:
            raise InfraError(f"kafka at {self.address}: cannot list topics: {exc}") from exc
        rf = self.settings.kafka.replication_factor
        create = [
            NewTopic(name, num_partitions=parts, replication_factor=rf, config=cfg)
            for name, parts, cfg in wanted
            if name not in existing
        ]
        grow = [
            NewPartitions(name, parts)
            for name, parts, _ in wanted
            if name in existing and len(existing[name].partitions) < parts
        ]
        errors = []
        if create:
            for name, fut in admin.create_topics(create, request_timeout=30).items():
                try:
                    fut.result()
                except KafkaException as exc:
                    if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:  # a concurrent bootstrap
                        errors.append(f"create {name}: {exc.args[0].str()}")
        if grow:
            for name, fut in admin.create_partitions(grow, request_timeout=30).items():
                try:
                    fut.result()
                except KafkaException as exc:
                    errors.append(f"add partitions to {name}: {exc.args[0].str()}")
        errors += self._align_topic_configs(admin, [(n, c) for n, _, c in wanted if n in existing])
        if errors:
            raise InfraError(
                f"kafka at {self.address}: topic bootstrap failed (check LAMBDAREC_KAFKA__PARTITIONS / "
                "LAMBDAREC_KAFKA__REPLICATION_FACTOR against the cluster):\n" + "\n".join(errors)
            )
        if create or grow:
            # metadata propagates asynchronously: return only once every partition has a leader
            def ready() -> bool:
                try:
                    topics = admin.list_topics(timeout=5).topics
                except KafkaException:
                    return False
                return all(
                    name in topics
                    and topics[name].error is None
                    and len(topics[name].partitions) >= parts
                    and all(p.leader >= 0 for p in topics[name].partitions.values())
                    for name, parts, _ in wanted
                )

            wait_until(ready, 30, f"the topics on kafka at {self.address}")

    @staticmethod
    def _align_topic_configs(admin: Any, topics: list[tuple[str, dict[str, str]]]) -> list[str]:
        """Set the configs schemas/topics.py declares on topics that exist with other values.

        Only the declared keys are touched (incremental SET), so settings made by hand stay.
        """
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

        if not topics:
            return []
        errors: list[str] = []
        resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name, _ in topics]
        changes = []
        wanted = dict(topics)
        for res, fut in admin.describe_configs(resources, request_timeout=30).items():
            name, cfg = res.name, wanted[res.name]
            try:
                live = fut.result()
            except KafkaException as exc:
                errors.append(f"describe configs of {name}: {exc.args[0].str()}")
                continue
            entries = [
                ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)
                for key, value in cfg.items()
                if key not in live or live[key].value != value
            ]
            if entries:
                changes.append(ConfigResource(ConfigResource.Type.TOPIC, name, incremental_configs=entries))
        if changes:
            for res, fut in admin.incremental_alter_configs(changes, request_timeout=30).items():
                try:
                    fut.result()
                except KafkaException as exc:
                    errors.append(f"alter configs of {res.name}: {exc.args[0].str()}")
        return errors
