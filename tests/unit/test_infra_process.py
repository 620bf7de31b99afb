"""The process plumbing of infra (pid files, port checks, waits, markers, spawn/stop): fast, no services."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from infra.errors import InfraError
from infra.process import (
    PidFile,
    done_marker,
    ensure_port_free,
    pid_alive,
    port_open,
    require_tool,
    rss_mb,
    run_checked,
    spawn,
    stop_pid,
    wait_until,
)
from tests.ports import free_port


def dead_pid() -> int:
    """The pid of a child that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ---- PidFile ---------------------------------------------------------------------------------
def test_pidfile_round_trip_and_clear(tmp_path: Path) -> None:
    pf = PidFile(tmp_path / "run", "svc")
    assert pf.read() is None  # no file yet
    pf.write(os.getpid())
    assert pf.path == tmp_path / "run" / "svc.pid"
    assert pf.read() == os.getpid()
    pf.clear()
    assert not pf.path.exists()
    assert pf.read() is None
    pf.clear()  # clearing twice is fine


@pytest.mark.parametrize("content", ["", "not-a-pid", "  \n", "12x 3.0"])
def test_pidfile_garbage_reads_as_none(tmp_path: Path, content: str) -> None:
    pf = PidFile(tmp_path, "svc")
    pf.path.write_text(content)
    assert pf.read() is None


def test_pidfile_dead_process_reads_as_none(tmp_path: Path) -> None:
    pf = PidFile(tmp_path, "svc")
    pf.path.write_text(str(dead_pid()))
    assert pf.read() is None


def test_pidfile_zombie_reads_as_none(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 10
        while psutil.Process(proc.pid).status() != psutil.STATUS_ZOMBIE:  # exited, not yet reaped
            assert time.monotonic() < deadline, "child never exited"
            time.sleep(0.05)
        pf = PidFile(tmp_path, "svc")
        pf.write(proc.pid)
        assert pf.read() is None
    finally:
        proc.wait()


def test_pidfile_reused_pid_is_not_ours(tmp_path: Path) -> None:
    """A live process whose start time differs from the recorded one is someone else's."""
    pf = PidFile(tmp_path, "svc")
    me = psutil.Process()
    pf.path.write_text(f"{me.pid} {me.create_time() - 3600:.2f}")
    assert pf.read() is None
    pf.path.write_text(f"{me.pid} {me.create_time():.2f}")
    assert pf.read() == me.pid
    pf.path.write_text(str(me.pid))  # old format without start time: still accepted
    assert pf.read() == me.pid


# ---- ports and tools -------------------------------------------------------------------------
def test_ensure_port_free_passes_on_afree_port() -> None:
    port = free_port()
    assert not port_open("127.0.0.1", port)
    ensure_port_free(port, "LAMBDAREC_X__PORT")


def test_ensure_port_free_names_setting_port_and_owner(listener: int) -> None:
    assert port_open("127.0.0.1", listener)
    with pytest.raises(InfraError) as exc:
        ensure_port_free(listener, "LAMBDAREC_KAFKA__BOOTSTRAP_SERVERS")
    msg = str(exc.value)
    assert f"port {listener}" in msg
    assert "LAMBDAREC_KAFKA__BOOTSTRAP_SERVERS" in msg
    assert f"pid {os.getpid()}" in msg  # who_listens found this very process


def test_require_tool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert Path(require_tool("sh", "unused")).name == "sh"
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(InfraError, match=r"'sh' is not installed or not on PATH: apt-get install sh"):
        require_tool("sh", "apt-get install sh")


def test_run_checked_reports_output_of_a_failure() -> None:
    ok = run_checked([sys.executable, "-c", "print('fine')"], "printing")
    assert ok.stdout.strip() == "fine"
    with pytest.raises(InfraError) as exc:
        run_checked([sys.executable, "-c", "import sys; print('boom-detail'); sys.exit(3)"], "the step")
    assert "the step failed (exit 3)" in str(exc.value)
    assert "boom-detail" in str(exc.value)


# ---- wait_until ------------------------------------------------------------------------------
def test_wait_until_returns_once_check_passes() -> None:
    calls = []

    def check() -> bool:
        calls.append(1)
        return len(calls) >= 3

    wait_until(check, 10, "thing")
    assert len(calls) == 3


def test_wait_until_timeout_message_has_what_timeout_and_log_tail(tmp_path: Path) -> None:
    log = tmp_path / "svc.log"
    log.write_text("".join(f"line {i}\n" for i in range(40)))
    t0 = time.monotonic()
    with pytest.raises(InfraError) as exc:
        wait_until(lambda: False, 1.0, "svc on 127.0.0.1:1", log)
    assert time.monotonic() - t0 >= 1.0
    msg = str(exc.value)
    assert msg.startswith("svc on 127.0.0.1:1 did not become ready within 1s\n")
    assert f"last lines of {log}" in msg
    assert "line 39" in msg and "line 15" in msg  # the last 25 lines...
    assert "line 14\n" not in msg  # ...and no more


def test_wait_until_stops_early_when_the_process_died(tmp_path: Path) -> None:
    t0 = time.monotonic()
    with pytest.raises(InfraError, match="svc exited before becoming ready"):
        wait_until(lambda: False, 30, "svc", tmp_path / "missing.log", alive=lambda: False)
    assert time.monotonic() - t0 < 5


# ---- markers ---------------------------------------------------------------------------------
def test_done_marker_sits_next_to_its_target() -> None:
    assert done_marker(Path("/x/var/kafka/libs")) == Path("/x/var/kafka/libs.installed")
    assert done_marker(Path("/x/minio.tar.gz")) == Path("/x/minio.tar.gz.installed")
    assert done_marker(Path("a")) != Path("a")


# ---- spawn / stop / rss ----------------------------------------------------------------------
def test_spawn_detaches_logs_and_stop_pid_terminates(tmp_path: Path) -> None:
    log = tmp_path / "log" / "child.log"
    pid = spawn(
        [sys.executable, "-c", "import time; print('hello from child', flush=True); time.sleep(60)"], log
    )
    try:
        assert os.getpgid(pid) == pid  # own session/group, so stop_pid can take its children too
        wait_until(lambda: "hello from child" in log.read_text(), 10, "child output")
        assert pid_alive(pid)
        mb = rss_mb(pid)
        assert mb is not None and mb > 1
        t0 = time.monotonic()
        stop_pid(pid, timeout=10)
        assert time.monotonic() - t0 < 10  # went on SIGTERM, not the SIGKILL fallback
        assert not pid_alive(pid)
    finally:
        if pid_alive(pid):
            os.kill(pid, 9)


def test_stop_pid_kills_a_process_that_ignores_sigterm(tmp_path: Path) -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)"
    )
    log = tmp_path / "stubborn.log"
    pid = spawn([sys.executable, "-c", code], log)
    try:
        wait_until(lambda: "ready" in log.read_text(), 10, "stubborn child")
        stop_pid(pid, timeout=0.5)
        assert not pid_alive(pid)
    finally:
        if pid_alive(pid):
            os.kill(pid, 9)


def test_stop_pid_and_rss_of_gone_processes_are_harmless() -> None:
    pid = dead_pid()
    stop_pid(pid, timeout=0.1)  # no exception
    assert not pid_alive(pid)
    assert rss_mb(None) is None
    assert rss_mb(pid) is None
