"""OpenAI Responses API requests (``POST /v1/responses``), bare or in a gateway record with the
Response object (``request``/``response`` as for chat records).

Schema: the API reference for "Create a model response" and the Response object, as the
``openai`` SDK types them (``ResponseCreateParams``, ``ResponseInputItemParam``,
``FunctionToolParam``, ``ResponseUsage``):

- ``instructions`` (a string; a Response echoes it as a list of input items) -> the leading
  system message;
- ``input``: a string (one user message) or a list of items. Message items (``role`` user,
  system, developer or assistant; ``content`` a string or parts) keep their role; the parts
  ``input_text``/``output_text`` (and ``refusal``) become text parts, other parts
  (``input_image``, ``input_file``, ...) are kept as logged; one text part becomes a plain
  string. ``function_call`` and ``custom_tool_call`` items become ``tool_calls`` of the open
  assistant message, ``function_call_output`` and every other ``*_output`` item a ``tool``
  message; ``reasoning`` and the other assistant-side items (``web_search_call``,
  ``computer_call``, ``compaction``, ...) are kept as logged parts of an assistant message. An
  assistant message item or a non-text item starts a new assistant message once the open one
  has text or tool calls (``[reasoning, message, function_call]`` is one message: content,
  then its calls);
- ``tools``: function tools (flat: ``type``, ``name``, ``description``, ``parameters``, ...)
  -> the OpenAI chat function shape (``openai_tool``, further keys such as ``strict`` kept
  inside ``function``); built-in tools (``web_search``, ``file_search``, ``mcp``, ...) are kept
  as logged;
- a part's ``prompt_cache_breakpoint`` (``mode``, ``ttl``) becomes a marker in
  ``Normalized.cache_control`` (``type`` = mode) and leaves the part.

Usage: ``usage.input_tokens`` INCLUDES the cached tokens
(``input_tokens_details.cached_tokens``) and the cache-written ones
(``input_tokens_details.cache_write_tokens``); ``output_tokens``. Time: the gateway's time
key, else the Response's ``created_at`` (epoch seconds).

Session: ``conversation`` (a string or ``{"id": ...}``, in the body or the Response), else a
session key of the gateway metadata or the body's ``metadata``. ``prompt_cache_key`` is never
a session: one key is shared by every session that shares a prefix; it is kept as the request's
``cache_key`` (body, else the Response's echo), which the provider engine routes by. Tenant (the
cache-isolation domain): a gateway's tenant/org key (or vLLM's ``cache_salt``); None when none
is logged (one domain). End user: ``safety_identifier`` (body, else Response), else the
``user`` field it replaces (body, gateway metadata, Response): the API documents both as
end-user ids, so neither is ever the tenant (OpenAI caches per organization).

A request whose prompt is partly stored server-side cannot be rebuilt from the log and is
marked ``incomplete`` (kept out of prefix analysis and counted): ``previous_response_id`` or
``conversation`` (only the new input items are logged), a ``prompt`` template reference, an
``item_reference`` item.
"""

from __future__ import annotations

from typing import Any

from kvtool.errors import InputError
from kvtool.ingest.formats.base import Format, Normalized, str_or_none
from kvtool.ingest.formats.chat import openai_tool, openai_tool_call
from kvtool.ingest.formats.openai import Built, Parts, common, envelope, request_body

MESSAGE_ROLES = frozenset({"user", "system", "developer", "assistant"})
TEXT_PARTS = {"input_text": "text", "output_text": "text", "refusal": "refusal"}
FUNCTION_KEYS = frozenset({"type", "name", "description", "parameters"})
CALL_OUTPUTS = frozenset({"function_call_output", "custom_tool_call_output"})


def breakpoint_marker(part: dict, where: str) -> dict | None:
    """``{"type", "ttl"}`` of a part's ``prompt_cache_breakpoint``, or None."""
    value = part.get("prompt_cache_breakpoint")
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("mode"), str):
        raise InputError(f"{where}.prompt_cache_breakpoint must be an object with a string 'mode'")
    ttl = value.get("ttl")
    if ttl is not None and not isinstance(ttl, str):
        raise InputError(f"{where}.prompt_cache_breakpoint.ttl must be a string")
    return {"type": value["mode"], "ttl": ttl}


