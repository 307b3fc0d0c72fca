"""Prefix-sharing statistics on the block tree, vectorized (docs/architecture.md: Definitions).

Built on the runs, passes and ideal hits of ``kvtool.traffic.ideal``: sessions (logged or
inferred from prefix continuation), within- vs cross-session reuse, reuse times, the working set
and the top shared prefixes. Every statistic is computed per pass (a request through a run of
the tree), so an agent session that resends its history touches each run once per request, not
each block.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kvtool.traffic import (
    REUSE_WINDOWS,
    Hits,
    Passes,
    Runs,
    Workload,
    boundaries,
    run_starts,
)


@dataclass
class SessionSplit:
    """``within[i]``: an earlier request of pass i's session went through its run (so the pass's
    cached blocks are within-session reuse); ``sessions_per_run[c]``: distinct sessions through
    run c."""

    within: np.ndarray
    sessions_per_run: np.ndarray


def within_session(ps: Passes, session: np.ndarray) -> SessionSplit:
    """Split the passes by session (``session``: a code per request)."""
    s = np.unique(session, return_inverse=True)[1][ps.req].astype(np.int64)
    order = np.lexsort((ps.req, s, ps.run))
    starts = run_starts(ps.run[order]) | run_starts(s[order])
    within = np.empty(len(ps.run), bool)
    within[order] = ~starts
    n_runs = int(ps.run.max()) + 1 if len(ps.run) else 0
    sessions_per_run = np.bincount(ps.run[order][starts], minlength=n_runs)
    return SessionSplit(within, sessions_per_run)


@dataclass
class ReuseGaps:
    """Per cached stretch (a pass with cached blocks): ``seconds`` since the previous request
    through the same blocks (NaN where a time is unknown) and the ``tokens`` it saved;
    ``tokens`` sums to the cached tokens."""

    seconds: np.ndarray
    tokens: np.ndarray


def reuse_gap_tokens(ps: Passes, hits: Hits, ts: np.ndarray, first: int = 0) -> ReuseGaps:
    """The cached stretches of requests ``first..`` (the counted ones after a warm-up)."""
    use = (hits.cached_blocks > 0) & (ps.req >= first)
    gap = ts[ps.req[use]] - ts[ps.prev[use]]
    return ReuseGaps(gap, hits.cached_blocks[use].astype(np.int64) * hits.B)


def reuse_within(ps: Passes, hits: Hits, ts: np.ndarray, first: int = 0) -> dict[str, float | None]:
    """Share of the cached tokens of requests ``first..`` whose most recent earlier use (by any
    request) was within each window (of those with known times); None when no cached block has
    known times."""
    gaps = reuse_gap_tokens(ps, hits, ts, first)
    known = ~np.isnan(gaps.seconds)
    if not known.any():
        return {k: None for k in REUSE_WINDOWS}
    gap, weight = gaps.seconds[known], gaps.tokens[known]
    total = weight.sum()
    return {k: float(weight[gap <= w].sum() / total) for k, w in REUSE_WINDOWS.items()}


def working_set_blocks(rs: Runs, ps: Passes, k: int) -> int:
    """Distinct B-blocks on the requests' paths."""
    used = np.unique(ps.run)
    return int(boundaries(rs.lo[used], rs.hi[used], k).sum())


def first_requests(ps: Passes, n_runs: int) -> np.ndarray:
    """Per run, the first request (workload index) through it; 0 for runs without passes."""
    first = np.zeros(n_runs, np.int64)
    starts = np.nonzero(run_starts(ps.run))[0]
    first[ps.run[starts]] = ps.req[starts]
    return first


@dataclass
class Prefix:
    """A maximal shared prefix: it cannot be extended by a block without losing requests."""

    tokens: int
    requests: int
    sessions: int
    tokens_saved: int
    first_request: int  # index into the workload


def top_prefixes(
    wl: Workload, rs: Runs, ps: Passes, sessions_per_run: np.ndarray, k: int, limit: int = 10
) -> list[Prefix]:
    """The shared prefixes worth most: length x (requests - 1). A candidate is the deepest
    B-block of a run, when no run below keeps all of its requests."""
    if len(ps.run) == 0:
        return []
    n_runs = len(rs.lo)
    count = np.bincount(ps.run, minlength=n_runs)
    child_max = np.zeros(n_runs, np.int64)
    below = np.nonzero((count > 0) & (rs.parent >= 0))[0]
    np.maximum.at(child_max, rs.parent[below], count[below])
    deepest = (rs.hi + 1) // k * k - 1
    length = (deepest + 1) * wl.base
    saved = length * (count - 1)
    ok = np.nonzero((count >= 2) & (child_max < count) & (deepest >= rs.lo))[0]
    best = ok[np.argsort(-saved[ok], kind="stable")[:limit]]
    first_req = first_requests(ps, n_runs)
    return [
        Prefix(
            int(length[u]),
            int(count[u]),
            int(sessions_per_run[u]),
            int(saved[u]),
            int(first_req[u]),
        )
        for u in best
    ]


def infer_parents(wl: Workload, rs: Runs, ps: Passes) -> np.ndarray:
    """Per request, the earlier request it continues, or -1: r continues p when p's whole chain is
    a strict prefix of r's (p ends at the tail of a run above r's last run); the longest such p
    wins, the latest on ties."""
    n = wl.n
    parent = np.full(n, -1, np.int64)
    enders = np.nonzero(wl.end >= 0)[0]
    if len(enders) == 0:
        return parent
    table = np.sort(rs.of[wl.end[enders]] * n + enders)  # (run, request) of every end
    own = np.full(n, -1, np.int64)
    own[enders] = rs.of[wl.end[enders]]
    above = ps.run != own[ps.req]
    run, req = ps.run[above], ps.req[above]
    t = np.searchsorted(table, run * n + req, side="left") - 1
    valid = t >= 0
    t = np.where(valid, t, 0)
    valid &= table[t] // n == run
    run, req, p = run[valid], req[valid], table[t][valid] % n
    if len(req) == 0:
        return parent
    order = np.lexsort((rs.hi[run], req))  # per request, deepest run last
    req, p = req[order], p[order]
    last = np.append(req[1:] != req[:-1], True)
    parent[req[last]] = p[last]
    return parent


@dataclass
class Sessions:
    """A session code per request (``code``): logged session ids get 0, 1, ... in order of first
    appearance, inferred sessions -1, -2, ...; ``inferred`` counts the inferred sessions."""

    code: np.ndarray
    inferred: int


def assign_sessions(
    wl: Workload, parents: np.ndarray, logged: dict[str, int] | None = None, inferred: int = 0
) -> Sessions:
    """Logged ids where present, else the session of the inferred parent, else a new one.
    ``logged`` (updated) and ``inferred`` carry the codes given so far, for a workload seen in
    parts; the codes are then unique across the parts, numbered in the order they are met."""
    codes: dict[str, int] = {} if logged is None else logged
    out = np.empty(wl.n, np.int64)
    start = inferred
    for i, s in enumerate(wl.session):
        if s is not None:
            out[i] = codes.setdefault(s, len(codes))
        elif parents[i] >= 0:
            out[i] = out[parents[i]]
        else:  # inferred sessions take negative codes, disjoint from logged ones
            inferred += 1
            out[i] = -inferred
    return Sessions(out, inferred - start)
