"""``lambdarec demo``: the main job, end to end, from a fresh machine.

1. services up (installing them on first use)   6. history (older events) backfilled into the lake
2. migrations                                   7. batch training (``--no-batch`` skips it)
3. smoke round trip through every service       8. stream worker + API in the background
4. a synthetic world (or ``--movielens DIR``)   9. one user's newer events replayed to Kafka
5. catalog import + embeddings                  10. the next batch run: live events archived,
                                                    retrained, promoted; worker + API switch
                                                11. that user's recommendations before and after

Every step is idempotent, so ``make demo`` twice works: the world is regenerated only when its
config changed, catalog upserts and embeddings skip what is current, the lake backfill commits
exactly once per source, background processes already running are reused, and step 9 picks a
user the speed layer has not seen yet (so each run shows a fresh before/after).

The stream worker (and the API) keep running after the demo so you can play with them;
``lambdarec demo --stop`` stops them.

Step 7 runs ``lambdarec batch run --cutoff <history cutoff>`` (skip it with ``--no-batch``); if it
fails the demo says so and goes on, since the speed layer does not need it. Step 8 also starts
``lambdarec serve`` (``--no-api`` skips it); if it does not become healthy the demo goes on
without it. The main report reads Postgres directly (the speed layer's taste vector: nearest
unseen items, else the batch view, else popularity); with the API up it also shows the API's
answer before and after, for which the demo records the chosen user's data-usage consent
(without it the API serves non-personalised lists by design).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from infra import services
from infra.smoke import run_smoke
from lambdarec.cli.world import Items, Users, events_option
from lambdarec.settings import Settings, get_settings

console = Console()


@dataclass
class DemoReport:
    """What the demo did: step timings and the chosen user's lists (the e2e test reads this)."""

    timings: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    live_events: int = 0
    before: list[tuple[str, str]] = field(default_factory=list)
    after: list[tuple[str, str]] = field(default_factory=list)
    before_source: str = ""
    after_source: str = ""
    #: the API's answers (``--api``), when it was up: (algorithm_source, [(item_id, title)])
    api_before: tuple[str, list[tuple[str, str]]] | None = None
    api_after: tuple[str, list[tuple[str, str]]] | None = None
    #: step 11: production model before/after the next batch run, and what the worker and the
    #: API hold afterwards (None: not checked or not answering)
    model_before: str | None = None
    model_after: str | None = None
    worker_model: str | None = None
    api_model: str | None = None

    @property
    def changed(self) -> bool:
        return [i for i, _ in self.before] != [i for i, _ in self.after]


@contextmanager
def _step(report: DemoReport, name: str) -> Iterator[None]:
    """A rich rule, then the step, then its time (kept in the report for the summary table)."""
    console.rule(f"[bold]{name}")
    t0 = time.monotonic()
    try:
        yield
    finally:
        report.timings[name] = time.monotonic() - t0
        console.print(f"[dim]{name}: {report.timings[name]:.1f}s[/]")


#: The demo's own Kafka namespace: its topics and its speed-layer consumer group start empty, so
#: a record another tool left in the shared topics (a fuzzing payload the speed layer retries
#: forever, a backlog of millions) cannot stall the demo. ``--topic-prefix lambdarec.`` uses the
#: main topics instead.
DEMO_TOPIC_PREFIX = "lambdarec.demo."


def demo_settings(settings: Settings, topic_prefix: str | None) -> tuple[Settings, dict[str, str]]:
    """Settings with the demo's topic prefix and stream app id (``None``: keep the settings'), and
    the environment for the background processes (:meth:`Settings.as_env`: all of it, so a
    worker never falls back to the main database or topics)."""
    s = settings
    if topic_prefix is not None and topic_prefix != settings.kafka.topic_prefix:
        app_id = f"{settings.stream.app_id}-{topic_prefix.strip('.').replace('.', '-')}"
        s = settings.model_copy(
            update={
                "kafka": settings.kafka.model_copy(update={"topic_prefix": topic_prefix}),
                "stream": settings.stream.model_copy(update={"app_id": app_id}),
            }
        )
    return s, s.as_env()


