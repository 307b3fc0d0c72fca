"""The analyzed requests as integer arrays, in processing order, read from the store.

Processing order is timestamp order (requests without a timestamp last), ties by file and line.

A request's full blocks form a path in the *block tree*: nodes are distinct blocks (a chain hash
names a block together with everything before it), ``parent`` is the block before it. A request
is its end node (last full block); its blocks are the path from a root to that node. Storing the
tree instead of every request's block list keeps analysis proportional to distinct content.

Blocks are at the workload's base size: 16 for tokenized requests (tables ``blocks`` and
``chains``), the trace's own block size for hash traces, where ids are salted per file (trace
files number blocks independently) and per tenant (tenants never share, as vLLM's
``cache_salt``), and only full blocks count (the last id covers a partial block).
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa
import xxhash


class WorkloadError(Exception):
    """The selection cannot be analyzed as one workload (nothing in it, or mixed block sizes)."""


@dataclass
class Workload:
    """Requests in processing order and their block tree.

    ``end[i]`` is request i's last full block (a node index, -1 when it has no full block);
    ``parent[v]`` is node v's previous block (-1 for a first block) and ``depth[v]`` its 0-based
    position, so request i has ``depth[end[i]] + 1`` full blocks. ``ts`` is NaN where unknown;
    ``session`` holds the logged session id or None."""

    req_ids: np.ndarray
    ts: np.ndarray
    session: list[str | None]
    n_tokens: np.ndarray
    output_tokens: np.ndarray
    observed_prompt: np.ndarray
    observed_cached: np.ndarray
    end: np.ndarray
    parent: np.ndarray
    depth: np.ndarray
    base: int
    kind: str  # 'tokens' or 'hash'
    models: list[str | None]

    @property
    def n(self) -> int:
        return len(self.req_ids)


def tree_from_paths(
    offsets: np.ndarray, blocks: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(end per request, parent per node, depth per node) from flat per-request block hashes
    (``blocks[offsets[i]:offsets[i+1]]`` is request i's chain). One sort of the flat array."""
    counts = np.diff(offsets)
    n = len(blocks)
    pos = np.arange(n) - np.repeat(offsets[:-1], counts)
    _, first, inv = np.unique(blocks, return_index=True, return_inverse=True)
    prev_flat = np.arange(n) - 1
    parent_of_flat = np.where(pos > 0, inv[np.maximum(prev_flat, 0)], -1)
    parent = parent_of_flat[first]
    depth = pos[first]
    end = np.full(len(counts), -1, np.int64)
    has = counts > 0
    end[has] = inv[offsets[1:][has] - 1]
    return end, parent.astype(np.int64), depth.astype(np.int64)


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


def _hash_tree(con: duckdb.DuckDBPyConnection, table: pa.Table, ids: str, base: int) -> tuple:
    """Block tree of hash-trace requests: full blocks only, ids salted per file."""
    n_tokens = table.column("n_tokens").to_numpy(zero_copy_only=False).astype(np.int64)
    offsets, blocks = _list_parts(table.column("blocks"))
    counts = np.diff(offsets)
    full = np.minimum(n_tokens // base, counts)
    req = np.repeat(np.arange(len(n_tokens)), counts)
    pos = np.arange(len(blocks)) - np.repeat(offsets[:-1], counts)
    keep = pos < full[req]
    digests = dict(
        con.execute(f"SELECT file_id, sha256 FROM files WHERE file_id IN ({ids})").fetchall()
    )
    file_of = table.column("file_id").to_numpy()[req]
    tenants = table.column("tenant").to_pylist()
    tenant_codes = {t: k for k, t in enumerate(sorted({t for t in tenants if t is not None}))}
    tenant_of = np.array([tenant_codes.get(t, -1) for t in tenants], np.int64)[req]
    salted = np.empty(len(blocks), dtype=np.uint64)
    for fid, digest in digests.items():  # one vectorized pass per file and tenant
        for tenant, code in [(None, -1), *tenant_codes.items()]:
            mask = (file_of == fid) & (tenant_of == code)
            if not mask.any():
                continue
            salt = xxhash.xxh3_64_intdigest(f"{digest}\x00{tenant or ''}".encode())
            salted[mask] = _mix64(blocks[mask].view(np.uint64), salt)
    kept_offsets = np.concatenate([[0], np.cumsum(full)]).astype(np.int64)
    return tree_from_paths(kept_offsets, salted[keep].view(np.int64))


def _token_tree(
    con: duckdb.DuckDBPyConnection, table: pa.Table, signature: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Block tree of tokenized requests from the ``blocks`` table (all blocks of the signature;
    blocks of requests outside the selection are harmless extra nodes)."""
    nodes = con.sql(
        "SELECT hash, parent, depth FROM blocks WHERE tokenizer = ? ORDER BY hash",
        params=[signature],
    ).to_arrow_table()
    hashes = nodes.column("hash").to_numpy()
    parent_hash = nodes.column("parent").fill_null(0).to_numpy()
    has_parent = nodes.column("parent").is_valid().to_numpy(zero_copy_only=False)
    parent = np.where(has_parent, np.searchsorted(hashes, parent_hash), -1).astype(np.int64)
    last = table.column("last_block")
    has_end = last.is_valid().to_numpy(zero_copy_only=False)
    end = np.where(
        has_end, np.searchsorted(hashes, last.fill_null(0).to_numpy(zero_copy_only=False)), -1
    ).astype(np.int64)
    return end, parent, nodes.column("depth").to_numpy().astype(np.int64)


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
        raise WorkloadError(
            "hash traces and text logs cannot be analyzed together; name the files to analyze"
        )
    order = "ORDER BY r.ts NULLS LAST, r.file_id, r.line"
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
                       r.hash_ids AS blocks, r.file_id, r.tenant
                FROM requests r WHERE r.file_id IN ({ids}) {order}"""
        ).to_arrow_table()
        end, parent, depth = _hash_tree(con, table, ids, base)
        kind = "hash"
    else:
        base = 16
        table = con.sql(
            f"""SELECT r.req_id, r.ts, r.session_id, r.model, c.n_tokens,
                       r.output_tokens, r.observed_prompt_tokens, r.observed_cached_tokens,
                       c.last_block
                FROM requests r JOIN chains c ON c.req_id = r.req_id AND c.tokenizer = ?
                WHERE r.file_id IN ({ids}) {order}""",
            params=[signature],
        ).to_arrow_table()
        end, parent, depth = _token_tree(con, table, signature or "")
        kind = "tokens"

    def floats(name: str) -> np.ndarray:
        return table.column(name).to_numpy(zero_copy_only=False).astype(np.float64)

    return Workload(
        req_ids=table.column("req_id").to_numpy(zero_copy_only=False).astype(np.int64),
        ts=floats("ts"),
        session=table.column("session_id").to_pylist(),
        n_tokens=table.column("n_tokens").to_numpy(zero_copy_only=False).astype(np.int64),
        output_tokens=np.nan_to_num(floats("output_tokens")).astype(np.int64),
        observed_prompt=floats("observed_prompt_tokens"),
        observed_cached=floats("observed_cached_tokens"),
        end=end,
        parent=parent,
        depth=depth,
        base=base,
        kind=kind,
        models=table.column("model").to_pylist(),
    )
