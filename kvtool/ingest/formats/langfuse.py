"""Langfuse observation exports: one observation per record, GENERATION observations only.

Shapes read (field names from Langfuse's own code: ``fern/apis/server/definition/commons.yml``,
``observations_converters.ts``, ``buildTraceExport.ts``, ``observation-field-groups.ts``):

- the public API's observations (``GET /api/public/observations`` v1, ``/v2/observations``) and
  the UI batch export (JSONL; CSV rows arrive with JSON columns as JSON strings): camelCase,
  ``model`` (v1, export) or ``providedModelName`` (v2), ``startTime`` ISO-8601;
- the blob-storage export: snake_case columns (``start_time`` as ClickHouse writes it, UTC
  without a zone, ``provided_model_name``, ``usage_details`` with quoted 64-bit counts,
  ``input`` as JSON text);
- a trace holding its observations (``GET /api/public/traces/{id}``, the UI trace download) and
  an API page (``{"data": [...], "meta": ...}``): ``langfuse_records`` splits the line, and an
  observation without ``sessionId``/``userId``/``projectId`` takes the trace's.

Fields: ``id`` (request id), ``startTime`` (ISO; a number, off-schema, is read as JavaScript
epoch milliseconds), ``sessionId`` (no fallback to ``traceId``: a trace is one run, not a
conversation), tenant = ``projectId`` (the Langfuse project: the only org/key-like domain the
export has; None when not logged: one domain), end user = ``userId`` (the observation's, else
its trace's; never the tenant).

Input: a list of OpenAI chat messages, an object with ``messages`` and ``tools`` /
``functions`` (the OpenAI integration logs that when tools are passed), or a string (a
completions prompt). LangChain's callback handler logs tool calls as ``{"name", "args", "id"}``
and appends the tool definitions as trailing ``{"role": "tool", "content": <tool>}``
messages: both are turned into the OpenAI shape, and its ``additional_kwargs`` (handler
metadata, not prompt text) are left out. No input logged (an export without the io field
group) gives a request marked ``incomplete``.

Usage (the trap): in ``usageDetails`` Langfuse stores ``input`` *without* its details: the
server and the SDK integrations subtract every ``input_*`` detail from ``input``
(``input_cached_tokens``, ``input_cache_read``, ``input_cache_creation[_5m|_1h]``,
``input_cache_write``, ``input_audio_tokens``, ...). The whole prompt is therefore the sum of
every usage key that names input, which is also how Langfuse itself totals input
(``reduceUsageOrCostDetails``). Cache reads are the keys naming ``cached``/``cache_read``,
cache writes those naming ``cache_creation``/``cache_write``. Not added twice: LangChain's
``input_priority*`` keys (not subtracted by the handler) and its ``cache_creation_ephemeral_*``
breakdown when the aggregate ``cache_creation_input_tokens`` is there. The deprecated ``usage``
object (v1 API) has ``input`` = that same whole-prompt sum; it is read only when no
``usageDetails`` are logged, and says nothing of cached tokens.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from kvtool.errors import InputError
from kvtool.ingest.formats.base import (
    INT64_LIMIT,
    Format,
    Normalized,
    Skip,
    int_or_none,
    parse_timestamp,
    set_usage,
    str_or_none,
)
from kvtool.ingest.formats.chat import (
    check_openai_messages,
    check_tools,
    openai_tool,
    openai_tool_call,
)

OBSERVATION_TYPES = frozenset(
    {
        "GENERATION",
        "SPAN",
        "EVENT",
        "AGENT",
        "TOOL",
        "CHAIN",
        "RETRIEVER",
        "EVALUATOR",
        "EMBEDDING",
        "GUARDRAIL",
    }
)
TRACE_KEYS = ("sessionId", "userId", "projectId")  # carried from a trace into its observations


def json_value(value: Any) -> Any:
    """A column that may hold JSON text (CSV rows, ClickHouse string columns): the parsed value
    when ``value`` is a string that is a JSON array, object or string; otherwise ``value``."""
    if isinstance(value, str) and value.strip()[:1] in ("[", "{", '"'):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


def count(value: Any, what: str) -> int | None:
    """A token count: a number, or a decimal string (ClickHouse quotes 64-bit integers in JSON);
    range-checked like ``int_or_none``."""
    if isinstance(value, str):
        text = value.strip()
        if not (text.isascii() and text.isdigit()):
            raise InputError(f"{what} must be a number, got {value[:40]!r}")
        value = int(text) if len(text) < 20 else INT64_LIMIT
    return int_or_none(value, what)


def _get(rec: dict, *keys: str) -> Any:
    """The first non-null value of ``keys`` (camelCase and snake_case spellings)."""
    for key in keys:
        value = rec.get(key)
        if value is not None:
            return value
    return None


# ---------------------------------------------------------------------------------------------
# records of a line


def _observations(line: dict) -> Iterator[dict]:
    """A trace's observations with the trace's session, user and project filled in; the trace
    itself when it holds no observation objects (it is then skipped)."""
    nested = line.get("observations")
    if not isinstance(nested, list) or not nested or all(isinstance(o, str) for o in nested):
        yield line  # an observation, or a trace listing observation ids only
        return
    for i, obs in enumerate(nested):
        if not isinstance(obs, dict):
            raise InputError(f"observations[{i}] must be an object, got {type(obs).__name__}")
    for obs in nested:
        missing = [k for k in TRACE_KEYS if obs.get(k) in (None, "") and line.get(k) is not None]
        if missing:
            obs = {**obs, **{k: line[k] for k in missing}}
        yield obs


def langfuse_records(line: dict) -> Iterator[dict]:
    """The observations of one line: an API page's ``data``, a trace's nested observations, or
    the line itself."""
    data = line.get("data")
    if isinstance(data, list) and "type" not in line:
        for i, item in enumerate(data):
            if not isinstance(item, dict):
                raise InputError(f"data[{i}] must be an object, got {type(item).__name__}")
        for item in data:
            yield from _observations(item)
        return
    yield from _observations(line)


# ---------------------------------------------------------------------------------------------
# input


def _langchain_tool(msg: dict) -> dict | None:
    """The tool definition of a trailing LangChain ``{"role": "tool", "content": <tool>}``
    message, or None when ``msg`` is an ordinary message."""
    content = msg.get("content")
    if (
        msg.get("role") == "tool"
        and "tool_call_id" not in msg
        and isinstance(content, dict)
        and content.get("type") == "function"
        and isinstance(content.get("function"), dict)
    ):
        return content
    return None


def _message(msg: dict, where: str) -> dict:
    """``msg`` in the OpenAI chat shape: LangChain tool calls converted, its handler metadata
    dropped; an OpenAI-shaped message is returned as logged."""
    calls = msg.get("tool_calls")
    langchain = isinstance(calls, list) and any(
        isinstance(c, dict) and "function" not in c and "name" in c for c in calls
    )
    if not langchain and "additional_kwargs" not in msg:
        return msg
    out = {k: v for k, v in msg.items() if k not in ("additional_kwargs", "invalid_tool_calls")}
    if langchain:
        converted = []
        for j, call in enumerate(calls):
            if not isinstance(call, dict):
                raise InputError(f"{where}.tool_calls[{j}] must be an object")
            if "function" in call:
                converted.append(call)
            else:
                converted.append(
                    openai_tool_call(
                        call.get("id"), call.get("name"), call.get("args"), f"{where}.tool_calls"
                    )
                )
        out["tool_calls"] = converted
    return out


def _functions(functions: Any) -> list[dict]:
    """Legacy ``functions`` definitions as OpenAI tools."""
    if not isinstance(functions, list):
        raise InputError(f"input.functions must be a list, got {type(functions).__name__}")
    tools = []
    for j, fn in enumerate(functions):
        where = f"input.functions[{j}]"
        if not isinstance(fn, dict):
            raise InputError(f"{where} must be an object")
        name, description = fn.get("name"), fn.get("description")
        tools.append(openai_tool(name, description, fn.get("parameters"), where))
    return tools


def _read_input(value: Any, out: Normalized) -> None:
    """Messages and tools (or a completions prompt) from a generation's ``input``."""
    value = json_value(value)
    tools: list | None = None
    if isinstance(value, str):
        if not value:
            raise InputError("input is an empty string")
        out.kind = "completion"
        out.prompt = value
        return
    if isinstance(value, dict):
        if "messages" not in value:
            raise InputError("input is an object without 'messages'")
        if value.get("tools") is not None:
            tools = check_tools(value["tools"])
        elif value.get("functions") is not None:
            tools = _functions(value["functions"])
        value = value["messages"]
    if not isinstance(value, list):
        raise InputError(
            "input must be a list of messages, an object with 'messages' or a string, "
            f"got {type(value).__name__}"
        )
    messages: list = []
    trailing: list[dict] = []
    for i, msg in enumerate(value):
        if not isinstance(msg, dict):
            raise InputError(f"input messages[{i}] must be an object, got {type(msg).__name__}")
        tool = _langchain_tool(msg)
        if tool is not None:
            trailing.append(tool)
            continue
        if trailing:
            raise InputError(f"input messages[{i}] follows a tool definition")
        messages.append(_message(msg, f"messages[{i}]"))
    out.messages = check_openai_messages(messages)
    out.tools = tools or check_tools(trailing)


