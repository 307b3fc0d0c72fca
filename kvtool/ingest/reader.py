"""Input files as numbered records: JSONL, gzip-compressed JSONL and Parquet, each read once.

``open_input`` opens one input (a path, or ``-`` for stdin) exactly once and reads it as one
stream; ``InputStream.sample`` buffers the first lines from that same stream for format
detection and ``InputStream.lines`` yields every line, 1-based, as a ``Line`` with exactly one
of ``parsed`` / ``error`` set, so callers can account for every input line.

Invariants:
- the identity (``InputStream.digest``, final once ``lines`` is exhausted) is computed from
  exactly what was read: the xxh3-128 of the decompressed content with line endings (CRLF, a
  missing final newline) normalized to LF and blank lines left out; for Parquet, of the rows as
  decoded. The same content ingests once whatever its compression or line endings; for a plain
  LF file without blank lines it is the xxh3-128 of its bytes;
- memory is bounded: bytes are read in chunks of ``READ_CHUNK``, gzip output is inflated in
  chunks of ``READ_CHUNK``, and a line longer than ``max_line_bytes`` is rejected ("line longer
  than N bytes") and skipped to the next newline without being buffered;
- Parquet needs random access (a seekable input) and is decoded row group by row group: a group
  that fails to decode becomes one reject per row it holds, the others load.
"""

from __future__ import annotations

import os
import sys
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson
import xxhash

from kvtool.errors import InputError, OptionError

JSON_KEYS_IN_PARQUET = ("messages", "tools", "request", "response", "body", "metadata", "usage")
DEFAULT_MAX_LINE_BYTES = 64 << 20  # 64 MiB: the longest line kept; longer ones are rejected
READ_CHUNK = 1 << 16  # bytes per read, and the most gzip output inflated at once
RAW_KEPT = 1024  # bytes of an over-long line kept in its reject row
SAMPLE_LINES = 50  # lines buffered for format detection
PARQUET_SLICE = 2048  # rows converted to Python objects at once
STDIN = "-"


@dataclass(frozen=True, slots=True)
class Line:
    """One input line: its 1-based number, raw bytes, and either the parsed value or an error."""

    number: int
    raw: bytes
    parsed: Any = None
    error: str | None = None


def check_max_line_bytes(max_line_bytes: int) -> None:
    """``OptionError`` unless ``max_line_bytes`` is a positive integer."""
    if isinstance(max_line_bytes, bool) or not isinstance(max_line_bytes, int):
        raise OptionError("max_line_bytes", f"must be an integer, got {max_line_bytes!r}")
    if max_line_bytes <= 0:
        raise OptionError("max_line_bytes", f"must be positive, got {max_line_bytes}")


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


def _drop_nulls(value: Any) -> Any:
    """Nested struct columns: Arrow gives every struct all fields of the column, null where a
    record had none; drop those so the content matches the JSON that was logged."""
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]


class _GzipCutOff(Exception):
    """The compressed stream ended early or is corrupt (the message says which)."""


