"""Opening a kvtool database, transactions and temporary tables: the connection-level API.

``open_db`` is how every stage gets a connection: a path opens (and closes) the file, creating it
and bringing its schema up to date; a connection passed in is used as it is and left open, so a
caller can run several stages in one transaction or on an in-memory database.

Invariants of ``connect``:

- only a DuckDB file is opened: an existing path that is not a regular file, or whose header lacks
  DuckDB's magic (``DUCK`` at byte 8), raises ``InputError`` untouched (a 0-byte file counts as
  new); a DuckDB file with tables but without kvtool's ``schema_version`` raises ``SchemaError``
  untouched;
- no connection ever fetches anything: extension autoinstall and autoload are off (``NO_NETWORK``);
- DuckDB's own progress bar is off: it draws on stdout for a query over 2 s, into ``--json``;
- a file locked by another process is retried for ``lock_wait`` seconds (default
  ``KVTOOL_DB_LOCK_WAIT``, else 10), then ``InputError`` says so;
- every DuckDB error while opening, creating or migrating becomes one-line ``InputError`` /
  ``SchemaError`` naming the path; a failed creation or migration leaves the file as it was.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from functools import cache
from pathlib import Path

import duckdb
import pyarrow as pa

from kvtool.errors import InputError, OptionError, SchemaError
from kvtool.store.schema import DDL, MIGRATIONS, SCHEMA_VERSION, current_version

DEFAULT_DB = "kvtool.duckdb"
LOCK_WAIT_ENV = "KVTOOL_DB_LOCK_WAIT"
DEFAULT_LOCK_WAIT_S = 10.0
# DuckDB would otherwise download and load an extension to read a foreign file (SQLite, ...)
NO_NETWORK = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
DUCKDB_MAGIC = b"DUCK"
MAGIC_OFFSET = 8

Connection = duckdb.DuckDBPyConnection
DbArg = str | Path | duckdb.DuckDBPyConnection


def shown(text: object) -> str:
    """``text`` on one line for a terminal: control and other unprintable characters escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def _one_line(exc: BaseException) -> str:
    return shown(" ".join(str(exc).split()))


def lock_wait_s(lock_wait: float | None = None) -> float:
    """Seconds to wait for another process's lock: ``lock_wait``, else ``KVTOOL_DB_LOCK_WAIT``,
    else 10."""
    if lock_wait is None:
        raw = os.environ.get(LOCK_WAIT_ENV)
        if raw is None:
            return DEFAULT_LOCK_WAIT_S
        try:
            wait = float(raw)
        except ValueError:
            wait = -1.0
        if not 0 <= wait < float("inf"):
            raise InputError(f"{LOCK_WAIT_ENV}={shown(repr(raw))} is not a number of seconds >= 0")
        return wait
    if not 0 <= lock_wait < float("inf"):
        raise OptionError("lock_wait", f"must be a finite number of seconds >= 0, got {lock_wait}")
    return lock_wait


def is_new_file(path: Path) -> bool:
    """True when ``path`` holds no database yet (absent or 0 bytes), False for a DuckDB file;
    ``InputError`` for anything else (a directory, a device, JSONL, Parquet, SQLite, ...)."""
    if not path.exists():
        return True
    if not path.is_file():
        kind = "a directory" if path.is_dir() else "not a regular file"
        raise InputError(f"{shown(path)}: {kind}, not a DuckDB database file")
    try:
        with path.open("rb") as f:
            head = f.read(MAGIC_OFFSET + len(DUCKDB_MAGIC))
    except OSError as exc:
        raise InputError(
            f"{shown(path)}: cannot read the database file: {_one_line(exc)}"
        ) from None
    if not head:
        return True
    if head[MAGIC_OFFSET:] != DUCKDB_MAGIC:
        raise InputError(
            f"{shown(path)}: not a DuckDB database (no DuckDB header); a log file is an input, "
            "not a db: choose another database path"
        )
    return False


