"""``generate_world``: the synthetic world written to a folder, streamed window by window.

Output layout (everything a test, the demo or a benchmark needs)::

    OUT/catalog.jsonl              items with the seed's movie fields (``lambdarec catalog import``)
    OUT/events/part-00000.parquet  InteractionEvent v1 rows, globally ordered by occurred_at
    OUT/truth/items.parquet        ground truth: genres, latent factors, quality, popularity
    OUT/truth/users.parquet        ground truth: genre tastes, latent factors, harshness, activity
    OUT/manifest.json              config, counts per event type, time range, z standardisation, id scheme

Ids are namespaced (:class:`~batch.world.model.WorldIds`): items ``<prefix>i<n>``, users
``<prefix>u<n>``, n from 1, prefix ``w`` by default (``wi1``, ``wu1``), so a world and a MovieLens
catalog (bare integer ids) can share one database and lake without overwriting each other.

Memory is bounded by ``chunk_events``: time is cut into windows of about that many events; each
window's sessions are generated, sorted and written before the next, and only the events that spill
past a window's end (sessions still running) are carried into the next one, which keeps the whole
stream in time order. Same config and seed -> byte-identical events.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from batch.world.catalog import catalog_rows, write_catalog
from batch.world.events import EVENT_SCHEMA, EVENT_TYPES, US, AliasSampler, WorldArrays, window_events
from batch.world.model import (
    DEFAULT_ID_PREFIX,
    ItemModel,
    UserModel,
    WorldIds,
    make_items,
    make_users,
    utility_stats,
)
from batch.world.vocab import GENRES

#: 2: namespaced ids (``wi1``/``wu1``); 1 had bare numbers (``1``..``N``) that clashed with MovieLens.
FORMAT_VERSION = 2


@dataclass(frozen=True)
class WorldConfig:
    """Size and shape of a world. Defaults are a demo-sized world that generates in seconds."""

    users: int = 2000
    items: int = 1000
    events: int = 200_000
    seed: int = 42
    start: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    days: float = 180.0
    factors: int = 16
    zipf: float = 0.9
    candidates: int = 8
    rec_share: float = 0.3
    chunk_events: int = 1_000_000
    id_prefix: str = DEFAULT_ID_PREFIX

    def __post_init__(self) -> None:
        WorldIds(self.id_prefix)  # raises ValueError naming the bad prefix
        if self.users < 1 or self.items < 2 or self.events < 0:
            raise ValueError("need users >= 1, items >= 2, events >= 0")
        if self.days <= 0 or self.chunk_events < 1000:
            raise ValueError("need days > 0 and chunk_events >= 1000")
        if self.start.tzinfo is None:
            raise ValueError("start must be timezone-aware")


@dataclass
class WorldSummary:
    """What was written, for the CLI report and the manifest."""

    out: str
    users: int
    items: int
    events: int
    parts: int
    seconds: float
    type_counts: dict[str, int] = field(default_factory=dict)
    first_event: str = ""
    last_event: str = ""


def _truth_tables(items: ItemModel, users: UserModel, ids: WorldIds) -> tuple[pa.Table, pa.Table]:
    k = items.factors.shape[1]
    g = np.asarray(GENRES)
    it = pa.table(
        {
            "item_id": ids.item_ids(len(items.quality)),
            "genres": pa.array([list(g[row]) for row in items.genres], pa.list_(pa.string())),
            "factors": pa.FixedSizeListArray.from_arrays(pa.array(items.factors.ravel()), k),
            "quality": pa.array(items.quality),
            "popularity": pa.array(items.popularity),
        }
    )
    us = pa.table(
        {
            "user_id": ids.user_ids(len(users.activity)),
            "taste": pa.FixedSizeListArray.from_arrays(pa.array(users.taste.ravel()), len(GENRES)),
            "factors": pa.FixedSizeListArray.from_arrays(pa.array(users.factors.ravel()), k),
            "harshness": pa.array(users.harshness),
            "activity": pa.array(users.activity),
        }
    )
    return it, us


def _clear(out: Path) -> None:
    """Remove a previous world's files (only the ones this module writes)."""
    for name in ("catalog.jsonl", "manifest.json"):
        (out / name).unlink(missing_ok=True)
    for sub in ("events", "truth"):
        if (out / sub).is_dir():
            shutil.rmtree(out / sub)


