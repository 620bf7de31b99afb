"""The interface every managed service implements, and the generic lifecycle around it.

A service module (kafka, postgres, redis, minio, spark) subclasses :class:`Service` and says how
to install, start, probe and bootstrap itself. ``up``/``down``/``status`` in :mod:`infra.services`
drive them in order. A service whose settings group has ``managed=false`` is external: we only
probe it, never start or stop it.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from pathlib import Path

from infra.errors import InfraError
from infra.process import PidFile, ServiceStatus, rss_mb, stop_pid
from lambdarec.settings import Settings


class Service(ABC):
    """One real service. Subclasses set ``name`` and implement the abstract methods."""

    name: str = ""
    #: seconds ``start`` may take before it is considered failed
    start_timeout: float = 60.0

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pidfile = PidFile(settings.run_dir, self.name)

    # ---- paths -------------------------------------------------------------------------------
    @property
    def home(self) -> Path:
        """Where this service keeps its binaries and data: ``var/<name>``."""
        return self.settings.var_dir / self.name

    @property
    def log_file(self) -> Path:
        return self.settings.log_dir / f"{self.name}.log"

    # ---- what subclasses say -----------------------------------------------------------------
    @property
    @abstractmethod
    def managed(self) -> bool:
        """True when we run it locally; False for an external service (only probed)."""

    @property
    @abstractmethod
    def address(self) -> str:
        """host:port (or URL) shown in status and error messages."""

    @abstractmethod
    def is_installed(self) -> bool: ...

    @abstractmethod
    def install(self) -> None:
        """Download/build once; idempotent and resumable (write to temp, then mark done)."""

    @abstractmethod
    def launch(self) -> int:
        """Start the process (after the port check) and return its pid. Do not wait here."""

    @abstractmethod
    def ping(self) -> bool:
        """Cheap health probe: True when the service answers real requests."""

    def version(self) -> str:
        """Version string of the running service ('' if unknown)."""
        return ""

    def bootstrap(self) -> None:  # noqa: B027 - optional hook, most services need no setup
        """Idempotent setup after it is up: topics, buckets, databases."""

    def shutdown(self, pid: int) -> None:
        """Stop our process; default SIGTERM then SIGKILL after 30 s."""
        stop_pid(pid)

    # ---- generic lifecycle -------------------------------------------------------------------
    def up(self) -> float:
        """Install if needed, start unless already running, bootstrap. Returns seconds taken."""
        t0 = time.monotonic()
        if not self.managed:
            if not self.ping():
                raise InfraError(
                    f"{self.name} at {self.address} is external (managed=false) and does not answer: "
                    f"check the {self.name} URL setting or start it"
                )
            self.bootstrap()
            return time.monotonic() - t0
        if not self.is_installed():
            self.install()
        pid = self.pidfile.read()
        if pid is None or not self.ping():
            if pid is not None:  # alive but not answering: restart it cleanly
                self.shutdown(pid)
                self.pidfile.clear()
            pid = self.launch()
            self.pidfile.write(pid)
            self.wait_ready(pid)
        self.bootstrap()
        return time.monotonic() - t0

    def wait_ready(self, pid: int) -> None:
        from infra.process import pid_alive, wait_until

        wait_until(
            self.ping,
            self.start_timeout,
            f"{self.name} on {self.address}",
            self.log_file,
            alive=lambda: pid_alive(pid),
        )

    def down(self) -> None:
        if not self.managed:
            return
        pid = self.pidfile.read()
        if pid is not None:
            self.shutdown(pid)
        self.pidfile.clear()

    def status(self) -> ServiceStatus:
        pid = self.pidfile.read() if self.managed else None
        healthy = self.ping()
        return ServiceStatus(
            name=self.name,
            healthy=healthy,
            version=self.version() if healthy else "",
            address=self.address,
            pid=pid,
            rss_mb=rss_mb(pid),
            managed=self.managed,
            detail="" if healthy else ("not running" if pid is None else "running but not answering"),
        )
