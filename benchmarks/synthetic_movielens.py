"""A small deterministic MovieLens-shaped interaction generator (for tests and benchmarks).

Why: ml-100k cannot be downloaded here and CI must not depend on an optional wheel, yet the
evaluation code needs data with MovieLens' shape — long-tailed item popularity, users with at
least 20 ratings and a heavy-tailed activity distribution, and real taste structure (so a good
model measurably beats popularity). Defaults give 943 users x 1682 items x 100,000 ratings.

Model: items belong softly to ``n_genres`` genres (sparse Dirichlet), users like a few genres;
``P(user picks item) ∝ popularity · (taste · genres)^2`` (popularity ~ 1/rank); ratings are
3 + user bias + item quality + taste affinity, rounded to 1..5; timestamps fall in each user's
30-day active period within ml-100k's date range.
(A bigger world generator lives in ``batch/world``; this one stays tiny and dependency-free.)
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def movielens_like(
    n_users: int = 943,
    n_items: int = 1682,
    n_ratings: int = 100_000,
    *,
    n_genres: int = 18,
    min_per_user: int = 20,
    seed: int = 7,
) -> pd.DataFrame:
    """``user_id, item_id, rating, timestamp`` rows (ids start at 1, like ml-100k)."""
    if n_ratings < n_users * min_per_user or n_ratings > n_users * n_items // 2:
        raise ValueError("n_ratings must be between n_users * min_per_user and half the matrix")
    rng = np.random.default_rng(seed)
    # popularity: Zipf-like with a random permutation so ids carry no signal
    popularity = 1.0 / np.arange(1, n_items + 1) ** 1.0
    popularity = popularity[rng.permutation(n_items)]
    item_genres = rng.dirichlet(np.full(n_genres, 0.15), size=n_items)
    user_taste = rng.dirichlet(np.full(n_genres, 0.3), size=n_users)
    affinity = user_taste @ item_genres.T  # (n_users, n_items), each row sums to ~ n_items / n_genres
    # activity: lognormal, rescaled so that counts sum to n_ratings with the floor min_per_user
    raw = rng.lognormal(0.0, 1.0, n_users)
    extra = n_ratings - n_users * min_per_user
    counts = min_per_user + np.floor(raw / raw.sum() * extra).astype(np.int64)
    cap = n_items // 2
    counts = np.minimum(counts, cap)
    while (short := n_ratings - int(counts.sum())) > 0:  # hand the remainder to users below the cap
        open_users = np.flatnonzero(counts < cap)
        counts[rng.choice(open_users, size=min(short, open_users.size), replace=False)] += 1
    users, items = [], []
    for u in range(n_users):
        w = popularity * (affinity[u] + 1e-3) ** 2
        picked = rng.choice(n_items, size=counts[u], replace=False, p=w / w.sum())
        users.append(np.full(counts[u], u))
        items.append(picked)
    u_arr = np.concatenate(users)
    i_arr = np.concatenate(items)
    quality = rng.normal(0, 0.5, n_items)
    bias = rng.normal(0, 0.4, n_users)
    aff = affinity[u_arr, i_arr] / affinity.mean()
    rating = np.clip(
        np.rint(3.0 + bias[u_arr] + quality[i_arr] + 0.5 * np.log(aff) + rng.normal(0, 0.6, len(u_arr))), 1, 5
    )
    start = rng.integers(874_724_710, 893_286_638, n_users)  # ml-100k's date range (1997-98)
    ts = start[u_arr] + rng.integers(0, 30 * 86400, len(u_arr))
    df = pd.DataFrame(
        {"user_id": u_arr + 1, "item_id": i_arr + 1, "rating": rating.astype(np.int64), "timestamp": ts}
    )
    return df.sample(frac=1.0, random_state=seed).reset_index(
        drop=True
    )  # file order is shuffled, like u.data
