"""kvtool: make the KV cache visible and plannable from real LLM request logs.

Library entry points (the CLI is a thin wrapper over these):
``kvtool.analyze(paths, db=..., ...)`` and ``kvtool.ingest(paths, db=...)``.
"""

from __future__ import annotations

from pathlib import Path

from kvtool.analyze import analyze
from kvtool.ingest import FileReport, ingest_files
from kvtool.store import DEFAULT_DB, connect

__version__ = "0.1.0"
__all__ = ["analyze", "ingest"]


def ingest(
    paths: list[str | Path],
    *,
    db: str | Path = DEFAULT_DB,
    fmt: str | None = None,
    hash_block_size: int = 512,
) -> list[FileReport]:
    """Ingest log files into the database at ``db``; see ``kvtool.ingest.ingest_file``."""
    with connect(db) as con:
        return ingest_files(con, [Path(p) for p in paths], fmt=fmt, hash_block_size=hash_block_size)
