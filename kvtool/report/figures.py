"""Plotly figures of the HTML page, each drawn from the JSON that analyze, simulate and validate
return (docs/commands/report.md). Every axis has a title with its unit; rates are in percent."""

from __future__ import annotations

import html
import math
from datetime import UTC, datetime

import plotly.graph_objects as go

from kvtool.report.waterfall import WaterfallRow, waterfall_rows
from kvtool.traffic import REUSE_WINDOWS

TEMPLATE = "plotly_white"
EPOCH_2001 = 978307200  # timestamps above this are wall-clock times (a date axis)
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def _layout(fig: go.Figure, title: str, x: str, y: str, **more) -> go.Figure:
    fig.update_layout(
        title=title,
        template=TEMPLATE,
        xaxis_title=x,
        yaxis_title=y,
        margin={"l": 70, "r": 30, "t": 60, "b": 60},
        legend={"orientation": "h", "y": -0.2},
        **more,
    )
    return fig


def _percent(num: float, den: float) -> float | None:
    return 100.0 * num / den if den else None


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def timeline(tl: dict) -> go.Figure:
    """Requests per time bin (bars) and the bin's ideal hit rate (line, right axis)."""
    n = len(tl["requests"])
    starts = [tl["start"] + i * tl["step"] for i in range(n)]
    if tl["unit"] == "request":
        x, x_title = [int(s) for s in starts], f"request (processing order, bins of {tl['step']})"
        per = f"per {tl['step']} requests"
    elif tl["start"] > EPOCH_2001:
        x = [datetime.fromtimestamp(s, UTC).isoformat() for s in starts]
        x_title, per = "time (UTC)", f"per {_duration(tl['step'])}"
    else:
        x = [s - tl["start"] for s in starts]
        x_title, per = "time since the first request (s)", f"per {_duration(tl['step'])}"
    rate = [_percent(c, p) for c, p in zip(tl["cached_tokens"], tl["prompt_tokens"], strict=True)]
    fig = go.Figure()
    fig.add_bar(x=x, y=tl["requests"], name=f"requests {per}", marker_color=COLORS[0])
    fig.add_scatter(
        x=x,
        y=rate,
        name="ideal hit rate (%)",
        yaxis="y2",
        mode="lines+markers",
        line={"color": COLORS[1]},
        connectgaps=False,
    )
    return _layout(
        fig,
        "Requests over time",
        x_title,
        f"requests {per}",
        yaxis2={
            "title": "ideal token hit rate (%)",
            "overlaying": "y",
            "side": "right",
            "range": [0, 100],
        },
    )


def _ranges(edges: list[float], fmt) -> list[str]:
    return [f"{fmt(a)}–{fmt(b)}" for a, b in zip(edges[:-1], edges[1:], strict=False)]


def _tokens(v: float) -> str:
    return f"{v / 1000:.3g}k" if v >= 1000 else f"{v:.0f}"


def prompt_lengths(pl: dict) -> go.Figure:
    """Requests per prompt length, on log-spaced bins."""
    fig = go.Figure(go.Bar(x=_ranges(pl["edges"], _tokens), y=pl["counts"], marker_color=COLORS[0]))
    return _layout(fig, "Prompt length distribution", "prompt length (tokens)", "requests")


def hit_rate_by_block_size(by_size: dict) -> go.Figure:
    """The ideal (infinite-cache) token hit rate at each block size."""
    sizes = list(by_size)
    fig = go.Figure(
        go.Bar(
            x=[f"{s} tokens" for s in sizes],
            y=[100 * (by_size[s] or 0) for s in sizes],
            text=[f"{100 * (by_size[s] or 0):.1f}%" for s in sizes],
            marker_color=COLORS[2],
        )
    )
    return _layout(
        fig,
        "Ideal token hit rate by block size",
        "block size",
        "ideal token hit rate (%)",
        yaxis_range=[0, 100],
    )


