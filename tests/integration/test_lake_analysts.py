"""docs/analysts.md is executable: its Python blocks run here against a freshly archived lake.

Blocks tagged ```python run in order in one namespace with ``LAMBDAREC_LAKE__ROOT`` pointing at
the test lake; blocks tagged ```python spark additionally need Spark (slow, on an s3:// root, so
the s3a path from delta-rs-written tables is exercised too). The generated table reference must
match ``schemas/lake.py``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batch.lake.archiver import Archiver
from lambdarec.cli.lake import BEGIN, DOCS, END
from lambdarec.settings import Settings, get_settings
from schemas.lake import render_markdown
from tests.integration.lake_support import (
    Workload,
    delete_prefix,
    lake_settings,
    lake_topics,
    produce_workload,
    workload,
)

pytestmark = pytest.mark.integration

_BLOCK = re.compile(r"^```python( spark)?\n(.*?)^```", re.S | re.M)


def blocks(spark: bool) -> list[str]:
    """The doc's Python blocks in order (with the Spark ones when ``spark``)."""
    return [code for tag, code in _BLOCK.findall(DOCS.read_text()) if spark or not tag]


def run_docs(monkeypatch: pytest.MonkeyPatch, settings: Settings, spark: bool) -> dict[str, Any]:
    monkeypatch.setenv("LAMBDAREC_LAKE__ROOT", settings.lake.root)
    monkeypatch.setenv("LAMBDAREC_S3__ENDPOINT_URL", settings.s3.endpoint_url)
    get_settings.cache_clear()
    ns: dict[str, Any] = {"__name__": "analysts_md"}
    try:
        for code in blocks(spark):
            exec(compile(code, str(DOCS), "exec"), ns)
    finally:
        get_settings.cache_clear()
    return ns


def _archived(settings: Settings, w: Workload) -> None:
    produce_workload(settings, w)
    rep = Archiver(settings).run(once=True)
    assert rep.caught_up


def _check_duckdb_results(ns: dict[str, Any], w: Workload) -> None:
    ctr = ns["daily_ctr"].to_pylist()
    assert sum(r["impressions"] for r in ctr) == w.impressions
    assert sum(r["clicks"] for r in ctr) == w.feedback  # every workload feedback event is a click
    assert {r["algorithm_source"] for r in ctr} <= {"realtime", "batch", "popular"}
    assert sum(r["impressions"] for r in ns["by_position"].to_pylist()) == w.impressions
    assert ns["top_items"].height == 10
    assert ns["feedback"].collect().height == w.feedback


@pytest.fixture
def local_lake(kafka: Settings, tmp_path: Path) -> Iterator[Settings]:
    s = lake_settings(
        kafka, str(tmp_path / "lake"), f"test.lake-{uuid.uuid4().hex[:10]}.", advance_watermark=False
    )
    with lake_topics(s):
        yield s


def test_docs_examples_run(local_lake: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    w = workload(n=400, seed=3)
    _archived(local_lake, w)
    ns = run_docs(monkeypatch, local_lake, spark=False)
    _check_duckdb_results(ns, w)


@pytest.mark.slow
def test_docs_spark_example_on_s3(kafka: Settings, spark: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket, prefix = kafka.s3.archive_bucket, f"test-lake/{uuid.uuid4().hex[:12]}"
    s = lake_settings(
        kafka, f"s3://{bucket}/{prefix}", f"test.lake-{uuid.uuid4().hex[:10]}.", advance_watermark=False
    )
    try:
        with lake_topics(s):
            w = workload(n=300, seed=5)
            _archived(s, w)
            ns = run_docs(monkeypatch, s, spark=True)
        _check_duckdb_results(ns, w)
        by_spark = {(r.day, r.algorithm_source): (r.impressions, r.clicks) for r in ns["spark_ctr"]}
        by_duck = {
            (r["day"], r["algorithm_source"]): (r["impressions"], r["clicks"])
            for r in ns["daily_ctr"].to_pylist()
        }
        assert by_spark == by_duck
    finally:
        delete_prefix(kafka, bucket, prefix)


def test_table_reference_is_generated_from_schemas() -> None:
    text = DOCS.read_text()
    assert BEGIN in text and END in text
    section = text.split(BEGIN, 1)[1].split(END, 1)[0]
    assert section.strip() == render_markdown().strip(), (
        "docs/analysts.md is stale: run `lambdarec lake docs`"
    )
