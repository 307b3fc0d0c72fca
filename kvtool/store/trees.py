"""Stored block trees of hash traces: built once per file set, read back as integer arrays.

A hash trace's block tree (``kvtool.traffic.workload``) depends only on the files it is built
from (their ids, which order ties, and their content, which the digest names), their block size
and the way the tree is built (``recipe``, which the builder changes with its algorithm). The
key ``tree_key`` hashes exactly those, so a stored tree is never stale: another file set, a
re-ingested file (a new id) or a new recipe is another key, built and stored afresh.

Table ``hash_trees`` (one row per key): ``req_ids`` and ``ends`` (per request in processing
order: its id and its last full block's node, -1 for none; a reader checks the ids against its
own requests), ``parents`` and ``depths`` (per node) as BIGINT lists, read back through Arrow
without copying. A database without the table (opened read-only, created by
an older kvtool and never opened writable since) stores nothing: the tree is built every time.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa
import xxhash

from kvtool.store.arrow import list_parts
from kvtool.store.db import Connection, temp_table
from kvtool.store.files import FileRow


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
    """The tree stored under ``key``; None when there is none (or no ``hash_trees`` table)."""
    try:
        table = con.sql(
            "SELECT req_ids, ends, parents, depths FROM hash_trees WHERE key = $key",
            params={"key": key},
        ).to_arrow_table()
    except duckdb.CatalogException:  # a database this kvtool has not opened writable
        return None
    if table.num_rows != 1 or any(c.chunk(0).values.null_count for c in table.columns):
        return None
    return StoredTree(*(list_parts(table.column(name))[1] for name in table.column_names))


def store_tree(con: Connection, key: str, tree: StoredTree) -> None:
    """Store ``tree`` under ``key`` (a key already stored keeps its tree: it is the same). A
    read-only connection, or one without the table, stores nothing."""
    row = pa.Table.from_arrays(
        [_list_of(a) for a in (tree.req_ids, tree.end, tree.parent, tree.depth)],
        names=["req_ids", "ends", "parents", "depths"],
    )
    try:
        with temp_table(con, "_kv_tree", row):
            con.execute(
                "INSERT INTO hash_trees SELECT ?, req_ids, ends, parents, depths FROM _kv_tree "
                "ON CONFLICT DO NOTHING",
                [key],
            )
    except (duckdb.CatalogException, duckdb.InvalidInputException):  # no table; read-only
        return


def _list_of(values: np.ndarray) -> pa.Array:
    """One list holding ``values`` (int64), sharing their memory."""
    values = np.ascontiguousarray(values, np.int64)
    flat = pa.Array.from_buffers(pa.int64(), len(values), [None, pa.py_buffer(values)])
    offsets = np.array([0, len(values)], np.int64)
    bounds = pa.Array.from_buffers(pa.int64(), 2, [None, pa.py_buffer(offsets)])
    return pa.LargeListArray.from_arrays(bounds, flat)