def _is_lock(exc: duckdb.Error) -> bool:
    return "Could not set lock" in str(exc)


def _open(path: Path, read_only: bool, wait_s: float) -> Connection:
    """``duckdb.connect`` without network, retrying while another process holds the lock."""
    deadline = time.monotonic() + wait_s
    delay = 0.02
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only, config=dict(NO_NETWORK))
        except duckdb.Error as exc:
            left = deadline - time.monotonic()
            if not _is_lock(exc):
                raise InputError(
                    f"{shown(path)}: cannot open the database: {_one_line(exc)}"
                ) from None
            if left <= 0:
                raise InputError(
                    f"{shown(path)}: locked by another process; waited {wait_s:g} s "
                    f"({LOCK_WAIT_ENV} sets how long): {_one_line(exc)}"
                ) from None
            time.sleep(min(delay, left))
            delay = min(delay * 2, 0.25)


def _has_tables(con: Connection) -> bool:
    """Whether the main database holds any table or view (kvtool's or anyone's)."""
    (n,) = one(
        con,
        "SELECT (SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database())"
        " + (SELECT count(*) FROM duckdb_views() WHERE NOT internal"
        " AND database_name = current_database())",
    )
    return bool(n)


def _prepare(con: Connection, path: object) -> None:
    """Create kvtool's tables in an empty file or migrate an older schema, in one transaction."""
    try:
        version = current_version(con)
    except (ValueError, TypeError) as exc:
        raise SchemaError(
            f"{shown(path)}: schema_version is not an integer ({_one_line(exc)}); "
            "not a database this kvtool can read"
        ) from None
    if version is None:
        if _has_tables(con):
            raise SchemaError(
                f"{shown(path)}: a DuckDB database that kvtool did not create (tables but no "
                "kvtool schema_version); left untouched: choose another database path"
            )
        with atomic(con):
            con.execute(DDL)
            con.execute("INSERT INTO meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)])
        return
    if version == SCHEMA_VERSION:
        con.execute(DDL)
        return
    if version > SCHEMA_VERSION:
        raise SchemaError(
            f"{shown(path)}: schema version {version}, this kvtool reads up to {SCHEMA_VERSION}; "
            "upgrade kvtool or use another database file"
        )
    if version not in MIGRATIONS:
        raise SchemaError(f"{shown(path)}: schema version {version} cannot be migrated")
    with atomic(con):
        for v in range(version, SCHEMA_VERSION):
            con.execute(MIGRATIONS[v])
        con.execute(DDL)
        con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(SCHEMA_VERSION)])


def connect(
    path: str | Path = DEFAULT_DB, *, read_only: bool = False, lock_wait: float | None = None
) -> Connection:
    """Open (creating if needed) a kvtool database and make sure its schema is current; a file
    of an older schema is migrated in place, one of a newer one raises ``SchemaError``. A
    read-only connection is opened as it is. See the module docstring for what is refused."""
    wait_s = lock_wait_s(lock_wait)
    if str(path) == ":memory:":
        con = duckdb.connect(":memory:", read_only=read_only, config=dict(NO_NETWORK))
    else:
        path = Path(path)
        new = is_new_file(path)
        if not read_only:
            if new and path.exists():
                path.unlink()  # a 0-byte file (mktemp): DuckDB refuses it, kvtool starts it afresh
            if path.parent and not path.parent.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
        con = _open(path, read_only, wait_s)
    con.execute("SET enable_progress_bar = false")
    if read_only:
        return con
    try:
        _prepare(con, path)
    except duckdb.IOException as exc:  # a truncated or damaged file
        con.close()
        raise InputError(f"{shown(path)}: cannot read the database: {_one_line(exc)}") from None
    except duckdb.Error as exc:
        con.close()
        raise SchemaError(
            f"{shown(path)}: cannot set up kvtool's tables: {_one_line(exc)}"
        ) from None
    except BaseException:
        con.close()
        raise
    return con


