"""OpenAI-shaped records: chat completions (also what most gateways log), the Batch API's input
lines and (legacy) completions. A gateway record may wrap the request body in ``request`` (an
object or a JSON string) or ``body`` and carry the response in ``response``; id, time, session,
tenant and usage are looked for in the record, its metadata, the body and the response."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from kvtool.errors import InputError
from kvtool.ingest.formats.base import (
    ID_KEYS,
    INT64_LIMIT,
    SESSION_KEYS,
    TENANT_KEYS,
    TIME_KEYS,
    Format,
    Normalized,
    dicts,
    first,
    first_item,
    int_or_none,
    parse_timestamp,
    str_or_none,
)
from kvtool.ingest.formats.chat import check_openai_messages, check_tools


@dataclass(slots=True)
class _Envelope:
    body: dict
    response: dict
    outer: dict


def envelope(rec: dict) -> _Envelope:
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
    return _Envelope(body=body, response=response or {}, outer=rec)


def common(env: _Envelope, out: Normalized) -> None:
    """Fill id, time, session, tenant, model and usage from wherever the envelope carries them."""
    rec, body, resp = env.outer, env.body, env.response
    metas = dicts(rec.get("metadata"), body.get("metadata"))
    places = (rec, *metas, body)
    out.request_id = str_or_none(first((rec,), ID_KEYS) or resp.get("id"), "id")
    key, ts = first_item((rec,), TIME_KEYS)
    if ts is None:
        key, ts = first_item((body, resp), TIME_KEYS)
    out.ts = parse_timestamp(ts, key or "timestamp")
    out.session_id = str_or_none(first(places, SESSION_KEYS), "session id")
    out.tenant = str_or_none(body.get("cache_salt") or first(places, TENANT_KEYS), "tenant")
    out.model = str_or_none(body.get("model") or resp.get("model") or rec.get("model"), "model")
    usage = resp.get("usage") if resp else rec.get("usage")
    if usage is None:
        usage = rec.get("usage")
    if usage is not None:
        if not isinstance(usage, dict):
            raise InputError(f"usage must be an object, got {type(usage).__name__}")
        _usage(usage, out)


def _usage(usage: dict, out: Normalized) -> None:
    if "input_tokens" in usage or "cache_read_input_tokens" in usage:  # Anthropic
        read = int_or_none(usage.get("cache_read_input_tokens"), "usage.cache_read_input_tokens")
        created = int_or_none(
            usage.get("cache_creation_input_tokens"), "usage.cache_creation_input_tokens"
        )
        fresh = int_or_none(usage.get("input_tokens"), "usage.input_tokens")
        if fresh is not None:
            total = fresh + (read or 0) + (created or 0)
            if total >= INT64_LIMIT:
                raise InputError(f"usage.input_tokens + cache tokens is out of range, got {total}")
            out.observed_prompt_tokens = total
            out.observed_cached_tokens = read if read is not None else None
        out.output_tokens = int_or_none(usage.get("output_tokens"), "usage.output_tokens")
        return
    out.observed_prompt_tokens = int_or_none(usage.get("prompt_tokens"), "usage.prompt_tokens")
    out.output_tokens = int_or_none(usage.get("completion_tokens"), "usage.completion_tokens")
    details = usage.get("prompt_tokens_details")
    if isinstance(details, dict):
        out.observed_cached_tokens = int_or_none(
            details.get("cached_tokens"), "usage.prompt_tokens_details.cached_tokens"
        )
    prompt, cached = out.observed_prompt_tokens, out.observed_cached_tokens
    if prompt is not None and cached is not None and cached > prompt:  # rates stay <= 1
        raise InputError(
            f"usage.prompt_tokens_details.cached_tokens {cached} exceeds usage.prompt_tokens "
            f"{prompt}"
        )


def normalize_openai_chat(rec: dict) -> Normalized:
    env = envelope(rec)
    out = Normalized(kind="chat", messages_checked=False)
    if "messages" not in env.body:
        raise InputError("no 'messages' in the request body")
    out.messages = check_openai_messages(env.body["messages"])
    out.tools = check_tools(env.body.get("tools"))
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


def normalize_batch(rec: dict) -> Normalized:
    body = rec.get("body")
    if not isinstance(body, dict):
        raise InputError("batch line has no 'body' object")
    url = rec.get("url", "")
    if not isinstance(url, str):
        raise InputError("batch line 'url' must be a string")
    wrapped = {"request": body, "custom_id": rec.get("custom_id")}
    if url.endswith("/completions") and not url.endswith("/chat/completions"):
        out = normalize_completions(wrapped)
    elif "messages" in body:
        out = normalize_openai_chat(wrapped)
    else:
        raise InputError(f"batch line for {url or 'unknown url'!r} is not a chat or completion")
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


def looks_like_batch(rec: dict) -> bool:
    return "custom_id" in rec and "body" in rec


FORMATS = (
    Format(
        "openai-chat",
        lambda _: normalize_openai_chat,
        looks_like_chat,
        summary="OpenAI chat completions requests, or gateway records wrapping them",
    ),
    Format(
        "openai-batch",
        lambda _: normalize_batch,
        looks_like_batch,
        priority=10,
        summary="OpenAI Batch API input lines",
    ),
    Format(
        "completions",
        lambda _: normalize_completions,
        looks_like_completions,
        summary="OpenAI (legacy) completions requests",
    ),
)
