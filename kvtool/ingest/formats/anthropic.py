"""Anthropic Messages requests (bare, or in a gateway record with the Message response).

Schema: the Messages API reference (``POST /v1/messages``) as the ``anthropic`` SDK types it:
``system`` is a string or a list of text blocks; a message's ``content`` is a string (shorthand
for one text block) or a list of blocks: ``text``, ``image``, ``document``, ``search_result``,
``thinking``, ``redacted_thinking``, ``tool_use``, ``tool_result``, server tool blocks
(``server_tool_use``, ``web_search_tool_result``, ...); ``tools`` holds custom tools (``name``,
``description``, ``input_schema``) and server tools (a versioned ``type`` such as
``web_search_20250305``); any block and tool may carry ``cache_control`` (``type``
"ephemeral", ``ttl`` "5m" or "1h"), and the request itself may (automatic caching).

Normalized to the OpenAI chat shape:

- ``system`` -> the first message, role system;
- tool_use -> ``tool_calls`` of the assistant message (``openai_tool_call``, input as compact
  JSON); each tool_result -> a ``tool`` message at its place in the turn; text blocks -> text
  parts; every other block is kept as logged (a part the template renders as a placeholder);
  a block list that is one text block becomes a plain string (Anthropic's string content is
  shorthand for exactly that); a message's text stays before its tool calls;
- custom tools -> the OpenAI function shape (``openai_tool``: input_schema -> parameters, any
  further key kept inside ``function``); server tools are kept as logged.

``cache_control`` never stays in a message part or a tool (a chat template does not render it,
and prompts that differ only in markers are the same prompt): it becomes a marker in
``Normalized.cache_control`` with ``type`` and ``ttl`` (None when not given), placed by index
into the normalized messages and tools: ``{"message": i, "part": j}`` (``part`` None when the
message's content is a plain string), ``{"message": i, "tool_call": k}`` for a tool_use block,
``{"tool": k}`` for a tool, ``{"auto": True}`` for the request-level marker (the provider puts it
on the last cacheable block).

Usage: ``input_tokens`` excludes cache reads (``cache_read_input_tokens`` -> cached tokens) and
writes (``cache_creation_input_tokens`` -> cache-write tokens); the prompt is their sum (read by
``openai.read_usage``, which reads usage by what its keys mean). Time: the gateway record's (the
Message object has none). Session: gateway metadata only (the Messages body has no session
field). Tenant (the cache-isolation domain): a gateway's tenant/org key, else the request's
``workspace_id`` (the workspace a multi-workspace key acts in); None when neither is logged (one
domain). End user: ``metadata.user_id`` (documented as "an external identifier for the user who
is associated with the request"), else a gateway's user key; never the tenant (Anthropic caches
per organization/workspace, not per end user).
"""

from __future__ import annotations

from typing import Any

from kvtool.errors import InputError
from kvtool.ingest.formats.base import Format, Normalized, str_or_none
from kvtool.ingest.formats.chat import cache_marker, openai_tool, openai_tool_call
from kvtool.ingest.formats.openai import Built, Parts, common, envelope, request_body

TOOL_KEYS = frozenset({"name", "description", "input_schema", "cache_control", "type"})


def _block(value: Any, where: str) -> dict:
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise InputError(f"{where} must be an object with a string 'type'")
    return value


def _part(block: dict, where: str) -> dict:
    """A content block as a message part: text as ``{"type": "text", "text"}``, any other block
    as logged without its ``cache_control``."""
    if block["type"] == "text":
        if not isinstance(block.get("text"), str):
            raise InputError(f"{where}.text must be a string")
        return {"type": "text", "text": block["text"]}
    return {k: v for k, v in block.items() if k != "cache_control"}


def _add(parts: Parts, block: dict, where: str) -> None:
    parts.add(_part(block, where), cache_marker(block, where))


def _blocks(value: Any, where: str) -> Parts:
    """A string (one text block) or a list of blocks as parts."""
    parts = Parts()
    if isinstance(value, str):
        parts.add({"type": "text", "text": value})
        return parts
    if not isinstance(value, list):
        raise InputError(f"{where} must be a string or a list of blocks")
    for j, block in enumerate(value):
        _add(parts, _block(block, f"{where}[{j}]"), f"{where}[{j}]")
    return parts


def _system(system: Any, out: Built) -> None:
    if system is None or system == []:
        return
    if isinstance(system, str):
        out.emit({"role": "system", "content": system})
        return
    parts = _blocks(system, "system")
    out.emit({"role": "system", "content": parts.content()}, parts)


