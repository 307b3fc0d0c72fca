"""LiteLLM logs: the ``StandardLoggingPayload`` a logging callback receives (``litellm-payload``;
what custom loggers and bucket loggers dump, one JSON object per call) and exports of the proxy's
``LiteLLM_SpendLogs`` table (``litellm-spendlogs``: JSONL, CSV, Parquet rows).

Schemas: ``StandardLoggingPayload`` in ``litellm/types/utils.py`` and ``model LiteLLM_SpendLogs``
in ``litellm/proxy/schema.prisma`` (LiteLLM 1.108, checked against the public repository).

Fields read:
- messages: the payload's ``messages`` (OpenAI chat, as the caller sent them); SpendLogs: the
  ``messages`` of the request body, which is kept as a JSON string in ``proxy_server_request``
  (the ``messages`` column is "{}" for chat calls; a list there is read as a fallback);
- tools: payload ``model_parameters.tools``; SpendLogs: the body's ``tools``;
- model: ``model`` (what served the call), else ``model_group`` (the name the client asked for);
- time: payload ``startTime`` (epoch seconds, a float); SpendLogs ``startTime`` (a DateTime,
  UTC: ISO text or a timestamp column; a bare number is refused, not unit-guessed);
- id: payload ``id`` (the provider's response id), else ``litellm_call_id``; SpendLogs
  ``request_id``;
- usage: LiteLLM's ``Usage`` counts the whole prompt in ``prompt_tokens`` (cache reads and writes
  included, Anthropic too); cached = ``prompt_tokens_details.cached_tokens`` (else
  ``cache_read_input_tokens``), written = ``prompt_tokens_details.cache_creation_tokens`` (else
  ``cache_creation_input_tokens``), from ``metadata.usage_object`` or ``response.usage``
  (payload) and ``metadata.usage_object`` or ``metadata.additional_usage_values`` (SpendLogs).

Session (the trap): LiteLLM logs the caller's ``litellm_session_id`` / ``metadata.session_id`` as
``trace_id`` (and the SpendLogs ``session_id`` column falls back to that trace id), but without
one ``trace_id`` is a fresh uuid4 per call: taken as a session it would make every call its own
session and hide all within-session reuse. kvtool takes, in order: the payload's ``session_id``
(set only from a caller's id, with ``litellm.request_correlation_in_logs``), the SpendLogs body's
``litellm_session_id`` / ``metadata.session_id``, ``metadata.requester_metadata.session_id``, and
then ``trace_id`` / the ``session_id`` column unless it has the form LiteLLM generates (a
lowercase uuid4). So a caller whose own session ids are uuid4s, logged without
``request_correlation_in_logs``, has no logged sessions (analyze infers them).

Tenant (the cache-isolation domain): the team (``metadata.user_api_key_team_id`` /
``metadata.team_id``; SpendLogs ``team_id``), else the organization, else the virtual key's hash
(``metadata.user_api_key_hash``; SpendLogs ``api_key``), else the key's internal user; only
without any of those the end user (``end_user``).

Skipped (valid, out of scope, counted): calls that are not chat completions (embeddings,
``anthropic_messages``, ``responses``, ...), failed calls, and calls served from LiteLLM's own
response cache (``cache_hit``: the model never saw them; this is not a KV-cache hit).

Unusable prompts: a string cut by LiteLLM ("... (litellm_truncated skipped N chars...) ...": the
SpendLogs safeguard ``MAX_STRING_LENGTH_PROMPT_IN_DB``, 2048 characters by default, and the same
one of stdout logs) sets ``truncated``; messages redacted by ``turn_off_message_logging`` and
SpendLogs rows without a stored body (``store_prompts_in_spend_logs`` off, the default) are
``incomplete``. Their ids, times and usage are kept; their prompts are never analyzed.

LiteLLM has no ``prefix_block_hashes`` field (nothing of that name in its code), so there is no
hash-only LiteLLM format.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from kvtool.errors import InputError
from kvtool.ingest.formats.base import (
    Format,
    Normalized,
    Skip,
    first,
    int_or_none,
    parse_timestamp,
    set_usage,
    shown,
    str_or_none,
)
from kvtool.ingest.formats.chat import check_openai_messages, check_tools

CHAT_CALL_TYPES = frozenset({"completion", "acompletion"})
GENERATED_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
TRUNCATION_MARK = b"(litellm_truncated skipped "
TRUNCATION = re.compile(rb"\.\.\. \(litellm_truncated skipped \d+ chars[.)]")
REDACTED = [{"role": "user", "content": "redacted-by-litellm"}]
NO_BODY = "no request body stored (store_prompts_in_spend_logs is off)"
TEAM_KEYS = ("user_api_key_team_id", "team_id")
SPENDLOG_JSON = ("metadata", "proxy_server_request", "messages", "response")


# ---------------------------------------------------------------------------------------------
# shared pieces


def _obj(value: Any, what: str) -> dict:
    """A JSON object field: {} for None, an object as is; ``InputError`` otherwise."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError(f"{what} must be an object, got {type(value).__name__}")
    return value


