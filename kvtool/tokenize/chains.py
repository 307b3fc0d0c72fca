"""Block chain hashes of every request's prompt (DESIGN.md: block identity): ``chains``, ``blocks``.

Block identity at the base size 16: ``h_i = xxh3_64(tokens of block i, seed=h_{i-1})`` with
``h_{-1} = xxh3_64(tokenizer signature, model, tenant salt)``, so different tokenizers, models or
tenants never share a block. A 16k-token block is identified by the base hash where it ends.

Requests are sequences of *pieces* (template pieces, or text segments). ``PrefixTrie`` memoizes the
chain state after each distinct piece sequence, so a request that resends a known history only
hashes the blocks its new pieces complete: work is proportional to distinct content.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import duckdb
import numpy as np
import orjson
import pyarrow as pa
import xxhash

from kvtool.store import as_bigint, one
from kvtool.tokenize.loader import TokenizerBundle
from kvtool.tokenize.segments import TOKEN_DTYPE, SegmentEncoder
from kvtool.tokenize.template import (
    SYSTEM_ROLES,
    DefaultTemplate,
    HFTemplate,
    make_template,
    render_head,
    render_prompt,
)

BASE_BLOCK = 16
CHAIN_VERSION = "c2"  # c2: hub templates see tool-call arguments as objects, as vLLM passes them
VERIFY_SAMPLE = 4  # requests checked against one-call tokenization per pass
VERIFY_POOL = 64  # ... chosen among this many first requests
VERIFY_MAX_CHARS = 200_000  # ... skipping huge prompts (the check would cost more than it tells)
_U64 = np.uint64


def root_seed(signature: str, model: str | None, tenant: str | None) -> int:
    """The chain's extra keys: tokenizer/template signature, model and tenant salt."""
    return xxhash.xxh3_64_intdigest(f"{signature}\x00{model or ''}\x00{tenant or ''}".encode())


def chain_blocks(tokens: np.ndarray, seed: int, block: int = BASE_BLOCK) -> np.ndarray:
    """Chain hashes (uint64) of the full ``block``-token blocks of ``tokens``, chained from
    ``seed``."""
    nb = len(tokens) // block
    out = np.empty(nb, dtype=_U64)
    if nb == 0:
        return out
    view = memoryview(np.ascontiguousarray(tokens[: nb * block], dtype="<u4").tobytes())
    step = block * 4
    h = seed
    digest = xxhash.xxh3_64_intdigest
    for i in range(nb):
        h = digest(view[i * step : (i + 1) * step], seed=h)
        out[i] = h
    return out


