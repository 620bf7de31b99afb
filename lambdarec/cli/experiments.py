"""``lambdarec experiments create|list|show|start|stop|resume|conclude|analyze``: A/B tests.

Talks to Postgres directly through the same functions as the API (``serving/experiments/``), so
the CLI works without a running API; running API processes pick up a start or stop within their
refresh interval (5 s).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from lambdarec.settings import get_settings

app = typer.Typer(no_args_is_help=True, help="A/B experiments: variants, lifecycle, analysis.")
console = Console()
err = Console(stderr=True)
T = TypeVar("T")

Ref = Annotated[str, typer.Argument(help="experiment id or name")]


def _run(work: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``work(conn)`` on one autocommit connection; refused operations exit 1 with the reason."""
    import psycopg

    from serving.experiments.store import ExperimentError

    async def main() -> T:
        async with await psycopg.AsyncConnection.connect(
            get_settings().postgres.url, autocommit=True
        ) as conn:
            return await work(conn)

    try:
        return asyncio.run(main())
    except ExperimentError as exc:
        err.print(f"[red]error[/] ({exc.status}): {exc.message}")
        raise typer.Exit(1) from None


def _show(exp: dict[str, Any]) -> None:
    r = exp.get("results") or {}
    console.print(
        f"[bold]{exp['experiment_id']}[/] {exp['name']}  status=[bold]{exp['status']}[/]  "
        f"target={exp['target_metric']}  confidence={exp['confidence_level']}  "
        f"min sample={exp['minimum_sample_size']}"
    )
    table = Table("variant", "traffic %", "config", "users", "lists", "ctr", "conversion")
    for v in exp["variants"]:
        m = r.get("variants", {}).get(v["name"], {})
        table.add_row(
            v["name"] + (" (control)" if v["is_control"] else ""),
            str(v["traffic_percent"]),
            json.dumps(v["config"]),
            str(m.get("users", "-")),
            str(m.get("lists", "-")),
            _pct(m.get("ctr")),
            _pct(m.get("conversion")),
        )
    console.print(table)
    if r:
        console.print(f"decision: [bold]{r.get('status')}[/]: {r.get('reason', '')}")


def _pct(x: Any) -> str:
    return "-" if x is None else f"{100 * x:.2f} %"


@app.command()
def create(
    spec_file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JSON or YAML spec")],
) -> None:
    """Create a draft experiment from a spec file (the body of POST /v1/experiments)."""
    from serving.experiments import store
    from serving.experiments.specs import ExperimentSpec

    try:
        raw = yaml.safe_load(spec_file.read_text())  # YAML is a superset of JSON
        spec = ExperimentSpec.model_validate(raw)
    except (yaml.YAMLError, ValidationError) as exc:
        err.print(f"[red]invalid experiment spec[/] {spec_file}: {exc}")
        raise typer.Exit(2) from None

    async def work(conn: Any) -> dict[str, Any]:
        return await store.get(conn, await store.create(conn, spec))

    exp = _run(work)
    _show(exp)


@app.command("list")
def list_(
    status: Annotated[str | None, typer.Option(help="draft, running, analyzing or concluded")] = None,
) -> None:
    """All experiments, newest first."""
    from serving.experiments import store

    exps = _run(lambda conn: store.list_all(conn, status))
    table = Table("id", "name", "status", "target", "variants", "winner", "p-value")
    for e in exps:
        variants = ", ".join(f"{v['name']} {v['traffic_percent']}%" for v in e["variants"])
        p = e["p_value"]
        table.add_row(
            str(e["experiment_id"]),
            e["name"],
            e["status"],
            e["target_metric"],
            variants,
            e["winner_variant"] or "-",
            "-" if p is None else f"{p:.3g}",
        )
    console.print(table)


@app.command()
def show(ref: Ref) -> None:
    """One experiment with its variants and stored results."""
    from serving.experiments import store

    async def work(conn: Any) -> dict[str, Any]:
        return await store.get(conn, await store.find_id(conn, ref))

    _show(_run(work))


def _transition(ref: str, action: str) -> None:
    from serving.experiments import analysis, store

    async def work(conn: Any) -> dict[str, Any]:
        exp_id = await store.find_id(conn, ref)
        if action == "conclude" and (await store.get(conn, exp_id))["status"] in ("running", "analyzing"):
            await analysis.analyze_experiment(conn, exp_id)
        return await store.transition(conn, exp_id, action)

    _show(_run(work))


@app.command()
def start(ref: Ref) -> None:
    """draft -> running (users are assigned from now on)."""
    _transition(ref, "start")


@app.command()
def stop(ref: Ref) -> None:
    """running -> analyzing (exposure ends; feedback on served lists still counts)."""
    _transition(ref, "stop")


@app.command()
def resume(ref: Ref) -> None:
    """analyzing -> running (collect more data; the same users keep their variants)."""
    _transition(ref, "resume")


@app.command()
def conclude(ref: Ref) -> None:
    """-> concluded, storing a final analysis first."""
    _transition(ref, "conclude")


@app.command()
def analyze(ref: Ref) -> None:
    """Analyse now (tests per variant against the control) and store the results."""
    from serving.experiments import analysis, store

    async def work(conn: Any) -> dict[str, Any]:
        exp_id = await store.find_id(conn, ref)
        await analysis.analyze_experiment(conn, exp_id)
        return await store.get(conn, exp_id)

    _show(_run(work))
