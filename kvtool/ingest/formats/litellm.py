"""LiteLLM logs: the ``StandardLoggingPayload`` a logging callback receives (``litellm-payload``;
what custom loggers and bucket loggers dump, one JSON object per call) and exports of the proxy's
``LiteLLM_SpendLogs`` table (``litellm-spendlogs``: JSONL, CSV, Parquet rows).

Schemas: ``StandardLoggingPayload`` in ``litellm/types/utils.py`` (built by
``get_standard_logging_object_payload`` in ``litellm/litellm_core_utils/litellm_logging.py``),
``model LiteLLM_SpendLogs`` in ``litellm/proxy/schema.prisma`` and the row builder
``get_logging_payload`` in ``litellm/proxy/spend_tracking/spend_tracking_utils.py`` (LiteLLM
1.108, checked in its code and by running it).

Call types read (``call_type``; any other is skipped): chat completions (``completion``,
``acompletion``), Anthropic Messages (``anthropic_messages``, ``aanthropic_messages``: the
proxy's ``/v1/messages``, what Claude Code sends through LiteLLM) and OpenAI Responses
(``responses``, ``aresponses``: ``/v1/responses``, what Codex sends). The request of each is read
by the normalizer of its own API (``anthropic.normalize_anthropic``,
``responses.normalize_responses``), so messages, tools and cache markers come out as for those
formats; id, time, session, tenant, model and usage are LiteLLM's (below).

Where the prompt sits:
- SpendLogs: the client's request body, kept as a JSON string in ``proxy_server_request``
  (``store_prompts_in_spend_logs``; the ``messages`` column is "{}"; a list there is read as a
  fallback for chat calls): chat ``messages``/``tools``; Anthropic ``system``/``messages``/
  ``tools``/``cache_control``; Responses ``instructions``/``input``/``tools`` (and
  ``previous_response_id``, ``conversation``, ``prompt``, which make the prompt incomplete);
- payload: ``messages`` holds what the caller passed as messages (chat messages, Anthropic
  messages, or the Responses ``input``); ``model_parameters`` the other request parameters
  (``tools``, Anthropic ``cache_control``, Responses ``instructions``, ``previous_response_id``,
  ``conversation``), never ``system``, ``input`` or ``prompt``. An Anthropic ``system`` string is
  prepended to ``messages`` as a system message; a ``system`` block list (what Claude Code sends)
  is in neither, so such payloads have no system prompt (nothing in the record says one was
  sent; SpendLogs keep it). Where LiteLLM bridged a call to another API, ``model_parameters``
  holds what it sent on: ``/v1/messages`` to the Responses API (OpenAI models): the system
  prompt as ``instructions`` (read as the system prompt) and flat Responses tools;
  ``/v1/messages`` to chat completions (OpenAI-compatible servers): chat-shaped tools and no
  system prompt; ``/v1/responses`` to an Anthropic model (LiteLLM's chat-completions bridge):
  chat-shaped tools and no ``instructions``. Tools are read in the shape logged (a ``strict``
  flag stays inside ``function``).

Other fields:
- model: ``model`` (what served the call), else ``model_group`` (the name the client asked for),
  else the body's ``model``;
- time: payload ``startTime`` (epoch seconds, a float); SpendLogs ``startTime`` (a DateTime,
  UTC: ISO text or a timestamp column; a bare number is refused, not unit-guessed);
- id: payload ``id`` (the response id: for Responses calls LiteLLM's encoded ``resp_...`` id),
  else ``litellm_call_id``; SpendLogs ``request_id``;
- usage: LiteLLM converts the usage of every call type, Anthropic Messages and Responses
  included, to its chat ``Usage``: ``prompt_tokens`` is the whole prompt (cache reads and writes
  included; so is the record's own ``prompt_tokens``); cached =
  ``prompt_tokens_details.cached_tokens`` (else ``cache_read_input_tokens``), written =
  ``prompt_tokens_details.cache_creation_tokens`` / ``cache_write_tokens`` (else
  ``cache_creation_input_tokens``), from ``metadata.usage_object`` or ``response.usage``
  (payload) and ``metadata.usage_object`` or ``metadata.additional_usage_values`` (SpendLogs).
  A usage object in its provider's own shape is read by what its keys mean when the record
  has no ``prompt_tokens``: Anthropic ``input_tokens`` EXCLUDES the cache reads and writes,
  Responses ``input_tokens`` (with ``input_tokens_details``) INCLUDES them.

Session (the trap): LiteLLM logs the caller's ``litellm_session_id`` / ``metadata.session_id`` as
``trace_id`` (and the SpendLogs ``session_id`` column falls back to that trace id), but without
one ``trace_id`` is a fresh uuid4 per call: taken as a session it would make every call its own
session and hide all within-session reuse. kvtool takes, in order: the payload's ``session_id``
(set only from a caller's id, with ``litellm.request_correlation_in_logs``), the SpendLogs body's
``litellm_session_id`` / ``metadata.session_id``, ``metadata.requester_metadata.session_id``, a
Responses ``conversation``, and then ``trace_id`` / the ``session_id`` column unless it has the
form LiteLLM generates (a lowercase uuid4). So a caller whose own session ids are uuid4s, logged
without ``request_correlation_in_logs``, has no logged sessions (analyze infers them).

Tenant (the cache-isolation domain): the team (``metadata.user_api_key_team_id`` /
``metadata.team_id``; SpendLogs ``team_id``), else the organization, else the virtual key's hash
(``metadata.user_api_key_hash``; SpendLogs ``api_key``), else what the body's own normalizer
takes (a gateway tenant key, vLLM ``cache_salt``, Anthropic ``workspace_id``); None when none is
logged (one domain). Users are never the tenant: neither the end user nor the key's internal
user (``metadata.user_api_key_user_id``; SpendLogs ``user``), as providers cache per
organization. End user: ``end_user`` (payload and SpendLogs; the proxy takes it from a
customer-id header or the body's ``user``, ``metadata.user_id`` or ``safety_identifier``:
``get_end_user_id_from_request_body`` in ``litellm/proxy/auth/auth_utils.py``), else the
payload's ``metadata.user_api_key_end_user_id``, else what the logged body carries (chat
``user``, Anthropic ``metadata.user_id``, Responses ``safety_identifier``/``user``). Cache key
(OpenAI's ``prompt_cache_key``, chat and Responses calls): the SpendLogs body's, the
payload's ``model_parameters.prompt_cache_key``; never the tenant or the session.

Skipped (valid, out of scope, counted): calls of other types (embeddings, ...), failed calls, and
calls served from LiteLLM's own response cache (``cache_hit``: the model never saw them; this is
not a KV-cache hit).

Unusable prompts: a string cut by LiteLLM ("... (litellm_truncated skipped N chars...) ...": the
SpendLogs safeguard ``MAX_STRING_LENGTH_PROMPT_IN_DB``, 2048 characters by default, and the same
one of stdout logs) in the prompt's fields sets ``truncated``; messages redacted by
``turn_off_message_logging``, SpendLogs rows without a stored body (``store_prompts_in_spend_logs``
off, the default) and payloads of Responses calls without ``input`` are ``incomplete``, as are
Responses calls continuing stored state (see ``responses``). Their ids, times and usage are kept;
their prompts are never analyzed.

LiteLLM has no ``prefix_block_hashes`` field (nothing of that name in its code), so there is no
hash-only LiteLLM format.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from kvtool.errors import InputError
from kvtool.ingest.formats.anthropic import normalize_anthropic
from kvtool.ingest.formats.base import (
    INT64_LIMIT,
    Format,
    Normalized,
    Skip,
    cache_key_or_none,
    first,
    int_or_none,
    parse_timestamp,
    set_usage,
    shown,
    str_or_none,
)
from kvtool.ingest.formats.chat import check_openai_messages, check_tools, take_chat_markers
from kvtool.ingest.formats.responses import function_tools, normalize_responses

CALL_KINDS = {  # call_type -> the API of its request body
    "completion": "chat",
    "acompletion": "chat",
    "anthropic_messages": "anthropic",
    "aanthropic_messages": "anthropic",
    "responses": "responses",
    "aresponses": "responses",
}
PROMPT_KEYS = {  # the body fields that make up the prompt, per API (truncation is looked for here)
    "chat": ("messages", "tools"),
    "anthropic": ("system", "messages", "tools"),
    "responses": ("instructions", "input", "tools"),
}
BODY_KEYS = {  # what the API's normalizer is given from a logged body
    "anthropic": ("model", "system", "messages", "tools", "cache_control", "metadata"),
    "responses": (
        "model",
        "instructions",
        "input",
        "prompt",
        "tools",
        "conversation",
        "previous_response_id",
        "safety_identifier",
        "user",
        "metadata",
        "prompt_cache_key",
    ),
}
NATIVE_TOOLS = {"anthropic": None, "responses": "function"}  # see ``_tool_shape``
RESPONSES_PARAMETERS = (
    "tools",
    "conversation",
    "previous_response_id",
    "safety_identifier",
    "user",
    "prompt_cache_key",
)
GENERATED_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
TRUNCATION_MARK = b"(litellm_truncated skipped "
TRUNCATION = re.compile(rb"\.\.\. \(litellm_truncated skipped \d+ chars[.)]")
REDACTED = [{"role": "user", "content": "redacted-by-litellm"}]
REDACTED_REASON = "messages redacted by LiteLLM (turn_off_message_logging)"
NO_BODY = "no request body stored (store_prompts_in_spend_logs is off)"
NO_INPUT = "no input logged (a Responses prompt template is not in the payload)"
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


def _scope(call_type: Any, status: Any, cache_hit: Any) -> str:
    """The API of the call's request body ('chat', 'anthropic' or 'responses'); ``Skip`` for a
    call this format does not analyze (see the module docstring)."""
    name = _text(call_type, "call_type")
    kind = "chat" if name is None else CALL_KINDS.get(name)
    if kind is None:
        raise Skip(f"call_type {name[:40]!r} is not a chat, Anthropic Messages or Responses call")
    if _text(status, "status") == "failure":
        raise Skip("failed call (status 'failure')")
    if cache_hit is True or (isinstance(cache_hit, str) and cache_hit.lower() == "true"):
        raise Skip("served from LiteLLM's response cache (cache_hit): the model never saw it")
    if cache_hit is not None and not isinstance(cache_hit, bool | str):
        raise InputError(f"cache_hit must be a boolean or string, got {type(cache_hit).__name__}")
    return kind


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


def _tenant(team: Any, org: Any, key: Any) -> str | None:
    """The first of team, organization and key hash that is logged (users never are tenants)."""
    for value, what in ((team, "team id"), (org, "organization id"), (key, "api key hash")):
        found = _text(value, what)
        if found is not None:
            return found
    return None


def _first_count(*items: tuple[dict, str, str]) -> int | None:
    """The first count present of ``(mapping, key, where)`` items."""
    for mapping, key, where in items:
        value = int_or_none(mapping.get(key), f"{where}.{key}")
        if value is not None:
            return value
    return None


def _usage(out: Normalized, prompt: Any, output: Any, usage: dict, where: str) -> None:
    """Token counts in kvtool's convention (see the module docstring): ``prompt`` (the record's
    ``prompt_tokens``, 0 when LiteLLM found no usage) is the whole prompt; without it, the usage
    object's ``prompt_tokens``, else its ``input_tokens`` by what they count (Responses: cache
    included, with ``input_tokens_details``; Anthropic: cache excluded); else unknown."""
    ptd_at, itd_at = f"{where}.prompt_tokens_details", f"{where}.input_tokens_details"
    ptd = _obj(usage.get("prompt_tokens_details"), ptd_at)
    itd = _obj(usage.get("input_tokens_details"), itd_at)
    cached = _first_count(
        (ptd, "cached_tokens", ptd_at),
        (usage, "cache_read_input_tokens", where),
        (itd, "cached_tokens", itd_at),
    )
    written = _first_count(
        (ptd, "cache_creation_tokens", ptd_at),
        (ptd, "cache_write_tokens", ptd_at),
        (usage, "cache_creation_input_tokens", where),
        (itd, "cache_write_tokens", itd_at),
    )
    total = int_or_none(prompt, "prompt_tokens") or None  # LiteLLM writes 0 when it had none
    if total is None:
        total = int_or_none(usage.get("prompt_tokens"), f"{where}.prompt_tokens")
    if total is None:
        fresh = int_or_none(usage.get("input_tokens"), f"{where}.input_tokens")
        if fresh is not None and "input_tokens_details" not in usage:
            fresh += (cached or 0) + (written or 0)  # Anthropic: input_tokens excludes the cache
            if fresh >= INT64_LIMIT:
                raise InputError(f"{where}.input_tokens + cache tokens is out of range")
        total = fresh
    completion = int_or_none(output, "completion_tokens") or None
    if completion is None:
        completion = _first_count(
            (usage, "completion_tokens", where), (usage, "output_tokens", where)
        )
    set_usage(out, prompt=total, cached=cached, written=written, output=completion, what=where)


def _tool_shape(tools: Any) -> str | None:
    """'chat' when every tool has the OpenAI chat shape (a ``function`` object), 'function' when
    every tool is a flat Responses function tool; None otherwise (an API's own mix)."""
    if not isinstance(tools, list) or not tools or not all(isinstance(t, dict) for t in tools):
        return None
    if all(isinstance(t.get("function"), dict) for t in tools):
        return "chat"
    if all(t.get("type") == "function" and "input_schema" not in t for t in tools):
        return "function"
    return None


def _truncated(value: Any) -> bool:
    """Whether a string of ``value`` (the logged prompt fields) was cut by LiteLLM."""
    try:
        data = orjson.dumps(value)
    except orjson.JSONEncodeError as exc:  # nesting deeper than JSON output allows
        raise InputError(f"messages or tools cannot be serialized ({exc})") from None
    return TRUNCATION_MARK in data and TRUNCATION.search(data) is not None


def _redacted() -> Normalized:
    messages = [dict(m) for m in REDACTED]
    return Normalized(kind="chat", messages=messages, incomplete=REDACTED_REASON)


def _prompt(kind: str, body: dict) -> Normalized:
    """Messages, tools and cache markers of a request ``body`` of API ``kind``, read by that API's
    normalizer (tools of another API's shape, where LiteLLM bridged the call, in that shape);
    ``truncated`` when LiteLLM cut a string of the prompt's fields."""
    if kind == "chat":
        out = Normalized(kind="chat", messages_checked=False)
        found = take_chat_markers(
            check_openai_messages(body.get("messages")), check_tools(body.get("tools"))
        )
        out.messages, out.tools = found.messages, found.tools
        out.cache_control = found.markers or None
        out.end_user = _text(body.get("user"), "user")
        out.cache_key = cache_key_or_none(body.get("prompt_cache_key"), "prompt_cache_key")
    else:
        tools = body.get("tools")
        shape = _tool_shape(tools)
        bridged = shape is not None and shape != NATIVE_TOOLS[kind]
        keys = [k for k in BODY_KEYS[kind] if k in body and not (bridged and k == "tools")]
        request = {k: body[k] for k in keys}
        normalize = normalize_anthropic if kind == "anthropic" else normalize_responses
        out = normalize({"request": request})
        if bridged:
            out.tools = check_tools(tools) if shape == "chat" else function_tools(tools)
    out.truncated = _truncated([body.get(k) for k in PROMPT_KEYS[kind]])
    return out


# ---------------------------------------------------------------------------------------------
# StandardLoggingPayload


def _payload_body(kind: str, messages: Any, params: dict) -> dict:
    """The request body of a payload, as far as it is logged (see the module docstring)."""
    if kind == "chat":
        keys = ("tools", "user", "prompt_cache_key")
        return {"messages": messages, **{k: params.get(k) for k in keys}}
    if kind == "responses":
        body = {"instructions": params.get("instructions"), "input": messages}
        body.update((k, params[k]) for k in RESPONSES_PARAMETERS if k in params)
        return body
    body = {}
    head = messages[0] if isinstance(messages, list) and messages else None
    if isinstance(head, dict) and head.get("role") == "system":  # LiteLLM prepends a string
        body["system"] = head.get("content")
        messages = messages[1:]
    elif params.get("instructions") is not None:  # bridged to the Responses API
        body["system"] = params["instructions"]
    body["messages"] = messages
    body.update((k, params[k]) for k in ("tools", "cache_control") if k in params)
    return body


def normalize_payload(rec: dict) -> Normalized:
    kind = _scope(rec.get("call_type"), rec.get("status"), rec.get("cache_hit"))
    meta = _obj(rec.get("metadata"), "metadata")
    params = _obj(rec.get("model_parameters"), "model_parameters")
    messages = rec.get("messages")
    if messages == REDACTED:
        out = _redacted()
    elif kind == "responses" and messages is None:
        out = Normalized(kind="chat", incomplete=NO_INPUT)
    else:
        out = _prompt(kind, _payload_body(kind, messages, params))
    out.request_id = _text(rec.get("id"), "id") or _text(rec.get("litellm_call_id"), "id")
    out.ts = parse_timestamp(rec.get("startTime"), "startTime", unit="s")
    requester = _obj(meta.get("requester_metadata"), "metadata.requester_metadata")
    out.session_id = _session(
        (rec.get("session_id"), requester.get("session_id"), out.session_id),
        rec.get("trace_id"),
        "trace_id",
    )
    out.tenant = (
        _tenant(
            first((meta,), TEAM_KEYS),
            meta.get("user_api_key_org_id"),
            meta.get("user_api_key_hash"),
        )
        or out.tenant
    )
    out.end_user = (
        _text(rec.get("end_user"), "end_user")
        or _text(meta.get("user_api_key_end_user_id"), "metadata.user_api_key_end_user_id")
        or out.end_user
    )
    model = _text(rec.get("model"), "model") or _text(rec.get("model_group"), "model_group")
    out.model = model or out.model
    usage = meta.get("usage_object")
    where = "metadata.usage_object"
    if usage is None:
        response = rec.get("response")
        usage = response.get("usage") if isinstance(response, dict) else None
        where = "response.usage"
    _usage(out, rec.get("prompt_tokens"), rec.get("completion_tokens"), _obj(usage, where), where)
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


def _spendlog_prompt(kind: str, body: dict, column: Any) -> Normalized:
    """The prompt of a SpendLogs row from its stored body (``column``: the ``messages`` column,
    where older proxies logged chat messages)."""
    if body.get("messages") == REDACTED:
        return _redacted()
    if kind == "chat" and body.get("messages") is None and isinstance(column, list) and column:
        body = {**body, "messages": column}
    field = "input" if kind == "responses" else "messages"
    if body.get(field) is None and (kind != "responses" or body.get("prompt") is None):
        if body:
            raise InputError(f"proxy_server_request has no {field!r}")
        return Normalized(kind="chat", incomplete=NO_BODY)
    return _prompt(kind, body)


def normalize_spendlog(rec: dict) -> Normalized:
    kind = _scope(rec.get("call_type"), rec.get("status"), rec.get("cache_hit"))
    cols = {k: _json_column(rec.get(k), k) for k in SPENDLOG_JSON}
    meta = _obj(cols["metadata"], "metadata")
    body = _obj(cols["proxy_server_request"], "proxy_server_request")
    body_meta = _obj(body.get("metadata"), "proxy_server_request.metadata")
    out = _spendlog_prompt(kind, body, cols["messages"])
    out.request_id = _text(rec.get("request_id"), "request_id")
    out.ts = _spendlog_time(rec.get("startTime"))
    requester = _obj(meta.get("requester_metadata"), "metadata.requester_metadata")
    out.session_id = _session(
        (
            body.get("litellm_session_id"),
            body_meta.get("session_id"),
            requester.get("session_id"),
            out.session_id,
        ),
        rec.get("session_id"),
        "session_id",
    )
    out.tenant = (
        _tenant(
            rec.get("team_id") or meta.get("user_api_key_team_id"),
            rec.get("organization_id") or meta.get("user_api_key_org_id"),
            rec.get("api_key"),
        )
        or out.tenant
    )
    out.end_user = _text(rec.get("end_user"), "end_user") or out.end_user
    out.model = (
        _text(rec.get("model"), "model")
        or _text(body.get("model"), "proxy_server_request.model")
        or _text(rec.get("model_group"), "model_group")
    )
    usage, where = _spendlog_usage(meta)
    _usage(out, rec.get("prompt_tokens"), rec.get("completion_tokens"), usage, where)
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
