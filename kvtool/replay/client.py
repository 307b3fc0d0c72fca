"""The load generator: send prepared requests to an OpenAI-compatible server and time them.

Requests stream (``stream_options.include_usage``) so that TTFT is the first streamed token and
the final chunk carries ``usage.prompt_tokens_details.cached_tokens``. Timing modes: ``closed``
(at most ``concurrency`` in flight, in trace order; 1 = strictly sequential) and ``trace``
(each request at its trace offset divided by ``speedup``). A run stops cleanly after
``max_errors`` consecutive failures (a dead server); every result taken before is kept.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from kvtool.errors import OptionError
from kvtool.store.runs import ReplayMeasurement


@dataclass
class Prepared:
    """One request ready to send: the endpoint path, the JSON body, its trace arrival offset."""

    req_id: int
    request_id: str
    path: str
    body: dict
    offset_s: float


async def _send(client: httpx.AsyncClient, p: Prepared, t0: float) -> ReplayMeasurement:
    start = time.perf_counter()
    res = ReplayMeasurement(p.req_id, p.request_id, False, started_s=start - t0)
    body = {**p.body, "stream": True, "stream_options": {"include_usage": True}}
    try:
        async with client.stream("POST", p.path, json=body) as response:
            if response.status_code != 200:
                text = (await response.aread()).decode("utf-8", "replace")[:200]
                res.error = f"HTTP {response.status_code}: {text}"
                return res
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if res.ttft_s is None and chunk.get("choices"):
                    res.ttft_s = time.perf_counter() - start
                usage = chunk.get("usage")
                if usage:
                    res.prompt_tokens = usage.get("prompt_tokens")
                    details = usage.get("prompt_tokens_details") or {}
                    res.cached_tokens = details.get("cached_tokens")
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        res.error = f"{type(exc).__name__}: {exc}"[:200] or type(exc).__name__
        return res
    res.e2e_s = time.perf_counter() - start
    res.ok = res.prompt_tokens is not None
    if not res.ok:
        res.error = "no usage in the response (does the server support stream_options?)"
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
                r = await _send(client, p, t0)
            results[k] = r
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
) -> list[ReplayMeasurement]:
    """Send ``requests``; results of the ones that were sent, in trace order."""
    if timing not in ("closed", "trace"):
        raise OptionError("timing", f"must be 'closed' or 'trace', got {timing!r}")
    return asyncio.run(
        _replay(requests, base_url, timing, concurrency, speedup, timeout_s, max_errors, progress)
    )
