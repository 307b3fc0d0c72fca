"""The measurement window (``--warmup``): the cache sees every request, the figures count the
requests after the warm-up. Hand-computed traces for analyze and simulate (engine and stack
curve), both spec forms, the errors, and the Mooncake conversation plateau."""

from __future__ import annotations

import math
from pathlib import Path

import duckdb
import numpy as np
import orjson
import pytest
from typer.testing import CliRunner
from workloads import token_workload

from kvtool.analyze import analyze, summarize
from kvtool.cli import app
from kvtool.errors import OptionError
from kvtool.generate import generate
from kvtool.simulate import SimConfig, simulate
from kvtool.traffic import measurement_window, parse_warmup

# Four requests (16-token blocks); the cache must have seen r0 and r1 for r2 and r3 to hit:
#   r0 = 64 x 1, +1 token          65 tokens, 4 full blocks, nothing before it
#   r1 = r0's 4 blocks, 32 x 3, +1  97 tokens, hits r0's 4 blocks            -> 64
#   r2 = 32 x 1, 32 x 5, +1         65 tokens, hits the first 2 blocks        -> 32
#   r3 = r1 again                   97 tokens, all 6 blocks, cap (97-1)//16=6 -> 96
R0 = [1] * 64 + [2]
R1 = [1] * 64 + [3] * 32 + [4]
R2 = [1] * 32 + [5] * 32 + [6]
SEQS = [R0, R1, R2, R1]
TS = [0.0, 10.0, 20.0, 4000.0]


def _workload(ts=TS):
    return token_workload(SEQS, sessions=["a", "b", "c", "b"], ts=ts)


def test_fraction_and_duration_forms():
    assert parse_warmup("0.5").fraction == 0.5
    assert parse_warmup(0.25).fraction == 0.25
    assert parse_warmup("0").fraction == 0.0
    assert parse_warmup("30m").seconds == 1800.0
    assert parse_warmup("2h").seconds == 7200.0
    assert parse_warmup("90s").seconds == 90.0
    assert parse_warmup("1.5h").seconds == 5400.0


@pytest.mark.parametrize("bad", ["1.5", "1", "30", "-0.1", "abc", "", "5x", "nan", True, 1.0])
def test_bad_specs_name_the_parameter(bad):
    with pytest.raises(OptionError) as exc:
        parse_warmup(bad)
    assert exc.value.param == "warmup"


def test_analyze_counts_the_last_half_with_the_cache_warm():
    wl = _workload()
    whole = summarize(wl, 16)
    assert whole.cached_tokens == 0 + 64 + 32 + 96 and whole.prompt_tokens == 324
    window = measurement_window(wl, parse_warmup("0.5"))
    assert (window.start, window.counted, window.first_counted_ts) == (2, 2, 20.0)
    s = summarize(wl, 16, window=window)
    # r2 and r3 only, with the hits they owe to r0 and r1
    assert (s.requests, s.prompt_tokens, s.cached_tokens) == (2, 65 + 97, 32 + 96)
    assert s.ideal_hit_rate == pytest.approx(128 / 162)
    # at 64 tokens: r2's two 16-blocks make no 64-block; r3 has one (cap 96 // 64 = 1)
    assert s.ideal_hit_rate_by_block_size["64"] == pytest.approx(64 / 162)
    # r3 continues session b (r1, warm-up); r2 opens session c with blocks of a and b
    assert (s.within_session_tokens, s.cross_session_tokens) == (96, 32)
    assert (s.sessions, s.sessions_inferred) == (2, 0)
    # r2 reuses after 10 s; r3 after 3980 s (r2) and 3990 s (r1): outside 1 h. Whole trace:
    # r1's 64 tokens (10 s) count too.
    assert s.reuse_within == pytest.approx({"5m": 32 / 128, "1h": 32 / 128, "24h": 1.0})
    assert whole.reuse_within == pytest.approx({"5m": 96 / 192, "1h": 96 / 192, "24h": 1.0})
    frame = s.requests_frame()
    assert frame["counted"].tolist() == [False, False, True, True]
    assert frame["cached_tokens"].tolist() == [0, 64, 32, 96]  # every request is listed
    counted = frame[frame["counted"]]
    assert counted["cached_tokens"].sum() == s.cached_tokens
    assert counted["n_tokens"].sum() == s.prompt_tokens
    assert counted["within_session_tokens"].sum() == s.within_session_tokens
    # the cache and the structure cover the whole trace
    assert s.working_set_tokens == whole.working_set_tokens == 16 * 8  # 4 + 2 + 2 blocks
    assert s.to_json()["warmup"] == {
        "spec": "0.5",
        "requests_warmup": 2,
        "requests_counted": 2,
        "first_counted_ts": 20.0,
    }
    assert whole.to_json()["warmup"] is None


