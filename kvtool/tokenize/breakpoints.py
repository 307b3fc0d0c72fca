"""Where a request's ``cache_control`` markers end its cached prefix, in kvtool's token ids.

A provider with explicit breakpoints (Anthropic) caches the prefix that ends at a marked
content block, and on a later request looks for an entry at the breakpoint and at earlier
block boundaries (the lookback). kvtool places both on its own rendering of the request
(``PromptTokens``; the head is the leading system messages then the tools, Anthropic's order is
tools, system, messages) at *boundaries*: token offsets where a part of the prompt ends.

Boundaries of a request, in order:

- the end of the head (``PromptIds.head_end``: leading system messages and tool catalog);
- with kvtool's default template (mode ``pieces``) the end of every later message: each is a
  piece, so its end is free;
- with a tokenizer's own chat template (modes ``segments`` / ``whole``) only the ends of the
  messages that carry a marker (one extra render each, the request up to that message without
  a generation prompt, compared with the prompt's ids as ``PromptTokens.get`` computes
  ``end``), and the end of the last message. The lookback then sees only these boundaries.

Markers resolve to boundaries (ingest's shapes, ``Normalized.cache_control``):

- ``{"tool": k}`` and a marker on a leading system message: the end of the head (kvtool renders
  system and tools as one head, so a marker on either caches both);
- ``{"message": i, ...}`` on a later message, whatever its ``part`` or ``tool_call``: the end of
  message i (a marker on an earlier part of a multi-part message caches the whole message:
  part ends are not rendered separately);
- ``{"auto": true}``: the end of the last message (``PromptIds.end``; Anthropic puts it on the
  last cacheable block).

A boundary also carries the number of Anthropic content blocks up to it (``content_blocks``: a
string content is one block, a list one per part, each tool call one, a tool result one, each
tool definition one), which the lookback window counts, and a 64-bit identity of the prefix
that ends there: the token ids before it, seeded by model and tenant, so two requests' prefixes
have equal identities exactly when model, tenant and ids agree (up to hash collisions). With
the default template the identity chains over the boundaries (each message's ids hashed onto
the one before), so the cost stays linear in the prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xxhash

from kvtool.errors import InputError
from kvtool.store.requests import PromptRow
from kvtool.tokenize.plans import PromptTokens
from kvtool.tokenize.template import SYSTEM_ROLES, render_prompt


def content_blocks(message: dict) -> int:
    """The Anthropic content blocks of one normalized message (module docstring)."""
    if message.get("role") in ("tool", "function"):
        return 1
    content = message.get("content")
    parts = 0 if content is None else 1 if isinstance(content, str) else len(content)
    return parts + len(message.get("tool_calls") or ())


@dataclass(frozen=True)
class RequestMarks:
    """One request's boundaries (``ends`` token offsets, increasing; ``blocks`` content blocks
    up to each; ``hashes`` prefix identities) and its markers: ``mark_at`` the boundary index of
    each marker (in logged order), ``mark_ttl`` each marker's TTL name ("" when it names none)."""

    ends: np.ndarray
    blocks: np.ndarray
    hashes: np.ndarray
    mark_at: np.ndarray
    mark_ttl: tuple[str, ...]


@dataclass(frozen=True)
class Breakpoints:
    """The markers of a list of requests (a workload's processing order), flat: request i's
    boundaries are ``[bounds[i], bounds[i+1])`` of ``ends`` / ``blocks`` / ``hashes`` and its
    markers ``[marks[i], marks[i+1])`` of ``mark_at`` (a global boundary index, within the
    request's own range) and ``mark_ttl`` (an index into ``ttl_names``; "" names no TTL). A
    request without markers has neither."""

    bounds: np.ndarray
    ends: np.ndarray
    blocks: np.ndarray
    hashes: np.ndarray
    marks: np.ndarray
    mark_at: np.ndarray
    mark_ttl: np.ndarray
    ttl_names: tuple[str, ...]

    @property
    def n(self) -> int:
        return len(self.bounds) - 1

    @classmethod
    def build(cls, requests: list[RequestMarks | None]) -> Breakpoints:
        """The flat form of per-request marks (None: a request without markers)."""
        names: dict[str, int] = {}
        bounds, marks = [0], [0]
        ends, blocks, hashes, mark_at, mark_ttl = [], [], [], [], []
        for r in requests:
            if r is not None:
                mark_at.append(r.mark_at + bounds[-1])
                mark_ttl.extend(names.setdefault(t, len(names)) for t in r.mark_ttl)
                ends.append(r.ends)
                blocks.append(r.blocks)
                hashes.append(r.hashes)
                bounds.append(bounds[-1] + len(r.ends))
                marks.append(marks[-1] + len(r.mark_at))
            else:
                bounds.append(bounds[-1])
                marks.append(marks[-1])

        def flat(parts: list[np.ndarray]) -> np.ndarray:
            return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)

        return cls(
            bounds=np.asarray(bounds, np.int64),
            ends=flat(ends),
            blocks=flat(blocks),
            hashes=flat(hashes),
            marks=np.asarray(marks, np.int64),
            mark_at=flat(mark_at),
            mark_ttl=np.asarray(mark_ttl, np.int64),
            ttl_names=tuple(names),
        )


