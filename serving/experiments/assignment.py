"""Deterministic variant assignment: ``sha256(salt:experiment_id:user_id)`` -> bucket 0..9999.

Why a hash and not a stored assignment table: it costs no I/O on the request path, every API
process agrees without coordination, and a user keeps the same variant for the experiment's whole
life (the allocation is frozen by the database once the experiment left draft). The experiment id
(and an optional ``config.salt``) is part of the hash, so two experiments split users
independently: being in "treatment" of one says nothing about the next.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

BUCKETS = 10_000


@dataclass(frozen=True)
class Variant:
    """One arm: its name, share of traffic (percent, 2 decimals as in the table) and config."""

    name: str
    traffic_percent: Decimal
    config: dict[str, Any] = field(default_factory=dict)
    is_control: bool = False


def bucket(user_id: str, experiment_id: int, salt: str = "") -> int:
    """The user's bucket in 0..9999 for this experiment (uniform, stable)."""
    digest = hashlib.sha256(f"{salt}:{experiment_id}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def boundaries(variants: Sequence[Variant]) -> list[int]:
    """Cumulative upper bucket bounds: 50 % / 50 % -> ``[5000, 10000]`` (percent with 2 decimals
    maps exactly onto 10 000 buckets). Variants are taken in the given (stable) order."""
    out, total = [], 0
    for v in variants:
        total += int(v.traffic_percent * 100)
        out.append(total)
    return out


def pick(variants: Sequence[Variant], bounds: Sequence[int], b: int) -> Variant | None:
    """The variant owning bucket ``b``; None when the shares sum to less than 100 % and ``b`` falls
    in the unallocated rest (those users are not in the experiment)."""
    for v, upper in zip(variants, bounds, strict=True):
        if b < upper:
            return v
    return None


def assign(user_id: str, experiment_id: int, variants: Sequence[Variant], salt: str = "") -> Variant | None:
    """The variant ``user_id`` sees in the experiment (convenience for tests and the CLI)."""
    return pick(variants, boundaries(variants), bucket(user_id, experiment_id, salt))
