"""Tables as numbered records: CSV, streamed in segments of whole rows, and Parquet.

CSV (RFC 4180: commas, ``"`` quotes, ``""`` for a quote inside quotes, a header row):
- the decompressed content is cut at newlines outside quotes into segments of about
  ``CSV_SEGMENT`` bytes, and pyarrow's CSV reader parses each segment, every column as text.
  pyarrow's own type inference is not used: its streaming reader fixes the types from the first
  block and stops the whole file at a later cell that does not fit. Memory stays near
  ``CSV_SEGMENT + max_line_bytes``;
- ``Line.number`` is the record number: the header is record 1, so the first row is 2, and
  blank lines are not counted. It is the line number unless a cell holds a newline;
- a cell is read as JSON when it is a JSON literal that reads back as the same text (an
  integer, a decimal such as 1.5 but not 1.50 or 1e5, true/false/null in any case) or an object
  or array that parses; every other cell is text. An empty cell (and null) is missing: its key
  is left out, as Parquet nulls are. So a column of ids such as ``0042`` stays text;
- a row with the wrong number of cells, with invalid UTF-8 or longer than ``max_line_bytes``
  is one reject with the reason, and the rows after it load; a compressed stream that is cut
  off rejects its partial last row ("compressed stream is cut off");
- identity: the xxh3-128 of the content with CRLF read as LF and trailing newlines read as one
  (blank lines elsewhere count, since a quoted cell may hold them).

Parquet needs random access (a seekable input) and is decoded a slice of rows at a time, row
group by row group (memory does not grow with the row-group size): the rows of a group that fail
to decode become one reject each, the others load. Identity: the
xxh3-128 of the rows as decoded.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import IO, Any

import orjson
import pyarrow as pa

from kvtool.errors import InputError
from kvtool.ingest.decode import Decoded
from kvtool.ingest.line import RAW_KEPT, Line, one_line

CSV_SEGMENT = 1 << 20  # decompressed bytes of whole rows parsed at once
PARQUET_SLICE = 2048  # rows converted to Python objects at once
JSON_KEYS_IN_PARQUET = ("messages", "tools", "request", "response", "body", "metadata", "usage")
# cells that may be JSON: a number, true/false/null, or an object/array
_JSON_CELL = r"^(?:-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|(?i:true|false|null))$|^\s*[\[{]"
_QUOTE = b'"'


class LfHasher:
    """Feeds content to an identity hash with CRLF read as LF and trailing newlines as one."""

    def __init__(self, hasher: Any) -> None:
        self.hasher = hasher
        self.cr = False  # a CR at the end of the last chunk, not hashed yet
        self.held = b""  # newlines at the end of the last chunk, not hashed yet
        self.started = False

    def feed(self, data: bytes) -> None:
        if self.cr:
            data = b"\r" + data
            self.cr = False
        if data.endswith(b"\r"):
            data = data[:-1]
            self.cr = True
        data = self.held + data.replace(b"\r\n", b"\n")
        body = data.rstrip(b"\n")
        self.held = data[len(body) :]
        if body:
            self.hasher.update(body)
            self.started = True

    def finish(self) -> None:
        if self.cr:
            self.hasher.update(self.held + b"\r")
            self.started = True
        if self.started:
            self.hasher.update(b"\n")


def last_boundary(buf: bytes | bytearray) -> int:
    """The end of the last whole record in ``buf`` (which starts at a record boundary): just
    after the last newline with an even number of quotes before it; 0 if there is none."""
    total = buf.count(_QUOTE)
    after = 0
    end = len(buf)
    p = buf.rfind(b"\n")
    while p >= 0:
        after += buf.count(_QUOTE, p, end)
        end = p
        if (total - after) % 2 == 0:
            return p + 1
        p = buf.rfind(b"\n", 0, p)
    return 0


def _record_ends(data: bytes, parity: int = 0) -> Iterator[tuple[int, int]]:
    """(end, parity) after each newline of ``data``, where ``parity`` is the quote parity
    there (0: outside quotes, a record ends), starting from ``parity``."""
    start = 0
    p = data.find(b"\n")
    while p >= 0:
        parity = (parity + data.count(_QUOTE, start, p)) % 2
        yield p + 1, parity
        start = p
        p = data.find(b"\n", p + 1)


def _records(seg: bytes) -> Iterator[bytes]:
    """The records of ``seg`` one by one (for a segment pyarrow refused as a whole)."""
    start = 0
    for end, parity in _record_ends(seg):
        if parity == 0:
            yield seg[start:end]
            start = end
    if seg[start:].strip():
        yield seg[start:]


def _utf8(data: bytes) -> bool:
    if data.isascii():
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _cell(text: str) -> Any:
    """One cell that may be JSON (see the module docstring): its value, or the text."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low == "null":
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
    if isinstance(value, dict | list) or str(value) == text:
        return value
    return text


