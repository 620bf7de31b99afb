"""Time boxes of the recommendation path return on time even when the boxed work is slow to
cancel (psycopg waits for the server to end a cancelled query), and cache keys built in Redis
match the Python key scheme."""

from __future__ import annotations

import asyncio
import time

import pytest

from schemas.cache_keys import filter_digest, list_key
from serving.cache import list_key_parts
from serving.recommend import _boxed


def test_time_box_does_not_wait_for_a_slow_cancellation() -> None:
    finished = asyncio.Event()

    async def stubborn() -> int:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await asyncio.sleep(0.5)  # what psycopg does: cancel on the server, wait for the end
            finished.set()
            raise
        return 1

    async def run() -> float:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            await _boxed(stubborn(), 50)
        took = time.monotonic() - t0
        await asyncio.wait_for(finished.wait(), 2)  # the cleanup still runs, in the background
        return took

    assert asyncio.run(run()) < 0.3


def test_time_box_passes_results_and_errors_through() -> None:
    async def ok() -> str:
        return "x"

    async def bad() -> None:
        raise ValueError("boom")

    assert asyncio.run(_boxed(ok(), 100)) == "x"
    with pytest.raises(ValueError, match="boom"):
        asyncio.run(_boxed(bad(), 100))


@pytest.mark.parametrize("user", ["u1", "user:with:colons", "ü-42"])
def test_lookup_key_parts_rebuild_the_list_key(user: str) -> None:
    digest = filter_digest({"genre": "drama", "k": 10})
    head, tail = list_key_parts(user, "x3.control", digest)
    assert head + "17" + tail == list_key(user, 17, "x3.control", digest)
