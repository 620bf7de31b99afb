"""`infra down` stops the background processes of every instance (no services involved)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from infra import processes
from infra.process import PidFile, pid_alive
from lambdarec.settings import Settings


def test_stop_all_stops_every_instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(var_dir=tmp_path)
    procs = []
    for stem in ("demo-stream-worker", "demo-api-other"):
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
        PidFile(settings.run_dir, stem).write(p.pid)
        procs.append(p)
    stopped = processes.stop_all(settings)
    assert sorted(stopped) == ["demo-api-other", "demo-stream-worker"]
    for p in procs:
        p.wait(timeout=10)
        assert not pid_alive(p.pid)
    assert not list(settings.run_dir.glob("*.pid"))
