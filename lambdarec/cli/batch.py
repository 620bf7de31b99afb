"""``lambdarec batch run|status`` and ``lambdarec scheduler``: the daily batch pipeline.

The logic lives in ``batch/pipeline.py`` (tasks, run log) and ``batch/schedule.py`` (cron); this
is the shell: argument parsing, rich progress, exit codes (0 ok or nothing new, 1 a task failed,
3 the gate rejected the candidate, 4 the training data failed validation).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from lambdarec.settings import get_settings

app = typer.Typer(no_args_is_help=True, help="The batch layer: train, gate, publish (the 02:00 DAG).")
console = Console()
err_console = Console(stderr=True)

_STYLE = {"done": "green", "skip": "dim", "fail": "red", "start": "cyan", "note": ""}


def _parse_cutoff(raw: str | None) -> datetime | None:
    if raw is None:
        return None
    try:
        t = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise typer.BadParameter(f"{raw!r} is not an ISO time (e.g. 2026-11-25T02:00Z)") from exc
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _printer() -> Callable[[str, str, str], None]:
    """A progress callback: one line per task event, with a spinner while a task runs."""
    state: dict[str, object] = {"status": None, "t0": 0.0}

    def on_event(task: str, kind: str, message: str) -> None:
        status = state["status"]
        if kind == "start":
            console.print(f"[cyan]▶ {task}[/] ({message})")
            state["t0"] = time.perf_counter()
            st = console.status(f"{task} …", spinner="dots")
            st.start()
            state["status"] = st
            return
        if kind in ("done", "fail", "skip") and status is not None:
            status.stop()  # type: ignore[attr-defined]
            state["status"] = None
        mark = {"done": "✔", "fail": "✘", "skip": "↷", "note": " "}.get(kind, " ")
        style = _STYLE.get(kind, "")
        line = f"{mark} {task}: {message}" if kind != "note" else f"    {message}"
        console.print(f"[{style}]{line}[/]" if style else line, highlight=False)

    return on_event


@app.command()
def run(
    from_task: Annotated[
        int | None, typer.Option("--from-task", min=1, max=5, help="re-run tasks N..5 of the latest run")
    ] = None,
    cutoff: Annotated[
        str | None, typer.Option(help="train on events before this ISO time (default: now); names the run")
    ] = None,
    run_id: Annotated[
        str | None, typer.Option("--run-id", help="resume this run (see `batch status`)")
    ] = None,
    new: Annotated[bool, typer.Option("--new", help="start a new run even if the last one failed")] = False,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING")] = "WARNING",
) -> None:
    """Run the five tasks: active users, close the archive window, train + validate + evaluate,
    quality gate, publish. Completed tasks of the same run are skipped (automatic resume)."""
    from batch import pipeline

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    try:
        rl = pipeline.run_pipeline(
            settings,
            cutoff=_parse_cutoff(cutoff),
            from_task=from_task,
            run_id=run_id,
            new=new,
            on_event=_printer(),
        )
    except pipeline.PipelineError as exc:
        err_console.print(f"[red]batch run failed[/]: {exc}")
        raise typer.Exit(exc.exit_code) from None
    except Exception as exc:
        err_console.print(f"[red]batch run failed[/]: {type(exc).__name__}: {exc}")
        err_console.print("resume with `lambdarec batch run` (completed tasks are skipped)")
        raise typer.Exit(pipeline.EXIT_FAILED) from None
    finally:
        from infra.spark import stop_spark

        stop_spark()
    colour = {"succeeded": "green", "rejected": "yellow", "skipped": "dim"}.get(rl.status, "red")
    console.print(f"run [bold]{rl.run_id}[/]: [{colour}]{rl.status}[/]  (log: {rl.path})")
    raise typer.Exit(pipeline.exit_code(rl))


@app.command()
def status(
    limit: Annotated[int, typer.Option(help="how many recent runs")] = 10,
) -> None:
    """Recent runs with per-task status, and what is in production."""
    from batch import pipeline

    settings = get_settings()
    runs = pipeline.list_runs(settings)[-limit:]
    table = Table(title="batch runs")
    table.add_column("run id")
    table.add_column("status")
    for t in pipeline.TASKS:
        table.add_column(t)
    table.add_column("nDCG@k")
    table.add_column("lists")  # the family that won task 3 (ALS or EASE)
    icon = {"done": "[green]✔[/]", "failed": "[red]✘[/]", "skipped": "↷", "running": "…", "pending": "·"}
    for r in runs:
        cells = []
        for t in pipeline.TASKS:
            task = r.task(t)
            secs = task.get("seconds")
            cells.append(icon.get(task["status"], task["status"]) + (f" {secs:.0f}s" if secs else ""))
        m = r.output("train").get("metrics", {})
        ndcg = m.get(f"ndcg@{settings.batch.eval_k}")
        lists = str(r.output("train").get("list_model", ""))
        table.add_row(r.run_id, r.status, *cells, f"{ndcg:.4f}" if ndcg is not None else "", lists)
    if runs:
        console.print(table)
    else:
        console.print(f"no batch runs under {pipeline.runs_dir(settings)}")
    for r in runs[-1:]:
        for t in pipeline.TASKS:
            if r.task(t).get("error"):
                console.print(f"[red]{r.run_id} {t}[/]: {r.task(t)['error']}")
    try:
        import psycopg

        from batch import registry

        with psycopg.connect(settings.postgres.url, autocommit=True, connect_timeout=3) as conn:
            prod = registry.production_model(conn, pipeline.ALGORITHM)
            active = conn.execute(
                "SELECT run_id, model_version, user_count, expires_at FROM batch_recommendation_runs "
                "WHERE status = 'active'"
            ).fetchone()
        lists = f" (lists by {prod.hyperparameters.get('list_model', 'als')})" if prod else ""
        console.print(f"production {pipeline.ALGORITHM}: {prod.version if prod else '-'}{lists}")
        if active:
            console.print(
                f"batch view: run {active[0]} ({active[1]}, {active[2]} users, expires {active[3]})"
            )
    except Exception as exc:  # status must work with Postgres down
        console.print(f"[yellow]registry not reachable[/]: {exc}")


def scheduler(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the next fire times and exit")] = False,
    run_now: Annotated[bool, typer.Option("--run-now", help="also run the pipeline once at start")] = False,
) -> None:
    """Run the batch pipeline on ``batch.schedule_cron`` (default 02:00 UTC daily) until stopped."""
    from batch import schedule

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    nxt = schedule.next_runs(settings)
    console.print(
        f"cron {settings.batch.schedule_cron!r} ({settings.batch.schedule_timezone}); next: "
        + ", ".join(t.isoformat() for t in nxt)
    )
    if dry_run:
        return
    if run_now:
        schedule.scheduled_run(settings, on_event=_printer())
    try:
        schedule.serve_forever(settings)
    except (KeyboardInterrupt, SystemExit):
        console.print("scheduler stopped")
