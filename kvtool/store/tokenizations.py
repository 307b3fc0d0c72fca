"""What tokenization decided and produced: ``tokenizations``, ``chains``, ``blocks`` and
``template_errors``.

Invariant: every ``chains`` row of a signature was computed in the mode its ``tokenizations`` row
records, so a later pass (or a preview that re-tokenizes one request) uses that same mode and
gets the same token ids, whatever it would have decided on its own. A request has, per
signature, at most one of a ``chains`` row and a ``template_errors`` row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from kvtool.store.arrow import numbers, valid
from kvtool.store.db import Connection, id_list, one, temp_table


@dataclass(frozen=True)
class Tokenization:
    """One tokenizer signature's stored decision: loaded from ``spec``, rendered with chat
    template ``template``, tokenized in ``mode`` after ``verified`` requests were checked
    against one-call tokenization."""

    signature: str
    spec: str
    template: str
    mode: str
    verified: int


def get_tokenization(con: Connection, signature: str) -> Tokenization | None:
    row = one(
        con,
        "SELECT signature, spec, template, mode, verified FROM tokenizations WHERE signature = ?",
        [signature],
    )
    return None if row is None else Tokenization(*row)


def put_tokenization(con: Connection, t: Tokenization) -> None:
    """Record a decision (the first one for a signature stays: chains depend on it)."""
    con.execute(
        "INSERT INTO tokenizations VALUES (?, ?, ?, ?, ?, "
        "(SELECT coalesce(max(used) + 1, 0) FROM tokenizations)) ON CONFLICT DO NOTHING",
        [t.signature, t.spec, t.template, t.mode, t.verified],
    )


def mark_used(con: Connection, signature: str, spec: str) -> None:
    """Make ``signature`` the database's most recently used tokenizer, loaded from ``spec``."""
    con.execute(
        "UPDATE tokenizations SET used = (SELECT coalesce(max(used) + 1, 0) FROM tokenizations), "
        "spec = ? WHERE signature = ?",
        [spec, signature],
    )


def last_tokenizer_spec(con: Connection) -> str | None:
    """The spec of the tokenizer the database was last used with (None before any)."""
    row = one(con, "SELECT spec FROM tokenizations ORDER BY used DESC LIMIT 1")
    return None if row is None else row[0]


def write_chains(con: Connection, signature: str, chains: pa.Table, blocks: pa.Table) -> None:
    """Insert ``chains`` (req_id, n_tokens, last_block) for ``signature`` and the new ``blocks``
    (hash, parent, depth) among them, each distinct block once per signature."""
    with temp_table(con, "_kv_chains", chains):
        con.execute(
            "INSERT INTO chains SELECT req_id, ?, n_tokens, last_block FROM _kv_chains", [signature]
        )
    with temp_table(con, "_kv_blocks", blocks):
        con.execute(
            """INSERT INTO blocks
               SELECT DISTINCT ON (hash) ?, hash, parent, depth FROM _kv_blocks b
               WHERE NOT EXISTS (SELECT 1 FROM blocks x
                                 WHERE x.tokenizer = ? AND x.hash = b.hash)""",
            [signature, signature],
        )


CHAIN_SCHEMA = pa.schema(
    [("req_id", pa.int64()), ("n_tokens", pa.int64()), ("last_block", pa.int64())]
)
BLOCK_SCHEMA = pa.schema([("hash", pa.int64()), ("parent", pa.int64()), ("depth", pa.int32())])
FAILURE_SCHEMA = pa.schema([("req_id", pa.int64()), ("message", pa.string())])


def merge_staged_chains(
    con: Connection, signature: str, chains: object, blocks: object, failures: object
) -> None:
    """``write_chains`` and ``write_render_failures`` for tables a scan of DuckDB can read
    (``pyarrow.dataset`` of staged Parquet, in ``CHAIN_SCHEMA``, ``BLOCK_SCHEMA`` and
    ``FAILURE_SCHEMA``): a block staged by several workers is written once."""
    views = {"_kv_staged_chains": chains, "_kv_staged_blocks": blocks, "_kv_staged_fail": failures}
    for name, data in views.items():
        con.register(name, data)
    try:
        con.execute(
            "INSERT INTO chains SELECT req_id, ?, n_tokens, last_block FROM _kv_staged_chains",
            [signature],
        )
        con.execute(
            """INSERT INTO blocks
               SELECT DISTINCT ON (hash) ?, hash, parent, depth FROM _kv_staged_blocks b
               WHERE NOT EXISTS (SELECT 1 FROM blocks x
                                 WHERE x.tokenizer = ? AND x.hash = b.hash)""",
            [signature, signature],
        )
        con.execute(
            """INSERT INTO template_errors
               SELECT ?, req_id, message FROM _kv_staged_fail t
               WHERE NOT EXISTS (SELECT 1 FROM template_errors x
                                 WHERE x.tokenizer = ? AND x.req_id = t.req_id)""",
            [signature, signature],
        )
    finally:
        for name in views:
            con.unregister(name)


