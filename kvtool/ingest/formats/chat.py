"""Chat messages and tool catalogs in the OpenAI chat shape: the checks every chat format's
normalized output passes (formats convert to this shape first)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from kvtool.errors import InputError

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


def cache_marker(block: dict, where: str) -> dict | None:
    """``{"type", "ttl"}`` of a block's ``cache_control``, or None when it has none."""
    value = block.get("cache_control")
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise InputError(f"{where}.cache_control must be an object with a string 'type'")
    ttl = value.get("ttl")
    if ttl is not None and not isinstance(ttl, str):
        raise InputError(f"{where}.cache_control.ttl must be a string")
    return {"type": value["type"], "ttl": ttl}


@dataclass(frozen=True)
class ChatMarkers:
    """OpenAI-shaped messages and tools with their ``cache_control`` taken out, and the markers
    that held them (``Normalized.cache_control``)."""

    messages: list
    tools: list | None
    markers: list[dict]


def take_chat_markers(messages: list, tools: list | None) -> ChatMarkers:
    """``cache_control`` as OpenAI-shaped requests carry it for Anthropic, Gemini and Bedrock
    models (LiteLLM's convention): on a content part (marker ``{"message": i, "part": j}``),
    on a message itself (``{"message": i, "part": None}``: its end) and on a tool
    (``{"tool": k}``). The marker leaves the stored content, as it does for Anthropic's own
    format, so two prompts that differ only in markers are the same prompt. Messages and tools
    without a marker are kept as they are (the same objects)."""
    markers: list[dict] = []
    out_messages = list(messages)
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            continue  # check_openai_messages names it
        where = f"messages[{i}]"
        content = msg.get("content")
        new = msg
        if isinstance(content, list) and any(
            isinstance(part, dict) and "cache_control" in part for part in content
        ):
            parts = []
            for j, part in enumerate(content):
                here = f"{where}.content[{j}]"
                mark = cache_marker(part, here) if isinstance(part, dict) else None
                if mark is not None:
                    markers.append({"message": i, "part": j, **mark})
                    part = {k: v for k, v in part.items() if k != "cache_control"}
                parts.append(part)
            new = {**msg, "content": parts}
        mark = cache_marker(msg, where)
        if mark is not None:
            markers.append({"message": i, "part": None, **mark})
            new = {k: v for k, v in new.items() if k != "cache_control"}
        out_messages[i] = new
    out_tools = tools
    if tools:
        out_tools = list(tools)
        for k, tool in enumerate(tools):
            mark = cache_marker(tool, f"tools[{k}]") if isinstance(tool, dict) else None
            if mark is not None:
                markers.append({"tool": k, **mark})
                out_tools[k] = {key: v for key, v in tool.items() if key != "cache_control"}
    if not markers:
        return ChatMarkers(messages, tools, [])
    return ChatMarkers(out_messages, out_tools, markers)


def check_content(content: Any, where: str) -> None:
    if content is None or isinstance(content, str):
        return
    if not isinstance(content, list):
        raise InputError(f"{where}.content must be a string, list or null")
    for j, part in enumerate(content):
        if isinstance(part, str):
            continue
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise InputError(f"{where}.content[{j}] must be an object with a string 'type'")
        if part["type"] == "text" and not isinstance(part.get("text"), str):
            raise InputError(f"{where}.content[{j}].text must be a string")


def check_openai_messages(messages: Any) -> list[dict]:
    """The list's shape; each message's fields are checked by ``check_message``, once per
    distinct message (the writer calls it for content it has not seen)."""
    if not isinstance(messages, list):
        raise InputError(f"messages must be a list, got {type(messages).__name__}")
    if not messages:
        raise InputError("messages is empty")
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise InputError(f"messages[{i}] must be an object, got {type(msg).__name__}")
    return messages


def check_message(msg: dict, i: int) -> None:
    """Raise ``InputError`` unless ``msg`` (the i-th message) is a valid chat message."""
    where = f"messages[{i}]"
    role = msg.get("role")
    if not isinstance(role, str):
        raise InputError(f"{where}.role must be a string")
    if role not in ROLES:
        raise InputError(f"{where}.role {role[:30]!r} is not a chat role")
    check_content(msg.get("content"), where)
    calls = msg.get("tool_calls")
    if calls is not None:
        if not isinstance(calls, list):
            raise InputError(f"{where}.tool_calls must be a list")
        for j, call in enumerate(calls):
            fn = call.get("function") if isinstance(call, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise InputError(f"{where}.tool_calls[{j}].function.name must be a string")


def check_tools(tools: Any) -> list | None:
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise InputError(f"tools must be a list, got {type(tools).__name__}")
    for j, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise InputError(f"tools[{j}] must be an object")
    return tools or None


def openai_tool(name: object, description: object, parameters: object, where: str) -> dict:
    """A tool definition in the OpenAI chat shape (what every format's tools normalize to):
    ``{"type": "function", "function": {"name", "description", "parameters"}}``, leaving out
    a description or parameters the source does not have."""
    if not isinstance(name, str):
        raise InputError(f"{where}.name must be a string")
    fn: dict = {"name": name}
    if description is not None:
        if not isinstance(description, str):
            raise InputError(f"{where}.description must be a string")
        fn["description"] = description
    if parameters is not None:
        if not isinstance(parameters, dict):
            raise InputError(f"{where} parameters must be an object")
        fn["parameters"] = parameters
    return {"type": "function", "function": fn}


def openai_tool_call(call_id: object, name: object, arguments: object, where: str) -> dict:
    """A tool call in the OpenAI chat shape. Arguments logged as an object are written as
    compact JSON (keys in logged order), the form the OpenAI API itself returns; a string is
    kept as logged."""
    if not isinstance(name, str):
        raise InputError(f"{where}.name must be a string")
    if call_id is not None and not isinstance(call_id, str):
        raise InputError(f"{where}.id must be a string")
    if not isinstance(arguments, str):
        try:
            arguments = orjson.dumps(arguments if arguments is not None else {}).decode()
        except (orjson.JSONEncodeError, TypeError) as exc:  # e.g. an integer beyond 64 bits
            raise InputError(f"{where} arguments cannot be written as JSON ({exc})") from None
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
