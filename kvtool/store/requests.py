"""Reading stored requests and their content: named rows instead of positional tuples.

A request's prompt is rebuilt from its ``PromptRow`` (kind, model, tenant, content keys) and the
``contents`` bodies those keys name; ``load_contents`` fetches bodies in one query per batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import orjson
import pyarrow as pa

from kvtool.store.arrow import list_parts, numbers
from kvtool.store.db import Connection, id_list, temp_table


@dataclass(frozen=True, slots=True)
class PromptRow:
    """What rebuilding one stored request's prompt needs. ``kind``: 'chat' (messages and maybe a
    tool catalog), 'completion' (one prompt) or 'hash' (a hash trace: no text)."""

    req_id: int
    kind: str
    model: str | None
    tenant: str | None
    message_keys: tuple[int, ...]
    tools_key: int | None
    prompt_key: int | None

    def content_keys(self) -> set[int]:
        keys = set(self.message_keys)
        keys.update(k for k in (self.tools_key, self.prompt_key) if k is not None)
        return keys


_PROMPT_COLUMNS = "r.req_id, r.kind, r.model, r.tenant, r.message_keys, r.tools_key, r.prompt_key"


def _prompt(t: tuple) -> PromptRow:
    return PromptRow(t[0], t[1], t[2], t[3], tuple(t[4] or ()), t[5], t[6])


def content_keys(rows: Iterable[PromptRow]) -> set[int]:
    """Every content key the rows refer to."""
    out: set[int] = set()
    for r in rows:
        out |= r.content_keys()
    return out


def load_contents(con: Connection, keys: set[int]) -> dict[int, object]:
    """Parsed ``contents`` bodies by key."""
    if not keys:
        return {}
    with temp_table(con, "_kv_keys", pa.table({"key": pa.array(list(keys), pa.int64())})):
        rows = con.execute(
            "SELECT c.key, any_value(c.body) FROM contents c JOIN _kv_keys USING (key) GROUP BY 1"
        ).fetchall()
    return {k: orjson.loads(body) for k, body in rows}


def _untokenized(file_ids: list[int] | None) -> str:
    """The WHERE clause of requests (alias ``r``) to tokenize for signature ``$sig``."""
    where = "" if file_ids is None else f"AND r.file_id IN ({id_list(file_ids)})"
    return f"""r.kind != 'hash' AND NOT r.truncated AND r.incomplete IS NULL {where}
              AND NOT EXISTS (SELECT 1 FROM chains c WHERE c.req_id = r.req_id
                              AND c.tokenizer = $sig)
              AND NOT EXISTS (SELECT 1 FROM template_errors e WHERE e.req_id = r.req_id
                              AND e.tokenizer = $sig)"""


def untokenized_prompts(
    con: Connection, signature: str, file_ids: list[int] | None = None, limit: int | None = None
) -> list[PromptRow]:
    """Chat and completion requests (of ``file_ids``; all when None) without a chain for
    ``signature`` and not set aside for it (``template_errors``), in req_id order (the first
    ``limit``). Requests whose logged prompt is truncated or incomplete are never tokenized:
    their prompt is not the one that was sent (``unusable_prompts`` counts them)."""
    cut = "" if limit is None else f"LIMIT {int(limit)}"
    rows = con.execute(
        f"""SELECT {_PROMPT_COLUMNS} FROM requests r WHERE {_untokenized(file_ids)}
            ORDER BY r.req_id {cut}""",
        {"sig": signature},
    ).fetchall()
    return [_prompt(t) for t in rows]


PROMPT_SCHEMA = pa.schema(
    [
        ("req_id", pa.int64()),
        ("kind", pa.string()),
        ("model", pa.string()),
        ("tenant", pa.string()),
        ("message_keys", pa.list_(pa.int64())),
        ("tools_key", pa.int64()),
        ("prompt_key", pa.int64()),
    ]
)
CONTENT_SCHEMA = pa.schema([("key", pa.int64()), ("kind", pa.string()), ("body", pa.string())])


def assign_parts(
    con: Connection, signature: str, file_ids: list[int] | None, parts: int, share: float
) -> list[int]:
    """Put each request ``untokenized_prompts`` would return into temp table ``_kv_parts``
    (req_id, ``part`` from 0 to ``parts - 1``); returns the parts that hold requests. A
    request's *family* is its tenant, model, tool catalog and first message (or completion
    prompt): the requests that can share a first block, and every turn of a conversation. A
    family of more than ``share`` times a partition's fair share of the requests is split by
    its second message (a conversation's first user message after a system prompt), so one
    system prompt shared by all traffic does not make one partition."""
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _kv_parts AS
            WITH r AS (
                SELECT r.req_id, r.message_keys,
                       hash(r.tenant, r.model, r.tools_key,
                            coalesce(r.message_keys[1], r.prompt_key)) AS family
                FROM requests r WHERE {_untokenized(file_ids)}),
            sizes AS (SELECT family, count(*) AS n FROM r GROUP BY family),
            big AS (SELECT family FROM sizes
                    WHERE n > $share * (SELECT count(*) FROM r) / $parts)
            SELECT r.req_id,
                   (CASE WHEN r.family IN (SELECT family FROM big)
                         THEN hash(r.family, r.message_keys[2])
                         ELSE r.family END % $parts)::INTEGER AS part
            FROM r""",
        {"sig": signature, "share": share, "parts": parts},
    )
    return [p for (p,) in con.execute("SELECT DISTINCT part FROM _kv_parts ORDER BY 1").fetchall()]


