"""The HTML page: one self-contained file (plotly.js inlined, no network needed to open it).

Sections are rendered from the JSON that analyze, simulate and validate return: ``write_analysis``
(``analyze --html``), ``write_simulation`` (``simulate --html``) and ``write_overview`` (``kvtool
report``, whose data ``kvtool.overview`` gathers) share them. Chart specs are embedded as JSON and
drawn on load; when every chart has rendered the page sets ``<body data-charts-rendered="N">``,
or ``data-charts-failed="error"`` when one fails (what the browser test waits for).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import jinja2
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from kvtool.report import figures
from kvtool.report.format import DASH, money, num, pct, warmup_note
from kvtool.report.waterfall import waterfall_rows
from kvtool.store import check_output

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("kvtool.report", "."),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


@dataclass
class Table:
    caption: str
    headers: list[str]
    rows: list[list[str]]
    numeric: set[int] = field(default_factory=set)  # right-aligned columns


@dataclass
class Chart:
    name: str
    figure: go.Figure
    id: str = ""  # set by render: unique on the page

    @property
    def spec(self) -> str:
        """The figure's JSON, safe inside a <script> element."""
        return self.figure.to_json().replace("</", "<\\/")


@dataclass
class Section:
    id: str
    title: str
    lead: str = ""
    charts: list[Chart] = field(default_factory=list)
    tables_before: list[Table] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    examples: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _pct(v: float | None) -> str:
    return pct(v, DASH)


def _n(v: float | int | None) -> str:
    return num(v, DASH)


def _version() -> str:
    """The installed kvtool's version, without importing the package's edge."""
    try:
        return version("kvtool")
    except PackageNotFoundError:
        return "unknown"


def files_label(summary: dict) -> str:
    """The analyzed files' names, for a page's subtitle."""
    return ", ".join(Path(f["path"]).name for f in summary["files"])