def instance_of(topic_prefix: str | None) -> str:
    """Pid-file suffix of the background processes of a namespace ('' for the default demo one)."""
    if topic_prefix == DEMO_TOPIC_PREFIX:
        return ""
    if topic_prefix is None:
        return "settings"
    return topic_prefix.strip(".").replace(".", "-") or "root"


# ---- steps --------------------------------------------------------------------------------------


def _world(settings: Settings, out: Path, users: int, items: int, events: int) -> dict[str, Any]:
    """Generate the world unless ``out`` already holds one with the same config; its manifest."""
    from batch.world import WorldConfig, generate_world
    from lambdarec.cli.catalog import progress_bar

    cfg = WorldConfig(users=users, items=items, events=events, days=60.0 if events <= 50_000 else 180.0)
    manifest = out / "manifest.json"
    if manifest.exists():
        m = json.loads(manifest.read_text())
        c = m.get("config", {})
        # id_prefix too: a world written before ids were namespaced (bare "1".."N", which collide
        # with MovieLens ids in the shared catalog) is regenerated, not reused.
        if (c.get("users"), c.get("items"), c.get("events"), c.get("days"), c.get("id_prefix")) == (
            users,
            items,
            events,
            cfg.days,
            cfg.id_prefix,
        ):
            console.print(f"world in {out} is current ({events:,} events); not regenerated")
            return dict(m)
    with progress_bar(console) as prog:
        task = prog.add_task("generating events", total=events)
        generate_world(cfg, out, overwrite=True, on_events=lambda n: prog.advance(task, n))
    return dict(json.loads(manifest.read_text()))


def _catalog(settings: Settings, source: Path) -> str:
    """Import the catalog and embed what is new; returns a one-line summary."""
    import psycopg

    from batch.catalog.readers import parse_catalog
    from batch.catalog.store import upsert_items
    from batch.embeddings.pipeline import embed_catalog
    from lambdarec.cli.catalog import models_dir

    res = parse_catalog(source)
    with psycopg.connect(settings.postgres.url, connect_timeout=5) as conn:
        up = upsert_items(conn, res.items)
        emb = embed_catalog(
            conn, provider_name="tfidf", dim=settings.embedding.dim, models_dir=models_dir(settings)
        )
    return (
        f"{len(res.items):,} items ({up.inserted} new, {up.updated} changed, {up.unchanged} unchanged); "
        f"embedded {emb.embedded} with {emb.model_id}"
    )


def _cutoff(events_path: Path, share: float) -> datetime:
    """The time that splits the events into history (``share`` of them, older) and live (newer)."""
    import pyarrow.compute as pc

    from batch.catalog.ratings import detect_format

    fmt, files = detect_format(events_path)
    if fmt == "world":
        import pyarrow.dataset as ds

        col = ds.dataset([str(f) for f in files]).to_table(columns=["occurred_at"]).column("occurred_at")
        ts = pc.cast(col, "int64").to_numpy() / 1e6
    else:
        import numpy as np

        from batch.catalog.ratings import read_interactions

        src = read_interactions(events_path)
        ts = np.array([e.occurred_at.timestamp() for e in src.events()])
    ts.sort()
    return datetime.fromtimestamp(float(ts[min(len(ts) - 1, int(len(ts) * share))]), UTC)


def _pick_user(settings: Settings, events_path: Path, cutoff: datetime) -> tuple[str, int]:
    """The user with the most live events whom the speed layer has not seen yet (no profile, or
    no taste vector): a fresh before/after on every run. Falls back to the most active live user."""
    from collections import Counter

    import psycopg

    from batch.catalog.ratings import read_interactions

    with psycopg.connect(settings.postgres.url, connect_timeout=5) as conn:
        items = {r[0] for r in conn.execute("SELECT item_id FROM items WHERE embedding IS NOT NULL")}
        seen = {
            r[0]
            for r in conn.execute(
                "SELECT user_id FROM user_profiles"
                " WHERE preference_vector IS NOT NULL OR total_interactions > 0"
            )
        }
    counts = Counter(
        e.user_id for e in read_interactions(events_path, since=cutoff).events() if e.item_id in items
    )
    if not counts:
        raise RuntimeError("no live events for items with embeddings: nothing to replay")
    for user, n in counts.most_common():
        if user not in seen and n >= 3:
            return user, n
    user, n = counts.most_common(1)[0]
    return user, n


