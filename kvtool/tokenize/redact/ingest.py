"""A redacted ingest: logs in, no prompt text out (docs/redaction.md).

The files are ingested with the normal ingest code into an in-memory DuckDB that never spills to
disk, tokenized there with the normal tokenize pass (the same mode choice and check as an
unredacted run, and the database's stored decision when it has one, so the chains are the ones
an unredacted ingest would write), fingerprinted while the text is in memory, and then copied to
the database file: files (``redacted``), requests, chains, blocks, template errors and rejects
(without the raw line, reasons reduced to their class), and the fingerprints. ``contents`` never
leaves memory, so no prompt text is ever written to the file, not even transiently (DuckDB does
not zero freed pages, and its write-ahead log holds what was inserted).

Invariants: one redacted ingest is one transaction on the file and one *batch*; ids are those the
file would have given (in-memory ids continue the file's); a file already in the database and a
request id already ingested are handled as an unredacted ingest handles them. Memory grows with
the distinct content of one ingest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa

from kvtool.errors import InputError
from kvtool.ingest import DEFAULT_MAX_LINE_BYTES, FileReport, ingest_paths
from kvtool.ingest.writer import duplicate_reason
from kvtool.progress import Progress
from kvtool.store import Connection, atomic, next_id
from kvtool.store.files import (
    FileRow,
    Reject,
    file_rows,
    find_file,
    first_seen,
    insert_file,
    insert_rejects,
    insert_requests,
    request_kinds,
)
from kvtool.store.fingerprints import (
    MessageFp,
    ToolFp,
    add_redactions,
    delete_file,
    drop_requests,
    drop_seed,
    explicit_ids,
    file_chains,
    file_rejects,
    file_requests,
    files_with_text,
    insert_fingerprints,
    insert_prefix_pairs,
    new_batch,
    redaction_signatures,
    redaction_spec,
    staging_db,
    stored_pieces,
    template_failures,
    text_files,
)
from kvtool.store.requests import (
    PromptRow,
    RequestRow,
    content_keys,
    load_contents,
    request_rows,
)
from kvtool.store.tokenizations import (
    block_nodes,
    get_tokenization,
    put_tokenization,
    write_chains,
    write_render_failures,
)
from kvtool.tokenize.chains import TokenizeReport, tokenize_requests, tokenizer_signature
from kvtool.tokenize.loader import TokenizerBundle, load_tokenizer
from kvtool.tokenize.plans import Plan, PromptTokens, encode_pieces, request_plans
from kvtool.tokenize.redact.elements import (
    Texts,
    digest,
    head_text,
    message_fp,
    n_system,
    text_id,
    tool_fp,
)
from kvtool.tokenize.redact.heads import head_table
from kvtool.tokenize.redact.prefixes import prefix_pairs, sequence_key

BATCH = 5_000  # requests fingerprinted per content load
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def redacted_reason(reason: str) -> str:
    """A reject reason or template message reduced to its class: no quoted values, indexes,
    parentheses or details after a colon (what an ingest report already shows)."""
    head = reason.split(": ")[0]
    head = _QUOTED.sub("…", head)
    head = re.sub(r"\s*\([^)]*\)", "", head)
    return re.sub(r"\[\d+\]", "[i]", head)


@dataclass
class RedactReport:
    """What one redacted ingest did: a report per file (as ``ingest_paths`` gives them), the
    in-memory tokenize pass (None when nothing new needed one), and the tokenizer's signature and
    spec. ``ingest_logs`` without redaction gives only ``files``."""

    files: list[FileReport]
    tokenize: TokenizeReport | None
    signature: str | None
    spec: str | None = None


def check_not_mixed(con: Connection, redact: bool) -> None:
    """``InputError`` when ingesting (``redact`` or not) would mix redacted files and files with
    prompt text in one database."""
    if redact:
        n = text_files(con)
        if n:
            raise InputError(
                f"cannot redact into this database: it already holds prompt text ({n} files "
                "ingested without redaction); use another database for redacted logs"
            )
    elif redaction_signatures(con):
        raise InputError(
            "the database is redacted (no prompt text): add logs to it with redaction too "
            "(redact, --redact), or use another database"
        )


def check_tokenizer(con: Connection, signature: str, spec: str) -> None:
    """``InputError`` when the database was redacted at ingest with another tokenizer."""
    stored = redaction_signatures(con)
    if stored and signature not in stored:
        raise InputError(
            f"redacted at ingest with tokenizer {redaction_spec(con) or stored[0]}; "
            f"re-ingest to use {spec}"
        )


def ingest_logs(
    con: Connection,
    paths: list[str | Path],
    *,
    redact: bool,
    tokenizer: str | None,
    fmt: str | None,
    hash_block_size: int,
    progress: Progress,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> RedactReport:
    """``ingest_paths``, or with ``redact`` ``redact_ingest`` with ``tokenizer`` (None: the one
    the database was redacted with, else the default); ``InputError`` first when this ingest
    would mix redacted and unredacted files."""
    check_not_mixed(con, redact)
    if not redact:
        reports = ingest_paths(
            con,
            paths,
            fmt=fmt,
            hash_block_size=hash_block_size,
            max_line_bytes=max_line_bytes,
            progress=progress,
        )
        return RedactReport(reports, None, None)
    bundle = load_tokenizer(tokenizer if tokenizer is not None else redaction_spec(con))
    return redact_ingest(
        con,
        paths,
        bundle,
        fmt=fmt,
        hash_block_size=hash_block_size,
        max_line_bytes=max_line_bytes,
        progress=progress,
    )


def redact_ingest(
    con: Connection,
    paths: list[str | Path],
    bundle: TokenizerBundle,
    *,
    fmt: str | None,
    hash_block_size: int,
    progress: Progress,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> RedactReport:
    """Ingest ``paths`` into ``con`` without prompt text (see the module docstring).
    ``InputError`` when the database holds prompt text or was redacted with another tokenizer,
    and for what an ingest refuses (reasons without quoted input)."""
    signature = tokenizer_signature(bundle)
    check_not_mixed(con, redact=True)
    check_tokenizer(con, signature, bundle.spec)
    mem = staging_db(next_id(con, "files", "file_id"), next_id(con, "requests", "req_id"))
    try:
        try:
            reports = ingest_paths(
                mem,
                paths,
                fmt=fmt,
                hash_block_size=hash_block_size,
                max_line_bytes=max_line_bytes,
                progress=progress,
            )
        except InputError as exc:
            raise InputError(_QUOTED.sub("…", str(exc))) from None
        drop_seed(mem)
        reports = _drop_known(con, mem, reports)
        file_ids = sorted({r.file_id for r in reports if not r.skipped})
        stored = get_tokenization(con, signature)
        if stored is not None:
            put_tokenization(mem, stored)
        tok = None
        texty = bool(file_ids) and bool(request_kinds(mem, file_ids) - {"hash"})
        if texty:
            progress.stage("tokenize", None)
            tok = tokenize_requests(
                mem, bundle, file_ids, progress=lambda d, t: progress.update(d, t)
            )
            tok.template_error_examples = [
                replace(f, message=redacted_reason(f.message)) for f in tok.template_error_examples
            ]
        progress.stage("redact", None)
        with atomic(con):
            batch = new_batch(con)
            if texty:
                assert tok is not None
                _fingerprint(con, mem, bundle, signature, tok.mode, batch)
            _copy(con, mem, file_ids, signature, batch, texty)
        return RedactReport(reports, tok, signature, bundle.spec)
    finally:
        mem.close()


def _drop_known(con: Connection, mem: Connection, reports: list[FileReport]) -> list[FileReport]:
    """Files the database already holds become ``already_ingested`` reports; requests whose id
    the database already holds become rejects (as an unredacted ingest would have it)."""
    out = []
    for report in reports:
        if report.skipped:
            out.append(report)
            continue
        (row,) = file_rows(mem, [report.file_id])
        known = find_file(con, row.digest)
        if known is not None:
            delete_file(mem, report.file_id)
            out.append(FileReport.already_ingested(report.path, known))
            continue
        out.append(_drop_known_ids(con, mem, report, row))
    return out


def _drop_known_ids(
    con: Connection, mem: Connection, report: FileReport, row: FileRow
) -> FileReport:
    rows = explicit_ids(mem, row.file_id)
    seen = first_seen(con, [r.request_id for r in rows]) if rows else {}
    dupes = [r for r in rows if r.request_id in seen]
    if not dupes:
        return report
    why = {d.req_id: duplicate_reason(d.request_id, seen[d.request_id]) for d in dupes}
    insert_rejects(
        mem, [Reject(row.file_id, row.path, d.line, why[d.req_id], None, d.item) for d in dupes]
    )
    drop_requests(mem, row.file_id, [d.req_id for d in dupes])
    reasons = dict(report.reasons)
    for d in dupes:
        short = redacted_reason(why[d.req_id])
        reasons[short] = reasons.get(short, 0) + 1
    return replace(
        report,
        requests=report.requests - len(dupes),
        rejected=report.rejected + len(dupes),
        reasons=reasons,
    )


class _Fingerprints:
    """Fingerprints of one staged batch, each distinct element, text, head and piece once."""

    def __init__(self, bundle: TokenizerBundle, mode: str):
        self.mode = mode
        self.tokens = PromptTokens(bundle, mode)
        self.texts = Texts(tuple(bundle.added_tokens))
        self.messages: dict[int, MessageFp] = {}  # content key -> fingerprint
        self.catalogs: dict[int, list[ToolFp]] = {}  # tools content key -> fingerprints
        self.heads: dict[tuple, tuple[str, int]] = {}  # head ident -> (text, id)
        self.pieces: dict[int, np.ndarray] = {}  # piece key -> token ids
        self.piece_keys: dict[int, int] = {}  # piece id (of ``tokens.pieces``) -> key
        self.prompts: dict[str, dict[int, np.ndarray]] = {"text": {}, "ids": {}}
        self.prompt_ids: dict[str, dict[int, int]] = {"text": {}, "ids": {}}  # key -> text id
        self.seen_prompts: set[int] = set()

    def head(self, row: PromptRow, msgs: list | None, tools: object, prompt: object) -> int:
        n = n_system(msgs) if msgs is not None else 0
        ident = (row.model, row.tools_key, row.prompt_key, row.message_keys[:n])
        found = self.heads.get(ident)
        if found is None:
            text = head_text(row.model, msgs, tools, prompt)
            found = self.heads[ident] = (text, text_id(text))
        return found[1]

    def message(self, key: int, msg: dict) -> int:
        found = self.messages.get(key)
        if found is None:
            found = self.messages[key] = message_fp(msg, self.texts)
        return found.fp

    def catalog(self, key: int, tools: object) -> list[int]:
        found = self.catalogs.get(key)
        if found is None:
            items = tools if isinstance(tools, list) else []
            found = self.catalogs[key] = [tool_fp(t, self.texts) for t in items]
        return [t.fp for t in found]

    def prompt(self, prompt: str | list) -> int:
        listed = isinstance(prompt, list)
        kind = "ids" if listed else "text"
        pid = digest(orjson.dumps(prompt)) if listed else self.texts.add(prompt)
        if pid not in self.seen_prompts:
            self.seen_prompts.add(pid)
            seq = (
                np.asarray(prompt, np.int64)
                if listed
                else np.frombuffer(prompt.encode("utf-32-le", "surrogatepass"), "<u4")
            )
            key = sequence_key(seq)
            self.prompts[kind][key] = seq
            self.prompt_ids[kind][key] = pid
        return pid

    def piece_list(self, plan: Plan) -> tuple[list[int], list[int]]:
        """(piece keys, end offsets) of a plan's pieces and tail."""
        keys, ends, end = [], [], 0
        for p in [*plan.pieces, *plan.tail]:
            seq = self.tokens.pieces.tokens(p)
            key = self.piece_keys.get(p)
            if key is None:
                key = self.piece_keys[p] = sequence_key(seq)
                self.pieces.setdefault(key, seq)
            end += len(seq)
            keys.append(key)
            ends.append(end)
        return keys, ends

    def rows(self, chunk: list[RequestRow], bodies: dict, signature: str, batch: int) -> list:
        """One ``fp_requests`` row per request of ``chunk``."""
        # pieces are one per element with the default template, and a completion is one piece;
        # each request is planned alone (a fresh conversation set: whole piece lists, no resume)
        t, pieces = self.tokens.template, self.tokens.pieces
        plans = {
            r.req_id: request_plans([r.prompt], bodies, t, pieces, self.mode, set())[0]
            for r in chunk
            if self.mode == "pieces" or r.kind == "completion"
        }
        encode_pieces(self.tokens.pieces)
        out = []
        for row in chunk:
            plan = plans.get(row.req_id)
            prow = row.prompt
            msgs = [bodies[k] for k in prow.message_keys] if prow.kind == "chat" else None
            tools = bodies[prow.tools_key] if prow.tools_key is not None else None
            prompt = bodies[prow.prompt_key] if prow.prompt_key is not None else None
            fps = None
            if msgs is not None:
                fps = [self.message(k, m) for k, m in zip(prow.message_keys, msgs, strict=True)]
            tfps = None if prow.tools_key is None else self.catalog(prow.tools_key, tools)
            pid = None if prompt is None else self.prompt(prompt)
            piece_fps = piece_ends = None
            if plan is not None:
                piece_fps, piece_ends = self.piece_list(plan)
                # what ``PromptTokens`` gives in this mode: the head piece, all but the tail
                end = piece_ends[len(plan.pieces) - 1] if plan.pieces else 0
                head_end = piece_ends[0] if prow.kind == "chat" and plan.pieces else 0
            else:
                ids = self.tokens.get(prow, bodies)
                end, head_end = ids.end, ids.head_end
            out.append(
                (
                    prow.req_id, signature, batch, self.head(prow, msgs, tools, prompt),
                    n_system(msgs) if msgs is not None else 0,
                    fps, tfps, pid, isinstance(prompt, list), head_end, end, piece_fps,
                    piece_ends,
                )
            )  # fmt: skip
        return out


