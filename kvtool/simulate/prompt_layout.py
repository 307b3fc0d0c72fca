"""Where things sit in each request's token ids: what the breakpoint advisor places breakpoints
at and moves fields out of (``kvtool.simulate.advisor``).

A ``PromptLayout`` is one stored request rebuilt exactly as its tokenize pass computed it
(``PromptTokens``, the stored mode), with its *boundaries*, the token offsets where a part of
the prompt ends that the explicit-cache simulation may look up, and the Anthropic content
blocks up to each (what the lookback counts, ``kvtool.tokenize.breakpoints.content_blocks``).
They are the ones ``kvtool.tokenize.breakpoints`` places logged markers on: with kvtool's
default template (mode ``pieces``) the end of the head (leading system messages and tool
catalog) and of every message; with a tokenizer's own template the end of the head and of the
last message only (a marked message adds its own end). The end of the previous turn (the
message before the last assistant message) is a candidate breakpoint either way; with a
tokenizer's own template it costs one more render.

Invariant: ``bounds`` is increasing, holds ``head_end`` (when above 0) and ``end``, and every
bound is at most ``len(ids)``. A completion request has one boundary, the end of its prompt.
``head_text`` is the head as rendered, for the volatile-field scan.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kvtool.errors import InputError
from kvtool.store import Connection
from kvtool.store.requests import PromptRow, content_keys, load_contents, request_rows
from kvtool.tokenize.breakpoints import content_blocks
from kvtool.tokenize.loader import TokenizerBundle
from kvtool.tokenize.plans import PromptTokens
from kvtool.tokenize.template import (
    SYSTEM_ROLES,
    DefaultTemplate,
    content_text,
    render_head,
    render_prompt,
)

LAYOUT_BATCH = 2_000  # requests whose contents are read in one query


@dataclass(frozen=True)
class SystemText:
    """One leading system message: its index among the request's messages, where its text
    starts in the head text (-1 when the rendering does not hold it verbatim), the text, and
    its text parts as (start within the text, part index)."""

    message: int
    start: int
    text: str
    parts: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class PromptLayout:
    """One request's token ids and boundaries (module docstring): ``bounds`` token offsets and
    ``blocks`` the content blocks up to each, ``head_end`` and ``end`` among them;
    ``prev_turn_end`` (None without an earlier assistant turn) with its ``prev_turn_blocks``
    is a boundary only with the default template. ``model`` and ``tenant`` key its cache;
    ``request_id`` is the id the log gave it (or kvtool made); ``systems`` locates the system
    messages in ``head_text``; ``chat``: a chat request (only those carry breakpoints)."""

    req_id: int
    request_id: str
    model: str | None
    tenant: str | None
    ids: np.ndarray
    bounds: tuple[int, ...]
    blocks: tuple[int, ...]
    head_end: int
    prev_turn_end: int | None
    prev_turn_blocks: int | None
    end: int
    head_text: str
    systems: tuple[SystemText, ...]
    chat: bool = True

    def blocks_at(self, offset: int) -> int:
        """Content blocks up to ``offset``: those of the last boundary at or before it."""
        k = int(np.searchsorted(np.asarray(self.bounds), offset, side="right")) - 1
        return self.blocks[k] if k >= 0 else 0


def prompt_layouts(
    con: Connection, bundle: TokenizerBundle, mode: str, signature: str, req_ids: np.ndarray
) -> list[PromptLayout]:
    """The layout of every request of ``req_ids`` (in that order; each has a chain for
    ``signature``), rebuilt with ``bundle`` in the stored ``mode``."""
    tokens = PromptTokens(bundle, mode)
    rows = request_rows(con, signature, req_ids=[int(i) for i in req_ids])
    out: list[PromptLayout] = []
    for lo in range(0, len(rows), LAYOUT_BATCH):
        chunk = rows[lo : lo + LAYOUT_BATCH]
        bodies = load_contents(con, content_keys(r.prompt for r in chunk))
        out.extend(_layout(tokens, row.prompt, row.request_id, bodies) for row in chunk)
    return out


def encode_text(bundle: TokenizerBundle, mode: str, text: str) -> np.ndarray:
    """``text``'s ids as a tokenize pass in ``mode`` tokenizes a whole text (segments cached
    by the bundle's encoder)."""
    encoder = bundle.encoder
    return encoder.encode_whole(text) if mode == "whole" else encoder.encode_many([text])[0]


