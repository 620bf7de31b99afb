"""``lambdarec catalog import|embed|similar``: the item catalog and its text embeddings."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Annotated
from urllib.parse import urlparse

import psycopg
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from batch.catalog.model import ParseIssue
from lambdarec.settings import Settings, get_settings

app = typer.Typer(no_args_is_help=True, help="Import the item catalog and embed it.")
console = Console()
err = Console(stderr=True)


def progress_bar(console: Console) -> Progress:
    """The bar every long catalog/world command shows: description, bar, n/total, %, ETA."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def _connect(settings: Settings) -> psycopg.Connection:

    try:
        return psycopg.connect(settings.postgres.url, connect_timeout=5, application_name="lambdarec-catalog")
    except psycopg.OperationalError as exc:
        err.print(
            f"[red]error[/]: cannot connect to Postgres (LAMBDAREC_POSTGRES__URL): {exc}\n"
            "start it with `lambdarec infra up postgres && lambdarec db migrate`"
        )
        raise typer.Exit(2) from None


def models_dir(settings: Settings) -> Path:
    """Where fitted embedding models are kept: ``<var>/models/embeddings/<database key>``.

    Keyed by database (host, port, name, options; not the password) because a TF-IDF model belongs
    to the catalog it was fitted on: pointing the CLI at another database must not reuse it.
    """
    u = urlparse(settings.postgres.url)
    key = hashlib.sha256(f"{u.hostname}:{u.port}{u.path}?{u.query}".encode()).hexdigest()[:12]
    return settings.var_dir / "models" / "embeddings" / key


@app.command("import")
def import_(
    path: Annotated[Path, typer.Argument(help="folder or file: MovieLens, ml-100k, JSONL or CSV")],
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="auto|movielens|ml100k|recbole|jsonl|csv")
    ] = "auto",
    encoding: Annotated[str | None, typer.Option(help="override the text encoding (e.g. latin-1)")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="parse and validate only; write nothing")
    ] = False,
    show_issues: Annotated[int, typer.Option(help="how many problems to list")] = 20,
) -> None:
    """Parse, validate, then upsert the whole catalog in one transaction (re-import = no-op)."""
    from batch.catalog.model import CatalogError
    from batch.catalog.readers import parse_catalog
    from batch.catalog.store import upsert_items

    settings = get_settings()
    t0 = time.perf_counter()
    try:
        with err.status(f"parsing {path}"):
            res = parse_catalog(path, fmt, encoding)
    except CatalogError as exc:
        err.print(f"[red]error[/]: {exc}")
        raise typer.Exit(2) from None
    t_parse = time.perf_counter() - t0
    console.print(
        f"[bold]{res.fmt}[/]: {res.lines_read} record(s) read from "
        f"{', '.join(Path(f).name for f in res.files)}; "
        f"{len(res.items)} valid, {res.skipped} skipped, {res.warnings} warning(s)  ({t_parse:.1f}s)"
    )
    issues = list(res.issues)
    if not dry_run:
        with _connect(settings) as conn, progress_bar(err) as prog:
            task = prog.add_task("writing items", total=len(res.items))
            t1 = time.perf_counter()
            stats = upsert_items(conn, res.items, on_progress=lambda n: prog.advance(task, n))
            t_write = time.perf_counter() - t1
        issues.extend(stats.issues)
        console.print(
            f"[green]imported[/]: {stats.inserted} inserted, {stats.updated} updated, "
            f"{stats.unchanged} unchanged, "
            f"{stats.genres_created} new genre(s)  ({t_write:.1f}s, "
            f"{len(res.items) / max(t_write + t_parse, 1e-9):,.0f} items/s)"
        )
        if stats.inserted or stats.updated:
            console.print("next: `lambdarec catalog embed` embeds the new and changed items")
    _print_issues(issues, show_issues)


def _print_issues(issues: list[ParseIssue], limit: int) -> None:
    if not issues or limit <= 0:
        return
    t = Table(title=f"problems ({len(issues)}; first {min(limit, len(issues))})", show_lines=False)
    t.add_column("where")
    t.add_column("field")
    t.add_column("what")
    t.add_column("action")
    for i in issues[:limit]:
        t.add_row(
            f"{i.file}:{i.line}" if i.line else i.file, i.field, i.message, "skipped" if i.skipped else "kept"
        )
    console.print(t)


@app.command()
def embed(
    provider: Annotated[str, typer.Option(help="tfidf (default) or minilm (optional extra)")] = "tfidf",
    refit: Annotated[
        bool, typer.Option("--refit", help="refit the TF-IDF model (re-embeds every item)")
    ] = False,
    batch_size: Annotated[int, typer.Option(min=1, max=100_000)] = 512,
    rebuild_index: Annotated[
        str, typer.Option(help="auto|always|never: drop and rebuild the HNSW index around a bulk load")
    ] = "auto",
) -> None:
    """Embed new and changed items (content_hash != embedding_content_hash) into items.embedding."""
    from batch.embeddings import PROVIDERS
    from batch.embeddings.pipeline import embed_catalog

    if provider not in PROVIDERS:
        err.print(f"[red]error[/]: unknown provider {provider!r}; choose from {', '.join(PROVIDERS)}")
        raise typer.Exit(2)
    settings = get_settings()
    with _connect(settings) as conn, progress_bar(err) as prog:
        task = prog.add_task(f"embedding ({provider})", total=None)
        try:
            stats = embed_catalog(
                conn,
                provider_name=provider,
                dim=settings.embedding.dim,
                models_dir=models_dir(settings),
                refit=refit,
                batch_size=batch_size,
                rebuild_index=rebuild_index,
                on_total=lambda n: prog.update(task, total=n),
                on_progress=lambda n: prog.advance(task, n),
            )
        except (RuntimeError, ValueError) as exc:
            err.print(f"[red]error[/]: {exc}")
            raise typer.Exit(2) from None
    if stats.fitted:
        console.print(f"fitted {stats.model_id} on the catalog in {stats.fit_seconds:.1f}s")
    if stats.pending == 0:
        console.print(f"nothing to embed: every item is up to date for {stats.model_id}")
        return
    console.print(
        f"[green]embedded[/] {stats.embedded} of {stats.pending} item(s) with {stats.model_id} "
        f"({stats.items_per_sec:,.0f} items/s)"
        + (f"; {stats.raced} changed meanwhile and are left for the next run" if stats.raced else "")
    )
    if stats.bulk:
        console.print(f"bulk mode: HNSW index rebuilt in {stats.index_seconds:.1f}s")


@app.command()
def similar(
    item_id: Annotated[str, typer.Argument(help="an item_id")],
    k: Annotated[int, typer.Option("-k", min=1, max=1000)] = 10,
) -> None:
    """The k most similar items by embedding (pgvector HNSW, cosine)."""
    from batch.embeddings.pipeline import similar_items

    settings = get_settings()
    with _connect(settings) as conn:
        row = conn.execute(
            "SELECT title, embedding IS NOT NULL FROM items WHERE item_id = %s", (item_id,)
        ).fetchone()
        if row is None:
            err.print(f"[red]error[/]: no item {item_id!r}")
            raise typer.Exit(1)
        if not row[1]:
            err.print(f"[red]error[/]: item {item_id!r} has no embedding yet; run `lambdarec catalog embed`")
            raise typer.Exit(1)
        rows = similar_items(conn, item_id, k)
    t = Table(title=f"like {row[0]!r} ({item_id})")
    t.add_column("item_id")
    t.add_column("title")
    t.add_column("similarity", justify="right")
    for iid, title, sim in rows:
        t.add_row(iid, title, f"{sim:.3f}")
    console.print(t)
