"""The report's distributions (kvtool/analyze/distributions.py) against hand-built workloads and
brute force: they must break the analyze totals down exactly."""

from __future__ import annotations

import random

import numpy as np
import pytest
from workloads import token_workload

from kvtool.analyze.distributions import (
    log_histogram,
    prefix_tree,
    prompt_lengths,
    reuse_gaps,
    timeline,
)
from kvtool.analyze.prefix import assign_sessions, infer_parents, within_session
from kvtool.traffic import base_hit_blocks, ideal_hits, passes, runs

SYSTEM = list(range(1000, 1064))  # 4 base blocks


def _session_trace() -> tuple[list[list[int]], list[str]]:
    """Three sessions of two turns: system prompt + question, then + answer; turns interleaved."""
    seqs, sessions = [], []
    for turn in range(2):
        for s in range(3):
            question = [2000 + 100 * s + i for i in range(32)]
            answer = [5000 + 100 * s + i for i in range(32)]
            seqs.append(SYSTEM + question + (answer if turn else []))
            sessions.append(f"s{s}")
    return seqs, sessions


def _analysis(wl, B=16):
    rs = runs(wl)
    ps = passes(wl, rs)
    hits = ideal_hits(wl, rs, ps, base_hit_blocks(wl, rs, ps), B)
    return rs, ps, hits


def test_prefix_tree_is_the_shared_part_of_the_block_tree():
    seqs, sessions = _session_trace()
    wl = token_workload(seqs, sessions)
    rs, ps, _ = _analysis(wl)
    sessions = assign_sessions(wl, infer_parents(wl, rs, ps))
    per_run = within_session(ps, sessions.code).sessions_per_run
    tree = prefix_tree(wl, rs, ps, per_run)
    root = [n for n in tree if n["parent"] == -1]
    assert len(root) == 1
    assert (root[0]["start"], root[0]["end"], root[0]["requests"]) == (0, 64, 6)
    assert root[0]["sessions"] == 3 and root[0]["tokens_saved"] == 64 * 5
    children = [n for n in tree if n["parent"] == root[0]["id"]]
    assert len(tree) == 4 and len(children) == 3  # the answers are not shared: not in the tree
    for c in children:
        assert (c["start"], c["end"], c["requests"], c["sessions"]) == (64, 96, 2, 1)
        assert c["tokens_saved"] == 32
    # first request through each question: the session's first turn (requests 0, 1, 2)
    assert sorted(c["req_id"] for c in children) == [0, 1, 2]
    assert root[0]["req_id"] == 0


def test_prefix_tree_limit_keeps_ancestors_and_order():
    rng = random.Random(5)
    seqs = []
    for _ in range(60):
        a, b, c = rng.randrange(3), rng.randrange(4), rng.randrange(5)
        seqs.append(
            [7] * 32 + [100 + a] * 48 + [200 + b] * 32 + [300 + c] * 16 + [rng.randrange(9)] * 16
        )
    wl = token_workload(seqs)
    rs, ps, _ = _analysis(wl)
    per_run = np.ones(len(rs.lo), np.int64)
    full = prefix_tree(wl, rs, ps, per_run, limit=10_000)
    small = prefix_tree(wl, rs, ps, per_run, limit=5)
    ids = {n["id"] for n in small}
    seen: set[int] = set()
    for n in small:  # connected, parents listed first
        assert n["parent"] == -1 or n["parent"] in seen
        seen.add(n["id"])
    by_saved = sorted(full, key=lambda n: -n["tokens_saved"])[:5]
    assert {n["id"] for n in by_saved} <= ids
    assert all(n["requests"] >= 2 for n in full)
    # every shared run of the full tree: requests = the requests through its blocks
    for n in full:
        prefix = seqs[n["req_id"]][: n["end"]]  # req_ids are the sequence indices here
        assert len(prefix) == n["end"]
        assert n["requests"] == sum(s[: n["end"]] == prefix for s in seqs)


def test_timeline_bins_and_sums():
    ts = np.array([0.0, 5.0, 999.0, 1000.0])
    n_tokens = np.array([10, 20, 30, 40])
    cached = np.array([0, 16, 16, 32])
    tl = timeline(ts, n_tokens, cached)
    assert tl["unit"] == "s" and tl["step"] == 10  # 1000 s in 1 s bins would be > 120 bins
    assert len(tl["requests"]) == 101
    assert tl["requests"][0] == 2 and tl["requests"][99] == 1 and tl["requests"][100] == 1
    assert tl["prompt_tokens"][0] == 30 and tl["cached_tokens"][100] == 32
    assert sum(tl["prompt_tokens"]) == 100 and sum(tl["cached_tokens"]) == 64


def test_timeline_without_times_bins_by_order():
    n = 300
    tl = timeline(np.full(n, np.nan), np.ones(n, np.int64), np.zeros(n, np.int64))
    assert tl["unit"] == "request" and tl["step"] == 3
    assert len(tl["requests"]) == 100 and set(tl["requests"]) == {3}


def test_log_histogram_edges_hold_every_value():
    rng = np.random.default_rng(1)
    values = rng.lognormal(8, 1.5, 5000)
    h = log_histogram(values, per_octave=4)
    edges = np.array(h["edges"])
    assert len(edges) == len(h["counts"]) + 1
    assert np.allclose(edges[1:] / edges[:-1], 2**0.25)
    assert edges[0] <= values.min() and values.max() < edges[-1]
    assert sum(h["counts"]) == len(values)
    lengths = prompt_lengths(np.array([0, 0, 5, 17, 1000]))
    assert lengths["empty"] == 2 and sum(lengths["counts"]) == 3


@pytest.mark.parametrize("B", [16, 32])
def test_reuse_gaps_match_bruteforce(B):
    rng = random.Random(B)
    seqs, ts = [], []
    t = 0.0
    for _ in range(80):
        base = rng.choice([[1] * 64, [2] * 48, [3] * 96])
        seqs.append(base + [rng.randrange(5)] * rng.choice([16, 32, 48]) + [9] * rng.randrange(20))
        t += rng.choice([0.0, 0.5, 30.0, 400.0, 5000.0])
        ts.append(t)
    wl = token_workload(seqs, ts=ts)
    rs, ps, hits = _analysis(wl, B)
    got = reuse_gaps(ps, hits, wl.ts)
    # brute force: every cached B-block, the time since the latest earlier request holding it
    gaps, weights = [], []
    for r, s in enumerate(seqs):
        for j in range(int(hits.cached_tokens[r]) // B):
            block = s[: (j + 1) * B]
            last = max(q for q in range(r) if seqs[q][: (j + 1) * B] == block)
            gaps.append(max(ts[r] - ts[last], 1e-3))
            weights.append(B)
    assert sum(got["counts"]) == int(hits.cached_tokens.sum()) == sum(weights)
    assert got["unknown_tokens"] == 0
    expected, _ = np.histogram(gaps, np.array(got["edges"]), weights=weights)
    assert got["counts"] == expected.astype(int).tolist()
