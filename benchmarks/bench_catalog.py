"""Catalog import rate (items/s) and embedding throughput (items/s), plus embedding quality.

    .venv/bin/python -m benchmarks.bench_catalog                 # 62k synthetic items (ml-25m size)
    .venv/bin/python -m benchmarks.bench_catalog --items 10000 --provider minilm   # needs the extra

Uses the real Postgres (started like ``lambdarec infra up postgres``) in a scratch database that is
migrated first and dropped afterwards, so it neither reads nor changes the project's catalog.
Figures: parse rate, first import (COPY + upsert) and no-op re-import rates; provider fit time and
raw embedding rate; end-to-end ``catalog embed`` rate (read text, embed, binary COPY, UPDATE with
HNSW maintenance); neighbour quality (precision@10 of shared genres / tags vs random).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import psycopg

from batch.catalog.readers import parse_catalog
from batch.catalog.store import upsert_items
from batch.embeddings import get_provider
from batch.embeddings.base import is_fittable
from batch.embeddings.pipeline import embed_catalog
from batch.embeddings.quality import neighbour_quality
from batch.world import WorldConfig, generate_world
from infra import services
from infra.postgres import scratch_database
from lambdarec.settings import Settings, get_settings
from schemas.migrate import migrate


def _row(label: str, seconds: float, n: int, extra: str = "") -> None:
    """One aligned figure line: label, seconds, rate."""
    print(f"  {label:<28}{seconds:8.2f} s = {n / max(seconds, 1e-9):>9,.0f} items/s {extra}".rstrip())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=62_000)
    ap.add_argument("--provider", default="tfidf", choices=["tfidf", "minilm"])
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--sample", type=int, default=2000, help="query items for the quality metric")
    args = ap.parse_args()

    settings = get_settings()
    services.up(settings, ["postgres"])
    work = Path(tempfile.mkdtemp(prefix="bench_catalog_"))
    try:
        with scratch_database(settings, prefix="bench_catalog") as scratch:
            migrate(scratch)
            _bench(args, scratch, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _bench(args: argparse.Namespace, scratch: Settings, work: Path) -> None:
    dim = scratch.embedding.dim
    generate_world(WorldConfig(users=10, items=args.items, events=0, seed=11), work / "world")
    catalog = work / "world" / "catalog.jsonl"

    t = time.perf_counter()
    res = parse_catalog(catalog)
    t_parse = time.perf_counter() - t
    n = len(res.items)
    mb = catalog.stat().st_size / 1e6
    print(f"catalog: {n:,} synthetic items ({mb:.0f} MB JSONL), embedding dim {dim}")
    _row("parse + validate", t_parse, n)
    with psycopg.connect(scratch.postgres.url) as conn:
        t = time.perf_counter()
        s1 = upsert_items(conn, res.items)
        t_imp = time.perf_counter() - t
        t = time.perf_counter()
        s2 = upsert_items(conn, res.items)
        t_re = time.perf_counter() - t
        _row("first import (COPY+upsert)", t_imp, n, f"({s1.inserted:,} inserted)")
        _row("no-op re-import", t_re, n, f"({s2.unchanged:,} unchanged)")
        _row("parse + first import", t_parse + t_imp, n)

        texts = [i.embedding_text() for i in res.items]
        prov = get_provider(args.provider, dim)
        if is_fittable(prov):
            t = time.perf_counter()
            prov.fit(texts)
            print(f"  {prov.name} fit on the catalog: {time.perf_counter() - t:6.1f} s")
        t = time.perf_counter()
        emb = prov.embed(texts[:5000])
        t_raw = time.perf_counter() - t
        _row(f"{prov.name} embed only", t_raw, len(emb), "(5,000 items)")
        emb = np.vstack([emb, prov.embed(texts[5000:])]) if n > 5000 else emb
        for kind, labels in (
            ("genres", [i.genres for i in res.items]),
            ("tags", [i.tags for i in res.items]),
        ):
            q = neighbour_quality(emb, labels, k=10, sample=args.sample)
            print(f"  quality ({kind}): {q.as_row()}")

        models = work / "models"
        st = embed_catalog(
            conn, provider_name=args.provider, dim=dim, models_dir=models, batch_size=args.batch_size
        )
        print(
            f"  catalog embed end to end: {st.embed_seconds:6.1f} s = {st.items_per_sec:>9,.0f} items/s "
            f"({st.embedded:,} items; +{st.fit_seconds:.1f} s fit; read, embed, COPY, UPDATE + HNSW)"
        )
        if st.bulk:
            print(f"    of which HNSW index rebuild (bulk mode): {st.index_seconds:.1f} s")
        t = time.perf_counter()
        st2 = embed_catalog(conn, provider_name=args.provider, dim=dim, models_dir=models)
        print(f"  re-run with nothing changed: {time.perf_counter() - t:.2f} s ({st2.pending} pending)")
    result = {"bench": "catalog", "items": n, "parse_items_per_s": n / t_parse}
    result |= {"import_items_per_s": n / t_imp, "embed_items_per_s": st.items_per_sec}
    print("BENCH_RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
