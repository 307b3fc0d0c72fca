"""A file ingested away from the store (on a distributed worker) and merged into it later.

``stage_file`` runs on a worker: it ingests one input with the normal ingest code
(``ingest_file``) into a private DuckDB file in a temporary directory, then writes that
database's requests, contents and rejects as Parquet under ``location/<index>/``. Only
Parquet and a ``StagedFile`` (the report, the files row, or the error) leave the worker.

``merge_staged`` runs on the driver, once per staged file, in the order the paths were given,
and leaves the store as a local ingest of the same paths would have:
- a file whose digest the store already holds is reported ``already_ingested`` and adds nothing;
- a request whose explicit id the store already holds (an earlier file) is rejected with the
  local engine's reason, file and line; its raw line stays on the worker that read it, so the
  reject's ``raw`` is NULL (as in a redacted ingest);
- ids continue the store's: the file takes the next file id and its requests the next request
  ids, in the order the worker gave them (the order a local ingest numbers them);
- contents are inserted once per key.
The merge of one file is one transaction.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from kvtool.errors import KvtoolError
from kvtool.ingest.writer import FileReport, duplicate_reason, ingest_file, reason_class
from kvtool.store import Connection, atomic, connect, next_id
from kvtool.store.files import FileRow, file_rows, find_file, insert_file
from kvtool.store.parquet import join, read_dataset, write_batches

TABLES = ("requests", "contents", "rejects")
BATCH_ROWS = 65_536  # rows per Parquet write on a worker


@dataclass(frozen=True)
class StagedFile:
    """One input as a worker left it: ``report`` and ``row`` (file id 0, request ids from 0) and
    its Parquet under ``location``; or ``error``, the one line that stopped it (nothing staged)."""

    index: int
    location: str
    report: FileReport | None = None
    row: FileRow | None = None
    error: str | None = None


def stage_file(
    index: int,
    source: str,
    name: str,
    location: str,
    *,
    fmt: str | None,
    hash_block_size: int,
    max_line_bytes: int,
) -> StagedFile:
    """Ingest ``source`` (an absolute local path or a URL), stored as ``name``, on this machine
    and write its rows as Parquet under ``location``/``index``. A ``KvtoolError`` (unreadable
    input, every line rejected) becomes ``StagedFile.error``; anything else propagates."""
    where = join(location, str(index))
    scratch = tempfile.mkdtemp(prefix="kvtool-stage-")
    try:
        con = connect(Path(scratch, "stage.duckdb"))
        try:
            report = ingest_file(
                con,
                source,  # type: ignore[arg-type]  # a URL stays a string
                fmt=fmt,
                hash_block_size=hash_block_size,
                max_line_bytes=max_line_bytes,
                name=name,
            )
            (row,) = file_rows(con, [report.file_id])
            for table in TABLES:
                order = "req_id" if table == "requests" else "rowid"
                reader = con.sql(f"SELECT * FROM {table} ORDER BY {order}").to_arrow_reader(
                    BATCH_ROWS
                )
                write_batches(join(where, f"{table}.parquet"), reader.schema, reader)
        except KvtoolError as exc:  # named as the user gave it, not by the worker's path
            return StagedFile(index, where, error=str(exc).replace(source, name))
        finally:
            con.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return StagedFile(index, where, report, row)


def merge_staged(con: Connection, staged: StagedFile) -> FileReport:
    """Add one staged file to the store (see the module invariants); ``staged.error`` must be
    None."""
    assert staged.report is not None and staged.row is not None, staged.error
    known = find_file(con, staged.row.digest)
    if known is not None:
        return FileReport.already_ingested(staged.report.path, known)
    schemas = {t: con.sql(f"SELECT * FROM {t} LIMIT 0").to_arrow_table().schema for t in TABLES}
    views = {
        f"_kv_staged_{t}": read_dataset(join(staged.location, f"{t}.parquet"), schemas[t])
        for t in TABLES
    }
    name = staged.report.path
    reasons = dict(staged.report.reasons)
    with atomic(con):
        file_id = next_id(con, "files", "file_id")
        first_req = next_id(con, "requests", "req_id")
        for view, dataset in views.items():
            con.register(view, dataset)
        try:
            dupes = con.execute(
                """SELECT s.req_id, s.line, s.item, s.request_id,
                          any_value(f.path || ':' || r.line)
                   FROM _kv_staged_requests s JOIN requests r USING (request_id)
                   JOIN files f ON f.file_id = r.file_id
                   WHERE NOT s.synthetic_id GROUP BY ALL ORDER BY s.req_id"""
            ).fetchall()
            dropped = [d[0] for d in dupes]
            con.execute(
                """INSERT INTO requests
                   SELECT * REPLACE (? + row_number() OVER (ORDER BY req_id) - 1 AS req_id,
                                     ?::INTEGER AS file_id)
                   FROM _kv_staged_requests
                   WHERE NOT list_contains(?::BIGINT[], req_id)""",
                [first_req, file_id, dropped],
            )
            con.execute(
                """INSERT INTO contents SELECT * FROM _kv_staged_contents
                   WHERE key NOT IN (SELECT key FROM contents)"""
            )
            con.execute(
                "INSERT INTO rejects SELECT * REPLACE (?::INTEGER AS file_id) "
                "FROM _kv_staged_rejects",
                [file_id],
            )
        finally:
            for view in views:
                con.unregister(view)
        for _, line, item, rid, where in dupes:
            why = duplicate_reason(rid, where)
            con.execute(
                "INSERT INTO rejects (file_id, path, line, reason, raw, item) "
                "VALUES (?, ?, ?, ?, NULL, ?)",
                [file_id, name, line, why, item],
            )
            short = reason_class(why)
            reasons[short] = reasons.get(short, 0) + 1
        row = replace(
            staged.row,
            file_id=file_id,
            requests=staged.row.requests - len(dupes),
            rejected=staged.row.rejected + len(dupes),
        )
        insert_file(con, row)
    return replace(
        staged.report,
        file_id=file_id,
        requests=row.requests,
        rejected=row.rejected,
        reasons=reasons,
    )