def check_output(out: str | Path, *, param: str, db: DbArg | None = None) -> None:
    """``OptionError`` on ``param`` when the output path ``out`` is a directory or the same file
    as the database ``db`` (writing it would destroy the database); nothing is touched."""
    out = Path(out)
    if out.is_dir():
        raise OptionError(param, f"{shown(out)} is a directory; name a file to write")
    if db is None or isinstance(db, duckdb.DuckDBPyConnection) or str(db) == ":memory:":
        return
    db = Path(db)
    try:
        same = out.samefile(db) if out.exists() and db.exists() else out.resolve() == db.resolve()
    except OSError:
        same = False
    if same:
        raise OptionError(
            param,
            f"{shown(out)} is the database file itself; writing it would destroy the database",
        )


@contextmanager
def open_db(
    db: DbArg = DEFAULT_DB, *, read_only: bool = False, lock_wait: float | None = None
) -> Iterator[Connection]:
    """A connection to ``db`` for the ``with`` block: a path is opened and closed again, an open
    connection is passed through untouched."""
    if isinstance(db, duckdb.DuckDBPyConnection):
        yield db
        return
    con = connect(db, read_only=read_only, lock_wait=lock_wait)
    try:
        yield con
    finally:
        con.close()


@contextmanager
def atomic(con: Connection) -> Iterator[Connection]:
    """One transaction: committed when the block ends, rolled back when it raises. When the
    rollback itself fails (disk full, transaction already gone), the block's error is raised,
    never the rollback's."""
    con.begin()
    try:
        yield con
    except BaseException:
        with suppress(duckdb.Error):  # the error that matters is the block's, raised below
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


def append_arrow(con: Connection, table: str, rows: pa.Table, where: str | None = None) -> None:
    """Append ``rows`` (``table``'s columns, in order; those matching ``where`` when given) to
    ``table`` through a relation, not a registered view: a view dropped inside a transaction
    keeps its Arrow table alive until the commit, so a long transaction (one file's ingest)
    would hold every batch it appended (``temp_table`` is for short ones)."""
    rel = con.from_arrow(rows)
    (rel if where is None else rel.filter(where)).insert_into(table)


EVICT_TO = "1MB"  # what ``release_cache`` lowers DuckDB's limit to for a moment


@cache
def _default_limit() -> tuple:
    """DuckDB's default memory limit as ``current_setting`` shows it (from a fresh connection)."""
    with duckdb.connect(":memory:") as fresh:
        return one(fresh, "SELECT current_setting('memory_limit')")


def release_cache(con: Connection) -> bool:
    """Evict the table blocks DuckDB keeps cached from earlier queries. A stage that scanned
    millions of rows (ingest, tokenization, reading the block tree) leaves them in DuckDB's
    buffer pool, up to its memory limit (80% of RAM by default), beside the next stage's
    arrays. After a checkpoint (what was written goes to the file, not to a spill file),
    lowering the limit for a moment makes DuckDB drop what is not pinned (a file's blocks are
    on disk) and give the memory back; the default limit is then put back. Whether
    it evicted: not under a limit someone set (DuckDB shows it rounded, so it could not be put
    back exactly: it is left alone), not for an in-memory database (its tables would spill to
    a temporary directory), nor where DuckDB could not free enough (pinned buffers)."""
    (path,) = one(
        con, "SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
    )
    limit = "SELECT current_setting('memory_limit')"
    if not path or one(con, limit) != _default_limit():
        return False
    with suppress(duckdb.Error):  # written blocks to the file first, not spilled (read-only: no)
        con.execute("CHECKPOINT")
    try:
        con.execute(f"SET memory_limit = '{EVICT_TO}'")
        return True
    except duckdb.OutOfMemoryException:
        return False
    finally:
        con.execute("RESET memory_limit")


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