def test_no_warmup_changes_nothing():
    wl = _workload()
    zero = summarize(wl, 16, window=measurement_window(wl, parse_warmup("0"))).to_json()
    plain = summarize(wl, 16).to_json()
    assert zero.pop("warmup")["requests_counted"] == 4 and plain.pop("warmup") is None
    assert zero == plain


def test_duration_counts_from_the_first_timestamp():
    wl = _workload()

    def start(spec: str) -> int:
        return measurement_window(wl, parse_warmup(spec)).start

    # a request less than the duration after the first one (t = 0) is warm-up
    assert start("15s") == 2 and start("20s") == 2 and start("21s") == 3
    assert start("1h") == 3 and start("0s") == 0
    with pytest.raises(OptionError, match="leaves no request to count"):
        measurement_window(wl, parse_warmup("2h"))
    untimed = _workload(ts=[math.nan] * 4)
    with pytest.raises(OptionError, match="no timestamps") as exc:
        measurement_window(untimed, parse_warmup("30m"))
    assert exc.value.param == "warmup"
    assert measurement_window(untimed, parse_warmup("0.5")).start == 2
    # requests without a timestamp come last and are counted
    partly = _workload(ts=[0.0, 10.0, 20.0, math.nan])
    w = measurement_window(partly, parse_warmup("1h"))
    assert (w.start, w.first_counted_ts) == (3, None)