class _Splitter:
    """Bytes in, ``Line``s out: splits on LF, rejects over-long lines without buffering them and
    feeds the normalized content to the identity hash."""

    def __init__(self, max_line_bytes: int, hasher: Any) -> None:
        self.limit = max_line_bytes
        self.hasher = hasher
        self.buf = bytearray()
        self.number = 0
        self.skipping = False  # inside an over-long line (already emitted as a reject)
        self.cr_held = 0  # trailing CRs of an over-long line not hashed yet
        self.ready: deque[Line] = deque()

    def _emit(self, raw: bytes) -> None:
        raw = raw.rstrip(b"\r")
        self.number += 1
        parsed, error = _parse(raw)
        if error != "blank line":
            self.hasher.update(raw)
            self.hasher.update(b"\n")
        self.ready.append(Line(self.number, raw, parsed, error))

    def _hash_long(self, seg: bytes) -> None:
        stripped = seg.rstrip(b"\r")
        if stripped:
            if self.cr_held:
                self.hasher.update(b"\r" * self.cr_held)
            self.hasher.update(stripped)
            self.cr_held = len(seg) - len(stripped)
        else:
            self.cr_held += len(seg)

    def _start_long(self, head: bytes) -> None:
        self.number += 1
        reason = f"line longer than {self.limit} bytes"
        self.ready.append(Line(self.number, head[:RAW_KEPT], None, reason))
        self.cr_held = 0

    def _end_long(self) -> None:
        self.hasher.update(b"\n")
        self.cr_held = 0
        self.skipping = False

    def feed(self, data: bytes) -> None:
        start = 0
        while start < len(data) or not data:
            nl = data.find(b"\n", start)
            end = len(data) if nl < 0 else nl
            if self.skipping:
                self._hash_long(data[start:end])
            elif len(self.buf) + end - start > self.limit:  # over-long: reject now, skip the rest
                head = bytes(self.buf[:RAW_KEPT]) + data[start : start + RAW_KEPT]
                self._start_long(head)
                self._hash_long(bytes(self.buf))
                self._hash_long(data[start:end])
                self.buf.clear()
                self.skipping = True
            elif nl < 0:
                self.buf += data[start:end]
            elif self.buf:
                self.buf += data[start:end]
                raw = bytes(self.buf)
                self.buf.clear()
                self._emit(raw)
            else:
                self._emit(data[start:end])
            if nl < 0:
                return
            if self.skipping:
                self._end_long()
            start = nl + 1

    def finish(self) -> None:
        """End of the stream: a last line without a newline still counts."""
        if self.skipping:
            self._end_long()
        elif self.buf:
            raw = bytes(self.buf)
            self.buf.clear()
            self._emit(raw)

    def cut_off(self, reason: str) -> None:
        """A compressed stream that stops early: the partial line is one reject."""
        self.buf.clear()
        self.skipping = False
        self.number += 1
        self.ready.append(Line(self.number, b"", None, reason))