def _parts(content: Any, where: str, parts: Parts | None = None) -> Parts:
    """Message content (a string or a list of parts) added to ``parts``."""
    parts = parts if parts is not None else Parts()
    if isinstance(content, str):
        parts.add({"type": "text", "text": content})
        return parts
    if not isinstance(content, list):
        raise InputError(f"{where} must be a string or a list of parts")
    for j, part in enumerate(content):
        here = f"{where}[{j}]"
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise InputError(f"{here} must be an object with a string 'type'")
        key = TEXT_PARTS.get(part["type"])
        if key is not None:
            if not isinstance(part.get(key), str):
                raise InputError(f"{here}.{key} must be a string")
            item = {"type": "text", "text": part[key]}
        else:
            item = {k: v for k, v in part.items() if k != "prompt_cache_breakpoint"}
        parts.add(item, breakpoint_marker(part, here))
    return parts


class _Items:
    """Input items to chat messages: assistant-side items collect into one assistant turn."""

    def __init__(self) -> None:
        self.out = Built()
        self.parts = Parts()
        self.calls: list[dict] = []
        self.call_marks: list[tuple[int, dict]] = []
        self.incomplete: str | None = None

    def close(self) -> None:
        self.out.emit_turn("assistant", self.parts, self.calls, self.call_marks)
        self.parts, self.calls, self.call_marks = Parts(), [], []

    def assistant_parts(self) -> Parts:
        """The parts of the open assistant message, after closing one that already has text or
        tool calls: a message item, a reasoning item and so on start a new assistant message
        unless only non-text items (reasoning) came before it in the turn."""
        if self.calls or any(p.get("type") == "text" for p in self.parts.items):
            self.close()
        return self.parts

    def item(self, item: Any, where: str) -> None:
        if not isinstance(item, dict):
            raise InputError(f"{where} must be an object, got {type(item).__name__}")
        kind = item.get("type")
        if kind is not None and not isinstance(kind, str):
            raise InputError(f"{where}.type must be a string")
        if kind in (None, "message"):
            self.message(item, where)
        elif kind in ("function_call", "custom_tool_call"):
            args = item.get("arguments") if kind == "function_call" else item.get("input")
            self.calls.append(openai_tool_call(item.get("call_id"), item.get("name"), args, where))
        elif kind.endswith("_output"):
            self.close()
            call_id = str_or_none(item.get("call_id"), f"{where}.call_id")
            if kind not in CALL_OUTPUTS:  # another tool's output: kept as logged
                self.out.emit({"role": "tool", "tool_call_id": call_id, "content": [item]})
                return
            if item.get("output") is None:
                raise InputError(f"{where} has no 'output'")
            parts = _parts(item["output"], f"{where}.output")
            message = {"role": "tool", "tool_call_id": call_id, "content": parts.content()}
            self.out.emit(message, parts)
        elif kind == "item_reference":
            ref = str_or_none(item.get("id"), f"{where}.id")
            self.incomplete = self.incomplete or (
                f"item_reference {ref}: the referenced item is not logged"
            )
        else:  # reasoning, web_search_call, compaction, ...: part of the assistant turn
            self.assistant_parts().add(item)

    def message(self, item: dict, where: str) -> None:
        role = item.get("role")
        if not isinstance(role, str) or role not in MESSAGE_ROLES:
            raise InputError(f"{where}.role must be one of user, system, developer, assistant")
        if "content" not in item:
            raise InputError(f"{where} has no 'content'")
        if role == "assistant":
            _parts(item["content"], f"{where}.content", self.assistant_parts())
            return
        self.close()
        parts = _parts(item["content"], f"{where}.content")
        self.out.emit({"role": role, "content": parts.content()}, parts)


