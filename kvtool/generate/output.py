"""Writing a generated file: the JSONL records in timestamp order, and the truth next to it.

``write_records`` merges the sessions' turns by timestamp (ties: lower session first, then step
order), numbers each session's requests from 0 and writes one orjson line per request, gzip when
the name ends with ``.gz`` (level 6, mtime 0, no file name in the header, so the same records give
the same bytes). It returns what the truth needs, measured on the records as written.
``write_truth`` writes ``GenerationTruth`` as indented JSON to ``<out>.truth.json``.
"""

from __future__ import annotations

import gzip
import heapq
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from io import BufferedIOBase
from operator import attrgetter
from pathlib import Path
from typing import Any

import orjson

from kvtool.generate.turns import Turn, utc
from kvtool.store import check_output

_FLUSH_BYTES = 1 << 22


@dataclass(frozen=True)
class GenerationTruth:
    """What a generated file contains, by construction.

    Invariants: ``sessions == len(requests_per_session)``; ``requests`` is the number of records
    and equals ``sum(requests_per_session.values())``; ``output_tokens`` is the exact sum of
    ``response.usage.completion_tokens``. ``continuation`` is True when every non-first request of
    a session starts with all messages of that session's previous request, unchanged (agent, chat).
    ``shared_prefix_messages`` is the number of leading messages identical in every request
    (measured on the written records; 1 = the system prompt). ``tools`` is the agent tool catalog,
    else None. ``breaks`` has one row per request that breaks its predecessor's prefix (injected
    breakers, file order): ``{"request_id", "predecessor_id", "session_id", "cause", "path",
    "variant"}``; ``path`` names the first difference, in the order model, ``messages[0]``,
    ``tools[0..]``, ``messages[1..]`` (e.g. ``tools[3].function.description``,
    ``messages[5].content``).
    """

    kind: str
    seed: int
    sessions: int
    requests: int
    output_tokens: int
    requests_per_session: dict[str, int]
    continuation: bool
    shared_prefix_messages: int
    system_prompt: str
    tools: list[dict] | None
    model: str
    breaks: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        """A JSON-ready dict with the fields in declaration order."""
        return asdict(self)


@dataclass(frozen=True)
class RecordFormat:
    """What every record of a file shares: ``users[i]`` is session i's user; ``model`` and
    ``tools`` are the defaults that a ``Turn`` may override; ``session_ids`` adds ``session_id``."""

    kind: str
    model: str
    tools: list[dict] | None
    temperature: float
    session_ids: bool
    users: list[str]


@dataclass(frozen=True)
class WrittenRecords:
    """What ``write_records`` wrote: ``counts[i]`` requests of session i, their completion tokens
    in all, the leading messages shared by every request, and the truth row of each break."""

    counts: list[int]
    output_tokens: int
    shared_prefix_messages: int
    breaks: list[dict]


def session_id(kind: str, i: int) -> str:
    """The id of session ``i`` of a ``kind`` file (also the key of ``requests_per_session``)."""
    return f"{kind}-s{i:05d}"


def _iso(ms: int) -> str:
    return f"{utc(ms):%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


@contextmanager
def _open(out: Path) -> Iterator[BufferedIOBase]:
    """The output file for writing; gzip (level 6) when its name ends with .gz."""
    with open(out, "wb") as raw:
        if not out.name.endswith(".gz"):
            yield raw
            return
        # mtime=0 and no file name in the header: the same records give the same bytes
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0) as gz:
            yield gz


@dataclass(frozen=True, slots=True)
class _Tagged:
    ts: int
    session: int
    turn: Turn


def _tag(session: int, turns: Iterable[Turn]) -> Iterator[_Tagged]:
    for turn in turns:
        yield _Tagged(turn.ts, session, turn)


def _common(a: list[dict], b: list[dict], limit: int) -> int:
    """Length of the common leading run of ``a`` and ``b``, at most ``limit``."""
    n = min(limit, len(b))
    for j in range(n):
        if a[j] is not b[j] and a[j] != b[j]:
            return j
    return n


def write_records(out: Path, fmt: RecordFormat, sessions: list[Iterator[Turn]]) -> WrittenRecords:
    """Write the turns of ``sessions`` (session i is ``sessions[i]``) to ``out``, by timestamp;
    ``OptionError`` on ``out`` when it is a directory."""
    check_output(out, param="out")
    kind, model, tools = fmt.kind, fmt.model, fmt.tools
    breaks: list[dict] = []
    counts = [0] * len(sessions)
    output_tokens = 0
    first: list[dict] | None = None
    shared_n = 0
    dumps = orjson.dumps
    opt = orjson.OPT_APPEND_NEWLINE
    buf: list[bytes] = []
    size = 0
    streams = [_tag(i, turns) for i, turns in enumerate(sessions)]
    with _open(out) as f:
        for tagged in heapq.merge(*streams, key=attrgetter("ts")):
            i, turn = tagged.session, tagged.turn
            ts, messages, completion = turn.ts, turn.messages, turn.completion
            step = counts[i]
            counts[i] = step + 1
            output_tokens += completion
            if first is None:
                first, shared_n = messages, len(messages)
            else:
                shared_n = _common(first, messages, shared_n)
            rid = f"req-{kind}-{i:05d}-{step:03d}"
            sid = session_id(kind, i)
            req_model, req_tools = turn.model or model, turn.tools or tools
            if turn.broken is not None:
                breaks.append(
                    {
                        "request_id": rid,
                        "predecessor_id": f"req-{kind}-{i:05d}-{step - 1:03d}",
                        "session_id": sid,
                        "cause": turn.broken.cause,
                        "path": turn.broken.path,
                        "variant": turn.broken.variant,
                    }
                )
            request = {"model": req_model, "messages": messages}
            if req_tools is not None:
                request["tools"] = req_tools
            request["temperature"] = fmt.temperature
            record: dict[str, Any] = {"id": rid, "timestamp": _iso(ts)}
            if fmt.session_ids:
                record["session_id"] = sid
            record["user"] = fmt.users[i]
            record["request"] = request
            record["response"] = {
                "id": f"resp-{kind}-{i:05d}-{step:03d}",
                "created": ts // 1000,
                "model": req_model,
                "usage": {"completion_tokens": completion},
            }
            line = dumps(record, option=opt)
            buf.append(line)
            size += len(line)
            if size >= _FLUSH_BYTES:
                f.write(b"".join(buf))
                buf.clear()
                size = 0
        f.write(b"".join(buf))
    return WrittenRecords(counts, output_tokens, shared_n, breaks)


def write_truth(truth: GenerationTruth, out: Path) -> None:
    """Write ``truth`` as indented JSON (trailing newline) to ``<out>.truth.json``."""
    Path(f"{out}.truth.json").write_bytes(
        orjson.dumps(truth.to_json(), option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
    )
