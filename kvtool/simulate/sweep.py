"""The whole LRU hit-rate curve in one pass (Mattson's stack algorithm, prefix-aware).

With one request at a time, the block reference stream does not depend on the capacity: every
request references all its full blocks, last to first (vLLM's order), whatever it hit. LRU is a
stack algorithm, so a cache of C blocks holds exactly the C most recently referenced distinct
blocks, and block b_j of request r is resident iff its *stack distance* d_j — the number of
distinct blocks referenced since b_j's last reference — is below C. The lookup stops at the first
miss, so r hits ``#{j < cap : max(d_0..d_j) < C}`` blocks: one array of prefix maxima answers
every capacity at once (``LRUCurve.cached_tokens``).

This equals the engine's LRU with ``concurrency=1`` for every capacity of at least the largest
request (in blocks). A smaller cache cannot hold a running request at all: the engine then keeps
what fits while the request is pinned, which no stack model describes, so the caller simulates
those capacities directly (``LRUCurve.exact_from``).

Distances come from a Fenwick tree over reference stamps that marks each block's latest stamp;
the loop is C (``kv_stack_maxima`` in ``kernels.c``, compiled when kvtool is installed), and
``_stack_maxima`` below is the same loop in Python: the reference the C is tested against, and
what runs on an install built without a C compiler.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kvtool.native import library

NEVER = np.iinfo(np.int64).max


@dataclass
class LRUCurve:
    """Per counted block (the first ``cap`` blocks of each request, in order), the prefix maximum
    of stack distances; ``offsets`` delimit requests. ``exact_from``: the smallest capacity for
    which the curve equals the direct simulation (the largest request, in blocks)."""

    maxima: np.ndarray
    offsets: np.ndarray
    block_size: int
    exact_from: int

    def hits(self, capacity: int) -> np.ndarray:
        """Blocks hit per request at ``capacity`` blocks."""
        sums = np.zeros(len(self.maxima) + 1, np.int64)
        np.cumsum(self.maxima < capacity, out=sums[1:])
        return sums[self.offsets[1:]] - sums[self.offsets[:-1]]

    def cached_tokens(self, capacities: list[int] | np.ndarray) -> np.ndarray:
        """Total cached tokens at each capacity (blocks), from one sorted array."""
        ordered = np.sort(self.maxima)
        return np.searchsorted(ordered, np.asarray(capacities), side="left") * self.block_size


def _stack_maxima(
    offsets: np.ndarray,
    dense: np.ndarray,
    caps: np.ndarray,
    n_unique: int,
    out: np.ndarray,
    out_offsets: np.ndarray,
    maxima: bool = True,
) -> int:
    """Fill ``out`` with the prefix maxima of stack distances (``maxima``; else the distances
    themselves) of each request's first ``caps[i]`` blocks (``NEVER`` for a block not seen
    before, and for every block after it); returns the largest request in blocks."""
    size = len(dense) + 1
    tree = np.zeros(size + 1, np.int32)  # counts and stamps stay below 2**31 references
    last = np.full(n_unique, -1, np.int32)
    stamp = 0
    active = 0
    w = 0
    largest = 0
    for i in range(len(offsets) - 1):
        lo = offsets[i]
        hi = offsets[i + 1]
        largest = max(largest, hi - lo)
        cap = caps[i]
        running = -1
        j = 0
        while j < cap:
            at = last[dense[lo + j]]
            if at < 0:
                while j < cap:
                    out[w] = NEVER
                    w += 1
                    j += 1
                break
            below = 0
            k = at
            while k > 0:
                below += tree[k]
                k -= k & -k
            d = active - below
            running = max(running, d) if maxima else d
            out[w] = running
            w += 1
            j += 1
        out_offsets[i + 1] = w
        for jj in range(hi - 1, lo - 1, -1):
            b = dense[jj]
            at = last[b]
            if at >= 0:
                k = at
                while k < size:
                    tree[k] -= 1
                    k += k & -k
            else:
                active += 1
            stamp += 1
            k = stamp
            while k < size:
                tree[k] += 1
                k += k & -k
            last[b] = stamp
    return largest


def lru_curve(
    offsets: np.ndarray,
    blocks: np.ndarray,
    n_tokens: np.ndarray,
    B: int,
    compiled: bool = True,
) -> LRUCurve:
    """Stack-distance prefix maxima of every counted block (see the module docstring).
    ``compiled=False`` runs the kernel as plain Python (same results, slower)."""
    out, out_offsets, largest = _distances(offsets, blocks, n_tokens, B, True, compiled)
    return LRUCurve(out, out_offsets, B, max(int(largest), 1))


def stack_distances(
    offsets: np.ndarray, blocks: np.ndarray, n_tokens: np.ndarray, B: int
) -> tuple[np.ndarray, np.ndarray]:
    """The stack distance of every counted block (the first ``(n - 1) // B`` of each request;
    ``NEVER`` for a block not seen before and every block after it) and their offsets per
    request: what ``lru_curve`` takes the prefix maxima of."""
    out, out_offsets, _ = _distances(offsets, blocks, n_tokens, B, False, True)
    return out, out_offsets


def _distances(
    offsets: np.ndarray,
    blocks: np.ndarray,
    n_tokens: np.ndarray,
    B: int,
    maxima: bool,
    compiled: bool,
) -> tuple[np.ndarray, np.ndarray, int]:
    counts = np.diff(offsets)
    caps = np.minimum(counts, np.maximum(n_tokens - 1, 0) // B).astype(np.int64)
    dense = np.ascontiguousarray(blocks, np.int64)  # tree node ids: already dense
    n_unique = int(dense.max()) + 1 if len(dense) else 0
    out = np.empty(int(caps.sum()), np.int64)
    out_offsets = np.zeros(len(offsets), np.int64)
    offsets = offsets.astype(np.int64)
    lib = library() if compiled else None
    if lib is None:
        largest = _stack_maxima(offsets, dense, caps, n_unique, out, out_offsets, maxima)
    else:
        tree = np.zeros(len(dense) + 2, np.int32)  # counts and stamps stay below 2**31
        last = np.full(n_unique, -1, np.int32)
        largest = lib.kv_stack_maxima(
            len(offsets) - 1,
            offsets,
            dense,
            len(dense),
            caps,
            int(maxima),
            out,
            out_offsets,
            tree,
            last,
        )
    return out, out_offsets, int(largest)