def reuse_split(s: dict) -> go.Figure:
    """Prompt tokens: cached within a session, cached across sessions, computed."""
    parts = [
        ("reused within a session", s["within_session_tokens"], COLORS[0]),
        ("reused across sessions", s["cross_session_tokens"], COLORS[2]),
        ("not reusable (computed)", s["prompt_tokens"] - s["cached_tokens"], "#bbbbbb"),
    ]
    fig = go.Figure()
    for name, tokens, color in parts:
        share = _percent(tokens, s["prompt_tokens"]) or 0.0
        fig.add_bar(
            y=["prompt tokens"],
            x=[tokens],
            name=name,
            orientation="h",
            marker_color=color,
            text=[f"{share:.1f}%"],
            hovertemplate=f"{name}: %{{x:,}} tokens ({share:.1f}%)",
        )
    return _layout(fig, "Where the reusable tokens are", "tokens", "", barmode="stack", height=260)


def prefix_sunburst(tree: list[dict]) -> go.Figure:
    """The shared prefix tree: each ring is a stretch of prompt shared by the requests below it;
    a sector's size is the tokens its subtree saves."""

    def label(node: dict) -> str:
        text = " ".join((node.get("text") or "").split())
        return (
            text[:28] + "…" if len(text) > 28 else text or f"tokens {node['start']}–{node['end']}"
        )

    ids = {n["id"] for n in tree}
    fig = go.Figure(
        go.Sunburst(
            ids=[str(n["id"]) for n in tree],
            parents=[str(n["parent"]) if n["parent"] in ids else "" for n in tree],
            labels=[label(n) for n in tree],
            values=[n["tokens_saved"] for n in tree],
            branchvalues="remainder",
            customdata=[
                [n["start"], n["end"], n["requests"], n["sessions"], n["tokens_saved"]]
                for n in tree
            ],
            hovertemplate=(
                "%{label}<br>tokens %{customdata[0]:,}–%{customdata[1]:,}"
                "<br>%{customdata[2]:,} requests, %{customdata[3]:,} sessions"
                "<br>%{customdata[4]:,} tokens saved<extra></extra>"
            ),
            marker={
                "colors": [n["requests"] for n in tree],
                "colorscale": "Blues",
                "cmin": 0,
                "colorbar": {"title": {"text": "requests"}},
            },
            maxdepth=4,
        )
    )
    fig.update_layout(
        title="Shared prefix families (sector size: tokens saved; click to zoom)",
        template=TEMPLATE,
        height=560,
        margin={"l": 10, "r": 10, "t": 60, "b": 10},
    )
    return fig


def reuse_gaps(rg: dict) -> go.Figure:
    """Cached tokens by time since their previous use, with the cumulative share and the
    5 min / 1 h / 24 h TTL lines."""
    edges, counts = rg["edges"], rg["counts"]
    total = sum(counts)
    cumulative, running = [], 0
    for c in counts:
        running += c
        cumulative.append(_percent(running, total))
    fig = go.Figure()
    fig.add_scatter(  # a histogram on a log axis: a step line over the bin edges
        x=edges,
        y=[*counts, counts[-1] if counts else 0],
        name="cached tokens per bin",
        mode="lines",
        line={"shape": "hv", "color": COLORS[0]},
        fill="tozeroy",
    )
    fig.add_scatter(
        x=edges[1:],
        y=cumulative,
        name="cumulative share (%)",
        yaxis="y2",
        mode="lines",
        line={"shape": "hv", "color": COLORS[1]},
    )
    for name, seconds in REUSE_WINDOWS.items():
        # on a log axis shapes take data values but annotations take log10 of them
        fig.add_shape(
            type="line",
            x0=seconds,
            x1=seconds,
            y0=0,
            y1=1,
            yref="paper",
            line={"dash": "dash", "color": "#555"},
        )
        fig.add_annotation(
            x=math.log10(seconds),
            y=1,
            yref="paper",
            text=f"TTL {name}",
            showarrow=False,
            xanchor="left",
            yanchor="bottom",
        )
    return _layout(
        fig,
        "Reuse time: how long a cached prefix waits for its next use",
        "time since the previous use (s, log scale)",
        "cached tokens per bin",
        xaxis_type="log",
        yaxis2={
            "title": "cumulative share of cached tokens (%)",
            "overlaying": "y",
            "side": "right",
            "range": [0, 100],
        },
    )