def _fingerprint(
    con: Connection, mem: Connection, bundle: TokenizerBundle, signature: str, mode: str, batch: int
) -> None:
    """Fingerprint every request of ``mem`` with a chain for ``signature`` into ``con``."""
    rows = request_rows(mem, signature)
    fp = _Fingerprints(bundle, mode)
    out: list[tuple] = []
    for start in range(0, len(rows), BATCH):
        chunk = rows[start : start + BATCH]
        bodies = load_contents(mem, content_keys(r.prompt for r in chunk))
        out += fp.rows(chunk, bodies, signature, batch)
    tool_rows = {t.fp: t for tools in fp.catalogs.values() for t in tools}
    message_rows = {m.fp: m for m in fp.messages.values()}
    _write(con, out, message_rows, tool_rows, fp.texts)
    insert_fingerprints(con, "fp_heads", head_table(batch, {t for t, _ in fp.heads.values()}))
    known = stored_pieces(con, signature)
    insert_prefix_pairs(con, signature, prefix_pairs("piece", fp.pieces, known))
    for kind in ("text", "ids"):
        insert_prefix_pairs(
            con, signature, prefix_pairs(kind, fp.prompts[kind], ids=fp.prompt_ids[kind])
        )


_REQUEST_FP = pa.schema(
    [
        ("req_id", pa.int64()),
        ("tokenizer", pa.string()),
        ("batch", pa.int32()),
        ("head", pa.int64()),
        ("n_system", pa.int32()),
        ("messages", pa.list_(pa.int64())),
        ("tools", pa.list_(pa.int64())),
        ("prompt", pa.int64()),
        ("prompt_ids", pa.bool_()),
        ("head_end", pa.int64()),
        ("end_tokens", pa.int64()),
        ("piece_fps", pa.list_(pa.int64())),
        ("piece_ends", pa.list_(pa.int64())),
    ]
)