def part_prompts(con: Connection, part: int) -> list[PromptRow]:
    """The requests of one part of ``_kv_parts`` (``assign_parts``), in req_id order."""
    rows = con.execute(
        f"""SELECT {_PROMPT_COLUMNS} FROM requests r JOIN _kv_parts p USING (req_id)
            WHERE p.part = ? ORDER BY r.req_id""",
        [part],
    ).fetchall()
    return [_prompt(t) for t in rows]


def count_untokenized(con: Connection, signature: str, file_ids: list[int] | None) -> int:
    """How many requests ``untokenized_prompts`` would return."""
    sql = f"SELECT count(*) FROM requests r WHERE {_untokenized(file_ids)}"
    return int(con.execute(sql, {"sig": signature}).fetchone()[0])


def partition_untokenized(
    con: Connection, signature: str, file_ids: list[int] | None, parts: int, share: float
) -> list[int]:
    """``assign_parts``, and the requests with their part in temp table ``_kv_parted``
    (``PROMPT_SCHEMA`` and ``part``) and their contents in ``_kv_parted_contents`` (``part``
    and ``CONTENT_SCHEMA``, each key once per part), for staging as Parquet; returns the
    parts that hold requests."""
    held = assign_parts(con, signature, file_ids, parts, share)
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _kv_parted AS
            SELECT {_PROMPT_COLUMNS}, p.part FROM requests r JOIN _kv_parts p USING (req_id)"""
    )
    con.execute(
        """CREATE OR REPLACE TEMP TABLE _kv_parted_contents AS
           WITH k AS (
               SELECT DISTINCT part, key FROM (
                   SELECT part, unnest(message_keys) AS key FROM _kv_parted
                   UNION ALL SELECT part, tools_key FROM _kv_parted WHERE tools_key IS NOT NULL
                   UNION ALL SELECT part, prompt_key FROM _kv_parted
                             WHERE prompt_key IS NOT NULL))
           SELECT k.part, c.key, any_value(c.kind) AS kind, any_value(c.body) AS body
           FROM k JOIN contents c USING (key) GROUP BY k.part, c.key"""
    )
    return held


def parted_prompts(con: Connection, part: int, batch_rows: int) -> pa.RecordBatchReader:
    """One part of ``_kv_parted`` in req_id order, as ``PROMPT_SCHEMA`` batches."""
    return con.sql(
        "SELECT * EXCLUDE (part) FROM _kv_parted WHERE part = ? ORDER BY req_id", params=[part]
    ).to_arrow_reader(batch_rows)


def parted_contents(con: Connection, part: int, batch_rows: int) -> pa.RecordBatchReader:
    """The contents one part of ``_kv_parted`` refers to, as ``CONTENT_SCHEMA`` batches."""
    return con.sql(
        "SELECT key, kind, body FROM _kv_parted_contents WHERE part = ?", params=[part]
    ).to_arrow_reader(batch_rows)


def drop_parted(con: Connection) -> None:
    con.execute("DROP TABLE IF EXISTS _kv_parts")
    con.execute("DROP TABLE IF EXISTS _kv_parted")
    con.execute("DROP TABLE IF EXISTS _kv_parted_contents")


def prompt_rows(table: pa.Table) -> list[PromptRow]:
    """``PromptRow``s of a ``PROMPT_SCHEMA`` table, in its order."""
    cols = [table[name].to_pylist() for name in PROMPT_SCHEMA.names]
    return [_prompt(t) for t in zip(*cols, strict=True)]


def prompt_row(con: Connection, req_id: int) -> PromptRow | None:
    """One stored request's prompt row (None when there is no such request)."""
    rows = con.execute(
        f"SELECT {_PROMPT_COLUMNS} FROM requests r WHERE r.req_id = ?", [req_id]
    ).fetchall()
    return _prompt(rows[0]) if rows else None


