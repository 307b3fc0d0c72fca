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

A hash-trace block is keyed by its whole path: the chain hash of the salted ids from the first
block to it (``chain_ids``), whatever the trace's ids mean. In a prefix-chained trace (Mooncake's)
equal ids already have equal prefixes, so the tree is the same; in one whose ids are per-block
content hashes, or numbered per conversation, ``[4, 2, 3]``'s second block is not
``[1, 2, 3]``'s, as a prefix cache sees it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import xxhash

from kvtool.errors import WorkloadError
from kvtool.store import Connection
from kvtool.store.arrow import numbers, valid
from kvtool.store.files import FileRow, file_rows, request_kinds
from kvtool.store.requests import (
    HashIdLists,
    chain_request_table,
    hash_id_lists,
    hash_request_table,
)
from kvtool.store.tokenizations import block_nodes
from kvtool.store.trees import StoredTree, load_tree, store_tree, tree_key

# how ``_hash_tree`` builds a tree (salts, ``chain_ids``, dense node ids): part of a stored
# tree's key, so that changing the construction here changes it (``kvtool.store.trees``)
HASH_TREE_RECIPE = "salt-xxh3-splitmix64/chain-9e3779b97f4a7c15/dense-value-order/root-parts/2"
# block ids per partition of the tree build: a trace with more is built one partition of root
# blocks at a time, so the sort's temporaries stay this small (about 30 bytes per id)
TREE_PART_IDS = 1 << 22


@dataclass
class Workload:
    """Requests in processing order and their block tree.

    ``end[i]`` is request i's last full block (a node index, -1 when it has no full block);
    ``parent[v]`` is node v's previous block (-1 for a first block) and ``depth[v]`` its 0-based
    position, so request i has ``depth[end[i]] + 1`` full blocks. ``ts`` is NaN where unknown;
    ``session`` holds the logged session id or None, ``cache_keys`` the logged routing key
    (OpenAI's ``prompt_cache_key``) or None."""

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
    cache_keys: list[str | None]

    @property
    def n(self) -> int:
        return len(self.req_ids)

    def select(self, idx: np.ndarray) -> Workload:
        """The requests ``idx`` (increasing indices, so processing order is kept) on the same
        block tree."""
        pick = idx.tolist()
        return dataclasses.replace(
            self,
            req_ids=self.req_ids[idx],
            ts=self.ts[idx],
            session=[self.session[i] for i in pick],
            n_tokens=self.n_tokens[idx],
            output_tokens=self.output_tokens[idx],
            observed_prompt=self.observed_prompt[idx],
            observed_cached=self.observed_cached[idx],
            end=self.end[idx],
            models=[self.models[i] for i in pick],
            cache_keys=[self.cache_keys[i] for i in pick],
        )

    @property
    def hash_identity(self) -> str | None:
        """What names a hash trace's block: ``'path'``, the whole path of ids from the first
        block to it (``chain_ids``, as vLLM chains blocks); None for tokenized requests."""
        return "path" if self.kind == "hash" else None


