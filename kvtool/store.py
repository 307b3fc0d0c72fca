"""The DuckDB file every stage reads and writes; the only module with DDL.

Tables (one row each):
- ``files``: an ingested input file, identified by the sha256 of its bytes (re-ingest adds nothing).
- ``requests``: a normalized request. Messages, tool catalogs and completion prompts are stored once
  each in ``contents`` and referenced by 64-bit content keys, so agent logs that resend the same
  history every turn take space proportional to their distinct content.
- ``contents``: distinct content by key (``kind``: 'message', 'tools' or 'prompt'; ``body``: JSON).
- ``rejects``: an input line that did not become a request, with file, line, reason and raw text.
- ``chains``: per request and tokenizer signature, the prompt length and the hash of its last full
  base-16 block (NULL when it has none); written by ``kvtool.tokenize``.
- ``breaks``: per tokenizer signature and block size, a request that diverged from its predecessor
  before the reusable part of it ended: position, cause, field path, tokens lost, diff text
  (written by ``kvtool.analyze.breaks``).
- ``sim_runs``: one ``kvtool simulate`` run: its configuration and result as JSON (the
  ``--json`` output), the files it read, policy and block size.
- ``replay_runs`` / ``replay_requests``: one ``kvtool replay`` run (endpoint, configuration,
  the ``/metrics`` counter differences) and what each of its requests measured.
- ``blocks``: per tokenizer signature, each distinct block once: its chain hash, the hash of the
  block before it (NULL for a first block) and its 0-based position. A request's block chain is
  the path from its last block up through ``parent`` (DESIGN.md: block identity).

Invariant: for every file row, ``lines = requests + rejected``.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

SCHEMA_VERSION = 1
DEFAULT_DB = "kvtool.duckdb"

_DDL = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS files (
    file_id INTEGER PRIMARY KEY,
    path VARCHAR NOT NULL,
    sha256 VARCHAR NOT NULL UNIQUE,
    bytes BIGINT NOT NULL,
    format VARCHAR NOT NULL,
    hash_block_size INTEGER,
    lines BIGINT NOT NULL,
    requests BIGINT NOT NULL,
    rejected BIGINT NOT NULL,
    ingested_at TIMESTAMP DEFAULT current_timestamp
);
CREATE TABLE IF NOT EXISTS requests (
    req_id BIGINT NOT NULL,
    file_id INTEGER NOT NULL,
    line BIGINT NOT NULL,
    request_id VARCHAR NOT NULL,
    ts DOUBLE,
    session_id VARCHAR,
    tenant VARCHAR,
    model VARCHAR,
    kind VARCHAR NOT NULL,
    message_keys BIGINT[],
    tools_key BIGINT,
    prompt_key BIGINT,
    hash_ids BIGINT[],
    input_length BIGINT,
    output_tokens BIGINT,
    observed_prompt_tokens BIGINT,
    observed_cached_tokens BIGINT
);
CREATE TABLE IF NOT EXISTS contents (
    key BIGINT NOT NULL,
    kind VARCHAR NOT NULL,
    body VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS rejects (
    file_id INTEGER NOT NULL,
    path VARCHAR NOT NULL,
    line BIGINT NOT NULL,
    reason VARCHAR NOT NULL,
    raw VARCHAR
);
CREATE TABLE IF NOT EXISTS chains (
    req_id BIGINT NOT NULL,
    tokenizer VARCHAR NOT NULL,
    n_tokens BIGINT NOT NULL,
    last_block BIGINT
);
CREATE TABLE IF NOT EXISTS breaks (
    tokenizer VARCHAR NOT NULL,
    block_size INTEGER NOT NULL,
    req_id BIGINT NOT NULL,
    pred_req_id BIGINT NOT NULL,
    position BIGINT NOT NULL,
    tokens_lost BIGINT NOT NULL,
    cause VARCHAR NOT NULL,
    path VARCHAR NOT NULL,
    detail VARCHAR NOT NULL,
    diff VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS sim_runs (
    run_id INTEGER NOT NULL,
    created_at TIMESTAMP DEFAULT current_timestamp,
    file_ids INTEGER[],
    policy VARCHAR NOT NULL,
    block_size INTEGER NOT NULL,
    config VARCHAR NOT NULL,
    result VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS replay_runs (
    run_id INTEGER NOT NULL,
    created_at TIMESTAMP DEFAULT current_timestamp,
    endpoint VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    config VARCHAR NOT NULL,
    metrics VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS replay_requests (
    run_id INTEGER NOT NULL,
    req_id BIGINT NOT NULL,
    request_id VARCHAR NOT NULL,
    ok BOOLEAN NOT NULL,
    error VARCHAR,
    started_s DOUBLE,
    ttft_s DOUBLE,
    e2e_s DOUBLE,
    prompt_tokens BIGINT,
    cached_tokens BIGINT
);
CREATE TABLE IF NOT EXISTS blocks (
    tokenizer VARCHAR NOT NULL,
    hash BIGINT NOT NULL,
    parent BIGINT,
    depth INTEGER NOT NULL
);
"""


class SchemaError(RuntimeError):
    """The database file was written by an incompatible kvtool version."""


def connect(path: str | Path = DEFAULT_DB, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open (creating if needed) a kvtool database and make sure its schema is current."""
    path = Path(path)
    if read_only:
        return duckdb.connect(str(path), read_only=True)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    con.execute(_DDL)
    row = one(con, "SELECT value FROM meta WHERE key = 'schema_version'")
    if row is None:
        con.execute("INSERT INTO meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)])
    elif int(row[0]) != SCHEMA_VERSION:
        raise SchemaError(
            f"{path}: schema version {row[0]}, this kvtool writes {SCHEMA_VERSION}; "
            "use a new --db file"
        )
    return con


def next_id(con: duckdb.DuckDBPyConnection, table: str, column: str) -> int:
    """The next free integer id of ``table.column`` (ids start at 0)."""
    (value,) = one(con, f"SELECT coalesce(max({column}) + 1, 0) FROM {table}")
    return int(value)


def as_bigint(value: int) -> int:
    """An unsigned 64-bit hash as the signed value a DuckDB BIGINT stores (same bits)."""
    return value - (1 << 64) if value >= 1 << 63 else value


def one(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> tuple | None:
    """The first row of a query, or None; consumes the whole result (DuckDB keeps a partly
    fetched result open and refuses further work on the connection)."""
    rows = con.execute(sql, params or []).fetchall()
    return rows[0] if rows else None
