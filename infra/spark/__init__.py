"""Spark: no server of our own, just the extra jars and one SparkSession factory.

pyspark (from PyPI) already ships Spark and Hadoop 3.5.0; what it lacks is Delta Lake, the s3a
connector (hadoop-aws + AWS SDK v2 bundle) and the PostgreSQL JDBC driver. ``install`` fetches
exactly those from Maven Central with ``mvn dependency:copy-dependencies`` on ``pom.xml`` beside
this file, into ``settings.spark.jars_dir`` (default ``var/spark-jars``), once. Ivy at run time
(``spark.jars.packages``) is never used: sessions start offline and fast.

* ``master = local[...]`` (default): managed; healthy when the jars are in place and Java works.
* any other master (``spark://``, ``yarn``, ``k8s://``): external; the driver still needs the jars
  here, and **every executor needs the same jars**. Either put them on each node (same files,
  ``spark.executor.extraClassPath`` in the cluster's spark-defaults.conf), or let ``spark.jars``
  ship them from the driver at application start (about 700 MB per executor, almost all of it
  the AWS SDK bundle). Only ``spark://`` masters are probed (TCP); others are trusted.

The first ``up`` also records an AppCDS archive (``var/spark/driver.jsa``) of the classes a small
Delta job loads; sessions map it, which cuts the driver JVM's start CPU by ~40%. It is an
optimisation only: if it is missing or stale the JVM ignores it.

Sessions come from :func:`get_spark` (``infra/spark/session.py``).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

from infra.errors import InfraError
from infra.process import ServiceStatus, done_marker, port_open, require_tool, run_checked
from infra.service import Service
from infra.spark.session import get_spark, spark_conf, stop_spark, to_spark_path
from lambdarec.settings import Settings

__all__ = ["POM", "SparkService", "get_spark", "spark_conf", "stop_spark", "to_spark_path"]

POM = Path(__file__).with_name("pom.xml")
#: Spark 4.x runs on Java 17 or 21
MIN_JAVA = 17


def _artifact(jar_name: str) -> str:
    """``parquet-hadoop-1.17.0.jar`` -> ``parquet-hadoop`` (the name without the version)."""
    return re.sub(r"-\d[^/]*\.jar$", "", jar_name)


def pyspark_jars_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("pyspark")
    if spec is None or not spec.submodule_search_locations:
        raise InfraError("pyspark is not installed in this environment: pip install -e .")
    return Path(next(iter(spec.submodule_search_locations))) / "jars"


def java_executable() -> str:
    """The java pyspark will launch: ``$JAVA_HOME/bin/java`` if set, else ``java`` on PATH."""
    home = os.environ.get("JAVA_HOME")
    if home:
        java = Path(home) / "bin" / "java"
        if not java.exists():
            raise InfraError(f"JAVA_HOME={home} has no bin/java: fix JAVA_HOME or unset it")
        return str(java)
    return require_tool("java", f"Spark needs Java {MIN_JAVA}+: `apt-get install openjdk-17-jre-headless`")


def java_major() -> int:
    out = subprocess.run([java_executable(), "-version"], capture_output=True, text=True, timeout=30)
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not m:
        raise InfraError(f"cannot tell the Java version from: {out.stderr.strip()[:200]}")
    major = int(m.group(1))
    return int(m.group(2) or 0) if major == 1 else major


class SparkService(Service):
    name = "spark"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._problem = ""

    @property
    def managed(self) -> bool:
        return self.settings.spark.master.startswith("local")

    @property
    def address(self) -> str:
        return self.settings.spark.master

    @property
    def jars_dir(self) -> Path:
        assert self.settings.spark.jars_dir is not None  # filled in by Settings
        return self.settings.spark.jars_dir

    # ---- install: the jars --------------------------------------------------------------------
    @staticmethod
    def pom_digest() -> str:
        return hashlib.sha256(POM.read_bytes()).hexdigest()[:16]

    def is_installed(self) -> bool:
        marker = done_marker(self.jars_dir)
        return self.jars_dir.is_dir() and marker.exists() and marker.read_text().strip() == self.pom_digest()

    def jars(self) -> list[Path]:
        return sorted(self.jars_dir.glob("*.jar"))

    def install(self) -> None:
        """``mvn dependency:copy-dependencies`` into a temp dir, drop what pyspark ships, rename.

        Resumable: Maven keeps finished downloads in ~/.m2, the temp dir is wiped on retry, and
        the done marker (the pom's digest, so a pom change re-fetches) is written last.
        """
        mvn = require_tool(
            "mvn", "the Spark jars are fetched from Maven Central: `apt-get install maven` (needs Java)"
        )
        java_executable()
        tmp = self.jars_dir.with_name(self.jars_dir.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        run_checked(
            [
                mvn,
                "-q",
                "-B",
                "-f",
                POM,
                "dependency:copy-dependencies",
                f"-DoutputDirectory={tmp}",
            ],
            "fetching Spark jars (Delta, hadoop-aws, AWS SDK, PostgreSQL JDBC) from Maven Central",
        )
        shipped = {_artifact(j.name) for j in pyspark_jars_dir().glob("*.jar")}
        for jar in tmp.glob("*.jar"):
            if _artifact(jar.name) in shipped:  # safety net behind the pom's exclusions
                jar.unlink()
        if not any(tmp.glob("delta-spark_*.jar")) or not any(tmp.glob("hadoop-aws-*.jar")):
            raise InfraError(f"Maven finished but delta-spark/hadoop-aws jars are missing in {tmp}")
        marker = done_marker(self.jars_dir)
        marker.unlink(missing_ok=True)
        shutil.rmtree(self.jars_dir, ignore_errors=True)
        os.replace(tmp, self.jars_dir)
        marker.write_text(self.pom_digest() + "\n")

    # ---- class-data sharing: faster session start ---------------------------------------------
    @property
    def cds_archive(self) -> Path:
        """AppCDS archive of the driver JVM's classes (see :func:`session.cds_java_options`)."""
        return self.home / "driver.jsa"

    def _cds_fingerprint(self) -> str:
        """What the archive depends on: the JDK build, the pyspark jars and our jars (a local
        driver has them on its class path, which the JVM checks against the archive's)."""
        java = Path(shutil.which(java_executable()) or java_executable()).resolve()
        modules = java.parent.parent / "lib" / "modules"
        jdk = f"{java}:{modules.stat().st_mtime_ns if modules.exists() else 0}"
        jars = hashlib.sha256(":".join(str(j) for j in self.jars()).encode()).hexdigest()[:12]
        return f"pyspark={importlib.metadata.version('pyspark')} jdk={jdk} jars={jars}"

    def cds_ready(self) -> bool:
        marker = done_marker(self.cds_archive)
        try:
            return (
                self.cds_archive.exists()
                and marker.exists()
                and marker.read_text().strip() == self._cds_fingerprint()
            )
        except (InfraError, OSError):
            return False

    def train_cds(self) -> None:
        """Record the classes a small Delta job loads into an AppCDS archive (once, ~1 min).

        Best effort: on failure the reason goes to the spark log and sessions start without it.
        """
        import json
        import sys

        from infra.spark.session import spark_conf

        tmp = self.cds_archive.with_name(self.cds_archive.name + ".partial")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.unlink(missing_ok=True)
        conf = {k: v for k, v in spark_conf(self.settings).items() if k != "spark.driver.extraJavaOptions"}
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "a") as log:
            log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} training AppCDS archive {tmp}\n")
            log.flush()
            try:
                res = subprocess.run(
                    [sys.executable, "-m", "infra.spark.session", str(tmp), json.dumps(conf)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=900,
                    cwd=Path(__file__).resolve().parents[2],
                )
                ok = res.returncode == 0 and tmp.exists()
            except subprocess.TimeoutExpired:
                ok = False
            if not ok:
                log.write("AppCDS training failed: Spark sessions start without it\n")
                tmp.unlink(missing_ok=True)
                return
        done_marker(self.cds_archive).unlink(missing_ok=True)
        os.replace(tmp, self.cds_archive)
        done_marker(self.cds_archive).write_text(self._cds_fingerprint() + "\n")

    # ---- lifecycle: nothing long-running ------------------------------------------------------
    def up(self) -> float:
        """Fetch the jars if needed, check Java (and, for spark://, that the master answers), and
        build the class-data-sharing archive once."""
        t0 = time.monotonic()
        if not self.is_installed():
            self.install()
        if not self.ping():
            raise InfraError(f"spark ({self.address}) is not usable: {self._problem}")
        if not self.cds_ready():
            self.train_cds()
        return time.monotonic() - t0

    def launch(self) -> int:
        raise InfraError("spark has no long-running process: sessions start inside the job (get_spark)")

    def down(self) -> None:
        """Nothing to stop: sessions live and die with the Python process that made them."""

    def ping(self) -> bool:
        self._problem = ""
        if not self.is_installed():
            self._problem = f"jars missing in {self.jars_dir}: run `lambdarec infra up spark`"
            return False
        try:
            major = java_major()
        except (InfraError, OSError, subprocess.TimeoutExpired) as exc:
            self._problem = str(exc)
            return False
        if major < MIN_JAVA:
            self._problem = f"Java {major} found, Spark 4 needs {MIN_JAVA}+ (set JAVA_HOME)"
            return False
        master = urlparse(self.settings.spark.master)
        if master.scheme == "spark" and master.hostname:
            port = master.port or 7077
            if not port_open(master.hostname, port, timeout=2.0):
                self._problem = f"master {master.hostname}:{port} (LAMBDAREC_SPARK__MASTER) does not answer"
                return False
        return True

    def version(self) -> str:
        spark = importlib.metadata.version("pyspark")
        delta = next((j.name for j in self.jars() if j.name.startswith("delta-spark_")), "")
        delta_version = delta.removesuffix(".jar").rsplit("-", 1)[-1] if delta else "?"
        return f"Spark {spark} / Delta {delta_version}"

    def status(self) -> ServiceStatus:
        st = super().status()
        if not st.healthy:
            st.detail = self._problem
        else:
            size = sum(j.stat().st_size for j in self.jars()) / 2**20
            st.detail = f"{len(self.jars())} jars, {size:.0f} MiB"
        return st