def _cells(col: pa.ChunkedArray) -> list[Any]:
    import pyarrow.compute as pc

    values = col.to_pylist()
    maybe = pc.match_substring_regex(col, _JSON_CELL)
    for i in pc.indices_nonzero(maybe).to_pylist():  # null cells are not listed
        values[i] = _cell(values[i])
    return values


class CsvRows:
    """The records of one CSV input, as ``Line``s (see the module docstring)."""

    def __init__(self, decoded: Decoded, name: str, max_line_bytes: int, hasher: Any) -> None:
        self.decoded = decoded
        self.name = name
        self.limit = max_line_bytes
        self.hash = LfHasher(hasher)
        self.names: list[str] | None = None
        self.number = 0

    def lines(self) -> Iterator[Line]:
        buf = bytearray()
        skipping: int | None = None  # quote parity inside an over-long row being skipped
        for chunk in self.decoded.chunks():
            self.hash.feed(chunk)
            if skipping is not None:
                end = next((e for e, p in _record_ends(chunk, skipping) if p == 0), None)
                if end is None:
                    skipping = (skipping + chunk.count(_QUOTE)) % 2
                    continue
                chunk = chunk[end:]
                skipping = None
            buf += chunk
            if len(buf) < CSV_SEGMENT and len(buf) <= self.limit:
                continue
            cut = last_boundary(buf)
            if cut:
                yield from self._segment(bytes(buf[:cut]))
                del buf[:cut]
            if len(buf) > self.limit:  # one row longer than the limit: rejected and skipped
                if self.names is None:
                    raise InputError(f"{self.name}: CSV header longer than {self.limit} bytes")
                self.number += 1
                reason = f"row longer than {self.limit} bytes"
                yield Line(self.number, bytes(buf[:RAW_KEPT]), None, reason)
                skipping = buf.count(_QUOTE) % 2
                buf.clear()
        self.hash.finish()
        cut_off = self.decoded.cut
        if cut_off is None:
            if skipping is None:
                yield from self._segment(bytes(buf))
            return
        whole = last_boundary(buf) if skipping is None else 0
        yield from self._segment(bytes(buf[:whole]))
        if self.names is None:
            codec = self.decoded.codec
            raise InputError(f"{self.name}: not a readable {codec} file ({cut_off})")
        self.number += 1
        reason = f"compressed stream is cut off ({cut_off})"
        yield Line(self.number, bytes(buf[whole : whole + RAW_KEPT]), None, reason)

    def _header(self, seg: bytes) -> bytes:
        """Read the header from the start of ``seg``; returns the rest."""
        import pyarrow.csv as pacsv

        start = len(seg) - len(seg.lstrip(b"\r\n"))
        end = next((e for e, p in _record_ends(seg[start:]) if p == 0), len(seg) - start)
        head = seg[start : start + end]
        if len(head) > self.limit:
            raise InputError(f"{self.name}: CSV header longer than {self.limit} bytes")
        try:
            names = pacsv.read_csv(
                pa.py_buffer(head), read_options=pacsv.ReadOptions(use_threads=False)
            ).column_names
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"{self.name}: unreadable CSV header ({one_line(exc)})") from None
        seen: set[str] = set()
        for name in names:
            if name in seen:
                raise InputError(f"{self.name}: CSV header repeats column {name[:60]!r}")
            seen.add(name)
        self.names = names
        self.number = 1
        return seg[start + end :]

    def _parse(self, seg: bytes) -> tuple[pa.Table, list[Any]]:
        import pyarrow.csv as pacsv

        invalid: list[Any] = []

        def keep(row: Any) -> str:
            invalid.append(row)
            return "skip"

        names = self.names or []
        table = pacsv.read_csv(
            pa.py_buffer(seg),
            read_options=pacsv.ReadOptions(
                column_names=names, use_threads=False, block_size=len(seg) + 1
            ),
            parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=keep),
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.string() for n in names},
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
            ),
        )
        return table, invalid

    def _segment(self, seg: bytes) -> Iterator[Line]:
        """The records of ``seg``, a run of whole records (the header first, if not read)."""
        if self.names is None:
            if not seg.strip():
                return
            seg = self._header(seg)
        if not seg.strip():
            return
        if _utf8(seg):
            try:
                table, invalid = self._parse(seg)
            except (pa.ArrowException, OSError):
                pass
            else:
                yield from self._rows(table, invalid, len(seg))
                return
        for record in _records(seg):  # one by one, to find the rows that fail
            if not record.strip():
                continue
            if not _utf8(record):  # checked first: pyarrow cannot report such a row itself
                self.number += 1
                yield Line(self.number, record[:RAW_KEPT], None, "CSV row: invalid UTF-8")
                continue
            try:
                table, invalid = self._parse(record)
            except (pa.ArrowException, OSError) as exc:
                self.number += 1
                yield Line(self.number, record[:RAW_KEPT], None, f"CSV row: {one_line(exc)}")
                continue
            yield from self._rows(table, invalid, len(record))

    def _sizes(self, table: pa.Table) -> list[int]:
        """The bytes of each row's cells (what the row limit is checked against)."""
        import pyarrow.compute as pc

        lengths = [pc.binary_length(col).fill_null(0) for col in table.columns]
        summed = lengths[0]
        for more in lengths[1:]:
            summed = pc.add(summed, more)
        return summed.to_pylist()

    def _rows(self, table: pa.Table, invalid: list[Any], seg_bytes: int) -> Iterator[Line]:
        total = table.num_rows + len(invalid)
        bad = {row.number: row for row in invalid}
        if any(not 1 <= n <= total for n in bad) or len(bad) != len(invalid):
            bad = {table.num_rows + i + 1: row for i, row in enumerate(invalid)}  # unnumbered
        names = table.column_names
        columns = [_cells(table.column(i)) for i in range(table.num_columns)]
        long = seg_bytes > self.limit and table.num_rows > 0  # else no row can be over-long
        sizes = self._sizes(table) if long else [0] * table.num_rows
        v = 0
        for n in range(1, total + 1):
            self.number += 1
            row = bad.get(n)
            if row is not None:
                reason = f"CSV row has {row.actual_columns} cells, expected {row.expected_columns}"
                yield Line(self.number, str(row.text).encode(), None, reason)
                continue
            rec = {k: col[v] for k, col in zip(names, columns, strict=True) if col[v] is not None}
            raw = orjson.dumps(rec)
            if sizes[v] > self.limit:
                yield Line(self.number, raw[:RAW_KEPT], None, f"row longer than {self.limit} bytes")
            else:
                yield Line(self.number, raw, rec)
            v += 1


