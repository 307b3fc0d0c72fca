"""Gemini's explicit context caches (kvtool/simulate/gemini.py, docs/providers.md "Gemini"):
requests with ``cache_control`` markers read or create a ``cachedContents`` cache of their
first run of marked messages, which lives its TTL from creation and bills storage for it;
requests without markers stay implicit.

Shipped data, gemini-2.5-pro: $1.25 / M input (cache creation too: write multiplier 1),
$0.31 / M cached, $10 / M output, storage $4.50 / M tokens per hour, minimum 2,048 tokens,
explicit TTL 1 h (3,600 s) not refreshed by use.
"""

from __future__ import annotations

import dataclasses
from functools import partial

import numpy as np
import orjson
import pytest
from formats_check import write_jsonl
from test_shortfall import assert_adds_up
from typer.testing import CliRunner
from workloads import token_workload

from kvtool.cli import app
from kvtool.providers import load_provider
from kvtool.simulate.gemini import explicit_prefix, has_explicit_caches, predict_gemini, ttl_seconds
from kvtool.simulate.providers import ProviderSpec, predict_provider
from kvtool.simulate.shortfall import shortfall
from kvtool.tokenize.breakpoints import Breakpoints, RequestMarks

RULES = load_provider("gemini")
PRO = "gemini-2.5-pro"
MTOK = 1e-6
PREFIX = 11  # the marked prefix's identity in the hand-built breakpoints


def _workload(lengths: list[int], ts: list[float]):
    """Requests of these prompt lengths and times, all of gemini-2.5-pro; token ids 0..n-1,
    so any two share the shorter one's prompt as a prefix (what implicit caching sees)."""
    wl = token_workload([list(range(n)) for n in lengths], ts=ts)
    return dataclasses.replace(wl, models=[PRO] * len(lengths))


def _marks(*requests) -> Breakpoints:
    """Each request: None (no marker), or (boundary ends, their prefix identities, marked
    boundaries, the markers' TTLs)."""
    return Breakpoints.build(
        [
            None
            if r is None
            else RequestMarks(
                np.array(r[0], np.int64),
                np.zeros(len(r[0]), np.int64),  # content blocks: not used by Gemini
                np.array(r[1], np.int64),
                np.array(r[2], np.int64),
                tuple(r[3]),
            )
            for r in requests
        ]
    )


def _marked(prefix: int = 5000, ttl: str = ""):
    """A request whose marker ends its cached prefix at ``prefix`` tokens."""
    return ([prefix], [PREFIX], [0], [ttl])


def _predict(wl, marks: Breakpoints, **spec):
    return predict_gemini(wl, ProviderSpec(RULES, **spec), marks)


def test_the_shipped_rules_have_explicit_caches():
    assert has_explicit_caches(RULES)
    assert not has_explicit_caches(load_provider("anthropic"))  # breakpoints instead
    assert not has_explicit_caches(load_provider("openai"))  # no "explicit" TTL


def test_one_creation_two_reads_and_an_hour_of_storage():
    wl = _workload([6000, 6000, 6000], ts=[0.0, 600.0, 1200.0])
    pred = _predict(wl, _marks(_marked(), _marked(), _marked()))
    assert pred.predicted_cached_tokens.tolist() == [0, 5000, 5000]
    assert pred.predicted_write_tokens.tolist() == [5000, 0, 0]
    # creation: 5,000 × $1.25 + the other 1,000 × $1.25, storage 5,000 × 1 h × $4.50
    create = (5000 * 1.25 + 1000 * 1.25 + 5000 * 1 * 4.5) * MTOK  # $0.03
    read = (5000 * 0.31 + 1000 * 1.25) * MTOK  # $0.0028
    assert pred.bill_predicted.tolist() == pytest.approx([create, read, read], rel=1e-12)
    assert pred.totals.bill_predicted == pytest.approx(0.0356, rel=1e-12)
    assert pred.totals.bill_no_cache == pytest.approx(3 * 6000 * 1.25 * MTOK, rel=1e-12)


