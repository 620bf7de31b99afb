"""The set of managed services and the ``up``/``down``/``status`` operations over all of them.

Installs (downloads, builds) run in parallel threads because they are network/CPU bound and
independent; starts run in dependency order so that a failure names the first broken service.
"""

from __future__ import annotations

import importlib
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rich.console import Console
from rich.table import Table

from infra.errors import InfraError
from infra.process import ServiceStatus
from infra.service import Service
from lambdarec.settings import Settings

#: start order; each value is "module:Class"
SERVICE_CLASSES: dict[str, str] = {
    "postgres": "infra.postgres:PostgresService",
    "redis": "infra.redis:RedisService",
    "minio": "infra.minio:MinioService",
    "kafka": "infra.kafka:KafkaService",
    "spark": "infra.spark:SparkService",
}


def get_services(settings: Settings, names: list[str] | None = None) -> list[Service]:
    """Instantiate the named services (all by default) in start order."""
    unknown = set(names or []) - set(SERVICE_CLASSES)
    if unknown:
        raise InfraError(f"unknown service(s) {sorted(unknown)}; choose from {list(SERVICE_CLASSES)}")
    out: list[Service] = []
    for name, ref in SERVICE_CLASSES.items():
        if names and name not in names:
            continue
        mod, cls = ref.split(":")
        out.append(getattr(importlib.import_module(mod), cls)(settings))
    return out


def up(
    settings: Settings, names: list[str] | None = None, console: Console | None = None
) -> dict[str, float]:
    """Install (in parallel) then start (in order) the services. Returns seconds per phase/service."""
    console = console or Console(stderr=True)
    services = get_services(settings, names)
    timings: dict[str, float] = {}
    to_install = [s for s in services if s.managed and not s.is_installed()]
    if to_install:
        t0 = time.monotonic()
        console.print(f"[bold]installing[/] {', '.join(s.name for s in to_install)} (once; resumable)")
        with ThreadPoolExecutor(max_workers=len(to_install)) as pool:
            futures = {s.name: pool.submit(s.install) for s in to_install}
            errors = []
            for name, fut in futures.items():
                try:
                    fut.result()
                    console.print(f"  [green]installed[/] {name}")
                except Exception as exc:
                    errors.append(f"{name}: {exc}")
            if errors:
                raise InfraError("install failed:\n" + "\n".join(errors))
        timings["install"] = time.monotonic() - t0
    for s in services:
        with console.status(f"starting {s.name} ({s.address})"):
            timings[s.name] = s.up()
        console.print(f"  [green]up[/] {s.name:<9} {s.address}  ({timings[s.name]:.1f}s)")
    return timings


def down(settings: Settings, names: list[str] | None = None) -> None:
    """Stop managed services in reverse start order (external ones are left alone); with no names,
    first the background processes (demo worker and API) that use them."""
    if not names:
        from infra.processes import stop_all

        stop_all(settings)
    for s in reversed(get_services(settings, names)):
        s.down()


def status(settings: Settings, names: list[str] | None = None) -> list[ServiceStatus]:
    return [s.status() for s in get_services(settings, names)]


def status_table(rows: list[ServiceStatus]) -> Table:
    t = Table(title="lambdarec services")
    for col in ("service", "health", "version", "address", "pid", "memory", "mode"):
        t.add_column(col, overflow="fold")
    for r in rows:
        t.add_row(
            r.name,
            "[green]healthy[/]" if r.healthy else f"[red]down[/] {r.detail}",
            r.version,
            r.address,
            str(r.pid or "-"),
            f"{r.rss_mb:.0f} MiB" if r.rss_mb is not None else "-",
            "local" if r.managed else "external",
        )
    return t


def log_path(settings: Settings, name: str) -> Path:
    return get_services(settings, [name])[0].log_file