@dataclass(frozen=True, slots=True)
class RequestRow:
    """A tokenized request as break detection and the CI gate see it: its prompt row, the id the
    log gave it (or kvtool made: ``synthetic_id``), session, input line and prompt length."""

    prompt: PromptRow
    request_id: str
    synthetic_id: bool
    session: str | None
    line: int
    n_tokens: int

    @property
    def req_id(self) -> int:
        return self.prompt.req_id

    @property
    def kind(self) -> str:
        return self.prompt.kind

    @property
    def model(self) -> str | None:
        return self.prompt.model

    @property
    def tenant(self) -> str | None:
        return self.prompt.tenant

    @property
    def message_keys(self) -> tuple[int, ...]:
        return self.prompt.message_keys

    @property
    def tools_key(self) -> int | None:
        return self.prompt.tools_key

    @property
    def prompt_key(self) -> int | None:
        return self.prompt.prompt_key

    @property
    def elements(self) -> tuple:
        """What a prompt is made of, in order: model, tools, prompt, messages."""
        return (self.model, self.tools_key, self.prompt_key, *self.message_keys)


def request_rows(
    con: Connection, signature: str, *, req_ids: list[int] | None = None
) -> list[RequestRow]:
    """Requests with a chain for ``signature`` (those of ``req_ids``, in that order; else all,
    in file and line order)."""
    sql = f"""SELECT {_PROMPT_COLUMNS}, r.request_id, r.synthetic_id, r.session_id, r.line,
                     c.n_tokens
              FROM requests r JOIN chains c ON c.req_id = r.req_id AND c.tokenizer = ?"""
    if req_ids is None:
        return _requests(con.execute(sql + " ORDER BY r.file_id, r.line", [signature]))
    sel = pa.table({"req_id": pa.array(req_ids, pa.int64())})
    with temp_table(con, "_kv_sel", sel):
        rows = _requests(con.execute(sql + " JOIN _kv_sel s ON s.req_id = r.req_id", [signature]))
    by_id = {row.req_id: row for row in rows}
    del rows
    return [by_id[i] for i in req_ids]


def _requests(cursor: Connection, batch: int = 65_536) -> list[RequestRow]:
    """The rows of a ``request_rows`` query, fetched a batch at a time. Message keys and names
    are shared: a conversation's turns resend its history, so each distinct key is one int
    object that every row's tuple refers to (a row costs a pointer per message, not an int)."""
    out: list[RequestRow] = []
    keys: dict[int, int] = {}
    names: dict[str | None, str | None] = {}  # kinds, models, tenants, sessions: few, repeated
    while rows := cursor.fetchmany(batch):
        for t in rows:
            messages = tuple([keys.setdefault(k, k) for k in t[4]] if t[4] else ())
            kind, model, tenant, session = (names.setdefault(x, x) for x in (*t[1:4], t[9]))
            prompt = PromptRow(t[0], kind, model, tenant, messages, t[5], t[6])
            out.append(RequestRow(prompt, t[7], bool(t[8]), session, int(t[10]), int(t[11])))
    return out


@dataclass(frozen=True, slots=True)
class RequestSource:
    """Everything needed to send a stored request again: its prompt row, the id the log gave it,
    its output length, and for hash traces the block ids, prompt length, the file's digest (a
    salt: trace files number blocks independently) and the trace's block size."""

    prompt: PromptRow
    request_id: str
    output_tokens: int | None
    hash_ids: tuple[int, ...]
    input_length: int | None
    file_digest: str
    hash_block_size: int | None


def request_sources(con: Connection, req_ids: list[int]) -> dict[int, RequestSource]:
    """``RequestSource`` of each of ``req_ids``, by req_id."""
    sel = pa.table({"req_id": pa.array(req_ids, pa.int64())})
    with temp_table(con, "_kv_sel", sel):
        rows = con.execute(
            f"""SELECT {_PROMPT_COLUMNS}, r.request_id, r.output_tokens, r.hash_ids,
                       r.input_length, f.digest, f.hash_block_size
                FROM requests r JOIN _kv_sel s ON s.req_id = r.req_id
                JOIN files f ON f.file_id = r.file_id"""
        ).fetchall()
    return {
        t[0]: RequestSource(_prompt(t[:7]), t[7], t[8], tuple(t[9] or ()), t[10], t[11], t[12])
        for t in rows
    }


