"""The automatic-prefix provider engine (kvtool/simulate/providers.py) on hand-computed traces.

Rules under test are the shipped data (docs/providers.md): OpenAI caches from 1,024 tokens in
128-token increments, in-memory retention 300 s idle and at most 3,600 s, extended 24 h
(OpenAI's prompt-caching guide and cookbook); DeepSeek 64-token units from 64 tokens with
best-effort retention (its 2024 context-caching announcement); Gemini's per-model minimums
(2,048 for 2.5 Flash, 4,096 for 3.5 Flash, Google's caching page). Prices per million tokens
are the shipped entries (gpt-5.4: 2.5 / 0.25 / 15; gpt-6-sol: 2 / 0.2 / 10, writes 2.5;
deepseek-flash: 0.3 / 0.006 / 1.2, off-peak 0.15 / 0.003 / 0.6).

Workloads are built with the real chain hashing (tests/workloads.py); the expected numbers are
worked out by hand in each test.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from workloads import token_workload

from kvtool.errors import OptionError
from kvtool.providers import load_provider
from kvtool.simulate.providers import (
    ProviderSpec,
    off_peak_mask,
    predict_provider,
)


def toks(start: int, n: int) -> list[int]:
    """n distinct token ids from ``start`` (ranges that do not overlap never share a block)."""
    return list(range(start, start + n))


def workload(seqs, models, ts=None, output=None):
    wl = token_workload(seqs, ts=ts)
    wl = dataclasses.replace(wl, models=list(models))
    if output is not None:
        wl = dataclasses.replace(wl, output_tokens=np.asarray(output, np.int64))
    return wl


def cached(wl, provider: str, **spec) -> list[int]:
    pred = predict_provider(wl, ProviderSpec(load_provider(provider), **spec))
    return [r.predicted_cached_tokens for r in pred.requests()]


SHARED = toks(1, 1300)


def test_openai_minimum_and_128_token_increments():
    seqs = [
        SHARED + toks(10_000, 100),  # first: nothing cached
        SHARED[:1100] + toks(20_000, 100),  # 68 blocks (1,088) match -> 1,024
        SHARED + toks(30_000, 50),  # 81 blocks (1,296) match -> 1,280
        SHARED[:1000],  # 992 tokens match, but the prompt is below 1,024 -> 0
        SHARED[:1000] + toks(40_000, 60),  # 1,060 tokens: 992 match < 1,024 -> 0
        SHARED + toks(10_000, 100),  # a repeat of the first: 1,392 match -> 1,280
    ]
    wl = workload(seqs, ["gpt-5.4"] * len(seqs))
    pred = predict_provider(wl, ProviderSpec(load_provider("openai")))
    assert [r.predicted_cached_tokens for r in pred.requests()] == [0, 1024, 1280, 0, 0, 1280]
    assert [r.prompt_tokens for r in pred.requests()] == [1400, 1200, 1350, 1000, 1060, 1400]
    assert pred.totals.predicted_cached_tokens == 3584
    assert pred.totals.predicted_hit_rate == pytest.approx(3584 / 7410)
    assert pred.ttl.name == "in_memory" and pred.ttl.idle_seconds == 300


def test_openai_in_memory_expiry_and_refresh():
    prompt = toks(1, 2048)
    # 250 s gaps: each hit refreshes the prefix, so it never idles out
    wl = workload([prompt] * 4, ["gpt-5.4"] * 4, ts=[0, 250, 500, 750])
    assert cached(wl, "openai") == [0, 2048, 2048, 2048]
    # a 301 s gap idles it out; the miss writes it again
    wl = workload([prompt] * 3, ["gpt-5.4"] * 3, ts=[0, 301, 400])
    assert cached(wl, "openai") == [0, 0, 2048]
    # kept alive every 200 s, it still goes one hour after it was written
    times = list(range(0, 4001, 200))
    wl = workload([prompt] * len(times), ["gpt-5.4"] * len(times), ts=times)
    got = dict(zip(times, cached(wl, "openai"), strict=True))
    assert got[3600] == 2048 and got[3800] == 0 and got[4000] == 2048
    # the 24 h retention keeps it through a long idle gap, but not past 24 h
    wl = workload([prompt] * 3, ["gpt-5.4"] * 3, ts=[0, 80_000, 80_000 + 86_401])
    assert cached(wl, "openai", ttl="24h") == [0, 2048, 0]


def test_a_hit_refreshes_only_the_prefix_it_used():
    shared, tail = toks(1, 2048), toks(10_000, 1024)
    seqs = [shared + tail, shared + toks(20_000, 64), shared + tail]
    wl = workload(seqs, ["gpt-5.4"] * 3, ts=[0, 200, 400])
    # at 400 s the shared 2,048 tokens were used at 200 s; the tail last at 0 s: idled out
    assert cached(wl, "openai") == [0, 2048, 2048]
    # without the middle request the whole prefix idles out together
    wl = workload([seqs[0], seqs[2]], ["gpt-5.4"] * 2, ts=[0, 400])
    assert cached(wl, "openai") == [0, 0]


def test_deepseek_64_token_units_and_retention_parameter():
    shared = toks(1, 150)
    seqs = [
        shared + toks(1000, 20),
        shared[:100] + toks(2000, 20),  # 96 match -> 64
        shared + toks(3000, 20),  # 144 match -> 128
        shared[:40],  # below the 64-token minimum -> 0
        shared[:70] + toks(4000, 5),  # 64 match -> 64
    ]
    day = 86_400.0
    ts = [0, 10, 20, 30, 40]
    wl = workload(seqs, ["deepseek-v4-flash"] * 5, ts=ts)
    assert cached(wl, "deepseek") == [0, 64, 128, 0, 64]
    # best effort: no documented expiry, so a week later it still hits unless a retention is given
    wl = workload([shared, shared], ["deepseek-v4-flash"] * 2, ts=[0, 7 * day])
    assert cached(wl, "deepseek") == [0, 128]
    assert cached(wl, "deepseek", idle_seconds=6 * 3600) == [0, 0]


def test_gemini_per_model_minimums():
    prompt = toks(1, 3000)
    flash_25 = workload([prompt, prompt], ["gemini-2.5-flash"] * 2)
    flash_35 = workload([prompt, prompt], ["models/gemini-3.5-flash-001"] * 2)
    # increment 1 token, but the match is at 16-token resolution: 187 blocks -> 2,992
    assert cached(flash_25, "gemini") == [0, 2992]
    assert cached(flash_35, "gemini") == [0, 0]  # 3,000 < 4,096
    pred = predict_provider(flash_35, ProviderSpec(load_provider("gemini")))
    assert pred.request(1).min_cacheable_tokens == 4096
    assert pred.totals.fallback_models == ("models/gemini-3.5-flash-001",)  # priced as 2.5 Pro


def test_bill_openai_gpt_5_4():
    prompt = SHARED + toks(10_000, 100)  # 1,400 tokens
    wl = workload([prompt, prompt], ["gpt-5.4"] * 2, output=[100, 0])
    pred = predict_provider(wl, ProviderSpec(load_provider("openai")))
    # no cache: 2,800 input at $2.5/M + 100 output at $15/M
    assert pred.totals.bill_no_cache == pytest.approx(2800 * 2.5e-6 + 100 * 15e-6)  # 0.0085
    # first: all at input (its 1,280-token write costs the input price); second: 1,280 cached
    # at $0.25/M and 120 at $2.5/M
    first = 1400 * 2.5e-6 + 100 * 15e-6
    second = 1280 * 0.25e-6 + 120 * 2.5e-6
    assert [r.predicted_write_tokens for r in pred.requests()] == [1280, 0]
    assert pred.request(0).bill_predicted == pytest.approx(first)
    assert pred.request(1).bill_predicted == pytest.approx(second)
    assert pred.totals.bill_predicted == pytest.approx(0.005 + 0.00062)


def test_bill_with_a_cache_write_price():
    prompt = SHARED + toks(10_000, 100)
    wl = workload([prompt, prompt], ["gpt-6-sol"] * 2)
    pred = predict_provider(wl, ProviderSpec(load_provider("openai")))
    # first: 1,280 written at $2.5/M + 120 at $2/M = 0.00344; second: 1,280 read at $0.2/M +
    # 120 at $2/M = 0.000496
    assert pred.totals.bill_predicted == pytest.approx(0.003936)
    assert pred.totals.bill_no_cache == pytest.approx(0.0056)


def test_deepseek_off_peak_bill():
    day, hour = 86_400.0, 3_600.0
    monday = 4 * day  # 1970-01-05 was a Monday
    ts = np.array([monday + 2 * hour, monday + 5 * hour, 2 * day + 2 * hour, np.nan])
    rules = load_provider("deepseek")
    assert off_peak_mask(rules, ts).tolist() == [False, True, True, False]
    prompt = toks(1, 1000)
    wl = workload([prompt, prompt], ["deepseek-v4-flash"] * 2, ts=[monday + 5 * hour] * 2)
    pred = predict_provider(wl, ProviderSpec(rules))
    # off-peak: first 1,000 at $0.15/M; second: 992 match -> 960 cached at $0.003/M, 40 at $0.15/M
    assert [r.predicted_cached_tokens for r in pred.requests()] == [0, 960]
    assert pred.totals.bill_predicted == pytest.approx(
        1000 * 0.15e-6 + 960 * 0.003e-6 + 40 * 0.15e-6
    )
    assert pred.totals.bill_no_cache == pytest.approx(2000 * 0.15e-6)


def test_spec_is_validated():
    openai = load_provider("openai")
    with pytest.raises(OptionError, match="ttl"):
        ProviderSpec(openai, ttl="1h")
    with pytest.raises(OptionError, match="idle_seconds"):
        ProviderSpec(openai, idle_seconds=-5)
    with pytest.raises(OptionError, match="max_seconds"):
        ProviderSpec(openai, max_seconds=float("nan"))
    assert ProviderSpec(openai, max_seconds=60).retention.max_seconds == 60
