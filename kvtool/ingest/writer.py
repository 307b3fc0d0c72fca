"""Ingest files into the store: detect, normalize, deduplicate content, record rejects.

Invariants:
- each input is opened and read once, as a stream (``reader.open_input``); its identity is
  computed from exactly what was read and known only at the end;
- a file whose content was ingested before (under any path, compression or line endings) adds
  nothing: the transaction is rolled back and the report says ``already_ingested``;
- each file is ingested in one transaction, so a failure leaves no partial file behind; a file
  whose every non-blank line is rejected (not as a duplicate id) raises ``InputError`` and is
  not recorded, so a run with the wrong ``fmt`` or ``hash_block_size`` does not poison it;
- a file whose records are mostly rejected (more than half of those that are not blank lines;
  a duplicate id or a skipped record is not a reject here) is ingested with a ``warning`` in
  its ``FileReport`` naming the count, the commonest reason and the first rejected line (the
  command line prints it and exits 2);
- every input record becomes exactly one ``requests`` row or one ``rejects`` row (rejected or
  skipped); a line is one record, except in formats whose lines hold batches (OTLP), where
  ``item`` numbers the records of a line and a line that cannot be split is one rejected record;
- message, tool-catalog and prompt bodies are stored once per distinct content key.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import orjson
import pyarrow as pa
import xxhash

from kvtool import heap
from kvtool.errors import InputError
from kvtool.ingest.formats import Normalized, Skip, check_message
from kvtool.ingest.formats.registry import (
    FORMATS,
    REGISTRY,
    check_choice,
    check_ingest_options,
    detect_format,
    normalizer,
)
from kvtool.ingest.paths import expand_paths
from kvtool.ingest.reader import (
    DEFAULT_MAX_LINE_BYTES,
    STDIN,
    InputStream,
    check_max_line_bytes,
    open_input,
)
from kvtool.progress import Progress
from kvtool.store import as_bigint, atomic, next_id
from kvtool.store.files import (
    FileRow,
    Reject,
    find_file,
    first_seen,
    insert_contents,
    insert_file,
    insert_rejects,
    insert_requests,
    set_synthetic_ids,
)
from kvtool.store.parquet import is_url

PENDING = "\x00pending:"  # synthetic ids until the file's identity is known
BATCH = 1024  # rows buffered per flush; bounds memory, raw lines are kept until then
RECENT_CONVERSATIONS = 128  # message lists kept to skip re-serializing resent history


def content_key(data: bytes) -> int:
    """Signed 64-bit content key (xxh3-64) of serialized content, as DuckDB BIGINT stores it."""
    return as_bigint(xxhash.xxh3_64_intdigest(data))


def serializes_alike(a: dict, b: dict) -> bool:
    """Whether ``a`` and ``b`` are flat messages that serialize to the same bytes: the same keys
    in the same order, each value None in both or an equal str in both. False (serialize it)
    for anything nested or numeric (``1 == 1.0 == True`` in Python, not in JSON)."""
    if len(a) != len(b):
        return False
    for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True):
        if ka != kb:
            return False
        if va is None:
            if vb is not None:
                return False
        elif type(va) is not str or type(vb) is not str or va != vb:
            return False
    return True


def duplicate_reason(rid: str, where: str) -> str:
    """The reject reason of a request id seen before, first ``where`` ('line N' of the same file,
    else the earlier file and line)."""
    return f"duplicate request id {rid[:60]!r} (first at {where})"


def reason_class(reason: str) -> str:
    """A reject reason without its specifics (quoted values, indexes, parentheses, details after
    a colon)."""
    head = reason.split(": ")[0]
    head = re.sub(r"'[^']*'|\"[^\"]*\"", "…", head)
    head = re.sub(r"\s*\([^)]*\)", "", head)
    return re.sub(r"\[\d+\]", "[i]", head)


@dataclass
class FileReport:
    """What ingesting one file did. ``skipped`` is set when the same bytes were ingested before;
    ``warning`` (one line: file, count, commonest reason, first rejected line) when more than
    half of its records were rejected."""

    path: str
    file_id: int
    format: str
    lines: int = 0
    requests: int = 0
    rejected: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    skipped: bool = False
    records: int | None = None
    out_of_scope: int = 0
    out_of_scope_reasons: dict[str, int] = field(default_factory=dict)
    warning: str | None = None

    @classmethod
    def already_ingested(cls, path: str, known: FileRow) -> FileReport:
        """The report of a file whose bytes the database already holds as ``known``."""
        return cls(
            path,
            known.file_id,
            known.format,
            known.lines,
            known.requests,
            known.rejected,
            skipped=True,
            records=known.records,
            out_of_scope=known.skipped,
        )

    def to_json(self) -> dict:
        return {
            "path": self.path,
            "file_id": self.file_id,
            "format": self.format,
            "lines": self.lines,
            "records": self.lines if self.records is None else self.records,
            "requests": self.requests,
            "rejected": self.rejected,
            "reject_reasons": self.reasons,
            "skipped": self.out_of_scope,
            "skip_reasons": self.out_of_scope_reasons,
            "already_ingested": self.skipped,
            "warning": self.warning,
        }


_REQUEST_SCHEMA = pa.schema(
    [
        ("req_id", pa.int64()),
        ("file_id", pa.int32()),
        ("line", pa.int64()),
        ("request_id", pa.string()),
        ("ts", pa.float64()),
        ("session_id", pa.string()),
        ("tenant", pa.string()),
        ("model", pa.string()),
        ("kind", pa.string()),
        ("message_keys", pa.list_(pa.int64())),
        ("tools_key", pa.int64()),
        ("prompt_key", pa.int64()),
        ("hash_ids", pa.list_(pa.int64())),
        ("input_length", pa.int64()),
        ("output_tokens", pa.int64()),
        ("observed_prompt_tokens", pa.int64()),
        ("observed_cached_tokens", pa.int64()),
        ("synthetic_id", pa.bool_()),
        ("item", pa.int32()),
        ("cache_write_tokens", pa.int64()),
        ("cache_control", pa.string()),
        ("truncated", pa.bool_()),
        ("incomplete", pa.string()),
        ("end_user", pa.string()),
        ("cache_key", pa.string()),
    ]
)
_SYNTHETIC = 16  # index of the synthetic-id flag in a buffered row (after line and raw)


@dataclass(frozen=True)
class _Rejected:
    """A file whose records are mostly rejected: one line saying so; ``every``: all of them."""

    text: str
    every: bool


class _FileWriter:
    """Buffers one file's requests, contents and rejects and flushes them in Arrow batches."""

    def __init__(self, con: duckdb.DuckDBPyConnection, file_id: int, path: str):
        self.con = con
        self.file_id = file_id
        self.path = path
        self.next_req = next_id(con, "requests", "req_id")
        self.rows: list[tuple] = []
        self.lines_of: dict[str, int] = {}
        self.contents: dict[int, tuple[str, str]] = {}
        self.known_keys: set[int] = set()
        # (first key, second key) -> the last valid message list of that conversation and its
        # keys, least recently used first
        self.recent: OrderedDict[tuple[int, int], tuple[list[dict], list[int]]] = OrderedDict()
        self.rejects: list[Reject] = []
        self.report_reasons: dict[str, int] = {}
        self.requests = 0
        self.skips = 0
        self.skip_reasons: dict[str, int] = {}
        self.duplicates = 0  # rejects for an id seen before: the content is not unusable
        self.blank = 0
        self.bad: dict[str, int] = {}  # rejects that are neither blank nor duplicate, by class
        self.first_reject: tuple[int, str] | None = None  # (line, reason) of the earliest

    def _key(self, kind: str, value: object) -> int:
        data = orjson.dumps(value)
        key = content_key(data)
        if key not in self.known_keys:
            self.known_keys.add(key)
            self.contents[key] = (kind, data.decode())
        return key

    def _message_keys(self, rec: Normalized) -> list[int]:
        """Content keys of the messages; a message not seen before is checked first (when the
        normalizer left that to us) and queued for storage only if the whole list is valid.
        History resent by a later request of a conversation (same first two messages) is not
        serialized again: a message that ``serializes_alike`` the one at its index in the
        conversation's last valid list gets that one's key."""
        keys: list[int] = []
        new: dict[int, bytes] = {}
        messages = rec.messages or []
        prev: list[dict] = []
        prev_keys: list[int] = []
        for i, msg in enumerate(messages):
            if i < len(prev) and serializes_alike(msg, prev[i]):
                keys.append(prev_keys[i])  # stored with that earlier valid list
                continue
            data = orjson.dumps(msg)
            key = content_key(data)
            if key not in self.known_keys and key not in new:
                if not rec.messages_checked:
                    check_message(msg, i)
                new[key] = data
            keys.append(key)
            if i == 1:
                prev, prev_keys = self.recent.get((keys[0], key), ([], []))
        if len(keys) >= 2:
            self.recent[(keys[0], keys[1])] = (messages, keys)
            self.recent.move_to_end((keys[0], keys[1]))
            if len(self.recent) > RECENT_CONVERSATIONS:
                self.recent.popitem(last=False)
        for key, data in new.items():
            self.known_keys.add(key)
            self.contents[key] = ("message", data.decode())
        return keys

    def reject(
        self, line: int, reason: str, raw: bytes, duplicate: bool = False, item: int = 0
    ) -> None:
        short = reason_class(reason)
        if duplicate:
            self.duplicates += 1
        elif reason == "blank line":
            self.blank += 1
        else:
            self.bad[short] = self.bad.get(short, 0) + 1
            if self.first_reject is None or line < self.first_reject[0]:
                self.first_reject = (line, reason)
        text = raw.decode("utf-8", errors="backslashreplace")
        self.rejects.append(Reject(self.file_id, self.path, line, reason, text, item))
        self.report_reasons[short] = self.report_reasons.get(short, 0) + 1

    def mostly_rejected(self, records: int) -> _Rejected | None:
        """What was rejected when more than half of the ``records`` that are not blank lines
        were (duplicates and skips are not rejects here); None otherwise."""
        bad = sum(self.bad.values())
        if self.first_reject is None or 2 * bad <= records - self.blank:
            return None
        line, reason = self.first_reject
        first = f"first: line {line}: {_shown(reason)}"
        if self.requests == 0 and self.duplicates == 0 and self.skips == 0:
            return _Rejected(f"every line was rejected, nothing ingested ({first})", every=True)
        common, count = max(self.bad.items(), key=lambda kv: kv[1])
        return _Rejected(
            f"{bad:,} of {records - self.blank:,} records rejected "
            f"(commonest: {_shown(common)} ×{count:,}; {first})",
            every=False,
        )

    def skip(self, line: int, item: int, reason: str, raw: bytes) -> None:
        """A valid record outside the format's scope: kept as a skipped row, not an error."""
        self.skips += 1
        text = raw.decode("utf-8", errors="backslashreplace")
        self.rejects.append(Reject(self.file_id, self.path, line, reason, text, item, True))
        short = reason_class(reason)
        self.skip_reasons[short] = self.skip_reasons.get(short, 0) + 1

    def add(self, line: int, raw: bytes, rec: Normalized, item: int = 0) -> None:
        # a synthetic id needs the file's identity, known at the end: a placeholder until then
        if rec.request_id is not None:
            rid = rec.request_id
        else:
            rid = f"{PENDING}{line}" if item == 0 else f"{PENDING}{line}.{item}"
        first = self.lines_of.get(rid)
        if first is not None:
            reason = duplicate_reason(rid, f"line {first}")
            self.reject(line, reason, raw, duplicate=True, item=item)
            return
        message_keys = tools_key = prompt_key = None
        if rec.messages is not None:
            try:
                message_keys = self._message_keys(rec)
            except InputError as exc:  # a bad record: rejected
                self.reject(line, str(exc), raw, item=item)
                return
        self.lines_of[rid] = line
        if rec.tools is not None:
            tools_key = self._key("tools", rec.tools)
        if rec.prompt is not None:
            prompt_key = self._key("prompt", rec.prompt)
        self.rows.append(
            (
                line,
                raw,
                rid,
                rec.ts,
                rec.session_id,
                rec.tenant,
                rec.model,
                rec.kind,
                message_keys,
                tools_key,
                prompt_key,
                rec.hash_ids,
                rec.input_length,
                rec.output_tokens,
                rec.observed_prompt_tokens,
                rec.observed_cached_tokens,
                rec.request_id is None,
                item,
                rec.cache_write_tokens,
                orjson.dumps(rec.cache_control).decode() if rec.cache_control else None,
                rec.truncated,
                rec.incomplete,
                rec.end_user,
                rec.cache_key,
            )
        )
        if len(self.rows) >= BATCH:
            self.flush()

    def _drop_known_ids(self) -> None:
        """Reject rows whose explicit request id an earlier file already ingested."""
        dupes = first_seen(self.con, [r[2] for r in self.rows if not r[_SYNTHETIC]])
        if not dupes:
            return
        kept = []
        for row in self.rows:
            where = dupes.get(row[2])
            if where is None:
                kept.append(row)
            else:
                reason = duplicate_reason(row[2], where)
                self.reject(row[0], reason, row[1], duplicate=True, item=row[_SYNTHETIC + 1])
        self.rows = kept

    def flush(self) -> None:
        if self.rows:
            self._drop_known_ids()
        if self.rows:
            cols = list(zip(*self.rows, strict=True))
            n = len(self.rows)
            table = pa.Table.from_arrays(
                [
                    pa.array(range(self.next_req, self.next_req + n), pa.int64()),
                    pa.array([self.file_id] * n, pa.int32()),
                    pa.array(cols[0], pa.int64()),
                    *[
                        pa.array(col, type=_REQUEST_SCHEMA.field(i + 3).type)
                        for i, col in enumerate(cols[2:])
                    ],
                ],
                schema=_REQUEST_SCHEMA,
            )
            insert_requests(self.con, table)
            self.next_req += n
            self.requests += n
            self.rows = []
        if self.contents:
            keys = list(self.contents)
            table = pa.table(
                {
                    "key": pa.array(keys, pa.int64()),
                    "kind": [self.contents[k][0] for k in keys],
                    "body": [self.contents[k][1] for k in keys],
                }
            )
            insert_contents(self.con, table)
            self.contents = {}
        if self.rejects:
            insert_rejects(self.con, self.rejects)
            self.rejects = []


