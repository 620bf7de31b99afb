"""Catalog import + embeddings against the real Postgres/pgvector.

The module runs in its own scratch database (migrated from scratch, dropped at the end), so it
never touches the items other tests or the demo put in the main database, and can run beside them.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from batch.catalog.model import CatalogItem
from batch.catalog.readers import parse_catalog
from batch.catalog.store import upsert_items
from batch.embeddings.pipeline import embed_catalog, pending_count, similar_items
from lambdarec.settings import Settings, get_settings

pytestmark = pytest.mark.integration

ML = Path(__file__).resolve().parents[1] / "data" / "movielens" / "ml-latest-small"


@pytest.fixture(scope="module")
def db(postgres: Settings) -> Iterator[Settings]:
    """Settings pointing at a fresh, migrated scratch database."""
    from infra.postgres import scratch_database
    from schemas.migrate import migrate

    with scratch_database(postgres, prefix="test_catalog") as settings:
        migrate(settings)
        yield settings


@pytest.fixture()
def conn(db: Settings) -> Iterator[psycopg.Connection]:
    with psycopg.connect(db.postgres.url) as c:
        yield c


def _embed(conn: psycopg.Connection, db: Settings, tmp: Path, **kw: object):  # type: ignore[no-untyped-def]
    return embed_catalog(conn, provider_name="tfidf", dim=db.embedding.dim, models_dir=tmp, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


def test_import_reimport_change_and_reembed(
    conn: psycopg.Connection, db: Settings, models: Path, tmp_path: Path
) -> None:
    first = upsert_items(conn, parse_catalog(ML).items)
    assert (first.inserted, first.updated, first.unchanged) == (41, 0, 0)
    assert first.genres_created == 16  # IMAX included: MovieLens lists it as a genre
    n_pairs = conn.execute("SELECT count(*) FROM item_genres").fetchone()[0]
    assert n_pairs == sum(len(i.genres) for i in parse_catalog(ML).items)
    row = conn.execute(
        "SELECT title, release_year, tmdb_id, imdb_id, movielens_id, tags FROM items WHERE item_id = '2571'"
    ).fetchone()
    assert row == ("The Matrix", 1999, 603, "tt0133093", 2571, ["artificial intelligence", "cyberpunk"])
    conn.commit()

    again = upsert_items(conn, parse_catalog(ML).items)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 41)

    e1 = _embed(conn, db, models)
    assert e1.fitted and e1.pending == 41 and e1.embedded == 41
    assert _embed(conn, db, models).pending == 0  # nothing changed: nothing to embed
    before = dict(conn.execute("SELECT item_id, embedded_at FROM items").fetchall())
    conn.commit()

    # Change one title -> exactly that item is updated and re-embedded.
    shutil.copytree(ML, tmp_path / "ml")
    movies = tmp_path / "ml" / "movies.csv"
    movies.write_text(movies.read_text().replace("Heat (1995)", "Heat: Director's Cut (1995)"))
    changed = upsert_items(conn, parse_catalog(tmp_path / "ml").items)
    assert (changed.inserted, changed.updated, changed.unchanged) == (0, 1, 40)
    assert changed.changed_ids == ["6"]
    e2 = _embed(conn, db, models)
    assert not e2.fitted and e2.pending == 1 and e2.embedded == 1
    after = dict(conn.execute("SELECT item_id, embedded_at FROM items").fetchall())
    conn.commit()
    assert [k for k in after if after[k] != before[k]] == ["6"]


def test_non_text_change_updates_row_but_keeps_embedding(
    conn: psycopg.Connection, db: Settings, models: Path
) -> None:
    items = parse_catalog(ML).items
    upsert_items(conn, items)
    _embed(conn, db, models)
    bumped = [i.model_copy(update={"popularity": 42.0}) if i.item_id == "1" else i for i in items]
    stats = upsert_items(conn, bumped)
    assert (stats.updated, stats.changed_ids) == (1, ["1"])
    assert conn.execute("SELECT popularity_score FROM items WHERE item_id = '1'").fetchone()[0] == 42.0
    conn.commit()
    assert _embed(conn, db, models).pending == 0  # popularity is not embedded text


def test_genre_change_is_an_update_and_replaces_pairs(conn: psycopg.Connection, db: Settings) -> None:
    items = parse_catalog(ML).items
    upsert_items(conn, items)
    regenred = [
        i.model_copy(update={"genres": ["Horror", "Western"]}) if i.item_id == "3" else i for i in items
    ]
    for i in regenred:  # model_copy skips validation: keep the invariant (sorted genres)
        i.genres = sorted(i.genres)
    stats = upsert_items(conn, regenred)
    assert stats.changed_ids == ["3"]
    got = conn.execute(
        "SELECT array_agg(g.name ORDER BY g.name) FROM item_genres ig JOIN genres g USING (genre_id) "
        "WHERE item_id = '3'"
    ).fetchone()[0]
    conn.commit()
    assert got == ["Horror", "Western"]
    upsert_items(conn, items)  # restore for the other tests


def test_failed_import_leaves_catalog_untouched(conn: psycopg.Connection) -> None:
    before = conn.execute("SELECT count(*), max(updated_at) FROM items").fetchone()
    conn.commit()
    new = [CatalogItem(item_id=f"new-{k}", title=f"New {k}") for k in range(5000)]

    def boom(n: int) -> None:
        raise RuntimeError("disk full (simulated)")

    with pytest.raises(RuntimeError, match="simulated"):
        upsert_items(conn, new, on_progress=boom)
    assert conn.execute("SELECT count(*), max(updated_at) FROM items").fetchone() == before
    conn.commit()


def test_duplicate_external_ids_do_not_abort(conn: psycopg.Connection) -> None:
    a = CatalogItem(item_id="dup-a", title="A", tmdb_id=862)  # Toy Story's tmdb id, already taken
    b = CatalogItem(item_id="dup-b", title="B", imdb_id="tt7777777")
    c = CatalogItem(item_id="dup-c", title="C", imdb_id="tt7777777")  # same imdb id within the import
    stats = upsert_items(conn, [a, b, c])
    assert stats.inserted == 3
    msgs = " | ".join(i.message for i in stats.issues)
    assert "tmdb_id 862 belongs to item 1" in msgs and "imdb_id tt7777777 already used by item dup-b" in msgs
    conn.execute("DELETE FROM items WHERE item_id LIKE 'dup-%'")
    conn.commit()


def test_similar_items_share_genres(conn: psycopg.Connection, db: Settings, models: Path) -> None:
    upsert_items(conn, parse_catalog(ML).items)
    _embed(conn, db, models)
    genres = {
        r[0]: set(r[1])
        for r in conn.execute(
            "SELECT ig.item_id, array_agg(g.name) FROM item_genres ig "
            "JOIN genres g USING (genre_id) GROUP BY 1"
        ).fetchall()
    }
    conn.commit()
    top = similar_items(conn, "1", k=3)  # Toy Story
    assert top[0][0] == "3114"  # Toy Story 2
    assert all(genres[iid] & genres["1"] for iid, _, _ in top)
    for q in ("2571", "1214", "593"):  # The Matrix, Alien, The Silence of the Lambs
        best = similar_items(conn, q, k=1)[0][0]
        assert genres[best] & genres[q], (q, best)
    assert pending_count(conn, "some-other-model") > 0  # a new model would re-embed everything


def test_refit_bulk_mode_rebuilds_the_index(conn: psycopg.Connection, db: Settings, models: Path) -> None:
    from batch.embeddings.pipeline import hnsw_indexes

    upsert_items(conn, parse_catalog(ML).items)
    _embed(conn, db, models)
    before = hnsw_indexes(conn)
    conn.commit()
    # the full-precision index (001) and the serving ANN's halfvec one (011): both rebuilt
    assert sorted(name.split(".")[-1] for name, _ in before) == [
        "items_embedding_half_hnsw_idx",
        "items_embedding_hnsw_idx",
    ]
    same = _embed(conn, db, models, refit=True)
    assert same.fitted and same.pending == 0  # refit on the same corpus = the same model: no work
    items = parse_catalog(ML).items
    items[0].overview = "Woody and Buzz, toys that come alive when nobody is looking."
    upsert_items(conn, items)
    st = _embed(conn, db, models, refit=True, rebuild_index="always")
    assert st.fitted and st.bulk and st.embedded == st.pending == len(items)  # new model: all items
    assert hnsw_indexes(conn) == before  # same name, same definition
    conn.commit()
    assert similar_items(conn, "1", k=1)[0][0] == "3114"
    with pytest.raises(ValueError, match="rebuild_index"):
        _embed(conn, db, models, rebuild_index="sometimes")


def test_cli_import_embed_similar(db: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lambdarec.cli import app

    monkeypatch.setenv("LAMBDAREC_POSTGRES__URL", db.postgres.url)
    monkeypatch.setenv("LAMBDAREC_VAR_DIR", str(tmp_path / "var"))
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        r = runner.invoke(app, ["catalog", "import", str(ML.parent / "ml-100k")])
        assert r.exit_code == 0, r.output
        assert "ml100k: 12 record(s)" in r.output
        r = runner.invoke(app, ["catalog", "embed"])
        assert r.exit_code == 0, r.output
        assert "embedded" in r.output or "nothing to embed" in r.output
        r = runner.invoke(app, ["catalog", "similar", "1", "-k", "3"])
        assert r.exit_code == 0, r.output
        empty = tmp_path / "empty.jsonl"
        empty.write_text("")
        r = runner.invoke(app, ["catalog", "import", str(empty)])
        assert r.exit_code == 2 and "empty" in r.output
    finally:
        get_settings.cache_clear()