def test_a_reuse_after_the_ttl_creates_it_again():
    # created at 0, alive through 3,600 s; use does not extend it, so 3,601 s creates anew
    wl = _workload([6000, 6000, 6000], ts=[0.0, 3600.0, 3601.0])
    pred = _predict(wl, _marks(_marked(), _marked(), _marked()))
    assert pred.predicted_cached_tokens.tolist() == [0, 5000, 0]
    assert pred.predicted_write_tokens.tolist() == [5000, 0, 5000]
    create = (6000 * 1.25 + 5000 * 4.5) * MTOK
    assert pred.bill_predicted[2] == pytest.approx(create, rel=1e-12)
    # two creations each bill an hour of storage: 2 × 5,000 × $4.50 / M = $0.045
    no_storage = (2 * 6000 * 1.25 + 5000 * 0.31 + 1000 * 1.25) * MTOK
    assert pred.totals.bill_predicted - no_storage == pytest.approx(0.045, rel=1e-9)


def test_a_marker_ttl_sets_the_life_and_the_storage():
    # "1800s": half an hour, 5,000 × 0.5 h × $4.50 / M = $0.01125 of storage; at 1,801 s gone
    wl = _workload([6000, 6000], ts=[0.0, 1801.0])
    pred = _predict(wl, _marks(_marked(ttl="1800s"), _marked(ttl="1800s")))
    assert pred.predicted_cached_tokens.tolist() == [0, 0]
    assert pred.bill_predicted[0] == pytest.approx((6000 * 1.25 + 2500 * 4.5) * MTOK, rel=1e-12)
    assert ttl_seconds("1800s", 60) == 1800 and ttl_seconds("5m", 60) == 300
    assert ttl_seconds("1.5h", 60) == 5400
    for bad in ("", "-5s", "0s", "soon", "3600"):
        assert ttl_seconds(bad, 60) == 60


def test_a_request_without_markers_is_implicit():
    # request 2 has no marker: the implicit engine, whose cache holds the 6,000-token prompts
    # of requests 0 and 1 (375 blocks of 16): 6,000 read at $0.31, 1,000 written at $1.25
    wl = _workload([6000, 6000, 7000], ts=[0.0, 10.0, 20.0])
    pred = _predict(wl, _marks(_marked(), _marked(), None))
    implicit = predict_provider(wl, ProviderSpec(RULES))
    assert pred.predicted_cached_tokens.tolist() == [0, 5000, 6000]
    assert pred.request(2) == implicit.request(2)
    assert pred.bill_predicted[2] == pytest.approx((6000 * 0.31 + 1000 * 1.25) * MTOK)


def test_a_prefix_below_the_minimum_stays_implicit():
    # 1,000 marked tokens < gemini-2.5-pro's 2,048: no explicit cache, no storage; implicit
    # reads request 0's prompt in full 16-token blocks: 3,000 // 16 × 16 = 2,992
    wl = _workload([3000, 3000], ts=[0.0, 10.0])
    pred = _predict(wl, _marks(_marked(1000), _marked(1000)))
    implicit = predict_provider(wl, ProviderSpec(RULES))
    assert pred.requests() == implicit.requests()
    assert pred.predicted_cached_tokens.tolist() == [0, 2992]


def test_the_first_continuous_run_of_marked_messages_is_cached():
    # boundaries end at 100, 2,500, 4,000, 6,000 tokens; markers on 2 and 1 → the run 1-2,
    # cached to 4,000; markers on 0 and 2 → the run is boundary 0 alone, 100 tokens
    marks = _marks(
        ([100, 2500, 4000, 6000], [7, 8, 9, 10], [2, 1], ["", "7200s"]),
        ([100, 2500, 4000, 6000], [7, 8, 9, 10], [0, 2], ["", ""]),
        None,
    )
    first = explicit_prefix(marks, 0, 3600.0)
    assert first is not None and (first.tokens, first.identity) == (4000, 9)
    assert first.ttl == 7200  # the first valid TTL of the markers in logged order
    second = explicit_prefix(marks, 1, 3600.0)
    assert second is not None and (second.tokens, second.ttl) == (100, 3600)
    assert explicit_prefix(marks, 2, 3600.0) is None