def _json_column(value: Any, what: str) -> Any:
    """A SpendLogs JSON column: exported as a value (JSONL) or as JSON text (CSV, Parquet)."""
    if not isinstance(value, str):
        return value
    if not value.strip():
        return None
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{what} is a string that is not JSON") from exc


def _text(value: Any, what: str) -> str | None:
    """A string field where LiteLLM writes "" for none."""
    return str_or_none(value, what) or None


def _scope(call_type: Any, status: Any, cache_hit: Any) -> None:
    """``Skip`` for a call this format does not analyze (see the module docstring)."""
    kind = _text(call_type, "call_type")
    if kind is not None and kind not in CHAT_CALL_TYPES:
        raise Skip(f"call_type {kind[:40]!r} is not a chat completion")
    if _text(status, "status") == "failure":
        raise Skip("failed call (status 'failure')")
    if cache_hit is True or (isinstance(cache_hit, str) and cache_hit.lower() == "true"):
        raise Skip("served from LiteLLM's response cache (cache_hit): the model never saw it")
    if cache_hit is not None and not isinstance(cache_hit, bool | str):
        raise InputError(f"cache_hit must be a boolean or string, got {type(cache_hit).__name__}")


def _session(explicit: tuple[Any, ...], fallback: Any, what: str) -> str | None:
    """The first caller-given session id of ``explicit``; else ``fallback`` (a trace id or the
    SpendLogs column) unless it has the uuid4 form LiteLLM generates per call."""
    for value in explicit:
        found = _text(value, "session id")
        if found is not None:
            return found
    found = _text(fallback, what)
    if found is None or GENERATED_ID.fullmatch(found):
        return None
    return found


def _tenant(team: Any, org: Any, key: Any, owner: Any, end_user: Any) -> str | None:
    for value, what in (
        (team, "team id"),
        (org, "organization id"),
        (key, "api key hash"),
        (owner, "user id"),
        (end_user, "end_user"),
    ):
        found = _text(value, what)
        if found is not None:
            return found
    return None


def _usage(out: Normalized, prompt: Any, output: Any, usage: dict, where: str) -> None:
    """Token counts in kvtool's convention; ``prompt_tokens`` 0 with no usage object is unknown."""
    details_at = f"{where}.prompt_tokens_details"
    details = _obj(usage.get("prompt_tokens_details"), details_at)
    cached = int_or_none(details.get("cached_tokens"), f"{details_at}.cached_tokens")
    if cached is None:
        cached = int_or_none(
            usage.get("cache_read_input_tokens"), f"{where}.cache_read_input_tokens"
        )
    written = int_or_none(
        details.get("cache_creation_tokens"), f"{details_at}.cache_creation_tokens"
    )
    if written is None:
        written = int_or_none(
            usage.get("cache_creation_input_tokens"), f"{where}.cache_creation_input_tokens"
        )
    total = int_or_none(prompt, "prompt_tokens")
    if total is None:
        total = int_or_none(usage.get("prompt_tokens"), f"{where}.prompt_tokens")
    if total == 0 and not usage:
        total = None
    completion = int_or_none(output, "completion_tokens")
    set_usage(out, prompt=total, cached=cached, written=written, output=completion, what=where)


def _check_prompt(out: Normalized) -> None:
    """Flag messages LiteLLM redacted (incomplete) or cut (truncated)."""
    if out.messages == REDACTED:
        out.incomplete = "messages redacted by LiteLLM (turn_off_message_logging)"
        return
    try:
        data = orjson.dumps([out.messages, out.tools])
    except orjson.JSONEncodeError as exc:  # nesting deeper than JSON output allows
        raise InputError(f"messages or tools cannot be serialized ({exc})") from None
    if TRUNCATION_MARK in data and TRUNCATION.search(data):
        out.truncated = True


# ---------------------------------------------------------------------------------------------
# StandardLoggingPayload


