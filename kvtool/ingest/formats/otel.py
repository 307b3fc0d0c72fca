"""OpenTelemetry GenAI telemetry in the OTLP/JSON encoding (``otel-genai``): one
``ExportTraceServiceRequest`` (``resourceSpans[].scopeSpans[].spans[]``) or
``ExportLogsServiceRequest`` (``resourceLogs[].scopeLogs[].logRecords[]``) per line, as the
Collector's file exporter writes them. ``records`` splits a line into one record per span (or
log event), each carrying its resource and scope.

Schema: the GenAI semantic conventions (semantic-conventions ``docs/gen-ai``, now
semantic-conventions-genai) and the OTLP/JSON rules (lowerCamelCase keys, snake_case accepted
too; 64-bit integers as decimal strings or numbers; attribute values as ``AnyValue`` objects).

- Operations: ``chat`` and ``generate_content`` (both send a message list) are chat requests;
  ``text_completion`` is a completion whose prompt is its one input message's text; every
  other operation (``invoke_workflow``, ``embeddings``, ``execute_tool``, ...) and every span
  or log record without ``gen_ai.operation.name`` is skipped, naming the operation or span kind.
- Prompt: ``gen_ai.system_instructions`` (a list of parts) becomes the first, system message;
  ``gen_ai.input.messages`` (``{role, parts: [{type: text, content} | {type: tool_call, id,
  name, arguments} | {type: tool_call_response, id, response}]}``) follow in the OpenAI chat
  shape: tool calls via ``openai_tool_call``, each tool response its own ``tool`` message,
  other part types kept as logged. Values may be JSON strings (what the Python SDK writes on
  spans) or structured ``AnyValue``s (events). Tools: ``gen_ai.tool.definitions`` (``{type,
  name, description, parameters}``, or the OpenAI shape) via ``openai_tool``.
- A chat span without ``gen_ai.input.messages`` (content capture off, the default, or content
  sent to events or uploaded: ``.ref``) is stored ``incomplete``, with its usage: observed hit
  rates still count it. Time: ``startTimeUnixNano`` (ns). Id: ``gen_ai.response.id``, else the
  span id. Session: ``gen_ai.conversation.id``, else ``session.id``. Model:
  ``gen_ai.request.model``, else ``gen_ai.response.model``.
- Tenant (the cache-isolation domain): the GenAI conventions have no tenant attribute;
  ``tenant.id`` (span, then resource attribute: the usual custom attribute) is read; None
  without it (one domain). End user: ``user.id``, else ``enduser.id`` (both end-user ids in
  the semantic-conventions registry; span, then resource attribute); never the tenant.
- Usage: ``gen_ai.usage.input_tokens`` is the whole prompt (it includes cached tokens);
  ``gen_ai.usage.cache_read.input_tokens`` the cached part; cache writes are
  ``gen_ai.usage.cache_creation.input_tokens`` (semantic-conventions) or
  ``gen_ai.usage.cache_write.input_tokens`` (its rename in semantic-conventions-genai, what
  opentelemetry-util-genai >= 1.2b0 writes). util-genai >= 1.2b0 omits a cache count of 0,
  so an absent count is 0 when ``input_tokens`` is present, except where the emitter is known
  to record no cache counts at all, and absent means unknown (None): spans of the pre-1.37
  conventions (``gen_ai.system`` without ``gen_ai.provider.name``, e.g. openai-v2's default
  path) and spans of the ``opentelemetry.util.genai.handler`` scope before 1.2 (which wrote
  every count it had, 0 included; openai-v2 2.4b0's opt-in path records none).
- Events: the ``gen_ai.client.inference.operation.details`` log event holds the same
  attributes as the span (content structured) and is read like one, its time being
  ``timeUnixNano`` (emitted when the call ends). The older per-message events
  (``gen_ai.{system,user,assistant,tool}.message``, ``gen_ai.choice``: openai-v2 before the
  opt-in) are grouped per span id within one line into one request: their messages only. Model,
  usage, conversation id and tools live on the span in the traces signal, which cannot be
  joined per record, so such requests have no model, usage, session or tools (the prompt is
  analyzed without its tool catalog), and the span itself is stored separately (incomplete,
  with its usage): ingest one signal or the other, not both. A call whose events a batch split
  across two lines comes out as two requests.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache
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
    shown,
    str_or_none,
)
from kvtool.ingest.formats.chat import openai_tool, openai_tool_call

NAME = "otel-genai"
CHAT_OPERATIONS = frozenset({"chat", "generate_content"})
COMPLETION_OPERATION = "text_completion"
DETAILS_EVENT = "gen_ai.client.inference.operation.details"
MESSAGE_EVENTS = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
}
CHOICE_EVENT = "gen_ai.choice"
CACHE_WRITE_KEYS = (
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.cache_write.input_tokens",
)
UTIL_SCOPE = "opentelemetry.util.genai.handler"
MAX_DEPTH = 64  # AnyValue nesting; deeper values are rejected, not recursed into


# ---------------------------------------------------------------------------------------------
# OTLP/JSON access


@lru_cache(maxsize=256)
def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _get(obj: dict, name: str) -> Any:
    """``obj[name]`` by its lowerCamelCase name, or by the proto field name (snake_case)."""
    value = obj.get(name)
    return obj.get(_snake(name)) if value is None else value


def _list(obj: dict, name: str, where: str) -> list:
    value = _get(obj, name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise InputError(f"{where}.{name} must be a list, got {type(value).__name__}")
    return value


def _dict(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError(f"{where} must be an object, got {type(value).__name__}")
    return value


def _int64(value: Any, where: str) -> int:
    """An OTLP/JSON 64-bit integer: a decimal string or a JSON integer."""
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,20}", value.strip()):
        number = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    else:
        raise InputError(f"{where} must be a 64-bit integer, got {shown(value)}")
    if not -INT64_LIMIT <= number < INT64_LIMIT:
        raise InputError(f"{where} is out of the 64-bit range, got {shown(value)}")
    return number


def any_value(value: Any, where: str, depth: int = 0) -> Any:
    """A plain Python value from an OTLP ``AnyValue`` (kvlists become dicts in logged order)."""
    if depth > MAX_DEPTH:
        raise InputError(f"{where} is nested deeper than {MAX_DEPTH} levels")
    if not isinstance(value, dict):
        raise InputError(f"{where} must be an AnyValue object, got {type(value).__name__}")
    if not value:
        return None
    for key in ("stringValue", "boolValue", "intValue", "doubleValue", "bytesValue"):
        item = _get(value, key)
        if item is None:
            continue
        if key == "intValue":
            return _int64(item, where)
        if key == "boolValue":
            if not isinstance(item, bool):
                raise InputError(f"{where}.boolValue must be a boolean")
            return item
        if key == "doubleValue":
            if isinstance(item, str) and item in ("NaN", "Infinity", "-Infinity"):
                return float(item)
            if isinstance(item, bool) or not isinstance(item, int | float):
                raise InputError(f"{where}.doubleValue must be a number")
            return float(item)
        if not isinstance(item, str):
            raise InputError(f"{where}.{key} must be a string")
        return item
    array = _get(value, "arrayValue")
    if array is not None:
        items = _list(_dict(array, f"{where}.arrayValue"), "values", f"{where}.arrayValue")
        return [any_value(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(items)]
    kvlist = _get(value, "kvlistValue")
    if kvlist is not None:
        pairs = _list(_dict(kvlist, f"{where}.kvlistValue"), "values", f"{where}.kvlistValue")
        return _pairs(pairs, where, depth + 1)
    raise InputError(f"{where} has no known AnyValue field")


def _pairs(pairs: list, where: str, depth: int = 0) -> dict:
    out: dict = {}
    for i, pair in enumerate(pairs):
        if not isinstance(pair, dict) or not isinstance(pair.get("key"), str):
            raise InputError(f"{where}[{i}] must be an object with a string 'key'")
        raw = pair.get("value")
        out[pair["key"]] = None if raw is None else any_value(raw, pair["key"], depth)
    return out


def attributes(obj: dict, where: str) -> dict:
    """An OTLP ``attributes`` list (``[{key, value: AnyValue}]``) as a dict."""
    return _pairs(_list(obj, "attributes", where), f"{where}.attributes")


# ---------------------------------------------------------------------------------------------
# splitting a line


def _scoped(line: dict, signal: str) -> Iterator[tuple[dict, dict, dict, str]]:
    """(resource, scope, item, where) for every span or log record of one request object."""
    outer, inner, items = (
        ("resourceSpans", "scopeSpans", "spans")
        if signal == "spans"
        else ("resourceLogs", "scopeLogs", "logRecords")
    )
    for i, res in enumerate(_list(line, outer, "line")):
        where = f"{outer}[{i}]"
        res = _dict(res, where)
        resource = _dict(_get(res, "resource"), f"{where}.resource")
        for j, sc in enumerate(_list(res, inner, where)):
            sc_where = f"{where}.{inner}[{j}]"
            sc = _dict(sc, sc_where)
            scope = _dict(_get(sc, "scope"), f"{sc_where}.scope")
            for k, item in enumerate(_list(sc, items, sc_where)):
                yield resource, scope, _dict(item, f"{sc_where}.{items}[{k}]"), sc_where


def _event_name(log: dict) -> str | None:
    """The log record's event name: the ``eventName`` field, or the older ``event.name``
    attribute (SDKs before the field existed)."""
    name = _get(log, "eventName")
    if isinstance(name, str) and name:
        return name
    attrs = _get(log, "attributes")
    for attr in attrs if isinstance(attrs, list) else ():
        if isinstance(attr, dict) and attr.get("key") == "event.name":
            value = attr.get("value")
            if isinstance(value, dict) and isinstance(value.get("stringValue"), str):
                return value["stringValue"]
    return None


def records(line: dict) -> Iterator[dict]:
    """One record per span and per log record of an OTLP/JSON line, each with its resource and
    scope; the legacy per-message events of one span id (in this line) form one record."""
    if not isinstance(line, dict):
        raise InputError("an OTLP/JSON line must be an object")
    if not any(_get(line, key) is not None for key in ("resourceSpans", "resourceLogs")):
        raise InputError("not an OTLP/JSON export request: no resourceSpans or resourceLogs")
    out: list[dict] = [
        {"resource": resource, "scope": scope, "span": span}
        for resource, scope, span, _ in _scoped(line, "spans")
    ]
    groups: dict[tuple, dict] = {}
    for resource, scope, log, where in _scoped(line, "logs"):
        name = _event_name(log)
        if name in MESSAGE_EVENTS or name == CHOICE_EVENT:
            key = (where, str(_get(log, "traceId")), str(_get(log, "spanId")))
            if key not in groups:
                groups[key] = {"resource": resource, "scope": scope, "events": []}
                out.append(groups[key])
            groups[key]["events"].append(log)
        else:
            out.append({"resource": resource, "scope": scope, "log": log})
    return iter(out)


# ---------------------------------------------------------------------------------------------
# content attributes


def _structured(value: Any, what: str) -> Any:
    """A content attribute's value: structured as logged, or decoded from its JSON string."""
    if isinstance(value, str):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise InputError(f"{what} is a string that is not JSON") from exc
    return value


