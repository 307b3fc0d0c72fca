"""The load generator: send prepared requests to an OpenAI-compatible server and time them.

Requests stream (``stream_options.include_usage``) so that TTFT is the first streamed token and
the final chunk carries ``usage.prompt_tokens_details.cached_tokens``. Timing modes: ``closed``
(at most ``concurrency`` in flight, in trace order; 1 = strictly sequential) and ``trace``
(each request at its trace offset divided by ``speedup``). A run stops cleanly after
``max_errors`` consecutive failures (a dead server); every result taken before is kept.

Invariants: each request sent yields exactly one ``ReplayMeasurement``, handed to ``on_result``
the moment it completes (so a caller can store it before anything else can go wrong). A response
that breaks the protocol (a chunk that is not a JSON object, a ``usage`` that is not an object,
a count that is not an integer in 0..2^63-1, a line longer than ``max_line_bytes``, no end
within ``timeout_s``) is a failed measurement whose ``error`` says what, never an exception.
``timeout_s`` is a deadline for the whole request, not per read. Memory per request is bounded
by ``max_line_bytes`` (1 MiB by default). A ``KeyboardInterrupt`` stops sending and propagates
after every completed measurement was handed over.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx

from kvtool.errors import OptionError
from kvtool.store.runs import ReplayMeasurement

MAX_LINE_BYTES = 1 << 20  # the longest server-sent-events line read (1 MiB)
MAX_COUNT = (1 << 63) - 1  # token counts are stored as BIGINT
ERROR_CHARS = 200  # a stored error message is at most this long
_BODY_BYTES = 1024  # what is read of a non-200 response's body


@dataclass
class Prepared:
    """One request ready to send: the endpoint path, the JSON body, its trace arrival offset."""

    req_id: int
    request_id: str
    path: str
    body: dict
    offset_s: float


class BadResponse(Exception):
    """A response that breaks the streaming protocol; its message is the recorded error."""


def clean(text: str, limit: int = ERROR_CHARS) -> str:
    """``text`` as one printable line of at most ``limit`` characters: control characters (ANSI
    escapes, newlines) become ``\\xNN`` escapes, so server text is safe on a terminal."""
    out = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[: limit * 4])
    return out[:limit]


def check_options(
    *,
    timing: str,
    concurrency: int | None,
    speedup: float,
    timeout_s: float,
    max_errors: int,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> None:
    """``OptionError`` naming the first parameter a replay cannot run with."""
    if timing not in ("closed", "trace"):
        raise OptionError("timing", f"must be 'closed' or 'trace', got {timing!r}")
    if concurrency is not None and concurrency < 1:
        raise OptionError("concurrency", f"must be at least 1, got {concurrency}")
    if not (math.isfinite(speedup) and speedup > 0):
        raise OptionError("speedup", f"must be a positive number, got {speedup}")
    if not (math.isfinite(timeout_s) and timeout_s > 0):
        raise OptionError("timeout_s", f"must be a positive number of seconds, got {timeout_s}")
    if max_errors < 1:
        raise OptionError("max_errors", f"must be at least 1, got {max_errors}")
    if max_line_bytes < 1:
        raise OptionError("max_line_bytes", f"must be at least 1, got {max_line_bytes}")


async def _lines(response: httpx.Response, max_line_bytes: int) -> AsyncIterator[str]:
    """The response's lines (``\\n``, ``\\r\\n`` or ``\\r`` ends one); ``BadResponse`` as soon as
    one grows past ``max_line_bytes``, so memory stays bounded."""
    buf = b""
    async for data in response.aiter_bytes():
        buf += data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *done, buf = buf.split(b"\n")
        for line in done:
            if len(line) > max_line_bytes:
                raise BadResponse(f"a streamed line is longer than {max_line_bytes} bytes")
            yield line.decode("utf-8", "replace")
        if len(buf) > max_line_bytes:
            raise BadResponse(f"a streamed line is longer than {max_line_bytes} bytes")
    if buf:
        yield buf.decode("utf-8", "replace")


def _count(value: object, name: str) -> int | None:
    """A token count from ``usage``: None when absent, else an int in 0..MAX_COUNT."""
    if value is None:
        return None
    if type(value) is not int:
        raise BadResponse(f"{name} is not an integer: {clean(repr(value), 40)}")
    if not 0 <= value <= MAX_COUNT:
        raise BadResponse(f"{name} is out of range (0..2^63-1): {clean(str(value), 40)}")
    return value


def _read_chunk(data: str, res: ReplayMeasurement, start: float) -> None:
    """Take what one ``data:`` chunk says into ``res``; ``BadResponse`` when it is malformed."""
    try:
        chunk = json.loads(data)
    except RecursionError:
        raise BadResponse("a streamed chunk is nested too deeply") from None
    except ValueError as exc:
        raise BadResponse(f"a streamed chunk is not JSON: {clean(str(exc), 80)}") from None
    if not isinstance(chunk, dict):
        raise BadResponse(f"a streamed chunk is not an object: {clean(data, 40)}")
    if res.ttft_s is None and chunk.get("choices"):
        res.ttft_s = time.perf_counter() - start
    usage = chunk.get("usage")
    if not usage:
        return
    if not isinstance(usage, dict):
        raise BadResponse(f"usage is not an object: {clean(repr(usage), 40)}")
    prompt = _count(usage.get("prompt_tokens"), "usage.prompt_tokens")
    details = usage.get("prompt_tokens_details") or {}
    if not isinstance(details, dict):
        raise BadResponse("usage.prompt_tokens_details is not an object")
    cached = _count(details.get("cached_tokens"), "usage.prompt_tokens_details.cached_tokens")
    if prompt is not None and cached is not None and cached > prompt:
        raise BadResponse(f"cached_tokens {cached} exceeds prompt_tokens {prompt}")
    res.prompt_tokens, res.cached_tokens = prompt, cached


async def _exchange(
    client: httpx.AsyncClient,
    p: Prepared,
    res: ReplayMeasurement,
    start: float,
    max_line_bytes: int,
) -> None:
    """Send ``p`` and read its stream into ``res`` (raises on anything unusable)."""
    body = {**p.body, "stream": True, "stream_options": {"include_usage": True}}
    async with client.stream("POST", p.path, json=body) as response:
        if response.status_code != 200:
            raw = b""
            async for data in response.aiter_bytes():
                raw += data
                if len(raw) >= _BODY_BYTES:
                    break
            res.error = f"HTTP {response.status_code}: {clean(raw.decode('utf-8', 'replace'))}"
            return
        async for line in _lines(response, max_line_bytes):
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            _read_chunk(line[6:], res, start)
    res.e2e_s = time.perf_counter() - start
    res.ok = res.prompt_tokens is not None
    if not res.ok:
        res.error = "no usage in the response (does the server support stream_options?)"


async def _send(
    client: httpx.AsyncClient, p: Prepared, t0: float, timeout_s: float, max_line_bytes: int
) -> ReplayMeasurement:
    """One request, timed; every way it can fail is a measurement with ``ok`` false."""
    start = time.perf_counter()
    res = ReplayMeasurement(p.req_id, p.request_id, False, started_s=start - t0)
    try:
        async with asyncio.timeout(timeout_s):
            await _exchange(client, p, res, start, max_line_bytes)
        return res
    except TimeoutError:
        error = f"ReadTimeout: no complete response within {timeout_s:g} s"
    except BadResponse as exc:
        error = str(exc)
    except (httpx.HTTPError, httpx.StreamError, OSError) as exc:
        error = clean(f"{type(exc).__name__}: {exc}") or type(exc).__name__
    res.ok, res.error, res.e2e_s = False, error, None
    res.prompt_tokens = res.cached_tokens = None
    return res


async def _replay(
    requests: list[Prepared],
    base_url: str,
    timing: str,
    concurrency: int | None,
    speedup: float,
    timeout_s: float,
    max_errors: int,
    progress: Callable[[int, int], None] | None,
    on_result: Callable[[ReplayMeasurement], None] | None,
    max_line_bytes: int,
) -> list[ReplayMeasurement]:
    limit = asyncio.Semaphore(concurrency or len(requests) or 1)
    results: list[ReplayMeasurement | None] = [None] * len(requests)
    state = {"errors_in_row": 0, "done": 0, "stopped": False}
    t0 = time.perf_counter()
    limits = httpx.Limits(max_connections=concurrency or 100)
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout_s, limits=limits) as client:

        async def one(k: int, p: Prepared) -> None:
            if timing == "trace":
                delay = p.offset_s / speedup - (time.perf_counter() - t0)
                if delay > 0:
                    await asyncio.sleep(delay)
            async with limit:
                if state["stopped"]:
                    return
                r = await _send(client, p, t0, timeout_s, max_line_bytes)
            results[k] = r
            if on_result:
                on_result(r)  # before anything else: a Ctrl-C below keeps it
            state["errors_in_row"] = 0 if r.ok else state["errors_in_row"] + 1
            if state["errors_in_row"] >= max_errors:
                state["stopped"] = True
            state["done"] += 1
            if progress:
                progress(state["done"], len(requests))

        if timing == "closed" and concurrency == 1:
            for k, p in enumerate(requests):  # strictly in order
                await one(k, p)
                if state["stopped"]:
                    break
        else:
            await asyncio.gather(*(one(k, p) for k, p in enumerate(requests)))
    return [r for r in results if r is not None]


def replay(
    requests: list[Prepared],
    base_url: str,
    *,
    timing: str = "closed",
    concurrency: int | None = 1,
    speedup: float = 1.0,
    timeout_s: float = 120.0,
    max_errors: int = 5,
    progress: Callable[[int, int], None] | None = None,
    on_result: Callable[[ReplayMeasurement], None] | None = None,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> list[ReplayMeasurement]:
    """Send ``requests``; results of the ones that were sent, in trace order. ``on_result`` gets
    each measurement as it completes (before ``progress``); options as ``check_options``."""
    check_options(
        timing=timing,
        concurrency=concurrency,
        speedup=speedup,
        timeout_s=timeout_s,
        max_errors=max_errors,
        max_line_bytes=max_line_bytes,
    )
    return asyncio.run(
        _replay(
            requests,
            base_url,
            timing,
            concurrency,
            speedup,
            timeout_s,
            max_errors,
            progress,
            on_result,
            max_line_bytes,
        )
    )
