"""Headless Chromium (Debian's ``chromium`` package) for the dashboard's browser tests.

Installed like Redis, by ``infra/apt.py``: nothing to do when ``chromium`` is on PATH, else
``apt-get install chromium`` as root.

Why the real browser and not an HTML parser: plotly draws its charts in JavaScript; only a browser
that runs the page shows whether the charts rendered (``.main-svg`` elements) and what a person
would see (a screenshot).
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from infra.apt import apt_install
from infra.errors import InfraError

PACKAGE = "chromium"
INSTALL_HINT = (
    "install Chromium (Debian/Ubuntu as root: apt-get install -y chromium) so that chromium is on PATH"
)
#: flags for a root, GPU-less CI machine; virtual time lets the page's scripts finish before dumping
HEADLESS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--hide-scrollbars",
    "--virtual-time-budget=5000",
]


def ensure_chromium() -> str:
    """Path of ``chromium``, installing Debian's package first when it is missing (needs root)."""
    return apt_install(PACKAGE, PACKAGE, INSTALL_HINT)


def _run(args: list[str], what: str, timeout: float) -> str:
    """One headless run with a throwaway profile (parallel runs must not share a profile lock)."""
    with tempfile.TemporaryDirectory(prefix="lambdarec-chromium-") as profile:
        cmd = [ensure_chromium(), *HEADLESS, f"--user-data-dir={profile}", *args]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise InfraError(f"chromium {what} timed out after {timeout:.0f} s: {' '.join(cmd)}") from exc
    if res.returncode != 0:
        raise InfraError(f"chromium {what} failed (exit {res.returncode}): {res.stderr.strip()[-2000:]}")
    return res.stdout


def dump_dom(url: str, timeout: float = 60) -> str:
    """The DOM of ``url`` after its scripts ran (``--dump-dom``)."""
    return _run(["--dump-dom", url], f"--dump-dom {url}", timeout)


def screenshot(url: str, path: Path, size: tuple[int, int] = (1400, 1000), timeout: float = 60) -> Path:
    """A PNG of ``url`` at ``size`` (width, height) written to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _run(
        [f"--screenshot={path.resolve()}", f"--window-size={size[0]},{size[1]}", url],
        f"screenshot {url}",
        timeout,
    )
    if not path.exists() or path.stat().st_size == 0:
        raise InfraError(f"chromium wrote no screenshot to {path}")
    return path
