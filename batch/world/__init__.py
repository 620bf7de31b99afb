"""The synthetic world: users with latent tastes, a genre-consistent catalog and their events.

For tests, the demo and benchmarks. See :mod:`batch.world.generate` for the output layout and
:mod:`batch.world.model` / :mod:`batch.world.events` for the behaviour model.
"""

from __future__ import annotations

from batch.world.events import EVENT_SCHEMA, EVENT_TYPES
from batch.world.generate import WorldConfig, WorldSummary, generate_world, load_truth, world_ids
from batch.world.model import DEFAULT_ID_PREFIX, WorldIds

__all__ = [
    "DEFAULT_ID_PREFIX",
    "EVENT_SCHEMA",
    "EVENT_TYPES",
    "WorldConfig",
    "WorldIds",
    "WorldSummary",
    "generate_world",
    "load_truth",
    "world_ids",
]
