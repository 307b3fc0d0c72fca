"""Terminal rendering (rich) of a ``kvtool simulate`` result: one configuration, or a sweep's
hit rate, TTFT and cost per capacity. Names from the input (model, tiers) reach rich escaped
(or as ``Text``) with emoji codes off: they print literally."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from kvtool.report.format import money, num, pct, seconds, warmup_note
from kvtool.report.waterfall import WaterfallRow, waterfall_rows

BAR_WIDTH = 24  # characters of the widest waterfall bar (the table fits 80 columns)


def render_simulation(console: Console, s: dict) -> None:
    cfg = s["config"]
    console.print(
        f"[bold]{s['requests']:,}[/] requests, {s['prompt_tokens']:,} prompt tokens; "
        f"policy [bold]{escape(cfg['policy'])}[/], block {cfg['block_size']} tokens, "
        f"write-{escape(cfg['write_policy'])}, KV {num(cfg['kv_bytes_per_token'])} B/token "
        f"({escape(cfg['model'] or 'no model')}); ideal hit rate {pct(s['ideal_hit_rate'])}",
        emoji=False,
    )
    note = warmup_note(s.get("warmup"))
    if note is not None:
        console.print(f"[yellow]{escape(note)}[/]", emoji=False)
    unusable = [name for name, ok in cfg["usable_lower_tiers"].items() if not ok]
    if unusable:
        console.print(
            f"[yellow]note:[/] loading from {escape(', '.join(unusable))} is slower than "
            f"recomputing at {cfg['prefill_tps']:,.0f} tokens/s, so those tiers never serve hits",
            emoji=False,
        )
    if "points" in s:
        _render_sweep(console, s)
    else:
        _render_point(console, s)
    points = s.get("points") or [s]
    if any((p.get("sample") or {}).get("rate", 1) < 1 for p in points):
        salts = s["config"]["sample_salts"]
        console.print(
            f"estimated from {'a sample' if salts == 1 else f'{salts} samples'} of prefix "
            f"families at rate {s['config']['sample']:g} (± one standard error, from random "
            "groups of its families; each point's rate in --json, small capacities at higher "
            "rates)",
            emoji=False,
        )
    if s.get("provider") is not None:
        _render_provider(console, s["provider"])


def _render_point(console: Console, s: dict) -> None:
    t = Table(title="simulated cache", title_justify="left")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for tier in s["tiers"]:
        t.add_row(
            Text(f"tier {tier['name']}"),
            f"{num(tier['gb'])} GB = {num(tier['blocks'])} × {tier['block_tokens']} tokens",
        )
    t.add_row("token hit rate", _rate(s))
    for name, tokens in s["hits_by_tier"].items():
        t.add_row(Text(f"  hit tokens from {name}"), num(tokens))
    t.add_row("prefill tokens saved", num(s["prefill_tokens_saved"]))
    t.add_row("requests with a hit", pct(s["request_hit_rate"]))
    ttft = s["ttft_estimate"]
    t.add_row("TTFT p50 / p90 / p99", " / ".join(seconds(ttft[k]) for k in ("p50", "p90", "p99")))
    cost = s["cost"]
    t.add_row("recompute $ avoided (trace)", money(cost["recompute_avoided"]))
    t.add_row("  per month at this rate", money(cost["recompute_avoided_per_month"]))
    t.add_row("storage $ per month", money(cost["storage_per_month"]))
    t.add_row("net $ per month", money(cost["net_per_month"]))
    console.print(t)


def _rate(point: dict) -> str:
    """A point's token hit rate; a sampled one with its standard error (``± 0.4%``)."""
    shown = pct(point["token_hit_rate"])
    error = (point.get("sample") or {}).get("token_hit_rate_error")
    return f"{shown} ± {pct(error)}" if error else shown


def _render_sweep(console: Console, s: dict) -> None:
    sw = s["sweep"]
    unit = "GB" if sw["unit"] == "gb" else "blocks"
    t = Table(title=Text(f"hit rate vs {sw['tier']} capacity"), title_justify="left")
    for col in (f"{sw['tier']} ({unit})", "token hit rate", "of ideal", "TTFT p90", "net $/month"):
        t.add_column(Text(col), justify="right")
    for p in s["points"]:
        tier = next(x for x in p["tiers"] if x["name"] == sw["tier"])
        x = tier["gb"] if sw["unit"] == "gb" else tier["blocks"]
        share = (
            p["token_hit_rate"] / s["ideal_hit_rate"]
            if s["ideal_hit_rate"] and p["token_hit_rate"] is not None
            else None
        )
        t.add_row(
            num(x),
            _rate(p),
            pct(share),
            seconds(p["ttft_estimate"]["p90"]),
            money(p["cost"]["net_per_month"]),
        )
    console.print(t)
    need = ", ".join(
        f"{k} of ideal: {num(v) if v is not None else 'not reached'}"
        for k, v in sw["capacity_for_share_of_ideal"].items()
    )
    console.print(f"knee at {num(sw['knee'])} {unit}; capacity for {need}")