def tree_from_paths(
    offsets: np.ndarray, blocks: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(end per request, parent per node, depth per node) from flat per-request block hashes
    (``blocks[offsets[i]:offsets[i+1]]`` is request i's chain); a node's parent and depth come
    from its first occurrence. One sort of the flat array; flat temporaries are 32-bit."""
    counts = np.diff(offsets)
    n = len(blocks)
    small = np.int32 if n < 2**31 - 1 else np.int64
    inv, n_nodes = _dense_ids(blocks, small)
    parent_of_flat = np.empty(n, small)
    parent_of_flat[1:] = inv[:-1]
    starts = offsets[:-1][counts > 0]
    parent_of_flat[starts] = -1
    parent = np.empty(n_nodes, np.int64)
    parent[inv[::-1]] = parent_of_flat[::-1]  # repeated indices: the last write (first) wins
    del parent_of_flat
    pos = np.arange(n, dtype=small) - np.repeat(offsets[:-1].astype(small), counts)
    depth = np.empty(n_nodes, np.int64)
    depth[inv[::-1]] = pos[::-1]
    del pos
    end = np.full(len(counts), -1, np.int64)
    has = counts > 0
    end[has] = inv[offsets[1:][has] - 1]
    return end, parent, depth


def _dense_ids(values: np.ndarray, dtype: type) -> tuple[np.ndarray, int]:
    """(id per element, number of distinct values): equal values get equal ids, numbered in
    value order; what ``np.unique(return_inverse=True)`` gives, with fewer big temporaries.
    Equal values get equal ids whatever their order in the sort: it need not be stable."""
    if len(values) == 0:
        return np.zeros(0, dtype), 0
    perm = values.argsort()
    ordered = values[perm]
    ids = np.empty(len(values), dtype)
    ids[0] = 0
    np.cumsum(ordered[1:] != ordered[:-1], out=ids[1:])
    del ordered
    n = int(ids[-1]) + 1
    inv = np.empty(len(values), dtype)
    inv[perm] = ids
    return inv, n


def mix64(x: np.ndarray, salt: int, chunk: int = 1 << 22) -> np.ndarray:
    """splitmix64 finalizer of ``x + salt`` (uint64 arithmetic wraps), in chunks so that the
    temporaries stay small."""
    out = np.empty(len(x), np.uint64)
    with np.errstate(over="ignore"):
        for lo in range(0, len(x), chunk):
            z = x[lo : lo + chunk].astype(np.uint64) + np.uint64(salt)
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            out[lo : lo + chunk] = z ^ (z >> np.uint64(31))
    return out


_CHAIN = np.uint64(0x9E3779B97F4A7C15)  # odd: multiplying by it is a bijection of uint64


def chain_ids(offsets: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Each element's path key: ``k_0 = mix(x_0)``, ``k_j = mix(k_{j-1} * C ^ x_j)`` along each
    request (``ids[offsets[i]:offsets[i+1]]``, uint64), so two blocks get the same key only when
    their whole prefixes of ids are equal (up to 64-bit collisions). One vectorized step per
    depth, over the requests that reach it (longest first)."""
    counts = np.diff(offsets)
    out = np.empty(len(ids), np.uint64)
    if len(ids) == 0:
        return out
    order = np.argsort(-counts, kind="stable")
    starts = offsets[:-1][order]
    reach = -counts[order]  # ascending: the requests longer than d are a prefix of ``order``
    key = np.zeros(len(order), np.uint64)
    with np.errstate(over="ignore"):
        for d in range(int(-reach[0])):
            active = int(np.searchsorted(reach, -d, side="left"))
            at = starts[:active] + d
            key = mix64(key[:active] * _CHAIN ^ ids[at], 0)
            out[at] = key
    return out


def _hash_tree(
    table: pa.Table, lists: HashIdLists, digests: dict[int, str], base: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Block tree of hash-trace requests: full blocks only, ids salted per file (``digests``:
    file id -> content digest) and tenant, each block keyed by its path (``chain_ids``).
    ``table``: the requests in processing order; ``lists``: their ids, read where the query
    left them (no whole-trace copy is made)."""
    n_tokens = numbers(table.column("n_tokens"), np.int64)
    starts, counts = lists.aligned(numbers(table.column("req_id"), np.int64))
    full = np.minimum(n_tokens // base, counts)
    salts = _request_salts(table, digests)
    parts = -(-int(full.sum()) // TREE_PART_IDS)
    return rooted_tree(starts, full, lists.values.view(np.uint64), salts, parts)


def _request_salts(table: pa.Table, digests: dict[int, str]) -> np.ndarray:
    """Per request, the salt of its file and tenant: the xxh3-64 of the file's digest and the
    tenant's name (empty without one), so that files and tenants never share a block."""
    files = numbers(table.column("file_id"), np.int64)
    tenants = table.column("tenant").combine_chunks().dictionary_encode()
    names = tenants.dictionary.to_pylist()
    width = len(names) + 1
    group = files * width + numbers(tenants.indices, np.int64, -1) + 1
    keys, inverse = np.unique(group, return_inverse=True)
    labels = ["", *names]  # a group's tenant index + 1: 0 for requests without a tenant
    salt_of = np.array(
        [
            xxhash.xxh3_64_intdigest(f"{digests[int(k) // width]}\x00{labels[k % width]}".encode())
            for k in keys
        ],
        np.uint64,
    )
    return salt_of[inverse.reshape(-1)]


def rooted_tree(
    starts: np.ndarray, sizes: np.ndarray, ids: np.ndarray, salts: np.ndarray, parts: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``tree_from_paths`` of the chains (``chain_ids``) of request i's block ids
    ``ids[starts[i]:starts[i] + sizes[i]]`` (uint64), each salted with ``salts[i]``, built in
    ``parts`` partitions of requests by their first salted block: requests with different first
    blocks share no node, so each partition's tree is independent, and only a partition's ids
    are ever copied (gathered, salted, keyed, sorted). Nodes are numbered partition by
    partition (value order within one); one partition is the whole-trace build."""
    parts = max(1, parts)
    has = sizes > 0
    first = np.zeros(len(sizes), np.uint64)
    with np.errstate(over="ignore"):
        first[has] = ids[starts[has]] + salts[has]
    part = mix64(first, 0x5EED) % np.uint64(parts)
    del first
    order = np.argsort(part, kind="stable")  # request order kept within a partition
    bounds = np.searchsorted(part[order], np.arange(parts + 1, dtype=np.uint64))
    del part
    end = np.full(len(sizes), -1, np.int64)
    parents: list[np.ndarray] = []
    depths: list[np.ndarray] = []
    base = 0
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        rows = order[lo:hi]
        if not len(rows):
            continue
        counts = sizes[rows]
        sub = np.zeros(len(rows) + 1, np.int64)
        np.cumsum(counts, out=sub[1:])
        at = np.repeat(starts[rows] - sub[:-1], counts) + np.arange(sub[-1])
        with np.errstate(over="ignore"):
            salted = ids[at] + np.repeat(salts[rows], counts)
        del at
        keys = chain_ids(sub, mix64(salted, 0))
        del salted
        e, parent, depth = tree_from_paths(sub, keys.view(np.int64))
        del keys
        end[rows] = np.where(e >= 0, e + base, -1)
        parents.append(np.where(parent >= 0, parent + base, -1))
        depths.append(depth)
        base += len(parent)
    if not parents:
        return end, np.zeros(0, np.int64), np.zeros(0, np.int64)
    return end, np.concatenate(parents), np.concatenate(depths)


def _token_tree(nodes: pa.Table, table: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Block tree of tokenized requests from the signature's block ``nodes`` (hash, parent,
    depth ordered by hash; blocks of requests outside the selection are harmless extra nodes)."""
    hashes = numbers(nodes.column("hash"), np.int64)
    parent_hash = numbers(nodes.column("parent"), np.int64)
    has_parent = valid(nodes.column("parent"))
    parent = np.where(has_parent, np.searchsorted(hashes, parent_hash), -1).astype(np.int64)
    last = table.column("last_block")
    has_end = valid(last)
    end = np.where(has_end, np.searchsorted(hashes, numbers(last, np.int64)), -1).astype(np.int64)
    return end, parent, numbers(nodes.column("depth"), np.int64)


def _stored_hash_tree(
    con: Connection, file_ids: list[int], files: list[FileRow], base: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, pa.Table]:
    """(end, parent, depth, requests without their hash ids) of hash-trace ``files``: the tree
    stored for them (``kvtool.store.trees``) when its requests are these, in this order; else
    built from the hash ids (``_hash_tree``) and stored for the next load."""
    key = tree_key(files, base, HASH_TREE_RECIPE)
    stored = load_tree(con, key)
    table = hash_request_table(con, file_ids)
    req_ids = numbers(table.column("req_id"), np.int64)
    if stored is not None and np.array_equal(stored.req_ids, req_ids):
        return stored.end, stored.parent, stored.depth, table
    lists = hash_id_lists(con, file_ids)
    end, parent, depth = _hash_tree(table, lists, {f.file_id: f.digest for f in files}, base)
    del lists
    if stored is None:
        store_tree(con, key, StoredTree(req_ids, end, parent, depth))
    return end, parent, depth, table


def load_workload(con: Connection, file_ids: list[int], signature: str | None) -> Workload:
    """The requests of ``file_ids``. Chat/completion requests need chains for ``signature``."""
    if not file_ids:
        raise WorkloadError("no input files")
    kinds = request_kinds(con, file_ids)
    if not kinds:
        raise WorkloadError("the input holds no valid requests")
    if "hash" in kinds and len(kinds) > 1:
        raise WorkloadError(
            "hash traces and text logs cannot be analyzed together; name the files to analyze"
        )
    if "hash" in kinds:
        files = file_rows(con, file_ids)
        sizes = {f.hash_block_size for f in files if f.hash_block_size is not None}
        if len(sizes) != 1:
            raise WorkloadError(f"hash traces with different block sizes: {sorted(sizes)}")
        base = sizes.pop()
        end, parent, depth, table = _stored_hash_tree(con, file_ids, files, base)
        kind = "hash"
    else:
        base = 16
        table = chain_request_table(con, file_ids, signature or "")
        end, parent, depth = _token_tree(block_nodes(con, signature or ""), table)
        kind = "tokens"

    def floats(name: str) -> np.ndarray:
        return numbers(table.column(name), np.float64, np.nan)

    return Workload(
        req_ids=numbers(table.column("req_id"), np.int64),
        ts=floats("ts"),
        session=table.column("session_id").to_pylist(),
        n_tokens=numbers(table.column("n_tokens"), np.int64),
        output_tokens=numbers(table.column("output_tokens"), np.int64),
        observed_prompt=floats("observed_prompt_tokens"),
        observed_cached=floats("observed_cached_tokens"),
        end=end,
        parent=parent,
        depth=depth,
        base=base,
        kind=kind,
        models=table.column("model").to_pylist(),
        cache_keys=table.column("cache_key").to_pylist(),
    )
