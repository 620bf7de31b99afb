"""The latent world: items with genres, factors, quality and popularity; users with tastes.

Utility of item ``i`` for user ``u`` (the ground truth every generated event follows)::

    s(u, i) = taste_u . genre_i / sqrt(|genres_i|)  +  factors_u . factors_i  +  quality_i
    z(u, i) = (s(u, i) - mu) / sigma                  # standardised over random (u, i) pairs

Genre tastes make behaviour explainable by content (what content embeddings and genre-aware
models can learn); the latent factors add structure only collaborative filtering can recover
(what ALS is for); quality is the item bias every user shares. ``z`` drives which items a user
picks, how far they get through the funnel (click, play, ...) and their ratings.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batch.world.vocab import GENRE_FREQ, GENRE_PAIRS, GENRES

#: Default namespace of world ids: items ``wi1..wiM``, users ``wu1..wuN``.
DEFAULT_ID_PREFIX = "w"
_PREFIX_RE = re.compile(r"[A-Za-z0-9_.-]{0,32}")


@dataclass(frozen=True)
class WorldIds:
    """How a world names its rows: item row ``i`` is ``f"{prefix}i{i + 1}"``, user row ``u`` is
    ``f"{prefix}u{u + 1}"`` (``wi1``, ``wu1`` with the default prefix ``w``).

    Why not ``"1".."N"``: MovieLens ids are bare integers, and the ``items`` table, the lake and
    ``user_profiles`` are shared by every import, so a world would silently overwrite (or merge
    its events into) MovieLens rows with the same numbers. An id with a letter in it can never be
    a MovieLens id; the prefix also keeps two worlds apart in one database (``--id-prefix w2``).
    The ``i``/``u`` letter makes an id self-describing in logs and reports, and lets a reader
    split prefix and row unambiguously (the row is the trailing digits).
    """

    prefix: str = DEFAULT_ID_PREFIX

    def __post_init__(self) -> None:
        if not _PREFIX_RE.fullmatch(self.prefix):
            raise ValueError(
                f"id prefix {self.prefix!r} must be 0-32 characters of A-Z a-z 0-9 _ . - "
                "(it becomes part of URLs, Kafka keys and Redis keys)"
            )

    def item_id(self, row: int) -> str:
        return f"{self.prefix}i{row + 1}"

    def user_id(self, row: int) -> str:
        return f"{self.prefix}u{row + 1}"

    def item_ids(self, n: int) -> pa.StringArray:
        """Every item id in row order (a lookup table: ``item_ids(m).take(rows)``)."""
        return pa.array([f"{self.prefix}i{r}" for r in range(1, n + 1)], pa.string())

    def user_ids(self, n: int) -> pa.StringArray:
        return pa.array([f"{self.prefix}u{r}" for r in range(1, n + 1)], pa.string())

    def item_rows(self, ids: Iterable[str] | pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Row indexes of item ids (for ground-truth lookups); ValueError on a foreign id."""
        return self._rows(ids, "i")

    def user_rows(self, ids: Iterable[str] | pa.Array | pa.ChunkedArray) -> np.ndarray:
        return self._rows(ids, "u")

    def _rows(self, ids: Iterable[str] | pa.Array | pa.ChunkedArray, kind: str) -> np.ndarray:
        arr = ids if isinstance(ids, pa.Array | pa.ChunkedArray) else pa.array(list(ids), pa.string())
        head = self.prefix + kind
        ok = pc.and_(pc.starts_with(arr, head), pc.match_substring_regex(arr, rf"^.{{{len(head)}}}[0-9]+$"))
        if not pc.all(ok).as_py():
            bad = pc.filter(arr, pc.invert(ok))[0].as_py()
            raise ValueError(f"{bad!r} is not a world id of the form {head}<n> (prefix {self.prefix!r})")
        rows = pc.cast(pc.utf8_slice_codeunits(arr, len(head)), pa.int64())
        return np.asarray(rows.to_numpy(zero_copy_only=False), dtype=np.int64) - 1


#: std of each latent factor entry: factors_u . factors_i then has std ~ K * var = 0.6 for K=16.
FACTOR_STD = float(np.sqrt(0.6 / 4.0))


@dataclass
class ItemModel:
    """Ground truth of the catalog; row ``i`` is item ``WorldIds(prefix).item_id(i)`` (``wi<i+1>``)."""

    genres: np.ndarray  # (M, G) bool
    factors: np.ndarray  # (M, K) float32
    quality: np.ndarray  # (M,) float32
    popularity: np.ndarray  # (M,) float64, sums to 1 (Zipf over a random, quality-leaning ranking)

    @property
    def genre_vec(self) -> np.ndarray:
        cnt = self.genres.sum(axis=1, keepdims=True).clip(min=1)
        return (self.genres / np.sqrt(cnt)).astype(np.float32)

    def features(self) -> np.ndarray:
        """``[genre_vec | factors]`` (M, G+K): dotted with :meth:`UserModel.features` gives s - quality."""
        return np.hstack([self.genre_vec, self.factors]).astype(np.float32)


