"""plotly figures for the dashboard pages, rendered as HTML fragments (``<div>`` + ``<script>``).

The fragments call ``Plotly.newPlot`` from the page's local plotly.js, never a CDN
(``include_plotlyjs=False``). Every chart has a fixed height so pages lay out before the data.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio

HEIGHT = 340
_CONFIG = {"displaylogo": False, "displayModeBar": False, "responsive": True}


def _settle_pandas() -> None:
    """plotly checks for pandas with ``sys.modules.get`` (no import), so while another thread is
    still importing pandas (the model loader does, in a worker thread) plotly sees a half-built
    module and fails. Importing it here waits on the import lock until that import is complete;
    done per chart rather than at module import, so API start-up does not pay for pandas."""
    import pandas  # noqa: F401


def _html(fig: go.Figure, div_id: str) -> str:
    fig.update_layout(height=HEIGHT, margin={"l": 50, "r": 20, "t": 50, "b": 40}, template="plotly_white")
    return pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=div_id, config=_CONFIG)


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def ctr_over_time(rows: Iterable[Mapping[str, Any]]) -> str:
    """CTR per list source (realtime, batch, popular, hybrid, cold_start) per time bucket."""
    _settle_pandas()
    series: dict[str, tuple[list[Any], list[float | None], list[int]]] = defaultdict(lambda: ([], [], []))
    for r in rows:
        xs, ys, ns = series[r["source"]]
        xs.append(r["t"])
        ys.append(_ratio(r["clicked"], r["lists"]))
        ns.append(r["lists"])
    fig = go.Figure()
    for source, (xs, ys, ns) in sorted(series.items()):
        fig.add_trace(
            go.Scatter(x=xs, y=ys, mode="lines+markers", name=source, customdata=ns,
                       hovertemplate="%{y:.2%} of %{customdata} lists<extra>" + source + "</extra>")
        )  # fmt: skip
    fig.update_layout(title="CTR by algorithm source (clicked lists / served lists)", yaxis_tickformat=".1%")
    return _html(fig, "ctr-by-source")


def served_over_time(rows: Iterable[Mapping[str, Any]]) -> str:
    """Lists served per time bucket, stacked by source."""
    _settle_pandas()
    series: dict[str, tuple[list[Any], list[int]]] = defaultdict(lambda: ([], []))
    for r in rows:
        series[r["source"]][0].append(r["t"])
        series[r["source"]][1].append(r["lists"])
    fig = go.Figure([go.Bar(x=xs, y=ys, name=s) for s, (xs, ys) in sorted(series.items())])
    fig.update_layout(title="Lists served", barmode="stack")
    return _html(fig, "served")


def ctr_by_position(rows: Iterable[Mapping[str, Any]]) -> str:
    """CTR per 0-based position, one bar group per item source."""
    _settle_pandas()
    series: dict[str, tuple[list[int], list[float | None]]] = defaultdict(lambda: ([], []))
    for r in rows:
        series[r["source"]][0].append(r["position"])
        series[r["source"]][1].append(_ratio(r["clicks"], r["impressions"]))
    fig = go.Figure([go.Bar(x=xs, y=ys, name=s) for s, (xs, ys) in sorted(series.items())])
    fig.update_layout(
        title="CTR by position and item source", xaxis_title="position (0 = top)", yaxis_tickformat=".1%",
        barmode="group",
    )  # fmt: skip
    return _html(fig, "ctr-by-position")


def model_metric(rows: Sequence[Mapping[str, Any]], metric: str, title: str, div_id: str) -> str:
    """One metric per model version (x = versions in evaluation order), a line per algorithm+phase."""
    _settle_pandas()
    series: dict[str, tuple[list[str], list[float]]] = defaultdict(lambda: ([], []))
    for r in rows:
        if r.get(metric) is None:
            continue
        key = f"{r['algorithm']} ({r['phase']})"
        series[key][0].append(str(r["version"]))
        series[key][1].append(float(r[metric]))
    fig = go.Figure(
        [go.Scatter(x=xs, y=ys, mode="lines+markers", name=k) for k, (xs, ys) in sorted(series.items())]
    )
    fig.update_layout(title=title, xaxis_title="model version", xaxis_type="category")
    return _html(fig, div_id)


def experiment_variants(
    result: Mapping[str, Any], metric: str, div_id: str, experiment: str = "", order: Sequence[str] = ()
) -> str:
    """Each variant's value of ``metric`` with the treatments' confidence interval of the
    difference drawn around them (relative to the control's value)."""
    _settle_pandas()
    variants: Mapping[str, Mapping[str, Any]] = result.get("variants", {})
    comps: Mapping[str, Mapping[str, Any]] = result.get("comparisons", {}).get(metric, {})
    names, values, lo, hi = [], [], [], []
    control = result.get("control")
    base = variants.get(control or "", {}).get(metric)
    ordered = [n for n in order if n in variants] + [n for n in variants if n not in order]
    for name in ordered:  # the experiment's variant order (a jsonb document sorts its keys)
        val = variants[name].get(metric)
        names.append(name)
        values.append(val)
        c = comps.get(name)
        if c is not None and base is not None and val is not None and c.get("ci_low") is not None:
            lo.append(val - (base + c["ci_low"]))
            hi.append(base + c["ci_high"] - val)
        else:
            lo.append(0)
            hi.append(0)
    colors = ["#1f77b4" if n != result.get("winner") else "#2ca02c" for n in names]
    fig = go.Figure(
        go.Bar(x=names, y=values, marker_color=colors,
               error_y={"type": "data", "symmetric": False, "array": hi, "arrayminus": lo})
    )  # fmt: skip
    fmt = ".1%" if metric in ("ctr", "conversion", "ctr_per_user") else None
    prefix = f"{experiment}: " if experiment else ""
    fig.update_layout(title=f"{prefix}{metric} per variant (bars: CI vs control)")
    if fmt:
        fig.update_layout(yaxis_tickformat=fmt)
    return _html(fig, div_id)


def timeseries(
    points: Sequence[Mapping[str, Any]], y: str, title: str, div_id: str, percent: bool = False
) -> str:
    _settle_pandas()
    fig = go.Figure(
        go.Scatter(x=[p["t"] for p in points], y=[p[y] for p in points], mode="lines+markers", name=y)
    )
    fig.update_layout(title=title)
    if percent:
        fig.update_layout(yaxis_tickformat=".0%")
    return _html(fig, div_id)


def lag_by_partition(lag: Mapping[int, int]) -> str:
    """Records not yet processed per partition of the interactions topic (bars)."""
    _settle_pandas()
    parts = sorted(lag)
    fig = go.Figure(go.Bar(x=[f"p{p}" for p in parts], y=[lag[p] for p in parts], name="lag"))
    fig.update_layout(title="Consumer lag by partition (records)", xaxis_title="partition")
    return _html(fig, "lag")