def user_recommendations(settings: Settings, user: str, k: int = 10) -> tuple[str, list[tuple[str, str]]]:
    """(source, [(item_id, title)]) for ``user`` straight from Postgres, from the freshest source
    serving has for them: the nearest unseen items to the speed layer's taste vector (it moves with
    every event), else the active batch view (last batch run), else the most popular items."""
    import psycopg

    with psycopg.connect(settings.postgres.url, connect_timeout=5) as conn:
        rows = conn.execute(
            """
            SELECT i.item_id, i.title FROM items i, user_profiles p
             WHERE p.user_id = %s AND p.preference_vector IS NOT NULL AND i.embedding IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM rt_user_interactions r
                                WHERE r.user_id = p.user_id AND r.item_id = i.item_id)
             ORDER BY i.embedding <=> p.preference_vector LIMIT %s
            """,
            (user, k),
        ).fetchall()
        if rows:
            return "taste vector (speed layer)", [(r[0], r[1]) for r in rows]
        row = conn.execute(
            "SELECT recommendations FROM current_batch_recommendations WHERE user_id = %s", (user,)
        ).fetchone()
        if row and row[0]:
            ids = [str(r["item_id"]) for r in row[0][:k]]
            titles: dict[str, str] = {
                r[0]: r[1]
                for r in conn.execute("SELECT item_id, title FROM items WHERE item_id = ANY(%s)", (ids,))
            }
            return "batch view", [(i, titles.get(i, "?")) for i in ids]
        rows = conn.execute(
            # NULLS LAST: MovieLens items have no popularity score, and DESC puts NULLs first.
            "SELECT item_id, title, popularity_score FROM items WHERE embedding IS NOT NULL "
            "ORDER BY popularity_score DESC NULLS LAST, item_id LIMIT %s",
            (k,),
        ).fetchall()
        # Say so when the catalog has no popularity (MovieLens: 0, the import's default): the list
        # is then just id order, not "popular".
        label = "popular (no profile yet)" if rows and rows[0][2] else "catalog order (no profile yet)"
        return label, [(r[0], r[1]) for r in rows]


def _consent(settings: Settings, user: str) -> None:
    """Record the demo user's data-usage consent: without it the API serves a non-personalised
    list by design, and the demo could not show the API's answer change."""
    import psycopg

    with psycopg.connect(settings.postgres.url, connect_timeout=5) as conn:
        conn.execute(
            "INSERT INTO user_profiles (user_id, data_usage_consent) VALUES (%s, true) "
            "ON CONFLICT (user_id) DO UPDATE SET data_usage_consent = true",
            (user,),
        )


def api_recommendations(
    settings: Settings, user: str, k: int = 10
) -> tuple[str, list[tuple[str, str]]] | None:
    """The API's list for ``user`` (None if it does not answer): what a client would be shown."""
    import httpx

    url = f"http://{settings.api.host}:{settings.api.port}/v1/users/{user}/recommendations"
    try:
        r = httpx.get(url, params={"k": k}, timeout=10)
        r.raise_for_status()
        body = r.json()
    except (httpx.HTTPError, ValueError) as exc:
        console.print(f"[yellow]API did not answer for {user}[/]: {exc}")
        return None
    label = str(body.get("algorithm_source")) + (" (degraded)" if body.get("degraded") else "")
    return label, [(str(i["item_id"]), str(i.get("title") or "?")) for i in body.get("items", [])]


