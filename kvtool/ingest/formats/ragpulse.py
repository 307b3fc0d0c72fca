"""RAGPulse traces: each request is a list of content chunks, whose lengths live in companion files.

Schema: RAGPulse (github.com/flashserve/RAGPulse, MIT; arXiv 2511.12979), a week of a university
RAG Q&A service. ``0_trace.jsonl`` holds one request per line: ``timestamp`` (seconds from the
trace's start, logged as a string such as ``"82"``), ``input_length``, ``output_length``,
``session_id`` and ``hash_ids``, an object of components (``sys_prompt``, ``passages_ids``,
``history``, ``web_search``, ``user_input``), each a list of chunk ids. Five companion files in
the same directory (``1_sys_prompt.jsonl`` ... ``5_web_search.jsonl``, optionally ``.gz`` or
``.zst``) give every chunk's length: ``{"passage_id": 17, "token_length": 286}``. Chunk ids are
unique across the five files; a chunk is at most 512 tokens (longer texts are split).

Identity. A chunk id names the same content wherever it appears (natural identity per chunk).
kvtool reads a request as its chunks laid end to end, in the order the record lists its
components (RAGPulse's own replay builds its prompts so), and cuts that token sequence into
``hash_block_size``-token blocks; a block's id is the hash of the chunk pieces it covers, and
the workload keys each block by its whole path, as for every hash trace. So a passage shared
after a different system prompt, or at another offset, is not a hit: what a prefix cache (vLLM)
reuses. Reading chunk ids alone ("flattened") counts every repeated chunk as cached, which no
prefix cache does; docs/mooncake.md gives both figures for this trace.

``input_length`` exceeds the chunks' sum by a few tokens (6 to 12 in the published trace: the
chat template). Those tokens are placed after the last chunk and taken as this request's own,
so they are never a hit (at most ``OWN_LIMIT`` of them; a request may make at most
``IDS_LIMIT`` block ids). A request whose chunks add up to more than ``input_length``, or that
names a chunk no companion file lists (or lists on a bad line), is rejected with the reason.
The companion files, read as files of their own (a directory of the trace), are checked line
by line and skipped: they hold no requests (format ``ragpulse-chunks``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import xxhash

from kvtool.errors import InputError
from kvtool.ingest.formats.base import (
    INT64_LIMIT,
    Format,
    FormatOptions,
    Normalized,
    Skip,
    int_or_none,
    parse_timestamp,
    shown,
    str_or_none,
)
from kvtool.ingest.formats.mooncake import positive_length
from kvtool.ingest.reader import open_input

COMPONENT_FILES = ("1_sys_prompt", "2_passages", "3_history", "4_user_input", "5_web_search")
SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst")
CHUNK_LIMIT = 2**31  # a chunk's token_length must be below this
OWN_LIMIT = 4096  # tokens of a request beyond its chunks (the published trace: 6 to 12)
IDS_LIMIT = 1 << 20  # block ids one request may make
_TAIL = -1  # the chunk id that stands for a request's own tokens after its last chunk


@dataclass
class ChunkLengths:
    """Every chunk's length from the companion files of one trace. ``bad`` names, per chunk id,
    why its length cannot be used (file:line: reason); ``unreadable`` lists companion lines
    without a usable id; ``missing`` the component files not found."""

    lengths: dict[int, int] = field(default_factory=dict)
    bad: dict[int, str] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def why_unknown(self, chunk: int, component: str) -> str:
        """The reject reason for a record naming ``chunk`` (in ``component``), not listed."""
        if chunk in self.bad:
            return f"{component} chunk {chunk}: {self.bad[chunk]}"
        notes = []
        if self.missing:
            notes.append(f"no {', '.join(self.missing)} next to the trace")
        if self.unreadable:
            many = len(self.unreadable)
            lines = "1 unreadable line" if many == 1 else f"{many} unreadable lines, first"
            notes.append(f"{lines} {self.unreadable[0]}")
        extra = f" ({'; '.join(notes)})" if notes else ""
        return f"{component} chunk {chunk} is in no component file{extra}"


def chunk_entry(rec: object) -> tuple[int, int]:
    """(chunk id, token length) of one companion record ``{"<kind>_id": id, "token_length":
    n}``; ``InputError`` for any other shape or an id or length out of range."""
    if not isinstance(rec, dict):
        raise InputError("record is not a JSON object")
    keys = [k for k in rec if k != "token_length"]
    if len(keys) != 1 or not keys[0].endswith("_id") or "token_length" not in rec:
        raise InputError('a chunk is {"<kind>_id": id, "token_length": n}')
    chunk = rec[keys[0]]
    if isinstance(chunk, bool) or not isinstance(chunk, int) or not 0 <= chunk < INT64_LIMIT:
        raise InputError(f"{keys[0]} must be an integer in 0..2**63, got {shown(chunk)}")
    n = rec["token_length"]
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n < CHUNK_LIMIT:
        raise InputError(f"token_length must be an integer in 0..2**31, got {shown(n)}")
    return chunk, n


def read_chunk_lengths(directory: Path) -> ChunkLengths:
    """The chunk lengths of the companion files in ``directory`` (see ``ChunkLengths``)."""
    out = ChunkLengths()
    where: dict[int, str] = {}
    for stem in COMPONENT_FILES:
        path = next(
            (directory / (stem + s) for s in SUFFIXES if (directory / (stem + s)).is_file()), None
        )
        if path is None:
            out.missing.append(stem + ".jsonl")
            continue
        with open_input(path) as stream:
            for line in stream.lines():
                at = f"{path.name}:{line.number}"
                if line.error == "blank line":
                    continue
                try:
                    if line.error is not None:
                        raise InputError(line.error)
                    chunk, n = chunk_entry(line.parsed)
                except InputError as exc:
                    rec = line.parsed if isinstance(line.parsed, dict) else {}
                    ids = [v for k, v in rec.items() if k.endswith("_id") and isinstance(v, int)]
                    if len(ids) == 1:
                        out.bad[ids[0]] = f"{at}: {exc}"
                    else:
                        out.unreadable.append(f"{at}: {exc}")
                    continue
                if chunk in out.lengths and out.lengths[chunk] != n:
                    out.bad[chunk] = f"listed with two lengths ({where[chunk]}, {at})"
                out.lengths[chunk] = n
                where.setdefault(chunk, at)
    for chunk in out.bad:
        out.lengths.pop(chunk, None)
    return out


def block_ids(pieces: list[tuple[int, int]], n: int, block_size: int, tail: int) -> list[int]:
    """One id per ``block_size`` tokens of an ``n``-token prompt made of ``pieces`` (chunk id,
    length) laid end to end, then ``n - Σ lengths`` tokens of this request's own (``tail``
    tells them apart from any other request's). A block's id hashes the (chunk, offset, length)
    pieces it covers, so equal ids mean equal tokens. ``⌈n/B⌉`` ids; the last may be partial."""
    spans = [(c, length) for c, length in pieces if length > 0]
    rest = n - sum(length for _, length in spans)
    if rest:
        spans.append((_TAIL, rest))
    ids: list[int] = []
    parts: list[int] = []
    room = block_size
    for chunk, length in spans:
        offset = 0
        while offset < length:
            take = min(room, length - offset)
            parts += (chunk if chunk != _TAIL else tail, offset, take)
            offset += take
            room -= take
            if room == 0:
                ids.append(_id(parts))
                parts, room = [], block_size
    if parts:
        ids.append(_id(parts))
    return ids


def _id(parts: list[int]) -> int:
    """A signed 64-bit id of a block's pieces (chunk ids and offsets, one tail marker < 0)."""
    text = ",".join(map(str, parts)).encode()
    v = xxhash.xxh3_64_intdigest(text)
    return v - 2**64 if v >= 2**63 else v