def test_the_shortfall_still_adds_up():
    wl = _workload([6000, 6000, 7000, 6000], ts=[0.0, 600.0, 700.0, 4000.0])
    marks = _marks(_marked(), _marked(), None, _marked())
    spec = ProviderSpec(RULES)
    predict = partial(predict_gemini, wl, marks=marks)
    pred = predict(spec)
    # reads: 0, 5,000 (explicit), 6,000 (implicit), 0 (the cache expired at 3,600: created anew)
    assert pred.predicted_cached_tokens.tolist() == [0, 5000, 6000, 0]
    sf = shortfall(wl, spec, predict, pred, None).to_json()
    assert_adds_up(sf)
    assert sf["predicted"]["tokens"] == 11000
    # with no expiry the last request reads its 5,000: the TTL step is those 5,000 tokens
    assert sf["ttl_expiry"]["tokens"] == 5000


# ---------------------------------------------------------------------------------------------
# through the CLI: OpenAI-shaped records for gemini-2.5-pro with cache_control (LiteLLM's)

SYSTEM = " ".join(f"rule {k}: answer in plain words." for k in range(600))


def _record(k: int, ts: float, marked: bool) -> dict:
    part = {"type": "text", "text": SYSTEM}
    if marked:
        part["cache_control"] = {"type": "ephemeral"}
    messages = [
        {"role": "system", "content": [part]},
        {"role": "user", "content": f"question {k}: what does rule {k} say?"},
    ]
    return {
        "request_id": f"r{k}",
        "created": ts,
        "request": {"model": PRO, "messages": messages},
        "response": {"usage": {"completion_tokens": 10}},
    }


def _simulate(tmp_path, name: str, marked: bool) -> dict:
    t0 = 1_767_225_600.0  # 2026-01-01
    log = write_jsonl(
        tmp_path / f"{name}.jsonl", [_record(k, t0 + 60 * k, marked) for k in range(3)]
    )
    args = ["simulate", str(log), "--db", str(tmp_path / f"{name}.duckdb"), "--blocks", "300"]
    r = CliRunner().invoke(app, [*args, "--provider", "gemini", "--json"])
    assert r.exit_code == 0, r.output
    return orjson.loads(r.stdout)


def test_cli_bills_explicit_caches_and_their_storage(tmp_path):
    out = _simulate(tmp_path, "marked", marked=True)
    p, n = out["provider"], out["prompt_tokens"]
    # three requests, one system prompt of P tokens: the first creates the cache, two read it
    reads = p["predicted_cached_tokens"]
    assert reads % 2 == 0
    size = reads // 2
    assert 2048 <= size < n // 3  # above the minimum, short of each whole prompt
    # bill: every prompt token at $1.25 but the 2P read at $0.31, 30 output tokens at $10,
    # storage P × 1 h × $4.50
    want = ((n - 2 * size) * 1.25 + 2 * size * 0.31 + 30 * 10.0 + size * 4.5) * MTOK
    assert p["bill"]["predicted"] == pytest.approx(want, rel=1e-12)
    assert p["bill"]["no_cache"] == pytest.approx((n * 1.25 + 300) * MTOK, rel=1e-12)
    assert p["advice"] is None
    assert_adds_up(p["shortfall"])

    plain = _simulate(tmp_path, "plain", marked=False)["provider"]
    # no markers: implicit caching in 16-token blocks, here the system prompt's full blocks
    # (the user messages differ before the next block ends), and no storage
    assert plain["predicted_cached_tokens"] == 2 * (size // 16 * 16)
    assert plain["bill"]["predicted"] < p["bill"]["predicted"]