def _text(part: dict, where: str) -> str:
    content = part.get("content")
    if not isinstance(content, str):
        raise InputError(f"{where}.content must be a string")
    return content


def _content(parts: list) -> str | list | None:
    """Message content in the OpenAI chat shape: one text part as a string, several parts as a
    list (text parts as ``{type: text, text}``, others as logged), none as None."""
    if not parts:
        return None
    if len(parts) == 1 and parts[0].get("type") == "text":
        return parts[0]["text"]
    return parts


def _response_text(value: Any) -> str | None:
    """A tool response as message content: a string as logged, None as None (no content),
    anything else as compact JSON in logged key order."""
    if value is None or isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def _message(msg: Any, where: str) -> list[dict]:
    """One semantic-conventions chat message as OpenAI chat messages: its tool responses (one
    ``tool`` message each, in order), then the message itself if it has other parts."""
    if not isinstance(msg, dict):
        raise InputError(f"{where} must be an object, got {type(msg).__name__}")
    role = msg.get("role")
    if not isinstance(role, str):
        raise InputError(f"{where}.role must be a string")
    parts = msg.get("parts")
    if parts is None:
        parts = []
    if not isinstance(parts, list):
        raise InputError(f"{where}.parts must be a list")
    out: list[dict] = []
    content: list[dict] = []
    calls: list[dict] = []
    for j, part in enumerate(parts):
        pw = f"{where}.parts[{j}]"
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise InputError(f"{pw} must be an object with a string 'type'")
        kind = part["type"]
        if kind == "text":
            content.append({"type": "text", "text": _text(part, pw)})
        elif kind == "tool_call":
            calls.append(
                openai_tool_call(part.get("id"), part.get("name"), part.get("arguments"), pw)
            )
        elif kind == "tool_call_response":
            call_id = str_or_none(part.get("id"), f"{pw}.id")
            # "response" per the JSON schema; the spec's own example table writes "result"
            response = part["response"] if "response" in part else part.get("result")
            out.append(
                {"role": "tool", "tool_call_id": call_id, "content": _response_text(response)}
            )
        else:  # blob, uri, file, reasoning, server tool calls, ...: kept as logged
            content.append(part)
    if content or calls or not out:
        message: dict = {"role": role, "content": _content(content)}
        if calls:
            message["tool_calls"] = calls
        name = msg.get("name")
        if name is not None:
            message["name"] = str_or_none(name, f"{where}.name")
        out.append(message)
    return out


