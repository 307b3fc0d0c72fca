"""The block tree of a hash trace, built partition by partition and stored (docs/scale.md).

Ids are salted per file (trace files number blocks independently) and per tenant (tenants never
share, as vLLM's ``cache_salt``), and only full blocks count (the last id covers a partial
block). A block is keyed by its whole path (``kvtool.traffic.tree.chain_ids``).

Requests are split into partitions by their first salted block (``kvtool.traffic.tree.part_of``):
a partition's tree shares no node with another's. ``build_stored`` reads the trace's ids once, as
a stream, spilling each partition's salted ids to a temporary file, then builds and stores one
partition at a time (``kvtool.store.trees.TreeWriter``): memory is the per-request arrays and one
partition (about 30 bytes per id of ``TREE_PART_IDS``), whatever the trace's size. Node ids are
those of ``rooted_tree`` over the same partitions.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import xxhash

from kvtool.store import Connection
from kvtool.store.arrow import list_parts, numbers
from kvtool.store.requests import hash_id_batches, hash_id_lists
from kvtool.store.trees import RunRows, TreeWriter
from kvtool.traffic.tree import part_of, part_tree, rooted_tree, seen_blocks, unary_runs

# how the tree is built (salts, ``chain_ids``, dense node ids, partitions): part of a stored
# tree's key, so that changing the construction here changes it (``kvtool.store.trees``)
HASH_TREE_RECIPE = "salt-xxh3-splitmix64/chain-9e3779b97f4a7c15/dense-depth-order/root-parts/4"
# block ids per partition: a trace with more is built one partition of root blocks at a time
TREE_PART_IDS = 1 << 22


def request_salts(
    files: np.ndarray, tenant: pa.ChunkedArray, digests: dict[int, str]
) -> np.ndarray:
    """Per request, the salt of its file (``files``: file ids) and ``tenant``: the xxh3-64 of
    the file's digest and the tenant's name (empty without one), so that files and tenants
    never share a block."""
    tenants = tenant.combine_chunks().dictionary_encode()
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


class Plan:
    """What the build needs per request in processing order: its id, full blocks ``full``
    (of ``n_tokens`` at ``base``, at most its ``n_ids``), ``salts`` (of its file and tenant)
    and partition ``part`` of ``parts`` (by ``first_id``, salted)."""

    def __init__(
        self,
        req_ids: np.ndarray,
        n_tokens: np.ndarray,
        first_id: np.ndarray,
        n_ids: np.ndarray,
        files: np.ndarray,
        tenant: pa.ChunkedArray,
        digests: dict[int, str],
        base: int,
    ) -> None:
        self.req_ids = req_ids
        self.full = np.minimum(n_tokens // base, n_ids)
        self.salts = request_salts(files, tenant, digests)
        self.parts = max(1, -(-int(self.full.sum()) // TREE_PART_IDS))
        with np.errstate(over="ignore"):
            salted = first_id.view(np.uint64) + self.salts
        self.part = part_of(salted, self.full, self.parts)


def build_in_memory(
    con: Connection, file_ids: list[int], plan: Plan
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(end, parent, depth) of the whole tree, built in memory from all the ids at once: for a
    database that cannot store a tree (memory grows with the trace)."""
    lists = hash_id_lists(con, file_ids)
    starts, _ = lists.aligned(plan.req_ids)
    return rooted_tree(starts, plan.full, lists.values.view(np.uint64), plan.salts, plan.parts)


def build_stored(con: Connection, file_ids: list[int], plan: Plan, writer: TreeWriter) -> None:
    """Build the tree partition by partition into ``writer``, which stores it and its runs
    (``unary_runs``) with ``end`` and ``end_run`` per request (global node and run ids, -1
    without a full block) and ``seen`` (``seen_blocks``: the ideal's hits; a partition's
    requests share no block with another's). The ids are read once, in
    scan order, and spilled per partition to a temporary directory, then each partition is built
    from its file alone."""
    n = len(plan.req_ids)
    sorter = np.argsort(plan.req_ids, kind="stable")
    sorted_ids = plan.req_ids[sorter]
    rows: list[list[np.ndarray]] = [[] for _ in range(plan.parts)]
    end = np.full(n, -1, np.int64)
    end_run = np.full(n, -1, np.int64)
    seen = np.zeros(n, np.int64)
    with tempfile.TemporaryDirectory(prefix="kvtool-tree-") as tmp:
        files = [Path(tmp) / f"{p}.u64" for p in range(plan.parts)]
        for batch in hash_id_batches(con, file_ids):
            at = sorter[np.searchsorted(sorted_ids, numbers(batch.column(0), np.int64))]
            offsets, values = list_parts(batch.column(1))
            order = np.argsort(plan.part[at], kind="stable")
            at = at[order]
            counts = plan.full[at]
            sub = np.zeros(len(at) + 1, np.int64)
            np.cumsum(counts, out=sub[1:])
            take = np.repeat(offsets[:-1][order] - sub[:-1], counts) + np.arange(sub[-1])
            with np.errstate(over="ignore"):
                salted = values.view(np.uint64)[take] + np.repeat(plan.salts[at], counts)
            del take
            cut = np.searchsorted(plan.part[at], np.arange(plan.parts + 1, dtype=np.uint64))
            for p in np.nonzero(np.diff(cut))[0].tolist():
                lo, hi = int(cut[p]), int(cut[p + 1])
                rows[p].append(at[lo:hi])
                with files[p].open("ab") as f:
                    salted[sub[lo] : sub[hi]].tofile(f)
        base = run_base = 0
        for p in range(plan.parts):
            if not rows[p]:
                continue
            mine = np.concatenate(rows[p])
            rows[p] = []
            sub = np.zeros(len(mine) + 1, np.int64)
            np.cumsum(plan.full[mine], out=sub[1:])
            salted = np.fromfile(files[p], np.uint64) if sub[-1] else np.zeros(0, np.uint64)
            files[p].unlink(missing_ok=True)
            e, parent, depth = part_tree(sub, salted)
            del salted
            rs = unary_runs(parent, depth, e)
            end[mine] = np.where(e >= 0, e + base, -1)
            has = e >= 0  # a partition may hold only requests without a full block
            end_run[mine[has]] = rs.of[e[has]] + run_base
            ordered = np.argsort(mine)  # the partition's requests in processing order
            seen[mine[ordered]] = seen_blocks(rs, e[ordered])
            runs = RunRows(
                np.where(rs.parent >= 0, rs.parent + run_base, -1),
                rs.lo,
                rs.hi - rs.lo + 1,
            )
            del rs
            writer.add_part(np.where(parent >= 0, parent + base, -1), depth, runs)
            base += len(parent)
            run_base += len(runs.parent)
    writer.finish(plan.req_ids, end, end_run, seen)