def _wait_for_profile(settings: Settings, user: str, timeout: float, worker_pid: int | None) -> int:
    """Wait until the speed layer has applied the user's events; returns total_interactions.
    Fails fast if the worker died (its log says why) instead of waiting out the timeout."""
    import psycopg

    from infra.process import pid_alive

    deadline = time.monotonic() + timeout
    last, stable_since = -1, time.monotonic()
    n = 0
    while time.monotonic() < deadline:
        if worker_pid is not None and not pid_alive(worker_pid):
            raise RuntimeError(f"the stream worker (pid {worker_pid}) exited; see its log in var/log")
        with psycopg.connect(settings.postgres.url, connect_timeout=5) as conn:
            row = conn.execute(
                "SELECT total_interactions, preference_vector IS NOT NULL"
                " FROM user_profiles WHERE user_id = %s",
                (user,),
            ).fetchone()
        n = int(row[0]) if row else 0
        if n != last:
            last, stable_since = n, time.monotonic()
        elif row and row[1] and time.monotonic() - stable_since > 3:
            return n  # the vector exists and the count stopped moving
        time.sleep(1)
    return n


#: ``lambdarec batch run`` exit code of a run the quality gate rejected (``batch.pipeline.EXIT_REJECTED``).
_EXIT_REJECTED = 3


def _batch_run(cutoff: datetime, env: dict[str, str], train_everything: bool = False) -> str:
    """``lambdarec batch run --cutoff <history cutoff>`` as its own process (it owns Spark and its
    logs). The cutoff names the run, so a second demo resumes it: done tasks are skipped.

    ``train_everything``: train on the whole backfilled history instead of the last
    ``batch.train_window_days`` (30) before the cutoff, unless the user set that window. For
    MovieLens: its ratings are sparse and spread over months (ml-100k: 100k over 7 months), so a
    30-day window holds ~12 % of them and too few holdout users get a list for the gate to pass.
    A gate rejection is reported as such, not as a failure: production is kept, by design.
    """
    import os

    extra = {"COLUMNS": "200"}
    if train_everything and "LAMBDAREC_BATCH__TRAIN_WINDOW_DAYS" not in os.environ:
        extra["LAMBDAREC_BATCH__TRAIN_WINDOW_DAYS"] = "0"
    proc = subprocess.run(
        [*_lambdarec_command(), "batch", "run", "--cutoff", cutoff.isoformat()],
        env={**os.environ, **env, **extra},
        capture_output=True,
        text=True,
        timeout=3600,
    )
    lines = proc.stdout.splitlines()
    if proc.returncode == _EXIT_REJECTED and any(ln.startswith("run ") for ln in lines):
        why = [ln.strip() for ln in lines if "gate" in ln.lower()]
        return f"{[ln for ln in lines if ln.startswith('run ')][-1]}; {' | '.join(why)[-300:]}"
    if proc.returncode != 0:
        out = (proc.stdout + proc.stderr).strip()
        raise RuntimeError(f"`lambdarec batch run` failed ({proc.returncode}): {out[-500:]}")
    done = [ln for ln in proc.stdout.splitlines() if ln.startswith("run ")]
    if not done:
        # Exit code 0 without the run's status line: something ended the process early (it
        # happened: a library's ``sys.exit(0)`` at import time). Never report that as "ok".
        out = (proc.stdout + proc.stderr).strip()
        raise RuntimeError(f"`lambdarec batch run` exited without reporting a run: {out[-500:]}")
    return done[-1]


def _lambdarec_command() -> list[str]:
    """How to run ``lambdarec`` in a subprocess: the venv's console script next to this interpreter.

    Not ``python -c "...main()"``: there ``__main__`` has no ``__file__``, which pyspark's Connect
    module (imported by great_expectations in the batch's validation) takes for a doctest run and
    answers with ``sys.exit(0)``, so the batch "succeeded" without training anything.
    """
    import shutil

    script = Path(sys.executable).with_name("lambdarec")
    if script.is_file():
        return [str(script)]
    found = shutil.which("lambdarec")
    return [found] if found else [sys.executable, "-c", "from lambdarec.cli import main; main()"]


def _api_up(settings: Settings, timeout: float) -> bool:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if (
                httpx.get(f"http://{settings.api.host}:{settings.api.port}/healthz", timeout=2).status_code
                == 200
            ):
                return True
        except httpx.HTTPError:
            pass
        time.sleep(1)
    return False


