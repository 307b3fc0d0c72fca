"""Terminal rendering (rich) of a ``kvtool simulate`` result: one configuration, or a sweep's
hit rate, TTFT and cost per capacity. Names from the input (model, tiers) reach rich escaped
(or as ``Text``) with emoji codes off: they print literally."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from kvtool.report.format import money, num, pct, seconds


def render_simulation(console: Console, s: dict) -> None:
    cfg = s["config"]
    console.print(
        f"[bold]{s['requests']:,}[/] requests, {s['prompt_tokens']:,} prompt tokens; "
        f"policy [bold]{escape(cfg['policy'])}[/], block {cfg['block_size']} tokens, "
        f"write-{escape(cfg['write_policy'])}, KV {num(cfg['kv_bytes_per_token'])} B/token "
        f"({escape(cfg['model'] or 'no model')}); ideal hit rate {pct(s['ideal_hit_rate'])}",
        emoji=False,
    )
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
    t.add_row("token hit rate", pct(s["token_hit_rate"]))
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
            pct(p["token_hit_rate"]),
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
