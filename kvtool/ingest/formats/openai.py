"""OpenAI-shaped records: chat completions (also what most gateways log) and (legacy)
completions, and the pieces every gateway-shaped format shares (``envelope``, ``common``,
``read_usage``). Batch API input lines are ``batch``'s (they route to Responses too).

A gateway record may wrap the request body in ``request`` (an object or a JSON string) or
``body`` and carry the response in ``response``; id, time, session, tenant, end user and usage
are looked for in the record, its metadata, the body and the response.

Tenant (the cache-isolation domain): vLLM's ``cache_salt`` in the body, else a tenant/org key
(``tenant``, ``tenant_id``, ``org_id``, ``organization``) of the record, its metadata or the
body; None when none is logged (one domain), never the end user. End user: the body's ``user``
(OpenAI's end-user field), else ``user``/``user_id``/``end_user`` of the record or its metadata.
Cache key: the body's ``prompt_cache_key`` (chat completions, completions and Responses take
it), else the one a Response echoes; it steers routing only, so it is never the tenant, the end
user or the session.

Timestamps: ``created`` and ``created_at`` are OpenAI's names for epoch **seconds** (chat
completion ``created``, Response ``created_at``) and are read as seconds wherever they appear;
ISO-8601 strings are read as ISO. Only the generic gateway keys (``timestamp``, ``time``,
``start_time``), whose unit no schema fixes, have it guessed from the magnitude (s/ms/us/ns).

Usage is read by what its keys mean, never by the body's format (gateways log one provider's
usage next to another's body):

- ``prompt_tokens`` (chat completions): the whole prompt; ``prompt_tokens_details.cached_tokens``
  (else DeepSeek's ``prompt_cache_hit_tokens``) and ``.cache_write_tokens`` are parts of it;
- ``input_tokens`` with ``input_tokens_details`` (Responses): the whole prompt, cached
  (``cached_tokens``) and cache-written (``cache_write_tokens``) tokens included;
- ``input_tokens`` with ``cache_read_input_tokens`` / ``cache_creation_input_tokens``
  (Anthropic): the uncached rest only; the prompt is the sum of the three;
- ``input_tokens`` alone: the prompt (both readings agree when nothing was cached); cached
  tokens unknown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from kvtool.errors import InputError
from kvtool.ingest.formats.base import (
    END_USER_KEYS,
    ID_KEYS,
    INT64_LIMIT,
    SESSION_KEYS,
    TENANT_KEYS,
    TIME_KEYS,
    Format,
    Normalized,
    cache_key_or_none,
    dicts,
    first,
    first_item,
    int_or_none,
    parse_timestamp,
    set_usage,
    str_or_none,
)
from kvtool.ingest.formats.chat import check_openai_messages, check_tools, take_chat_markers

EPOCH_SECONDS_KEYS = frozenset({"created", "created_at"})  # OpenAI objects: epoch seconds


@dataclass(slots=True)
class Envelope:
    """A gateway record split up: the request ``body`` (the record itself when it is a bare
    body), the ``response`` ({} when none was logged) and the ``outer`` record."""

    body: dict
    response: dict
    outer: dict


def envelope(rec: dict) -> Envelope:
    """Split a gateway-log record into request body, response and the outer record."""
    body = rec.get("request")
    if isinstance(body, str):
        try:
            body = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InputError("request is a string that is not JSON") from exc
    if body is None:
        body = rec.get("body") if isinstance(rec.get("body"), dict) else rec
    if not isinstance(body, dict):
        raise InputError(f"request must be an object, got {type(body).__name__}")
    response = rec.get("response")
    if response is not None and not isinstance(response, dict):
        raise InputError(f"response must be an object, got {type(response).__name__}")
    return Envelope(body=body, response=response or {}, outer=rec)


def record_time(env: Envelope) -> float | None:
    """The record's time: the outer record's time key first, then the body's and response's;
    ``created``/``created_at`` in seconds, generic keys with their unit guessed."""
    key, ts = first_item((env.outer,), TIME_KEYS)
    if ts is None:
        key, ts = first_item((env.body, env.response), TIME_KEYS)
    if ts is None:
        return None
    return parse_timestamp(ts, key, unit="s" if key in EPOCH_SECONDS_KEYS else None)


def common(env: Envelope, out: Normalized, *, body_keys: bool = True) -> None:
    """Fill id, time, session, tenant, end user, model, cache key and usage from wherever the
    envelope carries them. ``body_keys``: whether the body and its ``metadata`` may carry
    session, tenant, end-user and cache keys (OpenAI's ``user`` and ``prompt_cache_key``, a
    gateway's or vLLM's extras); False where the body's schema has no such field (Anthropic).
    The body's own keys come first for the end user."""
    rec, body, resp = env.outer, env.body, env.response
    metas = dicts(rec.get("metadata"), body.get("metadata") if body_keys else None)
    places = (rec, *metas, body) if body_keys else (rec, *metas)
    out.request_id = str_or_none(first((rec,), ID_KEYS) or resp.get("id"), "id")
    out.ts = record_time(env)
    out.session_id = str_or_none(first(places, SESSION_KEYS), "session id")
    salt = body.get("cache_salt") if body_keys else None
    out.tenant = str_or_none(salt or first(places, TENANT_KEYS), "tenant")
    key, user = first_item((body, *places) if body_keys else places, END_USER_KEYS)
    out.end_user = str_or_none(user, key or "end user")
    out.model = str_or_none(body.get("model") or resp.get("model") or rec.get("model"), "model")
    if body_keys:
        out.cache_key = cache_key_or_none(
            body.get("prompt_cache_key"), "prompt_cache_key"
        ) or cache_key_or_none(resp.get("prompt_cache_key"), "response.prompt_cache_key")
    usage = resp.get("usage") if resp else None
    if usage is None:
        usage = rec.get("usage")
    if usage is not None:
        read_usage(usage, out)