_INTS = pa.list_(pa.int64())
_MESSAGE_FP = pa.schema(
    [
        ("fp", pa.int64()),
        ("role", pa.string()),
        ("content", pa.int64()),
        ("call_names", _INTS),
        ("call_args", _INTS),
        ("call_json", _INTS),
    ]
)
_TOOL_FP = pa.schema([("fp", pa.int64()), ("name", pa.int64()), ("tree", pa.string())])
_TEXT_FP = pa.schema(
    [
        ("id", pa.int64()),
        ("length", pa.int64()),
        ("fold", pa.int64()),
        ("fold_plain", pa.int64()),
        ("cuts", _INTS),
        ("prefixes", _INTS),
        ("timestamps", _INTS),
        ("ids", _INTS),
        ("json", _INTS),
        ("json_hashes", _INTS),
    ]
)


def _table(rows: list[tuple], schema: pa.Schema) -> pa.Table:
    """``rows`` (one tuple per row, in the schema's column order) as a table of ``schema``."""
    cols = list(zip(*rows, strict=True)) if rows else [[] for _ in schema]
    return pa.Table.from_arrays(
        [pa.array(c, f.type) for c, f in zip(cols, schema, strict=True)], schema=schema
    )


def _flat(pairs: tuple) -> list[int]:
    return [v for pair in pairs for v in pair]