def breaks_by_cause(per_cause: dict, totals: dict) -> go.Figure:
    """Tokens lost per break cause (the costliest at the top), dollars in the labels."""
    rows = sorted(
        ((c, v) for c, v in per_cause.items() if v["count"]), key=lambda cv: cv[1]["tokens_lost"]
    )
    fig = go.Figure(
        go.Bar(
            y=[c for c, _ in rows],
            x=[v["tokens_lost"] for _, v in rows],
            orientation="h",
            marker_color=COLORS[3],
            text=[f"${v['dollars_lost']:,.2f} · {v['count']} breaks" for _, v in rows],
            hovertemplate="%{y}: %{x:,} tokens lost<extra></extra>",
        )
    )
    price = totals["price_input_per_mtok"]
    return _layout(
        fig,
        f"Tokens lost to prefix breaks, per cause (at ${price:g}/M input tokens)",
        "tokens recomputed because of the break",
        "cause",
        height=120 + 40 * max(len(rows), 1),
    )


def _capacity(run: dict, point: dict) -> float:
    sweep = run.get("sweep") or {}
    unit = sim_unit(run)
    tier = next((t for t in point["tiers"] if t["name"] == sweep.get("tier")), point["tiers"][0])
    return tier["blocks"] if unit == "blocks" else tier["gb"]


def points(run: dict) -> list[dict]:
    """A simulate result's points: the sweep's, or the single configuration itself."""
    return run.get("points") or [run]


def _capacity_title(unit: str) -> str:
    return "first-tier capacity (blocks)" if unit == "blocks" else "capacity of the swept tier (GB)"


def run_label(run: dict) -> str:
    """``run 3: lru, hbm sweep, B=16`` — what distinguishes simulation runs in a legend."""
    cfg = run["config"]
    what = f"{run['sweep']['tier']} sweep" if run.get("sweep") else "one point"
    more = f", {cfg['replicas']} replicas" if cfg.get("replicas", 1) > 1 else ""
    return f"run {run['run_id']}: {cfg['policy']}, {what}, B={cfg['block_size']}{more}"


def sim_unit(run: dict) -> str:
    return (run.get("sweep") or {}).get("unit") or (
        "blocks" if run["config"].get("blocks") else "gb"
    )


def sim_curves(runs: list[dict], unit: str) -> go.Figure:
    """Token hit rate against the swept tier's capacity, one line per run, its knee marked;
    single-point runs as markers; the ideal (infinite cache) as a dashed line."""
    fig = go.Figure()
    for i, run in enumerate(runs):
        color = COLORS[i % len(COLORS)]
        xs = [_capacity(run, p) for p in points(run)]
        ys = [100 * (p["token_hit_rate"] or 0) for p in points(run)]
        fig.add_scatter(
            x=xs,
            y=ys,
            name=run_label(run),
            mode="lines+markers" if len(xs) > 1 else "markers",
            line={"color": color},
            marker={"size": 8},
        )
        knee = (run.get("sweep") or {}).get("knee")
        if knee is not None:
            fig.add_scatter(
                x=[knee],
                y=[ys[xs.index(knee)]],
                mode="markers+text",
                text=["knee"],
                textposition="top left",
                showlegend=False,
                marker={"symbol": "star", "size": 14, "color": color},
            )
    ideal = [r["ideal_hit_rate"] for r in runs if r.get("ideal_hit_rate") is not None]
    if ideal:
        fig.add_hline(
            y=100 * max(ideal),
            line_dash="dash",
            line_color="#555",
            annotation_text="ideal (infinite cache)",
        )
    return _layout(
        fig,
        "Hit rate vs cache capacity",
        _capacity_title(unit),
        "token hit rate (%)",
        yaxis_range=[0, 100],
    )