@dataclass(frozen=True)
class BlockNodes:
    """Every block of a signature, sorted by ``hash``: its ``parent``'s hash (0 where
    ``has_parent`` is False: a first block) and its ``depth``."""

    hash: np.ndarray
    parent: np.ndarray
    has_parent: np.ndarray
    depth: np.ndarray


def block_arrays(con: Connection, signature: str, batch: int = 1 << 20) -> BlockNodes:
    """``BlockNodes`` of ``signature``, read unsorted a batch at a time into arrays of the
    final size and sorted with numpy: DuckDB's ``ORDER BY`` would hold every column of every
    block, and the Arrow result besides (``block_nodes``)."""
    n = int(one(con, "SELECT count(*) FROM blocks WHERE tokenizer = ?", [signature])[0])
    hashes, parents = np.empty(n, np.int64), np.empty(n, np.int64)
    has_parent, depths = np.empty(n, bool), np.empty(n, np.int64)
    reader = con.sql(
        "SELECT hash, parent, depth FROM blocks WHERE tokenizer = ?", params=[signature]
    ).to_arrow_reader(batch)
    at = 0
    for part in reader:
        k = part.num_rows
        hashes[at : at + k] = numbers(part.column(0), np.int64)
        parents[at : at + k] = numbers(part.column(1), np.int64)
        has_parent[at : at + k] = valid(part.column(1))
        depths[at : at + k] = numbers(part.column(2), np.int64)
        at += k
    order = np.argsort(hashes, kind="stable")
    return BlockNodes(hashes[order], parents[order], has_parent[order], depths[order])


def block_nodes(con: Connection, signature: str) -> pa.Table:
    """Every block of ``signature`` as (hash, parent, depth), ordered by hash."""
    return con.sql(
        "SELECT hash, parent, depth FROM blocks WHERE tokenizer = ? ORDER BY hash",
        params=[signature],
    ).to_arrow_table()


@dataclass(frozen=True)
class RenderFailure:
    """A request the chat template of a signature raised for: the template's message, and
    where the request came from (its id as the log gave it or kvtool made it, file, line)."""

    req_id: int
    message: str
    request_id: str = ""
    path: str = ""
    line: int = 0


def write_render_failures(con: Connection, signature: str, failures: list[RenderFailure]) -> None:
    """Record ``failures`` for ``signature`` (each request once: already recorded ones stay)."""
    if not failures:
        return
    table = pa.table(
        {
            "req_id": pa.array([f.req_id for f in failures], pa.int64()),
            "message": pa.array([f.message for f in failures], pa.string()),
        }
    )
    with temp_table(con, "_kv_template_errors", table):
        con.execute(
            """INSERT INTO template_errors
               SELECT ?, req_id, message FROM _kv_template_errors t
               WHERE NOT EXISTS (SELECT 1 FROM template_errors x
                                 WHERE x.tokenizer = ? AND x.req_id = t.req_id)""",
            [signature, signature],
        )


def render_failures(
    con: Connection, signature: str, file_ids: list[int] | None, limit: int
) -> tuple[int, list[RenderFailure]]:
    """(how many requests of ``file_ids`` (all when None) ``signature``'s template raised for,
    the first ``limit`` of them in req_id order with their origin)."""
    where = "" if file_ids is None else f"AND r.file_id IN ({id_list(file_ids)})"
    base = f"""FROM template_errors e JOIN requests r ON r.req_id = e.req_id
               JOIN files f ON f.file_id = r.file_id WHERE e.tokenizer = ? {where}"""
    row = one(con, f"SELECT count(*) {base}", [signature])
    count = 0 if row is None else int(row[0])
    rows = con.execute(
        f"SELECT e.req_id, e.message, r.request_id, f.path, r.line {base} "
        "ORDER BY e.req_id LIMIT ?",
        [signature, limit],
    ).fetchall()
    return count, [RenderFailure(*r) for r in rows]
