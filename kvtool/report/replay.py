"""Terminal rendering (rich) of a replay run and its validation: predicted vs observed. The
endpoint, model, errors and launch command reach rich escaped with emoji codes off: they print
literally."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kvtool.report.format import pct, seconds


def render_replay(console: Console, s: dict) -> None:
    console.print(
        f"replay run {s['run_id']} against {escape(s['endpoint'])} ({escape(s['model'])}): "
        f"{s['requests_ok']:,} requests ok, {s['requests_failed']:,} failed",
        emoji=False,
    )
    for error in s["errors"]:
        console.print(f"[yellow]error:[/] {escape(error)}", emoji=False)
    if "launch_command" in s["config"]:
        console.print("launched: " + escape(" ".join(s["config"]["launch_command"])), emoji=False)
    t = Table(title="predicted vs observed", title_justify="left")
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_row("observed token hit rate (/metrics)", pct(s["observed_hit_rate"]))
    t.add_row("observed token hit rate (usage.cached_tokens)", pct(s["observed_hit_rate_usage"]))
    t.add_row("predicted token hit rate (kvtool simulate)", pct(s["predicted_hit_rate"]))
    t.add_row("requests whose cached tokens match", pct(s["request_agreement"]))
    t.add_row("requests whose prompt tokens match", pct(s.get("prompt_token_agreement")))
    t.add_row(
        "median TTFT of requests with / without a hit",
        f"{seconds(s.get('ttft_median_hits_s'))} / {seconds(s.get('ttft_median_misses_s'))}",
    )
    console.print(t)
