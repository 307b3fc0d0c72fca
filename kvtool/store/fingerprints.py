"""Redacted databases: which files hold no prompt text (``redactions``) and the fingerprints
that stand in for it (the ``fp_*`` tables; docs/redaction.md).

Invariants:
- a database is redacted or not, never both: every file with chat or completion requests is in
  ``redactions`` (and ``files.redacted``), or none is; hash-only files may sit in either kind;
- every request of a redacted file that has a chain for the redaction's tokenizer has exactly
  one ``fp_requests`` row for it; the message, tool and text fingerprints it names are stored
  once each (by fingerprint), and every text id a message or tool names has an ``fp_texts`` row;
- a batch (one redacted ingest) has one tokenizer; ``fp_heads`` ranks the batch's distinct heads.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import orjson
import pyarrow as pa

from kvtool.errors import InputError
from kvtool.store.db import Connection, connect, id_list, next_id, one, temp_table
from kvtool.store.files import Reject
from kvtool.store.tokenizations import RenderFailure


@dataclass(frozen=True, slots=True)
class RequestFp:
    """One redacted request as break analysis sees it. ``messages`` (chat) and ``tools`` hold
    element fingerprints in render order (``tools`` None without a catalog); ``prompt`` is the
    text id of a completion prompt (``prompt_ids``: it is a token-id list). ``head`` identifies
    the head text (model, leading system messages, tools; completions: model and prompt).
    ``head_end`` / ``end``: token counts where the head and the last message end (what
    ``PromptIds`` gives). ``piece_fps`` / ``piece_ends``: the token pieces (one per element,
    default template; None in other modes) and where each ends."""

    req_id: int
    batch: int
    head: int
    n_system: int
    messages: tuple[int, ...] | None
    tools: tuple[int, ...] | None
    prompt: int | None
    prompt_ids: bool
    head_end: int
    end: int
    piece_fps: tuple[int, ...] | None
    piece_ends: tuple[int, ...] | None


@dataclass(frozen=True, slots=True)
class MessageFp:
    """A message as a template renders it: role, content text id, and per tool call the name's
    hash, the arguments' text id and the hash of the parsed arguments (equal for equal values
    written another way; None when they are not JSON)."""

    fp: int
    role: str | None
    content: int
    call_names: tuple[int, ...]
    call_args: tuple[int, ...]
    call_json: tuple[int | None, ...]


@dataclass(frozen=True, slots=True)
class ToolFp:
    """A tool of a catalog: its name's hash (None without a name) and its JSON as a tree of
    hashes (``tree``, nested lists; see ``kvtool.tokenize.redact.elements``)."""

    fp: int
    name: int | None
    tree: list


@dataclass(frozen=True, slots=True)
class TextFp:
    """What comparing a text needs, without the text: its length, the hashes of it folded
    (whitespace runs and, for ``fold``, special tokens as one space), the hash of each prefix
    ``text[:cut]`` at the ``cuts`` (span and JSON boundaries and the end, ascending), and the
    spans: ``timestamps``, ``ids`` and ``json`` as (start, end) pairs, ``json_hashes`` one
    key-order-insensitive hash per JSON value."""

    id: int
    length: int
    fold: int
    fold_plain: int
    cuts: tuple[int, ...]
    prefixes: tuple[int, ...]
    timestamps: tuple[tuple[int, int], ...]
    ids: tuple[tuple[int, int], ...]
    json: tuple[tuple[int, int], ...]
    json_hashes: tuple[int, ...]


@dataclass(frozen=True)
class HeadRanks:
    """The distinct heads of one batch: ``rank[head]`` in text order and ``rank_rev[head]`` in
    reversed-text order, ``length[head]`` in characters; ``lcp_next[r]`` is the common prefix of
    the heads ranked r and r + 1, ``lcs_next[r]`` the common suffix of those ranked r and r + 1
    in reversed order."""

    batch: int
    rank: dict[int, int]
    rank_rev: dict[int, int]
    length: dict[int, int]
    lcp_next: np.ndarray
    lcs_next: np.ndarray


def new_batch(con: Connection) -> int:
    """The number of the next redacted ingest."""
    return next_id(con, "redactions", "batch")


def redaction_signatures(con: Connection) -> list[str]:
    """The tokenizer signatures redacted files were tokenized with at ingest."""
    return [
        s for (s,) in con.execute("SELECT DISTINCT tokenizer FROM redactions ORDER BY 1").fetchall()
    ]


def redaction_spec(con: Connection) -> str | None:
    """The spec of the tokenizer a redacted database was tokenized with at ingest (None when it
    is not redacted)."""
    signatures = redaction_signatures(con)
    if not signatures:
        return None
    row = one(con, "SELECT spec FROM tokenizations WHERE signature = ?", [signatures[0]])
    return None if row is None else row[0]


def redacted_files(con: Connection, file_ids: list[int] | None = None) -> list[int]:
    """The redacted files (of ``file_ids``; all when None)."""
    where = "" if file_ids is None else f"WHERE file_id IN ({id_list(file_ids)})"
    return [
        f for (f,) in con.execute(f"SELECT file_id FROM redactions {where} ORDER BY 1").fetchall()
    ]


def text_files(con: Connection) -> int:
    """How many files hold prompt text: chat or completion requests, not redacted."""
    (n,) = one(
        con,
        """SELECT count(DISTINCT r.file_id) FROM requests r
           WHERE r.kind != 'hash'
             AND r.file_id NOT IN (SELECT file_id FROM redactions)""",
    )
    return int(n)


def add_redactions(con: Connection, file_ids: list[int], signature: str, batch: int) -> None:
    if not file_ids:
        return
    con.executemany(
        "INSERT INTO redactions VALUES (?, ?, ?)", [(f, signature, batch) for f in file_ids]
    )


_UNIQUE = {"fp_messages": "fp", "fp_tools": "fp", "fp_texts": "id"}


def insert_fingerprints(con: Connection, table: str, rows: pa.Table) -> None:
    """Append rows to one ``fp_*`` table (columns in table order); message, tool and text
    fingerprints already stored are left out."""
    if not rows.num_rows:
        return
    with temp_table(con, "_kv_fp", rows):
        key = _UNIQUE.get(table)
        if key is None:
            con.execute(f"INSERT INTO {table} SELECT * FROM _kv_fp")
        else:
            con.execute(
                f"INSERT INTO {table} SELECT DISTINCT ON ({key}) * FROM _kv_fp n "
                f"WHERE NOT EXISTS (SELECT 1 FROM {table} x WHERE x.{key} = n.{key})"
            )


@dataclass(frozen=True, slots=True)
class PrefixPair:
    """Sequence ``short`` is a proper prefix of sequence ``long``: token pieces (``kind``
    'piece', by piece fingerprint) or completion prompts ('text' or 'ids', by text id)."""

    kind: str
    short: int
    long: int


def insert_prefix_pairs(con: Connection, signature: str, pairs: set[PrefixPair]) -> None:
    """Record the pairs not recorded yet."""
    if not pairs:
        return
    rows = sorted(pairs, key=lambda p: (p.kind, p.short, p.long))
    table = pa.table(
        {
            "kind": pa.array([p.kind for p in rows], pa.string()),
            "short": pa.array([p.short for p in rows], pa.int64()),
            "long": pa.array([p.long for p in rows], pa.int64()),
        }
    )
    with temp_table(con, "_kv_pairs", table):
        con.execute(
            """INSERT INTO fp_prefixes SELECT DISTINCT ?, kind, short, long FROM _kv_pairs n
               WHERE NOT EXISTS (SELECT 1 FROM fp_prefixes x WHERE x.tokenizer = ?
                                 AND x.kind = n.kind AND x.short = n.short AND x.long = n.long)""",
            [signature, signature],
        )


def prefix_pairs(con: Connection, signature: str) -> set[PrefixPair]:
    """Every recorded prefix pair of ``signature``."""
    return {
        PrefixPair(*row)
        for row in con.execute(
            "SELECT kind, short, long FROM fp_prefixes WHERE tokenizer = ?", [signature]
        ).fetchall()
    }


def stored_pieces(con: Connection, signature: str) -> set[int]:
    """The fingerprint of every token piece stored for ``signature``."""
    rows = con.execute(
        "SELECT DISTINCT unnest(piece_fps) FROM fp_requests "
        "WHERE tokenizer = ? AND piece_fps IS NOT NULL",
        [signature],
    ).fetchall()
    return {fp for (fp,) in rows}


def _tuple(value: Iterable | None) -> tuple | None:
    return None if value is None else tuple(value)


def request_fps(con: Connection, signature: str, req_ids: list[int]) -> dict[int, RequestFp]:
    """The fingerprint rows of ``req_ids`` for ``signature``, by req_id."""
    sel = pa.table({"req_id": pa.array(req_ids, pa.int64())})
    with temp_table(con, "_kv_sel", sel):
        rows = con.execute(
            """SELECT f.req_id, f.batch, f.head, f.n_system, f.messages, f.tools, f.prompt,
                      f.prompt_ids, f.head_end, f.end_tokens, f.piece_fps, f.piece_ends
               FROM fp_requests f JOIN _kv_sel s ON s.req_id = f.req_id
               WHERE f.tokenizer = ?""",
            [signature],
        ).fetchall()
    return {
        t[0]: RequestFp(
            t[0],
            t[1],
            t[2],
            t[3],
            _tuple(t[4]),
            _tuple(t[5]),
            t[6],
            bool(t[7]),
            t[8],
            t[9],
            _tuple(t[10]),
            _tuple(t[11]),
        )  # fmt: skip
        for t in rows
    }


def _by_key(con: Connection, table: str, key: str, columns: str, keys: set[int]) -> list[tuple]:
    if not keys:
        return []
    sel = pa.table({"k": pa.array(sorted(keys), pa.int64())})
    with temp_table(con, "_kv_keys", sel):
        return con.execute(
            f"SELECT DISTINCT ON (t.{key}) {columns} FROM {table} t "
            f"JOIN _kv_keys s ON s.k = t.{key}"
        ).fetchall()


def message_fps(con: Connection, fps: set[int]) -> dict[int, MessageFp]:
    rows = _by_key(
        con, "fp_messages", "fp", "fp, role, content, call_names, call_args, call_json", fps
    )
    return {t[0]: MessageFp(t[0], t[1], t[2], tuple(t[3]), tuple(t[4]), tuple(t[5])) for t in rows}


def tool_fps(con: Connection, fps: set[int]) -> dict[int, ToolFp]:
    rows = _by_key(con, "fp_tools", "fp", "fp, name, tree", fps)
    return {t[0]: ToolFp(t[0], t[1], orjson.loads(t[2])) for t in rows}


def _pairs(flat: list[int]) -> tuple[tuple[int, int], ...]:
    return tuple(zip(flat[::2], flat[1::2], strict=True))


def text_fps(con: Connection, ids: set[int]) -> dict[int, TextFp]:
    rows = _by_key(
        con,
        "fp_texts",
        "id",
        "id, length, fold, fold_plain, cuts, prefixes, timestamps, ids, json, json_hashes",
        ids,
    )
    return {
        t[0]: TextFp(
            t[0],
            t[1],
            t[2],
            t[3],
            tuple(t[4]),
            tuple(t[5]),
            _pairs(t[6]),
            _pairs(t[7]),
            _pairs(t[8]),
            tuple(t[9]),
        )  # fmt: skip
        for t in rows
    }


def head_ranks(con: Connection, batches: set[int]) -> dict[int, HeadRanks]:
    """The ranked heads of each of ``batches``."""
    out = {}
    for batch in sorted(batches):
        rows = con.execute(
            "SELECT head, length, rank, lcp_next, rank_rev, lcs_next FROM fp_heads WHERE batch = ?",
            [batch],
        ).fetchall()
        lcp = np.zeros(len(rows), np.int64)
        lcs = np.zeros(len(rows), np.int64)
        for _, _, rank, lcp_next, rank_rev, lcs_next in rows:
            lcp[rank] = lcp_next
            lcs[rank_rev] = lcs_next
        out[batch] = HeadRanks(
            batch,
            rank={r[0]: r[2] for r in rows},
            rank_rev={r[0]: r[4] for r in rows},
            length={r[0]: r[1] for r in rows},
            lcp_next=lcp,
            lcs_next=lcs,
        )
    return out


# ---------------------------------------------------------------------------------------------
# The in-memory staging database of a redacted ingest


SEED = "\x00seed"


def staging_db(file_id: int, req_id: int) -> Connection:
    """An in-memory kvtool database that never spills to disk (no temporary directory), whose
    ingest hands out the ids a file whose next ids are ``file_id`` and ``req_id`` would: one
    placeholder file and request sit just below them until ``drop_seed``."""
    mem = connect(":memory:")
    mem.execute("SET temp_directory = ''")
    if file_id:
        mem.execute(
            "INSERT INTO files (file_id, path, digest, bytes, format, lines, requests, rejected) "
            "VALUES (?, '', ?, 0, '', 0, 0, 0)",
            [file_id - 1, SEED],
        )
    if req_id:
        mem.execute(
            "INSERT INTO requests (req_id, file_id, line, request_id, kind) "
            "VALUES (?, -1, 0, ?, 'hash')",
            [req_id - 1, SEED],
        )
    return mem


def drop_seed(mem: Connection) -> None:
    mem.execute("DELETE FROM files WHERE digest = ?", [SEED])
    mem.execute("DELETE FROM requests WHERE request_id = ?", [SEED])


def delete_file(mem: Connection, file_id: int) -> None:
    """Forget one staged file: its requests, rejects and file row."""
    for table in ("requests", "rejects", "files"):
        mem.execute(f"DELETE FROM {table} WHERE file_id = ?", [file_id])


@dataclass(frozen=True, slots=True)
class StagedId:
    """A staged request with an id from its log."""

    req_id: int
    line: int
    item: int
    request_id: str


def explicit_ids(mem: Connection, file_id: int) -> list[StagedId]:
    rows = mem.execute(
        "SELECT req_id, line, item, request_id FROM requests "
        "WHERE file_id = ? AND NOT synthetic_id",
        [file_id],
    ).fetchall()
    return [StagedId(*r) for r in rows]


def drop_requests(mem: Connection, file_id: int, req_ids: list[int]) -> None:
    """Remove staged requests that became rejects (the file's counts follow)."""
    mem.execute(f"DELETE FROM requests WHERE req_id IN ({id_list(req_ids)})")
    mem.execute(
        "UPDATE files SET requests = requests - ?, rejected = rejected + ? WHERE file_id = ?",
        [len(req_ids), len(req_ids), file_id],
    )


def file_requests(mem: Connection, file_ids: list[int]) -> pa.Table:
    """The ``requests`` rows of ``file_ids`` (every column, in table order)."""
    return mem.sql(
        f"SELECT * FROM requests WHERE file_id IN ({id_list(file_ids)})"
    ).to_arrow_table()


def file_chains(mem: Connection, signature: str, file_ids: list[int]) -> pa.Table:
    """(req_id, n_tokens, last_block) of the chains of ``file_ids`` for ``signature``."""
    return mem.sql(
        f"""SELECT c.req_id, c.n_tokens, c.last_block FROM chains c
            JOIN requests r ON r.req_id = c.req_id
            WHERE c.tokenizer = ? AND r.file_id IN ({id_list(file_ids)})""",
        params=[signature],
    ).to_arrow_table()


def template_failures(mem: Connection, signature: str) -> list[RenderFailure]:
    """Every request the template of ``signature`` raised for (req_id and message)."""
    return [
        RenderFailure(r, m)
        for r, m in mem.execute(
            "SELECT req_id, message FROM template_errors WHERE tokenizer = ?", [signature]
        ).fetchall()
    ]


def files_with_text(mem: Connection, file_ids: list[int]) -> list[int]:
    """Those of ``file_ids`` with chat or completion requests."""
    return [
        f
        for (f,) in mem.execute(
            f"SELECT DISTINCT file_id FROM requests WHERE kind != 'hash' "
            f"AND file_id IN ({id_list(file_ids)}) ORDER BY 1"
        ).fetchall()
    ]


def file_rejects(mem: Connection, file_ids: list[int]) -> list[Reject]:
    """Every rejects row (rejected or skipped) of ``file_ids``."""
    rows = mem.execute(
        "SELECT file_id, path, line, reason, raw, item, skipped FROM rejects "
        f"WHERE file_id IN ({id_list(file_ids)})"
    ).fetchall()
    return [Reject(*r) for r in rows]


def require_text(con: Connection, command: str) -> None:
    """``InputError`` naming ``command`` when the database is redacted: it needs prompt text."""
    if redaction_signatures(con):
        raise InputError(
            f"{command} needs prompt text, and this database is redacted (ingested with "
            "--redact); use a database ingested without it"
        )