# ---------------------------------------------------------------------------------------------
# Parquet


def _drop_nulls(value: Any) -> Any:
    """Nested struct columns: Arrow gives every struct all fields of the column, null where a
    record had none; drop those so the content matches the JSON that was logged."""
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


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


class ParquetRows:
    """The rows of one Parquet input, as ``Line``s; ``InputError`` at once when the input is
    not seekable or has no readable footer. ``size`` is the file's size in bytes."""

    def __init__(self, f: IO[bytes], name: str, hasher: Any) -> None:
        import pyarrow.parquet as pq

        if not f.seekable():
            raise InputError(
                f"{name}: Parquet needs random access; give a regular file, not a pipe"
            )
        try:
            f.seek(0)
            self.size = os.fstat(f.fileno()).st_size
            self.pf = pq.ParquetFile(f)
        except Exception as exc:  # pyarrow raises several types for a bad footer
            raise InputError(f"{name}: not a readable Parquet file ({one_line(exc)})") from None
        self.hasher = hasher

    def lines(self, progress: Callable[[int], None] | None) -> Iterator[Line]:
        meta = self.pf.metadata
        per_row = self.size / max(meta.num_rows, 1)
        number = 0
        for group in range(meta.num_row_groups):
            rows = meta.row_group(group).num_rows
            done = 0
            batches = self.pf.iter_batches(batch_size=PARQUET_SLICE, row_groups=[group])
            try:
                for batch in batches:  # bounded: a slice at a time, not the whole group
                    for row in batch.to_pylist():
                        number += 1
                        done += 1
                        line = _parquet_row(number, row)
                        self.hasher.update(line.raw)
                        self.hasher.update(b"\n")
                        yield line
            except Exception as exc:  # a corrupt page: every row of it not read is one reject
                reason = f"row group {group} cannot be decoded ({one_line(exc)})"
                self.hasher.update(f"\x00{reason}\n".encode())
                for _ in range(rows - done):
                    number += 1
                    yield Line(number, b"", None, reason)
            if progress:
                progress(int(rows * per_row))