def input_messages(value: Any, what: str = "gen_ai.input.messages") -> list[dict]:
    messages = _structured(value, what)
    if not isinstance(messages, list):
        raise InputError(f"{what} must be a list of messages, got {type(messages).__name__}")
    return [m for i, msg in enumerate(messages) for m in _message(msg, f"{what}[{i}]")]


def system_message(value: Any, what: str = "gen_ai.system_instructions") -> dict:
    parts = _structured(value, what)
    if not isinstance(parts, list):
        raise InputError(f"{what} must be a list of parts, got {type(parts).__name__}")
    content: list[dict] = []
    for j, part in enumerate(parts):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise InputError(f"{what}[{j}] must be an object with a string 'type'")
        if part["type"] == "text":
            content.append({"type": "text", "text": _text(part, f"{what}[{j}]")})
        else:
            content.append(part)
    return {"role": "system", "content": _content(content) or ""}


def tool_definitions(value: Any, what: str = "gen_ai.tool.definitions") -> list[dict] | None:
    tools = _structured(value, what)
    if not isinstance(tools, list):
        raise InputError(f"{what} must be a list, got {type(tools).__name__}")
    out: list[dict] = []
    for j, tool in enumerate(tools):
        where = f"{what}[{j}]"
        if not isinstance(tool, dict):
            raise InputError(f"{where} must be an object")
        fn = tool.get("function")
        if isinstance(fn, dict):  # the OpenAI shape, as some instrumentations log it
            out.append(
                openai_tool(fn.get("name"), fn.get("description"), fn.get("parameters"), where)
            )
        elif tool.get("type", "function") == "function":
            out.append(
                openai_tool(
                    tool.get("name"), tool.get("description"), tool.get("parameters"), where
                )
            )
        else:  # a provider's built-in tool (web_search, ...): kept as logged
            out.append(tool)
    return out or None


