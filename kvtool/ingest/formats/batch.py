"""OpenAI Batch API input lines (``openai-batch``): one request per line, ``{"custom_id",
"method", "url", "body"}``.

Schema: the Batch API reference ("The request input object"): ``custom_id`` (the caller's id,
unique in the file) -> the request id; ``url`` names the endpoint the ``body`` is for, and the
body is that endpoint's request body. Routed by ``url``: ``/v1/chat/completions`` -> the OpenAI
chat normalizer, ``/v1/completions`` -> completions, ``/v1/responses`` -> the Responses
normalizer (``openai``, ``responses``). Any other endpoint (``/v1/embeddings``,
``/v1/moderations``, ...) is a reject naming the url; so is a line without a url (the API
requires one).

A batch line carries no time, session, tenant or end user of its own, only what its body has
(a chat body's ``user``, a Responses body's ``safety_identifier``/``user`` are the end user,
never the tenant; a body's ``prompt_cache_key`` is the request's ``cache_key``), and no usage:
the results file holds that.
"""

from __future__ import annotations

from kvtool.errors import InputError
from kvtool.ingest.formats.base import Format, Normalized
from kvtool.ingest.formats.openai import normalize_completions, normalize_openai_chat
from kvtool.ingest.formats.responses import normalize_responses

ENDPOINTS = (  # url suffix -> normalizer; the longer suffix first
    ("/chat/completions", normalize_openai_chat),
    ("/completions", normalize_completions),
    ("/responses", normalize_responses),
)
KNOWN = "/v1/chat/completions, /v1/completions, /v1/responses"


def normalize_batch(rec: dict) -> Normalized:
    body = rec.get("body")
    if not isinstance(body, dict):
        raise InputError("batch line has no 'body' object")
    url = rec.get("url")
    if url is None or url == "":
        raise InputError(f"batch line has no 'url' (one of {KNOWN})")
    if not isinstance(url, str):
        raise InputError(f"batch line 'url' must be a string, got {type(url).__name__}")
    path = url.split("?", 1)[0].rstrip("/")
    for suffix, normalize in ENDPOINTS:
        if path.endswith(suffix):
            return normalize({"request": body, "custom_id": rec.get("custom_id")})
    raise InputError(
        f"batch line for {url[:60]!r} is not a chat or completion or Responses request ({KNOWN})"
    )


def looks_like_batch(rec: dict) -> bool:
    return "custom_id" in rec and "body" in rec


FORMATS = (
    Format(
        "openai-batch",
        lambda _: normalize_batch,
        looks_like_batch,
        priority=10,
        summary="OpenAI Batch API input lines (chat completions, completions, Responses)",
    ),
)
