"""Export the analyzed traffic as a Mooncake-style hash trace, so that it interoperates with
tools that replay such traces (``vllm bench serve``, aiperf, Dynamo).

One JSON line per request, in processing order: ``timestamp`` (ms since the first request),
``input_length`` (prompt tokens), ``output_length`` and ``hash_ids``. A hash id names a block of
``block_size`` tokens together with every block before it (equal ids = equal prefixes), numbered
0, 1, 2, ... in order of first appearance; the last id covers the partial block when the prompt
length is not a multiple of the block size (a fresh id: nothing else shares it). Prompt text
never leaves the database: only the sharing structure does.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import orjson

from kvtool.errors import OptionError
from kvtool.progress import NullProgress, Progress
from kvtool.store import DEFAULT_DB, DbArg, check_output, open_db
from kvtool.traffic import block_streams, load_traffic


def export_mooncake(
    paths: list[str | Path] | None,
    out: str | Path,
    *,
    db: DbArg = DEFAULT_DB,
    block_size: int = 512,
    tokenizer: str | None = None,
    hash_block_size: int = 512,
    progress: Progress | None = None,
) -> int:
    """Write the trace to ``out``; returns the number of requests written. ``OptionError`` for a
    ``block_size`` that is not a positive multiple of 16 (or of a hash trace's own block size), and
    for an ``out`` that is a directory or the database itself (checked before anything is read)."""
    if block_size <= 0 or block_size % 16:
        raise OptionError("block_size", f"must be a positive multiple of 16, got {block_size}")
    check_output(out, param="out", db=db)
    progress = progress or NullProgress()
    with open_db(db) as con:
        wl = load_traffic(
            con,
            paths=paths,
            tokenizer=tokenizer,
            fmt=None,
            hash_block_size=hash_block_size,
            progress=progress,
        ).wl
    offsets, blocks = block_streams(wl, block_size)
    # one flat id sequence in output order: full blocks, then a partial block where there is one
    # (a unique negative placeholder), ranked by first appearance
    partial = (wl.n_tokens % block_size) > 0
    counts = np.diff(offsets) + partial
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    flat = np.empty(int(starts[-1]), np.int64)
    full_pos = np.repeat(starts[:-1] - offsets[:-1], np.diff(offsets)) + np.arange(len(blocks))
    flat[full_pos] = blocks
    holders = np.flatnonzero(partial)
    flat[starts[1:][holders] - 1] = -1 - np.arange(len(holders))
    if len(flat):
        _, first, inverse = np.unique(flat, return_index=True, return_inverse=True)
        rank = np.empty(len(first), np.int64)
        rank[np.argsort(first, kind="stable")] = np.arange(len(first))
        ids = rank[inverse]
    else:
        ids = flat
    ts = wl.ts
    known = ts[~np.isnan(ts)]
    t0 = float(known.min()) if len(known) else 0.0
    prev = t0
    with open(out, "wb") as f:
        for i in range(wl.n):
            t = prev if math.isnan(ts[i]) else float(ts[i])
            prev = t
            n = int(wl.n_tokens[i])
            hash_ids = ids[starts[i] : starts[i + 1]].tolist()
            record = {
                "timestamp": round((t - t0) * 1000),
                "input_length": n,
                "output_length": int(wl.output_tokens[i]),
                "hash_ids": hash_ids,
            }
            f.write(orjson.dumps(record) + b"\n")
    return wl.n