def _common(a: np.ndarray, b: np.ndarray) -> int:
    m = min(len(a), len(b))
    diff = np.flatnonzero(a[:m] != b[:m])
    return int(diff[0]) if len(diff) else m


def _salt(row: PromptRow) -> int:
    return xxhash.xxh3_64_intdigest(f"{row.model or ''}\x00{row.tenant or ''}".encode())


def _as_int64(values: list[int]) -> np.ndarray:
    return np.asarray(values, np.uint64).view(np.int64)


HEAD = -1  # a marker on a tool: the head, as a marker on a leading system message


def _marker_message(marker: dict, n_messages: int, req_id: int) -> int:
    """The message whose end a marker names (``HEAD`` for a tool marker; the last message for
    the automatic marker); ``InputError`` for a shape ingest does not write."""
    if marker.get("auto") is True:
        return n_messages - 1
    if "tool" in marker:
        return HEAD
    i = marker.get("message")
    if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n_messages:
        raise InputError(f"request {req_id}: unusable cache_control marker {str(marker)[:80]}")
    return i


def request_marks(
    tokens: PromptTokens, row: PromptRow, bodies: dict[int, object], markers: tuple[dict, ...]
) -> RequestMarks | None:
    """The boundaries and markers of one stored chat request (None for another kind: only chat
    requests carry markers). ``InputError`` when the chat template raises for it."""
    if row.kind != "chat" or not markers:
        return None
    prompt = tokens.get(row, bodies)
    ids = prompt.ids
    messages = [bodies[k] for k in row.message_keys]
    tools = bodies[row.tools_key] if row.tools_key is not None else None
    n_sys = 0
    while n_sys < len(messages) and messages[n_sys].get("role") in SYSTEM_ROLES:
        n_sys += 1
    per_message = np.array([content_blocks(m) for m in messages], np.int64)
    head_blocks = int(per_message[:n_sys].sum()) + len(tools or ())
    through = head_blocks + np.cumsum(per_message[n_sys:])  # blocks up to message n_sys + k
    wanted = [_marker_message(m, len(messages), row.req_id) for m in markers]
    salt = _salt(row)
    if tokens.mode == "pieces":
        pieces = tokens.pieces
        lengths = [len(pieces.tokens(pieces.by_message[k])) for k in row.message_keys[n_sys:]]
        ends = np.concatenate([[prompt.head_end], prompt.head_end + np.cumsum(lengths)])
        blocks = np.concatenate([[head_blocks], through])
        hashes, seed, start = [], salt, 0
        for end in ends:
            seed = xxhash.xxh3_64_intdigest(ids[start:end].tobytes(), seed=seed)
            hashes.append(seed)
            start = int(end)
        at = [0 if i < n_sys else 1 + i - n_sys for i in wanted]
        return RequestMarks(
            ends.astype(np.int64),
            blocks,
            _as_int64(hashes),
            np.asarray(at, np.int64),
            tuple(m.get("ttl") or "" for m in markers),
        )
    # a tokenizer's own template: the head, the marked messages and the last message only
    found: dict[int, int] = {prompt.head_end: head_blocks}  # token offset -> blocks up to it
    offsets = []
    for i in wanted:
        if i < n_sys:
            end, count = prompt.head_end, head_blocks
        elif i == len(messages) - 1:
            end, count = prompt.end, int(through[-1])
        else:
            end = _message_end(tokens, ids, messages[: i + 1], tools, prompt.head_end)
            count = int(through[i - n_sys]) if end > prompt.head_end else head_blocks
        found[end] = min(found.get(end, count), count)
        offsets.append(end)
    ends = np.array(sorted(found), np.int64)
    hashes = [xxhash.xxh3_64_intdigest(ids[:e].tobytes(), seed=salt) for e in ends]
    return RequestMarks(
        ends,
        np.array([found[int(e)] for e in ends], np.int64),
        _as_int64(hashes),
        np.searchsorted(ends, offsets).astype(np.int64),
        tuple(m.get("ttl") or "" for m in markers),
    )


def _message_end(
    tokens: PromptTokens, ids: np.ndarray, messages: list[dict], tools: list | None, head: int
) -> int:
    """Where the prompt ``ids`` stop agreeing with the request rendered up to the last of
    ``messages`` without a generation prompt; ``head`` (the head's end) when the template
    refuses that shorter request."""
    try:
        text = render_prompt(tokens.template, messages, tools, generation=False)
    except InputError:
        return head
    if tokens.mode == "whole":
        part = tokens.bundle.encoder.encode_whole(text)
    else:
        part = tokens.bundle.encoder.encode_many([text])[0]
    return _common(ids, part)
