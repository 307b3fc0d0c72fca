"""Prompt plans: how a stored request becomes a sequence of token-id pieces.

A request is a sequence of *pieces* (template pieces, or text segments), each tokenized once per
distinct text (``Pieces``). A ``Plan`` says how to walk one request through the prefix trie.
``PromptTokens`` rebuilds a stored request's token ids exactly as a tokenize pass in the same
mode computed them (for previews, break diffs and the CI gate).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from kvtool.errors import InputError
from kvtool.store import Connection
from kvtool.store.requests import PromptRow, load_contents, prompt_row
from kvtool.tokenize.loader import TokenizerBundle
from kvtool.tokenize.segments import TOKEN_DTYPE, SegmentEncoder
from kvtool.tokenize.template import (
    SYSTEM_ROLES,
    DefaultTemplate,
    Template,
    make_template,
    render_head,
    render_prompt,
)


class Pieces:
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
        self.held = 0  # token ids held by the encoded pieces

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
        assert ids is not None, "encode_pieces() must run before the trie walk"
        return ids


@dataclass(slots=True)
class Plan:
    """How to walk one request: start at the node saved under ``resume`` (or at the root), walk
    ``pieces``, save the node under ``save``, then walk ``tail`` (the generation prompt).
    ``error``: the chat template raised for this request (its message); nothing to walk."""

    resume: tuple | None
    pieces: list[int]
    save: tuple | None = None
    tail: tuple[int, ...] = ()
    error: str | None = None


def request_plans(
    rows: list[PromptRow],
    bodies: dict[int, object],
    template: Template,
    pieces: Pieces,
    mode: str,
    conversations: set[tuple],
) -> list[Plan]:
    """Walk plans of request rows. ``mode``: 'pieces' (default template), 'segments'
    (rendered text split at added tokens) or 'whole' (one piece per distinct prompt text).

    In 'pieces' mode a request that repeats an earlier request's messages and adds up to two
    (an agent step, a chat turn) resumes from that request's saved node, so only its new
    messages are rendered and walked; ``conversations`` holds the saved keys (planned order).
    A request the template raises for gets a plan with ``error`` set and no pieces; the other
    requests are planned as if it were not there."""
    out: list[Plan] = []
    enc = pieces.encoder
    by_message = pieces.by_message
    gen = pieces.intern(("gen",), "text", lambda: getattr(template, "generation", ""))
    for row in rows:
        kind, model, tenant = row.kind, row.model, row.tenant
        mkeys, tkey, pkey = row.message_keys, row.tools_key, row.prompt_key
        if kind == "completion":
            prompt = bodies[pkey]
            kind_ = "ids" if isinstance(prompt, list) else "prompt"
            out.append(Plan(None, [pieces.intern((kind_, pkey), kind_, lambda p=prompt: p)]))
            continue
        tools = bodies[tkey] if tkey is not None else None
        if mode != "pieces":
            try:
                text = render_prompt(template, [bodies[k] for k in mkeys], tools)
            except InputError as exc:
                out.append(Plan(None, [], error=str(exc)))
                continue
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


def encode_pieces(pieces: Pieces) -> None:
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
    for i in pieces.pending:  # only the ids are read from here on: the text can go
        pieces.texts[i] = None
        pieces.held += len(pieces.ids[i])
    pieces.pending = []


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
        self.pieces = Pieces(bundle.encoder)

    def _text_ids(self, text: str) -> np.ndarray:
        if self.mode == "whole":
            return self.bundle.encoder.encode_whole(text)
        return self.bundle.encoder.encode_many([text])[0]

    def get(self, row: PromptRow, bodies: dict[int, object]) -> PromptIds:
        """The prompt ids of ``row``; ``bodies`` holds its contents by key. ``InputError`` when
        the chat template raises for it (such a request has no chain)."""
        (plan,) = request_plans([row], bodies, self.template, self.pieces, self.mode, set())
        if plan.error is not None:
            raise InputError(f"request {row.req_id}: chat template: {plan.error}")
        encode_pieces(self.pieces)
        parts = [self.pieces.tokens(p) for p in plan.pieces + list(plan.tail)]
        ids = np.concatenate(parts) if parts else np.zeros(0, TOKEN_DTYPE)
        if row.kind != "chat":
            return PromptIds(ids, len(ids), 0)
        if self.mode == "pieces":
            end = sum(len(self.pieces.tokens(p)) for p in plan.pieces)
            return PromptIds(ids, end, len(self.pieces.tokens(plan.pieces[0])))
        messages = [bodies[k] for k in row.message_keys]
        tools = bodies[row.tools_key] if row.tools_key is not None else None
        try:
            nogen = self._text_ids(render_prompt(self.template, messages, tools, generation=False))
        except InputError:  # the template refuses a prompt without generation: all of it counts
            nogen = ids
        head = render_head(self.template, messages, tools)
        head_end = _common(ids, self._text_ids(head)) if head else 0
        return PromptIds(ids, _common(ids, nogen), head_end)


def request_token_ids(
    con: Connection, bundle: TokenizerBundle, req_id: int, mode: str
) -> np.ndarray:
    """Token ids of one stored request as a tokenize pass in ``mode`` computed them (for
    previews); uses and fills the bundle's segment cache."""
    row = prompt_row(con, req_id)
    if row is None or row.kind == "hash":
        return np.zeros(0, TOKEN_DTYPE)
    return PromptTokens(bundle, mode).get(row, load_contents(con, row.content_keys())).ids
