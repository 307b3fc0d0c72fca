"""Stored block trees of hash traces: built once per file set, read back as integer arrays.

A hash trace's block tree (``kvtool.traffic.workload``) depends only on the files it is built
from (their ids, which order ties, and their content, which the digest names), their block size
and the way the tree is built (``recipe``, which the builder changes with its algorithm). The
key ``tree_key`` hashes exactly those, so a stored tree is never stale: another file set, a
re-ingested file (a new id) or a new recipe is another key, built and stored afresh.

Tables ``hash_tree_requests`` (per request in processing order: its id and its last full
block's node, -1 for none; a reader checks the ids against its own requests),
``hash_tree_nodes`` (per node: parent and depth) and ``hash_tree_keys`` (the counts, written
last: a key row means the tree is whole). One row per value, not lists: DuckDB stores long
columns in a stream, and a reader streams them into preallocated arrays. A database without
the tables (opened read-only, created by an older kvtool and never opened writable since)
stores nothing: the tree is built every time.
"""

from __future__ import annotations

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
    try:
        rows = con.execute(
            "SELECT requests, nodes FROM hash_tree_keys WHERE key = ?", [key]
        ).fetchall()
        if not rows:
            return None
        (row,) = rows
        requests = _columns(con, "hash_tree_requests", ("req_id", "end_node"), key, row[0])
        nodes = _columns(con, "hash_tree_nodes", ("parent", "depth"), key, row[1])
    except duckdb.CatalogException:  # a database this kvtool has not opened writable
        return None
    if requests is None or nodes is None:
        return None
    return StoredTree(requests[0], requests[1], nodes[0], nodes[1])


def _columns(
    con: Connection, table: str, names: tuple[str, str], key: str, rows: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """Two BIGINT columns of ``table`` under ``key`` in insertion order (DuckDB keeps it),
    streamed into arrays of ``rows``: memory is the arrays plus one batch. None when the table
    holds another number of rows for the key."""
    out = (np.empty(rows, np.int64), np.empty(rows, np.int64))
    reader = con.sql(
        f"SELECT {names[0]}, {names[1]} FROM {table} WHERE key = $key", params={"key": key}
    ).to_arrow_reader(BATCH_ROWS)
    at = 0
    try:
        for batch in reader:
            n = batch.num_rows
            if at + n > rows:
                return None
            for k in range(2):
                out[k][at : at + n] = numbers(batch.column(k), np.int64)
            at += n
    finally:
        reader.close()  # a result left unfinished would block the connection
    return out if at == rows else None


def store_tree(con: Connection, key: str, tree: StoredTree) -> None:
    """Store ``tree`` under ``key``, its key row last, so that a tree is whole or absent (a key
    already stored keeps its tree: it is the same). A read-only connection, or one without the
    tables, stores nothing."""
    requests = pa.Table.from_arrays(
        [int64_array(tree.req_ids), int64_array(tree.end)], names=["req_id", "end_node"]
    )
    nodes = pa.Table.from_arrays(
        [int64_array(tree.parent), int64_array(tree.depth)], names=["parent", "depth"]
    )
    try:
        if con.execute("SELECT 1 FROM hash_tree_keys WHERE key = ?", [key]).fetchall():
            return
        with atomic(con):
            for table in ("hash_tree_requests", "hash_tree_nodes"):  # rows of an unfinished one
                con.execute(f"DELETE FROM {table} WHERE key = ?", [key])
            with temp_table(con, "_kv_tree_requests", requests):
                con.execute(
                    "INSERT INTO hash_tree_requests SELECT ?, req_id, end_node "
                    "FROM _kv_tree_requests",
                    [key],
                )
            with temp_table(con, "_kv_tree_nodes", nodes):
                con.execute(
                    "INSERT INTO hash_tree_nodes SELECT ?, parent, depth FROM _kv_tree_nodes",
                    [key],
                )
            con.execute(
                "INSERT INTO hash_tree_keys VALUES (?, ?, ?)",
                [key, len(tree.req_ids), len(tree.parent)],
            )
    except (duckdb.CatalogException, duckdb.InvalidInputException):  # no table; read-only
        return