_ORDER = "ORDER BY r.ts NULLS LAST, r.file_id, r.line"  # processing order


# what a hash trace's workload needs of a request, and what its tree build needs (both with
# the keys of processing order: ts, file_id, line)
HASH_WORKLOAD_COLUMNS = """r.req_id, r.ts, r.session_id, r.model, r.input_length AS n_tokens,
    r.output_tokens, r.observed_prompt_tokens, r.observed_cached_tokens, r.cache_key,
    r.file_id, r.line"""
HASH_TREE_COLUMNS = """r.req_id, r.ts, r.input_length AS n_tokens, r.file_id, r.line, r.tenant,
    r.hash_ids[1] AS first_id, len(r.hash_ids) AS n_ids"""
HASH_REQUEST_COLUMNS = f"""{HASH_WORKLOAD_COLUMNS}, r.tenant, r.hash_ids[1] AS first_id,
    len(r.hash_ids) AS n_ids"""


def processing_order(ts: np.ndarray, file_id: np.ndarray, line: np.ndarray) -> np.ndarray:
    """The permutation that puts requests in processing order, as ``_ORDER`` does in SQL:
    timestamp (NaN: unknown, last), then file and line (unique together, so the order is
    total). Two sort keys, not four: ingest range-checks timestamps, so an unknown one can sort
    as +inf, and a line number is below 2**40."""
    return np.lexsort((file_id.astype(np.int64) << 40 | line, np.where(np.isnan(ts), np.inf, ts)))


def hash_request_table(con: Connection, file_ids: list[int]) -> pa.Table:
    """Hash-trace requests of ``file_ids`` in processing order (timestamp, then file and line):
    req_id, ts, session_id, model, n_tokens, output_tokens, observed_prompt_tokens,
    observed_cached_tokens, cache_key, file_id, line, tenant, and of their hash ids the first
    (``first_id``, NULL for none) and how many (``n_ids``). Their hash ids: ``hash_id_lists``,
    ``hash_id_batches``. ``hash_request_batches``: the same, streamed."""
    return con.sql(
        f"SELECT {HASH_REQUEST_COLUMNS} FROM requests r "
        f"WHERE r.file_id IN ({id_list(file_ids)}) {_ORDER}"
    ).to_arrow_table()


def hash_request_batches(
    con: Connection, file_ids: list[int], columns: str, rows: int = 1 << 17
) -> tuple[int, Iterator[pa.RecordBatch]]:
    """(how many, batches of up to ``rows``) of the ``columns`` (``HASH_WORKLOAD_COLUMNS``,
    ``HASH_TREE_COLUMNS``) of the requests of ``file_ids``, in scan order: the caller keeps
    what it converts, not the query's Arrow table, and sorts it (``processing_order``), which
    costs it a permutation where DuckDB's sort would hold every column of every row."""
    where = f"WHERE r.file_id IN ({id_list(file_ids)})"
    (count,) = con.execute(f"SELECT count(*) FROM requests r {where}").fetchall()[0]
    reader = con.sql(f"SELECT {columns} FROM requests r {where}")
    return int(count), _batches(reader.to_arrow_reader(rows))


def _batches(reader: pa.RecordBatchReader) -> Iterator[pa.RecordBatch]:
    try:
        yield from reader
    finally:
        reader.close()  # a result left unfinished would block the connection


