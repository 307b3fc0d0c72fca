"""Helicone request exports: the request objects of Helicone's query API
(``POST /v1/request/query-clickhouse``, ``HeliconeRequest`` in ``packages/llm-mapper/types.ts``)
as the ``@helicone/export`` CLI writes them (JSONL, one object per line; CSV rows arrive with
JSON columns as JSON strings) or as saved API pages (``{"data": [...]}``).

Fields: ``request_body`` / ``response_body`` (OpenAI chat, Anthropic Messages or completions
bodies, read by the ``openai`` and ``anthropic`` normalizers; the body's shape decides, not
``provider``, since Helicone's gateway logs OpenAI-shaped bodies for every provider),
``request_id`` (the CLI's CSV has only ``response_id``), ``request_created_at`` (ISO-8601 or
ClickHouse's UTC ``YYYY-MM-DD hh:mm:ss.fff``; a number, off-schema, is read as JavaScript epoch
milliseconds), the model (``request_model``, ``model``, the body's, ``response_model``), the
session (the ``Helicone-Session-Id`` entry of ``request_properties`` / ``properties``).
Tenant (the cache-isolation domain): a custom property named tenant/team/org/organization
(``Helicone-Property-Team: ...``; Helicone's records carry no org or key field), else the body's
``cache_salt`` or metadata tenant; None when none is logged (one domain). End user:
``request_user_id`` (``Helicone-User-Id``), else the body's (chat ``user``, Anthropic
``metadata.user_id``); never the tenant.

Usage (the trap): Helicone's ``prompt_tokens`` column is the prompt *minus* the cached part
(OpenAI: ``prompt_tokens - cached_tokens - audio_tokens``; Anthropic: ``input_tokens``, which
excludes cache reads and writes; see jawn's ``openaiBodyProcessor`` / ``anthropicBodyProcessor``).
The whole prompt is rebuilt as ``prompt_tokens + prompt_cache_read_tokens +
prompt_cache_write_tokens (+ prompt_audio_tokens)``. Where the export has no cache columns (the
CLI's CSV) the prompt cannot be rebuilt: the response body's own usage is used if there is one,
else the prompt count stays unknown. A body the export left out (no ``--include-body``: the
query API's ``{"helicone_message": ...}`` placeholder) gives a request marked ``incomplete``;
a body that is neither chat nor completion (embeddings, ...) is skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from kvtool.errors import InputError
from kvtool.ingest.formats.anthropic import looks_like_anthropic, normalize_anthropic
from kvtool.ingest.formats.base import (
    Format,
    Normalized,
    Skip,
    parse_timestamp,
    set_usage,
    str_or_none,
)
from kvtool.ingest.formats.langfuse import count, json_value
from kvtool.ingest.formats.openai import normalize_completions, normalize_openai_chat

SESSION_PROPERTY = "helicone-session-id"
TENANT_PROPERTIES = (
    "tenant",
    "tenant-id",
    "tenant_id",
    "team",
    "team-id",
    "team_id",
    "org",
    "org-id",
    "org_id",
    "organization",
)
CACHE_COLUMNS = ("prompt_cache_read_tokens", "prompt_cache_write_tokens")
NOT_EXPORTED = "the request body is not in the export (export with --include-body)"


def helicone_records(line: dict) -> Iterator[dict]:
    """The requests of one line: a saved API page's ``data``, or the line itself."""
    data = line.get("data")
    if isinstance(data, list) and "request_created_at" not in line:
        for i, item in enumerate(data):
            if not isinstance(item, dict):
                raise InputError(f"data[{i}] must be an object, got {type(item).__name__}")
        yield from data
        return
    yield line


def _json_column(rec: dict, key: str) -> Any:
    """A column's value, JSON text parsed; the export CLI's CSV doubles the quotes of object
    values twice, so a cell that reads ``{""key"": ...}`` is undoubled before parsing."""
    value = json_value(rec.get(key))
    if isinstance(value, str) and value.lstrip().startswith(('{""', '[{""')):
        try:
            return orjson.loads(value.replace('""', '"'))
        except orjson.JSONDecodeError:
            return value
    return value