def _shown(text: str) -> str:
    """``text`` on one line: control and other unprintable characters escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _choose_format(
    stream: InputStream, fmt: str | None, hash_block_size: int, source: Path | None
) -> str:
    head = stream.sample()
    parsed = [line.parsed for line in head if line.error is None]
    nonblank = [line for line in head if line.error != "blank line"]
    if nonblank and not parsed:
        first = nonblank[0]
        what = {"csv": "readable CSV", "parquet": "readable Parquet"}.get(stream.kind, "JSON Lines")
        raise InputError(f"{stream.name}:{first.number}: not {what} ({first.error})")
    if fmt is not None:
        check_choice(stream.name, fmt, parsed, hash_block_size, source)
        return fmt
    if not head:
        return "openai-chat"  # an empty file: nothing to detect, nothing to ingest
    found = detect_format(parsed)
    if found is None:
        raise InputError(
            f"{stream.name}: no known request format in the first {len(head)} lines "
            f"(expected one of {', '.join(FORMATS)}; name the format with fmt)"
        )
    return found


def _write_line(
    writer: _FileWriter,
    line_number: int,
    raw: bytes,
    parsed: dict,
    normalize: Callable[[dict], Normalized],
    split: Callable[[dict], Iterable[dict]] | None,
) -> int:
    """Normalize and buffer the records of one parsed line; returns how many it held."""
    if split is None:
        subs: list[dict] = [parsed]
    else:
        try:
            subs = list(split(parsed))
        except InputError as exc:  # the batch itself is malformed: one rejected record
            writer.reject(line_number, str(exc), raw)
            return 1
    for item, sub in enumerate(subs):
        sub_raw = raw if split is None else orjson.dumps(sub, default=str)
        try:
            rec = normalize(sub)
        except Skip as why:
            writer.skip(line_number, item, str(why), sub_raw)
            continue
        except InputError as exc:  # a bad record: rejected
            writer.reject(line_number, str(exc), sub_raw, item=item)
            continue
        writer.add(line_number, sub_raw, rec, item)
    return len(subs)


class _AlreadyIngested(Exception):
    """Raised inside the transaction to roll back a file whose identity is already stored."""

    def __init__(self, known: FileRow) -> None:
        self.known = known


def path_text(path: Path) -> str:
    """A path as valid UTF-8 text: bytes of the file name that are not UTF-8 (the OS hands them
    over as surrogate escapes) are written as ``\\xNN``, so the name can be stored and printed."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def ingest_file(
    con: duckdb.DuckDBPyConnection,
    path: Path | str,
    *,
    fmt: str | None = None,
    hash_block_size: int = 512,
    progress: Callable[[int], None] | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    name: str | None = None,
) -> FileReport:
    """Ingest one file, or stdin for a path of ``-``, or an object-store URL given as a string
    (``s3://...``: read through ``pyarrow.fs``) (see the module invariants).
    ``InputError`` for unreadable input or a file whose every line is rejected, ``OptionError``
    for an unknown ``fmt`` or a ``hash_block_size`` / ``max_line_bytes`` that is not positive.
    ``name``: the path stored and reported for the file (default: ``path`` as given)."""
    check_ingest_options(fmt, hash_block_size)
    check_max_line_bytes(max_line_bytes)
    with open_input(path, max_line_bytes=max_line_bytes, progress=progress) as stream:
        url = is_url(path)
        source = None if str(path) == STDIN or url else Path(path)
        chosen = _choose_format(stream, fmt, hash_block_size, source)
        normalize = normalizer(chosen, hash_block_size, source)
        split = REGISTRY[chosen].records
        if name is None:
            name = stream.name if str(path) == STDIN or url else path_text(Path(path))
        try:
            with atomic(con):
                file_id = next_id(con, "files", "file_id")
                writer = _FileWriter(con, file_id, name)
                lines = records = 0
                for line in stream.lines():
                    lines += 1
                    if line.error is not None:
                        writer.reject(line.number, line.error, line.raw)
                        records += 1
                        continue
                    if not isinstance(line.parsed, dict):
                        writer.reject(line.number, "record is not a JSON object", line.raw)
                        records += 1
                        continue
                    records += _write_line(
                        writer, line.number, line.raw, line.parsed, normalize, split
                    )
                writer.flush()
                digest = stream.digest
                known = find_file(con, digest)
                if known is not None:
                    raise _AlreadyIngested(known)
                mostly = writer.mostly_rejected(records)
                if mostly is not None and mostly.every:
                    raise InputError(f"{name}: {mostly.text}")
                set_synthetic_ids(con, file_id, PENDING, digest[:12])
                rejected = sum(writer.report_reasons.values())
                insert_file(
                    con,
                    FileRow(
                        file_id=file_id,
                        path=name,
                        digest=digest,
                        bytes=stream.bytes_read,
                        format=chosen,
                        hash_block_size=hash_block_size if REGISTRY[chosen].hash_trace else None,
                        lines=lines,
                        requests=writer.requests,
                        rejected=rejected,
                        records=records,
                        skipped=writer.skips,
                    ),
                )
        except _AlreadyIngested as done:
            return FileReport.already_ingested(name, done.known)
    return FileReport(
        name,
        file_id,
        chosen,
        lines,
        writer.requests,
        rejected,
        writer.report_reasons,
        records=records,
        out_of_scope=writer.skips,
        out_of_scope_reasons=writer.skip_reasons,
        warning=None if mostly is None else f"{_shown(name)}: {mostly.text}",
    )


