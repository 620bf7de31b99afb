"""The long-lived background tasks of an API worker: one object per task, started once, stopped once.

Why one helper: the item catalog refresh, the running-experiments refresh, the model-updates
watcher and the serve log's flush loop each own one asyncio task for the life of the worker,
started in the lifespan and cancelled at shutdown. Stopping has to cancel, *wait* for the task
(so nothing touches the pool after it is closed) and swallow the cancellation and whatever the
task died of; that pair was written four times.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)


class BackgroundTask:
    """One named task: :meth:`start` creates it unless it is running, :meth:`stop` cancels it
    and waits for it to end.

    >>> async def demo() -> bool:
    ...     t = BackgroundTask("sleeper")
    ...     t.start(lambda: asyncio.sleep(60))
    ...     running = t.running
    ...     await t.stop()
    ...     return running and not t.running
    >>> asyncio.run(demo())
    True
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._task: asyncio.Task[Any] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self, work: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        """Run ``work()`` in the background on the running loop, unless it already runs."""
        if not self.running:
            self._task = asyncio.get_running_loop().create_task(work(), name=self.name)

    async def stop(self) -> None:
        """Cancel the task and wait until it has ended (its error, if any, is not re-raised:
        at shutdown there is nobody left to tell)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def every(interval_sec: float, step: Callable[[], Awaitable[Any]], what: str) -> None:
    """``step()`` forever, then ``interval_sec`` of sleep; a failed step is logged and tried
    again at the next tick (keeping the last good state meanwhile is the step's business)."""
    while True:
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("%s failed (%r); keeping the last state, next try in %gs", what, exc, interval_sec)
        await asyncio.sleep(interval_sec)
