"""Output blocks as cacheable (kvtool/traffic/output_blocks.py): vLLM keeps the full blocks of a
finished request's output, so the ideal (analyze), the engine (simulate) and ``--no-output-cache``
are checked on hand-computed traces built with the real chain hashing (tests/workloads.py,
16-token blocks), and end to end on a generated agent log through the command line.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import orjson
import pytest
from typer.testing import CliRunner
from workloads import token_workload

from kvtool.analyze import summarize
from kvtool.cli import app
from kvtool.simulate.config import SimConfig
from kvtool.simulate.engine import Engine
from kvtool.simulate.sweep import lru_curve
from kvtool.tiers.spec import Tier
from kvtool.traffic import (
    base_hit_blocks,
    block_streams,
    caches_outputs,
    first_through_hits,
    ideal_hits,
    output_blocks,
    output_hit_blocks,
    passes,
    runs,
    streams_with_outputs,
    tree,
)
from kvtool.traffic.output_blocks import output_paths


def toks(start: int, n: int) -> list[int]:
    """n distinct token ids from ``start`` (ranges that do not overlap never share a block)."""
    return list(range(start, start + n))


PROMPT = toks(1, 200)  # 12 full blocks (depths 0..11), 8 tokens in a partial block
ANSWER = toks(1000, 80)  # prompt + answer = 280 tokens: blocks up to depth 280 // 16 - 1 = 16
FOLLOW = PROMPT + ANSWER + toks(2000, 40)  # 320 tokens, 20 full blocks


def with_output(wl, output):
    return dataclasses.replace(wl, output_tokens=np.asarray(output, np.int64))


def two_turns():
    return with_output(token_workload([PROMPT, FOLLOW], sessions=["s", "s"]), [80, 10])


def test_two_turns_count_the_answer_blocks_only_with_output_caching():
    wl = two_turns()
    on = summarize(wl, 16)
    # turn 2 hits the 12 prompt blocks of turn 1 and its 5 output blocks (depths 12..16; depth 12
    # holds the prompt's last 8 tokens and the answer's first 8): 17 × 16 = 272 of 520 tokens
    assert on.cached_tokens == 272
    assert on.ideal_hit_rate == pytest.approx(272 / 520)
    oc = on.output_caching
    assert (oc.enabled, oc.applies) == (True, True)
    assert oc.ideal_hit_rate_prompt_only == pytest.approx(192 / 520)
    assert oc.cached_tokens_added == 80 and oc.output_block_tokens == 80
    assert on.within_session_tokens == 272  # the answer was the session's own
    off = summarize(wl, 16, output_cache=False)
    assert off.cached_tokens == 192 and off.ideal_hit_rate == pytest.approx(192 / 520)
    assert off.output_caching.enabled is False
    assert off.output_caching.ideal_hit_rate_with_output == pytest.approx(272 / 520)
    # at 64-token blocks: prompt 3 blocks, the output completes block 3 (tokens 192..255)
    assert summarize(wl, 64).cached_tokens == 256
    assert summarize(wl, 64, output_cache=False).cached_tokens == 192


def test_output_capped_by_its_length_and_by_what_the_successor_carries():
    short = with_output(token_workload([PROMPT, FOLLOW]), [7, 0])  # 207 tokens: nothing past 11
    assert summarize(short, 16).cached_tokens == 192
    long = with_output(token_workload([PROMPT, PROMPT + ANSWER]), [500, 0])
    # the successor carries 280 tokens = 17 blocks, and its own cap (279 // 16 = 17) allows all
    assert summarize(long, 16).cached_tokens == 272
    out = output_blocks(long)
    assert long.depth[out.of(0)].tolist() == [12, 13, 14, 15, 16]


def test_a_block_completed_by_the_last_sampled_token_is_not_cached():
    # 200 + 72 = 272 = 17 blocks, but vLLM never computes the last sampled token: 16 blocks
    # (depths 0..15); DeepSeek's provider model (``output_paths``' default) keeps the 17th
    wl = with_output(token_workload([PROMPT, FOLLOW]), [72, 0])
    assert wl.depth[output_blocks(wl).of(0)].tolist() == [12, 13, 14, 15]
    assert wl.depth[output_paths(wl).of(0)].tolist() == [12, 13, 14, 15, 16]
    assert summarize(wl, 16).cached_tokens == 256
    assert summarize(with_output(wl, [73, 0]), 16).cached_tokens == 272


def test_another_session_or_a_hash_trace_gets_no_output_blocks():
    other = with_output(token_workload([PROMPT, FOLLOW], sessions=["a", "b"]), [80, 0])
    assert summarize(other, 16).cached_tokens == 192
    hashed = dataclasses.replace(two_turns(), kind="hash")
    assert not caches_outputs(hashed)
    assert len(output_blocks(hashed).nodes) == 0
    assert summarize(hashed, 16).output_caching.applies is False
    assert summarize(hashed, 16).cached_tokens == 192


def test_output_is_written_for_later_requests_only():
    # request 1 repeats the prompt before the answer comes back: the answer is not in its prompt,
    # and it cannot hit output blocks; request 2 finds request 0's answer
    wl = with_output(token_workload([PROMPT, PROMPT, FOLLOW]), [80, 0, 0])
    hits = summarize(wl, 16).per_request.cached_tokens.tolist()
    assert hits == [0, 192, 272]


def agent_workload(seed: int):
    """Sessions that send back answers (some longer than logged, some shorter), interleaved,
    with a shared system prompt."""
    rng = np.random.default_rng(seed)
    system = toks(1, 70)
    seqs, sessions, output = [], [], []
    state = {}
    base = 10_000
    for _ in range(40):
        s = int(rng.integers(0, 4))
        hist = state.get(s, system + toks(base, int(rng.integers(5, 60))))
        base += 1000
        answer = int(rng.integers(1, 90))
        logged = max(answer + int(rng.integers(-20, 20)), 0)
        seqs.append(hist)
        sessions.append(f"s{s}")
        output.append(logged)
        state[s] = hist + toks(base, answer) + toks(base + 500, int(rng.integers(1, 40)))
        base += 1000
    return with_output(token_workload(seqs, sessions=sessions), output)


@pytest.mark.parametrize("B", [16, 32, 64])
def test_engine_at_infinite_capacity_equals_the_ideal(B):
    wl = agent_workload(B)
    outputs = output_blocks(wl)
    assert len(outputs.nodes) > 0
    rs = runs(wl)
    ps = passes(wl, rs)
    want = summarize(wl, B).per_request.cached_tokens
    prompt_only = ideal_hits(wl, rs, ps, base_hit_blocks(wl, rs, ps), B).cached_tokens
    assert want.sum() > prompt_only.sum()
    for policy in ("infinite", "lru"):
        offsets, stream = streams_with_outputs(wl, B, outputs)
        engine = Engine([Tier("hbm", 10**6)], config=SimConfig(policy=policy, block_size=B))
        got = engine.run(offsets, stream, wl.n_tokens, wl.ts, wl.output_tokens)
        assert got.cached_per_request.tolist() == want.tolist()


@pytest.mark.parametrize("seed", [16, 32, 64])
def test_first_through_hits_with_outputs_equal_the_runs_and_passes(seed, monkeypatch):
    # simulate --sample's exact ideal of a text log (one pass up the tree) against analyze's
    wl = agent_workload(seed)
    outputs = output_blocks(wl)
    rs = runs(wl)
    ps = passes(wl, rs)
    want = output_hit_blocks(wl, rs, ps, outputs).base_hits
    assert want.sum() > base_hit_blocks(wl, rs, ps).sum()  # the answers add hits
    assert np.array_equal(first_through_hits(wl, outputs=outputs), want)
    monkeypatch.setattr(tree, "library", lambda: None)
    assert np.array_equal(first_through_hits(wl, outputs=outputs), want)


def reference_output_paths(wl, uncomputed):
    """The module docstring's definition, request by request on the block streams."""
    offsets, blocks = block_streams(wl, wl.base)
    paths = [blocks[offsets[i] : offsets[i + 1]].tolist() for i in range(wl.n)]
    succ, nodes = [-1] * wl.n, []
    for i, path in enumerate(paths):
        mine = []
        for j in range(i + 1, wl.n):
            same = wl.session[i] == wl.session[j]  # two unknown sessions are the same
            if path and same and len(paths[j]) > len(path) and paths[j][len(path) - 1] == path[-1]:
                succ[i] = j
                cap = (wl.n_tokens[i] + wl.output_tokens[i] - uncomputed) // wl.base - 1
                mine = paths[j][len(path) : min(len(paths[j]) - 1, cap) + 1]
                break
        nodes.append(mine)
    return succ, nodes


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("uncomputed", [0, 1])
def test_output_paths_from_the_tree_follow_the_definition(seed, uncomputed):
    # output_paths reads each output off the tree (a walk up from the successor's last node);
    # the reference reads it off the block streams; two unknown sessions count as one
    wl = agent_workload(seed)
    rng = np.random.default_rng(seed)
    unknown = rng.random(wl.n) < 0.2
    session = [None if u else s for u, s in zip(unknown, wl.session, strict=True)]
    wl = dataclasses.replace(wl, session=session)
    got = output_paths(wl, uncomputed)
    succ, nodes = reference_output_paths(wl, uncomputed)
    assert got.successor.tolist() == succ
    assert [got.of(i).tolist() for i in range(wl.n)] == nodes
    assert sum(map(len, nodes)) > 0 and sum(s >= 0 for s in succ) > wl.n // 2


