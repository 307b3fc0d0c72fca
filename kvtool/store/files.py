"""Ingested files, their requests' rows as written, and rejected lines.

Invariant (checked by the ingest tests): for every file row, ``records = requests + rejected +
skipped`` (``records = lines`` where each line is one record); a
file is identified by the digest of its content as read (decompressed, line endings normalized,
blank lines left out), so the same content is ingested once.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from kvtool.store.db import Connection, append_arrow, id_list, one


@dataclass(frozen=True)
class FileRow:
    """One ingested file. ``hash_block_size`` is set for hash traces only."""

    file_id: int
    path: str
    digest: str
    bytes: int
    format: str
    hash_block_size: int | None
    lines: int
    requests: int
    rejected: int
    records: int | None = None
    skipped: int = 0
    redacted: bool = False


_FILE_COLUMNS = (
    "file_id, path, digest, bytes, format, hash_block_size, lines, requests, rejected, "
    "records, skipped, redacted"
)


@dataclass(frozen=True)
class Reject:
    """An input record that did not become a request: rejected, or ``skipped`` (valid but
    outside the format's scope). ``item`` numbers the records of a line that holds several."""

    file_id: int
    path: str
    line: int
    reason: str
    raw: str | None
    item: int = 0
    skipped: bool = False


def find_file(con: Connection, digest: str) -> FileRow | None:
    """The file already ingested with this content identity, if any."""
    row = one(con, f"SELECT {_FILE_COLUMNS} FROM files WHERE digest = ?", [digest])
    return None if row is None else FileRow(*row)


def insert_file(con: Connection, f: FileRow) -> None:
    con.execute(
        f"INSERT INTO files ({_FILE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            f.file_id,
            f.path,
            f.digest,
            f.bytes,
            f.format,
            f.hash_block_size,
            f.lines,
            f.requests,
            f.rejected,
            f.lines if f.records is None else f.records,
            f.skipped,
            f.redacted,
        ],
    )


def set_synthetic_ids(con: Connection, file_id: int, placeholder: str, prefix: str) -> None:
    """Give the file's synthetic request ids their final form ``<prefix>:<line>`` (``.<item>``
    added for the second and later records of a line); they were written with ``placeholder``
    before the file's digest was known."""
    con.execute(
        "UPDATE requests SET request_id = ? || ':' || line "
        "|| CASE WHEN item > 0 THEN '.' || item ELSE '' END "
        "WHERE file_id = ? AND synthetic_id AND starts_with(request_id, ?)",
        [prefix, file_id, placeholder],
    )


def file_rows(con: Connection, file_ids: list[int] | None = None) -> list[FileRow]:
    """Files (of ``file_ids``; all when None) in file_id order."""
    where = "" if file_ids is None else f"WHERE file_id IN ({id_list(file_ids)})"
    rows = con.execute(f"SELECT {_FILE_COLUMNS} FROM files {where} ORDER BY file_id").fetchall()
    return [FileRow(*r) for r in rows]


def all_file_ids(con: Connection) -> list[int]:
    return [f for (f,) in con.execute("SELECT file_id FROM files ORDER BY 1").fetchall()]


def request_kinds(con: Connection, file_ids: list[int]) -> set[str]:
    """The request kinds ('chat', 'completion', 'hash') among the files' requests."""
    return {
        k
        for (k,) in con.execute(
            f"SELECT DISTINCT kind FROM requests WHERE file_id IN ({id_list(file_ids)})"
        ).fetchall()
    }


def insert_requests(con: Connection, table: pa.Table) -> None:
    """Append request rows (the ``requests`` columns, in order)."""
    append_arrow(con, "requests", table)


def insert_contents(con: Connection, table: pa.Table) -> None:
    """Add (key, kind, body) contents whose key is not stored yet."""
    append_arrow(con, "contents", table, "key NOT IN (SELECT key FROM contents)")


_REJECT_SCHEMA = pa.schema(
    [
        ("file_id", pa.int32()),
        ("path", pa.string()),
        ("line", pa.int64()),
        ("reason", pa.string()),
        ("raw", pa.string()),
        ("item", pa.int32()),
        ("skipped", pa.bool_()),
    ]
)


def insert_rejects(con: Connection, rejects: list[Reject]) -> None:
    """Append reject (and skipped) rows, as one Arrow batch (a file of skipped spans or
    observations can hold as many of them as requests)."""
    if not rejects:
        return
    table = pa.Table.from_pydict(
        {
            "file_id": [r.file_id for r in rejects],
            "path": [r.path for r in rejects],
            "line": [r.line for r in rejects],
            "reason": [r.reason for r in rejects],
            "raw": [r.raw for r in rejects],
            "item": [r.item for r in rejects],
            "skipped": [r.skipped for r in rejects],
        },
        schema=_REJECT_SCHEMA,
    )
    append_arrow(con, "rejects", table)


def first_seen(con: Connection, request_ids: list[str]) -> dict[str, str]:
    """For the ids already ingested: where each was first seen (``path:line``). Only requests
    of stored files count (a file is stored once ingested), so with no file stored there are
    none, without a join."""
    if one(con, "SELECT 1 FROM files LIMIT 1") is None:
        return {}
    ids = con.from_arrow(pa.table({"request_id": pa.array(request_ids, pa.string())}))
    stored = con.sql(
        "SELECT r.request_id, f.path || ':' || r.line AS seen_at FROM requests r "
        "JOIN files f USING (file_id)"
    )  # a relation, not a registered view: this runs inside the ingest's transaction
    return dict(
        stored.join(ids, "request_id").aggregate("request_id, any_value(seen_at)").fetchall()
    )


def rejected_lines(con: Connection, file_ids: list[int]) -> int:
    """Rejected records of the files (skipped ones are not rejects)."""
    (n,) = one(
        con,
        f"SELECT count(*) FROM rejects WHERE NOT skipped AND file_id IN ({id_list(file_ids)})",
    )
    return int(n)


def first_reject(con: Connection) -> Reject | None:
    """The earliest rejected line (by file and line)."""
    row = one(
        con,
        "SELECT file_id, path, line, reason, raw, item, skipped FROM rejects WHERE NOT skipped "
        "ORDER BY file_id, line, item LIMIT 1",
    )
    return None if row is None else Reject(*row)