def normalize_payload(rec: dict) -> Normalized:
    _scope(rec.get("call_type"), rec.get("status"), rec.get("cache_hit"))
    meta = _obj(rec.get("metadata"), "metadata")
    params = _obj(rec.get("model_parameters"), "model_parameters")
    out = Normalized(kind="chat", messages_checked=False)
    out.messages = check_openai_messages(rec.get("messages"))
    out.tools = check_tools(params.get("tools"))
    out.request_id = _text(rec.get("id"), "id") or _text(rec.get("litellm_call_id"), "id")
    out.ts = parse_timestamp(rec.get("startTime"), "startTime", unit="s")
    requester = _obj(meta.get("requester_metadata"), "metadata.requester_metadata")
    out.session_id = _session(
        (rec.get("session_id"), requester.get("session_id")), rec.get("trace_id"), "trace_id"
    )
    out.tenant = _tenant(
        first((meta,), TEAM_KEYS),
        meta.get("user_api_key_org_id"),
        meta.get("user_api_key_hash"),
        meta.get("user_api_key_user_id"),
        rec.get("end_user") or meta.get("user_api_key_end_user_id"),
    )
    out.model = _text(rec.get("model"), "model") or _text(rec.get("model_group"), "model_group")
    usage = meta.get("usage_object")
    where = "metadata.usage_object"
    if usage is None:
        response = rec.get("response")
        usage = response.get("usage") if isinstance(response, dict) else None
        where = "response.usage"
    _usage(out, rec.get("prompt_tokens"), rec.get("completion_tokens"), _obj(usage, where), where)
    _check_prompt(out)
    return out


def looks_like_payload(rec: dict) -> bool:
    return (
        "messages" in rec
        and "model_parameters" in rec
        and "startTime" in rec
        and ("call_type" in rec or "trace_id" in rec)
    )


# ---------------------------------------------------------------------------------------------
# LiteLLM_SpendLogs rows


def _spendlog_time(value: Any) -> float | None:
    """``startTime`` is a DateTime column: ISO text or a datetime, never an epoch number."""
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(value, str):
        try:
            float(value)
            is_number = True
        except ValueError:
            pass
    if is_number:
        raise InputError(f"startTime must be a date-time (a DateTime column), got {shown(value)}")
    if value is None:
        raise InputError("startTime is missing")
    return parse_timestamp(value, "startTime")


def _spendlog_usage(meta: dict) -> tuple[dict, str]:
    for key in ("usage_object", "additional_usage_values"):
        value = meta.get(key)
        if value is not None:
            return _obj(value, f"metadata.{key}"), f"metadata.{key}"
    return {}, "metadata"


def normalize_spendlog(rec: dict) -> Normalized:
    _scope(rec.get("call_type"), rec.get("status"), rec.get("cache_hit"))
    cols = {k: _json_column(rec.get(k), k) for k in SPENDLOG_JSON}
    meta = _obj(cols["metadata"], "metadata")
    body = _obj(cols["proxy_server_request"], "proxy_server_request")
    out = Normalized(kind="chat", messages_checked=False)
    out.request_id = _text(rec.get("request_id"), "request_id")
    out.ts = _spendlog_time(rec.get("startTime"))
    body_meta = _obj(body.get("metadata"), "proxy_server_request.metadata")
    requester = _obj(meta.get("requester_metadata"), "metadata.requester_metadata")
    out.session_id = _session(
        (body.get("litellm_session_id"), body_meta.get("session_id"), requester.get("session_id")),
        rec.get("session_id"),
        "session_id",
    )
    out.tenant = _tenant(
        rec.get("team_id") or meta.get("user_api_key_team_id"),
        rec.get("organization_id") or meta.get("user_api_key_org_id"),
        rec.get("api_key"),
        rec.get("user"),
        rec.get("end_user"),
    )
    out.model = (
        _text(rec.get("model"), "model")
        or _text(body.get("model"), "proxy_server_request.model")
        or _text(rec.get("model_group"), "model_group")
    )
    usage, where = _spendlog_usage(meta)
    _usage(out, rec.get("prompt_tokens"), rec.get("completion_tokens"), usage, where)
    messages = body.get("messages")
    if messages is None and isinstance(cols["messages"], list) and cols["messages"]:
        messages = cols["messages"]  # older proxies logged the messages in their own column
    if messages is None:
        if body:
            raise InputError("proxy_server_request has no 'messages'")
        out.incomplete = NO_BODY
        return out
    out.messages = check_openai_messages(messages)
    out.tools = check_tools(body.get("tools"))
    _check_prompt(out)
    return out


def looks_like_spendlog(rec: dict) -> bool:
    """A ``LiteLLM_SpendLogs`` row (also one exported without its body column)."""
    return (
        "request_id" in rec
        and "startTime" in rec
        and ("proxy_server_request" in rec or ("spend" in rec and "call_type" in rec))
    )


FORMATS = (
    Format(
        "litellm-payload",
        lambda _: normalize_payload,
        looks_like_payload,
        priority=15,
        summary="LiteLLM StandardLoggingPayload records (logging callbacks, custom loggers)",
    ),
    Format(
        "litellm-spendlogs",
        lambda _: normalize_spendlog,
        looks_like_spendlog,
        priority=15,
        summary="LiteLLM proxy LiteLLM_SpendLogs exports (JSONL, CSV, Parquet)",
    ),
)