def _count(mapping: dict, key: str, where: str) -> int | None:
    return int_or_none(mapping.get(key), f"{where}.{key}")


def _details(usage: dict, key: str) -> dict:
    value = usage.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError(f"usage.{key} must be an object, got {type(value).__name__}")
    return value


def _set_whole(out: Normalized, usage: dict, details: dict, whole: str, output: str) -> None:
    """Usage whose ``whole`` count is the whole prompt and whose ``{whole}_details`` hold the
    cached and cache-written parts (OpenAI chat completions and Responses)."""
    where = f"usage.{whole}_details"
    prompt = _count(usage, whole, "usage")
    cached = _count(details, "cached_tokens", where)
    field = f"{where}.cached_tokens"
    if cached is None:  # DeepSeek's own field (its newer responses carry both)
        cached = _count(usage, "prompt_cache_hit_tokens", "usage")
        field = "usage.prompt_cache_hit_tokens"
    if prompt is not None and cached is not None and cached > prompt:  # rates stay <= 1
        raise InputError(f"{field} {cached} exceeds usage.{whole} {prompt}")
    set_usage(
        out,
        prompt=prompt,
        cached=cached,
        written=_count(details, "cache_write_tokens", where),
        output=_count(usage, output, "usage"),
    )


def read_usage(usage: Any, out: Normalized) -> None:
    """Set ``out``'s token counts from a logged usage object, read by what its keys mean (see
    the module docstring); ``InputError`` for a wrong type or a count out of range."""
    if not isinstance(usage, dict):
        raise InputError(f"usage must be an object, got {type(usage).__name__}")
    if "prompt_tokens" in usage or "completion_tokens" in usage:  # chat completions
        details = _details(usage, "prompt_tokens_details")
        _set_whole(out, usage, details, "prompt_tokens", "completion_tokens")
        return
    if "input_tokens_details" in usage:  # Responses: input_tokens includes the cache
        details = _details(usage, "input_tokens_details")
        _set_whole(out, usage, details, "input_tokens", "output_tokens")
        return
    fresh = _count(usage, "input_tokens", "usage")
    output = _count(usage, "output_tokens", "usage")
    read = _count(usage, "cache_read_input_tokens", "usage")
    created = _count(usage, "cache_creation_input_tokens", "usage")
    prompt = None  # Anthropic: input_tokens excludes cache reads and writes
    if fresh is not None:
        prompt = fresh + (read or 0) + (created or 0)
        if prompt >= INT64_LIMIT:
            raise InputError(f"usage.input_tokens + cache tokens is out of range, got {prompt}")
    set_usage(out, prompt=prompt, cached=read, written=created, output=output)


# ---------------------------------------------------------------------------------------------
# building chat messages from block-structured sources (Anthropic, Responses), with cache markers


