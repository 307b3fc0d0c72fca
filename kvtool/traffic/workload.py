"""The analyzed requests as integer arrays, in processing order, read from the store.

Processing order is timestamp order (requests without a timestamp last), ties by file and line.

A request's full blocks form a path in the *block tree*: nodes are distinct blocks (a chain hash
names a block together with everything before it), ``parent`` is the block before it. A request
is its end node (last full block); its blocks are the path from a root to that node. Storing the
tree instead of every request's block list keeps analysis proportional to distinct content.

Blocks are at the workload's base size: 16 for tokenized requests (tables ``blocks`` and
``chains``), the trace's own block size for hash traces (``kvtool.traffic.hash_tree``: ids
salted per file and tenant, full blocks only).

A hash-trace block is keyed by its whole path: the chain hash of the salted ids from the first
block to it (``kvtool.traffic.tree.chain_ids``), whatever the trace's ids mean. In a
prefix-chained trace (Mooncake's) equal ids already have equal prefixes, so the tree is the
same; in one whose ids are per-block content hashes, or numbered per conversation,
``[4, 2, 3]``'s second block is not ``[1, 2, 3]``'s, as a prefix cache sees it.

``load_parts`` gives the workload as ``WorkloadParts``: the requests, and the tree one partition
at a time (``TreePart``; a hash trace's tree is stored by partitions of first blocks, which
share no node), so that a pass over the tree holds one partition's nodes; ``load_workload``
gives it whole.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from kvtool.errors import WorkloadError
from kvtool.store import Connection
from kvtool.store.arrow import int64_array, numbers, valid
from kvtool.store.files import FileRow, file_rows, request_kinds
from kvtool.store.requests import (
    HASH_TREE_COLUMNS,
    HASH_WORKLOAD_COLUMNS,
    chain_request_table,
    hash_request_batches,
    processing_order,
)
from kvtool.store.tokenizations import BlockNodes, block_arrays
from kvtool.store.trees import (
    RunRows,
    TreeIndex,
    TreeWriter,
    load_index,
    load_nodes,
    load_runs,
    node_parts,
    tree_key,
)
from kvtool.traffic.hash_tree import HASH_TREE_RECIPE, Plan, build_in_memory, build_stored
from kvtool.traffic.tree import by_depth


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


def _token_tree(nodes: BlockNodes, table: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Block tree of tokenized requests from the signature's block ``nodes`` (blocks of
    requests outside the selection are harmless extra nodes), numbered by depth
    (``by_depth``)."""
    parent = np.searchsorted(nodes.hash, nodes.parent)
    parent[~nodes.has_parent] = -1
    last = table.column("last_block")
    end = np.searchsorted(nodes.hash, numbers(last, np.int64))
    end[~valid(last)] = -1
    return by_depth(end, parent, nodes.depth)


@dataclass(frozen=True)
class TreePart:
    """One partition of the block tree and the requests whose paths lie in it: ``rows``, their
    indices in the whole workload (increasing); ``wl``, those requests on the partition's nodes,
    numbered from 0 (node v here is node ``node_base + v`` of the whole tree). Requests without
    a full block are in the first partition."""

    rows: np.ndarray
    node_base: int
    wl: Workload


