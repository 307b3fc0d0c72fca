"""What every format reader shares: the ``Normalized`` request, the ``Format`` description, and
typed accessors that turn a logged value into a checked one or raise ``InputError``.

A normalizer either returns a ``Normalized``, raises ``Skip`` (the record is valid but outside
the format's scope, e.g. a Langfuse SPAN observation: counted, not an error) or raises
``InputError`` with a one-line reason; it never lets a malformed record through with silently
dropped parts. Chat messages are normalized to the OpenAI chat shape (role, content as a string /
list of parts / None, tool_calls, tool_call_id) and tools to the OpenAI function shape, keeping
the logged key order so that prompt bytes stay as logged.

Timestamps: a format passes the unit its schema gives (``parse_timestamp(value, unit=...)``);
the unit is guessed from the magnitude only where the format does not say.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kvtool.errors import InputError

SESSION_KEYS = ("session_id", "conversation_id", "thread_id", "session", "trace_id")
TENANT_KEYS = ("tenant", "tenant_id", "org_id", "organization")
END_USER_KEYS = ("user", "user_id", "end_user")  # a gateway's or an OpenAI body's end user
ID_KEYS = ("request_id", "id", "custom_id")
INT64_LIMIT = 2**63  # counts are stored as DuckDB BIGINT
HASH_BLOCK_LIMIT = 2**31  # files.hash_block_size is a DuckDB INTEGER
TIME_KEYS = ("timestamp", "created", "created_at", "time", "start_time")
UNITS = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}


class Skip(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised by a normalizer for a valid record outside its format's scope (the message says
    why, e.g. "observation type SPAN"): the record is counted as skipped, not rejected."""


@dataclass(slots=True)
class Normalized:
    """One request as every later stage sees it. ``kind`` is 'chat', 'completion' or 'hash'.

    Token counts follow one convention whatever the source: ``observed_prompt_tokens`` is the
    whole prompt (cached, cache-written and uncached tokens together), ``observed_cached_tokens``
    the part read from the provider's cache, ``cache_write_tokens`` the part written to it.
    ``cache_control``: where the request asked for caching, as markers with ``type`` and ``ttl``
    placed by index into ``messages`` / ``tools`` as normalized: ``{"message": i, "part": j}``
    (``part`` None for a message whose content is a string), ``{"message": i, "tool_call": k}``,
    ``{"tool": k}``, or ``{"auto": True}`` (a request-level marker: the provider places it).
    ``tenant`` is the cache-isolation domain (organization, team, project or API-key hash; None
    when the log names none: one domain), never the end user, who is ``end_user``.
    ``truncated``: the logger cut strings of the prompt; ``incomplete``: why the prompt cannot
    be rebuilt from the log. ``cache_key``: the provider's routing key as logged (OpenAI's
    ``prompt_cache_key``, at most ``CACHE_KEY_LIMIT`` characters): it steers which machine's
    cache a request meets, never an isolation domain and never a session."""

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
    cache_write_tokens: int | None = None
    cache_control: list[dict] | None = None
    truncated: bool = False
    incomplete: str | None = None
    end_user: str | None = None
    cache_key: str | None = None


@dataclass(frozen=True, slots=True)
class FormatOptions:
    """What a normalizer may need beyond the record: the block size of hash-only traces, and
    the file being read (None for stdin and streams): a trace whose lines name parts listed in
    companion files (RAGPulse) reads them from its directory."""

    hash_block_size: int = 512
    source: Path | None = None


@dataclass(frozen=True)
class Format:
    """One input format.

    - ``make(options)`` returns the normalizer for one record;
    - ``looks_like(record)``: whether one parsed record has this format's shape (detection votes
      over a file's first records with it);
    - ``records(line)``: for formats whose line holds several records (an OTLP batch), the
      records of one parsed line, each a dict the normalizer accepts; None: the line is one;
    - ``priority``: when one record looks like several formats, the highest wins;
    - ``absorbs``: formats whose votes count for this one when both occur in a file (a file
      with any Anthropic-only feature is Anthropic, although plain records look like OpenAI);
    - ``hash_trace``: its requests are block hash ids at ``hash_block_size`` tokens per id
      (the file's block size is stored with it).
    """

    name: str
    make: Callable[[FormatOptions], Callable[[dict], Normalized]]
    looks_like: Callable[[dict], bool]
    records: Callable[[dict], Iterator[dict]] | None = None
    priority: int = 0
    absorbs: tuple[str, ...] = ()
    summary: str = ""
    hash_trace: bool = False


