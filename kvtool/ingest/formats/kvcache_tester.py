"""kv-cache-tester traces: one JSON document per conversation, sub-agents nested in it.

Schema: ``docs/trace_replay_tester.md`` of github.com/callanjfox/kv-cache-tester (Apache-2.0),
the traces its ``trace_replay_tester.py`` replays (agentic coding sessions, Claude Code). A file
is one object: ``id``, ``models``, ``block_size`` (tokens per hash id, 64 in the published
traces), ``hash_id_scope`` (``local``: ids numbered within the file; ``global``: shared
across files), ``tool_tokens``, ``system_tokens``, ``totals`` and ``requests``. A request is
``{"t": seconds from the conversation's start, "type": "s"|"n", "model", "in", "out",
"hash_ids", "input_types", "output_types", "stop", "api_time", "think_time"}``; ``hash_ids``
lists ``⌊in/B⌋`` ids (full blocks only) in the published traces, ``⌈in/B⌉`` is accepted too.
An entry ``{"type": "subagent", "t", "agent_id", "requests": [...], ...}`` is a sub-agent
the conversation spawned at ``t``; its requests' ``t`` count from that moment, as the
tester replays them, and they may nest further.

Normalized: the file is one line holding many records (``item`` numbers them in document
order, sub-agents' requests where they appear). The conversation is the session (its ``id``);
a sub-agent is a session of its own, ``<id>/<agent_id>`` (the tester replays it as a separate
user with its own history). Request ids are ``<id>:<path>``, e.g. ``t1:requests[3]`` or
``t1:requests[5].requests[0]``. ``ts`` is seconds from the conversation's start.

Identity: kvtool's path identity. The ids are stored as given and each block is keyed by its
whole path of ids within the file (``kvtool.traffic.workload``), which is how the tester's
cache simulation matches prefixes. Ids of a ``global`` trace are still read per file: blocks
two files share (the tool definitions) are not counted across files.

The file's ``block_size`` must equal the hash block size the file is read with
(``--hash-block-size``); every request of a file read at another one is rejected saying so.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from kvtool.errors import InputError
from kvtool.ingest.formats.base import (
    Format,
    FormatOptions,
    Normalized,
    int_or_none,
    parse_timestamp,
    shown,
    str_or_none,
)
from kvtool.ingest.formats.mooncake import check_block_ids, positive_length

MAX_NESTING = 8  # sub-agents of sub-agents deeper than this are rejected


def _seconds(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1e12:
        raise InputError(f"{what} must be a number of seconds >= 0, got {shown(value)}")
    return float(value)


def split_trace(doc: dict) -> Iterator[dict]:
    """The request records of one trace document, in document order, each ``{"trace",
    "block_size", "session", "at", "start", "request"}`` (``session``: the sub-agent path, ""
    for the conversation; ``start``: the seconds its ``t`` counts from), or with a ``problem``
    for a sub-agent entry that cannot be read. ``InputError`` for a document whose ``id``,
    ``block_size`` or ``requests`` is unusable (one rejected record)."""
    trace = doc.get("id")
    if not isinstance(trace, str | int) or isinstance(trace, bool) or trace == "":
        raise InputError("id must be a non-empty string (the conversation)")
    size = doc.get("block_size")
    if isinstance(size, bool) or not isinstance(size, int) or not 0 < size < 2**31:
        raise InputError(f"block_size must be a positive integer, got {shown(size)}")
    if not isinstance(doc.get("requests"), list):
        raise InputError("requests must be a list")
    yield from _entries(
        {"trace": str(trace), "block_size": size}, doc["requests"], "requests", "", 0.0, 0
    )


def _entries(
    head: dict, entries: list, path: str, agent: str, start: float, depth: int
) -> Iterator[dict]:
    for i, entry in enumerate(entries):
        at = f"{path}[{i}]"
        rec = {**head, "session": agent, "at": at, "start": start, "request": entry}
        if not (isinstance(entry, dict) and entry.get("type") == "subagent"):
            yield rec
            continue
        try:
            name = str_or_none(entry.get("agent_id"), f"{at}.agent_id") or at
            begin = start + _seconds(entry.get("t"), f"{at}.t")
            if not isinstance(entry.get("requests"), list):
                raise InputError(f"sub-agent {at}: requests must be a list")
            if depth >= MAX_NESTING:
                raise InputError(f"sub-agent {at}: nested deeper than {MAX_NESTING}")
        except InputError as exc:
            yield {**rec, "problem": str(exc)}
            continue
        inner = f"{agent}/{name}" if agent else name
        yield from _entries(head, entry["requests"], f"{at}.requests", inner, begin, depth + 1)


def make_kvcache_tester(options: FormatOptions) -> Callable[[dict], Normalized]:
    """Normalizer of the records ``split_trace`` gives."""
    block_size = options.hash_block_size

    def normalize(rec: dict) -> Normalized:
        if rec.get("problem"):
            raise InputError(rec["problem"])
        at, req = rec["at"], rec["request"]
        if not isinstance(req, dict):
            raise InputError(f"{at} is not an object")
        if rec["block_size"] != block_size:
            raise InputError(
                f"the trace's block_size is {rec['block_size']}, read at hash block size "
                f"{block_size}: read it with hash block size {rec['block_size']}"
            )
        n = positive_length(req.get("in"), f"{at}.in")
        ids = check_block_ids(req.get("hash_ids"), n, block_size, f"{at}.hash_ids", "in")
        t = _seconds(req.get("t"), f"{at}.t")
        trace, agent = rec["trace"], rec["session"]
        return Normalized(
            kind="hash",
            request_id=f"{trace}:{at}",
            ts=parse_timestamp(rec["start"] + t, f"{at}.t", unit="s"),
            session_id=f"{trace}/{agent}" if agent else trace,
            model=str_or_none(req.get("model"), f"{at}.model"),
            hash_ids=ids,
            input_length=n,
            output_tokens=int_or_none(req.get("out"), f"{at}.out"),
        )

    return normalize


def _looks_like(rec: dict) -> bool:
    reqs = rec.get("requests")
    if "block_size" not in rec or not isinstance(reqs, list):
        return False
    head = reqs[0] if reqs else {}
    return not reqs or (
        isinstance(head, dict)
        and (("hash_ids" in head and "in" in head) or head.get("type") == "subagent")
    )


FORMATS = (
    Format(
        "kv-cache-tester",
        make_kvcache_tester,
        _looks_like,
        records=split_trace,
        priority=30,
        summary="kv-cache-tester traces (a conversation per JSON file, sub-agents nested)",
        hash_trace=True,
    ),
)