# ---------------------------------------------------------------------------------------------
# usage and identity


def _count(attrs: dict, key: str) -> int | None:
    return int_or_none(attrs.get(key), key)


def _version(scope: dict) -> tuple[int, int] | None:
    found = re.match(r"(\d+)\.(\d+)", str(scope.get("version") or ""))
    return (int(found[1]), int(found[2])) if found else None


def zero_when_absent(attrs: dict, scope: dict) -> bool:
    """Whether an absent cache count means 0 (see the module docstring): false for emitters
    known to record no cache counts."""
    if "gen_ai.system" in attrs and "gen_ai.provider.name" not in attrs:
        return False  # semantic conventions before 1.37, which had no cache attributes
    version = _version(scope)
    return not (scope.get("name") == UTIL_SCOPE and version is not None and version < (1, 2))


def usage(attrs: dict, scope: dict, out: Normalized) -> None:
    prompt = _count(attrs, "gen_ai.usage.input_tokens")
    cached = _count(attrs, "gen_ai.usage.cache_read.input_tokens")
    writes = {k: _count(attrs, k) for k in CACHE_WRITE_KEYS if attrs.get(k) is not None}
    if len(set(writes.values())) > 1:
        raise InputError(
            f"{' and '.join(writes)} disagree ({', '.join(map(str, writes.values()))})"
        )
    written = next(iter(writes.values()), None)
    if prompt is not None and zero_when_absent(attrs, scope):
        cached = 0 if cached is None else cached
        written = 0 if written is None else written
    set_usage(
        out,
        prompt=prompt,
        cached=cached,
        written=written,
        output=_count(attrs, "gen_ai.usage.output_tokens"),
        what="gen_ai.usage",
    )