def make_ragpulse(options: FormatOptions) -> Callable[[dict], Normalized]:
    """Normalizer of RAGPulse trace lines; the companion files are read on the first record."""
    block_size = options.hash_block_size
    loaded: list[ChunkLengths | InputError] = []  # read once; an unreadable file, once too
    count = [0]

    def chunks() -> ChunkLengths:
        if options.source is None:
            raise InputError(
                "a RAGPulse trace needs its component files (1_sys_prompt.jsonl ...): "
                "read it from its directory, not a stream"
            )
        if not loaded:
            try:
                loaded.append(read_chunk_lengths(options.source.parent))
            except InputError as exc:  # a component file that cannot be opened or decoded
                loaded.append(exc)
        if isinstance(loaded[0], InputError):
            raise InputError(f"component file: {loaded[0]}")
        return loaded[0]

    def normalize_ragpulse(rec: dict) -> Normalized:
        components = rec.get("hash_ids")
        if not isinstance(components, dict) or not components:
            raise InputError("hash_ids must be an object of components (lists of chunk ids)")
        n = positive_length(rec.get("input_length"), "input_length")
        ts = rec.get("timestamp")
        if ts is None:
            raise InputError("timestamp is missing (seconds from the trace's start)")
        seconds = parse_timestamp(ts, "timestamp", unit="s")
        table = chunks()
        pieces: list[tuple[int, int]] = []
        for component, ids in components.items():
            if not isinstance(ids, list) or not all(
                isinstance(c, int) and not isinstance(c, bool) for c in ids
            ):
                raise InputError(f"hash_ids.{shown(component)} must be a list of chunk ids")
            for c in ids:
                if c not in table.lengths:
                    raise InputError(table.why_unknown(c, shown(component)))
                pieces.append((c, table.lengths[c]))
        total = sum(length for _, length in pieces)
        if total > n:
            raise InputError(f"the chunks add up to {total} tokens, more than input_length {n}")
        if n - total > OWN_LIMIT:
            raise InputError(
                f"input_length {n} is {n - total} tokens more than its chunks (at most "
                f"{OWN_LIMIT} are taken as the request's own)"
            )
        if -(-n // block_size) > IDS_LIMIT:
            raise InputError(
                f"input_length {n} makes more than {IDS_LIMIT} blocks of {block_size} tokens"
            )
        count[0] += 1
        return Normalized(
            kind="hash",
            request_id=str_or_none(rec.get("request_id"), "request_id"),
            ts=seconds,
            session_id=str_or_none(rec.get("session_id"), "session_id"),
            hash_ids=block_ids(pieces, n, block_size, -1 - count[0]),
            input_length=n,
            output_tokens=int_or_none(rec.get("output_length"), "output_length"),
        )

    return normalize_ragpulse


def make_chunks(options: FormatOptions) -> Callable[[dict], Normalized]:
    """Normalizer of companion lines: checked, then skipped (they hold no request)."""

    def normalize_chunk(rec: dict) -> Normalized:
        chunk_entry(rec)
        raise Skip("a RAGPulse chunk length: read with the trace in the same directory")

    return normalize_chunk


def _looks_like_chunk(rec: dict) -> bool:
    keys = [k for k in rec if k != "token_length"]
    return "token_length" in rec and len(keys) == 1 and keys[0].endswith("_id")


FORMATS = (
    Format(
        "ragpulse",
        make_ragpulse,
        lambda rec: isinstance(rec.get("hash_ids"), dict) and "input_length" in rec,
        priority=30,
        summary="RAGPulse RAG traces (chunk ids per component; lengths from companion files)",
        hash_trace=True,
    ),
    Format(
        "ragpulse-chunks",
        make_chunks,
        _looks_like_chunk,
        priority=30,
        summary="RAGPulse companion files (chunk id and token length): checked and skipped",
    ),
)