def _turn(msg: Any, i: int, out: Built) -> None:
    """One Anthropic message as one or more chat messages (tool results become tool
    messages at their place in the turn)."""
    where = f"messages[{i}]"
    if not isinstance(msg, dict) or msg.get("role") not in ("user", "assistant"):
        raise InputError(f"{where} must be an object with role 'user' or 'assistant'")
    role, content = msg["role"], msg.get("content")
    if isinstance(content, str):
        out.emit({"role": role, "content": content})
        return
    if not isinstance(content, list):
        raise InputError(f"{where}.content must be a string or a list of blocks")
    parts = Parts()
    calls: list[dict] = []
    call_marks: list[tuple[int, dict]] = []
    start = len(out.messages)

    def flush() -> None:
        nonlocal parts, calls, call_marks
        out.emit_turn(role, parts, calls, call_marks)
        parts, calls, call_marks = Parts(), [], []

    for j, raw in enumerate(content):
        here = f"{where}.content[{j}]"
        block = _block(raw, here)
        kind = block["type"]
        if kind == "tool_use":
            mark = cache_marker(block, here)
            if mark is not None:
                call_marks.append((len(calls), mark))
            calls.append(
                openai_tool_call(block.get("id"), block.get("name"), block.get("input"), here)
            )
        elif kind == "tool_result":
            flush()
            result = block.get("content")
            result = "" if result is None else result
            inner = _blocks(result, f"{here}.content")
            call_id = str_or_none(block.get("tool_use_id"), f"{here}.tool_use_id")
            message = {"role": "tool", "tool_call_id": call_id, "content": inner.content()}
            at = out.emit(message, inner)
            mark = cache_marker(block, here)
            if mark is not None:
                out.markers.append({"message": at, "part": None, **mark})
        else:
            _add(parts, block, here)
    flush()
    if len(out.messages) == start:  # an empty block list: kept as an empty message
        out.emit({"role": role, "content": []})


def _tools(tools: Any, out: Built) -> list | None:
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise InputError(f"tools must be a list, got {type(tools).__name__}")
    result = []
    for k, raw in enumerate(tools):
        where = f"tools[{k}]"
        if not isinstance(raw, dict):
            raise InputError(f"{where} must be an object")
        mark = cache_marker(raw, where)
        if mark is not None:
            out.markers.append({"tool": k, **mark})
        kind = raw.get("type")
        if kind is not None and not isinstance(kind, str):
            raise InputError(f"{where}.type must be a string")
        if kind in (None, "custom"):
            tool = openai_tool(
                raw.get("name"), raw.get("description"), raw.get("input_schema"), where
            )
            tool["function"].update((key, v) for key, v in raw.items() if key not in TOOL_KEYS)
        else:  # a server tool (web search, bash, ...): no OpenAI equivalent, kept as logged
            tool = {key: v for key, v in raw.items() if key != "cache_control"}
        result.append(tool)
    return result or None


def normalize_anthropic(rec: dict) -> Normalized:
    env = envelope(rec)
    body = env.body
    if "messages" not in body:
        raise InputError("no 'messages' in the request body")
    messages = body["messages"]
    if not isinstance(messages, list):
        raise InputError(f"messages must be a list, got {type(messages).__name__}")
    if not messages:
        raise InputError("messages is empty")
    built = Built()
    _system(body.get("system"), built)
    for i, msg in enumerate(messages):
        _turn(msg, i, built)
    out = Normalized(kind="chat", messages=built.messages)
    out.tools = _tools(body.get("tools"), built)
    auto = cache_marker(body, "request")
    if auto is not None:
        built.markers.append({"auto": True, **auto})
    out.cache_control = built.markers or None
    common(env, out, body_keys=False)
    if out.tenant is None:
        out.tenant = str_or_none(body.get("workspace_id"), "workspace_id") or None
    meta = body.get("metadata")
    user = meta.get("user_id") if isinstance(meta, dict) else None
    out.end_user = str_or_none(user, "metadata.user_id") or out.end_user
    return out


ANTHROPIC_BLOCKS = frozenset(
    {"tool_use", "tool_result", "thinking", "redacted_thinking", "document", "search_result"}
)


def _looks_anthropic(body: dict, rec: dict) -> bool:
    """The body's (or the response's) shape, never its usage keys: ``system`` at the top,
    tools with ``input_schema``, Anthropic-only content blocks, or a Message response."""
    if "system" in body or "anthropic_version" in body:
        return True
    tools = body.get("tools")
    if isinstance(tools, list) and any(isinstance(t, dict) and "input_schema" in t for t in tools):
        return True
    response = rec.get("response")
    if isinstance(response, dict) and response.get("type") == "message":
        return True
    messages = body.get("messages")
    for msg in messages if isinstance(messages, list) else ():
        content = msg.get("content") if isinstance(msg, dict) else None
        if isinstance(content, list) and any(
            isinstance(b, dict) and (str(b.get("type")) in ANTHROPIC_BLOCKS or "source" in b)
            for b in content
        ):
            return True
    return False


def looks_like_anthropic(rec: dict) -> bool:
    body = request_body(rec)
    return "messages" in body and _looks_anthropic(body, rec)


FORMATS = (
    Format(
        "anthropic",
        lambda _: normalize_anthropic,
        looks_like_anthropic,
        priority=5,
        absorbs=("openai-chat",),
        summary="Anthropic Messages requests, or gateway records wrapping them",
    ),
)
