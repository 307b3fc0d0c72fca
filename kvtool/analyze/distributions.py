"""The distributions behind the report's charts, as plain JSON-able data (docs/report.md).

Everything is computed on the workload's integer arrays (one bincount or histogram each). Token
counts in every output sum to the analyze totals they break down: ``timeline`` sums to
``requests``/``prompt_tokens``/``cached_tokens``, ``reuse_gaps`` plus its ``unknown_tokens`` to
``cached_tokens``.
"""

from __future__ import annotations

import numpy as np

from kvtool.analyze.prefix import ReuseGaps, first_requests, reuse_gap_tokens
from kvtool.traffic import Hits, Passes, Runs, Workload

# time-bin widths in seconds, smallest first: the first one giving at most MAX_BINS bins wins
STEPS_S = (1, 10, 60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400, 30 * 86400)
MAX_BINS = 120
MIN_GAP_S = 1e-3  # reuse gaps are clamped up to 1 ms (same-timestamp requests) for a log axis


def timeline(ts: np.ndarray, n_tokens: np.ndarray, cached: np.ndarray) -> dict:
    """Requests, prompt tokens and cached tokens per time bin. Requests without a timestamp (or a
    trace without times) are binned by processing order instead: ``unit`` is ``"s"`` or
    ``"request"``, bin i covers ``[start + i*step, start + (i+1)*step)``."""
    known = ~np.isnan(ts)
    n = len(ts)
    if n and known.all() and np.ptp(ts) > 0:
        start = float(ts.min())
        span = float(ts.max()) - start
        step = next((s for s in STEPS_S if span / s < MAX_BINS), STEPS_S[-1])
        index = ((ts - start) // step).astype(np.int64)
        unit = "s"
    else:
        start, unit = 0.0, "request"
        step = max(1, -(-n // MAX_BINS))
        index = np.arange(n, dtype=np.int64) // step
    bins = int(index.max()) + 1 if n else 0
    return {
        "unit": unit,
        "start": start,
        "step": step,
        "requests": np.bincount(index, minlength=bins).tolist(),
        "prompt_tokens": np.bincount(index, n_tokens, minlength=bins).astype(np.int64).tolist(),
        "cached_tokens": np.bincount(index, cached, minlength=bins).astype(np.int64).tolist(),
    }


def log_histogram(values: np.ndarray, weights: np.ndarray | None = None, per_octave: int = 4):
    """Histogram on log-spaced edges (``per_octave`` bins per doubling) of positive values:
    ``{"edges": [...], "counts": [...]}`` with ``len(edges) == len(counts) + 1``."""
    values = np.asarray(values, float)
    if len(values) == 0:
        return {"edges": [], "counts": []}
    lo = np.floor(np.log2(values.min()) * per_octave)
    hi = np.floor(np.log2(values.max()) * per_octave) + 1
    edges = 2.0 ** (np.arange(lo, hi + 1) / per_octave)
    counts, _ = np.histogram(values, edges, weights=weights)
    return {"edges": edges.tolist(), "counts": counts.astype(np.int64).tolist()}


def prompt_lengths(n_tokens: np.ndarray) -> dict:
    """Requests per prompt length (tokens, log bins); ``empty`` counts zero-token prompts."""
    positive = n_tokens[n_tokens > 0]
    return {**log_histogram(positive), "empty": int((n_tokens <= 0).sum())}


def reuse_gaps(ps: Passes, hits: Hits, ts: np.ndarray) -> dict:
    """Cached tokens by the time since their previous use (log bins of seconds, from 1 ms)."""
    return reuse_histogram(reuse_gap_tokens(ps, hits, ts))


def reuse_histogram(gaps: ReuseGaps) -> dict:
    """``reuse_gaps`` of the cached stretches ``gaps``."""
    known = ~np.isnan(gaps.seconds)
    out = log_histogram(np.maximum(gaps.seconds[known], MIN_GAP_S), gaps.tokens[known])
    out["unknown_tokens"] = int(gaps.tokens[~known].sum())
    return out


def prefix_tree(
    wl: Workload, rs: Runs, ps: Passes, sessions_per_run: np.ndarray, limit: int = 40
) -> list[dict]:
    """The shared part of the block tree (runs that at least two requests pass through): the
    ``limit`` runs that save most tokens (run tokens × (requests − 1)) and all their ancestors,
    parents before children. ``start``/``end`` are token offsets of the run in its prompts;
    ``req_id`` is the first request through it (to show its text)."""
    n_runs = len(rs.lo)
    if len(ps.run) == 0:
        return []
    count = np.bincount(ps.run, minlength=n_runs)
    tokens = (rs.hi - rs.lo + 1) * wl.base
    saved = tokens * np.maximum(count - 1, 0)
    shared = np.nonzero(count >= 2)[0]
    keep = np.zeros(n_runs, bool)
    frontier = shared[np.argsort(-saved[shared], kind="stable")[:limit]]
    while len(frontier):  # ancestors of a shared run are shared: the tree stays connected
        frontier = frontier[~keep[frontier]]
        keep[frontier] = True
        frontier = rs.parent[frontier]
        frontier = frontier[frontier >= 0]
    first_req = first_requests(ps, n_runs)
    chosen = np.nonzero(keep)[0]
    chosen = chosen[np.argsort(rs.lo[chosen], kind="stable")]  # parents start before children
    return [
        {
            "id": int(c),
            "parent": int(rs.parent[c]),
            "start": int(rs.lo[c] * wl.base),
            "end": int((rs.hi[c] + 1) * wl.base),
            "requests": int(count[c]),
            "sessions": int(sessions_per_run[c]),
            "tokens_saved": int(saved[c]),
            "req_id": int(wl.req_ids[first_req[c]]),
        }
        for c in chosen
    ]
