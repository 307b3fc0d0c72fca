"""Input files as numbered records: JSONL, gzip-compressed JSONL and Parquet.

``read_records`` yields ``(line, raw, parsed, error)`` for every line of the file, 1-based, with
exactly one of ``parsed`` / ``error`` set, so callers can account for every input line.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import xxhash

from kvtool.errors import InputError

JSON_KEYS_IN_PARQUET = ("messages", "tools", "request", "response", "body", "metadata", "usage")


@dataclass(frozen=True, slots=True)
class Line:
    """One input line: its 1-based number, raw bytes, and either the parsed value or an error."""

    number: int
    raw: bytes
    parsed: Any = None
    error: str | None = None


def file_digest(path: Path) -> str:
    """Content identity of a file (xxh3-128 of its bytes): the same bytes ingest once."""
    h = xxhash.xxh3_128()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def is_parquet(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) == b"PAR1"


def _parse(raw: bytes) -> tuple[Any, str | None]:
    if not raw.strip():
        return None, "blank line"
    try:
        return orjson.loads(raw), None
    except orjson.JSONDecodeError as exc:
        msg = str(exc)
        if "utf-8" in msg.lower() or "surrogate" in msg.lower():
            return None, "invalid UTF-8"
        return None, f"invalid JSON: {msg[:120]}"


def _jsonl_lines(path: Path, progress: Callable[[int], None] | None) -> Iterator[Line]:
    with path.open("rb") as raw_file:
        gzipped = raw_file.read(2) == b"\x1f\x8b"  # by magic bytes, whatever the file is called
        raw_file.seek(0)
        stream = gzip.GzipFile(fileobj=raw_file) if gzipped else raw_file
        number = 0
        last_pos = 0
        try:
            for number, raw in enumerate(stream, 1):  # noqa: B007 - number used after the loop
                raw = raw.rstrip(b"\r\n")
                parsed, error = _parse(raw)
                yield Line(number, raw, parsed, error)
                if progress and number % 2048 == 0:
                    pos = raw_file.tell()
                    progress(pos - last_pos)
                    last_pos = pos
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            if number == 0:
                raise InputError(f"{path}: not a readable gzip file ({exc})") from exc
            yield Line(number + 1, b"", None, f"compressed stream is cut off ({exc})")
        if progress:
            progress(path.stat().st_size - last_pos)


def _drop_nulls(value: Any) -> Any:
    """Nested struct columns: Arrow gives every struct all fields of the column, null where a
    record had none; drop those so the content matches the JSON that was logged."""
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def _parquet_lines(path: Path, progress: Callable[[int], None] | None) -> Iterator[Line]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a bad footer
        raise InputError(f"{path}: not a readable Parquet file ({exc})") from exc
    per_row = path.stat().st_size / max(pf.metadata.num_rows, 1)
    number = 0
    for batch in pf.iter_batches(batch_size=2048):
        for row in batch.to_pylist():
            number += 1
            rec = {k: v for k, v in row.items() if v is not None}
            error = None
            for key in JSON_KEYS_IN_PARQUET:
                value = rec.get(key)
                if isinstance(value, str) and value[:1] in ("[", "{"):
                    try:
                        rec[key] = orjson.loads(value)
                    except orjson.JSONDecodeError:
                        error = f"column {key!r} holds invalid JSON"
                elif isinstance(value, list | dict):
                    rec[key] = _drop_nulls(value)
            raw = orjson.dumps(row, default=str)
            yield Line(number, raw, None if error else rec, error)
        if progress:
            progress(int(batch.num_rows * per_row))


def read_records(path: Path, progress: Callable[[int], None] | None = None) -> Iterator[Line]:
    """Every line of ``path`` as a ``Line``; ``progress`` receives bytes of the file consumed."""
    if is_parquet(path):
        return _parquet_lines(path, progress)
    return _jsonl_lines(path, progress)


def sample(path: Path, n: int = 50) -> list[Line]:
    """The first ``n`` lines of a file (for format detection and the not-JSON check)."""
    out = []
    for line in read_records(path):
        out.append(line)
        if len(out) >= n:
            break
    return out
