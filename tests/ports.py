"""Loopback ports for tests: one that nothing listens on, for a service a test starts itself."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port on 127.0.0.1 that is free right now (the kernel picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