def analysis_sections(s: dict) -> list[Section]:
    """Traffic, reuse and breaks sections from an analyze summary made with ``charts=True``."""
    charts = s["charts"]
    rw = s["reuse_within"]
    facts = [
        ("requests", _n(s["requests"])),
        (
            "sessions",
            f"{s['sessions']:,}"
            + (f" ({s['sessions_inferred']:,} inferred)" if s["sessions_inferred"] else ""),
        ),
        ("prompt tokens", _n(s["prompt_tokens"])),
        (f"ideal token hit rate (block {s['block_size']})", _pct(s["ideal_hit_rate"])),
        ("reused within sessions", f"{s['within_session_tokens']:,} tokens"),
        ("reused across sessions", f"{s['cross_session_tokens']:,} tokens"),
        ("reuse within 5 min / 1 h / 24 h", " / ".join(_pct(rw[k]) for k in ("5m", "1h", "24h"))),
        (
            "working set",
            f"{s['working_set_tokens']:,} tokens"
            + (
                f" = {s['working_set_gb']:.2f} GB of KV ({s['model']})"
                if s["working_set_gb"]
                else ""
            ),
        ),
        ("observed hit rate (logged cached tokens)", _pct(s["observed_hit_rate"])),
        ("rejected input lines", _n(s["rejected_lines"])),
    ]
    note = warmup_note(s.get("warmup"))
    if note is not None:  # the page escapes every cell
        facts.insert(0, ("measurement window", note))
    unusable = s.get("unusable_prompts") or {}
    if unusable.get("truncated") or unusable.get("incomplete"):
        facts.append(
            (
                "left out: prompt not in the log (truncated / incomplete)",
                f"{_n(unusable['truncated'])} / {_n(unusable['incomplete'])}",
            )
        )
    traffic = Section(
        "traffic",
        "Traffic",
        f"{s['requests']:,} requests from {len(s['files'])} file(s), tokenized with "
        f"{s['tokenizer'] or 'the trace’s own block hashes'}.",
        charts=[
            Chart("timeline", figures.timeline(charts["timeline"])),
            Chart("prompt_lengths", figures.prompt_lengths(charts["prompt_lengths"])),
            Chart("block_sizes", figures.hit_rate_by_block_size(s["ideal_hit_rate_by_block_size"])),
        ],
        tables_before=[Table("Key figures", ["", "value"], [list(f) for f in facts], {1})],
    )
    prefixes = Table(
        "Top shared prefixes (tokens × reuse)",
        ["tokens", "requests", "sessions", "tokens saved", "ends with"],
        [
            [
                _n(p["tokens"]),
                _n(p["requests"]),
                _n(p["sessions"]),
                _n(p["tokens_saved"]),
                p["ends_with"] or "",
            ]
            for p in s["top_prefixes"]
        ],
        {0, 1, 2, 3},
    )
    reuse = Section(
        "reuse",
        "Where the reusable tokens are",
        "A sector is a stretch of prompt shared by every request below it (system prompt, tool "
        "catalog, documents, history); its size is the tokens its subtree saves. The reuse-time "
        "chart shows how long a cache must keep a prefix: the share of cached tokens left of a "
        "TTL line is what a cache with that TTL still serves.",
        charts=[Chart("reuse_split", figures.reuse_split(s))]
        + (
            [Chart("prefix_tree", figures.prefix_sunburst(charts["prefix_tree"]))]
            if charts["prefix_tree"]
            else []
        )
        + (
            [Chart("reuse_gaps", figures.reuse_gaps(charts["reuse_gaps"]))]
            if charts["reuse_gaps"]["counts"]
            else []
        ),
        tables=[prefixes] if s["top_prefixes"] else [],
    )
    if not charts["reuse_gaps"]["counts"]:
        reuse.notes.append("The logs carry no timestamps: no reuse-time distribution.")
    sections = [traffic, reuse]
    if s.get("breaks") is not None:
        totals = s["break_summary"]
        brk = Section(
            "breaks",
            "Prefix breaks",
            f"{totals['breaks']:,} requests diverged from their predecessor before the reusable "
            f"part ended: {totals['tokens_lost']:,} tokens "
            f"({_pct(totals['share_of_prompt_tokens'])} of prompt tokens) recomputed, "
            f"${totals['dollars_lost']:,.2f} at "
            f"${totals['price_input_per_mtok']:g}/M input tokens. Examples: the costliest of each "
            "cause, with the token-level diff (removed struck through, added underlined).",
        )
        if totals["breaks"]:
            brk.charts.append(Chart("breaks", figures.breaks_by_cause(s["breaks"], totals)))
        brk.examples = [
            {"cause": cause, **ex}
            for cause, v in sorted(s["breaks"].items(), key=lambda cv: -cv[1]["tokens_lost"])
            for ex in v["examples"]
        ]
        sections.append(brk)
    return sections


def simulation_section(runs: list[dict]) -> Section | None:
    """Hit rate and cost vs capacity for simulate results (newest last), or None."""
    if not runs:
        return None
    sec = Section(
        "simulation",
        "Simulation",
        "Token hit rate and dollars per month against the capacity of the swept tier, one line "
        "per simulate run (the knee is starred), next to the ideal of an infinite cache.",
    )
    for unit in ("gb", "blocks"):
        mine = [r for r in runs if figures.sim_unit(r) == unit]
        if mine:
            sec.charts.append(Chart(f"sim_curves_{unit}", figures.sim_curves(mine, unit)))
            if any(p["cost"]["net_per_month"] is not None for r in mine for p in figures.points(r)):
                sec.charts.append(Chart(f"sim_costs_{unit}", figures.sim_costs(mine, unit)))
    rows = []
    for r in runs:
        best = max(figures.points(r), key=lambda p: p["token_hit_rate"] or 0)
        sweep = r.get("sweep") or {}
        rows.append(
            [
                figures.run_label(r),
                _pct(r["ideal_hit_rate"]),
                _pct(best["token_hit_rate"]),
                _n(sweep.get("knee")),
                money(best["cost"]["net_per_month"], DASH),
            ]
        )
    sec.tables.append(
        Table(
            "Runs",
            ["run", "ideal", "best hit rate", "knee", "best net per month"],
            rows,
            {1, 2, 3, 4},
        )
    )
    for r in runs:
        provider = r.get("provider") or {}
        if provider.get("shortfall") is not None:
            sec.charts.append(
                Chart(f"shortfall_{r['run_id']}", figures.shortfall_waterfall(provider))
            )
            sec.tables.append(shortfall_table(r["run_id"], provider))
            sec.notes += [f"run {r['run_id']}: {n}" for n in provider["shortfall"]["notes"]]
    return sec


