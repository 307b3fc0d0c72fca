"""Qwen-Bailian usage traces: per request its chat, the chat it follows, and 16-token block ids.

Schema: the README of github.com/alibaba-edu/qwen-bailian-usagetraces-anon (Apache-2.0; the
KVCache-in-the-wild paper, USENIX ATC '25): one JSON line per request with ``chat_id``
(randomized, sequential), ``parent_chat_id`` (-1 for a root request), ``timestamp`` (seconds
from the trace's start), ``input_length``, ``output_length``, ``type`` (text, search, image,
file), ``turn`` (the conversation turn) and ``hash_ids``, one id per 16-token block: a salted
SipHash of the block, remapped to sequential integers. The last id covers the partial block
and may differ from the next turn's id for the same tokens (the traces' Q&A: padding replaced
by the first output token); kvtool never caches a partial block, so this changes nothing.

Normalized: ``request_id`` is the ``chat_id``; the session is the root of the chain of
parents, the first ``chat_id`` of the conversation (a parent not seen earlier in the file is
taken as the root itself). ``type`` and ``turn`` are checked, not stored.

Identity: kvtool's path identity. The README calls the ids per-block hashes, so equal ids can
stand for equal 16 tokens at different places; the workload keys each block by its whole path
of ids (``kvtool.traffic.workload``), so a block is reused only after the same prefix, as a
prefix cache (vLLM) reuses it. Read with ``--hash-block-size 16``; a file read at another
block size has its lines rejected saying so.
"""

from __future__ import annotations

from collections.abc import Callable

from kvtool.errors import InputError
from kvtool.ingest.formats.base import (
    INT64_LIMIT,
    Format,
    FormatOptions,
    Normalized,
    int_or_none,
    parse_timestamp,
    shown,
    str_or_none,
)
from kvtool.ingest.formats.mooncake import check_block_ids, positive_length

BLOCK_SIZE = 16  # tokens per id in every published Bailian trace
TYPES = ("text", "search", "image", "file")


def _chat(value: object, what: str, root_ok: bool = False) -> int:
    low = -1 if root_ok else 0
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value < INT64_LIMIT:
        raise InputError(f"{what} must be an integer >= {low}, got {shown(value)}")
    return value


def make_bailian(options: FormatOptions) -> Callable[[dict], Normalized]:
    """Normalizer of Bailian trace lines; remembers each chat's root for the session."""
    block_size = options.hash_block_size
    roots: dict[int, int] = {}

    def normalize(rec: dict) -> Normalized:
        chat = _chat(rec.get("chat_id"), "chat_id")
        parent = _chat(rec.get("parent_chat_id"), "parent_chat_id", root_ok=True)
        if parent == chat:
            raise InputError(f"parent_chat_id is the request's own chat_id {chat}")
        turn = rec.get("turn")
        if turn is not None:
            _chat(turn, "turn")
        kind = rec.get("type")
        if kind is not None and kind not in TYPES:
            raise InputError(f"type must be one of {', '.join(TYPES)}, got {shown(kind)}")
        n = positive_length(rec.get("input_length"), "input_length")
        try:
            ids = check_block_ids(rec.get("hash_ids"), n, block_size)
        except InputError as exc:
            if block_size != BLOCK_SIZE and isinstance(rec.get("hash_ids"), list):
                raise InputError(
                    f"{exc} (the Bailian traces use {BLOCK_SIZE}-token blocks: read them "
                    f"with hash block size {BLOCK_SIZE})"
                ) from None
            raise
        ts = rec.get("timestamp")
        if ts is None:
            raise InputError("timestamp is missing (seconds from the trace's start)")
        seconds = parse_timestamp(ts, "timestamp", unit="s")
        root = chat if parent < 0 else roots.get(parent, parent)
        roots[chat] = root
        return Normalized(
            kind="hash",
            request_id=str(chat),
            ts=seconds,
            session_id=str(root),
            model=str_or_none(rec.get("model"), "model"),
            hash_ids=ids,
            input_length=n,
            output_tokens=int_or_none(rec.get("output_length"), "output_length"),
        )

    return normalize


FORMATS = (
    Format(
        "bailian",
        make_bailian,
        lambda rec: "chat_id" in rec and "hash_ids" in rec and "input_length" in rec,
        priority=30,
        summary="Qwen-Bailian usage traces (chat_id, parent_chat_id, 16-token block ids)",
        hash_trace=True,
    ),
)
