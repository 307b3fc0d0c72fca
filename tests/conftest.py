"""Shared fixtures: a real DuckDB store in tmp_path and a JSON Lines writer."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import orjson
import pytest

from kvtool.store import connect


@pytest.fixture
def con(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A fresh kvtool database file under tmp_path."""
    connection = connect(tmp_path / "kv.duckdb")
    yield connection
    connection.close()


@pytest.fixture
def write_jsonl(tmp_path: Path) -> Callable[..., Path]:
    """``write_jsonl(name, records)``: one JSON object per line (bytes are written as given)."""

    def write(name: str, records: list) -> Path:
        path = tmp_path / name
        lines = [r if isinstance(r, bytes) else orjson.dumps(r) for r in records]
        path.write_bytes(b"".join(line + b"\n" for line in lines))
        return path

    return write