def sim_costs(runs: list[dict], unit: str) -> go.Figure:
    """Dollars per month against capacity: recompute avoided, storage, and net, per sweep."""
    fig = go.Figure()
    for i, run in enumerate(runs):
        color = COLORS[i % len(COLORS)]
        xs = [_capacity(run, p) for p in points(run)]
        for key, dash, name in (
            ("net_per_month", "solid", "net"),
            ("recompute_avoided_per_month", "dash", "recompute avoided"),
            ("storage_per_month", "dot", "storage"),
        ):
            ys = [p["cost"][key] for p in points(run)]
            if all(y is None for y in ys):
                continue
            fig.add_scatter(
                x=xs,
                y=ys,
                name=f"{name} ({run_label(run)})",
                mode="lines+markers",
                line={"color": color, "dash": dash},
            )
    return _layout(fig, "Cost vs capacity", _capacity_title(unit), "$ per month")


def replay_agreement(validations: list[dict]) -> go.Figure:
    """Predicted (kvtool simulate) vs observed (vLLM) token hit rate per replay run."""
    ok = [v for v in validations if v.get("predicted_hit_rate") is not None]
    x = [f"replay {v['run_id']}" for v in ok]
    fig = go.Figure()
    fig.add_bar(
        x=x,
        y=[100 * v["predicted_hit_rate"] for v in ok],
        name="predicted (simulate)",
        marker_color=COLORS[0],
    )
    fig.add_bar(
        x=x,
        y=[100 * (v.get("observed_hit_rate") or 0) for v in ok],
        name="observed (vLLM /metrics)",
        marker_color=COLORS[1],
    )
    return _layout(
        fig,
        "Replay: predicted vs observed hit rate",
        "replay run",
        "token hit rate (%)",
        barmode="group",
        yaxis_range=[0, 100],
    )


def _signed_dollars(r: WaterfallRow) -> str:
    """A level's dollars, or a step's with the way it moves the level (− lost, + gained)."""
    sign = "" if r.kind == "level" or r.dollars == 0 else "−" if r.dollars > 0 else "+"
    return f"{sign}${abs(r.dollars):,.4f}"


def shortfall_waterfall(provider: dict) -> go.Figure:
    """A provider's shortfall waterfall (``provider.shortfall``): one bar per level and step,
    the breaks step as one bar per cause (they sum to it); dollars at the cached-token value
    in the labels. Labels from input are HTML-escaped (plotly reads tags in text)."""
    sf = provider["shortfall"]
    by_cause = bool(sf["breaks"] and sf["breaks"]["by_cause"])
    rows = [r for r in waterfall_rows(sf) if not (by_cause and r.key == "breaks")]
    measure = [
        "absolute" if k == 0 else "total" if r.kind == "level" else "relative"
        for k, r in enumerate(rows)
    ]
    fig = go.Figure(
        go.Waterfall(
            x=[html.escape(f"breaks: {r.label}" if r.kind == "cause" else r.label) for r in rows],
            y=[r.tokens if r.kind == "level" else -r.tokens for r in rows],
            measure=measure,
            text=[_signed_dollars(r) for r in rows],
            textposition="outside",
            decreasing={"marker": {"color": COLORS[3]}},
            increasing={"marker": {"color": COLORS[2]}},
            totals={"marker": {"color": COLORS[0]}},
            connector={"line": {"color": "#999"}},
            hovertemplate="%{x}: %{y:,} tokens (%{text})<extra></extra>",
        )
    )
    title = html.escape(f"Shortfall: ideal cached tokens → {provider['name']} ({provider['ttl']})")
    return _layout(fig, title, "", "cached tokens", showlegend=False)
