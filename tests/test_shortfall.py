"""The shortfall waterfall (kvtool/simulate/shortfall.py, docs/providers.md "Shortfall
waterfall"): from the ideal cached tokens down to the provider's, in tokens and dollars.

Rules and prices are the shipped data: OpenAI caches from 1,024 tokens in 128-token increments,
keeps an idle prefix 300 s (in-memory retention), routes by the first 256 tokens and overflows
above 15 requests per minute; gpt-5.4 costs $2.5 / M input and $0.25 / M cached input, so a
cached token is worth $2.25 / M. Workloads are built with the real chain hashing
(tests/workloads.py); logs go through the real ingest, tokenizer and break detection.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from pathlib import Path

import numpy as np
import orjson
import pytest
from formats_check import write_jsonl
from pages import charts
from rich.console import Console
from test_docs import DOCS, documented_keys
from typer.testing import CliRunner
from workloads import token_workload

from kvtool.analyze import analyze, break_losses
from kvtool.cli import app
from kvtool.providers import load_provider
from kvtool.report import html
from kvtool.report.simulate import render_simulation
from kvtool.simulate import simulate
from kvtool.simulate.providers import ProviderSpec, predict_provider
from kvtool.simulate.shortfall import shortfall
from kvtool.traffic import BreakLosses

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "traces" / "demo-agent.jsonl.gz"
MOONCAKE = ROOT / "traces" / "mooncake" / "conversation_trace.jsonl.gz"
VALUE = 2.25e-6  # gpt-5.4: $2.5 - $0.25 per million tokens
STEPS = ("placement", "generated_output", "routing", "minimum_length", "ttl_expiry")
HOSTILE = "<script>alert(1)</script>[bold red]x[/] :smile:"


def toks(start: int, n: int) -> list[int]:
    """n distinct token ids from ``start`` (ranges that do not overlap share no block)."""
    return list(range(start, start + n))


def run_waterfall(wl, provider: str, losses: BreakLosses | None, **spec):
    s = ProviderSpec(load_provider(provider), **spec)
    predict = partial(predict_provider, wl)
    return shortfall(wl, s, predict, predict(s), losses)


def assert_adds_up(sf: dict) -> None:
    """Levels and steps telescope: ideal − Σ steps = observed (or predicted), in integer tokens
    and in dollars within 1e-9."""
    end = sf["observed"] or sf["predicted"]
    steps = [sf[k] for k in STEPS] + [sf["unexplained"] or {"tokens": 0, "dollars": 0.0}]
    breaks = sf["breaks"] or {"tokens": 0, "dollars": 0.0}
    assert all(isinstance(s["tokens"], int) for s in [*steps, breaks, end, sf["ideal"]])
    assert sf["ideal"]["tokens"] - breaks["tokens"] == sf["infinite_cache"]["tokens"]
    assert (
        sf["infinite_cache"]["tokens"] - sum(sf[k]["tokens"] for k in STEPS)
        == (sf["predicted"]["tokens"])
    )
    assert (
        sf["ideal"]["tokens"] - breaks["tokens"] - sum(s["tokens"] for s in steps)
        == (end["tokens"])
    )
    dollars = sf["ideal"]["dollars"] - breaks["dollars"] - sum(s["dollars"] for s in steps)
    assert abs(dollars - end["dollars"]) < 1e-9
    if sf["breaks"] is not None:
        causes = sf["breaks"]["by_cause"].values()
        assert sum(c["tokens"] for c in causes) == breaks["tokens"]
        assert abs(sum(c["dollars"] for c in causes) - breaks["dollars"]) < 1e-9


def test_hand_computed_waterfall():
    """Five gpt-5.4 requests, 10 s apart except for a 380 s gap; S is a 2,000-token system
    prompt, A and B 100-token turns. Per request (infinite cache = full 16-token blocks seen
    before, at most (n − 1) // 16; the provider: 16-token match rounded down to 128):

    r0 t=0    S+A    n=2100  first: 0 everywhere
    r1 t=10   S+A+B  n=2200  infinite 131 blocks = 2,096; provider 2,096 -> 2,048 (placement 48)
    r2 t=20   S[:1000]+C n=2000  a break (given: 992 tokens lost); infinite 62 blocks = 992;
                             provider 992 -> 896 (placement 96), below 1,024 -> 0 (minimum 896)
    r3 t=400  S+A+B  n=2200  infinite 137 blocks = 2,192; provider 2,192 -> 2,176 (placement
                             16); idle 380 s > 300 s since S+A+B was last used (t=10, r2 used
                             only S[:992] at t=20): 0 (TTL expiry 2,176)
    r4 t=410  S[:500] n=500  infinite 31 blocks = 496; provider 496 -> 384 (placement 112),
                             prompt below 1,024 -> 0 (minimum 384)

    Logged cached tokens: r0 0, r1 2,048, r2 0, r3 1,024 (more than predicted), r4 not logged.
    """
    S = toks(1, 2000)
    A, B, C = toks(10_000, 100), toks(20_000, 100), toks(30_000, 1000)
    seqs = [S + A, S + A + B, S[:1000] + C, S + A + B, S[:500]]
    wl = token_workload(seqs, ts=[0, 10, 20, 400, 410])
    wl = dataclasses.replace(
        wl,
        models=["gpt-5.4"] * 5,
        observed_prompt=np.array([2100, 2200, 2000, 2200, np.nan]),
        observed_cached=np.array([0, 2048, 0, 1024, np.nan]),
    )
    lost = np.array([0, 0, 992, 0, 0], np.int64)
    losses = BreakLosses({"volatile_timestamp": lost}, {"volatile_timestamp": 1})
    sf = run_waterfall(wl, "openai", losses).to_json()

    tokens = {k: (v["tokens"] if isinstance(v, dict) else v) for k, v in sf.items()}
    # infinite = 0 + 2,096 + 992 + 2,192 + 496 = 5,776; ideal = 5,776 + 992 = 6,768
    assert tokens["infinite_cache"] == 5776 and tokens["ideal"] == 6768
    assert tokens["breaks"] == 992
    assert sf["breaks"]["by_cause"] == {
        "volatile_timestamp": {"breaks": 1, "tokens": 992, "dollars": pytest.approx(992 * VALUE)}
    }
    assert tokens["placement"] == 48 + 96 + 16 + 112  # 272
    assert tokens["generated_output"] == 0  # OpenAI caches no output
    assert tokens["routing"] == 0  # 5 requests of one route, never 15 in a minute
    assert tokens["minimum_length"] == 896 + 384  # 1,280
    assert tokens["ttl_expiry"] == 2176
    assert tokens["predicted"] == 2048  # r1 only
    # observed: 0 + 2,048 + 0 + 1,024 + r4's predicted 0 = 3,072; unexplained 2,048 - 3,072
    assert tokens["observed"] == 3072 and tokens["unexplained"] == -1024
    assert tokens["logged_requests"] == 4
    # 992 + 272 + 1,280 + 2,176 - 1,024 = 3,696 = 6,768 - 3,072
    for key in ("ideal", "placement", "minimum_length", "ttl_expiry", "unexplained", "observed"):
        assert sf[key]["dollars"] == pytest.approx(tokens[key] * VALUE, rel=1e-12)
    assert_adds_up(sf)
    assert sf["notes"] == ["1 of 5 requests log no cached tokens: they count as predicted "
                           "(nothing unexplained)"]  # fmt: skip


def test_routing_overflow_and_a_whole_repeated_prompt():
    """20 copies of one 2,048-token prompt, 1 s apart: the first 15 of the minute go to
    machine 0, the next 5 overflow to machine 1, whose first request misses (routing 2,048).
    The infinite cache keeps one token to compute, (2,048 − 1) // 16 = 127 blocks = 2,032 per
    repeat, where the provider serves all 2,048: placement is 19 × (2,032 − 2,048) = −304."""
    wl = token_workload([toks(1, 2048)] * 20, ts=list(range(20)))
    wl = dataclasses.replace(wl, models=["gpt-5.4"] * 20)
    sf = run_waterfall(wl, "openai", BreakLosses({}, {})).to_json()
    assert sf["infinite_cache"]["tokens"] == 19 * 2032
    assert sf["placement"]["tokens"] == -304
    assert sf["routing"]["tokens"] == 2048
    assert sf["minimum_length"]["tokens"] == sf["ttl_expiry"]["tokens"] == 0
    assert sf["predicted"]["tokens"] == 18 * 2048
    assert sf["breaks"] == {"tokens": 0, "dollars": 0.0, "by_cause": {}}
    assert sf["unexplained"] is None and sf["observed"] is None
    assert sf["notes"] == ["no request logs cached tokens: the waterfall ends at predicted"]
    assert_adds_up(sf)


TIPS = " ".join(f"Tip {i}: be brief." for i in range(40))  # a few hundred tokens
RULES = " ".join(f"Rule {i}: answer in plain words and cite the file you read." for i in range(120))


def _record(rid: str, ts: float, session: str, system: str, turns: list[str], cached: int):
    messages = [{"role": "system", "content": system}]
    for k, text in enumerate(turns):
        messages.append({"role": "user" if k % 2 == 0 else "assistant", "content": text})
    return {
        "request_id": rid,
        "created": ts,
        "metadata": {"session_id": session},
        "request": {"model": "gpt-5.4", "messages": messages},
        "response": {
            "usage": {
                "prompt_tokens": 2000,
                "completion_tokens": 10,
                "prompt_tokens_details": {"cached_tokens": cached},
            }
        },
    }


@pytest.fixture(scope="module")
def chat_log(tmp_path_factory) -> dict:
    """A session whose system prompt carries the time (it changes: a break), a gap beyond the
    TTL, a short session below the minimum; logged cached tokens that differ from any model."""
    tmp = tmp_path_factory.mktemp("shortfall")
    sys_at = lambda t: f"Current time: 2026-11-01 09:{t:02d}:00 UTC.\n{RULES}"  # noqa: E731
    q = ["Which file defines the cache?", "kvtool/simulate/engine.py.", "And the policy?"]
    records = [
        _record("a1", 1000, "s1", sys_at(0), q[:1], 0),
        _record("a2", 1010, "s1", sys_at(1), q, 1024),  # the time changed: a break
        _record("a3", 1020, "s1", sys_at(1), [*q, "policies/lru.py.", "Thanks."], 1920),
        _record("a4", 2000, "s1", sys_at(1), [*q, "policies/lru.py.", "Thanks.", "ok", "Bye."], 0),
        _record("b1", 2010, "s2", TIPS, ["hi"], 0),
        _record("b2", 2020, "s2", TIPS, ["hi", "hello", "bye"], 0),
    ]
    log = write_jsonl(tmp / "chat.jsonl", records)
    db = tmp / "kv.duckdb"
    out = simulate([log], db=db, blocks=[100], provider="openai", breaks=break_losses).to_json()
    return {"db": db, "out": out, "log": log}


def test_a_real_log_breaks_by_cause_and_adds_up(chat_log):
    p = chat_log["out"]["provider"]
    sf = p["shortfall"]
    assert_adds_up(sf)
    assert set(sf) == documented_keys(DOCS / "simulate.md", "### Shortfall keys")
    assert set(sf["breaks"]["by_cause"]) == {"volatile_timestamp"}
    assert sf["breaks"]["by_cause"]["volatile_timestamp"]["breaks"] == 1
    # the same break analysis as analyze's at block size 16
    summary = analyze(None, db=chat_log["db"], block_size=16)
    assert sf["breaks"]["tokens"] == summary["break_summary"]["tokens_lost"] > 1000
    # the waterfall's infinite cache is prompt-only (output blocks are the provider's own step)
    oc = summary["output_caching"]
    assert sf["infinite_cache"]["tokens"] == summary["cached_tokens"] - oc["cached_tokens_added"]
    assert sf["predicted"]["tokens"] == p["predicted_cached_tokens"]
    assert sf["ttl_expiry"]["tokens"] > 0  # a4 comes 980 s after a3
    assert sf["minimum_length"]["tokens"] > 0  # b2 repeats b1's short head
    # every request logs its counts: observed is the log's, unexplained what is left
    assert sf["logged_requests"] == 6 and sf["notes"] == []
    assert sf["observed"]["tokens"] == p["observed_cached_tokens"] == 1024 + 1920
    assert sf["unexplained"]["tokens"] == sf["predicted"]["tokens"] - 2944
    assert sf["ideal"]["dollars"] == pytest.approx(sf["ideal"]["tokens"] * VALUE, rel=1e-12)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict:
    """The demo trace on DeepSeek, its rules as shipped (the database is reused)."""
    db = tmp_path_factory.mktemp("demo") / "kv.duckdb"
    return {
        "db": db,
        "out": simulate([DEMO], db=db, blocks=[100], provider="deepseek", breaks=break_losses),
    }


@pytest.mark.parametrize("provider", ["openai", "deepseek", "gemini"])
def test_demo_trace_adds_up(demo, provider):
    out = simulate(
        None, db=demo["db"], blocks=[100], provider=provider, breaks=break_losses
    ).to_json()
    sf = out["provider"]["shortfall"]
    assert_adds_up(sf)
    prompt_only = round(out["ideal_hit_rate_prompt_only"] * out["prompt_tokens"])
    assert sf["infinite_cache"]["tokens"] == prompt_only < out["ideal_cached_tokens"]
    assert len(sf["breaks"]["by_cause"]) >= 5  # the demo has a breaker of most causes
    if provider == "deepseek":  # it caches the answers that follow-ups send back
        assert sf["generated_output"]["tokens"] < 0


def test_redacted_database_gives_the_same_breaks(demo, tmp_path):
    hidden = simulate(
        [DEMO],
        db=tmp_path / "b.duckdb",
        blocks=[100],
        provider="deepseek",
        redact=True,
        breaks=break_losses,
    )
    a, b = demo["out"]["provider"]["shortfall"], hidden["provider"]["shortfall"]
    assert_adds_up(b)
    assert b["breaks"]["tokens"] == a["breaks"]["tokens"] > 0
    assert b["predicted"] == a["predicted"]


def test_without_a_break_finder_the_waterfall_starts_at_the_infinite_cache(chat_log):
    """The library call without ``breaks`` (simulate never imports analyze): no break step, the
    ideal is the infinite cache, everything below is the same."""
    out = simulate(None, db=chat_log["db"], blocks=[100], provider="openai").to_json()
    sf, full = out["provider"]["shortfall"], chat_log["out"]["provider"]["shortfall"]
    assert sf["breaks"] is None and full["breaks"]["tokens"] > 0
    assert sf["ideal"] == sf["infinite_cache"] == full["infinite_cache"]
    assert any("no break finder was given" in n for n in sf["notes"])
    assert {k: sf[k] for k in STEPS} == {k: full[k] for k in STEPS}
    assert_adds_up(sf)


def test_hash_trace_has_no_breaks(tmp_path):
    out = simulate(
        [MOONCAKE],
        db=tmp_path / "kv.duckdb",
        blocks=[100],
        provider="deepseek",
        breaks=break_losses,
    )
    sf = out["provider"]["shortfall"]
    assert sf["breaks"] is None
    assert sf["ideal"] == sf["infinite_cache"]
    assert any("breaks not analyzed" in n for n in sf["notes"])
    assert_adds_up(sf)


def hostile_run(chat_log) -> dict:
    """The chat log's run with a hostile cause name, provider name and TTL."""
    run = orjson.loads(orjson.dumps(chat_log["out"]))
    p = run["provider"]
    p["name"] = p["ttl"] = HOSTILE
    causes = p["shortfall"]["breaks"]["by_cause"]
    causes[HOSTILE] = causes.pop("volatile_timestamp")
    return run


def test_terminal_prints_the_waterfall_escaped(chat_log):
    console = Console(record=True, width=140)
    render_simulation(console, hostile_run(chat_log))
    text = console.export_text()
    sf = chat_log["out"]["provider"]["shortfall"]
    for label in ("ideal", "prompt breaks", "infinite cache", "TTL expiry", "unexplained"):
        assert label in text
    assert f"{sf['ideal']['tokens']:,}" in text and f"−{sf['ttl_expiry']['tokens']:,}" in text
    assert HOSTILE in text  # printed literally: no markup, no emoji


def test_html_has_one_waterfall_bar_per_step_escaped(chat_log, tmp_path):
    page_path = tmp_path / "sim.html"
    html.write_simulation(page_path, hostile_run(chat_log))
    page = page_path.read_text()
    spec = charts(page)[f"shortfall_{chat_log['out']['run_id']}"]
    (trace,) = spec["data"]
    assert trace["type"] == "waterfall"
    # ideal, 1 cause, infinite cache, 5 provider steps, predicted, unexplained, observed
    assert len(trace["x"]) == len(trace["measure"]) == 11
    assert trace["measure"][:3] == ["absolute", "relative", "total"]
    assert trace["measure"][-3:] == ["total", "relative", "total"]
    sf = chat_log["out"]["provider"]["shortfall"]
    assert trace["y"][0] == sf["ideal"]["tokens"] and trace["y"][-1] == sf["observed"]["tokens"]
    assert trace["y"][1] == -sf["breaks"]["tokens"]
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # the table cell and the chart


def test_cli_json_has_the_shortfall(chat_log):
    r = CliRunner().invoke(
        app,
        ["simulate", "--db", str(chat_log["db"]), "--blocks", "100", "--provider", "openai"]
        + ["--json"],
    )
    assert r.exit_code == 0, r.output
    sf = orjson.loads(r.stdout)["provider"]["shortfall"]
    assert sf == chat_log["out"]["provider"]["shortfall"]
