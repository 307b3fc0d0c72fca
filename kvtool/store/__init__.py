"""The DuckDB file every stage reads and writes, and the SQL on its shared tables.

- ``schema``: the only DDL, the schema version and migrations;
- ``db``: ``open_db`` / ``connect``, ``atomic()``, ``temp_table()``, ``check_output()`` and small
  query helpers;
- ``requests``: stored requests and contents as named rows (``PromptRow``, ``RequestRow``);
- ``files``: ingested files and rejects;
- ``tokenizations``: tokenization decisions, chains and blocks;
- ``runs``: stored simulate and replay runs, and breaks.
"""

from kvtool.errors import SchemaError
from kvtool.store.db import (
    DEFAULT_DB,
    Connection,
    DbArg,
    as_bigint,
    atomic,
    check_output,
    connect,
    id_list,
    next_id,
    one,
    open_db,
    temp_table,
)
from kvtool.store.schema import SCHEMA_VERSION

__all__ = [
    "DEFAULT_DB",
    "SCHEMA_VERSION",
    "Connection",
    "DbArg",
    "SchemaError",
    "as_bigint",
    "atomic",
    "check_output",
    "connect",
    "id_list",
    "next_id",
    "one",
    "open_db",
    "temp_table",
]
