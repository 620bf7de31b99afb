"""Versioned Postgres migrations: ``schemas/migrations/NNN_name.sql``, applied in order, once.

* Each file is applied in its own transaction together with its ``schema_migrations`` row
  (version, name, checksum, applied_at, execution_ms), so a failed migration leaves nothing behind.
* A session-level advisory lock serialises migrators: two processes (or threads) migrating at once
  is safe; the second waits, then finds nothing to do.
* The checksum is the SHA-256 of the file *as written* (before templating). Editing an applied
  migration is an error, not a silent no-op: add a new migration instead.
* Templates: ``{{embedding_dim}}`` becomes ``settings.embedding.dim``. The value is recorded in
  ``schema_settings``; migrating a database built with another dimension is an error, because the
  vector columns and the HNSW index have the dimension baked in.

>>> from lambdarec.settings import get_settings
>>> migrate(get_settings())          # doctest: +SKIP
['001_catalog', '002_user_profiles', ...]
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse

import psycopg

from infra.errors import InfraError
from lambdarec.settings import Settings

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
#: pg_advisory_lock(7245010, 1): "lambdarec", "migrations" (other keys in 7245010 are used by the SQL)
LOCK_KEY = (7245010, 1)
#: pgvector's HNSW index supports at most 2000 dimensions for the ``vector`` type
MAX_INDEXED_DIM = 2000

_FILENAME = re.compile(r"^(?P<version>\d{3})_(?P<name>[a-z0-9_]+)\.sql$")
_PLACEHOLDER = re.compile(r"\{\{\s*(?P<key>[A-Za-z_][A-Za-z0-9_]*)\s*\}\}")

_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version       integer PRIMARY KEY,
    name          text NOT NULL,
    checksum      char(64) NOT NULL,
    applied_at    timestamptz NOT NULL DEFAULT now(),
    execution_ms  integer
);
CREATE TABLE IF NOT EXISTS schema_settings (
    key     text PRIMARY KEY,
    value   text NOT NULL,
    set_at  timestamptz NOT NULL DEFAULT now()
);
"""


class MigrationError(InfraError):
    """The schema cannot be migrated; the message says why and what to do."""


@dataclass(frozen=True)
class Migration:
    """One migration file."""

    version: int
    name: str
    template: str

    @property
    def label(self) -> str:
        """``001_catalog``: what :func:`migrate` returns and error messages name."""
        return f"{self.version:03d}_{self.name}"

    @property
    def checksum(self) -> str:
        """SHA-256 of the file as written (templating does not change it)."""
        return hashlib.sha256(self.template.encode()).hexdigest()

    def render(self, params: dict[str, object]) -> str:
        return render(self.template, params, self.label)


def render(template: str, params: dict[str, object], what: str = "migration") -> str:
    """Fill ``{{key}}`` placeholders; an unknown key is an error (never left for Postgres to find).

    >>> render("embedding vector({{embedding_dim}})", {"embedding_dim": 8})
    'embedding vector(8)'
    """

    def sub(m: re.Match[str]) -> str:
        key = m["key"]
        if key not in params:
            raise MigrationError(f"{what}: unknown template placeholder {m[0]}; known: {sorted(params)}")
        return str(params[key])

    return _PLACEHOLDER.sub(sub, template)


def template_params(settings: Settings) -> dict[str, object]:
    """Values the templates may use, validated."""
    dim = settings.embedding.dim
    if dim > MAX_INDEXED_DIM:
        raise MigrationError(
            f"LAMBDAREC_EMBEDDING__DIM={dim}: pgvector HNSW indexes support at most {MAX_INDEXED_DIM} "
            "dimensions; use a smaller embedding model (or reduce it, e.g. Matryoshka truncation)"
        )
    return {"embedding_dim": dim}


def load_migrations(directory: Path | None = None) -> list[Migration]:
    """The migration files in version order. Misnamed or duplicate-version files are errors."""
    directory = directory or MIGRATIONS_DIR
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        m = _FILENAME.match(path.name)
        if not m:
            raise MigrationError(
                f"{path}: migration files are named NNN_lowercase_name.sql (e.g. 009_add_item_language.sql)"
            )
        version = int(m["version"])
        if version == 0:
            raise MigrationError(f"{path}: versions start at 001")
        if version in found:
            raise MigrationError(
                f"{path}: version {version:03d} is also used by {found[version].label}.sql; "
                "give each migration its own number"
            )
        found[version] = Migration(version, m["name"], path.read_text())
    return [found[v] for v in sorted(found)]


def _address(settings: Settings) -> str:
    u = urlparse(settings.postgres.url)
    return f"{u.hostname}:{u.port or 5432}{u.path}"


def connect(settings: Settings) -> psycopg.Connection:
    """An autocommit connection with the settings URL, or a MigrationError that says what to do."""
    try:
        return psycopg.connect(
            settings.postgres.url, autocommit=True, connect_timeout=5, application_name="lambdarec-migrate"
        )
    except psycopg.OperationalError as exc:
        raise MigrationError(
            f"cannot connect to Postgres at {_address(settings)} (LAMBDAREC_POSTGRES__URL): "
            f"{str(exc).strip()}. Start it with `lambdarec infra up postgres` or fix the URL"
        ) from exc


