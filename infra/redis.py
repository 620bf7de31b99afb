"""A real redis-server (Debian's package) on ``settings.redis.port``, as an LRU cache.

Install: ``apt-get install -y redis-server`` (``apt-get update`` first only when the package list
does not know it); nothing to do when a ``redis-server`` is already on PATH. Start: in the
foreground (we detach it ourselves), bound to 127.0.0.1, ``--maxmemory settings.redis.maxmemory
--maxmemory-policy allkeys-lru``, working dir ``var/redis``, persistence off: the cache only holds
what the serving/speed layers can recompute, so a restart starts clean instead of serving entries
of an older model, and no fork for snapshots doubles memory under load. With
``redis.managed=false`` only ``ping`` runs, against ``settings.redis.url``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from infra.apt import apt_install
from infra.process import ensure_port_free, require_tool, spawn
from infra.service import Service

if TYPE_CHECKING:
    import redis

LOG_ROTATE_BYTES = 50 * 2**20
INSTALL_HINT = (
    "install Redis (Debian/Ubuntu as root: apt-get install -y redis-server) so that redis-server is "
    "on PATH, or set LAMBDAREC_REDIS__MANAGED=false and point LAMBDAREC_REDIS__URL at a server"
)


class RedisService(Service):
    name = "redis"
    start_timeout = 30.0

    @property
    def managed(self) -> bool:
        return self.settings.redis.managed

    @property
    def address(self) -> str:
        u = urlparse(self.settings.redis.url)
        if u.scheme == "unix":
            return u.path
        return f"{u.hostname}:{self.settings.redis.port}"  # no credentials in status output

    def is_installed(self) -> bool:
        return shutil.which("redis-server") is not None

    def install(self) -> None:
        """Debian's ``redis-server`` package (``infra/apt.py``)."""
        apt_install("redis-server", "redis-server", INSTALL_HINT)

    def command(self) -> list[str | Path]:
        r = self.settings.redis
        data = self.home
        cmd: list[str | Path] = [require_tool("redis-server", INSTALL_HINT)]
        password = urlparse(r.url).password
        if password:  # the URL carries a password: require it, without putting it on the command line
            auth = data / "auth.conf"
            auth.touch(mode=0o600)
            quoted = password.replace("\\", "\\\\").replace('"', '\\"')
            auth.write_text(f'requirepass "{quoted}"\n')
            cmd.append(auth)
        cmd += [
            "--port", str(r.port),
            "--bind", "127.0.0.1",
            "--daemonize", "no",
            "--supervised", "no",
            "--dir", data,
            "--logfile", "",
            "--maxmemory", r.maxmemory,
            "--maxmemory-policy", "allkeys-lru",
            "--save", "",
            "--appendonly", "no",
        ]  # fmt: skip
        return cmd

    def launch(self) -> int:
        ensure_port_free(self.settings.redis.port, "LAMBDAREC_REDIS__URL")
        self.home.mkdir(parents=True, exist_ok=True)
        cmd = self.command()
        if self.log_file.exists() and self.log_file.stat().st_size > LOG_ROTATE_BYTES:
            self.log_file.replace(self.log_file.with_name(self.log_file.name + ".1"))
        return spawn(cmd, self.log_file, cwd=self.home)

    def client(self) -> redis.Redis:
        import redis

        return redis.Redis.from_url(self.settings.redis.url, socket_connect_timeout=1, socket_timeout=2)

    def ping(self) -> bool:
        import redis

        try:
            with self.client() as c:
                return bool(c.ping())
        except (redis.RedisError, OSError):
            return False

    def version(self) -> str:
        import redis

        try:
            with self.client() as c:
                return str(c.info("server").get("redis_version", ""))
        except (redis.RedisError, OSError):
            return ""
