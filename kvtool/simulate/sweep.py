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

Distances come from a Fenwick tree over reference stamps that marks each block's latest stamp.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
        mask = (self.maxima < capacity).astype(np.int64)
        sums = np.concatenate([[0], np.cumsum(mask)])
        return sums[self.offsets[1:]] - sums[self.offsets[:-1]]

    def cached_tokens(self, capacities: list[int] | np.ndarray) -> np.ndarray:
        """Total cached tokens at each capacity (blocks), from one sorted array."""
        ordered = np.sort(self.maxima)
        return np.searchsorted(ordered, np.asarray(capacities), side="left") * self.block_size


def lru_curve(offsets: np.ndarray, blocks: np.ndarray, n_tokens: np.ndarray, B: int) -> LRUCurve:
    """Stack-distance prefix maxima of every counted block (see the module docstring)."""
    n_req = len(offsets) - 1
    size = len(blocks) + 1
    tree = [0] * (size + 1)
    last: dict[int, int] = {}
    stream = blocks.tolist()
    offs = offsets.tolist()
    ns = n_tokens.tolist()
    out: list[int] = []
    out_offsets = [0]
    stamp = 0
    active = 0
    largest = 0
    for i in range(n_req):
        mine = stream[offs[i] : offs[i + 1]]
        largest = max(largest, len(mine))
        cap = min(len(mine), max(ns[i] - 1, 0) // B)
        running = -1
        for j in range(cap):
            at = last.get(mine[j])
            if at is None:
                out.extend([NEVER] * (cap - j))
                break
            below = 0  # marks at stamps <= at
            k = at
            while k > 0:
                below += tree[k]
                k -= k & -k
            d = active - below
            if d > running:
                running = d
            out.append(running)
        out_offsets.append(len(out))
        for b in reversed(mine):
            at = last.get(b)
            if at is not None:
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
    return LRUCurve(np.array(out, np.int64), np.array(out_offsets, np.int64), B, max(largest, 1))
