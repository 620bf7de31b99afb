"""The in-memory item catalog (serving/catalog.py) against the real Postgres: what it loads, how
it picks up new, changed and deleted items, and that the API serves a new item at once."""

from __future__ import annotations

import itertools
from datetime import timedelta

import numpy as np
import pytest

from lambdarec.settings import Settings
from serving.candidates import ItemFilters
from serving.catalog import Catalog
from serving.recommend import Services
from tests.integration.serving_support import World, api_client

pytestmark = pytest.mark.integration


async def test_load_holds_metadata_vectors_and_filters(svc: Services, world: World) -> None:
    cat = Catalog()
    await cat.load(svc.pool)
    ids = [f"{world.p}i{i}" for i in range(10)]
    async with svc.pool.connection() as conn:
        look = await cat.lookup(conn, ids)  # all in the snapshot: no query
    assert all(i in look.snap.index for i in ids)
    for n, iid in enumerate(ids):
        m = look.meta(iid)
        assert m is not None and (m.title, m.year, m.popularity) == (f"Title {n}", 1990 + n, float(n))
        assert m.genres == [world.genre]
    unit = look.unit_of(look.keys(ids))
    want = np.stack([world.emb[i] / np.linalg.norm(world.emb[i]) for i in ids])
    assert np.abs(unit - want).max() < 2e-3  # float16 storage
    np.testing.assert_allclose(look.popularity_of(look.keys(ids)), np.arange(10, dtype=float))
    # the vectorised filters agree with ItemFilters.accepts on every combination
    for genre, lo, hi in itertools.product([None, world.genre, "no-such-genre"], [None, 1993], [None, 1996]):
        f = ItemFilters(genre, lo, hi)
        metas = [look.meta(i) for i in ids]
        assert look.accepts(look.keys(ids), f).tolist() == [m is not None and f.accepts(m) for m in metas]


async def test_new_items_are_fetched_at_once_and_refresh_applies_changes(
    svc: Services,
    world: World,
) -> None:
    cat = Catalog(refresh_sec=60, margin=timedelta(0))
    await cat.load(svc.pool)
    assert await cat.refresh(svc.pool) == 0  # nothing changed: nothing re-read
    before = len(cat.snapshot)
    new = f"{world.p}new"
    v = np.random.default_rng(1).standard_normal(svc.settings.embedding.dim).astype(np.float32)
    world.conn.execute(
        "INSERT INTO items (item_id, title, release_year, popularity_score, embedding) "
        "VALUES (%s, 'Fresh', 2001, 5, %s)",
        (new, v),
    )
    async with svc.pool.connection() as conn:
        look = await cat.lookup(conn, [new, f"{world.p}missing"])
    assert new not in look.snap.index  # not loaded yet, but fetched with the list
    assert look.meta(new) is not None and look.meta(new).title == "Fresh"  # type: ignore[union-attr]
    assert look.meta(f"{world.p}missing") is None
    assert np.abs(look.unit_of(look.keys([new]))[0] - v / np.linalg.norm(v)).max() < 1e-6
    assert look.accepts(look.keys([new, f"{world.p}missing"]), ItemFilters(year_from=2000)).tolist() == [
        True,
        False,
    ]

    world.conn.execute(
        "UPDATE items SET title = 'Renamed', popularity_score = 42 WHERE item_id = %s", (f"{world.p}i3",)
    )
    applied = await cat.refresh(svc.pool)
    assert applied == 2  # the new item and the renamed one
    snap = cat.snapshot
    assert len(snap) == before + 1 and new in snap.index
    assert snap.meta(snap.index[f"{world.p}i3"]).title == "Renamed"
    assert snap.popularity[snap.index[f"{world.p}i3"]] == 42
    assert snap.meta(snap.index[f"{world.p}i4"]).title == "Title 4"  # untouched rows kept
    np.testing.assert_allclose(
        snap.vectors[snap.index[new]].astype(np.float32), v / np.linalg.norm(v), atol=2e-3
    )

    world.conn.execute("DELETE FROM items WHERE item_id = %s", (f"{world.p}i9",))
    await cat.refresh(svc.pool)  # the count went down: rebuilt
    assert f"{world.p}i9" not in cat.snapshot.index and new in cat.snapshot.index


async def test_refresh_pages_through_rows_sharing_one_updated_at(
    svc: Services, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One UPDATE stamps all its rows with the same ``now()``: the refresh's keyset pages over
    (updated_at, item_id) must neither repeat nor skip rows at a page boundary."""
    cat = Catalog(refresh_sec=60, margin=timedelta(0))
    await cat.load(svc.pool)
    monkeypatch.setattr("serving.catalog._CHUNK", 3)  # 8 changed rows: pages of 3, 3 and 2
    changed = [f"{world.p}i{n}" for n in range(8)]
    world.conn.execute("UPDATE items SET title = 'Bulk ' || item_id WHERE item_id = ANY(%s)", (changed,))
    assert await cat.refresh(svc.pool) == 8
    snap = cat.snapshot
    assert [snap.meta(snap.index[i]).title for i in changed] == [f"Bulk {i}" for i in changed]
    assert snap.meta(snap.index[f"{world.p}i9"]).title == "Title 9"


async def test_api_serves_an_item_inserted_after_the_catalog_loaded(postgres: Settings, world: World) -> None:
    user = world.user(preference_vector=world.emb[f"{world.p}i4"])
    async with api_client(postgres) as c:
        svc: Services = c.app.state.services  # type: ignore[attr-defined]
        # no background load or refresh may pick the new item up before the request asks for it
        await svc.catalog.stop()
        await svc.catalog.load(svc.pool)
        assert f"{world.p}i4" in svc.catalog.snapshot.index
        new = f"{world.p}twin"  # the user's taste vector itself: the nearest item of all
        world.conn.execute(
            "INSERT INTO items (item_id, title, release_year, popularity_score, embedding) "
            "VALUES (%s, 'Twin', 2001, 0, %s)",
            (new, world.emb[f"{world.p}i4"]),
        )
        body = (await c.get(f"/v1/users/{user}/recommendations?k=5&exclude_seen=false")).json()
        assert new not in svc.catalog.snapshot.index
        got = {i["item_id"]: i for i in body["items"]}
        assert new in got and got[new]["title"] == "Twin" and got[new]["source"] == "realtime"