# ---------------------------------------------------------------------------------------------
# usage


def _is_input(key: str, keys: dict) -> bool:
    if key.startswith("input_priority"):
        return False
    if key.startswith("cache_creation_ephemeral_") and "cache_creation_input_tokens" in keys:
        return False
    return "input" in key or key.startswith("cached_")


def _is_read(key: str) -> bool:
    return "cached" in key or "cache_read" in key


def _is_write(key: str) -> bool:
    return "cache_creation" in key or "cache_write" in key


def _sum(values: list[int], what: str) -> int:
    return int_or_none(sum(values), what) or 0


def _read_details(details: Any, out: Normalized, what: str) -> None:
    if not isinstance(details, dict):
        raise InputError(f"{what} must be an object, got {type(details).__name__}")
    counts: dict[str, int] = {}
    for key, value in details.items():
        n = count(value, f"{what}.{key}")
        if n is not None:
            counts[str(key)] = n
    inputs = {k: n for k, n in counts.items() if _is_input(k, counts)}
    reads = [n for k, n in inputs.items() if _is_read(k)]
    writes = [n for k, n in inputs.items() if _is_write(k)]
    outputs = [n for k, n in counts.items() if "output" in k]
    set_usage(
        out,
        prompt=_sum(list(inputs.values()), f"{what} input") if inputs else None,
        cached=_sum(reads, f"{what} cache reads") if reads else None,
        written=_sum(writes, f"{what} cache writes") if writes else None,
        output=_sum(outputs, f"{what} output") if outputs else None,
        what=what,
    )