@dataclass
class Parts:
    """The content parts of one message being built, and the cache markers on them (by part
    index; a marker is ``{"type", "ttl"}``)."""

    items: list[dict] = field(default_factory=list)
    marks: list[tuple[int, dict]] = field(default_factory=list)

    def add(self, part: dict, mark: dict | None = None) -> None:
        if mark is not None:
            self.marks.append((len(self.items), mark))
        self.items.append(part)

    def content(self) -> str | list:
        """The parts as message content: one text part is a plain string (what a string
        content means in both sources), anything else the list of parts."""
        one = len(self.items) == 1 and self.items[0]["type"] == "text"
        return self.items[0]["text"] if one else self.items


@dataclass
class Built:
    """Normalized messages being built and the cache markers placed on them: ``{"message": i,
    "part": j, ...}`` (``part`` None when the content is a plain string) or ``{"message": i,
    "tool_call": k, ...}``."""

    messages: list[dict] = field(default_factory=list)
    markers: list[dict] = field(default_factory=list)

    def emit(self, message: dict, parts: Parts | None = None) -> int:
        """Append ``message`` (its content made from ``parts``) and place their markers."""
        i = len(self.messages)
        self.messages.append(message)
        whole = isinstance(message.get("content"), str)
        for j, mark in parts.marks if parts else ():
            self.markers.append({"message": i, "part": None if whole else j, **mark})
        return i

    def emit_turn(self, role: str, parts: Parts, calls: list[dict], call_marks: list) -> None:
        """One message of ``parts`` and tool ``calls`` (with markers ``(call index, mark)``);
        nothing when both are empty. Content is None when there are only calls."""
        if not parts.items and not calls:
            return
        message: dict = {"role": role, "content": parts.content() if parts.items else None}
        if calls:
            message["tool_calls"] = calls
        at = self.emit(message, parts)
        self.markers.extend({"message": at, "tool_call": k, **m} for k, m in call_marks)


def normalize_openai_chat(rec: dict) -> Normalized:
    env = envelope(rec)
    out = Normalized(kind="chat", messages_checked=False)
    if "messages" not in env.body:
        raise InputError("no 'messages' in the request body")
    found = take_chat_markers(
        check_openai_messages(env.body["messages"]), check_tools(env.body.get("tools"))
    )
    out.messages, out.tools = found.messages, found.tools
    out.cache_control = found.markers or None
    common(env, out)
    return out


TOKEN_ID_LIMIT = 2**32  # token ids are stored and hashed as uint32


def _check_token_ids(prompt: list) -> None:
    """Raise ``InputError`` unless ``prompt`` is a non-empty list of ints (not bools) with
    ``0 <= id < TOKEN_ID_LIMIT``; the reason names the first bad element."""
    if not prompt:
        raise InputError("prompt must be a string or one list of token ids (got an empty list)")
    for i, t in enumerate(prompt):
        if isinstance(t, bool) or not isinstance(t, int):
            raise InputError(
                "prompt must be a string or one list of token ids "
                f"(prompt[{i}] must be an integer token id, got {type(t).__name__})"
            )
        if not 0 <= t < TOKEN_ID_LIMIT:
            raise InputError(f"prompt[{i}] token id {t} is out of range (0 <= id < 2**32)")


def normalize_completions(rec: dict) -> Normalized:
    env = envelope(rec)
    out = Normalized(kind="completion")
    prompt = env.body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]
    if isinstance(prompt, list):
        _check_token_ids(prompt)
    elif not isinstance(prompt, str):
        raise InputError(f"prompt must be a string, got {type(prompt).__name__}")
    out.prompt = prompt
    common(env, out)
    return out


def request_body(rec: dict) -> dict:
    """The request body of a gateway record (see ``envelope``), or {} when it has none."""
    body = rec.get("request")
    if isinstance(body, str):  # gateways that log the body as a JSON string
        try:
            body = orjson.loads(body)
        except orjson.JSONDecodeError:
            body = None
    if not isinstance(body, dict):
        body = rec.get("body") if isinstance(rec.get("body"), dict) else rec
    return body


def looks_like_chat(rec: dict) -> bool:
    return "messages" in request_body(rec) and "custom_id" not in rec


def looks_like_completions(rec: dict) -> bool:
    body = request_body(rec)
    return "prompt" in body and "messages" not in body


FORMATS = (
    Format(
        "openai-chat",
        lambda _: normalize_openai_chat,
        looks_like_chat,
        summary="OpenAI chat completions requests, or gateway records wrapping them",
    ),
    Format(
        "completions",
        lambda _: normalize_completions,
        looks_like_completions,
        summary="OpenAI (legacy) completions requests",
    ),
)
