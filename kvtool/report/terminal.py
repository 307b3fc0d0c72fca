"""Terminal rendering (rich) of ``kvtool ingest`` (files read, lines rejected) and ``kvtool
analyze`` (prefix reuse, top shared prefixes, prefix breaks with their token-level diffs).

Every string from the input (paths, reasons, models, prompt text, ids) reaches rich escaped, or
as a ``Text`` table cell, and printed with emoji codes off: it shows literally whatever it holds."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from kvtool.ingest import FileReport
from kvtool.markup import diff_markup
from kvtool.report.format import num, pct, warmup_note


def render_ingest(console: Console, reports: Sequence[FileReport]) -> None:
    table = Table(title="ingest", title_justify="left")
    counts = ("lines", "requests", "rejected", "skipped")
    for col in ("file", "format", *counts, "note"):
        table.add_column(col, justify="right" if col in counts else "left")
    for r in reports:
        reasons = {**r.reasons, **{f"skipped: {k}": v for k, v in r.out_of_scope_reasons.items()}}
        note = (
            "already ingested"
            if r.skipped
            else ", ".join(
                f"{k} ×{v}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])[:3]
            )
        )
        table.add_row(
            Text(r.path),
            Text(r.format),
            num(r.lines),
            num(r.requests),
            num(r.rejected),
            num(r.out_of_scope),
            Text(note),
        )
    console.print(table)
    if any(r.rejected or r.out_of_scope for r in reports):
        console.print(
            "rejected and skipped records: SELECT * FROM rejects (file, line, item, reason, raw, "
            "skipped) in the db"
        )


def render_analysis(console: Console, s: dict) -> None:
    files = s.get("files", [])
    console.print(
        f"[bold]{s['requests']:,}[/] requests in [bold]{s['sessions']:,}[/] sessions "
        f"from {len(files)} file(s); {s['rejected_lines']:,} lines rejected"
    )
    note = warmup_note(s.get("warmup"))
    if note is not None:
        console.print(f"[yellow]{escape(note)}[/]", emoji=False)
    if s["sessions_inferred"]:
        console.print(
            f"[yellow]{s['sessions_inferred']:,} sessions were inferred[/] "
            "from prefix continuation "
            "(requests without a session id)"
        )
    unusable = s.get("unusable_prompts") or {}
    left_out = (unusable.get("truncated") or 0) + (unusable.get("incomplete") or 0)
    if left_out:
        console.print(
            f"[yellow]{left_out:,} requests left out[/]: the log does not hold the prompt that "
            f"was sent ({unusable['truncated']:,} truncated by the logger, "
            f"{unusable['incomplete']:,} incomplete, e.g. continuing a stored response)"
        )
    if s.get("tokenization", {}).get("mode") == "whole":
        console.print(
            "[yellow]note:[/] segment-wise tokenization did not match one-call tokenization for "
            "this tokenizer, so every distinct prompt was tokenized whole (exact, but slower)"
        )
    t = Table(title="prefix reuse (infinite cache, vLLM semantics)", title_justify="left")
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_row("prompt tokens", num(s["prompt_tokens"]))
    t.add_row("output tokens", num(s["output_tokens"]))
    t.add_row(f"ideal token hit rate @ block {s['block_size']}", pct(s["ideal_hit_rate"]))
    oc = s.get("output_caching")
    if oc and oc["applies"]:  # the other semantics, for comparison
        other = "prompt_only" if oc["enabled"] else "with_output"
        label = "prompt blocks only" if oc["enabled"] else "with output blocks"
        t.add_row(f"  {label}", pct(oc[f"ideal_hit_rate_{other}"]))
    for size, rate in s["ideal_hit_rate_by_block_size"].items():
        if int(size) != s["block_size"]:
            t.add_row(f"  @ block {size}", pct(rate))
    cached = s["cached_tokens"] or 0
    t.add_row(
        "reusable tokens within a session",
        f"{num(s['within_session_tokens'])} "
        f"({pct(s['within_session_tokens'] / cached if cached else None)})",
    )
    t.add_row(
        "reusable tokens across sessions",
        f"{num(s['cross_session_tokens'])} "
        f"({pct(s['cross_session_tokens'] / cached if cached else None)})",
    )
    for window, share in s["reuse_within"].items():
        t.add_row(f"reused within {window} of previous use", pct(share))
    ws = num(s["working_set_tokens"]) + " tokens"
    if s["working_set_gb"] is not None:
        ws += f" = {s['working_set_gb']:.2f} GB KV for {s['model']}"
    t.add_row("working set (distinct cacheable)", Text(ws))
    if s["observed_requests"]:
        t.add_row(
            f"observed hit rate ({s['observed_requests']:,} requests with usage)",
            f"{pct(s['observed_hit_rate'])} (predicted {pct(s['predicted_hit_rate_on_observed'])})",
        )
    console.print(t)
    if s["top_prefixes"]:
        p = Table(title="top shared prefixes (tokens × reuse)", title_justify="left")
        for col in ("tokens", "requests", "sessions", "tokens saved"):
            p.add_column(col, justify="right")
        p.add_column("prefix ends with", overflow="fold", max_width=56)
        for row in s["top_prefixes"]:
            p.add_row(
                num(row["tokens"]),
                num(row["requests"]),
                num(row["sessions"]),
                num(row["tokens_saved"]),
                Text(row["ends_with"] or ""),
            )
        console.print(p)
    if s.get("breaks") is not None:
        render_breaks(console, s)


def render_breaks(console: Console, s: dict) -> None:
    """The breaks section: per cause counts, tokens and dollars lost, then the top examples with
    their token-level diffs (``[-removed-]`` red, ``{+added+}`` green, as wdiff marks them)."""
    total = s["break_summary"]
    price = total["price_input_per_mtok"]
    t = Table(
        title=f"prefix breaks (what ended a cached prefix; $ at {price:g}/M input tokens)",
        title_justify="left",
    )
    for col in ("cause", "breaks", "tokens lost", "share of prompt", "$ lost"):
        t.add_column(col, justify="left" if col == "cause" else "right")
    rows = sorted(s["breaks"].items(), key=lambda kv: -kv[1]["tokens_lost"])
    for cause, b in rows:
        if b["count"]:
            t.add_row(
                Text(cause),
                num(b["count"]),
                num(b["tokens_lost"]),
                pct(b["share_of_prompt_tokens"]),
                f"{b['dollars_lost']:,.2f}",
            )
    t.add_row(
        "[bold]all[/]",
        num(total["breaks"]),
        num(total["tokens_lost"]),
        pct(total["share_of_prompt_tokens"]),
        f"{total['dollars_lost']:,.2f}",
    )
    if not total["breaks"]:
        console.print("no prefix breaks: every request extends its predecessor")
        return
    console.print(t)
    for cause, b in rows:
        for ex in b["examples"][:1]:
            console.print(
                f"[bold]{escape(cause)}[/] {escape(ex['request_id'])} after "
                f"{escape(ex['predecessor_id'])}: token {ex['position']:,} in "
                f"[cyan]{escape(ex['path'])}[/], {ex['tokens_lost']:,} tokens lost — "
                f"{escape(ex['detail'])}",
                highlight=False,
                emoji=False,
            )
            if any(ex["diff"].values()):  # a redacted database has no text to show
                console.print(f"    {diff_markup(ex['diff'])}", highlight=False, emoji=False)
