"""Shared fixtures: a real DuckDB store in tmp_path, a JSON Lines writer, the shared traces."""

from __future__ import annotations

import os
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


# The real Mooncake traces live in ../shared (never copied into the repo). Locally a missing
# shared/ skips those tests; under CI it is an error, so real-data tests cannot silently vanish.
MOONCAKE_DIR = Path(
    os.environ.get(
        "KVTOOL_MOONCAKE_DIR",
        Path(__file__).resolve().parents[2] / "shared" / "traces" / "mooncake",
    )
)


@pytest.fixture
def mooncake_dir() -> Path:
    if not MOONCAKE_DIR.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"CI needs the shared Mooncake traces at {MOONCAKE_DIR}")
        pytest.skip(f"shared Mooncake traces not present at {MOONCAKE_DIR}")
    return MOONCAKE_DIR
