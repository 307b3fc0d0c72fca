"""Stored block trees of hash traces: built once per file set, read back as integer arrays.

A hash trace's block tree (``kvtool.traffic.workload``) depends only on the files it is built
from (their ids, which order ties, and their content, which the digest names), their block size
and the way the tree is built (``recipe``, which the builder changes with its algorithm). The
key ``tree_key`` hashes exactly those, so a stored tree is never stale: another file set, a
re-ingested file (a new id) or a new recipe is another key, built and stored afresh.

Tables ``hash_tree_ends`` (per request in processing order: its id, its last full block's node
and that node's run, -1 for none, and its leading blocks that an earlier request went through;
a reader checks the ids against its own requests),
``hash_tree_nodes`` (per node: parent and depth, partition after partition), ``hash_tree_runs``
(per run of the tree's unary stretches, partition after partition: parent run, first depth,
length), ``hash_tree_parts`` (per partition, in order: its node count; no node has a
parent in another partition) and ``hash_tree_index`` (the counts, written last: an index row
means the tree is whole). A writer (``TreeWriter``) adds one partition at a time and a reader
can stream them back one at a time (``node_parts``), so neither holds more than a partition's
nodes; the runs, far fewer than the nodes (Mooncake conversation x20: 205 K runs, 3.4 M nodes),
are read whole (``load_runs``). One row per value, not lists: DuckDB stores long columns in a
stream, and a reader streams them into preallocated arrays. A database without the tables
(opened read-only, created by an older kvtool and never opened writable since) stores nothing:
the tree is built every time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa
import xxhash

from kvtool.store.arrow import int64_array, numbers
from kvtool.store.db import Connection, atomic, temp_table
from kvtool.store.files import FileRow

BATCH_ROWS = 1 << 20  # rows per batch when a stored tree is read back


@dataclass(frozen=True)
class StoredTree:
    """A block tree as ``Workload`` holds it: ``req_ids`` and ``end`` per request, ``parent``
    and ``depth`` per node (int64; read-only views of the query's Arrow buffers when loaded)."""

    req_ids: np.ndarray
    end: np.ndarray
    parent: np.ndarray
    depth: np.ndarray


def tree_key(files: list[FileRow], base: int, recipe: str) -> str:
    """The key of the tree of ``files`` at block size ``base`` built by ``recipe``: equal keys
    mean the same file ids, contents (digests) and request counts, in any order given."""
    parts = [recipe, str(base)]
    for f in sorted(files, key=lambda f: f.file_id):
        parts.append(f"{f.file_id}:{f.digest}:{f.requests}")
    return xxhash.xxh3_128_hexdigest("\x00".join(parts).encode())


def load_tree(con: Connection, key: str) -> StoredTree | None:
    """The tree stored under ``key``; None when there is none, it is incomplete, or the
    database has no tree tables."""
    index = load_index(con, key)
    nodes = None if index is None else load_nodes(con, key, index)
    if index is None or nodes is None:
        return None
    return StoredTree(index.req_ids, index.end, nodes[0], nodes[1])


def load_nodes(con: Connection, key: str, index: TreeIndex) -> tuple[np.ndarray, np.ndarray] | None:
    """(parent, depth) of every node of the tree under ``key`` whose ``index`` was loaded;
    None when the table holds another number of them."""
    return _columns(con, "hash_tree_nodes", ("parent", "depth"), key, int(index.part_nodes.sum()))


def _columns(
    con: Connection, table: str, names: tuple[str, ...], key: str, rows: int
) -> tuple[np.ndarray, ...] | None:
    """BIGINT columns ``names`` of ``table`` under ``key`` in insertion order (DuckDB keeps
    it), streamed into arrays of ``rows``: memory is the arrays plus one batch. None when the
    table holds another number of rows for the key."""
    out = tuple(np.empty(rows, np.int64) for _ in names)
    reader = con.sql(
        f"SELECT {', '.join(names)} FROM {table} WHERE key = $key", params={"key": key}
    ).to_arrow_reader(BATCH_ROWS)
    at = 0
    try:
        for batch in reader:
            n = batch.num_rows
            if at + n > rows:
                return None
            for k in range(len(names)):
                out[k][at : at + n] = numbers(batch.column(k), np.int64)
            at += n
    finally:
        reader.close()  # a result left unfinished would block the connection
    return out if at == rows else None


@dataclass(frozen=True)
class TreeIndex:
    """A stored tree's requests and partitions: ``req_ids``, ``end`` (global node ids),
    ``end_run`` (global run ids) and ``seen`` (leading base blocks an earlier request went
    through: ``kvtool.traffic.tree.seen_blocks``) per request in processing order,
    ``part_nodes`` the node count of each partition in order, ``runs`` the number of runs."""

    req_ids: np.ndarray
    end: np.ndarray
    end_run: np.ndarray
    seen: np.ndarray
    part_nodes: np.ndarray
    runs: int


def load_index(con: Connection, key: str) -> TreeIndex | None:
    """The requests and partitions of the tree stored under ``key``, without its nodes; None
    when there is none, it is incomplete, or the database has no tree tables."""
    try:
        rows = con.execute(
            "SELECT requests, nodes, runs FROM hash_tree_index WHERE key = ?", [key]
        ).fetchall()
        if not rows:
            return None
        (row,) = rows
        names = ("req_id", "end_node", "end_run", "seen")
        requests = _columns(con, "hash_tree_ends", names, key, row[0])
        parts = con.execute(
            "SELECT nodes FROM hash_tree_parts WHERE key = ? ORDER BY part", [key]
        ).fetchall()
    except duckdb.CatalogException:  # a database this kvtool has not opened writable
        return None
    part_nodes = np.array([r[0] for r in parts], np.int64)
    if requests is None or int(part_nodes.sum()) != row[1]:
        return None
    return TreeIndex(*requests, part_nodes, row[2])


@dataclass(frozen=True)
class RunRows:
    """The runs of a tree (its unary stretches merged: ``kvtool.traffic.tree.Runs``), in run
    order: ``parent`` (run ids, -1 at a root), ``lo`` (the first node's depth) and ``length``
    (nodes). A run's parent has a lower id."""

    parent: np.ndarray
    lo: np.ndarray
    length: np.ndarray


def load_runs(con: Connection, key: str, index: TreeIndex) -> RunRows | None:
    """The runs of the tree under ``key`` whose ``index`` was loaded (global ids); None when
    the table holds another number of them."""
    names = ("parent", "lo", "length")
    cols = _columns(con, "hash_tree_runs", names, key, index.runs)
    return None if cols is None else RunRows(*cols)


def node_parts(
    con: Connection, key: str, part_nodes: np.ndarray
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(parent, depth) of each partition of the tree under ``key`` in order, streamed: memory is
    one partition and one batch. Parents are global node ids."""
    reader = con.sql(
        "SELECT parent, depth FROM hash_tree_nodes WHERE key = $key", params={"key": key}
    ).to_arrow_reader(BATCH_ROWS)
    try:
        batches = iter(reader)
        pending: tuple[np.ndarray, np.ndarray] | None = None
        for count in part_nodes.tolist():
            out = (np.empty(count, np.int64), np.empty(count, np.int64))
            at = 0
            while at < count:
                if pending is None:
                    batch = next(batches, None)
                    if batch is None:
                        raise ValueError(f"stored tree {key}: fewer nodes than its partitions")
                    pending = (
                        numbers(batch.column(0), np.int64),
                        numbers(batch.column(1), np.int64),
                    )
                take = min(count - at, len(pending[0]))
                out[0][at : at + take] = pending[0][:take]
                out[1][at : at + take] = pending[1][:take]
                at += take
                pending = (pending[0][take:], pending[1][take:]) if take < len(pending[0]) else None
            yield out
    finally:
        reader.close()  # a result left unfinished would block the connection


class TreeWriter:
    """Stores a tree under ``key`` one partition at a time: ``add_part`` for each partition in
    order (each committed on its own, so that the database never holds a whole tree in an open
    transaction), then ``finish`` with the requests, which writes the index row last: a tree
    without its index row is incomplete, never read, and deleted when the key is built again.
    ``ok`` is False when the database cannot store it (read-only, no tables, or the key is
    stored already: it is the same tree); every call is then a no-op."""

    def __init__(self, con: Connection, key: str) -> None:
        self.con, self.key, self.parts, self.nodes, self.runs = con, key, 0, 0, 0
        self.ok = True
        try:
            if con.execute("SELECT 1 FROM hash_tree_index WHERE key = ?", [key]).fetchall():
                self.ok = False
                return
            with atomic(con):  # the rows of a build that did not finish
                for table in ("hash_tree_ends", "hash_tree_nodes", "hash_tree_runs"):
                    con.execute(f"DELETE FROM {table} WHERE key = ?", [key])
                con.execute("DELETE FROM hash_tree_parts WHERE key = ?", [key])
        except (duckdb.CatalogException, duckdb.InvalidInputException):  # no table; read-only
            self.ok = False

    def _append(self, table: str, columns: dict[str, np.ndarray]) -> None:
        """``columns`` appended to ``table`` under the key (inside the caller's transaction)."""
        rows = pa.Table.from_arrays([int64_array(v) for v in columns.values()], names=list(columns))
        with temp_table(self.con, "_kv_tree_rows", rows):
            self.con.execute(
                f"INSERT INTO {table} SELECT ?, {', '.join(columns)} FROM _kv_tree_rows",
                [self.key],
            )

    def add_part(self, parent: np.ndarray, depth: np.ndarray, runs: RunRows) -> None:
        """The next partition's nodes, ``parent`` (global node ids, -1 at a root) and ``depth``,
        and its ``runs`` (global run ids)."""
        if not self.ok:
            return
        with atomic(self.con):
            self._append("hash_tree_nodes", {"parent": parent, "depth": depth})
            self._append("hash_tree_runs", dataclasses.asdict(runs))
            self.con.execute(
                "INSERT INTO hash_tree_parts VALUES (?, ?, ?)", [self.key, self.parts, len(parent)]
            )
        self.parts += 1
        self.nodes += len(parent)
        self.runs += len(runs.parent)

    def finish(
        self, req_ids: np.ndarray, end: np.ndarray, end_run: np.ndarray, seen: np.ndarray
    ) -> None:
        """The requests in processing order, their last nodes, those nodes' runs and their
        leading blocks an earlier request went through, then the index row."""
        if not self.ok:
            return
        with atomic(self.con):
            columns = {"req_id": req_ids, "end_node": end, "end_run": end_run, "seen": seen}
            self._append("hash_tree_ends", columns)
            self.con.execute(
                "INSERT INTO hash_tree_index VALUES (?, ?, ?, ?)",
                [self.key, len(req_ids), self.nodes, self.runs],
            )
        self.ok = False