def _render_provider(console: Console, p: dict) -> None:
    """The provider's predicted cache and bill beside the logged ones."""
    t = Table(title=Text(f"provider {p['name']} (TTL {p['ttl']})"), title_justify="left")
    for col in ("", "predicted", "logged"):
        t.add_column(col, justify="right" if col else "left")
    t.add_row("cached tokens", num(p["predicted_cached_tokens"]), num(p["observed_cached_tokens"]))
    t.add_row("token hit rate", pct(p["predicted_hit_rate"]), pct(p["observed_hit_rate"]))
    bill = p["bill"]
    t.add_row(
        "bill $ (no cache " + money(bill["no_cache"]) + ")",
        money(bill["predicted"]),
        money(bill["observed"]),
    )
    t.add_row("requests within 2 points of the log", "", pct(p["request_agreement"]))
    console.print(t)
    if p["fallback_models"]:
        console.print(
            Text(f"note: priced as the provider's fallback: {', '.join(p['fallback_models'])}")
        )
    counts = p.get("token_counts")
    if counts is not None:
        console.print(Text(f"token counts: {counts['expected_error']}"))
    if p.get("shortfall") is not None:
        _render_shortfall(console, p["shortfall"])
    if p.get("advice") is not None:
        _render_advice(console, p["advice"])


def _render_advice(console: Console, advice: list[dict]) -> None:
    """The breakpoint advisor's changes, in the order they apply, each re-simulated: its hit
    rate before and after and its saving per trace and per month (the description holds
    logged text: it reaches rich as ``Text``)."""
    if not advice:
        console.print(Text("breakpoint advice: none (no change re-simulated lowers the bill)"))
        return
    t = Table(title=Text("breakpoint advice (re-simulated)"), title_justify="left")
    for col in ("change", "hit rate", "saving $/trace", "saving $/month"):
        t.add_column(col, justify="left" if col == "change" else "right")
    for a in advice:
        where = "".join(
            f"\n  at {b['where']}" + ("" if b["tokens"] is None else f" (token {b['tokens']:,})")
            for b in a["breakpoints"]
        )
        if a["example_request"] is not None:
            where += f"\n  (token offsets in request {a['example_request']})"
        t.add_row(
            Text(a["description"] + where),
            f"{pct(a['hit_rate_before'])} → {pct(a['hit_rate_after'])}",
            f"${a['saving_per_trace']:,.4f}",
            money(a["saving_per_month"]),
        )
    console.print(t)
    notes = {a["note"] for a in advice if a["note"]}
    for note in sorted(notes):
        console.print(Text(f"note: {note}"))


def _render_shortfall(console: Console, sf: dict) -> None:
    """The waterfall from the ideal cached tokens down to the provider's: one row per level
    (a solid bar) and step (its span, shaded; a gain hatched), dollars at the cached-token
    discount."""
    rows = waterfall_rows(sf)
    scale = max([1, *(max(r.before, r.after) for r in rows)])
    t = Table(
        title="shortfall: ideal cached tokens → the provider's ($: cached-token value)",
        title_justify="left",
        box=None,
    )
    t.add_column("")
    t.add_column("tokens", justify="right")
    t.add_column("$", justify="right")
    t.add_column("")
    for r in rows:
        sign = "" if r.kind == "level" or r.tokens == 0 else "−" if r.tokens > 0 else "+"
        indent = {"level": "", "step": "  ", "cause": "    "}[r.kind]
        t.add_row(
            Text(indent + r.label),
            f"{sign}{abs(r.tokens):,}",
            f"{sign}${abs(r.dollars):,.4f}",
            _bar(r, scale),
        )
    console.print(t)
    for note in sf["notes"]:
        console.print(Text(f"note: {note}"))


def _bar(r: WaterfallRow, scale: int) -> Text:
    """The row's span on a ``BAR_WIDTH``-character token axis."""
    lo, hi = (round(BAR_WIDTH * v / scale) for v in sorted((r.before, r.after)))
    if r.kind == "level":
        return Text("█" * hi, style="bold")
    char, style = ("▒", "red") if r.tokens >= 0 else ("░", "green")
    return Text(" " * lo + char * max(hi - lo, 1 if r.tokens else 0), style=style)
