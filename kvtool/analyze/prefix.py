"""Prefix-sharing statistics over block chains, vectorized (DESIGN.md: Definitions).

With an infinite cache and requests in processing order, request r's hit count h is the number of
its leading blocks that occurred in an earlier request; its cached tokens are
``B * min(h, (n - 1) // B)`` (vLLM computes at least one prompt token). All functions work on
flat arrays: ``H`` block hashes, ``R`` request index (non-decreasing), ``P`` block position.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kvtool.analyze.workload import Workload

REUSE_WINDOWS = {"5m": 300.0, "1h": 3600.0, "24h": 86400.0}


@dataclass
class BlockView:
    """A workload's blocks at size ``B`` (a multiple of its base size)."""

    B: int
    H: np.ndarray
    R: np.ndarray
    P: np.ndarray
    counts: np.ndarray  # blocks per request


def block_view(wl: Workload, B: int) -> BlockView:
    """Blocks of size ``B``: a B-block is identified by the base hash where it ends."""
    if B % wl.base:
        raise ValueError(f"block size {B} is not a multiple of the base size {wl.base}")
    k = B // wl.base
    R = wl.request_of_block
    P = wl.position_of_block
    if k > 1:
        keep = (P % k) == (k - 1)
        H, R, P = wl.blocks[keep], R[keep], P[keep] // k
    else:
        H = wl.blocks
    counts = np.bincount(R, minlength=wl.n) if len(R) else np.zeros(wl.n, np.int64)
    return BlockView(B, H, R, P, counts)


def _first_of_runs(keys: np.ndarray) -> np.ndarray:
    """Boolean mask: element i starts a run of equal ``keys`` (keys sorted)."""
    if len(keys) == 0:
        return np.zeros(0, bool)
    return np.concatenate([[True], keys[1:] != keys[:-1]])


def seen_before(H: np.ndarray) -> np.ndarray:
    """For each flat block: did the same hash occur at an earlier flat index."""
    order = np.argsort(H, kind="stable")
    seen = np.ones(len(H), bool)
    seen[order[_first_of_runs(H[order])]] = False
    return seen


@dataclass
class Hits:
    """Per-request hit counts and the cached-block mask under vLLM semantics."""

    hit_blocks: np.ndarray  # h per request (leading blocks found)
    cached_tokens: np.ndarray  # per request
    cached_mask: np.ndarray  # per flat block: counted as cached


def ideal_hits(view: BlockView, n_tokens: np.ndarray) -> Hits:
    """Infinite-cache hits: leading blocks seen in earlier requests, capped at (n-1)//B."""
    n = len(n_tokens)
    seen = seen_before(view.H)
    h = view.counts.astype(np.int64).copy()
    miss = ~seen
    if miss.any():
        r_miss = view.R[miss]
        first = _first_of_runs(r_miss)
        h[r_miss[first]] = view.P[miss][first]
    cap = np.maximum(n_tokens - 1, 0) // view.B
    used = np.minimum(h, cap)
    mask = view.P < used[view.R] if len(view.R) else np.zeros(0, bool)
    return Hits(h, used * view.B if n else np.zeros(0, np.int64), mask)


def within_session(view: BlockView, session: np.ndarray) -> np.ndarray:
    """Per flat block: the same hash occurred earlier in the same session."""
    S = session[view.R]
    order = np.lexsort((np.arange(len(view.H)), view.H, S))
    first = np.zeros(len(view.H), bool)
    if len(order):
        s_sorted, h_sorted = S[order], view.H[order]
        starts = np.concatenate(
            [[True], (s_sorted[1:] != s_sorted[:-1]) | (h_sorted[1:] != h_sorted[:-1])]
        )
        first[order[starts]] = True
    return ~first