def shortfall_table(run_id: int | None, provider: dict) -> Table:
    """A provider's shortfall waterfall as a table: each level and step (a step's cached
    tokens and dollars are what it takes away)."""
    rows = [
        [
            {"level": "", "step": "− ", "cause": "  − breaks: "}[r.kind] + r.label,
            _n(r.tokens),
            f"${r.dollars:,.4f}",
        ]
        for r in waterfall_rows(provider["shortfall"])
    ]
    return Table(
        f"Run {run_id}: shortfall on {provider['name']} (TTL {provider['ttl']}), ideal → provider",
        ["", "cached tokens", "$ at the cached-token discount"],
        rows,
        {1, 2},
    )


def replay_section(validations: list[dict]) -> Section | None:
    """Predicted vs observed per replay run, or None."""
    if not validations:
        return None
    sec = Section(
        "replay",
        "Replay: simulation vs a real vLLM",
        "Each replay run next to the simulation of the same server configuration "
        "(kvtool validate).",
    )
    if any(v.get("predicted_hit_rate") is not None for v in validations):
        sec.charts.append(Chart("replay", figures.replay_agreement(validations)))
    sec.tables.append(
        Table(
            "Replay runs",
            [
                "run",
                "model",
                "requests ok",
                "failed",
                "predicted",
                "observed",
                "requests agreeing",
                "TTFT hits / misses (median s)",
                "note",
            ],
            [
                [
                    str(v["run_id"]),
                    v["model"],
                    _n(v["requests_ok"]),
                    _n(v["requests_failed"]),
                    _pct(v.get("predicted_hit_rate")),
                    _pct(v.get("observed_hit_rate")),
                    _pct(v.get("request_agreement")),
                    f"{_n(v.get('ttft_median_hits_s'))} / {_n(v.get('ttft_median_misses_s'))}",
                    v.get("prediction_note") or v.get("error") or "",
                ]
                for v in validations
            ],
            {2, 3, 4, 5, 6},
        )
    )
    return sec


def render(sections: list[Section], title: str, subtitle: str = "") -> str:
    """The whole page. Chart ids are unique across sections."""
    kvtool_version = _version()
    for i, chart in enumerate(c for s in sections for c in s.charts):
        chart.id = f"chart-{i}-{chart.name}"
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return _ENV.get_template("report.html.jinja").render(
        sections=sections,
        title=title,
        subtitle=f"{subtitle} · generated {stamp} by kvtool {kvtool_version}".lstrip(" ·"),
        version=kvtool_version,
        plotly_js=get_plotlyjs(),
    )


def write(path: str | Path, sections: list[Section], title: str, subtitle: str = "") -> dict:
    """Render and write; returns ``path``, ``bytes``, ``sections`` (ids) and ``charts``.
    ``OptionError`` on ``path`` when it is a directory."""
    check_output(path, param="path")
    html = render(sections, title, subtitle)
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return {
        "path": str(path),
        "bytes": len(html.encode()),
        "sections": [s.id for s in sections],
        "charts": sum(len(s.charts) for s in sections),
    }


def write_analysis(path: str | Path, summary: dict) -> dict:
    """The ``analyze --html`` page: traffic, reuse and breaks of a summary made with
    ``charts=True``; returns ``write``'s dict."""
    return write(path, analysis_sections(summary), "kvtool analyze", files_label(summary))


def write_simulation(path: str | Path, run: dict) -> dict:
    """The ``simulate --html`` page: the simulation section of one simulate result."""
    section = simulation_section([run])
    assert section is not None
    return write(path, [section], "kvtool simulate", f"simulate run {run['run_id']}")


def write_overview(
    path: str | Path, summary: dict, sim_runs: list[dict], validations: list[dict]
) -> dict:
    """The ``kvtool report`` page: the analysis, then the simulate runs (oldest first) and the
    replay validations when there are any; returns ``write``'s dict plus ``sim_runs`` and
    ``replay_runs`` (how many are shown)."""
    sections = analysis_sections(summary)
    sections += [s for s in (simulation_section(sim_runs), replay_section(validations)) if s]
    out = write(path, sections, "kvtool report", files_label(summary))
    return {**out, "sim_runs": len(sim_runs), "replay_runs": len(validations)}