def _object(rec: dict, key: str) -> dict | None:
    value = _json_column(rec, key)
    if value is not None and not isinstance(value, dict):
        raise InputError(f"{key} must be an object, got {type(value).__name__}")
    return value


def _properties(rec: dict) -> dict[str, Any]:
    """Custom properties by lower-cased name (``request_properties``, else ``properties``)."""
    props = _object(rec, "request_properties") or _object(rec, "properties") or {}
    return {str(k).lower(): v for k, v in props.items()}


def _from_body(rec: dict) -> Normalized:
    """The request as the body's own format reads it (see the module docstring)."""
    body = _json_column(rec, "request_body")
    if body is None or (isinstance(body, dict) and "helicone_message" in body):
        return Normalized(kind="chat", incomplete=NOT_EXPORTED)
    if not isinstance(body, dict):
        raise InputError(f"request_body must be an object, got {type(body).__name__}")
    response = _json_column(rec, "response_body")
    if not isinstance(response, dict) or "helicone_message" in response:
        response = None  # not exported, or an error text: the columns have the counts
    wrapped = {"request": body, "response": response}
    if "messages" in body:
        if looks_like_anthropic({"request": body}):
            return normalize_anthropic(wrapped)
        return normalize_openai_chat(wrapped)
    if "prompt" in body:
        return normalize_completions(wrapped)
    raise Skip("request body without 'messages' or 'prompt' (not a chat or completion)")


def _read_usage(rec: dict, out: Normalized) -> None:
    """Token counts from Helicone's columns, the whole prompt rebuilt (see the docstring)."""
    prompt = count(rec.get("prompt_tokens"), "prompt_tokens")
    output = count(rec.get("completion_tokens"), "completion_tokens")
    if prompt is None or not any(k in rec for k in CACHE_COLUMNS):
        if output is not None:  # prompt_tokens alone excludes an unknown cached part
            out.output_tokens = output
        return
    read = count(rec.get("prompt_cache_read_tokens"), "prompt_cache_read_tokens") or 0
    written = count(rec.get("prompt_cache_write_tokens"), "prompt_cache_write_tokens") or 0
    audio = count(rec.get("prompt_audio_tokens"), "prompt_audio_tokens") or 0
    set_usage(
        out,
        prompt=prompt + read + written + audio,
        cached=read,
        written=written,
        output=output if output is not None else out.output_tokens,
        what="Helicone token columns",
    )


def normalize_helicone(rec: dict) -> Normalized:
    out = _from_body(rec)
    rid = rec.get("request_id") if rec.get("request_id") is not None else rec.get("response_id")
    out.request_id = str_or_none(rid, "request_id") or out.request_id
    ts = parse_timestamp(rec.get("request_created_at"), "request_created_at", unit="ms")
    out.ts = ts if ts is not None else out.ts
    props = _properties(rec)
    session = str_or_none(props.get(SESSION_PROPERTY), "Helicone-Session-Id property")
    out.session_id = session or out.session_id
    tenant = next((props[k] for k in TENANT_PROPERTIES if props.get(k) not in (None, "")), None)
    out.tenant = str_or_none(tenant, "tenant property") or out.tenant or None
    user = str_or_none(rec.get("request_user_id"), "request_user_id")
    out.end_user = user or out.end_user or None
    for key in ("request_model", "model"):
        model = str_or_none(rec.get(key), key)
        if model:
            out.model = model
            break
    else:
        out.model = out.model or str_or_none(rec.get("response_model"), "response_model")
    _read_usage(rec, out)
    return out


def _looks_request(rec: dict) -> bool:
    return "request_created_at" in rec and any(
        k in rec for k in ("request_body", "request_id", "response_id")
    )


def looks_like_helicone(rec: dict) -> bool:
    data = rec.get("data")
    if isinstance(data, list) and data and isinstance(data[0], dict):
        return _looks_request(data[0])
    return _looks_request(rec)


FORMATS = (
    Format(
        "helicone",
        lambda _: normalize_helicone,
        looks_like_helicone,
        records=helicone_records,
        priority=10,
        summary="Helicone request exports (@helicone/export, the query API)",
    ),
)
