"""Background lambdarec processes (stream worker, API) that outlive the command that started them.

Why not a service in ``infra/services.py``: these are the pipeline's own processes, not third-party
services to install; the demo starts them so the user can keep playing after it ends, and
``lambdarec demo --stop`` ends them. Pid files (``var/run/<name>.pid``, with the process start
time, so a reused pid is never signalled) make starting idempotent: a live one is left running.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from infra.process import PidFile, spawn, stop_pid
from lambdarec.settings import Settings

#: the processes the demo manages: name -> ``lambdarec`` arguments
COMMANDS: dict[str, list[str]] = {
    "demo-stream-worker": ["stream", "worker"],
    "demo-api": ["serve"],
}


@dataclass
class Background:
    """One background process: its pid (None: not running) and log file."""

    name: str
    pid: int | None
    log: Path
    started_now: bool = False


def _lambdarec() -> list[str]:
    """The ``lambdarec`` command of this interpreter (works from a venv without activating it).

    The console script next to the interpreter when there is one: ``python -c "...main()"`` runs
    the program as ``__main__`` of a ``-c`` string, and a command that imports pyspark then exited
    with status 0 at import time (pyspark's modules test ``__name__``)."""
    script = Path(sys.executable).with_name("lambdarec")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from lambdarec.cli import main; main()"]


def _file_name(name: str, instance: str) -> str:
    return f"{name}-{instance}" if instance else name


def start(settings: Settings, name: str, env: dict[str, str] | None = None, instance: str = "") -> Background:
    """Start ``name`` (a key of :data:`COMMANDS`) unless it already runs; never starts a second.
    ``instance`` tells apart copies started with different ``env`` (e.g. another topic prefix),
    so one configured for other topics is never mistaken for this one."""
    fname = _file_name(name, instance)
    pidfile = PidFile(settings.run_dir, fname)
    log = settings.log_dir / f"{fname}.log"
    pid = pidfile.read()
    if pid is not None:
        return Background(fname, pid, log)
    pid = spawn([*_lambdarec(), *COMMANDS[name]], log, env=env, cwd=Path.cwd())
    pidfile.write(pid)
    return Background(fname, pid, log, started_now=True)


def status(settings: Settings) -> list[Background]:
    """Every managed process, running or not."""
    return [
        Background(n, PidFile(settings.run_dir, n).read(), settings.log_dir / f"{n}.log") for n in COMMANDS
    ]


def stop(settings: Settings, names: list[str] | None = None, instance: str = "") -> list[str]:
    """Stop the named (default: all) processes that run; returns the names stopped."""
    stopped = []
    for n in names or list(COMMANDS):
        n = _file_name(n, instance)
        pidfile = PidFile(settings.run_dir, n)
        pid = pidfile.read()
        if pid is not None:
            stop_pid(pid)
            stopped.append(n)
        pidfile.clear()
    return stopped


def stop_all(settings: Settings) -> list[str]:
    """Stop every background process of every instance (what ``lambdarec infra down`` does first,
    so the worker and API never outlive the services they talk to)."""
    stopped = []
    for name in COMMANDS:
        for path in sorted(settings.run_dir.glob(f"{name}*.pid")):
            pidfile = PidFile(settings.run_dir, path.stem)
            pid = pidfile.read()
            if pid is not None:
                stop_pid(pid)
                stopped.append(path.stem)
            pidfile.clear()
    return stopped
