"""Prefix-sharing statistics over block chains, vectorized (DESIGN.md: Definitions).

With an infinite cache and requests in processing order, request r's hit count h is the number of
its leading blocks that occurred in an earlier request; its cached tokens are
``B * min(h, (n - 1) // B)`` (vLLM computes at least one prompt token).

Flat arrays, in processing order: ``R`` request index (non-decreasing), ``P`` block position.
Block hashes are factorized once (``Occurrences``: one stable sort); every statistic after that
is linear. All occurrences of a chain hash sit at the same position (the hash names the whole
prefix), so a B-block view is a subset of the base blocks that keeps the same factorization.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kvtool.analyze.workload import Workload

REUSE_WINDOWS = {"5m": 300.0, "1h": 3600.0, "24h": 86400.0}


def _first_of_runs(keys: np.ndarray) -> np.ndarray:
    """Boolean mask: element i starts a run of equal ``keys``."""
    if len(keys) == 0:
        return np.zeros(0, bool)
    return np.concatenate([[True], keys[1:] != keys[:-1]])


@dataclass
class Occurrences:
    """Flat values factorized: ``gid`` dense id per element, ``first`` (per gid) the index of its
    first occurrence, ``prev`` (per element) the index of the previous occurrence or -1,
    ``count`` (per gid) occurrences."""

    gid: np.ndarray
    first: np.ndarray
    prev: np.ndarray
    count: np.ndarray

    @property
    def seen(self) -> np.ndarray:
        """Per element: the same value occurred at an earlier index."""
        return self.prev >= 0


def occurrences(values: np.ndarray) -> Occurrences:
    """Factorize ``values`` with one stable sort."""
    n = len(values)
    order = np.argsort(values, kind="stable")
    starts = _first_of_runs(values[order])
    gid = np.empty(n, np.int64)
    gid[order] = np.cumsum(starts) - 1
    first = order[starts]
    prev = np.full(n, -1, np.int64)
    cont = ~starts
    if n:
        prev[order[cont]] = order[np.nonzero(cont)[0] - 1]
    bounds = np.append(np.nonzero(starts)[0], n)
    return Occurrences(gid, first, prev, np.diff(bounds))


@dataclass
class BlockView:
    """A workload's blocks at size ``B``: ``idx`` are the base-block indices that end a B-block,
    ``R``/``P`` their request and B-block position, ``counts`` B-blocks per request."""

    B: int
    k: int
    idx: np.ndarray
    R: np.ndarray
    P: np.ndarray
    counts: np.ndarray


def block_view(wl: Workload, B: int) -> BlockView:
    """Blocks of size ``B``: a B-block is identified by the base hash where it ends."""
    if B % wl.base:
        raise ValueError(f"block size {B} is not a multiple of the base size {wl.base}")
    k = B // wl.base
    R, P = wl.request_of_block, wl.position_of_block
    idx = np.nonzero((P % k) == (k - 1))[0] if k > 1 else np.arange(len(R))
    return BlockView(B, k, idx, R[idx], P[idx] // k, np.diff(wl.offsets) // k)


def base_hit_blocks(wl: Workload, occ: Occurrences) -> np.ndarray:
    """Per request: leading base blocks that occurred in an earlier request."""
    h = np.diff(wl.offsets).copy()
    miss = np.nonzero(~occ.seen)[0]
    if len(miss):
        R = wl.request_of_block[miss]
        first = _first_of_runs(R)
        h[R[first]] = wl.position_of_block[miss][first]
    return h


@dataclass
class Hits:
    """Per-request cached tokens at block size B, and which blocks of the view they cover."""

    cached_tokens: np.ndarray
    cached_mask: np.ndarray  # per view block


def ideal_hits(view: BlockView, base_hits: np.ndarray, n_tokens: np.ndarray) -> Hits:
    """Infinite-cache hits at ``view.B``: seen blocks form a prefix, so h_B = h_base // k,
    capped at (n - 1) // B."""
    cap = np.maximum(n_tokens - 1, 0) // view.B
    used = np.minimum(base_hits // view.k, cap)
    return Hits(used * view.B, view.P < used[view.R])


def within_session(view: BlockView, occ: Occurrences, session: np.ndarray) -> tuple:
    """Per view block: the same block occurred earlier in the same session; and per gid the
    number of sessions it occurs in."""
    gid = occ.gid[view.idx]
    _, s_dense = np.unique(session, return_inverse=True)
    key = s_dense[view.R].astype(np.int64) * (int(gid.max(initial=0)) + 1) + gid
    pairs = occurrences(key)
    first_in_session = ~pairs.seen
    sessions_per_gid = np.bincount(gid[first_in_session], minlength=len(occ.count))
    return pairs.seen, sessions_per_gid


def reuse_within(
    view: BlockView, occ: Occurrences, hits: Hits, ts: np.ndarray, R_base: np.ndarray
) -> dict[str, float | None]:
    """Share of cached tokens whose most recent earlier use was within each window (of those with
    known times); None when no cached block has known times."""
    cur = view.idx[hits.cached_mask]
    prev = occ.prev[cur]
    gap = ts[R_base[cur]] - ts[R_base[prev]]
    gap = gap[~np.isnan(gap)]
    if len(gap) == 0:
        return {k: None for k in REUSE_WINDOWS}
    return {k: float(np.mean(gap <= w)) for k, w in REUSE_WINDOWS.items()}


@dataclass
class Prefix:
    """A maximal shared prefix: it cannot be extended by a block without losing requests."""

    tokens: int
    requests: int
    sessions: int
    tokens_saved: int
    first_request: int  # index into the workload


def top_prefixes(
    view: BlockView,
    occ: Occurrences,
    sessions_per_gid: np.ndarray,
    R_base: np.ndarray,
    limit: int = 10,
) -> list[Prefix]:
    """The shared prefixes worth most: length x (requests - 1), maximal ones only."""
    if len(view.idx) == 0:
        return []
    gid = occ.gid[view.idx]
    cnt = occ.count
    has_next = np.append(view.R[1:] == view.R[:-1], False)
    i = np.nonzero(has_next)[0]
    extendable = np.zeros(len(cnt), bool)
    extendable[gid[i[cnt[gid[i + 1]] == cnt[gid[i]]]]] = True
    in_view = np.zeros(len(cnt), bool)
    in_view[gid] = True
    position = np.zeros(len(cnt), np.int64)
    position[gid] = view.P
    length = (position + 1) * view.B
    saved = length * (cnt - 1)
    ok = np.nonzero(in_view & (cnt >= 2) & ~extendable)[0]
    best = ok[np.argsort(-saved[ok], kind="stable")[:limit]]
    R_first = R_base[occ.first]  # the first request containing each block
    return [
        Prefix(
            int(length[u]), int(cnt[u]), int(sessions_per_gid[u]), int(saved[u]), int(R_first[u])
        )
        for u in best
    ]


def infer_parents(wl: Workload, occ: Occurrences) -> np.ndarray:
    """Per request, the index of the earlier request it continues, or -1.

    r continues p when p's last full block occurs in r before r's last block (r's prompt extends
    p's); the longest such p wins, the latest on ties. Works on base-size chains."""
    n = wl.n
    parent = np.full(n, -1, np.int64)
    counts = np.diff(wl.offsets)
    has = np.nonzero(counts > 0)[0]
    if len(has) == 0:
        return parent
    end_gid = occ.gid[wl.offsets[has + 1] - 1]
    is_end = np.zeros(len(occ.count), bool)
    is_end[end_gid] = True
    table = np.sort(end_gid * n + has)  # (gid, request) of every request's end, sorted
    R, P = wl.request_of_block, wl.position_of_block
    cand = np.nonzero(is_end[occ.gid] & (P < counts[R] - 1))[0]
    g, R, P = occ.gid[cand], R[cand], P[cand]
    t = np.searchsorted(table, g * n + R, side="left") - 1  # latest end before r with this gid
    valid = t >= 0
    t = np.where(valid, t, 0)
    valid &= table[t] // n == g
    R, p = R[valid], table[t][valid] % n
    if len(R) == 0:
        return parent
    last = np.append(R[1:] != R[:-1], True)  # the longest match: entries are in position order
    parent[R[last]] = p[last]
    return parent


def assign_sessions(wl: Workload, occ: Occurrences) -> tuple[np.ndarray, int]:
    """Session code per request: logged ids where present, else inherited from the inferred
    parent, else a new session. Returns (codes, number of inferred sessions)."""
    codes: dict[str, int] = {}
    out = np.empty(wl.n, np.int64)
    has_missing = any(s is None for s in wl.session)
    parent = infer_parents(wl, occ) if has_missing else np.full(wl.n, -1, np.int64)
    inferred = 0
    for i, s in enumerate(wl.session):
        if s is not None:
            out[i] = codes.setdefault(s, len(codes))
        elif parent[i] >= 0:
            out[i] = out[parent[i]]
        else:  # inferred sessions take negative codes, disjoint from logged ones
            inferred += 1
            out[i] = -inferred
    return out, inferred
