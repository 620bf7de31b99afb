"""schemas/migrate.py without a database: file discovery, templating, checksums, validation."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from lambdarec.settings import EmbeddingSettings, Settings
from schemas.migrate import (
    MIGRATIONS_DIR,
    Migration,
    MigrationError,
    load_migrations,
    migrate,
    render,
    template_params,
)


def _settings(tmp_path: Path, dim: int = 768, port: int = 1) -> Settings:
    return Settings(
        var_dir=tmp_path / "var",
        postgres={"url": f"postgresql://u:p@127.0.0.1:{port}/db"},  # nothing listens on port 1
        embedding=EmbeddingSettings(dim=dim),
    )


def test_shipped_migrations_are_numbered_from_one_without_gaps() -> None:
    migrations = load_migrations()
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    assert len({m.name for m in migrations}) == len(migrations)


def test_shipped_migrations_render_completely(tmp_path: Path) -> None:
    params = template_params(_settings(tmp_path, dim=384))
    for m in load_migrations():
        sql = m.render(params)
        assert "{{" not in sql and "}}" not in sql, m.label
    catalog = load_migrations()[0].render(params)
    assert "vector(384)" in catalog
    assert "vector(768)" not in catalog


def test_render_rejects_unknown_placeholder() -> None:
    with pytest.raises(MigrationError, match=r"unknown template placeholder \{\{ item_dim \}\}"):
        render("x vector({{ item_dim }})", {"embedding_dim": 8}, "009_x")


def test_checksum_is_of_the_file_not_the_rendering() -> None:
    m = Migration(1, "a", "CREATE TABLE t (v vector({{embedding_dim}}));\n")
    assert m.render({"embedding_dim": 8}) != m.render({"embedding_dim": 16})
    assert m.checksum == Migration(1, "a", m.template).checksum
    assert re.fullmatch(r"[0-9a-f]{64}", m.checksum)
    assert Migration(1, "a", m.template + " ").checksum != m.checksum


def test_misnamed_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "1_init.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=r"NNN_lowercase_name\.sql"):
        load_migrations(tmp_path)


def test_duplicate_version_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "001_a.sql").write_text("SELECT 1;")
    (tmp_path / "001_b.sql").write_text("SELECT 2;")
    with pytest.raises(MigrationError, match="version 001 is also used by 001_a"):
        load_migrations(tmp_path)


def test_files_load_in_version_order(tmp_path: Path) -> None:
    for name in ("010_c.sql", "002_b.sql", "001_a.sql"):
        (tmp_path / name).write_text(f"-- {name}")
    assert [m.label for m in load_migrations(tmp_path)] == ["001_a", "002_b", "010_c"]


def test_dimension_too_large_for_hnsw(tmp_path: Path) -> None:
    with pytest.raises(MigrationError, match="LAMBDAREC_EMBEDDING__DIM=3072"):
        template_params(_settings(tmp_path, dim=3072))
    assert template_params(_settings(tmp_path, dim=2000)) == {"embedding_dim": 2000}


def test_bad_template_fails_before_touching_the_database(tmp_path: Path) -> None:
    d = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, d)
    (d / "999_bad.sql").write_text("SELECT {{nope}};")
    # the URL points at a closed port: a connection attempt would give a different error
    with pytest.raises(MigrationError, match="999_bad: unknown template placeholder"):
        migrate(_settings(tmp_path), d)


def test_unreachable_database_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(
        MigrationError, match=r"cannot connect to Postgres at 127\.0\.0\.1:1/db.*LAMBDAREC_POSTGRES__URL"
    ):
        migrate(_settings(tmp_path))