class WorkloadParts:
    """A workload read partition by partition. ``head`` holds every request; where the tree is
    stored by partitions (a hash trace in a writable database), ``head.end`` holds whole-tree
    node ids and ``head.parent``/``head.depth`` are empty: iterate for the partitions (streamed
    from the store, one at a time), ``whole()`` for the whole tree, or ``runs()`` and ``index``
    for its runs (what ``simulate --sample`` reads). Otherwise ``head`` is the whole workload and
    its one partition."""

    def __init__(
        self,
        head: Workload,
        con: Connection | None = None,
        key: str = "",
        index: TreeIndex | None = None,
    ) -> None:
        self.head = head
        self._con, self._key, self._index = con, key, index
        self._runs: RunRows | None = None

    @property
    def parts(self) -> int:
        return 1 if self._index is None else max(1, len(self._index.part_nodes))

    def __iter__(self) -> Iterator[TreePart]:
        head = self.head
        if self._index is None or self._con is None:
            yield TreePart(np.arange(head.n, dtype=np.int64), 0, head)
            return
        counts = self._index.part_nodes
        bounds = np.cumsum(counts)
        part = np.searchsorted(bounds, head.end, side="right")
        part[head.end < 0] = 0
        order = np.argsort(part, kind="stable")
        cut = np.searchsorted(part[order], np.arange(len(counts) + 1))
        del part
        base = 0
        for p, (parent, depth) in enumerate(node_parts(self._con, self._key, counts)):
            rows = order[cut[p] : cut[p + 1]]
            if len(rows) or len(parent):
                end = head.end[rows]
                sub = dataclasses.replace(
                    head.select(rows),
                    end=np.where(end >= 0, end - base, -1),
                    parent=np.where(parent >= 0, parent - base, -1),
                    depth=depth,
                )
                yield TreePart(rows, base, sub)
            base += len(parent)

    def max_depth(self) -> int:
        """The depth of the deepest request end (-1 when no request has a full block)."""
        runs = self.runs()
        if runs is None:
            head = self.head
            has = head.end >= 0
            return int(head.depth[head.end[has]].max()) if has.any() else -1
        # a stored tree holds the nodes of its requests' paths only: its deepest is an end
        return int((runs.lo + runs.length).max(initial=0)) - 1

    def runs(self) -> RunRows | None:
        """The stored tree's runs (``kvtool.store.trees.RunRows``, global ids; each request's
        in ``index.end_run``), read once; None where the tree is not stored."""
        if self._index is None or self._con is None:
            return None
        if self._runs is None:
            self._runs = load_runs(self._con, self._key, self._index)
            if self._runs is None:
                raise WorkloadError("the stored block tree changed while it was read")
        return self._runs

    @property
    def index(self) -> TreeIndex:
        """The stored tree's per-request arrays (``TreeIndex``: the run each request's last
        block ends, its blocks an earlier request went through)."""
        if self._index is None:
            raise WorkloadError("the block tree is not stored: it has no index")
        return self._index

    def whole(self) -> Workload:
        """The workload with its whole tree."""
        if self._index is None or self._con is None:
            return self.head
        nodes = load_nodes(self._con, self._key, self._index)
        if nodes is None:
            raise WorkloadError("the stored block tree changed while it was read")
        return dataclasses.replace(self.head, parent=nodes[0], depth=nodes[1])


_INTS = ("req_id", "n_tokens", "output_tokens")
_FLOATS = ("ts", "observed_prompt_tokens", "observed_cached_tokens")
_TEXTS = ("session_id", "model", "cache_key")


@dataclass
class _Columns:
    """Request columns converted batch by batch, so that a query's Arrow batches are dropped
    as they are read: numbers into preallocated arrays (``ints``: nulls 0; ``floats``: nulls
    NaN), text into lists, and ``arrow`` columns kept as they came."""

    ints: dict[str, np.ndarray]
    floats: dict[str, np.ndarray]
    texts: dict[str, list]
    arrow: dict[str, pa.ChunkedArray]

    @classmethod
    def read(
        cls,
        n: int,
        batches: Iterator[pa.RecordBatch],
        ints: tuple[str, ...] = _INTS,
        floats: tuple[str, ...] = _FLOATS,
        texts: tuple[str, ...] = _TEXTS,
        arrow: tuple[str, ...] = (),
    ) -> _Columns:
        """``n`` rows of ``batches``; ``WorkloadError`` when they hold another number."""
        out = cls(
            {c: np.zeros(n, np.int64) for c in ints},
            {c: np.full(n, np.nan) for c in floats},
            {c: [] for c in texts},
            {},
        )
        kept: dict[str, list[pa.Array]] = {c: [] for c in arrow}
        at = 0
        for batch in batches:
            m = batch.num_rows
            if at + m > n:
                raise WorkloadError("the requests changed while they were read")
            for c in ints:
                out.ints[c][at : at + m] = numbers(batch.column(c), np.int64)
            for c in floats:
                out.floats[c][at : at + m] = numbers(batch.column(c), np.float64, np.nan)
            for c in texts:
                out.texts[c].extend(batch.column(c).to_pylist())
            for c in arrow:
                kept[c].append(batch.column(c))
            at += m
        if at != n:
            raise WorkloadError("the requests changed while they were read")
        out.arrow = {
            c: pa.chunked_array(v) if v else pa.chunked_array([], pa.string())
            for c, v in kept.items()
        }
        return out

    def sort(self) -> _Columns:
        """The rows in processing order (``processing_order`` of ts, file_id, line; columns
        ``ts`` among the floats, the others among the ints), permuted one column at a time."""
        order = processing_order(self.floats["ts"], self.ints["file_id"], self.ints["line"])
        for group in (self.ints, self.floats):
            for c in group:
                group[c] = group[c][order]
        for c, values in self.texts.items():
            if any(v is not None for v in values):
                self.texts[c] = [values[i] for i in order.tolist()]
        self.arrow = {c: v.take(int64_array(order)) for c, v in self.arrow.items()}
        return self

    def workload(
        self, end: np.ndarray, parent: np.ndarray, depth: np.ndarray, base: int, kind: str
    ) -> Workload:
        return Workload(
            req_ids=self.ints["req_id"],
            ts=self.floats["ts"],
            session=self.texts["session_id"],
            n_tokens=self.ints["n_tokens"],
            output_tokens=self.ints["output_tokens"],
            observed_prompt=self.floats["observed_prompt_tokens"],
            observed_cached=self.floats["observed_cached_tokens"],
            end=end,
            parent=parent,
            depth=depth,
            base=base,
            kind=kind,
            models=self.texts["model"],
            cache_keys=self.texts["cache_key"],
        )


