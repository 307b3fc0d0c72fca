"""The vectorized prefix statistics against a brute-force oracle on token sequences."""

from __future__ import annotations

import random

import numpy as np
import pytest
from workloads import token_workload as _workload

from kvtool.analyze import summarize
from kvtool.analyze.prefix import assign_sessions, infer_parents, top_prefixes, within_session
from kvtool.traffic import (
    REUSE_WINDOWS,
    Workload,
    base_hit_blocks,
    first_through_hits,
    hit_blocks,
    ideal_hits,
    passes,
    runs,
    tree,
)


def _structure(wl: Workload):
    rs = runs(wl)
    ps = passes(wl, rs)
    return rs, ps


def _cached(wl: Workload, B: int) -> list[int]:
    rs, ps = _structure(wl)
    hits = ideal_hits(wl, rs, ps, base_hit_blocks(wl, rs, ps), B)
    per_request = np.bincount(ps.req, hits.cached_blocks, minlength=wl.n) * B
    assert (per_request == hits.cached_tokens).all()
    return hits.cached_tokens.tolist()


def _oracle_cached(seqs: list[list[int]], B: int) -> list[int]:
    seen: set[tuple] = set()
    out = []
    for s in seqs:
        nb = len(s) // B
        h = 0
        while h < nb and tuple(s[: (h + 1) * B]) in seen:
            h += 1
        out.append(B * min(h, max(len(s) - 1, 0) // B))
        for i in range(nb):
            seen.add(tuple(s[: (i + 1) * B]))
    return out


def _random_tree_workload(rng: random.Random, n: int) -> list[list[int]]:
    """Requests that extend, branch from or repeat earlier ones, plus fresh ones."""
    seqs: list[list[int]] = []
    for _ in range(n):
        r = rng.random()
        if seqs and r < 0.5:
            base = rng.choice(seqs)
            cut = rng.randint(0, len(base))
            seqs.append(base[:cut] + [rng.randrange(50) for _ in range(rng.randint(0, 300))])
        elif seqs and r < 0.6:
            seqs.append(list(rng.choice(seqs)))
        else:
            seqs.append([rng.randrange(50) for _ in range(rng.randint(0, 400))])
    return seqs


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("B", [16, 32, 64, 256])
def test_ideal_hits_match_bruteforce(seed, B):
    seqs = _random_tree_workload(random.Random(seed), 120)
    wl = _workload(seqs)
    assert _cached(wl, B) == _oracle_cached(seqs, B)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_first_through_hits_equal_the_runs_and_passes(seed, monkeypatch):
    # simulate --sample's ideal (one pass up the tree) against analyze's, in C and in numpy
    wl = _workload(_random_tree_workload(random.Random(seed), 200))
    rs, ps = _structure(wl)
    expected = base_hit_blocks(wl, rs, ps)
    assert expected.sum() > 0 and (expected == 0).any()  # some requests hit, some do not
    assert np.array_equal(first_through_hits(wl), expected)
    monkeypatch.setattr(tree, "library", lambda: None)
    assert np.array_equal(first_through_hits(wl), expected)
    cached = hit_blocks(wl, expected, 32) * 32
    assert np.array_equal(cached, ideal_hits(wl, rs, ps, expected, 32).cached_tokens)


def test_cap_keeps_one_token_to_compute():
    seq = list(range(32))  # exactly two 16-token blocks
    wl = _workload([seq, seq, seq + [7]])
    # identical 32-token prompt reuses one block, not two; one more token allows both
    assert _cached(wl, 16) == [0, 16, 32]


def test_block_of_size_b_is_identified_where_it_ends():
    a = list(range(64))
    b = list(range(48)) + [999] * 16  # shares 3 of 4 base blocks, no 64-block
    wl = _workload([a, b + [1]])
    assert _cached(wl, 16) == [0, 48]
    assert _cached(wl, 64) == [0, 0]


def test_within_and_cross_session_split():
    system = [1] * 64
    s1a = system + [2] * 32
    s1b = s1a + [3] * 32
    s2a = system + [4] * 32
    wl = _workload([s1a, s1b, s2a], sessions=["u1", "u1", "u2"])
    summary = summarize(wl, 16)
    # s1b reuses all of s1a (96 tokens, within); s2a reuses the system prompt (64, across)
    assert summary.within_session_tokens == 96
    assert summary.cross_session_tokens == 64
    assert summary.cached_tokens == 160
    assert summary.sessions == 2 and summary.sessions_inferred == 0
    # per request, in processing order: the same split
    frame = summary.requests_frame()
    assert frame["within_session_tokens"].tolist() == [0, 96, 0]
    assert frame["cross_session_tokens"].tolist() == [0, 0, 64]
    assert frame["session"].tolist() == ["u1", "u1", "u2"]


def test_reuse_windows_use_the_most_recent_previous_use():
    p = [5] * 160
    wl = _workload([p + [1], p + [2], p + [3]], ts=[0.0, 7200.0, 7260.0])
    summary = summarize(wl, 16)
    # request 2 reuses after 2 h (outside 1h), request 3 after 60 s
    assert summary.reuse_within == {"5m": 0.5, "1h": 0.5, "24h": 1.0}


def test_session_inference_follows_prefix_continuation():
    rng = random.Random(4)
    system = [rng.randrange(50) for _ in range(100)]
    convs = {u: system + [rng.randrange(50) for _ in range(40)] for u in range(3)}
    seqs, truth = [], []
    for _turn in range(4):
        for u in range(3):
            convs[u] = convs[u] + [rng.randrange(50) for _ in range(rng.randint(20, 60))]
            seqs.append(list(convs[u]))
            truth.append(u)
    wl = _workload(seqs)
    rs, ps = _structure(wl)
    parents = infer_parents(wl, rs, ps)
    assert parents[:3].tolist() == [-1, -1, -1]
    assert all(truth[p] == truth[i] for i, p in enumerate(parents) if p >= 0)
    sessions = assign_sessions(wl, parents)
    assert sessions.inferred == 3
    assert len({(c, t) for c, t in zip(sessions.code.tolist(), truth, strict=True)}) == 3


def test_top_prefix_is_the_maximal_shared_one():
    system = [9] * 80  # 5 blocks, shared by all
    seqs = [system + [i] * 40 for i in range(6)] + [system + [0] * 40 + [1] * 33]
    wl = _workload(seqs, sessions=[f"s{i}" for i in range(6)] + ["s0"])
    rs, ps = _structure(wl)
    sessions = assign_sessions(wl, infer_parents(wl, rs, ps))
    per_run = within_session(ps, sessions.code).sessions_per_run
    top = top_prefixes(wl, rs, ps, per_run, 1)
    # 7 requests share 80 tokens; requests 0 and 6 share 112 tokens (80 + 32 of the 40)
    best = {(p.tokens, p.requests, p.sessions) for p in top}
    assert (80, 7, 6) in best and (112, 2, 1) in best
    assert top[0].tokens_saved == max(p.tokens_saved for p in top) == 480
    assert top[0].first_request == 0


@pytest.mark.parametrize("seed", [7, 8])
def test_within_session_matches_bruteforce(seed):
    rng = random.Random(seed)
    seqs = _random_tree_workload(rng, 80)
    sessions = [f"s{rng.randrange(6)}" for _ in seqs]
    wl = _workload(seqs, sessions=sessions)
    summary = summarize(wl, 32)
    seen: dict[str, set] = {}
    all_seen: set = set()
    within = cached = 0
    for seq, sess in zip(seqs, sessions, strict=True):
        nb = len(seq) // 32
        h = 0
        while h < nb and tuple(seq[: (h + 1) * 32]) in all_seen:
            h += 1
        used = min(h, max(len(seq) - 1, 0) // 32)
        cached += 32 * used
        mine = seen.setdefault(sess, set())
        within += 32 * sum(tuple(seq[: (i + 1) * 32]) in mine for i in range(used))
        for i in range(nb):
            mine.add(tuple(seq[: (i + 1) * 32]))
            all_seen.add(tuple(seq[: (i + 1) * 32]))
    assert summary.cached_tokens == cached
    assert summary.within_session_tokens == within
    assert summary.cross_session_tokens == cached - within
    frame = summary.requests_frame()
    assert frame["within_session_tokens"].sum() == within
    assert frame["cached_tokens"].tolist() == _oracle_cached(seqs, 32)


@pytest.mark.parametrize("seed", [9, 10])
@pytest.mark.parametrize("B", [16, 64])
def test_reuse_and_working_set_match_bruteforce(seed, B):
    rng = random.Random(seed)
    seqs = _random_tree_workload(rng, 60)
    ts = sorted(rng.uniform(0, 4 * 3600) for _ in seqs)
    wl = _workload(seqs, ts=ts)
    summary = summarize(wl, B)
    last_use: dict[tuple, float] = {}
    gaps: list[float] = []
    for seq, t in zip(seqs, ts, strict=True):
        nb = len(seq) // B
        h = 0
        while h < nb and tuple(seq[: (h + 1) * B]) in last_use:
            h += 1
        used = min(h, max(len(seq) - 1, 0) // B)
        gaps += [t - last_use[tuple(seq[: (i + 1) * B])] for i in range(used)]
        for i in range(nb):
            last_use[tuple(seq[: (i + 1) * B])] = t
    expect = {k: sum(g <= w for g in gaps) / len(gaps) for k, w in REUSE_WINDOWS.items()}
    assert summary.reuse_within == pytest.approx(expect)
    assert summary.working_set_tokens == B * len(last_use)