# ---- the command --------------------------------------------------------------------------------


def run_demo(
    settings: Settings,
    *,
    users: int = 2000,
    items: int = 1000,
    events: int = 200_000,
    movielens: Path | None = None,
    history_share: float = 0.9,
    batch: bool = True,
    api: bool = True,
    smoke: bool = True,
    profile_timeout: float = 180.0,
    topic_prefix: str | None = DEMO_TOPIC_PREFIX,
    world_dir: Path | None = None,
) -> DemoReport:
    """Run every step and return the report (``demo`` prints it; tests assert on it).
    ``world_dir`` defaults to ``<var>/demo/world``."""
    from lambdarec.cli.backfill import run_backfill

    report = DemoReport()
    settings, env = demo_settings(settings, topic_prefix)
    report.notes["topics"] = f"{settings.kafka.topic_prefix}* (stream app {settings.stream.app_id})"
    with _step(report, "1. services"):
        services.up(settings, console=console)
    with _step(report, "2. schema"):
        from schemas.migrate import migrate

        console.print(f"migrations applied now: {len(migrate(settings))}")
    if smoke:
        with _step(report, "3. smoke run through every service"):
            results = run_smoke(settings)
            t = Table()
            for col in ("service", "result", "detail", "s"):
                t.add_column(col)
            for r in results:
                t.add_row(
                    r.service, "[green]ok[/]" if r.ok else "[red]FAILED[/]", r.detail, f"{r.seconds:.1f}"
                )
            console.print(t)
            if not all(r.ok for r in results):
                raise RuntimeError("the smoke run failed; see the table above")
    with _step(report, "4. data"):
        if movielens is not None:
            catalog_src, events_src = movielens, movielens
            console.print(f"MovieLens files from {movielens}")
        else:
            out = world_dir or settings.var_dir / "demo" / "world"
            m = _world(settings, out, users, items, events)
            s = m["summary"]
            console.print(
                f"world: {s['users']:,} users, {s['items']:,} items, {s['events']:,} events in {out}"
            )
            catalog_src, events_src = out / "catalog.jsonl", out
    with _step(report, "5. catalog + embeddings"):
        report.notes["catalog"] = _catalog(settings, catalog_src)
        console.print(report.notes["catalog"])
    cutoff = _cutoff(events_src, history_share)
    report.notes["cutoff"] = cutoff.isoformat()
    with _step(report, "6. history -> lake"):
        console.print(f"events before {cutoff:%Y-%m-%d %H:%M} UTC are history; the rest are live")
        run_backfill(
            settings, events_src, to="lake", before=cutoff, skip_unknown=True, show_issues=5, out=console
        )
    if batch:
        with _step(report, "7. batch training"):
            try:
                report.notes["batch"] = _batch_run(cutoff, env, train_everything=movielens is not None)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                # The speed layer and the report do not need it: say so and go on.
                report.notes["batch"] = f"[yellow]failed, continuing without it[/]: {exc}"
            console.print(report.notes["batch"])
    else:
        report.notes["batch"] = "skipped (--no-batch)"
    with _step(report, "8. stream worker" + (" + API" if api else "")):
        from infra import processes

        w = processes.start(settings, "demo-stream-worker", env, instance_of(topic_prefix))
        console.print(
            f"stream worker pid {w.pid} ({'started' if w.started_now else 'already running'}), log {w.log}"
        )
        if api:
            a = processes.start(settings, "demo-api", env, instance_of(topic_prefix))
            up = _api_up(settings, 60)
            report.notes["api"] = f"http://{settings.api.host}:{settings.api.port}" if up else "not healthy"
            console.print(f"API pid {a.pid}: {report.notes['api']} (log {a.log})")
    with _step(report, "9. live events -> Kafka"):
        user, n = _pick_user(settings, events_src, cutoff)
        report.user, report.live_events = user, n
        report.before_source, report.before = user_recommendations(settings, user)
        api_up = report.notes.get("api", "").startswith("http")
        if api_up:
            _consent(settings, user)
            report.api_before = api_recommendations(settings, user)
        console.print(f"user {user!r}: {n} live event(s) on embedded items; replaying them")
        run_backfill(
            settings, events_src, to="kafka", since=cutoff, users={user}, skip_unknown=True, out=console
        )
        total = _wait_for_profile(settings, user, profile_timeout, w.pid)
        console.print(f"speed layer: user {user!r} now has {total} interaction(s) in Postgres")
        report.after_source, report.after = user_recommendations(settings, user)
        if api_up:
            report.api_after = api_recommendations(settings, user)
    if batch and report.notes.get("batch", "").startswith("run "):
        with _step(report, "10. next batch: live events archived, retrained, promoted"):
            # the night after the live period: everything up to the last live event is closed
            from lambdarec.cli.backfill import run_backfill as replay

            console.print("the rest of the live period: every user's newer events -> Kafka")
            replay(settings, events_src, to="kafka", since=cutoff, skip_unknown=True, out=console)
            end = _cutoff(events_src, 1.0) + timedelta(seconds=1)
            _next_batch(settings, env, report, api_up, end, train_everything=movielens is not None)
    with _step(report, "11. report"):
        print_report(report)
    return report