def _hash_workload(con: Connection, file_ids: list[int]) -> WorkloadParts:
    """The hash-trace requests of ``file_ids`` and their tree: the one stored for them
    (``kvtool.store.trees``) when its requests are these, in this order; else built partition
    by partition and stored (``kvtool.traffic.hash_tree``); in a database that cannot store it,
    built in memory, whole. The build reads only what it needs, before the workload's columns,
    so that the two are never held together."""
    files = file_rows(con, file_ids)
    sizes = {f.hash_block_size for f in files if f.hash_block_size is not None}
    if len(sizes) != 1:
        raise WorkloadError(f"hash traces with different block sizes: {sorted(sizes)}")
    base = sizes.pop()
    key = tree_key(files, base, HASH_TREE_RECIPE)
    index = load_index(con, key)
    writer = TreeWriter(con, key) if index is None else None
    if writer is not None and writer.ok:
        build_stored(con, file_ids, _plan(con, file_ids, files, base), writer)
        index = load_index(con, key)
    cols = _Columns.read(
        *hash_request_batches(con, file_ids, HASH_WORKLOAD_COLUMNS),
        ints=(*_INTS, "file_id", "line"),
    ).sort()
    if index is None or not np.array_equal(index.req_ids, cols.ints["req_id"]):
        # no table to store it in, or a stored tree of these files for other requests
        end, parent, depth = build_in_memory(con, file_ids, _plan(con, file_ids, files, base))
        return WorkloadParts(cols.workload(end, parent, depth, base, "hash"))
    empty = np.zeros(0, np.int64)
    return WorkloadParts(cols.workload(index.end, empty, empty, base, "hash"), con, key, index)


def _plan(con: Connection, file_ids: list[int], files: list[FileRow], base: int) -> Plan:
    """The tree build's ``Plan`` of the requests of ``file_ids``, in processing order."""
    cols = _Columns.read(
        *hash_request_batches(con, file_ids, HASH_TREE_COLUMNS),
        ints=("req_id", "n_tokens", "file_id", "line", "first_id", "n_ids"),
        floats=("ts",),
        texts=(),
        arrow=("tenant",),
    ).sort()
    return Plan(
        cols.ints["req_id"],
        cols.ints["n_tokens"],
        cols.ints["first_id"],
        cols.ints["n_ids"],
        cols.ints["file_id"],
        cols.arrow["tenant"],
        {f.file_id: f.digest for f in files},
        base,
    )


def _workload(
    table: pa.Table, end: np.ndarray, parent: np.ndarray, depth: np.ndarray, base: int, kind: str
) -> Workload:
    cols = _Columns.read(table.num_rows, iter(table.to_batches()))
    return cols.workload(end, parent, depth, base, kind)


def load_parts(con: Connection, file_ids: list[int], signature: str | None) -> WorkloadParts:
    """The requests of ``file_ids`` and their tree by partitions. Chat/completion requests need
    chains for ``signature``."""
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
        return _hash_workload(con, file_ids)
    table = chain_request_table(con, file_ids, signature or "")
    end, parent, depth = _token_tree(block_arrays(con, signature or ""), table)
    return WorkloadParts(_workload(table, end, parent, depth, 16, "tokens"))


def load_workload(con: Connection, file_ids: list[int], signature: str | None) -> Workload:
    """The requests of ``file_ids`` with their whole tree (``load_parts``)."""
    return load_parts(con, file_ids, signature).whole()
