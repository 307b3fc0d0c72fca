"""``Line``: one numbered input record as every reader hands it to ingest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

RAW_KEPT = 1024  # bytes of an over-long line or row kept in its reject row


@dataclass(frozen=True, slots=True)
class Line:
    """One input record: its 1-based number, raw bytes, and either the parsed value or an error.

    ``number`` is the line of a JSONL file, the record number of a CSV file (header = 1), the
    row of a Parquet file, or the element of a JSON document (see ``kvtool.ingest.reader``)."""

    number: int
    raw: bytes
    parsed: Any = None
    error: str | None = None


def one_line(exc: BaseException) -> str:
    """An exception's message on one line, at most 200 characters."""
    return " ".join(str(exc).split())[:200]