def production_version(settings: Settings) -> str | None:
    """The registry's production model version of the speed layer's algorithm (None: none yet)."""
    import psycopg

    with psycopg.connect(settings.postgres.url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT version FROM models WHERE algorithm = %s AND status = 'production'",
            (settings.stream.model_algorithm,),
        ).fetchone()
    return str(row[0]) if row else None


def _worker_model(settings: Settings) -> str | None:
    """The model version the demo's stream worker folds in against (its /metrics), if it answers."""
    import re
    import urllib.request

    url = f"http://{settings.stream.web_host}:{settings.stream.web_port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return None
    found = re.search(r'^lambdarec_stream_model_info\{[^}]*version="([^"]+)"[^}]*\} 1\.0$', text, re.M)
    return found.group(1) if found else None


def _api_model(settings: Settings, user: str) -> str | None:
    """The model version of the API's answer for ``user`` (None if it does not answer)."""
    import httpx

    url = f"http://{settings.api.host}:{settings.api.port}/v1/users/{user}/recommendations"
    try:
        body = httpx.get(url, params={"k": 10}, timeout=10).json()
    except (httpx.HTTPError, ValueError):
        return None
    return body.get("model_version")


def _next_batch(
    settings: Settings,
    env: dict[str, str],
    report: DemoReport,
    api_up: bool,
    cutoff: datetime,
    *,
    train_everything: bool,
) -> None:
    """The lambda architecture's other half: the next nightly run archives the live events (task 2
    closes the window), retrains, and if the gate passes promotes a new model; the stream worker
    and the API load it from model-updates without a restart, and the API's cached lists of the
    old model become unreachable."""
    report.model_before = production_version(settings)
    try:
        report.notes["batch (next)"] = _batch_run(cutoff, env, train_everything=train_everything)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        report.notes["batch (next)"] = f"[yellow]failed[/]: {exc}"
        console.print(report.notes["batch (next)"])
        return
    console.print(report.notes["batch (next)"])
    report.model_after = production_version(settings)
    if report.model_after is None or report.model_after == report.model_before:
        console.print(f"production stays {report.model_before} (the gate kept it)")
        return
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        report.worker_model = _worker_model(settings)
        if api_up and report.user is not None:
            report.api_model = _api_model(settings, report.user)
        if report.worker_model == report.model_after and (
            not api_up or report.api_model == report.model_after
        ):
            break
        time.sleep(1.0)
    console.print(
        f"model {report.model_before} -> {report.model_after}: the stream worker folds in against"
        f" {report.worker_model}" + (f", the API serves {report.api_model}" if api_up else "")
    )