class InputStream:
    """One input opened once: ``sample()`` for detection, then ``lines()``, then ``digest``."""

    def __init__(
        self,
        f: IO[bytes],
        name: str,
        max_line_bytes: int,
        progress: Callable[[int], None] | None,
    ) -> None:
        self.f = f
        self.name = name
        self.progress = progress
        self.bytes_read = 0  # raw bytes read from the input (what the files row records)
        self.hasher = xxhash.xxh3_128()
        self.max_line_bytes = max_line_bytes
        self._first = self._read()
        self.is_parquet = self._first[:4] == b"PAR1"
        self._splitter = _Splitter(max_line_bytes, self.hasher)
        self._eof = False
        self._sampled: list[Line] = []
        if self.is_parquet:
            self._rows = self._parquet_lines()
        else:
            gzipped = self._first[:2] == b"\x1f\x8b"  # by magic bytes, whatever the name
            self._chunks = self._gunzip() if gzipped else self._plain()

    @property
    def digest(self) -> str:
        """The content identity of what was read (final once ``lines()`` is exhausted)."""
        return self.hasher.hexdigest()

    def _read(self) -> bytes:
        try:
            data = self.f.read(READ_CHUNK)
        except OSError as exc:
            raise InputError(f"{self.name}: cannot read: {_one_line(exc)}") from None
        self.bytes_read += len(data)
        if self.progress and data:
            self.progress(len(data))
        return data

    def _plain(self) -> Iterator[bytes]:
        data = self._first
        while data:
            yield data
            data = self._read()

    def _gunzip(self) -> Iterator[bytes]:
        """Inflated chunks of at most ``READ_CHUNK`` bytes (a bomb cannot blow up memory); raises
        ``_GzipCutOff`` for a stream that ends early or is corrupt. Concatenated members are
        read in turn, trailing zero padding is ignored."""
        d = zlib.decompressobj(31)
        data = self._first
        started = True
        while True:
            if not data:
                data = self._read()
                if not data:
                    if started:
                        raise _GzipCutOff(
                            "Compressed file ended before the end-of-stream marker was reached"
                        )
                    return
            try:
                out = d.decompress(data, READ_CHUNK)
                while True:
                    if out:
                        yield out
                    if not d.unconsumed_tail:
                        break
                    out = d.decompress(d.unconsumed_tail, READ_CHUNK)
            except zlib.error as exc:
                raise _GzipCutOff(_one_line(exc)) from None
            if d.eof:
                data = d.unused_data.lstrip(b"\x00")
                d = zlib.decompressobj(31)
                started = bool(data)
                if not data:
                    data = b""
            else:
                data = b""
                started = True

    def _pull(self) -> bool:
        """Feed the next chunk to the splitter; False at the end of the stream."""
        if self._eof:
            return False
        try:
            chunk = next(self._chunks, None)
        except _GzipCutOff as exc:
            if self._splitter.number == 0:
                raise InputError(f"{self.name}: not a readable gzip file ({exc})") from None
            self._splitter.cut_off(f"compressed stream is cut off ({exc})")
            self._eof = True
            return True
        if chunk is None:
            self._splitter.finish()
            self._eof = True
            return True
        self._splitter.feed(chunk)
        return True

    def sample(self) -> list[Line]:
        """The first lines (up to ``SAMPLE_LINES``, reading at most about twice
        ``max_line_bytes``) without consuming them: ``lines()`` yields them again."""
        if self.is_parquet:
            while len(self._sampled) < SAMPLE_LINES:
                line = next(self._rows, None)
                if line is None:
                    break
                self._sampled.append(line)
            return list(self._sampled)
        budget = 2 * self.max_line_bytes + READ_CHUNK
        ready = self._splitter.ready
        while len(ready) < SAMPLE_LINES and self.bytes_read < budget and self._pull():
            pass
        return list(ready)[:SAMPLE_LINES]

    def lines(self) -> Iterator[Line]:
        """Every line of the input, in order (the sampled ones included)."""
        if self.is_parquet:
            yield from self._sampled
            self._sampled = []
            yield from self._rows
            return
        ready = self._splitter.ready
        while True:
            while ready:
                yield ready.popleft()
            if not self._pull():
                return

    def _parquet_lines(self) -> Iterator[Line]:
        import pyarrow.parquet as pq

        if not self.f.seekable():
            raise InputError(
                f"{self.name}: Parquet needs random access; give a regular file, not a pipe"
            )
        try:
            self.f.seek(0)
            size = os.fstat(self.f.fileno()).st_size
            pf = pq.ParquetFile(self.f)
        except Exception as exc:  # pyarrow raises several types for a bad footer
            raise InputError(
                f"{self.name}: not a readable Parquet file ({_one_line(exc)})"
            ) from None
        self.bytes_read = size
        meta = pf.metadata
        per_row = size / max(meta.num_rows, 1)
        number = 0
        for group in range(meta.num_row_groups):
            rows = meta.row_group(group).num_rows
            try:
                table = pf.read_row_group(group)
            except Exception as exc:  # a corrupt page: every row of the group is one reject
                reason = f"row group {group} cannot be decoded ({_one_line(exc)})"
                self.hasher.update(f"\x00{reason}\n".encode())
                for _ in range(rows):
                    number += 1
                    yield Line(number, b"", None, reason)
            else:
                for batch in table.to_batches(PARQUET_SLICE):
                    for row in batch.to_pylist():
                        number += 1
                        line = self._parquet_row(number, row)
                        self.hasher.update(line.raw)
                        self.hasher.update(b"\n")
                        yield line
            if self.progress:
                self.progress(int(rows * per_row))

    @staticmethod
    def _parquet_row(number: int, row: dict) -> Line:
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
        return Line(number, raw, None if error else rec, error)


@contextmanager
def open_input(
    path: Path,
    *,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    progress: Callable[[int], None] | None = None,
) -> Iterator[InputStream]:
    """``path`` (``-``: stdin) opened once for the ``with`` block; ``InputError`` when it is
    missing, a directory or unreadable. FIFOs, devices and ``/dev/fd/N`` are read as streams."""
    name = str(path)
    if name == STDIN:
        yield InputStream(sys.stdin.buffer, "<stdin>", max_line_bytes, progress)
        return
    if path.is_dir():
        raise InputError(f"{path}: is a directory")
    try:
        f = path.open("rb")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot open: {_one_line(exc)}") from None
    with f:
        yield InputStream(f, name, max_line_bytes, progress)
