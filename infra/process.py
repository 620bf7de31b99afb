"""Process plumbing shared by every managed service: pid files, detached start, graceful stop,
port checks, resumable downloads. Kept here so each service module only says *what* to run."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from infra.errors import InfraError


@dataclass
class ServiceStatus:
    """What ``lambdarec infra status`` prints for one service."""

    name: str
    healthy: bool
    detail: str = ""
    version: str = ""
    address: str = ""
    pid: int | None = None
    rss_mb: float | None = None
    managed: bool = True


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def who_listens(port: int) -> str:
    """A short description of the process listening on ``port`` (for error messages)."""
    try:
        for c in psutil.net_connections(kind="tcp"):
            if c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN and c.pid:
                p = psutil.Process(c.pid)
                return f"pid {c.pid} ({p.name()})"
    except (psutil.Error, PermissionError):
        pass
    return "another process"


def ensure_port_free(port: int, setting: str) -> None:
    """Fail fast, naming the setting, when a port we are about to bind is already taken."""
    if port_open("127.0.0.1", port):
        raise InfraError(
            f"port {port} ({setting}) is already taken by {who_listens(port)}: "
            f"stop that process or set {setting} to a free port"
        )


def require_tool(tool: str, hint: str) -> str:
    """Path of an executable on PATH, or an InfraError that says how to install it."""
    path = shutil.which(tool)
    if not path:
        raise InfraError(f"'{tool}' is not installed or not on PATH: {hint}")
    return path


class PidFile:
    """A pid file under ``var/run`` that knows whether its process is still alive.

    It stores the pid and the process start time, so a pid reused by an unrelated process (after a
    crash or reboot left the file behind) is not mistaken for ours, and never signalled.
    """

    def __init__(self, run_dir: Path, name: str) -> None:
        self.path = run_dir / f"{name}.pid"

    def read(self) -> int | None:
        try:
            fields = self.path.read_text().split()
            pid = int(fields[0])
            started = float(fields[1]) if len(fields) > 1 else None
        except (FileNotFoundError, ValueError, IndexError):
            return None
        try:
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            if started is not None and abs(proc.create_time() - started) > 1.0:
                return None  # same number, different process
        except psutil.Error:
            return None
        return pid

    def write(self, pid: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            started = f" {psutil.Process(pid).create_time():.2f}"
        except psutil.Error:
            started = ""
        self.path.write_text(f"{pid}{started}\n")

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def spawn(
    cmd: Sequence[str | os.PathLike[str]],
    log_file: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start ``cmd`` detached from this process (own session), stdout+stderr to ``log_file``."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            [str(c) for c in cmd],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )
    return proc.pid


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, or a pid that vanishes while we look, counts as dead)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def stop_pid(pid: int, timeout: float = 30.0) -> None:
    """SIGTERM the process group, wait, then SIGKILL what is left.

    Only a process that leads its own group (as :func:`spawn` makes it) gets its whole group
    signalled; otherwise just the process, so a stray pid never takes a foreign group down.
    """
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return

    def send(sig: signal.Signals) -> None:
        try:
            if pgid == pid:
                os.killpg(pgid, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            pass

    send(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.1)
    send(signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.05)


def wait_until(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    log_file: Path | None = None,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Poll ``check`` until true; raise with the log tail on timeout or when ``alive`` says it died."""
    deadline = time.monotonic() + timeout
    died = False
    while time.monotonic() < deadline:
        if check():
            return
        if alive is not None and not alive():
            died = True
            break
        time.sleep(0.2)
    tail = ""
    if log_file and log_file.exists():
        tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-25:])
        tail = f"\nlast lines of {log_file}:\n{tail}"
    if died:
        raise InfraError(f"{what} exited before becoming ready{tail}")
    raise InfraError(f"{what} did not become ready within {timeout:.0f}s{tail}")


def rss_mb(pid: int | None) -> float | None:
    """Resident memory of a process and its children, in MiB."""
    if pid is None:
        return None
    try:
        p = psutil.Process(pid)
        procs = [p, *p.children(recursive=True)]
        return sum(x.memory_info().rss for x in procs) / 2**20
    except psutil.Error:
        return None


def run_checked(
    cmd: Sequence[str | os.PathLike[str]], what: str, **kw: object
) -> subprocess.CompletedProcess[str]:
    """Run a setup command; on failure raise an InfraError with its output, so nothing fails silently."""
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    if res.returncode != 0:
        out = (res.stdout + res.stderr).strip().splitlines()[-30:]
        raise InfraError(
            f"{what} failed (exit {res.returncode}): {' '.join(map(str, cmd))}\n" + "\n".join(out)
        )
    return res


def done_marker(path: Path) -> Path:
    """Marker written last by an install step, so an interrupted install is redone, not trusted."""
    return path.with_name(path.name + ".installed")