def previous_use_gap(view: BlockView, ts: np.ndarray) -> np.ndarray:
    """Per flat block: seconds since the most recent earlier request with the same hash (NaN if
    none or a timestamp is unknown)."""
    order = np.lexsort((np.arange(len(view.H)), view.H))
    gap = np.full(len(view.H), np.nan)
    if len(order) > 1:
        h = view.H[order]
        same = h[1:] == h[:-1]
        cur, prev = order[1:][same], order[:-1][same]
        gap[cur] = ts[view.R[cur]] - ts[view.R[prev]]
    return gap


def reuse_within(view: BlockView, hits: Hits, ts: np.ndarray) -> dict[str, float | None]:
    """Share of cached tokens whose previous use was within each window (of those with known
    times); None when no cached block has known times."""
    gap = previous_use_gap(view, ts)[hits.cached_mask]
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


def top_prefixes(view: BlockView, session: np.ndarray, limit: int = 10) -> list[Prefix]:
    """The shared prefixes worth most: length x (requests - 1), maximal ones only."""
    if len(view.H) == 0:
        return []
    uniq, first_idx, inv, cnt = np.unique(
        view.H, return_index=True, return_inverse=True, return_counts=True
    )
    extendable = np.zeros(len(uniq), bool)
    has_next = np.concatenate([view.R[1:] == view.R[:-1], [False]])
    i = np.nonzero(has_next)[0]
    same = cnt[inv[i + 1]] == cnt[inv[i]]
    extendable[inv[i[same]]] = True
    pairs = np.unique(np.stack([inv, session[view.R]]), axis=1)
    n_sessions = np.bincount(pairs[0], minlength=len(uniq))
    length = (view.P[first_idx] + 1) * view.B
    saved = length * (cnt - 1)
    ok = np.nonzero((cnt >= 2) & ~extendable)[0]
    best = ok[np.argsort(-saved[ok], kind="stable")[:limit]]
    return [
        Prefix(
            int(length[u]),
            int(cnt[u]),
            int(n_sessions[u]),
            int(saved[u]),
            int(view.R[first_idx[u]]),
        )
        for u in best
    ]


def infer_parents(wl: Workload) -> np.ndarray:
    """Per request, the index of the earlier request it continues, or -1.

    r continues p when p's last full block occurs in r before r's last block (r's prompt extends
    p's); the longest such p wins, the latest on ties. Works on base-size chains."""
    n = wl.n
    parent = np.full(n, -1, np.int64)
    counts = np.diff(wl.offsets)
    has = np.nonzero(counts > 0)[0]
    if len(has) == 0:
        return parent
    end_key = wl.blocks[wl.offsets[has + 1] - 1]
    keys, key_ids = np.unique(end_key, return_inverse=True)
    table = np.sort(key_ids.astype(np.int64) * n + has)
    R, P = wl.request_of_block, wl.position_of_block
    cand = P < counts[R] - 1
    H, R, P = wl.blocks[cand], R[cand], P[cand]
    j = np.searchsorted(keys, H)
    j = np.minimum(j, len(keys) - 1)
    is_key = keys[j] == H
    H, R, P, j = H[is_key], R[is_key], P[is_key], j[is_key]
    q = j.astype(np.int64) * n + R
    t = np.searchsorted(table, q, side="left") - 1
    valid = t >= 0
    t = np.where(valid, t, 0)
    valid &= table[t] // n == j
    R, P, p = R[valid], P[valid], table[t][valid] % n
    if len(R) == 0:
        return parent
    # last (longest) match per request: entries of a request are in position order
    last = np.concatenate([R[1:] != R[:-1], [True]])
    parent[R[last]] = p[last]
    return parent


def assign_sessions(wl: Workload) -> tuple[np.ndarray, int]:
    """Session index per request: logged ids where present, else inherited from the inferred
    parent, else a new session. Returns (codes, number of inferred sessions)."""
    codes: dict[str, int] = {}
    out = np.empty(wl.n, np.int64)
    missing = [i for i, s in enumerate(wl.session) if s is None]
    parent = infer_parents(wl) if missing else np.full(wl.n, -1, np.int64)
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
