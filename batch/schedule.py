"""``lambdarec scheduler``: the batch pipeline on a cron, with APScheduler 3.x.

Why APScheduler and not a sleep loop: a cron trigger gets DST, missed runs and drift right;
``misfire_grace_time`` runs a tick that was missed by less than an hour (the machine was busy or
restarting) instead of silently skipping the day, ``coalesce`` turns several missed ticks into
one run, and ``max_instances=1`` never lets two runs overlap (the run log's file lock guards that
across processes too). Each tick uses the scheduled fire time as the cut-off, so a tick that is
retried after a crash resumes the same run id (``batch/pipeline.py``). Airflow users run the same
tasks from ``infra/airflow/lambdarec_batch_dag.py`` instead.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from lambdarec.settings import Settings

log = logging.getLogger(__name__)
JOB_ID = "lambdarec-batch"


_DOW = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")


def crontab_day_of_week(field: str) -> str:
    """Crontab's day-of-week (0 or 7 = Sunday) in APScheduler's names.

    Why: APScheduler 3 numbers days from Monday = 0, and ``CronTrigger.from_crontab`` passes the
    numbers through unchanged, so ``"30 4 * * 1"`` would fire on *Tuesdays*. Names are unambiguous.

    >>> crontab_day_of_week("1-5"), crontab_day_of_week("0,6"), crontab_day_of_week("*/2")
    ('mon-fri', 'sun,sat', '*/2')
    """
    import re

    def names(part: str) -> str:
        rng, slash, step = part.partition("/")
        return re.sub(r"\d+", lambda m: _DOW[int(m.group()) % 8], rng) + slash + step

    return ",".join(names(p) for p in field.split(","))


def trigger(settings: Settings) -> Any:
    """The APScheduler ``CronTrigger`` of ``settings.batch.schedule_cron`` (standard 5-field crontab)."""
    from apscheduler.triggers.cron import CronTrigger

    fields = settings.batch.schedule_cron.split()
    if len(fields) != 5:
        raise ValueError(
            f"batch.schedule_cron {settings.batch.schedule_cron!r}: need 5 fields"
            " (minute hour day month weekday)"
        )
    minute, hour, day, month, dow = fields
    return CronTrigger(
        minute=minute,
        hour=hour,
        day=day,
        month=month,
        day_of_week=crontab_day_of_week(dow),
        timezone=settings.batch.schedule_timezone,
    )


def next_runs(settings: Settings, n: int = 3, now: datetime | None = None) -> list[datetime]:
    """The next ``n`` fire times (what ``lambdarec scheduler --dry-run`` prints)."""
    t = trigger(settings)
    out: list[datetime] = []
    prev = None
    now = now or datetime.now(UTC)
    for _ in range(n):
        nxt = t.get_next_fire_time(prev, prev or now)
        if nxt is None:
            break
        out.append(nxt)
        prev = nxt
    return out


def scheduled_run(settings: Settings, on_event: Callable[[str, str, str], None] | None = None) -> int:
    """One tick: run (or resume) the pipeline with the tick's time as cut-off; returns the exit code.

    Errors are logged, not raised: a failed day must not stop the scheduler (tomorrow's run, or an
    operator's ``lambdarec batch run`` resume, picks it up).
    """
    from batch import pipeline

    cutoff = datetime.now(UTC).replace(second=0, microsecond=0)
    try:
        run = pipeline.run_pipeline(settings, cutoff=cutoff, on_event=on_event)
    except Exception as exc:
        log.error("batch run for cut-off %s failed: %s", cutoff.isoformat(), exc)
        return getattr(exc, "exit_code", pipeline.EXIT_FAILED)
    log.info("batch run %s finished: %s", run.run_id, run.status)
    return pipeline.exit_code(run)


def build_scheduler(
    settings: Settings, job: Callable[[], object] | None = None, *, blocking: bool = True
) -> Any:
    """A scheduler with the pipeline job registered on the cron trigger (not started)."""
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.schedulers.blocking import BlockingScheduler

    cls = BlockingScheduler if blocking else BackgroundScheduler
    sched = cls(timezone=settings.batch.schedule_timezone)
    sched.add_job(
        job or (lambda: scheduled_run(settings)),
        trigger(settings),
        id=JOB_ID,
        name="lambdarec daily batch pipeline",
        max_instances=1,
        coalesce=True,
        misfire_grace_time=3600,
        replace_existing=True,
    )
    return sched


def serve_forever(settings: Settings, stop: threading.Event | None = None) -> None:
    """Run the scheduler until ``stop`` is set (or forever, with a blocking scheduler)."""
    if stop is None:
        build_scheduler(settings).start()
        return
    sched = build_scheduler(settings, blocking=False)
    sched.start()
    try:
        stop.wait()
    finally:
        sched.shutdown(wait=True)
