"""Fixtures shared by the serving tests (their harness: ``serving_support.py``).

``world`` is the serving world; the batch test modules define a ``world`` of their own (a
private Spark/Kafka world), which overrides this one in those modules as pytest intends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from lambdarec.settings import Settings
from serving.deps import build_services
from serving.recommend import Services
from tests.integration.serving_support import World, seeded_world


@pytest.fixture
def world(postgres: Settings, redis_service: Settings) -> Iterator[World]:
    """Ten items, a genre, users on demand, in the shared database; deleted afterwards."""
    with seeded_world(postgres) as w:
        yield w


@pytest.fixture
async def svc(postgres: Settings, world: World) -> AsyncIterator[Services]:
    """The serving resources of one process with their Postgres pool open (no lifespan)."""
    s = build_services(postgres)
    await s.pool.open(wait=True)
    try:
        yield s
    finally:
        await s.pool.close()
