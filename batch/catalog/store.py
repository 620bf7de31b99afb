"""Write a parsed catalog into Postgres (``items``, ``genres``, ``item_genres``) in one transaction.

Why one transaction with a staging table: a catalog import either lands completely or not at all
(an error halfway leaves the previous catalog untouched), and COPY into a temporary table is the
fastest way to move tens of thousands of rows into Postgres; the set-based ``INSERT ... ON CONFLICT
DO UPDATE ... WHERE <something changed>`` then touches only rows that differ, which is what makes a
re-import of an unchanged file a no-op (0 updated, no dead tuples, embeddings untouched).

Change detection compares the catalog columns themselves (``IS DISTINCT FROM``), and genres via
``content_hash`` (genres live in ``item_genres``, and they are part of the embedded text that
``content_hash`` covers). ``content_hash`` alone is not enough: it deliberately ignores fields that
do not affect the embedding (popularity, votes, posters), and those must still be updated.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from batch.catalog.model import CatalogItem, ParseIssue, slugify

#: TMDB's genre ids for the names MovieLens shares with it (MovieLens' "Sci-Fi" is TMDB's
#: "Science Fiction", "Children" is closest to "Family"); other genres get NULL.
TMDB_GENRE_IDS = {
    "Action": 28,
    "Adventure": 12,
    "Animation": 16,
    "Comedy": 35,
    "Crime": 80,
    "Documentary": 99,
    "Drama": 18,
    "Children": 10751,
    "Fantasy": 14,
    "History": 36,
    "Horror": 27,
    "Musical": 10402,
    "Mystery": 9648,
    "Romance": 10749,
    "Sci-Fi": 878,
    "TV Movie": 10770,
    "Thriller": 53,
    "War": 10752,
    "Western": 37,
}

# (column in items, staging type, CatalogItem -> value). Order = COPY order.
_COLUMNS: list[tuple[str, str, Callable[[CatalogItem], Any]]] = [
    ("item_id", "text", lambda i: i.item_id),
    ("title", "text", lambda i: i.title),
    ("original_title", "text", lambda i: i.original_title or None),
    ("overview", "text", lambda i: i.overview),
    ("tagline", "text", lambda i: i.tagline),
    ("release_date", "date", lambda i: i.release_date),
    ("release_year", "smallint", lambda i: i.year),
    ("runtime", "integer", lambda i: i.runtime),
    ("director", "text", lambda i: i.director),
    ("main_cast", "jsonb", lambda i: json.dumps(i.main_cast, ensure_ascii=False)),
    ("original_language", "text", lambda i: i.original_language or None),
    ("adult", "boolean", lambda i: i.adult),
    ("tags", "text[]", lambda i: i.tags),
    ("tmdb_rating", "real", lambda i: i.tmdb_rating),
    ("tmdb_vote_count", "integer", lambda i: i.tmdb_vote_count),
    ("omdb_rating", "real", lambda i: i.omdb_rating),
    ("omdb_vote_count", "integer", lambda i: i.omdb_vote_count),
    ("popularity_score", "double precision", lambda i: i.popularity),
    ("poster_path", "text", lambda i: i.poster_path or None),
    ("backdrop_path", "text", lambda i: i.backdrop_path or None),
    ("tmdb_id", "integer", lambda i: i.tmdb_id),
    ("imdb_id", "text", lambda i: i.imdb_id),
    ("movielens_id", "integer", lambda i: i.movielens_id),
    ("content_hash", "text", lambda i: i.content_hash),
]
_STAGE_ONLY: list[tuple[str, str, Callable[[CatalogItem], Any]]] = [
    ("genres", "text[]", lambda i: i.genres),
    ("genre_slugs", "text[]", lambda i: [slugify(g) for g in i.genres]),
    ("source", "text", lambda i: i.source),
]
_NAMES = [c for c, _, _ in _COLUMNS]
_UPDATABLE = [c for c in _NAMES if c != "item_id"]


@dataclass
class UpsertStats:
    """What an import did. ``changed_ids`` are the inserted + updated item ids."""

    staged: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    genres_created: int = 0
    issues: list[ParseIssue] = field(default_factory=list)
    changed_ids: list[str] = field(default_factory=list)


def dedupe_external_ids(items: Sequence[CatalogItem], fname: str) -> list[ParseIssue]:
    """Drop a tmdb/imdb/movielens id that an earlier item of the same import already uses.

    Those columns are UNIQUE: one duplicated tmdbId in links.csv (ml-25m has a few) would otherwise
    abort the whole import. The item is kept without that id and the drop is reported.
    """
    issues: list[ParseIssue] = []
    for attr in ("tmdb_id", "imdb_id", "movielens_id"):
        owner: dict[Any, str] = {}
        for it in items:
            v = getattr(it, attr)
            if v is None:
                continue
            if v in owner:
                issues.append(
                    ParseIssue(
                        fname,
                        0,
                        attr,
                        f"item {it.item_id}: {attr} {v} already used by item {owner[v]}; dropped",
                        skipped=False,
                    )
                )
                setattr(it, attr, None)
            else:
                owner[v] = it.item_id
    return issues


def upsert_items(
    conn: psycopg.Connection,
    items: Sequence[CatalogItem],
    *,
    on_progress: Callable[[int], None] | None = None,
    item_type: str = "movie",
) -> UpsertStats:
    """Stage ``items`` with COPY and upsert them, all inside one transaction on ``conn``.

    Commits on success and rolls back on any error. If the caller already has a transaction open
    on ``conn``, the work runs in a savepoint of it instead, and the caller's commit decides.
    """
    stats = UpsertStats(staged=len(items))
    stats.issues.extend(dedupe_external_ids(items, "catalog"))
    stage_cols = _COLUMNS + _STAGE_ONLY
    with conn.transaction(), conn.cursor() as cur:
        # Inside a caller's open transaction this block is a savepoint and ON COMMIT DROP has not
        # fired for a previous call's temp tables yet: drop them explicitly.
        cur.execute(
            "DROP TABLE IF EXISTS pg_temp.catalog_stage, pg_temp.catalog_changed, pg_temp.catalog_pairs"
        )
        cur.execute(
            "CREATE TEMP TABLE catalog_stage ("
            + ", ".join(f"{c} {t}" for c, t, _ in stage_cols)
            + ") ON COMMIT DROP"
        )
        cols = ", ".join(c for c, _, _ in stage_cols)
        with cur.copy(f"COPY catalog_stage ({cols}) FROM STDIN") as cp:
            for n, it in enumerate(items, 1):
                cp.write_row([f(it) for _, _, f in stage_cols])
                if on_progress and n % 2000 == 0:
                    on_progress(2000)
        if on_progress:
            on_progress(len(items) % 2000)
        cur.execute("CREATE INDEX ON catalog_stage (item_id)")
        cur.execute("ANALYZE catalog_stage")

        # A tmdb/imdb/movielens id held by another item already in the table would violate its
        # UNIQUE constraint: keep the existing owner, drop it from the incoming row, report it.
        for col in ("tmdb_id", "imdb_id", "movielens_id"):
            cur.execute(
                f"""UPDATE catalog_stage s SET {col} = NULL FROM items i
                    WHERE i.{col} = s.{col} AND i.item_id <> s.item_id
                    RETURNING s.item_id, i.item_id, i.{col}"""
            )
            for new_id, old_id, val in cur.fetchall():
                stats.issues.append(
                    ParseIssue(
                        "catalog",
                        0,
                        col,
                        f"item {new_id}: {col} {val} belongs to item {old_id}; dropped",
                        skipped=False,
                    )
                )

        # New genres only; a genre already known by name or slug is reused (its tmdb_id too).
        cur.execute(
            """INSERT INTO genres (name, slug, tmdb_id)
               SELECT g.name, g.slug,
                      CASE WHEN NOT EXISTS (SELECT 1 FROM genres t WHERE t.tmdb_id = g.tmdb_id)
                           THEN g.tmdb_id END
               FROM unnest(%s::text[], %s::text[], %s::int[]) AS g(name, slug, tmdb_id)
               WHERE NOT EXISTS (SELECT 1 FROM genres x WHERE x.slug = g.slug OR x.name = g.name)
               ON CONFLICT DO NOTHING""",
            _genre_rows(items),
        )
        stats.genres_created = cur.rowcount

        set_list = ", ".join(f"{c} = EXCLUDED.{c}" for c in _UPDATABLE)
        cmp_old = ", ".join(f"items.{c}" for c in _UPDATABLE)
        cmp_new = ", ".join(f"EXCLUDED.{c}" for c in _UPDATABLE)
        cur.execute(
            f"""INSERT INTO items ({", ".join(_NAMES)}, item_type, metadata)
                SELECT {", ".join(_NAMES)}, %s, jsonb_build_object('catalog_source', source)
                FROM catalog_stage
                ON CONFLICT (item_id) DO UPDATE SET {set_list},
                    metadata = items.metadata || EXCLUDED.metadata
                WHERE ({cmp_old}) IS DISTINCT FROM ({cmp_new})
                RETURNING item_id, (xmax = 0) AS inserted""",
            (item_type,),
        )
        for item_id, inserted in cur.fetchall():
            stats.changed_ids.append(item_id)
            if inserted:
                stats.inserted += 1
            else:
                stats.updated += 1
        stats.unchanged = stats.staged - stats.inserted - stats.updated

        if stats.changed_ids:
            # Genres of changed items: replace the set (delete what is gone, add what is new).
            cur.execute("CREATE TEMP TABLE catalog_changed (item_id text PRIMARY KEY) ON COMMIT DROP")
            with cur.copy("COPY catalog_changed (item_id) FROM STDIN") as cp:
                for iid in stats.changed_ids:
                    cp.write_row((iid,))
            cur.execute(
                """CREATE TEMP TABLE catalog_pairs ON COMMIT DROP AS
                   SELECT DISTINCT s.item_id, g.genre_id
                   FROM catalog_stage s JOIN catalog_changed c USING (item_id)
                   CROSS JOIN LATERAL unnest(s.genres, s.genre_slugs) AS sg(name, slug)
                   JOIN genres g ON g.slug = sg.slug OR g.name = sg.name"""
            )
            cur.execute(
                """DELETE FROM item_genres ig USING catalog_changed c
                   WHERE ig.item_id = c.item_id
                     AND NOT EXISTS (SELECT 1 FROM catalog_pairs p
                                     WHERE p.item_id = ig.item_id AND p.genre_id = ig.genre_id)"""
            )
            cur.execute(
                """INSERT INTO item_genres (item_id, genre_id)
                   SELECT item_id, genre_id FROM catalog_pairs ON CONFLICT DO NOTHING"""
            )
    return stats


def _genre_rows(items: Sequence[CatalogItem]) -> tuple[list[str], list[str], list[int | None]]:
    names: dict[str, str] = {}
    for it in items:
        for g in it.genres:
            names.setdefault(slugify(g), g)
    slugs = sorted(names)
    return [names[s] for s in slugs], slugs, [TMDB_GENRE_IDS.get(names[s]) for s in slugs]
