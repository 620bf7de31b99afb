"""``/dashboard``: HTML pages with plotly charts (overview, experiments, models, pipeline health).

Read-only and aggregate (no user ids on any page), so it needs no API key, like ``/metrics``;
put it behind the same network boundary as ``/metrics`` in production. Queries run with a
10 s statement timeout (the API's pool default is 2 s, sized for recommendation lookups).
plotly.js comes from the installed plotly package at ``/dashboard/static/plotly.min.js``.
"""

from __future__ import annotations

import gzip
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import cache
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, select_autoescape
from psycopg import AsyncConnection

from serving.dashboard import charts, model_metrics, pipeline, traffic
from serving.deps import ServicesDep
from serving.experiments import analysis, store
from serving.recommend import Services

router = APIRouter(prefix="/dashboard", tags=["dashboard"], include_in_schema=True)

PLOTLY_URL = "/dashboard/static/plotly.min.js"
NAV = [
    ("/dashboard", "Overview"),
    ("/dashboard/experiments", "Experiments"),
    ("/dashboard/models", "Models"),
    ("/dashboard/health", "Pipeline health"),
]


def pct(x: Any) -> str:
    return "–" if not _finite(x) else f"{100 * float(x):.1f} %"


def num(x: Any) -> str:
    return "–" if not _finite(x) else f"{float(x):.4g}"


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


