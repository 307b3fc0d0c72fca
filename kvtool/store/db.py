"""Opening a kvtool database, transactions and temporary tables: the connection-level API.

``open_db`` is how every stage gets a connection: a path opens (and closes) the file, creating it
and bringing its schema up to date; a connection passed in is used as it is and left open, so a
caller can run several stages in one transaction or on an in-memory database.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pyarrow as pa

from kvtool.errors import SchemaError
from kvtool.store.schema import DDL, MIGRATIONS, SCHEMA_VERSION, current_version

DEFAULT_DB = "kvtool.duckdb"

Connection = duckdb.DuckDBPyConnection
DbArg = str | Path | duckdb.DuckDBPyConnection


def connect(path: str | Path = DEFAULT_DB, *, read_only: bool = False) -> Connection:
    """Open (creating if needed) a kvtool database and make sure its schema is current; a file
    of an older schema is migrated in place, one of a newer one raises ``SchemaError``."""
    path = Path(path)
    if read_only:
        return duckdb.connect(str(path), read_only=True)
    if str(path) != ":memory:" and path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    version = current_version(con)
    if version is not None and version != SCHEMA_VERSION:
        if version not in MIGRATIONS and version < SCHEMA_VERSION:
            con.close()
            raise SchemaError(f"{path}: schema version {version} cannot be migrated")
        if version > SCHEMA_VERSION:
            con.close()
            raise SchemaError(
                f"{path}: schema version {version}, this kvtool reads up to {SCHEMA_VERSION}; "
                "upgrade kvtool or use another database file"
            )
        with atomic(con):
            for v in range(version, SCHEMA_VERSION):
                con.execute(MIGRATIONS[v])
            con.execute(DDL)
            con.execute(
                "UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(SCHEMA_VERSION)]
            )
        return con
    con.execute(DDL)
    if version is None:
        con.execute("INSERT INTO meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)])
    return con


@contextmanager
def open_db(db: DbArg = DEFAULT_DB, *, read_only: bool = False) -> Iterator[Connection]:
    """A connection to ``db`` for the ``with`` block: a path is opened and closed again, an open
    connection is passed through untouched."""
    if isinstance(db, duckdb.DuckDBPyConnection):
        yield db
        return
    con = connect(db, read_only=read_only)
    try:
        yield con
    finally:
        con.close()


@contextmanager
def atomic(con: Connection) -> Iterator[Connection]:
    """One transaction: committed when the block ends, rolled back when it raises."""
    con.begin()
    try:
        yield con
    except BaseException:
        con.rollback()
        raise
    con.commit()


@contextmanager
def temp_table(con: Connection, name: str, table: pa.Table) -> Iterator[str]:
    """``table`` visible to SQL as ``name`` for the ``with`` block (an Arrow view, no copy)."""
    con.register(name, table)
    try:
        yield name
    finally:
        con.unregister(name)


def one(con: Connection, sql: str, params: list | None = None) -> tuple | None:
    """The first row of a query, or None; consumes the whole result (DuckDB keeps a partly
    fetched result open and refuses further work on the connection)."""
    rows = con.execute(sql, params or []).fetchall()
    return rows[0] if rows else None


def next_id(con: Connection, table: str, column: str) -> int:
    """The next free integer id of ``table.column`` (ids start at 0)."""
    (value,) = one(con, f"SELECT coalesce(max({column}) + 1, 0) FROM {table}")
    return int(value)


def as_bigint(value: int) -> int:
    """An unsigned 64-bit hash as the signed value a DuckDB BIGINT stores (same bits)."""
    return value - (1 << 64) if value >= 1 << 63 else value


def id_list(ids: list[int]) -> str:
    """Integer ids as an SQL list literal (``NULL`` for none, which matches nothing)."""
    return ",".join(str(int(i)) for i in ids) or "NULL"