class PrefixTrie:
    """Chain state per distinct piece sequence, and the distinct blocks it has produced.

    Node invariant: ``n[v]`` tokens so far; ``last[v]`` is the chain hash of the last full block
    (the root seed before any); ``tail[v]`` holds the ``n[v] % 16`` tokens after it. Blocks
    completed by a new node are queued (hash, parent hash or None, depth) until
    ``take_blocks``; every block is queued once per trie (a block reached through two different
    piece sequences is queued twice and deduplicated by the store).
    """

    def __init__(self) -> None:
        self.children: dict[tuple[int, int], int] = {}
        self.roots: dict[int, int] = {}
        self.n: list[int] = []
        self.last: list[int] = []
        self.tail: list[np.ndarray] = []
        self._hashes: list[np.ndarray] = []
        self._parents: list[int | None] = []  # parent of the first block of each queued run
        self._depths: list[int] = []

    def _new(self, n: int, last: int, tail: np.ndarray) -> int:
        self.n.append(n)
        self.last.append(last)
        self.tail.append(tail)
        return len(self.n) - 1

    def root(self, seed: int) -> int:
        node = self.roots.get(seed)
        if node is None:
            node = self._new(0, seed, np.zeros(0, TOKEN_DTYPE))
            self.roots[seed] = node
        return node

    def extend(self, node: int, piece: int, tokens: Callable[[int], np.ndarray]) -> int:
        """The child of ``node`` by piece id ``piece``; ``tokens(piece)`` gives its ids."""
        key = (node, piece)
        child = self.children.get(key)
        if child is None:
            ids = tokens(piece)
            tail = self.tail[node]
            seq = np.concatenate([tail, ids]) if len(tail) else ids
            new = chain_blocks(seq, self.last[node])
            full = len(new) * BASE_BLOCK
            if len(new):
                self._hashes.append(new)
                self._parents.append(self.last[node] if self.n[node] >= BASE_BLOCK else None)
                self._depths.append(self.n[node] // BASE_BLOCK)
            last = int(new[-1]) if len(new) else self.last[node]
            child = self._new(self.n[node] + len(ids), last, seq[full:].copy())
            self.children[key] = child
        return child

    def last_block(self, node: int) -> int | None:
        """Hash of the node's last full block (None before the first)."""
        return self.last[node] if self.n[node] >= BASE_BLOCK else None

    def take_blocks(self) -> pa.Table:
        """The queued blocks as (hash, parent, depth), signed 64-bit; clears the queue."""
        if not self._hashes:
            hashes = np.zeros(0, _U64)
            parents = pa.array([], pa.int64())
            depths = np.zeros(0, np.int32)
        else:
            hashes = np.concatenate(self._hashes)
            sizes = np.array([len(h) for h in self._hashes])
            prev = np.empty_like(hashes)
            prev[1:] = hashes[:-1]
            starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
            firsts = np.array([p if p is not None else 0 for p in self._parents], _U64)
            prev[starts] = firsts
            null = np.zeros(len(hashes), bool)
            null[starts] = [p is None for p in self._parents]
            parents = pa.array(prev.view(np.int64), mask=null)
            depths = (
                np.repeat(np.array(self._depths) - starts, sizes) + np.arange(len(hashes))
            ).astype(np.int32)
        self._hashes, self._parents, self._depths = [], [], []
        return pa.table(
            {"hash": pa.array(hashes.view(np.int64)), "parent": parents, "depth": depths}
        )


@dataclass
class TokenizeReport:
    """What one tokenize pass did; ``tokens_encoded`` counts tokens the tokenizer really ran on."""

    signature: str
    template: str
    requests: int = 0
    logical_tokens: int = 0
    tokens_encoded: int = 0
    segments_encoded: int = 0
    verified: int = 0
    mode: str = "pieces"

    def to_json(self) -> dict:
        return dict(self.__dict__)


class _Pieces:
    """Interned piece texts and their token ids (ids computed in batches by the encoder).
    ``kinds[pid]``: 'text' (segmentable), 'whole' (one call), 'prompt' (one call with the
    tokenizer's special tokens) or 'ids' (already token ids)."""

    def __init__(self, encoder: SegmentEncoder):
        self.encoder = encoder
        self.index: dict[object, int] = {}
        self.by_message: dict[int, int] = {}  # message content key -> piece id
        self.texts: list = []
        self.kinds: list[str] = []
        self.ids: list[np.ndarray | None] = []
        self.pending: list[int] = []

    def add(self, text: object, kind: str) -> int:
        self.texts.append(text)
        self.kinds.append(kind)
        self.ids.append(None)
        self.pending.append(len(self.texts) - 1)
        return len(self.texts) - 1

    def intern(self, key: object, kind: str, text: Callable[[], object]) -> int:
        pid = self.index.get(key)
        if pid is None:
            pid = self.index[key] = self.add(text(), kind)
        return pid

    def tokens(self, pid: int) -> np.ndarray:
        ids = self.ids[pid]
        assert ids is not None, "_encode_pieces() must run before the trie walk"
        return ids


def _signature(bundle: TokenizerBundle, template: DefaultTemplate | HFTemplate) -> str:
    return f"{bundle.signature}/{template.id}/{CHAIN_VERSION}"


def tokenizer_signature(bundle: TokenizerBundle) -> str:
    """The ``chains.tokenizer`` value this bundle writes."""
    return _signature(bundle, make_template(bundle))


def load_contents(con: duckdb.DuckDBPyConnection, keys: set[int]) -> dict[int, object]:
    """Parsed ``contents`` bodies by key."""
    if not keys:
        return {}
    con.register("_kv_keys", pa.table({"key": pa.array(list(keys), pa.int64())}))
    rows = con.execute(
        "SELECT c.key, any_value(c.body) FROM contents c JOIN _kv_keys USING (key) GROUP BY 1"
    ).fetchall()
    con.unregister("_kv_keys")
    return {k: orjson.loads(body) for k, body in rows}


@dataclass(slots=True)
class Plan:
    """How to walk one request: start at the node saved under ``resume`` (or at the root), walk
    ``pieces``, save the node under ``save``, then walk ``tail`` (the generation prompt)."""

    resume: tuple | None
    pieces: list[int]
    save: tuple | None = None
    tail: tuple[int, ...] = ()


def request_plans(
    rows: list[tuple],
    bodies: dict[int, object],
    template: DefaultTemplate | HFTemplate,
    pieces: _Pieces,
    mode: str,
    conversations: set[tuple],
) -> list[Plan]:
    """Walk plans of request rows ``(req_id, kind, model, tenant, message_keys, tools_key,
    prompt_key)``. ``mode``: 'pieces' (default template), 'segments' (rendered text split at
    added tokens) or 'whole' (one piece per distinct prompt text).

    In 'pieces' mode a request that repeats an earlier request's messages and adds up to two
    (an agent step, a chat turn) resumes from that request's saved node, so only its new
    messages are rendered and walked; ``conversations`` holds the saved keys (planned order)."""
    out: list[Plan] = []
    enc = pieces.encoder
    by_message = pieces.by_message
    gen = pieces.intern(("gen",), "text", lambda: getattr(template, "generation", ""))
    for _rid, kind, model, tenant, mkeys, tkey, pkey in rows:
        if kind == "completion":
            prompt = bodies[pkey]
            kind_ = "ids" if isinstance(prompt, list) else "prompt"
            out.append(Plan(None, [pieces.intern((kind_, pkey), kind_, lambda p=prompt: p)]))
            continue
        tools = bodies[tkey] if tkey is not None else None
        if mode != "pieces":
            text = render_prompt(template, [bodies[k] for k in mkeys], tools)
            if mode == "segments":
                ids = [pieces.intern(("seg", s), "text", lambda s=s: s) for s in enc.split(text)]
            else:
                ids = [pieces.intern(("whole", text), "whole", lambda t=text: t)]
            out.append(Plan(None, ids))
            continue
        assert isinstance(template, DefaultTemplate)
        n_sys = 0
        while n_sys < len(mkeys) and bodies[mkeys[n_sys]].get("role") in SYSTEM_ROLES:
            n_sys += 1
        systems = [bodies[k] for k in mkeys[:n_sys]]
        head_key = ("head", tuple(mkeys[:n_sys]), tkey)
        head = pieces.intern(head_key, "text", lambda s=systems, t=tools: template.head(s, t))
        rest = tuple(mkeys[n_sys:])
        base = (model, tenant, head)
        resume = None
        for j in range(len(rest), max(len(rest) - 3, 0), -1):
            if (base, rest[:j]) in conversations:
                resume = (base, rest[:j])
                break
        ids = [] if resume is not None else [head]
        for key in rest[len(resume[1]) if resume else 0 :]:
            pid = by_message.get(key)
            if pid is None:
                pid = by_message[key] = pieces.add(template.message(bodies[key]), "text")
            ids.append(pid)
        save = (base, rest)
        conversations.add(save)
        out.append(Plan(resume, ids, save, (gen,)))
    return out


def _encode_pieces(pieces: _Pieces) -> None:
    """Token ids of every pending piece. 'whole' pieces and completion prompts tokenize in one
    call each (completions with the tokenizer's special tokens, as a completions endpoint does);
    'text' pieces go through the segment cache in one batch."""
    batch = []
    for i in pieces.pending:
        kind = pieces.kinds[i]
        if kind == "ids":
            pieces.ids[i] = np.asarray(pieces.texts[i], dtype=TOKEN_DTYPE)
        elif kind == "prompt":
            pieces.ids[i] = pieces.encoder.encode_whole(pieces.texts[i], add_special_tokens=True)
        elif kind == "whole":
            pieces.ids[i] = pieces.encoder.encode_whole(pieces.texts[i])
        else:
            batch.append(i)
    encoded = pieces.encoder.encode_many([pieces.texts[i] for i in batch])
    for i, ids in zip(batch, encoded, strict=True):
        pieces.ids[i] = ids
    pieces.pending = []


def tokenize_requests(
    con: duckdb.DuckDBPyConnection,
    bundle: TokenizerBundle,
    file_ids: list[int] | None = None,
    progress: Callable[[int, int], None] | None = None,
    batch_size: int = 20_000,
) -> TokenizeReport:
    """Write ``chains`` rows for every chat/completion request (of ``file_ids``) not yet tokenized
    with this bundle. Idempotent. A sample of requests is checked against one-call tokenization;
    on a mismatch the whole pass falls back to one-call tokenization per distinct prompt."""
    template = make_template(bundle)
    signature = _signature(bundle, template)
    report = TokenizeReport(signature=signature, template=template.id)
    where = (
        "" if file_ids is None else f"AND r.file_id IN ({','.join(map(str, file_ids)) or 'NULL'})"
    )
    rows = con.execute(
        f"""SELECT r.req_id, r.kind, r.model, r.tenant, r.message_keys, r.tools_key, r.prompt_key
            FROM requests r
            WHERE r.kind != 'hash' {where}
              AND NOT EXISTS (SELECT 1 FROM chains c WHERE c.req_id = r.req_id
                              AND c.tokenizer = ?)
            ORDER BY r.req_id""",
        [signature],
    ).fetchall()
    encoder = bundle.encoder
    if isinstance(template, DefaultTemplate) and template.segmentable:
        mode = "pieces"
    elif encoder.splits:
        mode = "segments"
    else:
        mode = "whole"
    report.mode = mode
    if not rows:
        return report
    mode = _checked_mode(con, rows[:VERIFY_POOL], template, encoder, mode, report)
    report.mode = mode
    pieces = _Pieces(encoder)
    trie = PrefixTrie()
    conversations: set[tuple] = set()
    saved: dict[tuple, int] = {}
    done = 0
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        bodies = load_contents(con, content_keys(chunk))
        plans = request_plans(chunk, bodies, template, pieces, mode, conversations)
        _encode_pieces(pieces)
        n_tokens: list[int] = []
        lasts: list[int | None] = []
        children = trie.children
        for row, plan in zip(chunk, plans, strict=True):
            if plan.resume is None:
                node = trie.root(root_seed(signature, row[2], row[3]))
            else:
                node = saved[plan.resume]
            for pid in plan.pieces:  # the known-path lookup is inlined: this loop is the hot one
                nxt = children.get((node, pid))
                node = nxt if nxt is not None else trie.extend(node, pid, pieces.tokens)
            if plan.save is not None:
                saved[plan.save] = node
            for pid in plan.tail:
                nxt = children.get((node, pid))
                node = nxt if nxt is not None else trie.extend(node, pid, pieces.tokens)
            n_tokens.append(trie.n[node])
            last = trie.last_block(node)
            lasts.append(None if last is None else as_bigint(last))
        _write_chunk(con, signature, [r[0] for r in chunk], n_tokens, lasts, trie.take_blocks())
        report.logical_tokens += sum(n_tokens)
        done += len(chunk)
        if progress:
            progress(done, len(rows))
    report.requests = len(rows)
    report.tokens_encoded = encoder.tokens_encoded
    report.segments_encoded = encoder.segments_encoded
    return report


def _write_chunk(
    con: duckdb.DuckDBPyConnection,
    signature: str,
    req_ids: list[int],
    n_tokens: list[int],
    lasts: list[int | None],
    blocks: pa.Table,
) -> None:
    """Insert a chunk's chains and its new blocks (each distinct block once per signature)."""
    chains = pa.table(
        {
            "req_id": pa.array(req_ids, pa.int64()),
            "tokenizer": pa.array([signature] * len(req_ids), pa.string()),
            "n_tokens": pa.array(n_tokens, pa.int64()),
            "last_block": pa.array(lasts, pa.int64()),
        }
    )
    con.register("_kv_chains", chains)
    con.execute("INSERT INTO chains SELECT * FROM _kv_chains")
    con.unregister("_kv_chains")
    con.register("_kv_blocks", blocks)
    con.execute(
        """INSERT INTO blocks
           SELECT DISTINCT ON (hash) ?, hash, parent, depth FROM _kv_blocks b
           WHERE NOT EXISTS (SELECT 1 FROM blocks x WHERE x.tokenizer = ? AND x.hash = b.hash)""",
        [signature, signature],
    )
    con.unregister("_kv_blocks")


def content_keys(rows: list[tuple]) -> set[int]:
    keys = {k for r in rows for k in (r[4] or ())}
    keys.update(k for r in rows for k in (r[5], r[6]) if k is not None)
    return keys


def _checked_mode(
    con: duckdb.DuckDBPyConnection,
    sample: list[tuple],
    template: DefaultTemplate | HFTemplate,
    encoder: SegmentEncoder,
    mode: str,
    report: TokenizeReport,
) -> str:
    """``mode`` if composed ids equal one-call ids on up to ``VERIFY_SAMPLE`` chat requests of
    ``sample`` (those of at most ``VERIFY_MAX_CHARS`` rendered characters), else 'whole'."""
    chats = [r for r in sample if r[1] == "chat"]
    if mode == "whole" or not chats:
        return mode
    bodies = load_contents(con, content_keys(chats))
    texts = {}
    for row in chats:
        text = render_prompt(template, [bodies[k] for k in row[4]], bodies.get(row[5]))
        if len(text) <= VERIFY_MAX_CHARS:
            texts[row[0]] = text
        if len(texts) == VERIFY_SAMPLE:
            break
    chats = [r for r in chats if r[0] in texts]
    pieces = _Pieces(encoder)
    lists = []
    for row in chats:  # each planned alone: a full piece list, no resume
        (plan,) = request_plans([row], bodies, template, pieces, mode, set())
        lists.append(plan.pieces + list(plan.tail))
    _encode_pieces(pieces)
    for row, plist in zip(chats, lists, strict=True):
        composed = np.concatenate([pieces.tokens(p) for p in plist])
        if not encoder.verify(texts[row[0]], composed):
            return "whole"
        report.verified += 1
    return mode


@dataclass(frozen=True)
class PromptIds:
    """A request's prompt token ids and two boundaries: ``end``, where its last message ends
    (before the generation prompt), and ``head_end``, where its head (leading system messages
    and tool catalog) ends; both are token counts."""

    ids: np.ndarray
    end: int
    head_end: int


def _common(a: np.ndarray, b: np.ndarray) -> int:
    m = min(len(a), len(b))
    diff = np.flatnonzero(a[:m] != b[:m])
    return int(diff[0]) if len(diff) else m


class PromptTokens:
    """Token ids of stored requests exactly as a tokenize pass in ``mode`` computes them; each
    distinct piece is encoded once for the life of the object."""

    def __init__(self, bundle: TokenizerBundle, mode: str):
        self.bundle = bundle
        self.mode = mode
        self.template = make_template(bundle)
        self.pieces = _Pieces(bundle.encoder)

    def _text_ids(self, text: str) -> np.ndarray:
        if self.mode == "whole":
            return self.bundle.encoder.encode_whole(text)
        return self.bundle.encoder.encode_many([text])[0]

    def get(self, row: tuple, bodies: dict[int, object]) -> PromptIds:
        """``row``: (req_id, kind, model, tenant, message_keys, tools_key, prompt_key)."""
        (plan,) = request_plans([row], bodies, self.template, self.pieces, self.mode, set())
        _encode_pieces(self.pieces)
        parts = [self.pieces.tokens(p) for p in plan.pieces + list(plan.tail)]
        ids = np.concatenate(parts) if parts else np.zeros(0, TOKEN_DTYPE)
        if row[1] != "chat":
            return PromptIds(ids, len(ids), 0)
        if self.mode == "pieces":
            end = sum(len(self.pieces.tokens(p)) for p in plan.pieces)
            return PromptIds(ids, end, len(self.pieces.tokens(plan.pieces[0])))
        messages = [bodies[k] for k in row[4]]
        tools = bodies[row[5]] if row[5] is not None else None
        nogen = self._text_ids(render_prompt(self.template, messages, tools, generation=False))
        head = render_head(self.template, messages, tools)
        head_end = _common(ids, self._text_ids(head)) if head else 0
        return PromptIds(ids, _common(ids, nogen), head_end)


def request_token_ids(
    con: duckdb.DuckDBPyConnection, bundle: TokenizerBundle, req_id: int, mode: str
) -> np.ndarray:
    """Token ids of one stored request as a tokenize pass in ``mode`` computed them (for
    previews); uses and fills the bundle's segment cache."""
    row = one(
        con,
        "SELECT req_id, kind, model, tenant, message_keys, tools_key, prompt_key "
        "FROM requests WHERE req_id = ?",
        [req_id],
    )
    if row is None or row[1] == "hash":
        return np.zeros(0, TOKEN_DTYPE)
    return PromptTokens(bundle, mode).get(row, load_contents(con, content_keys([row]))).ids
