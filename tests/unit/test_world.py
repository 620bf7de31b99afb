"""The synthetic world: deterministic, complete, time-ordered, and faithful to its latent model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from batch.catalog.readers import parse_catalog
from batch.world import (
    EVENT_SCHEMA,
    EVENT_TYPES,
    WorldConfig,
    WorldIds,
    generate_world,
    load_truth,
    world_ids,
)
from batch.world import vocab as V
from batch.world.events import AliasSampler, uuid4_strings
from batch.world.model import utility
from schemas.events import from_mapping

CFG = WorldConfig(users=400, items=300, events=30_000, seed=7, chunk_events=7_000)


def _events(out: Path) -> pa.Table:
    return ds.dataset(out / "events", format="parquet").to_table()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("world")
    generate_world(CFG, out)
    return out


def test_exact_count_schema_and_files(world: Path) -> None:
    t = _events(world)
    assert t.num_rows == CFG.events
    assert t.schema.equals(EVENT_SCHEMA)
    assert len(list((world / "events").glob("part-*.parquet"))) == 5  # ceil(30k / 7k) windows
    manifest = json.loads((world / "manifest.json").read_text())
    assert manifest["summary"]["events"] == CFG.events
    assert sum(manifest["summary"]["type_counts"].values()) == CFG.events


def test_same_seed_identical_different_seed_different(world: Path, tmp_path: Path) -> None:
    generate_world(CFG, tmp_path / "again")
    assert _events(tmp_path / "again").equals(_events(world))
    assert (tmp_path / "again" / "catalog.jsonl").read_bytes() == (world / "catalog.jsonl").read_bytes()
    other = WorldConfig(**{**CFG.__dict__, "seed": 8})
    generate_world(other, tmp_path / "other")
    a, b = _events(world), _events(tmp_path / "other")
    assert not a.equals(b)
    assert a["user_id"].to_pylist()[:100] != b["user_id"].to_pylist()[:100]


def test_refuses_to_overwrite_without_force(world: Path) -> None:
    with pytest.raises(FileExistsError):
        generate_world(CFG, world)


def test_every_event_type_with_sensible_rates(world: Path) -> None:
    counts = {r["values"]: r["counts"] for r in pc.value_counts(_events(world)["type"]).to_pylist()}
    assert set(counts) == set(EVENT_TYPES)
    share = {k: v / CFG.events for k, v in counts.items()}
    assert 0.3 < share["view"] < 0.6  # most impressions lead nowhere
    assert share["view"] > share["click"] > share["play"] > share["rate"] > share["favorite"]
    assert share["like"] > share["dislike"]  # people mostly pick what they like
    assert min(share.values()) > 0.001


def test_time_ordered_and_sessions_consistent(world: Path) -> None:
    t = _events(world)
    ts = t["occurred_at"].cast(pa.int64()).to_numpy()
    assert (np.diff(ts) >= 0).all()
    start = int(CFG.start.timestamp() * 1e6)
    assert ts[0] >= start
    df = t.select(["session_id", "user_id", "source", "rec_id", "position"]).to_pandas()
    assert (df.groupby("session_id")["user_id"].nunique() == 1).all()
    assert (df.groupby("session_id")["source"].nunique() == 1).all()
    assert (df["rec_id"].isna() == df["position"].isna()).all()
    assert df["rec_id"].notna().mean() > 0.2  # some events respond to served lists
    assert set(df["source"]) == {"web", "mobile", "email", "push"}


def test_funnel_order_within_an_engagement(world: Path) -> None:
    """Nobody plays what they have not clicked: per (session, item), play comes after click."""
    df = _events(world).select(["session_id", "item_id", "type", "occurred_at"]).to_pandas()
    first = df.groupby(["session_id", "item_id", "type"])["occurred_at"].min().unstack()
    both = first.dropna(subset=["click", "play"])
    assert len(both) > 100 and (both["click"] <= both["play"]).all()
    rated = first.dropna(subset=["rate"])
    assert rated["play"].notna().all() and (rated["play"] <= rated["rate"]).all()


def test_rows_satisfy_the_event_contract(world: Path) -> None:
    for row in _events(world).slice(0, 3000).to_pylist():
        row = {k: v for k, v in row.items() if v is not None}
        row["context"] = json.loads(row["context"])
        ev = from_mapping(row, strict=False)
        assert (ev.rating is not None) == (ev.type == "rate")


def test_ratings_follow_the_latent_model(world: Path) -> None:
    t = _events(world)
    r = t.filter(pc.equal(t["type"], "rate"))
    items, users, mu, sigma = load_truth(world)
    ids = world_ids(world)
    u, i = ids.user_rows(r["user_id"]), ids.item_rows(r["item_id"])
    z = utility(users, items, u, i, mu, sigma)
    ratings = r["rating"].to_numpy()
    assert set(np.unique(ratings)) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert np.corrcoef(ratings, z)[0, 1] > 0.5
    assert 3.0 < ratings.mean() < 4.2  # MovieLens-like average


def test_choices_follow_taste(world: Path) -> None:
    """Items users play have higher utility than random items of similar popularity."""
    t = _events(world)
    p = t.filter(pc.equal(t["type"], "play"))
    items, users, mu, sigma = load_truth(world)
    ids = world_ids(world)
    u, i = ids.user_rows(p["user_id"]), ids.item_rows(p["item_id"])
    rng = np.random.default_rng(0)
    shuffled = rng.permutation(i)  # same popularity mix, random pairing
    assert (
        utility(users, items, u, i, mu, sigma).mean()
        > utility(users, items, u, shuffled, mu, sigma).mean() + 0.5
    )


def test_popularity_is_heavy_tailed(world: Path) -> None:
    rows = world_ids(world).item_rows(_events(world)["item_id"])
    counts = np.sort(np.bincount(rows, minlength=CFG.items))[::-1]
    top10 = counts[: CFG.items // 10].sum() / counts.sum()
    assert top10 > 0.4  # uniform would be 0.1
    ranks = np.arange(1, len(counts) + 1)
    nz = counts > 0
    slope = np.polyfit(np.log(ranks[nz][:100]), np.log(counts[nz][:100]), 1)[0]
    assert -1.6 < slope < -0.4  # roughly Zipf over the head


def test_catalog_matches_genres_and_imports(world: Path) -> None:
    res = parse_catalog(world / "catalog.jsonl")
    assert len(res.items) == CFG.items and res.skipped == 0
    truth, _, _, _ = load_truth(world)
    names = np.asarray(V.GENRES)
    assert [it.item_id for it in res.items] == [f"wi{n}" for n in range(1, CFG.items + 1)]
    for it, flags in zip(res.items, truth.genres, strict=True):
        assert sorted(it.genres) == sorted(names[flags].tolist())
        text = it.overview.lower()
        words = {w.lower() for g in it.genres for w in V.ROLES[g] + V.OBJECTS[g] + V.GOALS[g] + V.SETTINGS[g]}
        assert any(w in text for w in words), (it.genres, it.overview)


def test_ids_are_namespaced_and_map_back_to_truth_rows(world: Path, tmp_path: Path) -> None:
    """World ids can never be MovieLens ids (bare integers): items wi<n>, users wu<n>, n = row + 1."""
    t = _events(world)
    assert pc.all(pc.match_substring_regex(t["item_id"], r"^wi[1-9][0-9]*$")).as_py()
    assert pc.all(pc.match_substring_regex(t["user_id"], r"^wu[1-9][0-9]*$")).as_py()
    truth = pq.read_table(world / "truth" / "items.parquet")
    assert truth["item_id"].to_pylist() == [f"wi{n}" for n in range(1, CFG.items + 1)]
    users = pq.read_table(world / "truth" / "users.parquet")["user_id"].to_pylist()
    assert users[0] == "wu1" and users[-1] == f"wu{CFG.users}"
    manifest = json.loads((world / "manifest.json").read_text())
    assert manifest["config"]["id_prefix"] == "w" and manifest["ids"]["item"] == "wi<n>"
    ids = world_ids(world)
    assert ids.item_rows(["wi1", "wi300"]).tolist() == [0, 299]
    for bad in (["1"], ["wu1"], ["wi"], ["wix"], ["xwi1"]):
        with pytest.raises(ValueError, match="not a world id"):
            ids.item_rows(bad)

    # Another prefix: same events otherwise (the prefix does not touch the random streams).
    other = WorldConfig(**{**CFG.__dict__, "id_prefix": "w2", "events": 2000})
    generate_world(other, tmp_path / "w2")
    base = WorldConfig(**{**CFG.__dict__, "events": 2000})
    generate_world(base, tmp_path / "w")
    a, b = _events(tmp_path / "w"), _events(tmp_path / "w2")
    assert b["item_id"].to_pylist() == ["w2" + x[1:] for x in a["item_id"].to_pylist()]
    assert b["user_id"].to_pylist() == ["w2" + x[1:] for x in a["user_id"].to_pylist()]
    assert a.drop(["item_id", "user_id"]).equals(b.drop(["item_id", "user_id"]))
    assert (
        world_ids(tmp_path / "w2").user_rows(b["user_id"]).tolist()
        == world_ids(tmp_path / "w").user_rows(a["user_id"]).tolist()
    )
    for bad_prefix in ("w/", "a b", "x" * 33):
        with pytest.raises(ValueError, match="id prefix"):
            WorldIds(bad_prefix)
        with pytest.raises(ValueError, match="id prefix"):
            WorldConfig(id_prefix=bad_prefix)


def test_uuid4_strings_are_valid_and_seeded() -> None:
    import uuid

    a = uuid4_strings(np.random.default_rng(1), 1000).to_pylist()
    assert a == uuid4_strings(np.random.default_rng(1), 1000).to_pylist()
    assert len(set(a)) == 1000
    assert all(uuid.UUID(x).version == 4 and str(uuid.UUID(x)) == x for x in a)


def test_alias_sampler_matches_weights() -> None:
    w = np.array([0.5, 0.25, 0.125, 0.125])
    draws = AliasSampler(w).sample(np.random.default_rng(0), 200_000)
    assert np.allclose(np.bincount(draws, minlength=4) / len(draws), w, atol=0.005)


def test_zero_events_and_bad_config(tmp_path: Path) -> None:
    s = generate_world(WorldConfig(users=5, items=5, events=0), tmp_path / "w")
    assert s.events == 0 and (tmp_path / "w" / "catalog.jsonl").exists()
    with pytest.raises(ValueError):
        WorldConfig(items=1)


def test_cli_generate(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from lambdarec.cli import app

    args = ["world", "generate", "--users", "20", "--items", "30", "--events", "500", "--out", str(tmp_path)]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "rate" in r.output and (tmp_path / "catalog.jsonl").exists()
    assert _events(tmp_path).num_rows == 500
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and "--force" in r.output
    assert CliRunner().invoke(app, [*args, "--force", "--start", "2025-02-30"]).exit_code == 2
    r = CliRunner().invoke(app, [*args, "--force", "--id-prefix", "demo2"])
    assert r.exit_code == 0, r.output
    assert set(_events(tmp_path)["item_id"].to_pylist()) <= {f"demo2i{n}" for n in range(1, 31)}
    r = CliRunner().invoke(app, [*args, "--force", "--id-prefix", "bad prefix"])
    assert r.exit_code == 2 and "id prefix" in r.output
