"""Record formats: detection and normalization of one parsed log record into a ``Normalized``.

Every normalizer either returns a ``Normalized`` or raises ``InputError`` with a one-line reason;
it never lets a malformed record through with silently dropped parts. Chat messages are normalized
to the OpenAI chat shape (role, content as a string / list of parts / None, tool_calls,
tool_call_id), keeping the original key order so that prompt bytes stay exactly as logged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from kvtool.errors import InputError, OptionError

FORMATS = ("openai-chat", "openai-batch", "anthropic", "completions", "mooncake")
ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
SESSION_KEYS = ("session_id", "conversation_id", "thread_id", "session", "trace_id")
TENANT_KEYS = ("tenant", "tenant_id", "org_id", "organization")
ID_KEYS = ("request_id", "id", "custom_id")
INT64_LIMIT = 2**63  # counts are stored as DuckDB BIGINT
HASH_BLOCK_LIMIT = 2**31  # files.hash_block_size is a DuckDB INTEGER
TIME_KEYS = ("timestamp", "created", "created_at", "time", "start_time")


@dataclass(slots=True)
class Normalized:
    """One request as every later stage sees it. ``kind`` is 'chat', 'completion' or 'hash'."""

    kind: str
    request_id: str | None = None
    ts: float | None = None
    session_id: str | None = None
    tenant: str | None = None
    model: str | None = None
    messages: list[dict] | None = None
    tools: list | None = None
    prompt: str | list[int] | None = None
    hash_ids: list[int] | None = None
    input_length: int | None = None
    output_tokens: int | None = None
    observed_prompt_tokens: int | None = None
    observed_cached_tokens: int | None = None
    messages_checked: bool = True  # False: call check_message on each message not seen before


# ---------------------------------------------------------------------------------------------
# small typed accessors


def _str_or_none(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise InputError(f"{what} must be a string, got {type(value).__name__}")


def _int_or_none(value: Any, what: str) -> int | None:
    """None, or a whole number ``0 <= n < INT64_LIMIT`` (an integral float such as 3.0 counts);
    anything else raises ``InputError`` naming ``what``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"{what} must be a number, got {type(value).__name__}")
    if value < 0 or value != value:
        raise InputError(f"{what} must be >= 0, got {value}")
    if value >= INT64_LIMIT:
        raise InputError(f"{what} is out of range, got {value}")
    if isinstance(value, float) and not value.is_integer():
        raise InputError(f"{what} must be an integer, got {value}")
    return int(value)


TS_MIN = 0.0  # 1970-01-01T00:00:00Z, inclusive
TS_MAX = 4102444800.0  # 2100-01-01T00:00:00Z, exclusive
TS_WINDOW = "1970-01-01..2100-01-01"


def _shown(value: Any) -> str:
    """A short, printable rendering of an input value for a reject reason."""
    if isinstance(value, str):
        return repr(value[:40])
    if isinstance(value, datetime):
        return value.isoformat()
    return repr(value)[:40]


