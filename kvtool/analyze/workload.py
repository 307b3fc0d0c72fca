"""The analyzed requests as integer arrays, in processing order, read from the store.

Processing order is timestamp order (requests without a timestamp last), ties by file and line.
Blocks are at the workload's base size: 16 for tokenized requests (``chains``), the trace's own
block size for hash traces, where ids are salted per file (trace files number blocks independently)
and only full blocks are kept (the last id of a trace covers a partial block).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import duckdb
import numpy as np
import pyarrow as pa
import xxhash


class WorkloadError(Exception):
    """The selection cannot be analyzed as one workload (nothing in it, or mixed block sizes)."""


@dataclass
class Workload:
    """Requests in processing order. ``blocks[offsets[i]:offsets[i+1]]`` are request i's full
    blocks at ``base`` tokens per block; ``ts`` is NaN where unknown; ``session`` holds the logged
    session id or None."""

    req_ids: np.ndarray
    ts: np.ndarray
    session: list[str | None]
    n_tokens: np.ndarray
    output_tokens: np.ndarray
    observed_prompt: np.ndarray
    observed_cached: np.ndarray
    offsets: np.ndarray
    blocks: np.ndarray
    base: int
    kind: str  # 'tokens' or 'hash'
    models: list[str | None]

    @property
    def n(self) -> int:
        return len(self.req_ids)

    @cached_property
    def request_of_block(self) -> np.ndarray:
        """Request index of every flat block."""
        return np.repeat(np.arange(self.n, dtype=np.int64), np.diff(self.offsets))

    @cached_property
    def position_of_block(self) -> np.ndarray:
        """0-based block position of every flat block within its request."""
        return np.arange(len(self.blocks), dtype=np.int64) - np.repeat(
            self.offsets[:-1], np.diff(self.offsets)
        )


def _mix64(x: np.ndarray, salt: int) -> np.ndarray:
    """splitmix64 finalizer of ``x + salt`` (uint64 arithmetic wraps)."""
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64) + np.uint64(salt)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _list_parts(col: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    arr = col.combine_chunks()
    if isinstance(arr, pa.ChunkedArray):  # an empty chunked array stays chunked
        arr = pa.array([], type=col.type)
    offsets = arr.offsets.to_numpy().astype(np.int64)
    values = arr.values.to_numpy(zero_copy_only=False).astype(np.int64)
    values = values[offsets[0] : offsets[-1]]
    return offsets - offsets[0], values


def load_workload(
    con: duckdb.DuckDBPyConnection, file_ids: list[int], signature: str | None
) -> Workload:
    """The requests of ``file_ids``. Chat/completion requests need chains for ``signature``."""
    if not file_ids:
        raise WorkloadError("no input files")
    ids = ",".join(str(int(f)) for f in file_ids)
    kinds = {
        k
        for (k,) in con.execute(
            f"SELECT DISTINCT kind FROM requests WHERE file_id IN ({ids})"
        ).fetchall()
    }
    if not kinds:
        raise WorkloadError("the input holds no valid requests")
    if "hash" in kinds and len(kinds) > 1:
        raise WorkloadError("hash traces and text logs cannot be analyzed together")
    if "hash" in kinds:
        sizes = con.execute(
            f"SELECT DISTINCT hash_block_size FROM files WHERE file_id IN ({ids})"
        ).fetchall()
        sizes = {s for (s,) in sizes if s is not None}
        if len(sizes) != 1:
            raise WorkloadError(f"hash traces with different block sizes: {sorted(sizes)}")
        base = sizes.pop()
        table = con.sql(
            f"""SELECT r.req_id, r.ts, r.session_id, r.model, r.input_length AS n_tokens,
                       r.output_tokens, r.observed_prompt_tokens, r.observed_cached_tokens,
                       r.hash_ids AS blocks, r.file_id
                FROM requests r
                WHERE r.file_id IN ({ids})
                ORDER BY r.ts NULLS LAST, r.file_id, r.line"""
        ).to_arrow_table()
        kind = "hash"
    else:
        base = 16
        table = con.sql(
            f"""SELECT r.req_id, r.ts, r.session_id, r.model, c.n_tokens,
                       r.output_tokens, r.observed_prompt_tokens, r.observed_cached_tokens,
                       c.blocks
                FROM requests r JOIN chains c ON c.req_id = r.req_id AND c.tokenizer = ?
                WHERE r.file_id IN ({ids})
                ORDER BY r.ts NULLS LAST, r.file_id, r.line""",
            params=[signature],
        ).to_arrow_table()
        kind = "tokens"
    n_tokens = table.column("n_tokens").to_numpy(zero_copy_only=False).astype(np.int64)
    offsets, blocks = _list_parts(table.column("blocks"))
    if kind == "hash":
        # keep full blocks only, and salt ids per file
        full = n_tokens // base
        counts = np.diff(offsets)
        req = np.repeat(np.arange(len(n_tokens)), counts)
        pos = np.arange(len(blocks)) - np.repeat(offsets[:-1], counts)
        keep = pos < full[req]
        digests = dict(
            con.execute(f"SELECT file_id, sha256 FROM files WHERE file_id IN ({ids})").fetchall()
        )
        file_of = table.column("file_id").to_numpy()[req]
        salted = np.empty(len(blocks), dtype=np.uint64)
        for fid, digest in digests.items():  # one vectorized pass per file
            mask = file_of == fid
            salted[mask] = _mix64(
                blocks[mask].view(np.uint64), xxhash.xxh3_64_intdigest(digest.encode())
            )
        blocks = salted[keep].view(np.int64)
        offsets = np.concatenate([[0], np.cumsum(np.minimum(full, counts))]).astype(np.int64)

    def floats(name: str) -> np.ndarray:
        return table.column(name).to_numpy(zero_copy_only=False).astype(np.float64)

    return Workload(
        req_ids=table.column("req_id").to_numpy(zero_copy_only=False).astype(np.int64),
        ts=floats("ts"),
        session=table.column("session_id").to_pylist(),
        n_tokens=n_tokens,
        output_tokens=np.nan_to_num(floats("output_tokens")).astype(np.int64),
        observed_prompt=floats("observed_prompt_tokens"),
        observed_cached=floats("observed_cached_tokens"),
        offsets=offsets,
        blocks=blocks,
        base=base,
        kind=kind,
        models=table.column("model").to_pylist(),
    )