def print_report(report: DemoReport) -> None:
    """Before/after lists side by side, then the step timings."""
    t = Table(title=f"user {report.user}: recommendations before and after {report.live_events} live events")
    t.add_column("#", justify="right")
    t.add_column(f"before ({report.before_source})")
    t.add_column(f"after ({report.after_source})")
    before_ids = {i for i, _ in report.before}
    for n in range(max(len(report.before), len(report.after))):
        b = report.before[n] if n < len(report.before) else ("", "")
        a = report.after[n] if n < len(report.after) else ("", "")
        mark = "" if not a[0] or a[0] in before_ids else " [green](new)[/]"
        t.add_row(str(n + 1), f"{b[1]} [dim]{b[0]}[/]", f"{a[1]} [dim]{a[0]}[/]{mark}")
    console.print(t)
    if report.api_before is not None and report.api_after is not None:
        ta = Table(title=f"the API's answer for user {report.user} (GET /v1/users/{{id}}/recommendations)")
        ta.add_column("#", justify="right")
        ta.add_column(f"before ({report.api_before[0]})")
        ta.add_column(f"after ({report.api_after[0]})")
        bl, al = report.api_before[1], report.api_after[1]
        for n in range(max(len(bl), len(al))):
            b = bl[n] if n < len(bl) else ("", "")
            a = al[n] if n < len(al) else ("", "")
            ta.add_row(str(n + 1), f"{b[1]} [dim]{b[0]}[/]", f"{a[1]} [dim]{a[0]}[/]")
        console.print(ta)
    if report.model_after is not None:
        console.print(
            f"next batch: production {report.model_before} -> {report.model_after}; stream worker on"
            f" {report.worker_model}, API serving {report.api_model}"
        )
    verdict = "[green]changed[/]" if report.changed else "[red]unchanged[/]"
    console.print(
        f"recommendations {verdict}: {len({i for i, _ in report.after} - before_ids)} new in the top 10"
    )
    tt = Table(title="timings")
    tt.add_column("step")
    tt.add_column("s", justify="right")
    for name, s in report.timings.items():
        tt.add_row(name, f"{s:.1f}")
    tt.add_row("[bold]total", f"[bold]{sum(report.timings.values()):.1f}")
    console.print(tt)
    for k, v in report.notes.items():
        console.print(f"[dim]{k}:[/] {v}")


def demo(
    movielens: Annotated[
        Path | None,
        typer.Option(
            help="use MovieLens files in DIR instead of a world: movies.csv + ratings.csv, ml-100k "
            "u.item + u.data, or RecBole's ml-100k.item + ml-100k.inter (the recbole wheel ships them)"
        ),
    ] = None,
    users: Users = 2000,
    items: Items = 1000,
    events: Annotated[int, events_option(100)] = 200_000,
    batch: Annotated[
        bool, typer.Option("--batch/--no-batch", help="run `lambdarec batch run` (step 7)")
    ] = True,
    api: Annotated[
        bool, typer.Option("--api/--no-api", help="also start `lambdarec serve` in the background")
    ] = True,
    stop: Annotated[
        bool, typer.Option("--stop", help="stop the demo's background processes and exit")
    ] = False,
    topic_prefix: Annotated[
        str, typer.Option(help="Kafka namespace of the demo (lambdarec. = the main topics)")
    ] = DEMO_TOPIC_PREFIX,
) -> None:
    """Set everything up and run the pipeline end to end, with a report."""
    settings = get_settings()
    if stop:
        from infra import processes

        stopped = processes.stop(settings, instance=instance_of(topic_prefix))
        console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
        return
    try:
        report = run_demo(
            settings,
            users=users,
            items=items,
            events=events,
            movielens=movielens,
            batch=batch,
            api=api,
            topic_prefix=topic_prefix,
        )
    except RuntimeError as exc:
        console.print(f"[red]demo failed[/]: {exc}")
        raise typer.Exit(1) from None
    console.print(services.status_table(services.status(settings)))
    console.print(
        f"the stream worker keeps running on topics {topic_prefix}*: send it events with "
        f"`LAMBDAREC_KAFKA__TOPIC_PREFIX={topic_prefix} lambdarec backfill --to kafka ...`; "
        "stop it with `lambdarec demo --stop`"
    )
    if not report.changed:
        raise typer.Exit(1)