@dataclass(frozen=True)
class HashIdLists:
    """The hash ids of requests, in the order the scan met them (not processing order: sorting
    the lists would copy them): request ``req_ids[i]``'s ids are
    ``values[offsets[i]:offsets[i + 1]]``."""

    req_ids: np.ndarray
    offsets: np.ndarray
    values: np.ndarray

    def aligned(self, req_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(start, count) into ``values`` of each of ``req_ids`` (all of them present)."""
        sorter = np.argsort(self.req_ids, kind="stable")
        at = sorter[np.searchsorted(self.req_ids, req_ids, sorter=sorter)]
        return self.offsets[:-1][at], np.diff(self.offsets)[at]


def hash_id_lists(con: Connection, file_ids: list[int]) -> HashIdLists:
    """The hash ids of the requests of ``file_ids``, without sorting them."""
    table = con.sql(
        f"SELECT r.req_id, r.hash_ids FROM requests r WHERE r.file_id IN ({id_list(file_ids)})"
    ).to_arrow_table()
    offsets, values = list_parts(table.column("hash_ids"))
    return HashIdLists(numbers(table.column("req_id"), np.int64), offsets, values)


def hash_id_batches(
    con: Connection, file_ids: list[int], rows: int = 1 << 16
) -> Iterator[pa.RecordBatch]:
    """The (req_id, hash_ids) of the requests of ``file_ids`` in batches of up to ``rows``, in
    scan order: one pass over the ids, memory one batch."""
    reader = con.sql(
        f"SELECT r.req_id, r.hash_ids FROM requests r WHERE r.file_id IN ({id_list(file_ids)})"
    ).to_arrow_reader(rows)
    yield from _batches(reader)


def chain_request_table(con: Connection, file_ids: list[int], signature: str) -> pa.Table:
    """Tokenized requests of ``file_ids`` in processing order, with their chain for
    ``signature``: req_id, ts, session_id, model, n_tokens, output_tokens,
    observed_prompt_tokens, observed_cached_tokens, last_block, cache_key."""
    return con.sql(
        f"""SELECT r.req_id, r.ts, r.session_id, r.model, c.n_tokens,
                   r.output_tokens, r.observed_prompt_tokens, r.observed_cached_tokens,
                   c.last_block, r.cache_key
            FROM requests r JOIN chains c ON c.req_id = r.req_id AND c.tokenizer = ?
            WHERE r.file_id IN ({id_list(file_ids)}) {_ORDER}""",
        params=[signature],
    ).to_arrow_table()


@dataclass(frozen=True, slots=True)
class CacheLog:
    """What a request logged about a provider's explicit cache: its ``cache_control`` markers
    as ingest stored them (``Normalized.cache_control``; empty: none) and its cache-write
    tokens (None: not logged), with its prompt row."""

    prompt: PromptRow
    markers: tuple[dict, ...]
    cache_write_tokens: int | None


def cache_logs(con: Connection, req_ids: list[int]) -> list[CacheLog]:
    """``CacheLog`` of each of ``req_ids``, in that order (every id must be stored)."""
    sel = pa.table({"req_id": pa.array(req_ids, pa.int64())})
    with temp_table(con, "_kv_sel", sel):
        rows = con.execute(
            f"""SELECT {_PROMPT_COLUMNS}, r.cache_control, r.cache_write_tokens
                FROM requests r JOIN _kv_sel s ON s.req_id = r.req_id"""
        ).fetchall()
    by_id = {
        t[0]: CacheLog(_prompt(t[:7]), tuple(orjson.loads(t[7]) if t[7] else ()), t[8])
        for t in rows
    }
    return [by_id[i] for i in req_ids]


@dataclass(frozen=True, slots=True)
class UnusablePrompts:
    """Requests left out of prefix analysis because the log does not hold the prompt that was
    sent: ``truncated`` (the logger cut long strings), ``incomplete`` (e.g. a Responses request
    that continues a stored response), with up to ``EXAMPLES`` (request id, reason) examples."""

    truncated: int
    incomplete: int
    examples: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict:
        return {
            "truncated": self.truncated,
            "incomplete": self.incomplete,
            "examples": [{"request_id": i, "reason": r} for i, r in self.examples],
        }


EXAMPLES = 3


def unusable_prompts(con: Connection, file_ids: list[int]) -> UnusablePrompts:
    """How many requests of ``file_ids`` are truncated or incomplete (see ``UnusablePrompts``)."""
    ids = id_list(file_ids)
    truncated, incomplete = con.execute(
        f"""SELECT count(*) FILTER (WHERE truncated), count(*) FILTER (WHERE incomplete IS NOT NULL)
            FROM requests WHERE file_id IN ({ids})"""
    ).fetchall()[0]
    examples = con.execute(
        f"""SELECT request_id, coalesce(incomplete, 'the logged prompt is truncated')
            FROM requests WHERE file_id IN ({ids}) AND (truncated OR incomplete IS NOT NULL)
            ORDER BY file_id, line, item LIMIT {EXAMPLES}"""
    ).fetchall()
    return UnusablePrompts(int(truncated), int(incomplete), tuple(map(tuple, examples)))
