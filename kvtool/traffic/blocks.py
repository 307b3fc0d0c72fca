"""Per-request block streams at a block size: what the simulator, replay and export consume.

Block ids are node ids of the block tree (``Workload``): equal ids are equal prefixes, and the
tree is keyed by model and tenant, so tenants never share. A block at size B is named by the
tree node where it ends; only full blocks count, so request i has ``(depth[end[i]] + 1) // k``
blocks with ``k = B // base``, and B must be a multiple of the workload's base block size.
"""

from __future__ import annotations

import numpy as np

from kvtool.errors import OptionError
from kvtool.traffic.workload import Workload


def block_streams(wl: Workload, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, blocks): request i's full blocks at ``block_size`` are
    ``blocks[offsets[i]:offsets[i + 1]]``, each named by the tree node where it ends.

    One vectorized step per tree level walks every request's path from its end to the root.
    Requests with no full block (even when no request has one) get an empty stream."""
    if block_size % wl.base:
        raise OptionError(
            "block_size", f"{block_size} is not a multiple of the trace's block size {wl.base}"
        )
    k = block_size // wl.base
    has = wl.end >= 0
    end_depth = np.full(len(wl.end), -1, np.int64)  # -1: no full block (maybe no tree at all)
    end_depth[has] = wl.depth[wl.end[has]]
    counts = np.where(has, (end_depth + 1) // k, 0).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    out = np.empty(int(offsets[-1]), np.int64)
    # deepest first: the requests that reach level d are a prefix of ``order``
    order = np.argsort(-end_depth, kind="stable")
    sorted_depth = end_depth[order]
    cur = wl.end[order]  # each request's node at the current level (from its level down)
    start = offsets[:-1][order]
    top = int(end_depth.max()) if len(end_depth) else -1
    for d in range(top, -1, -1):
        active = int(np.searchsorted(-sorted_depth, -d, side="right"))
        if (d + 1) % k == 0:
            out[start[:active] + (d + 1) // k - 1] = cur[:active]
        cur[:active] = wl.parent[cur[:active]]
    return offsets, out