def ingest_files(
    con: duckdb.DuckDBPyConnection,
    paths: Iterable[Path | str],
    *,
    fmt: str | None = None,
    hash_block_size: int = 512,
    progress: Callable[[int], None] | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> list[FileReport]:
    """Ingest each path in turn (``-``: stdin; a directory or glob: the files it stands for,
    ``kvtool.ingest.paths``); see ``ingest_file``."""
    check_ingest_options(fmt, hash_block_size)
    check_max_line_bytes(max_line_bytes)
    reports = []
    for p in expand_paths(paths):
        reports.append(
            ingest_file(
                con,
                p,
                fmt=fmt,
                hash_block_size=hash_block_size,
                progress=progress,
                max_line_bytes=max_line_bytes,
            )
        )
        heap.trim()  # the file's parsed records: the next stage maps its arrays apart
    return reports


def ingest_paths(
    con: duckdb.DuckDBPyConnection,
    paths: Iterable[str | Path],
    *,
    fmt: str | None = None,
    hash_block_size: int = 512,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    progress: Progress,
) -> list[FileReport]:
    """``ingest_files`` as an "ingest" stage of ``progress``, sized by the bytes of the files
    the paths stand for (no total when an input is not a regular file: stdin, a FIFO)."""
    files = expand_paths(paths)
    local = [p for p in files if isinstance(p, Path)]
    sized = len(local) == len(files) and all(
        p.is_file() for p in local if p.exists() or str(p) == STDIN
    )
    progress.stage("ingest", sum(p.stat().st_size for p in local if p.is_file()) if sized else None)
    return ingest_files(
        con,
        files,
        fmt=fmt,
        hash_block_size=hash_block_size,
        progress=progress.advance,
        max_line_bytes=max_line_bytes,
    )