def _hash_trace(path: Path, requests: list[list[int]]) -> Path:
    """A Mooncake trace of 16-token blocks: each request's full blocks and a unique partial one,
    one second apart."""
    lines = [
        orjson.dumps(
            {
                "timestamp": i * 1000,
                "input_length": 16 * len(ids) + 1,
                "output_length": 1,
                "hash_ids": [*ids, 100_000 + i],
            }
        )
        for i, ids in enumerate(requests)
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_simulate_counts_the_window_in_the_engine_and_the_curve(tmp_path):
    trace = _hash_trace(tmp_path / "t.jsonl", [[1, 2], [3, 4], [1, 2], [3, 4]])

    def run(blocks: list[int], warmup: str | None, one_pass: bool = False) -> dict:
        config = SimConfig(concurrency=1, warmup=warmup, one_pass=one_pass)
        return simulate(
            [trace], db=tmp_path / "s.duckdb", hash_block_size=16, blocks=blocks, config=config
        ).to_json()

    # LRU, 3 blocks, one at a time (tests/test_simulate.py, test_lru_follows_vllm_order): r2 and
    # r3 hit their first block; r1, r2 and r3 evict one block each
    whole, half = run([3], None), run([3], "0.5")
    assert whole["method"] == half["method"] == "direct"
    assert (whole["prefill_tokens_saved"], whole["evictions"]) == (32, 3)
    assert (half["requests"], half["prompt_tokens"]) == (2, 66)
    assert (half["prefill_tokens_saved"], half["evictions"]) == (32, 2)
    assert half["token_hit_rate"] == pytest.approx(32 / 66)
    assert half["request_hit_rate"] == 1.0 and whole["request_hit_rate"] == 0.5
    assert half["hits_by_tier"] == {"hbm": 32}
    assert half["ideal_hit_rate"] == pytest.approx(64 / 66)
    assert half["duration_s"] == 1.0  # the counted requests' span
    assert half["config"]["warmup"] == "0.5" and whole["config"]["warmup"] is None
    assert half["warmup"] == {
        "spec": "0.5",
        "requests_warmup": 2,
        "requests_counted": 2,
        "first_counted_ts": 2.0,
    }
    # the one-pass curve counts the same window (all three points from it)
    sweep = run([3, 50, 100], "0.5", one_pass=True)
    single = run([3], "0.5", one_pass=True)  # one point: simulated, which is faster
    assert single["method"] == "direct" and single["token_hit_rate"] == pytest.approx(32 / 66)
    assert [p["method"] for p in sweep["points"]] == ["stack"] * 3
    assert [p["token_hit_rate"] for p in sweep["points"]] == pytest.approx(
        [32 / 66, 64 / 66, 64 / 66]
    )
    assert sweep["sweep"]["capacity_for_share_of_ideal"]["99%"] == 50


def test_simulate_rejects_a_provider_with_a_warmup(tmp_path):
    with pytest.raises(OptionError) as exc:
        simulate([], db=tmp_path / "s.duckdb", provider="openai", config=SimConfig(warmup="0.5"))
    assert exc.value.param == "warmup"
    with pytest.raises(OptionError, match="warmup"):
        SimConfig(warmup="abc")


@pytest.mark.parametrize("command", ["analyze", "simulate"])
@pytest.mark.parametrize("spec", ["1.5", "abc"])
def test_cli_bad_spec_is_one_line_and_exit_2(tmp_path, command, spec):
    trace = _hash_trace(tmp_path / "t.jsonl", [[1, 2], [1, 2]])
    args = [command, str(trace), "--db", str(tmp_path / "c.duckdb"), "--hash-block-size", "16"]
    r = CliRunner().invoke(app, [*args, "--warmup", spec])
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kvtool: error: --warmup")
    assert "[0, 1)" in lines[0]


def test_cli_duration_without_timestamps_is_one_line_and_exit_2(tmp_path):
    log = tmp_path / "chat.jsonl"
    records = [
        {"request": {"model": "m", "messages": [{"role": "user", "content": f"hello {i}"}]}}
        for i in range(2)
    ]
    log.write_bytes(b"\n".join(orjson.dumps(r) for r in records) + b"\n")
    r = CliRunner().invoke(
        app, ["analyze", str(log), "--db", str(tmp_path / "c.duckdb"), "--warmup", "30m"]
    )
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "--warmup '30m' is a duration" in lines[0]
    assert "no timestamps" in lines[0]


def test_mooncake_conversation_plateau_with_half_warmup(tmp_path, mooncake_dir):
    result = analyze(
        [mooncake_dir / "conversation_trace.jsonl.gz"], db=tmp_path / "m.duckdb", warmup=0.5
    )
    # docs/validation.md: 0.398 against the paper's 0.401 (0.373 counting every request)
    assert result.ideal_hit_rate == pytest.approx(0.397791, abs=1e-6)
    assert result["warmup"]["requests_warmup"] == 6015
    assert result["warmup"]["requests_counted"] == result.requests == 6016
    frame = result.requests_frame()
    assert int(frame.loc[frame["counted"], "cached_tokens"].sum()) == result.cached_tokens
    assert np.isclose(result.cached_tokens / result.prompt_tokens, result.ideal_hit_rate)


def test_break_summary_counts_the_breaks_of_counted_requests(tmp_path):
    log = tmp_path / "agent.jsonl"
    generate("agent", 14, 4, log, steps=(3, 6), breakers=1)
    db = tmp_path / "a.duckdb"
    whole = analyze([log], db=db)
    half = analyze([log], db=db, warmup="0.5")
    with duckdb.connect(str(db), read_only=True) as con:
        stored = con.execute("SELECT req_id, tokens_lost FROM breaks").fetchall()
    frame = half.requests_frame()
    counted = set(frame.loc[frame["counted"], "req_id"].tolist())
    mine = [lost for r, lost in stored if r in counted]
    assert whole["break_summary"]["breaks"] == len(stored)  # every break is still stored
    assert 0 < half["break_summary"]["breaks"] == len(mine) < len(stored)
    assert half["break_summary"]["tokens_lost"] == sum(mine)
    assert half["break_summary"]["share_of_prompt_tokens"] == pytest.approx(
        sum(mine) / half.prompt_tokens
    )