def _read_usage(rec: dict, out: Normalized) -> None:
    details = json_value(_get(rec, "usageDetails", "usage_details"))
    if details not in (None, {}):
        _read_details(details, out, "usageDetails")
        return
    usage = json_value(rec.get("usage"))
    if usage is None:
        return
    if not isinstance(usage, dict):
        raise InputError(f"usage must be an object, got {type(usage).__name__}")
    set_usage(  # v1's usage.input is Langfuse's whole-input sum; cached tokens unknown
        out,
        prompt=count(usage.get("input"), "usage.input"),
        output=count(usage.get("output"), "usage.output"),
        what="usage",
    )


# ---------------------------------------------------------------------------------------------
# the normalizer


def normalize_langfuse(rec: dict) -> Normalized:
    kind = rec.get("type")
    if kind is None:
        if "observations" in rec:
            raise Skip("a trace without observation objects (export observations)")
        raise InputError("no observation 'type'")
    if not isinstance(kind, str):
        raise InputError(f"type must be a string, got {type(kind).__name__}")
    if kind.upper() != "GENERATION":
        raise Skip(f"observation type {kind[:30]} (only GENERATION observations are requests)")
    out = Normalized(kind="chat", messages_checked=False)
    out.request_id = str_or_none(rec.get("id"), "id")
    out.ts = parse_timestamp(
        json_value(_get(rec, "startTime", "start_time")), "startTime", unit="ms"
    )
    out.session_id = str_or_none(_get(rec, "sessionId", "session_id"), "sessionId") or None
    out.tenant = str_or_none(_get(rec, "projectId", "project_id"), "projectId") or None
    out.end_user = str_or_none(_get(rec, "userId", "user_id"), "userId") or None
    out.model = str_or_none(_get(rec, "model", "providedModelName", "provided_model_name"), "model")
    value = rec.get("input")
    if value is None:
        out.incomplete = "the observation's input is not in the export"
    else:
        _read_input(value, out)
    _read_usage(rec, out)
    return out


def _looks_observation(rec: dict) -> bool:
    kind = rec.get("type")
    return (
        isinstance(kind, str)
        and kind.upper() in OBSERVATION_TYPES
        and ("startTime" in rec or "start_time" in rec)
        and ("traceId" in rec or "trace_id" in rec)
    )


def _looks_trace(rec: dict) -> bool:
    nested = rec.get("observations")
    if not isinstance(nested, list):
        return False
    first = nested[0] if nested else None
    if isinstance(first, dict):
        return _looks_observation(first)
    return "timestamp" in rec and "id" in rec


def looks_like_langfuse(rec: dict) -> bool:
    data = rec.get("data")
    if isinstance(data, list) and data and isinstance(data[0], dict):
        return _looks_observation(data[0]) or _looks_trace(data[0])
    return _looks_observation(rec) or _looks_trace(rec)


FORMATS = (
    Format(
        "langfuse",
        lambda _: normalize_langfuse,
        looks_like_langfuse,
        records=langfuse_records,
        priority=10,
        summary="Langfuse observation exports (API, UI and blob-storage exports, traces)",
    ),
)
