"""Anthropic Messages requests (bare or in a gateway record): ``system`` and content blocks
become OpenAI-shaped messages (tool_use -> tool_calls, tool_result -> a tool message)."""

from __future__ import annotations

from typing import Any

import orjson

from kvtool.errors import InputError
from kvtool.ingest.formats.base import Format, Normalized
from kvtool.ingest.formats.chat import check_tools
from kvtool.ingest.formats.openai import common, envelope, request_body


def _anthropic_text(blocks: Any, where: str) -> str | list:
    if isinstance(blocks, str):
        return blocks
    if not isinstance(blocks, list):
        raise InputError(f"{where} must be a string or a list of blocks")
    parts: list = []
    for j, block in enumerate(blocks):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise InputError(f"{where}[{j}] must be an object with a string 'type'")
        if block["type"] == "text":
            if not isinstance(block.get("text"), str):
                raise InputError(f"{where}[{j}].text must be a string")
            parts.append({"type": "text", "text": block["text"]})
        else:
            parts.append(block)
    return parts


def _anthropic_messages(system: Any, messages: Any) -> list[dict]:
    out: list[dict] = []
    if system is not None:
        out.append({"role": "system", "content": _anthropic_text(system, "system")})
    if not isinstance(messages, list):
        raise InputError(f"messages must be a list, got {type(messages).__name__}")
    if not messages:
        raise InputError("messages is empty")
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(msg, dict) or msg.get("role") not in ("user", "assistant"):
            raise InputError(f"{where} must be an object with role 'user' or 'assistant'")
        content = msg.get("content")
        if isinstance(content, str):
            out.append({"role": msg["role"], "content": content})
            continue
        if not isinstance(content, list):
            raise InputError(f"{where}.content must be a string or a list of blocks")
        parts: list = []
        calls: list[dict] = []
        for j, block in enumerate(content):
            if not isinstance(block, dict) or not isinstance(block.get("type"), str):
                raise InputError(f"{where}.content[{j}] must be an object with a string 'type'")
            kind = block["type"]
            if kind == "tool_use":
                if not isinstance(block.get("name"), str):
                    raise InputError(f"{where}.content[{j}].name must be a string")
                arguments = orjson.dumps(block.get("input", {})).decode()
                calls.append(
                    {
                        "id": block.get("id"),
                        "type": "function",
                        "function": {"name": block["name"], "arguments": arguments},
                    }
                )
            elif kind == "tool_result":
                result = block.get("content", "")
                text = _anthropic_text(result, f"{where}.content[{j}].content")
                out.append(
                    {"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": text}
                )
            elif kind == "text":
                if not isinstance(block.get("text"), str):
                    raise InputError(f"{where}.content[{j}].text must be a string")
                parts.append({"type": "text", "text": block["text"]})
            else:  # image, document, thinking, ...: kept as a part, rendered as a placeholder
                parts.append(block)
        if parts or calls:
            message: dict = {"role": msg["role"], "content": parts or None}
            if calls:
                message["tool_calls"] = calls
            out.append(message)
    return out


def normalize_anthropic(rec: dict) -> Normalized:
    env = envelope(rec)
    out = Normalized(kind="chat")
    if "messages" not in env.body:
        raise InputError("no 'messages' in the request body")
    out.messages = _anthropic_messages(env.body.get("system"), env.body["messages"])
    out.tools = check_tools(env.body.get("tools"))
    common(env, out)
    return out


def _looks_anthropic(body: dict, rec: dict) -> bool:
    if "system" in body:
        return True
    tools = body.get("tools")
    if isinstance(tools, list) and any(isinstance(t, dict) and "input_schema" in t for t in tools):
        return True
    response = rec.get("response")
    usage = rec.get("usage") or (response.get("usage") if isinstance(response, dict) else None)
    if isinstance(usage, dict) and "input_tokens" in usage:
        return True
    messages = body.get("messages")
    for msg in messages if isinstance(messages, list) else ():
        content = msg.get("content") if isinstance(msg, dict) else None
        if isinstance(content, list) and any(
            isinstance(b, dict) and b.get("type") in ("tool_use", "tool_result") for b in content
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
