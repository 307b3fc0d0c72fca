"""Inputs as numbered records: JSON Lines, JSON documents, CSV and Parquet; plain, gzip or zstd.

``open_input`` opens one input (a path, or ``-`` for stdin) exactly once and reads it as one
stream; ``InputStream.sample`` buffers the first records from that same stream for format
detection and ``InputStream.lines`` yields every record, in order, as a ``Line`` with exactly
one of ``parsed`` / ``error`` set, so callers can account for every input record.

What is read how (``InputStream.kind``):
- compression comes from the first bytes, whatever the name (``decode``: gzip or zstd);
  Parquet from ``PAR1`` (``tables``: it needs a seekable, uncompressed file);
- CSV (``tables``) for names ending in ``.csv`` (before any ``.gz``/``.zst``), and for inputs
  named otherwise (stdin, a FIFO, ``.log``) whose first non-blank line does not start with
  ``{`` or ``[`` and holds a comma; never for ``.jsonl``, ``.ndjson`` or ``.json`` names;
- everything else is JSON: JSON Lines (``Line.number`` is the line number), or one JSON
  document.

JSON documents (an export that holds one JSON value, often pretty-printed, not a record per
line):
- the input is a document when its first non-blank line is not JSON by itself and starts with
  ``[``, or starts with ``{`` and the input parses as one value (when the sample holds all of
  it; otherwise: when no other sampled line is a JSON object by itself); or when the whole input
  is one line holding an array or a list envelope. A name ending in ``.jsonl``/``.ndjson`` is
  always JSON Lines, and a JSON Lines file (a JSON object per line) is never a document;
- its records: the elements of a top-level array; the ``data`` list of a list envelope (an
  object with ``data`` and only keys of ``ENVELOPE_KEYS``: Langfuse, Helicone and OpenAI list
  responses); any other object is one record;
- ``Line.number`` is the record's 1-based position in that list, ``raw`` its compact JSON;
- a document is parsed whole, so one larger than ``max_line_bytes`` is refused with one line
  (``jq -c '.[]'`` turns it into JSON Lines); a comma before the closing ``]`` of a top-level
  array (left by some exporters) is tolerated.

Invariants:
- the identity (``InputStream.digest``, final once ``lines`` is exhausted) is computed from
  exactly what was read: for JSON, the xxh3-128 of the decompressed content with line endings
  (CRLF, a missing final newline) normalized to LF, blank lines left out and a leading UTF-8
  byte order mark dropped (for a plain LF file without blank lines: the xxh3-128 of its bytes);
  for CSV and Parquet see ``tables``. The same content ingests once whatever its compression;
- memory is bounded: bytes are read and inflated in chunks of ``READ_CHUNK``, a JSON line
  longer than ``max_line_bytes`` is rejected ("line longer than N bytes") and skipped to the
  next newline without being buffered; CSV and Parquet are read in bounded pieces (``tables``).
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import orjson
import xxhash

from kvtool.errors import InputError, OptionError
from kvtool.ingest.decode import READ_CHUNK, Decoded
from kvtool.ingest.line import RAW_KEPT, Line, one_line
from kvtool.ingest.tables import CsvRows, ParquetRows
from kvtool.store.parquet import is_url, resolve

DEFAULT_MAX_LINE_BYTES = 64 << 20  # 64 MiB: the longest line kept; longer ones are rejected
SAMPLE_LINES = 50  # records buffered for format detection
PEEK_LIMIT = 1 << 20  # decompressed bytes looked at to tell CSV from JSON
STDIN = "-"
PARQUET_MAGIC = b"PAR1"
JSONL_SUFFIXES = (".jsonl", ".ndjson")
NOT_CSV_SUFFIXES = (*JSONL_SUFFIXES, ".json", ".parquet")
COMPRESSED_SUFFIXES = (".gz", ".zst")
ENVELOPE_KEYS = frozenset(
    {"data", "meta", "error", "errors", "object", "has_more", "first_id", "last_id", "pagination"}
)


def check_max_line_bytes(max_line_bytes: int) -> None:
    """``OptionError`` unless ``max_line_bytes`` is a positive integer."""
    if isinstance(max_line_bytes, bool) or not isinstance(max_line_bytes, int):
        raise OptionError("max_line_bytes", f"must be an integer, got {max_line_bytes!r}")
    if max_line_bytes <= 0:
        raise OptionError("max_line_bytes", f"must be positive, got {max_line_bytes}")


def base_name(name: str) -> str:
    """``name`` in lower case without a compression suffix (``a.CSV.gz`` -> ``a.csv``)."""
    low = name.lower()
    for suffix in COMPRESSED_SUFFIXES:
        if low.endswith(suffix):
            return low[: -len(suffix)]
    return low


def is_csv(name: str, head: bytes) -> bool:
    """Whether an input called ``name`` whose content starts with ``head`` is CSV (see the
    module docstring)."""
    base = base_name(name)
    if base.endswith(".csv"):
        return True
    if base.endswith(NOT_CSV_SUFFIXES):
        return False
    first = head.lstrip().split(b"\n", 1)[0]
    return bool(first) and first[:1] not in (b"{", b"[") and b"," in first


def is_envelope(value: Any) -> bool:
    """A list envelope: an object with a ``data`` list and only keys of ``ENVELOPE_KEYS``."""
    return (
        isinstance(value, dict)
        and isinstance(value.get("data"), list)
        and set(value) <= ENVELOPE_KEYS
    )


def document_records(value: Any) -> list[Any]:
    """The records of a JSON document (see the module docstring)."""
    if isinstance(value, list):
        return value
    if is_envelope(value):
        return value["data"]
    return [value]


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


def _without_trailing_comma(text: bytes) -> bytes | None:
    """``[..., x,]`` as ``[..., x]``; None when ``text`` does not end that way."""
    body = text.rstrip()
    if not body.endswith(b"]"):
        return None
    body = body[:-1].rstrip()
    return body[:-1] + b"]" if body.endswith(b",") else None


class _Splitter:
    """Bytes in, ``Line``s out: splits on LF, rejects over-long lines without buffering them and
    feeds the normalized content to the identity hash. ``parse``: False once the lines are the
    parts of a JSON document (no per-line JSON parse)."""

    def __init__(self, max_line_bytes: int, hasher: Any) -> None:
        self.limit = max_line_bytes
        self.hasher = hasher
        self.parse = True
        self.buf = bytearray()
        self.number = 0
        self.skipping = False  # inside an over-long line (already emitted as a reject)
        self.cr_held = 0  # trailing CRs of an over-long line not hashed yet
        self.ready: deque[Line] = deque()

    def _emit(self, raw: bytes) -> None:
        raw = raw.rstrip(b"\r")
        self.number += 1
        if not raw.strip():
            parsed, error = None, "blank line"
        elif self.parse:
            parsed, error = _parse(raw)
        else:
            parsed, error = None, None
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
    """One input opened once: ``sample()`` for detection, then ``lines()``, then ``digest``.
    ``kind`` is 'json' (JSON Lines or a JSON document), 'csv' or 'parquet'."""

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
        self._sampled: list[Line] = []
        self._rows: Iterator[Line] | None = None  # CSV and Parquet
        self._records: list[Any] | None = None  # the records of a JSON document
        self._decided = False  # JSON: whether JSON Lines or a document is known
        first = self._read()
        if first[:4] == PARQUET_MAGIC:
            self.kind = "parquet"
            table = ParquetRows(f, self.name, self.hasher)
            self.bytes_read = table.size
            self._rows = table.lines(progress)
            return
        self._decoded = Decoded(first, self._read)
        head = self._decoded.peek(PEEK_LIMIT)
        if head[:4] == PARQUET_MAGIC:
            raise InputError(
                f"{self.name}: Parquet inside {self._decoded.codec} cannot be read; "
                "decompress it first"
            )
        if is_csv(name, head):
            self.kind = "csv"
            self._rows = CsvRows(self._decoded, self.name, max_line_bytes, self.hasher).lines()
            return
        self.kind = "json"
        self._chunks = self._decoded.chunks()
        self._splitter = _Splitter(max_line_bytes, self.hasher)
        self._eof = False
        self._fed = 0  # decompressed bytes fed to the splitter

    @property
    def digest(self) -> str:
        """The content identity of what was read (final once ``lines()`` is exhausted)."""
        return self.hasher.hexdigest()

    def _read(self) -> bytes:
        try:
            data = self.f.read(READ_CHUNK)
        except OSError as exc:
            raise InputError(f"{self.name}: cannot read: {one_line(exc)}") from None
        self.bytes_read += len(data)
        if self.progress and data:
            self.progress(len(data))
        return data

    def _pull(self) -> bool:
        """Feed the next chunk to the splitter; False at the end of the stream."""
        if self._eof:
            return False
        chunk = next(self._chunks, None)
        if chunk is None:
            cut = self._decoded.cut
            if cut is None:
                self._splitter.finish()
            elif self._splitter.number == 0:
                codec = self._decoded.codec
                raise InputError(f"{self.name}: not a readable {codec} file ({cut})")
            else:
                self._splitter.cut_off(f"compressed stream is cut off ({cut})")
            self._eof = True
            return True
        self._fed += len(chunk)
        self._splitter.feed(chunk)
        return True

    def sample(self) -> list[Line]:
        """The first records (up to ``SAMPLE_LINES``; for JSON Lines splitting at most about
        twice ``max_line_bytes``) without consuming them: ``lines()`` yields them again."""
        if self._rows is not None:
            while len(self._sampled) < SAMPLE_LINES:
                line = next(self._rows, None)
                if line is None:
                    break
                self._sampled.append(line)
            return list(self._sampled)
        if not self._decided:
            budget = 2 * self.max_line_bytes + READ_CHUNK
            ready = self._splitter.ready
            while len(ready) < SAMPLE_LINES and self._fed < budget and self._pull():
                pass
            self._decide()
        if self._records is not None:
            return [self._record(i) for i in range(min(SAMPLE_LINES, len(self._records)))]
        return list(self._splitter.ready)[:SAMPLE_LINES]

    def lines(self) -> Iterator[Line]:
        """Every record of the input, in order (the sampled ones included)."""
        if self._rows is not None:
            yield from self._sampled
            self._sampled = []
            yield from self._rows
            return
        if not self._decided:
            self.sample()
        if self._records is not None:
            for i in range(len(self._records)):
                yield self._record(i)
            self._records = []
            return
        ready = self._splitter.ready
        while True:
            while ready:
                yield ready.popleft()
            if not self._pull():
                return

    # -----------------------------------------------------------------------------------------
    # JSON documents

    def _record(self, i: int) -> Line:
        assert self._records is not None
        rec = self._records[i]
        return Line(i + 1, orjson.dumps(rec), rec)

    def _too_large(self) -> InputError:
        return InputError(
            f"{self.name}: a JSON document larger than max_line_bytes ({self.max_line_bytes} "
            "bytes) cannot be read; convert it to JSON Lines (jq -c '.[]') or raise the limit"
        )

    def _decide(self) -> None:
        """JSON Lines or a document (see the module docstring), from the sampled lines."""
        self._decided = True
        if base_name(self.name).endswith(JSONL_SUFFIXES):
            return
        ready = self._splitter.ready
        lines = [line for line in ready if line.error != "blank line"]
        if not lines:
            return
        first = lines[0]
        if first.error is None:
            whole = self._eof and len(lines) == 1  # the input is this one line
            if whole and (isinstance(first.parsed, list) or is_envelope(first.parsed)):
                self._set_document(first.parsed)
            return
        start = first.raw.lstrip()[:1]
        if first.error.startswith("line longer than"):
            if start == b"[":
                raise self._too_large()
            return
        if not first.error.startswith("invalid JSON") or start not in (b"[", b"{"):
            return
        if start == b"{":
            if self._eof:  # the sample holds the whole input: a document only if it parses
                try:
                    value = orjson.loads(b"\n".join(line.raw for line in ready))
                except orjson.JSONDecodeError:
                    return
                ready.clear()
                self._set_document(value)
                return
            if any(isinstance(line.parsed, dict) for line in lines[1:]):
                return
        self._set_document(self._read_document())

    def _set_document(self, value: Any) -> None:
        self._splitter.ready.clear()
        self._records = document_records(value)

    def _read_document(self) -> Any:
        """Read the rest of the input as the parts of one JSON value and parse it."""
        self._splitter.parse = False
        ready = self._splitter.ready
        parts: list[bytes] = []
        size = 0
        while True:
            while ready:
                line = ready.popleft()
                if line.error is not None and line.error != "blank line":
                    if line.error.startswith("line longer than"):
                        raise self._too_large()
                    if not line.error.startswith(("invalid JSON", "invalid UTF-8")):
                        raise InputError(f"{self.name}: {line.error}")
                size += len(line.raw) + 1
                if size > self.max_line_bytes:
                    raise self._too_large()
                parts.append(line.raw)
            if not self._pull():
                break
        text = b"\n".join(parts)
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            fixed = _without_trailing_comma(text)
            if fixed is not None:
                try:
                    return orjson.loads(fixed)
                except orjson.JSONDecodeError:
                    pass
            raise InputError(
                f"{self.name}: not a valid JSON document ({one_line(exc)[:120]})"
            ) from None


@contextmanager
def open_input(
    path: Path | str,
    *,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    progress: Callable[[int], None] | None = None,
) -> Iterator[InputStream]:
    """``path`` (``-``: stdin; a ``scheme://`` string: an object-store URL that ``pyarrow.fs``
    reads) opened once for the ``with`` block; ``InputError`` when it is
    missing, a directory or unreadable. FIFOs, devices and ``/dev/fd/N`` are read as streams."""
    name = str(path)
    if name == STDIN:
        yield InputStream(sys.stdin.buffer, "<stdin>", max_line_bytes, progress)
        return
    if is_url(path):  # an object-store URL, read through pyarrow
        import pyarrow as pa

        fs, inside = resolve(path)
        try:
            stream = fs.open_input_stream(inside, compression=None)
        except (OSError, pa.ArrowException) as exc:
            raise InputError(f"{path}: cannot open: {one_line(exc)}") from None
        with stream:
            yield InputStream(stream, name, max_line_bytes, progress)
        return
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a directory")
    try:
        f = path.open("rb")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot open: {one_line(exc)}") from None
    with f:
        yield InputStream(f, name, max_line_bytes, progress)