@dataclass
class UserModel:
    """Ground truth of users; row ``u`` is user ``WorldIds(prefix).user_id(u)`` (``wu<u+1>``)."""

    taste: np.ndarray  # (N, G) float32
    factors: np.ndarray  # (N, K) float32
    harshness: np.ndarray  # (N,) float32: per-user rating offset (some users rate low)
    activity: np.ndarray  # (N,) float64, sums to 1 (lognormal: a few heavy users)

    def features(self) -> np.ndarray:
        return np.hstack([self.taste, self.factors]).astype(np.float32)


def make_items(rng: np.random.Generator, m: int, k: int, zipf: float) -> ItemModel:
    """Items with 1-4 genres (MovieLens mix, co-occurring pairs boosted), factors, quality, popularity."""
    g = len(GENRES)
    prior = np.asarray(GENRE_FREQ, dtype=np.float64)
    prior /= prior.sum()
    compat = np.ones((g, g))
    idx = {name: i for i, name in enumerate(GENRES)}
    for a, b in GENRE_PAIRS:
        compat[idx[a], idx[b]] = compat[idx[b], idx[a]] = 6.0
    n_genres = rng.choice([1, 2, 3, 4], size=m, p=[0.35, 0.35, 0.22, 0.08])
    primary = np.searchsorted(np.cumsum(prior), rng.random(m) * prior.sum()).clip(max=g - 1)
    # Gumbel top-k over log(prior * compat[primary]) picks the secondary genres without a loop.
    logits = np.log(prior)[None, :] + np.log(compat[primary]) + rng.gumbel(size=(m, g))
    logits[np.arange(m), primary] = -np.inf
    order = np.argsort(-logits, axis=1)
    genres = np.zeros((m, g), dtype=bool)
    genres[np.arange(m), primary] = True
    for j in range(3):
        sel = n_genres > j + 1
        genres[np.flatnonzero(sel), order[sel, j]] = True
    factors = (rng.standard_normal((m, k)) * FACTOR_STD).astype(np.float32)
    quality = (rng.standard_normal(m) * 0.5).astype(np.float32)
    # Popularity: Zipf(zipf) over a ranking that leans on quality (good items tend to be popular).
    rank_key = quality + rng.standard_normal(m) * 1.0
    ranks = np.empty(m, dtype=np.int64)
    ranks[np.argsort(-rank_key)] = np.arange(1, m + 1)
    pop = ranks.astype(np.float64) ** (-zipf)
    return ItemModel(genres, factors, quality, pop / pop.sum())


def make_users(rng: np.random.Generator, n: int, k: int) -> UserModel:
    """Users who love 1-3 genres, dislike one, have latent factors, a rating offset and an activity level."""
    g = len(GENRES)
    prior = np.asarray(GENRE_FREQ, dtype=np.float64) ** 0.5  # tastes are less skewed than supply
    prior /= prior.sum()
    taste = rng.standard_normal((n, g)) * 0.35
    n_fav = rng.choice([1, 2, 3], size=n, p=[0.3, 0.45, 0.25])
    keys = np.log(prior)[None, :] + rng.gumbel(size=(n, g))
    order = np.argsort(-keys, axis=1)
    for j in range(3):
        sel = np.flatnonzero(n_fav > j)
        taste[sel, order[sel, j]] += 1.4
    taste[np.arange(n), order[:, -1]] -= 1.0  # the least likely genre by prior: a disliked one
    factors = (rng.standard_normal((n, k)) * FACTOR_STD).astype(np.float32)
    harshness = (rng.standard_normal(n) * 0.35).astype(np.float32)
    activity = rng.lognormal(0.0, 1.1, size=n)
    return UserModel(taste.astype(np.float32), factors, harshness, activity / activity.sum())


def utility_stats(
    rng: np.random.Generator, users: UserModel, items: ItemModel, pairs: int = 200_000
) -> tuple[float, float]:
    """(mu, sigma) of s(u, i) over random pairs: the standardisation of z."""
    u = rng.integers(0, len(users.activity), pairs)
    i = rng.integers(0, len(items.quality), pairs)
    s = np.einsum("nd,nd->n", users.features()[u], items.features()[i]) + items.quality[i]
    return float(s.mean()), float(s.std() or 1.0)


def utility(
    users: UserModel, items: ItemModel, u: np.ndarray, i: np.ndarray, mu: float, sigma: float
) -> np.ndarray:
    """z(u, i) for paired index arrays (for tests and evaluation)."""
    s = np.einsum("nd,nd->n", users.features()[u], items.features()[i]) + items.quality[i]
    return ((s - mu) / sigma).astype(np.float32)