def _first_str(places: tuple[dict, ...], keys: tuple[str, ...]) -> str | None:
    for attrs in places:
        for key in keys:
            value = str_or_none(attrs.get(key), key)
            if value:
                return value
    return None


def _time(obj: dict, keys: tuple[str, ...]) -> float | None:
    """Seconds from the first of ``keys`` (epoch ns) that is set; 0 means unset in OTLP."""
    for key in keys:
        value = _get(obj, key)
        if value is None:
            continue
        ns = _int64(value, key)
        if ns != 0:
            return parse_timestamp(ns, key, unit="ns")
    return None


def _identity(out: Normalized, attrs: dict, resource: dict, item: dict) -> None:
    span_id = str_or_none(_get(item, "spanId"), "spanId")
    out.request_id = _first_str((attrs,), ("gen_ai.response.id",)) or span_id or None
    out.session_id = _first_str((attrs,), ("gen_ai.conversation.id", "session.id"))
    out.tenant = _first_str((attrs, resource), ("tenant.id",))
    out.end_user = _first_str((attrs, resource), ("user.id", "enduser.id"))
    out.model = _first_str((attrs,), ("gen_ai.request.model", "gen_ai.response.model"))


# ---------------------------------------------------------------------------------------------
# normalizers


def _operation(attrs: dict, item: dict, what: str) -> str:
    op = attrs.get("gen_ai.operation.name")
    if op is None:
        kind = _get(item, "kind")
        raise Skip(f"{what} (kind {kind}) has no gen_ai.operation.name: not a GenAI call")
    if not isinstance(op, str):
        raise InputError("gen_ai.operation.name must be a string")
    if op not in CHAT_OPERATIONS and op != COMPLETION_OPERATION:
        raise Skip(f"operation {op[:40]!r} is not a chat call")
    return op


def _operation_record(attrs: dict, resource: dict, scope: dict, item: dict, op: str) -> Normalized:
    """A chat (or text completion) call from its span or details-event attributes."""
    out = Normalized(kind="chat", messages_checked=False)
    _identity(out, attrs, resource, item)
    usage(attrs, scope, out)
    system = attrs.get("gen_ai.system_instructions")
    messages = attrs.get("gen_ai.input.messages")
    if messages is None:
        ref = attrs.get("gen_ai.input.messages.ref")
        out.incomplete = (
            f"content stored outside the telemetry (gen_ai.input.messages.ref {shown(ref)})"
            if ref is not None
            else "no gen_ai.input.messages: message content was not captured on this record"
        )
    else:
        out.messages = ([system_message(system)] if system is not None else []) + input_messages(
            messages
        )
        if not out.messages:
            raise InputError("gen_ai.input.messages is empty")
    tools = attrs.get("gen_ai.tool.definitions")
    out.tools = None if tools is None else tool_definitions(tools)
    if op == COMPLETION_OPERATION:
        _as_completion(out)
    return out


def _as_completion(out: Normalized) -> None:
    out.kind = "completion"
    if out.messages is None:
        return
    if len(out.messages) != 1 or not isinstance(out.messages[0].get("content"), str):
        raise InputError("text_completion input must be one message with one text part")
    out.prompt, out.messages, out.tools = out.messages[0]["content"], None, None