def _layout(
    tokens: PromptTokens, row: PromptRow, request_id: str, bodies: dict[int, object]
) -> PromptLayout:
    got = tokens.get(row, bodies)
    ids = got.ids
    if row.kind != "chat":
        return PromptLayout(
            row.req_id,
            request_id,
            row.model,
            row.tenant,
            ids,
            (got.end,),
            (1,),
            0,
            None,
            None,
            got.end,
            "",
            (),
            False,
        )
    messages = [bodies[k] for k in row.message_keys]
    tools = bodies[row.tools_key] if row.tools_key is not None else None
    n_sys = 0
    while n_sys < len(messages) and messages[n_sys].get("role") in SYSTEM_ROLES:
        n_sys += 1
    per_message = [content_blocks(m) for m in messages]
    head_blocks = sum(per_message[:n_sys]) + len(tools or ())
    through = head_blocks + np.cumsum(per_message[n_sys:], dtype=np.int64)
    found = {got.head_end: head_blocks} if got.head_end > 0 else {}
    if len(messages) > n_sys:
        found[got.end] = int(through[-1])
    last_assistant = max(
        (k for k in range(n_sys + 1, len(messages)) if messages[k].get("role") == "assistant"),
        default=None,
    )
    pieces = tokens.mode == "pieces" and isinstance(tokens.template, DefaultTemplate)
    prev = prev_blocks = None
    if last_assistant is not None:
        prev_blocks = int(through[last_assistant - 1 - n_sys])
    if pieces:
        by_message = tokens.pieces.by_message
        lengths = [len(tokens.pieces.tokens(by_message[k])) for k in row.message_keys[n_sys:]]
        ends = got.head_end + np.cumsum(lengths, dtype=np.int64)
        found.update((int(e), int(b)) for e, b in zip(ends, through, strict=True))
        if last_assistant is not None:
            prev = int(ends[last_assistant - 1 - n_sys])
    elif last_assistant is not None:
        prev = _message_end(tokens, ids, messages[:last_assistant], tools, got.head_end)
    head_text = render_head(tokens.template, messages, tools)
    bounds = sorted(found)
    return PromptLayout(
        req_id=row.req_id,
        request_id=request_id,
        model=row.model,
        tenant=row.tenant,
        ids=ids,
        bounds=tuple(bounds),
        blocks=tuple(found[b] for b in bounds),
        head_end=got.head_end,
        prev_turn_end=prev,
        prev_turn_blocks=prev_blocks,
        end=got.end,
        head_text=head_text,
        systems=_systems(head_text, messages[:n_sys]),
    )


def _message_end(
    tokens: PromptTokens, ids: np.ndarray, messages: list[dict], tools: list | None, head: int
) -> int:
    """Where ``ids`` stop agreeing with the request rendered up to the last of ``messages``
    without a generation prompt; the head's end when the template refuses that request."""
    try:
        text = render_prompt(tokens.template, messages, tools, generation=False)
    except InputError:
        return head
    return max(_common(ids, encode_text(tokens.bundle, tokens.mode, text)), head)


def _common(a: np.ndarray, b: np.ndarray) -> int:
    m = min(len(a), len(b))
    diff = np.flatnonzero(a[:m] != b[:m])
    return int(diff[0]) if len(diff) else m


def _systems(head_text: str, systems: list[dict]) -> tuple[SystemText, ...]:
    """Each leading system message located in the head text, in order."""
    out = []
    cursor = 0
    for k, msg in enumerate(systems):
        content = msg.get("content")
        text = content_text(content)
        parts: list[tuple[int, int]] = []
        if isinstance(content, list):
            at = 0
            for j, part in enumerate(content):
                parts.append((at, j))
                at += len(content_text([part]))
        start = head_text.find(text, cursor) if text else -1
        if start >= 0:
            cursor = start + len(text)
        out.append(SystemText(k, start, text, tuple(parts)))
    return tuple(out)