def _to_seconds(value: Any) -> float | None:
    """Seconds since the epoch before the window check (see ``parse_timestamp``)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, str):
        text = value.strip()
        try:
            value = float(text)
        except ValueError:
            try:
                dt = datetime.fromisoformat(text)
            except ValueError as exc:
                raise InputError(f"unreadable timestamp {value[:40]!r}") from exc
            if dt.tzinfo is None:  # naive times are taken as UTC, as gateways log them
                dt = dt.replace(tzinfo=UTC)
            return dt.timestamp()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"timestamp must be a number or string, got {type(value).__name__}")
    try:
        v = float(value)
    except OverflowError as exc:  # an int too large for a float
        raise InputError(f"timestamp must be a finite number >= 0, got {_shown(value)}") from exc
    if v != v or v < 0 or v == float("inf"):
        raise InputError(f"timestamp must be a finite number >= 0, got {value}")
    for limit, scale in ((1e17, 1e9), (1e14, 1e6), (1e11, 1e3)):
        if v > limit:
            return v / scale
    return v


def parse_timestamp(value: Any, what: str = "timestamp") -> float | None:
    """Seconds since the epoch from epoch s/ms/us/ns numbers, numeric strings, ISO-8601 or
    ``datetime`` values (what Parquet timestamp columns read as).

    Invariant: the result is None or finite and within ``TS_MIN <= ts < TS_MAX`` (1970-01-01 to
    2100-01-01, after unit detection); anything else raises ``InputError`` naming ``what`` (the
    field) and the value, so no later stage sees a far-future or non-finite time."""
    try:
        secs = _to_seconds(value)
    except (OverflowError, ValueError) as exc:  # datetime arithmetic outside its range
        raise InputError(f"{what} {_shown(value)} is outside {TS_WINDOW}") from exc
    if secs is None:
        return None
    if not TS_MIN <= secs < TS_MAX:  # also false for NaN
        raise InputError(
            f"{what} {_shown(value)} is outside {TS_WINDOW} (read as {secs:.6g} s since the epoch)"
        )
    return secs


def _first(mappings: tuple[dict, ...], keys: tuple[str, ...]) -> Any:
    return _first_item(mappings, keys)[1]


def _first_item(mappings: tuple[dict, ...], keys: tuple[str, ...]) -> tuple[str, Any]:
    """(key, value) of the first non-empty value of ``keys`` in ``mappings``; ("", None) if none."""
    for mapping in mappings:
        for key in keys:
            value = mapping.get(key)
            if value is not None and value != "":
                return key, value
    return "", None


def _dicts(*values: Any) -> tuple[dict, ...]:
    return tuple(v for v in values if isinstance(v, dict))


# ---------------------------------------------------------------------------------------------
# gateway envelope


@dataclass(slots=True)
class _Envelope:
    body: dict
    response: dict
    outer: dict


def _envelope(rec: dict) -> _Envelope:
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


def _common(env: _Envelope, out: Normalized) -> None:
    """Fill id, time, session, tenant, model and usage from wherever the envelope carries them."""
    rec, body, resp = env.outer, env.body, env.response
    metas = _dicts(rec.get("metadata"), body.get("metadata"))
    places = (rec, *metas, body)
    out.request_id = _str_or_none(_first((rec,), ID_KEYS) or resp.get("id"), "id")
    key, ts = _first_item((rec,), TIME_KEYS)
    if ts is None:
        key, ts = _first_item((body, resp), TIME_KEYS)
    out.ts = parse_timestamp(ts, key or "timestamp")
    out.session_id = _str_or_none(_first(places, SESSION_KEYS), "session id")
    out.tenant = _str_or_none(body.get("cache_salt") or _first(places, TENANT_KEYS), "tenant")
    out.model = _str_or_none(body.get("model") or resp.get("model") or rec.get("model"), "model")
    usage = resp.get("usage") if resp else rec.get("usage")
    if usage is None:
        usage = rec.get("usage")
    if usage is not None:
        if not isinstance(usage, dict):
            raise InputError(f"usage must be an object, got {type(usage).__name__}")
        _usage(usage, out)


def _usage(usage: dict, out: Normalized) -> None:
    if "input_tokens" in usage or "cache_read_input_tokens" in usage:  # Anthropic
        read = _int_or_none(usage.get("cache_read_input_tokens"), "usage.cache_read_input_tokens")
        created = _int_or_none(
            usage.get("cache_creation_input_tokens"), "usage.cache_creation_input_tokens"
        )
        fresh = _int_or_none(usage.get("input_tokens"), "usage.input_tokens")
        if fresh is not None:
            total = fresh + (read or 0) + (created or 0)
            if total >= INT64_LIMIT:
                raise InputError(f"usage.input_tokens + cache tokens is out of range, got {total}")
            out.observed_prompt_tokens = total
            out.observed_cached_tokens = read if read is not None else None
        out.output_tokens = _int_or_none(usage.get("output_tokens"), "usage.output_tokens")
        return
    out.observed_prompt_tokens = _int_or_none(usage.get("prompt_tokens"), "usage.prompt_tokens")
    out.output_tokens = _int_or_none(usage.get("completion_tokens"), "usage.completion_tokens")
    details = usage.get("prompt_tokens_details")
    if isinstance(details, dict):
        out.observed_cached_tokens = _int_or_none(
            details.get("cached_tokens"), "usage.prompt_tokens_details.cached_tokens"
        )
    prompt, cached = out.observed_prompt_tokens, out.observed_cached_tokens
    if prompt is not None and cached is not None and cached > prompt:  # rates stay <= 1
        raise InputError(
            f"usage.prompt_tokens_details.cached_tokens {cached} exceeds usage.prompt_tokens "
            f"{prompt}"
        )


# ---------------------------------------------------------------------------------------------
# chat messages


def _check_content(content: Any, where: str) -> None:
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


def _check_openai_messages(messages: Any) -> list[dict]:
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
    _check_content(msg.get("content"), where)
    calls = msg.get("tool_calls")
    if calls is not None:
        if not isinstance(calls, list):
            raise InputError(f"{where}.tool_calls must be a list")
        for j, call in enumerate(calls):
            fn = call.get("function") if isinstance(call, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise InputError(f"{where}.tool_calls[{j}].function.name must be a string")


def _check_tools(tools: Any) -> list | None:
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise InputError(f"tools must be a list, got {type(tools).__name__}")
    for j, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise InputError(f"tools[{j}] must be an object")
    return tools or None


def normalize_openai_chat(rec: dict) -> Normalized:
    env = _envelope(rec)
    out = Normalized(kind="chat", messages_checked=False)
    if "messages" not in env.body:
        raise InputError("no 'messages' in the request body")
    out.messages = _check_openai_messages(env.body["messages"])
    out.tools = _check_tools(env.body.get("tools"))
    _common(env, out)
    return out


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
    env = _envelope(rec)
    out = Normalized(kind="chat")
    if "messages" not in env.body:
        raise InputError("no 'messages' in the request body")
    out.messages = _anthropic_messages(env.body.get("system"), env.body["messages"])
    out.tools = _check_tools(env.body.get("tools"))
    _common(env, out)
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
    env = _envelope(rec)
    out = Normalized(kind="completion")
    prompt = env.body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]
    if isinstance(prompt, list):
        _check_token_ids(prompt)
    elif not isinstance(prompt, str):
        raise InputError(f"prompt must be a string, got {type(prompt).__name__}")
    out.prompt = prompt
    _common(env, out)
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


def make_mooncake(block_size: int) -> Callable[[dict], Normalized]:
    """Normalizer for hash traces with ``block_size``-token blocks (Mooncake: 512)."""

    def normalize_mooncake(rec: dict) -> Normalized:
        n = rec.get("input_length")
        ids = rec.get("hash_ids")
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise InputError("input_length must be a positive integer")
        if n >= INT64_LIMIT:
            raise InputError(f"input_length must be a positive integer below 2**63, got {n}")
        if not isinstance(ids, list) or not all(
            isinstance(h, int) and not isinstance(h, bool) for h in ids
        ):
            raise InputError("hash_ids must be a list of integers")
        expected = -(-n // block_size)
        if len(ids) != expected:
            raise InputError(
                f"hash_ids has {len(ids)} ids, input_length {n} at block size {block_size} "
                f"needs {expected}"
            )
        if any(h < -(2**63) or h >= 2**63 for h in ids):
            raise InputError("hash_ids must fit in 64 bits")
        ts = rec.get("timestamp")
        if isinstance(ts, bool) or not isinstance(ts, int | float) or not ts >= 0:
            raise InputError("timestamp must be a number of milliseconds >= 0")
        if not ts / 1000.0 < TS_MAX:  # Mooncake times are ms, never unit-detected
            raise InputError(f"timestamp {_shown(ts)} ms is outside {TS_WINDOW}")
        return Normalized(
            kind="hash",
            request_id=_str_or_none(rec.get("request_id") or rec.get("id"), "id"),
            ts=float(ts) / 1000.0,
            session_id=_str_or_none(_first((rec,), SESSION_KEYS), "session id"),
            tenant=_str_or_none(_first((rec,), TENANT_KEYS), "tenant"),
            model=_str_or_none(rec.get("model"), "model"),
            hash_ids=ids,
            input_length=n,
            output_tokens=_int_or_none(rec.get("output_length"), "output_length"),
        )

    return normalize_mooncake


def check_ingest_options(fmt: str | None, hash_block_size: int) -> None:
    """``OptionError`` unless ``fmt`` is None or one of ``FORMATS`` and ``0 < hash_block_size <
    HASH_BLOCK_LIMIT`` (the store keeps it as a 32-bit integer)."""
    if fmt is not None and fmt not in FORMATS:
        raise OptionError("fmt", f"{fmt!r} is not one of {', '.join(FORMATS)}")
    if hash_block_size <= 0:
        raise OptionError("hash_block_size", f"must be positive, got {hash_block_size}")
    if hash_block_size >= HASH_BLOCK_LIMIT:
        raise OptionError("hash_block_size", f"must be below 2**31, got {hash_block_size}")


def normalizer(fmt: str, hash_block_size: int) -> Callable[[dict], Normalized]:
    """The normalizer for one of ``FORMATS``."""
    table: dict[str, Callable[[dict], Normalized]] = {
        "openai-chat": normalize_openai_chat,
        "openai-batch": normalize_batch,
        "anthropic": normalize_anthropic,
        "completions": normalize_completions,
        "mooncake": make_mooncake(hash_block_size),
    }
    return table[fmt]


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


def detect_record(rec: Any) -> str | None:
    """The format a single parsed record looks like, or None when it looks like none."""
    if not isinstance(rec, dict):
        return None
    if "hash_ids" in rec and "input_length" in rec:
        return "mooncake"
    if "custom_id" in rec and "body" in rec:
        return "openai-batch"
    body = rec.get("request")
    if isinstance(body, str):  # gateways that log the body as a JSON string (see _envelope)
        try:
            body = orjson.loads(body)
        except orjson.JSONDecodeError:
            body = None
    if not isinstance(body, dict):
        body = rec.get("body") if isinstance(rec.get("body"), dict) else rec
    if "messages" in body:
        return "anthropic" if _looks_anthropic(body, rec) else "openai-chat"
    if "prompt" in body:
        return "completions"
    return None


def detect_format(records: list[Any]) -> str | None:
    """The file format from a sample of its parsed records: any Anthropic-only feature wins over
    plain chat (the two agree on plain string messages); otherwise the most common guess."""
    votes: dict[str, int] = {}
    for rec in records:
        guess = detect_record(rec)
        if guess:
            votes[guess] = votes.get(guess, 0) + 1
    if not votes:
        return None
    if "anthropic" in votes and "openai-chat" in votes:
        votes["anthropic"] += votes.pop("openai-chat")
    return max(votes, key=lambda k: votes[k])