def test_streams_append_the_output_blocks_at_the_block_size():
    wl = two_turns()
    out = output_blocks(wl)
    offsets, stream = streams_with_outputs(wl, 64, out)
    assert offsets.tolist() == [0, 4, 9]
    assert wl.depth[stream[:4]].tolist() == [3, 7, 11, 15]  # the output completes block 3
    assert stream[3] == stream[4 + 3]  # the successor's block 3 is that block


def _json(args: list[str]) -> dict:
    r = CliRunner().invoke(app, [*args, "--json"])
    assert r.exit_code == 0, r.output
    return orjson.loads(r.stdout)


def test_cli_flag_and_the_infinite_policy_on_a_generated_agent_log(tmp_path):
    log = tmp_path / "agent.jsonl"
    _json(["generate", "--kind", "agent", "--sessions", "3", "-o", str(log)])
    db = ["--db", str(tmp_path / "kv.duckdb")]
    on = _json(["analyze", str(log), *db])
    off = _json(["analyze", *db, "--no-output-cache"])
    assert on["output_caching"]["enabled"] and not off["output_caching"]["enabled"]
    assert on["ideal_hit_rate"] == on["output_caching"]["ideal_hit_rate_with_output"]
    assert off["ideal_hit_rate"] == on["output_caching"]["ideal_hit_rate_prompt_only"]
    assert on["ideal_hit_rate"] > off["ideal_hit_rate"]
    assert on["cached_tokens"] - off["cached_tokens"] == on["output_caching"]["cached_tokens_added"]
    sim = _json(["simulate", *db, "--policy", "infinite", "--blocks", "100000"])
    assert sim["config"]["output_cache"] is True
    sampled = _json(["simulate", *db, "--blocks", "100000", "--sample", "0.6", "--warmup", "0.2"])
    exact = _json(["simulate", *db, "--blocks", "100000", "--warmup", "0.2"])
    for key in ("ideal_hit_rate", "ideal_cached_tokens", "ideal_hit_rate_prompt_only"):
        assert sampled[key] == exact[key]  # a sample at 0.6 holds most of it: simulated whole
    assert sim["token_hit_rate"] == pytest.approx(on["ideal_hit_rate"])
    assert sim["ideal_hit_rate_prompt_only"] == pytest.approx(off["ideal_hit_rate"])
    sim_off = _json(
        ["simulate", *db, "--policy", "infinite", "--blocks", "100000", "--no-output-cache"]
    )
    assert sim_off["config"]["output_cache"] is False
    assert sim_off["token_hit_rate"] == pytest.approx(off["ideal_hit_rate"])


def test_the_one_pass_lru_curve_stays_exact_with_output_blocks():
    wl = agent_workload(7)
    offsets, stream = streams_with_outputs(wl, 16, output_blocks(wl))
    curve = lru_curve(offsets, stream, wl.n_tokens, 16)
    for capacity in (curve.exact_from, curve.exact_from + 7, 2 * curve.exact_from):
        config = SimConfig(policy="lru", block_size=16, concurrency=1)
        got = Engine([Tier("hbm", capacity)], config=config).run(
            offsets, stream, wl.n_tokens, wl.ts, wl.output_tokens
        )
        assert (curve.hits(capacity) * 16).tolist() == got.cached_per_request.tolist()
