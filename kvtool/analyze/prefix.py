"""Prefix-sharing statistics on the block tree, vectorized (docs/architecture.md: Definitions).

With an infinite cache and requests in processing order, request r's hit count h is the number of
its leading blocks that occurred in an earlier request; its cached tokens are
``B * min(h, (n - 1) // B)`` (vLLM computes at least one prompt token).

The work is proportional to distinct blocks and to *passes* — (run, request) pairs where a run
(``Runs``) is a maximal unary stretch of the block tree that no request ends inside. The set of
requests passing through a run is the same at every block of it, so every statistic can be
computed per pass and weighted by how many of the run's blocks count. An agent session that
resends its history touches each run once per request, not each block.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kvtool.errors import WorkloadError
from kvtool.traffic import Workload

REUSE_WINDOWS = {"5m": 300.0, "1h": 3600.0, "24h": 86400.0}


def _starts(keys: np.ndarray) -> np.ndarray:
    """Boolean mask: element i starts a run of equal ``keys``."""
    if len(keys) == 0:
        return np.zeros(0, bool)
    return np.concatenate([[True], keys[1:] != keys[:-1]])


@dataclass
class Runs:
    """The block tree with unary stretches merged: ``of[v]`` is node v's run; run c covers depths
    ``lo[c]..hi[c]`` and hangs below run ``parent[c]`` (-1 at a root)."""

    of: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    parent: np.ndarray


def runs(wl: Workload) -> Runs:
    """Merge unary stretches: a node starts a run unless its parent has exactly one child and no
    request ends at the parent. Pointer jumping finds every node's run head in O(log depth)
    passes."""
    n_nodes = len(wl.parent)
    p = wl.parent
    has_parent = p >= 0
    children = np.bincount(p[has_parent], minlength=n_nodes)
    is_end = np.zeros(n_nodes, bool)
    is_end[wl.end[wl.end >= 0]] = True
    head = ~has_parent
    head[has_parent] = (children[p[has_parent]] != 1) | is_end[p[has_parent]]
    ptr = np.where(head, np.arange(n_nodes), p)
    while True:
        nxt = ptr[ptr]
        if np.array_equal(nxt, ptr):
            break
        ptr = nxt
    heads = np.nonzero(head)[0]
    run_id = np.empty(n_nodes, np.int64)
    run_id[heads] = np.arange(len(heads))
    of = run_id[ptr]
    hi = np.zeros(len(heads), np.int64)
    np.maximum.at(hi, of, wl.depth)
    parent = np.where(has_parent[heads], of[np.maximum(p[heads], 0)], -1)
    return Runs(of, wl.depth[heads], hi, parent)


@dataclass
class Passes:
    """(run, request) pairs for every run on every request's path, sorted by run then request.
    ``prev[i]`` is the previous request through the same run (-1 for the first)."""

    run: np.ndarray
    req: np.ndarray
    prev: np.ndarray

    @property
    def seen(self) -> np.ndarray:
        return self.prev >= 0


def passes(wl: Workload, rs: Runs) -> Passes:
    """Walk every request's path up the run tree (one vectorized step per run level)."""
    req = np.nonzero(wl.end >= 0)[0]
    run = rs.of[wl.end[req]]
    out_run, out_req = [], []
    while len(req):
        out_run.append(run)
        out_req.append(req)
        up = rs.parent[run]
        keep = up >= 0
        run, req = up[keep], req[keep]
    run = np.concatenate(out_run) if out_run else np.zeros(0, np.int64)
    req = np.concatenate(out_req) if out_req else np.zeros(0, np.int64)
    order = np.argsort(run * wl.n + req, kind="stable")
    run, req = run[order], req[order]
    first = _starts(run)
    prev = np.where(first, -1, np.roll(req, 1))
    return Passes(run, req, prev)


def base_hit_blocks(wl: Workload, rs: Runs, ps: Passes) -> np.ndarray:
    """Per request: leading base blocks that occurred in an earlier request (seen runs form a
    prefix of the path, and a seen run was seen whole)."""
    length = (rs.hi - rs.lo + 1)[ps.run]
    return np.bincount(ps.req[ps.seen], weights=length[ps.seen], minlength=wl.n).astype(np.int64)


def _boundaries(lo: np.ndarray, top: np.ndarray, k: int) -> np.ndarray:
    """How many depths d in [lo, top] end a k-block (d % k == k - 1); 0 when top < lo."""
    return np.where(top >= lo, (top + 1) // k - lo // k, 0)


@dataclass
class Hits:
    """At block size ``B``: cached tokens per request and cached B-blocks per pass."""

    B: int
    k: int
    cached_tokens: np.ndarray
    cached_blocks: np.ndarray  # per pass


def ideal_hits(wl: Workload, rs: Runs, ps: Passes, base_hits: np.ndarray, B: int) -> Hits:
    """Infinite-cache hits at ``B``: h_B = h_base // k, capped at (n - 1) // B. ``B`` must be a
    multiple of the workload's base block size (``WorkloadError`` otherwise)."""
    if B % wl.base:
        raise WorkloadError(f"block_size {B} is not a multiple of the trace's block size {wl.base}")
    k = B // wl.base
    cap = np.maximum(wl.n_tokens - 1, 0) // B
    used = np.minimum(base_hits // k, cap)
    top = np.minimum(rs.hi[ps.run], used[ps.req] * k - 1)
    return Hits(B, k, used * B, _boundaries(rs.lo[ps.run], top, k))


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
    starts = _starts(ps.run[order]) | _starts(s[order])
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


def reuse_gap_tokens(ps: Passes, hits: Hits, ts: np.ndarray) -> ReuseGaps:
    use = hits.cached_blocks > 0
    gap = ts[ps.req[use]] - ts[ps.prev[use]]
    return ReuseGaps(gap, hits.cached_blocks[use].astype(np.int64) * hits.B)


def reuse_within(ps: Passes, hits: Hits, ts: np.ndarray) -> dict[str, float | None]:
    """Share of cached tokens whose most recent earlier use was within each window (of those with
    known times); None when no cached block has known times."""
    gaps = reuse_gap_tokens(ps, hits, ts)
    known = ~np.isnan(gaps.seconds)
    if not known.any():
        return {k: None for k in REUSE_WINDOWS}
    gap, weight = gaps.seconds[known], gaps.tokens[known]
    total = weight.sum()
    return {k: float(weight[gap <= w].sum() / total) for k, w in REUSE_WINDOWS.items()}


def working_set_blocks(rs: Runs, ps: Passes, k: int) -> int:
    """Distinct B-blocks on the requests' paths."""
    used = np.unique(ps.run)
    return int(_boundaries(rs.lo[used], rs.hi[used], k).sum())


def first_requests(ps: Passes, n_runs: int) -> np.ndarray:
    """Per run, the first request (workload index) through it; 0 for runs without passes."""
    first = np.zeros(n_runs, np.int64)
    starts = np.nonzero(_starts(ps.run))[0]
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


def assign_sessions(wl: Workload, parents: np.ndarray) -> Sessions:
    """Logged ids where present, else the session of the inferred parent, else a new one."""
    codes: dict[str, int] = {}
    out = np.empty(wl.n, np.int64)
    inferred = 0
    for i, s in enumerate(wl.session):
        if s is not None:
            out[i] = codes.setdefault(s, len(codes))
        elif parents[i] >= 0:
            out[i] = out[parents[i]]
        else:  # inferred sessions take negative codes, disjoint from logged ones
            inferred += 1
            out[i] = -inferred
    return Sessions(out, inferred)