# ---------------------------------------------------------------------------------------------
# small typed accessors


def str_or_none(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise InputError(f"{what} must be a string, got {type(value).__name__}")


CACHE_KEY_LIMIT = 1024  # characters of a logged prompt_cache_key


def cache_key_or_none(value: Any, what: str) -> str | None:
    """None (also for ""), or a string of at most ``CACHE_KEY_LIMIT`` characters; anything else
    raises ``InputError`` naming ``what``."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InputError(f"{what} must be a string, got {type(value).__name__}")
    if len(value) > CACHE_KEY_LIMIT:
        raise InputError(f"{what} is longer than {CACHE_KEY_LIMIT} characters ({len(value)})")
    return value


def int_or_none(value: Any, what: str) -> int | None:
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


def shown(value: Any) -> str:
    """A short, printable rendering of an input value for a reject reason."""
    if isinstance(value, str):
        return repr(value[:40])
    if isinstance(value, datetime):
        return value.isoformat()
    return repr(value)[:40]


def _to_seconds(value: Any, unit: str | None) -> float | None:
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
        raise InputError(f"timestamp must be a finite number >= 0, got {shown(value)}") from exc
    if v != v or v < 0 or v == float("inf"):
        raise InputError(f"timestamp must be a finite number >= 0, got {value}")
    if unit is not None:
        return v / UNITS[unit]
    for limit, scale in ((1e17, 1e9), (1e14, 1e6), (1e11, 1e3)):
        if v > limit:
            return v / scale
    return v


def parse_timestamp(value: Any, what: str = "timestamp", unit: str | None = None) -> float | None:
    """Seconds since the epoch from epoch numbers (numeric strings too), ISO-8601 or ``datetime``
    values (what Parquet timestamp columns read as). ``unit`` ('s', 'ms', 'us' or 'ns') is the
    unit the format gives epoch numbers in; None: guessed from the magnitude (s/ms/us/ns).

    Invariant: the result is None or finite and within ``TS_MIN <= ts < TS_MAX`` (1970-01-01 to
    2100-01-01, after unit detection); anything else raises ``InputError`` naming ``what`` (the
    field) and the value, so no later stage sees a far-future or non-finite time."""
    try:
        secs = _to_seconds(value, unit)
    except (OverflowError, ValueError) as exc:  # datetime arithmetic outside its range
        raise InputError(f"{what} {shown(value)} is outside {TS_WINDOW}") from exc
    if secs is None:
        return None
    if not TS_MIN <= secs < TS_MAX:  # also false for NaN
        raise InputError(
            f"{what} {shown(value)} is outside {TS_WINDOW} (read as {secs:.6g} s since the epoch)"
        )
    return secs


def first(mappings: tuple[dict, ...], keys: tuple[str, ...]) -> Any:
    return first_item(mappings, keys)[1]


def first_item(mappings: tuple[dict, ...], keys: tuple[str, ...]) -> tuple[str, Any]:
    """(key, value) of the first non-empty value of ``keys`` in ``mappings``; ("", None) if none."""
    for mapping in mappings:
        for key in keys:
            value = mapping.get(key)
            if value is not None and value != "":
                return key, value
    return "", None


def dicts(*values: Any) -> tuple[dict, ...]:
    return tuple(v for v in values if isinstance(v, dict))


def set_usage(
    out: Normalized,
    *,
    prompt: int | None,
    cached: int | None = None,
    written: int | None = None,
    output: int | None = None,
    what: str = "usage",
) -> None:
    """Store token counts in kvtool's convention (see ``Normalized``): ``prompt`` is the whole
    prompt, cached and written tokens included; the caller converts from its source's own
    convention first. ``InputError`` when a count is out of range or the parts exceed the whole
    (a hit rate stays <= 1)."""
    for name, value in (("prompt", prompt), ("cached", cached), ("written", written)):
        if value is not None and value >= INT64_LIMIT:
            raise InputError(f"{what}: {name} tokens out of range, got {value}")
    if prompt is not None and (cached or 0) + (written or 0) > prompt:
        raise InputError(
            f"{what}: cached ({cached}) and cache-write ({written}) tokens exceed the prompt's "
            f"{prompt}"
        )
    out.observed_prompt_tokens = prompt
    out.observed_cached_tokens = cached
    out.cache_write_tokens = written
    out.output_tokens = output