def _write(
    con: Connection, out: list[tuple], message_rows: dict, tool_rows: dict, texts: Texts
) -> None:
    insert_fingerprints(con, "fp_requests", _table(out, _REQUEST_FP))
    messages = [
        (m.fp, m.role, m.content, list(m.call_names), list(m.call_args), list(m.call_json))
        for m in message_rows.values()
    ]
    insert_fingerprints(con, "fp_messages", _table(messages, _MESSAGE_FP))
    tools = [(t.fp, t.name, orjson.dumps(t.tree).decode()) for t in tool_rows.values()]
    insert_fingerprints(con, "fp_tools", _table(tools, _TOOL_FP))
    text_rows = [
        (r.id, r.length, r.fold, r.fold_plain, list(r.cuts), list(r.prefixes), _flat(r.timestamps),
         _flat(r.ids), _flat(r.json), list(r.json_hashes))
        for r in texts.rows.values()
    ]  # fmt: skip
    insert_fingerprints(con, "fp_texts", _table(text_rows, _TEXT_FP))


def _copy(
    con: Connection, mem: Connection, file_ids: list[int], signature: str, batch: int, texty: bool
) -> None:
    """Everything of ``file_ids`` but text, from ``mem`` to ``con``."""
    if not file_ids:
        return
    for row in file_rows(mem, file_ids):
        insert_file(con, replace(row, redacted=True))
    insert_requests(con, file_requests(mem, file_ids))
    rejects = file_rejects(mem, file_ids)
    if rejects:
        insert_rejects(
            con, [replace(r, reason=redacted_reason(r.reason), raw=None) for r in rejects]
        )
    if not texty:
        return
    decided = get_tokenization(mem, signature)
    if decided is not None:
        put_tokenization(con, decided)
    write_chains(con, signature, file_chains(mem, signature, file_ids), block_nodes(mem, signature))
    failures = template_failures(mem, signature)
    write_render_failures(
        con, signature, [replace(f, message=redacted_reason(f.message)) for f in failures]
    )
    add_redactions(con, files_with_text(mem, file_ids), signature, batch)