_env = Environment(
    loader=PackageLoader("serving.dashboard", "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.globals.update(pct=pct, num=num, nav=NAV, plotly_url=PLOTLY_URL)


def _page(template: str, title: str, active: str, **ctx: Any) -> HTMLResponse:
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    html = _env.get_template(template).render(title=title, active=active, generated=generated, **ctx)
    return HTMLResponse(html)


@asynccontextmanager
async def _conn(svc: Services) -> AsyncIterator[AsyncConnection[Any]]:
    try:
        async with svc.pool.connection(timeout=3) as conn, conn.transaction():
            await conn.execute("SET LOCAL statement_timeout = '10s'")
            yield conn
    except store.ExperimentError as exc:
        raise HTTPException(exc.status, exc.message) from None
    except (psycopg.Error, OSError, TimeoutError) as exc:
        raise HTTPException(503, f"dashboard data unavailable: {type(exc).__name__}") from None


Hours = Annotated[int, Query(ge=1, le=24 * 30, description="window in hours (1..720)")]


@router.get("", response_class=HTMLResponse, summary="Overview: CTR by source and position")
async def overview(svc: ServicesDep, hours: Hours = 48) -> HTMLResponse:
    async with _conn(svc) as conn:
        by_source = await traffic.ctr_by_source(conn, hours)
        by_position = await traffic.ctr_by_position(conn, hours)
        running = await store.list_all(conn, "running")
    lists = sum(r["lists"] for r in by_source)
    totals = {
        "lists": lists,
        "ctr": sum(r["clicked"] for r in by_source) / lists if lists else None,
        "cache_hit_rate": sum(r["cache_hits"] for r in by_source) / lists if lists else None,
    }
    chart = {
        "ctr_source": charts.ctr_over_time(by_source),
        "ctr_position": charts.ctr_by_position(by_position),
        "served": charts.served_over_time(by_source),
    }
    name = running[0]["name"] if running else None
    return _page(
        "overview.html", "Overview", "/dashboard", charts=chart, totals=totals, hours=hours, running=name
    )


@router.get("/experiments", response_class=HTMLResponse, summary="Experiments and their stored results")
async def experiments_page(svc: ServicesDep) -> HTMLResponse:
    async with _conn(svc) as conn:
        exps = await store.list_all(conn)
    analysed = [e for e in exps if e["results"].get("status") not in (None, "no_data")]
    chart_list = [
        charts.experiment_variants(
            e["results"], e["target_metric"], f"exp-{e['experiment_id']}", e["name"], _order(e)
        )
        for e in analysed[:6]
    ]
    return _page(
        "experiments.html", "Experiments", "/dashboard/experiments", experiments=exps, charts=chart_list
    )


@router.get(
    "/experiments/{experiment_id}", response_class=HTMLResponse, summary="One experiment, analysed now"
)
async def experiment_page(svc: ServicesDep, experiment_id: Annotated[int, Path(ge=1)]) -> HTMLResponse:
    """Running and analysing experiments are analysed live (not stored: that is ``POST
    /v1/experiments/{id}/analyze``); others show their stored results."""
    async with _conn(svc) as conn:
        exp = await store.get(conn, experiment_id)
        result = exp["results"]
        if exp["status"] in ("running", "analyzing"):
            _, result = await analysis.compute_results(conn, experiment_id)
    chart_list = []
    if result.get("variants"):
        target = exp["target_metric"]
        chart_list.append(charts.experiment_variants(result, target, "exp-target", order=_order(exp)))
        for m in ("ctr", "conversion", "plays_per_user", "watch_time_per_user"):
            if m != target:
                chart_list.append(charts.experiment_variants(result, m, f"exp-{m}", order=_order(exp)))
    return _page("experiment.html", exp["name"], "/dashboard/experiments", e=exp, r=result, charts=chart_list)


def _order(exp: dict[str, Any]) -> list[str]:
    return [v["name"] for v in exp["variants"]]


@router.get("/models", response_class=HTMLResponse, summary="Model metrics per version")
async def models_page(svc: ServicesDep) -> HTMLResponse:
    async with _conn(svc) as conn:
        rows = await model_metrics.model_metrics(conn)
        registry = await model_metrics.models(conn)
    chart = {
        "rmse": charts.model_metric(rows, "rmse", "RMSE (lower is better)", "rmse"),
        "ndcg": charts.model_metric(rows, "ndcg_at_k", "nDCG@k", "ndcg"),
        "coverage": charts.model_metric(rows, "coverage", "User coverage", "coverage"),
        "catalog_coverage": charts.model_metric(
            rows, "catalog_coverage", "Catalog coverage", "catalog-coverage"
        ),
    }
    return _page("models.html", "Models", "/dashboard/models", charts=chart, models=registry)


@router.get("/health", response_class=HTMLResponse, summary="Pipeline health")
async def health_page(svc: ServicesDep) -> HTMLResponse:
    settings = svc.settings
    async with _conn(svc) as conn:
        events = await pipeline.events_per_minute(conn, 60)
        served = await traffic.ctr_by_source(conn, 1)
    kafka = await pipeline.kafka_health(settings)
    worker = await pipeline.stream_worker_metrics(settings)
    now = datetime.now(UTC)
    recent = sum(p["events"] for p in events if (now - p["t"]).total_seconds() <= 300)
    buckets: dict[Any, list[int]] = {}
    for r in served:
        b = buckets.setdefault(r["t"], [0, 0])
        b[0] += r["cache_hits"]
        b[1] += r["lists"]
    cache_points = [{"t": t, "rate": h / n if n else None} for t, (h, n) in sorted(buckets.items())]
    total = sum(n for _, n in buckets.values())
    chart = {
        "events": charts.timeseries(events, "events", "Events committed per minute (last hour)", "events"),
        "cache": charts.timeseries(cache_points, "rate", "Cache hit rate (last hour)", "cache", percent=True),
        "lag": charts.lag_by_partition(kafka.get("lag_by_partition", {})),
    }
    return _page(
        "health.html",
        "Pipeline health",
        "/dashboard/health",
        charts=chart,
        events_per_sec=recent / 300,
        kafka=kafka,
        worker=worker,
        worker_url=f"{settings.stream.web_host}:{settings.stream.web_port}",
        group=settings.stream.app_id,
        cache_hit_rate=(sum(h for h, _ in buckets.values()) / total) if total else None,
        proc=pipeline.process_metrics(),
    )


@cache
def _plotly_js() -> tuple[bytes, bytes]:
    """plotly.js from the installed package (raw and gzipped; ~4.8 MB raw, ~1.4 MB gzipped)."""
    from plotly.offline import get_plotlyjs

    raw = get_plotlyjs().encode()
    return raw, gzip.compress(raw, 6)


@router.get("/static/plotly.min.js", include_in_schema=False)
async def plotly_js(request: Request) -> Response:
    raw, packed = _plotly_js()
    headers = {"Cache-Control": "public, max-age=86400"}
    if "gzip" in request.headers.get("accept-encoding", ""):
        headers["Content-Encoding"] = "gzip"
        return Response(packed, media_type="application/javascript", headers=headers)
    return Response(raw, media_type="application/javascript", headers=headers)