def _tools(tools: Any) -> list | None:
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise InputError(f"tools must be a list, got {type(tools).__name__}")
    result = []
    for k, tool in enumerate(tools):
        where = f"tools[{k}]"
        if not isinstance(tool, dict):
            raise InputError(f"{where} must be an object")
        if not isinstance(tool.get("type"), str):
            raise InputError(f"{where}.type must be a string")
        if tool["type"] == "function":
            fn = openai_tool(
                tool.get("name"), tool.get("description"), tool.get("parameters"), where
            )
            fn["function"].update((key, v) for key, v in tool.items() if key not in FUNCTION_KEYS)
            result.append(fn)
        else:  # built-in tools (web_search, file_search, mcp, ...): kept as logged
            result.append(tool)
    return result or None


def function_tools(tools: Any) -> list | None:
    """A Responses ``tools`` list in the OpenAI chat shape (see the module docstring); public
    for sources that log Responses-shaped tools next to another API's body (LiteLLM's
    ``/v1/messages`` calls it sent on to the Responses API)."""
    return _tools(tools)


def conversation_id(value: Any, where: str) -> str | None:
    """The id of a ``conversation`` value: a string or ``{"id": ...}``."""
    if isinstance(value, dict):
        return str_or_none(value.get("id"), f"{where}.id")
    return str_or_none(value, where)


def _incomplete(body: dict, resp: dict, conversation: str | None) -> str | None:
    """Why the logged input is not the whole prompt, or None."""
    previous = str_or_none(
        body.get("previous_response_id") or resp.get("previous_response_id"),
        "previous_response_id",
    )
    if previous:
        return f"previous_response_id {previous}: only the new input items are logged"
    if conversation:
        return f"conversation {conversation}: only the new input items are logged"
    prompt = body.get("prompt")
    if prompt is not None:
        ref = prompt.get("id") if isinstance(prompt, dict) else prompt
        return f"prompt template {str_or_none(ref, 'prompt.id')}: its text is not logged"
    return None


def normalize_responses(rec: dict) -> Normalized:
    env = envelope(rec)
    body, resp = env.body, env.response
    if "input" not in body and "prompt" not in body:
        raise InputError("no 'input' in the request body")
    items = _Items()
    instructions = body.get("instructions")
    if isinstance(instructions, list):  # a Response's echo: input items
        for i, item in enumerate(instructions):
            items.item(item, f"instructions[{i}]")
        items.close()
    elif instructions is not None and instructions != "":
        if not isinstance(instructions, str):
            raise InputError("instructions must be a string or a list of items")
        items.out.emit({"role": "system", "content": instructions})
    value = body.get("input")
    if isinstance(value, str):
        items.out.emit({"role": "user", "content": value})
    elif isinstance(value, list):
        for i, item in enumerate(value):
            items.item(item, f"input[{i}]")
        items.close()
    elif value is not None:
        raise InputError(f"input must be a string or a list of items, got {type(value).__name__}")
    out = Normalized(kind="chat", messages=items.out.messages)
    out.tools = _tools(body.get("tools"))
    out.cache_control = items.out.markers or None
    common(env, out)
    conversation = conversation_id(body.get("conversation"), "conversation") or conversation_id(
        resp.get("conversation"), "response.conversation"
    )
    if conversation:
        out.session_id = conversation
    out.end_user = (
        str_or_none(body.get("safety_identifier"), "safety_identifier")
        or str_or_none(resp.get("safety_identifier"), "response.safety_identifier")
        or out.end_user
        or str_or_none(resp.get("user"), "response.user")
        or None
    )
    out.incomplete = _incomplete(body, resp, conversation) or items.incomplete
    return out


def looks_like_responses(rec: dict) -> bool:
    """A Responses request body (``input`` as a string or a list, or a ``prompt`` template
    object; no chat ``messages``, no ``type`` of its own as observation or event records have),
    or a Response object."""
    response = rec.get("response")
    if rec.get("object") == "response" or (
        isinstance(response, dict) and response.get("object") == "response"
    ):
        return True
    body = request_body(rec)
    return (
        (isinstance(body.get("input"), str | list) or isinstance(body.get("prompt"), dict))
        and "messages" not in body
        and "type" not in body
        and "custom_id" not in rec
    )


FORMATS = (
    Format(
        "openai-responses",
        lambda _: normalize_responses,
        looks_like_responses,
        priority=3,
        summary="OpenAI Responses API requests, or gateway records wrapping them",
    ),
)