def _ensure_vector(conn: psycopg.Connection, settings: Settings) -> None:
    if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone():
        return
    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    except psycopg.Error as exc:
        raise MigrationError(
            f"the pgvector extension is not installed in {_address(settings)} and this role cannot "
            f"install it ({exc.__class__.__name__}: {str(exc).strip()}). As a superuser run "
            "CREATE EXTENSION vector in that database (`lambdarec infra up postgres` does it for the "
            "managed server)"
        ) from exc


def _applied(conn: psycopg.Connection) -> dict[int, tuple[str, str, datetime]]:
    rows = conn.execute("SELECT version, name, checksum, applied_at FROM schema_migrations").fetchall()
    return {v: (name, checksum.strip(), at) for v, name, checksum, at in rows}


def _check_applied(migrations: list[Migration], applied: dict[int, tuple[str, str, datetime]]) -> None:
    by_version = {m.version: m for m in migrations}
    for version, (name, checksum, at) in sorted(applied.items()):
        m = by_version.get(version)
        if m is None:
            raise MigrationError(
                f"the database has migration {version:03d}_{name} (applied {at:%Y-%m-%d %H:%M}) which this "
                "checkout does not have: update the code; applied migrations are never deleted"
            )
        if m.name != name:
            raise MigrationError(
                f"migration {version:03d} was applied as {name!r} but the file is now {m.label}.sql: "
                "never rename an applied migration"
            )
        if m.checksum != checksum:
            raise MigrationError(
                f"migration {m.label} was changed after it was applied on {at:%Y-%m-%d %H:%M} "
                f"(checksum in schema_migrations {checksum[:12]}…, file {m.checksum[:12]}…): revert the "
                "file and put the change in a new migration"
            )


def _check_settings(conn: psycopg.Connection, params: dict[str, object]) -> None:
    row = conn.execute("SELECT value FROM schema_settings WHERE key = 'embedding_dim'").fetchone()
    if row is not None and int(row[0]) != params["embedding_dim"]:
        raise MigrationError(
            f"the database was migrated with embedding dim {row[0]} but LAMBDAREC_EMBEDDING__DIM is "
            f"{params['embedding_dim']}: the vector columns and HNSW index are built for {row[0]}. Set "
            f"LAMBDAREC_EMBEDDING__DIM={row[0]}, or use a new database and re-embed the catalog"
        )


def migrate(settings: Settings, directory: Path | None = None) -> list[str]:
    """Apply every migration not yet in ``schema_migrations``; returns the labels applied now.

    Idempotent and safe to run concurrently (advisory lock). Raises :class:`MigrationError`.
    """
    migrations = load_migrations(directory)
    params = template_params(settings)
    rendered = {m.version: m.render(params) for m in migrations}  # template errors before any I/O
    done: list[str] = []
    with connect(settings) as conn:
        conn.execute("SELECT pg_advisory_lock(%s, %s)", LOCK_KEY)
        try:
            conn.execute(_BOOKKEEPING)
            _ensure_vector(conn, settings)
            applied = _applied(conn)
            _check_applied(migrations, applied)
            _check_settings(conn, params)
            for m in migrations:
                if m.version in applied:
                    continue
                t0 = time.monotonic()
                try:
                    with conn.transaction():
                        conn.execute(rendered[m.version])
                        conn.execute(
                            "INSERT INTO schema_migrations (version, name, checksum, execution_ms) "
                            "VALUES (%s, %s, %s, %s)",
                            (m.version, m.name, m.checksum, round((time.monotonic() - t0) * 1000)),
                        )
                        conn.execute(
                            "INSERT INTO schema_settings (key, value) VALUES ('embedding_dim', %s) "
                            "ON CONFLICT (key) DO NOTHING",
                            (str(params["embedding_dim"]),),
                        )
                except psycopg.Error as exc:
                    diag = exc.diag
                    where = f" ({diag.context.strip()})" if diag and diag.context else ""
                    raise MigrationError(
                        f"migration {m.label} failed and was rolled back: {exc.__class__.__name__}: "
                        f"{str(exc).strip()}{where}"
                    ) from exc
                done.append(m.label)
        finally:
            if not conn.closed:
                conn.execute("SELECT pg_advisory_unlock(%s, %s)", LOCK_KEY)
    return done


StatusRow = tuple[str, str, datetime | None]


def migration_status(settings: Settings, directory: Path | None = None) -> list[StatusRow]:
    """(version, name, applied_at or None) for every known migration, in version order."""
    migrations = load_migrations(directory)
    with connect(settings) as conn:
        exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
        applied = _applied(conn) if exists and exists[0] else {}
    rows: dict[int, StatusRow] = {}
    for version, (name, _, at) in applied.items():  # includes any unknown to this checkout
        rows[version] = (f"{version:03d}", name, at)
    for m in migrations:
        rows.setdefault(m.version, (f"{m.version:03d}", m.name, None))
    return [rows[v] for v in sorted(rows)]
