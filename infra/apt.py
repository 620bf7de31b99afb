"""Installing a Debian package the project needs (redis-server, chromium) with apt-get.

One way for every apt-installed tool: nothing to do when the tool is on PATH; else, as root,
``apt-get install -y --no-install-recommends PACKAGE``, and ``apt-get update`` first only when
apt does not know the package yet (a fresh machine with no or a stale package list). apt waits
for another apt/dpkg (a parallel install of another service) instead of failing on the lock.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from infra.errors import InfraError
from infra.process import require_tool, run_checked

APT_ENV = {"DEBIAN_FRONTEND": "noninteractive"}
#: wait for another apt/dpkg (a parallel install) instead of failing on the lock
APT_LOCK = ["-o", "DPkg::Lock::Timeout=300"]


def apt_install(package: str, tool: str, hint: str) -> str:
    """Path of ``tool``, installing Debian's ``package`` first when it is missing (needs root);
    ``hint`` tells the user what to do when this machine cannot install it."""
    if shutil.which(tool) is None:
        apt = shutil.which("apt-get")
        if apt is None:
            raise InfraError(f"'{tool}' is not installed and there is no apt-get: {hint}")
        if os.geteuid() != 0:
            raise InfraError(f"'{tool}' is not installed and apt-get needs root: {hint}")
        env = {**os.environ, **APT_ENV}
        cmd = [apt, *APT_LOCK, "install", "-y", "--no-install-recommends", package]
        if subprocess.run(cmd, capture_output=True, text=True, env=env).returncode != 0:
            run_checked([apt, *APT_LOCK, "update"], f"apt-get update (for {package})", env=env)
            run_checked(cmd, f"apt-get install {package}", env=env)
    return require_tool(tool, hint)