def generate_world(
    cfg: WorldConfig,
    out: Path,
    *,
    overwrite: bool = False,
    on_events: Callable[[int], None] | None = None,
) -> WorldSummary:
    """Generate and write a world. ``on_events(n)`` is called as each chunk of n events is written."""
    t_start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    if (out / "manifest.json").exists() or (out / "events").exists():
        if not overwrite:
            raise FileExistsError(f"{out} already holds a world; pass overwrite=True (--force) to replace it")
        _clear(out)
    (out / "events").mkdir()
    (out / "truth").mkdir()

    ids = WorldIds(cfg.id_prefix)
    seeds = np.random.SeedSequence(cfg.seed).spawn(4)
    items = make_items(np.random.default_rng(seeds[0]), cfg.items, cfg.factors, cfg.zipf)
    users = make_users(np.random.default_rng(seeds[1]), cfg.users, cfg.factors)
    mu, sigma = utility_stats(np.random.default_rng(seeds[2]), users, items)
    n_items, runtimes = write_catalog(
        out / "catalog.jsonl", catalog_rows(np.random.default_rng(seeds[3]), items, ids)
    )
    it, us = _truth_tables(items, users, ids)
    pq.write_table(it, out / "truth" / "items.parquet", compression="zstd")
    pq.write_table(us, out / "truth" / "users.parquet", compression="zstd")

    arrays = WorldArrays(
        user_feat=users.features(),
        item_feat=items.features(),
        quality=items.quality,
        harshness=users.harshness.astype(np.float64),
        user_sampler=AliasSampler(users.activity),
        item_sampler=AliasSampler(items.popularity),
        runtime_sec=np.asarray(runtimes, dtype=np.float64) * 60.0,
        price=np.array([2.99, 3.99, 4.99, 9.99, 14.99])[np.arange(cfg.items) % 5],
        mu=mu,
        sigma=sigma,
        item_ids=it["item_id"].combine_chunks(),
        user_ids=us["user_id"].combine_chunks(),
        candidates=cfg.candidates,
        rec_share=cfg.rec_share,
    )

    n_windows = max(1, math.ceil(cfg.events / cfg.chunk_events))
    t0 = int(cfg.start.timestamp() * US)
    span = int(cfg.days * 86400 * US)
    bounds = [t0 + span * w // n_windows for w in range(n_windows + 1)]
    base, extra = divmod(cfg.events, n_windows)
    counts: dict[str, int] = dict.fromkeys(EVENT_TYPES, 0)
    carry: pa.Table | None = None
    parts = 0
    written = 0
    first_ts: int | None = None
    last_ts: int | None = None
    for w in range(n_windows):
        budget = base + (1 if w < extra else 0)
        rng = np.random.default_rng([cfg.seed, 1, w])
        tbl = window_events(rng, arrays, budget, bounds[w], bounds[w + 1] - bounds[w]) if budget else None
        if carry is not None and carry.num_rows:
            tbl = carry if tbl is None else _merge(carry, tbl)
        if tbl is None:
            continue
        if w < n_windows - 1:
            end = pa.scalar(bounds[w + 1], pa.timestamp("us", tz="UTC"))
            early = pc.less(tbl["occurred_at"], end)
            carry = tbl.filter(pc.invert(early))
            tbl = tbl.filter(early)
        else:
            carry = None
        if tbl.num_rows == 0:
            continue
        pq.write_table(tbl, out / "events" / f"part-{parts:05d}.parquet", compression="zstd")
        parts += 1
        written += tbl.num_rows
        vc = pc.value_counts(tbl["type"])
        for row in vc.to_pylist():
            counts[row["values"]] += row["counts"]
        ts = tbl["occurred_at"].cast(pa.int64())
        first_ts = ts[0].as_py() if first_ts is None else first_ts
        last_ts = ts[-1].as_py()
        if on_events:
            on_events(tbl.num_rows)

    summary = WorldSummary(
        out=str(out),
        users=cfg.users,
        items=n_items,
        events=written,
        parts=parts,
        seconds=round(time.perf_counter() - t_start, 3),
        type_counts=counts,
        first_event=_iso(first_ts),
        last_event=_iso(last_ts),
    )
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "config": {**asdict(cfg), "start": cfg.start.isoformat()},
        "summary": asdict(summary),
        "genres": list(GENRES),
        "ids": {
            "prefix": ids.prefix,
            "item": f"{ids.prefix}i<n>",
            "user": f"{ids.prefix}u<n>",
            "note": "n = truth row + 1; MovieLens ids are bare integers, so the two never collide",
        },
        "utility": {
            "mu": mu,
            "sigma": sigma,
            "formula": "z = (taste.genre_vec + factors_u.factors_i + quality - mu) / sigma",
        },
        "event_schema": [f"{f.name}: {f.type}" for f in EVENT_SCHEMA],
        "files": {
            "catalog": "catalog.jsonl",
            "events": "events/part-*.parquet",
            "truth": ["truth/items.parquet", "truth/users.parquet"],
        },
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return summary


def _merge(carry: pa.Table, tbl: pa.Table) -> pa.Table:
    """Merge two time-sorted tables. The carry is small and overlaps only the new window's start,
    so only that overlap is sorted (a full sort of a million string rows would cost seconds)."""
    last = pc.max(carry["occurred_at"])
    k = int(
        np.searchsorted(
            tbl["occurred_at"].cast(pa.int64()).to_numpy(), last.cast(pa.int64()).as_py(), side="right"
        )
    )
    head = pa.concat_tables([carry, tbl.slice(0, k)])
    head = head.take(pc.sort_indices(head, [("occurred_at", "ascending")]))
    return pa.concat_tables([head, tbl.slice(k)])


def _iso(us: int | None) -> str:
    return "" if us is None else datetime.fromtimestamp(us / US, UTC).isoformat()


def world_ids(out: Path) -> WorldIds:
    """The id scheme of the world in ``out``: its ``item_rows``/``user_rows`` map event ids to truth rows."""
    manifest = json.loads((out / "manifest.json").read_text())
    if manifest.get("format_version", 1) < 2:
        raise ValueError(f"{out}: a format-1 world (bare numeric ids); regenerate it with --force")
    return WorldIds(manifest["ids"]["prefix"])


def load_truth(out: Path) -> tuple[ItemModel, UserModel, float, float]:
    """Read the ground truth back (for tests and evaluation): items, users, mu, sigma. Row ``r`` is
    the ``r``-th id of ``truth/*.parquet``; :func:`world_ids` maps event ids to rows."""
    it = pq.read_table(out / "truth" / "items.parquet")
    us = pq.read_table(out / "truth" / "users.parquet")
    manifest = json.loads((out / "manifest.json").read_text())
    gidx = {g: i for i, g in enumerate(manifest["genres"])}
    genres = np.zeros((it.num_rows, len(gidx)), dtype=bool)
    for r, gl in enumerate(it["genres"].to_pylist()):
        for g in gl:
            genres[r, gidx[g]] = True

    def mat(col: pa.ChunkedArray) -> np.ndarray:
        arr = col.combine_chunks()
        return arr.flatten().to_numpy().reshape(len(arr), arr.type.list_size).astype(np.float32)

    items = ItemModel(genres, mat(it["factors"]), it["quality"].to_numpy(), it["popularity"].to_numpy())
    users = UserModel(
        mat(us["taste"]), mat(us["factors"]), us["harshness"].to_numpy(), us["activity"].to_numpy()
    )
    return items, users, manifest["utility"]["mu"], manifest["utility"]["sigma"]
