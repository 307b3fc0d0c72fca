"""Workloads built in memory from token sequences, for the array-level tests."""

from __future__ import annotations

import numpy as np

from kvtool.tokenize import chain_blocks
from kvtool.traffic.tree import tree_from_paths
from kvtool.traffic.workload import Workload


def token_workload(seqs: list[list[int]], sessions=None, ts=None, cache_keys=None) -> Workload:
    """A tokenized workload of token sequences in this order (base blocks of 16; ts 10 s apart
    unless given; no cache keys unless given), built with the real chain hashing and block
    tree."""
    chains = [chain_blocks(np.asarray(s, np.uint32), 12345).view(np.int64) for s in seqs]
    n = len(seqs)
    offsets = np.concatenate([[0], np.cumsum([len(c) for c in chains])]).astype(np.int64)
    flat = np.concatenate(chains) if chains else np.zeros(0, np.int64)
    end, parent, depth = tree_from_paths(offsets, flat)
    return Workload(
        req_ids=np.arange(n),
        ts=np.asarray(ts if ts is not None else np.arange(n, dtype=float) * 10.0, float),
        session=list(sessions) if sessions is not None else [None] * n,
        n_tokens=np.array([len(s) for s in seqs], np.int64),
        output_tokens=np.zeros(n, np.int64),
        observed_prompt=np.full(n, np.nan),
        observed_cached=np.full(n, np.nan),
        end=end,
        parent=parent,
        depth=depth,
        base=16,
        kind="tokens",
        models=[None] * n,
        cache_keys=list(cache_keys) if cache_keys is not None else [None] * n,
    )
