"""Catalog rows for the synthetic items: titles, overviews, tags and metadata that fit the genres.

Written as JSONL with the seed's movie fields, so ``lambdarec catalog import`` reads it like any
other JSONL catalog (the world is also a test of the importer).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from batch.world import vocab as V
from batch.world.model import ItemModel, WorldIds

_NR = 24  # random integers drawn per item (indexes into word lists)


def _pick(lst: list[str] | tuple[str, ...], r: int) -> str:
    return lst[r % len(lst)]


def _title(gs: list[str], r: np.ndarray) -> str:
    a, b = gs[0], gs[-1]
    noun, noun2 = _pick(V.TITLE_NOUNS[a], r[0]), _pick(V.TITLE_NOUNS[b], r[1])
    adj = _pick(V.TITLE_ADJS[b], r[2])
    first = _pick(V.FIRST_NAMES, r[3])
    form = r[4] % 8
    if form == 0:
        t = f"The {adj} {noun}"
    elif form == 1:
        t = f"{noun} of the {noun2}" if noun != noun2 else f"{adj} {noun}"
    elif form == 2:
        t = f"{adj} {noun}"
    elif form == 3:
        t = f"{first}'s {noun}"
    elif form == 4:
        t = f"The {noun}"
    elif form == 5:
        t = f"{noun}: {adj} {noun2}" if noun != noun2 else f"{noun}: {adj}"
    elif form == 6:
        t = f"{adj} {noun} {2 + r[5] % 3}"  # a sequel
    else:
        t = f"{noun} in {_pick(['Paris', 'Tokyo', 'Texas', 'Winter', 'the Dark', 'Space', 'Rome'], r[5])}"
    return t


def _overview(gs: list[str], r: np.ndarray) -> str:
    a = gs[0]
    b = gs[1] if len(gs) > 1 else gs[0]
    c = gs[2] if len(gs) > 2 else a
    s1 = (
        f"{_pick(V.OPENERS, r[6])} {_pick(V.ROLES[a], r[7])} {_pick(V.DISCOVER, r[8])} "
        f"{_pick(V.OBJECTS[b], r[9])}, they {_pick(V.TURNS, r[10])} {_pick(V.GOALS[a], r[11])} "
        f"{_pick(V.SETTINGS[c], r[12])}."
    )
    s2 = (
        f"{_pick(V.TWIST, r[13])}, {_pick(V.ROLES[b], r[14])} and {_pick(V.OBJECTS[c], r[15])} "
        f"stand in the way as they try to {_pick(V.GOALS[b], r[16])}."
    )
    return f"{s1} {s2}" if r[17] % 4 else s1


def _name(r1: int, r2: int) -> str:
    return f"{_pick(V.FIRST_NAMES, r1)} {_pick(V.LAST_NAMES, r2)}"


def catalog_rows(
    rng: np.random.Generator, items: ItemModel, ids: WorldIds | None = None
) -> Iterator[dict[str, Any]]:
    """One seed-style dict per item, in item order (deterministic for the rng state); item ids
    follow ``ids`` (default prefix: ``wi1``, ``wi2``, ...)."""
    ids = ids or WorldIds()
    m = len(items.quality)
    r = rng.integers(0, 2**31 - 1, size=(m, _NR))
    years = (2025 - np.floor(rng.exponential(16.0, size=m))).clip(1925, 2025).astype(int)
    day = rng.integers(0, 365, size=m)
    lang = rng.choice(len(V.LANGUAGES), size=m, p=V.LANGUAGE_P)
    runtime_noise = rng.normal(0, 16, size=m)
    votes = np.maximum(
        0, (items.popularity / items.popularity.max()) * 30000 * rng.lognormal(0, 0.3, size=m)
    ).astype(int)
    gnames = np.asarray(V.GENRES)
    for i in range(m):
        gs = [str(x) for x in gnames[items.genres[i]]]
        # Primary genre first (the first set flag in GENRES order is not the primary: reorder by
        # the random draw so titles do not all come from "Action").
        rot = int(r[i, 18]) % len(gs)
        gs = gs[rot:] + gs[:rot]
        ri = r[i]
        rel = date(int(years[i]), 1, 1) + timedelta(days=int(day[i]))
        if rel.year != years[i]:
            rel = date(int(years[i]), 12, 31)
        tags = sorted({_pick(V.TAGS[g], int(ri[19 + j])) for j, g in enumerate(gs[:3]) if ri[22] % (j + 2)})
        rt = int(np.clip(V.RUNTIME_MEAN.get(gs[0], 104) + runtime_noise[i], 60, 220))
        cast = [_name(int(ri[20]) + j * 7, int(ri[21]) + j * 13) for j in range(3 + int(ri[23]) % 3)]
        item_id = ids.item_id(i)
        yield {
            "item_id": item_id,
            "title": _title(gs, ri),
            "original_title": "",
            "tagline": _pick(V.TAGLINES, int(ri[17])) if ri[18] % 2 else "",
            "overview": _overview(gs, ri),
            "genres": gs,
            "tags": tags,
            "release_date": rel.isoformat(),
            "runtime": rt,
            "director": _name(int(ri[22]), int(ri[23])),
            "main_cast": cast,
            "original_language": V.LANGUAGES[int(lang[i])],
            "adult": False,
            "vote_average": round(float(np.clip(6.3 + 1.4 * items.quality[i], 1.0, 9.6)), 1),
            "vote_count": int(votes[i]),
            "popularity": round(float(items.popularity[i] * m * 10), 4),
            "poster_path": f"/synthetic/poster/{item_id}.jpg",
            "backdrop_path": f"/synthetic/backdrop/{item_id}.jpg",
        }


def write_catalog(path: Path, rows: Iterator[dict[str, Any]]) -> tuple[int, list[int]]:
    """Write JSONL; returns (count, runtimes) - runtimes feed watch durations."""
    n = 0
    runtimes: list[int] = []
    with path.open("w", encoding="utf-8", newline="\n") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")))
            fh.write("\n")
            runtimes.append(row["runtime"])
            n += 1
    return n, runtimes