def _resource_attrs(rec: dict) -> dict:
    return attributes(_dict(rec.get("resource"), "resource"), "resource")


def normalize_span(rec: dict) -> Normalized:
    span = _dict(rec.get("span"), "span")
    attrs = attributes(span, "span")
    name = str_or_none(span.get("name"), "span name") or "span"
    op = _operation(attrs, span, f"span {name[:40]!r}")
    out = _operation_record(attrs, _resource_attrs(rec), _dict(rec.get("scope"), "scope"), span, op)
    out.ts = _time(span, ("startTimeUnixNano",))
    return out


def normalize_log(rec: dict) -> Normalized:
    log = _dict(rec.get("log"), "log")
    name = _event_name(log)
    if name != DETAILS_EVENT:
        raise Skip(f"log record {shown(name)} is not a GenAI operation event")
    attrs = attributes(log, "logRecord")
    op = _operation(attrs, log, f"event {name}")
    out = _operation_record(attrs, _resource_attrs(rec), _dict(rec.get("scope"), "scope"), log, op)
    out.ts = _time(log, ("timeUnixNano", "observedTimeUnixNano"))
    return out


def _event_message(name: str, body: Any, where: str) -> dict:
    """One legacy per-message event body as an OpenAI chat message."""
    body = _dict(body, where)
    role = str_or_none(body.get("role"), f"{where}.role") or MESSAGE_EVENTS[name]
    content = body.get("content")
    if content is not None and not isinstance(content, str | list):
        content = orjson.dumps(content).decode()
    if MESSAGE_EVENTS[name] == "tool":
        return {
            "role": "tool",
            "tool_call_id": str_or_none(body.get("id"), f"{where}.id"),
            "content": content,
        }
    message: dict = {"role": role, "content": content}
    calls = body.get("tool_calls")
    if calls is not None:
        if not isinstance(calls, list):
            raise InputError(f"{where}.tool_calls must be a list")
        message["tool_calls"] = []
        for j, call in enumerate(calls):
            fn = _dict(call, f"{where}.tool_calls[{j}]").get("function")
            fn = _dict(fn, f"{where}.tool_calls[{j}].function")
            message["tool_calls"].append(
                openai_tool_call(
                    call.get("id"), fn.get("name"), fn.get("arguments"), f"{where}.tool_calls[{j}]"
                )
            )
    return message


def normalize_events(rec: dict) -> Normalized:
    events = rec.get("events")
    if not isinstance(events, list) or not events:
        raise InputError("events must be a non-empty list")
    messages: list[dict] = []
    first: dict | None = None
    for i, log in enumerate(events):
        log = _dict(log, f"events[{i}]")
        name = _event_name(log)
        if name == CHOICE_EVENT or name not in MESSAGE_EVENTS:
            continue  # the call's output, not its prompt
        first = first or log
        body = any_value(_get(log, "body") or {}, f"events[{i}].body")
        messages.append(_event_message(name, body, f"{name} body"))
    if first is None:
        raise Skip("gen_ai.choice events only: the output of a call, not a request")
    out = Normalized(kind="chat", messages=messages, messages_checked=False)
    attrs = attributes(first, "logRecord")
    _identity(out, attrs, _resource_attrs(rec), first)
    out.ts = _time(first, ("timeUnixNano", "observedTimeUnixNano"))
    return out


def normalize(rec: dict) -> Normalized:
    """One record of ``records``: a span, a log record, or a span's legacy message events."""
    if "span" in rec:
        return normalize_span(rec)
    if "events" in rec:
        return normalize_events(rec)
    if "log" in rec:
        return normalize_log(rec)
    raise InputError("not an OTLP span or log record")


def looks_like_otel(line: dict) -> bool:
    return any(
        isinstance(line.get(key), list)
        for key in ("resourceSpans", "resource_spans", "resourceLogs", "resource_logs")
    )


FORMATS = (
    Format(
        NAME,
        lambda _: normalize,
        looks_like_otel,
        records=records,
        priority=10,
        summary="OpenTelemetry GenAI spans and events, OTLP/JSON (Collector file exporter)",
    ),
)
