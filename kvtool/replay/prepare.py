"""The stored requests as HTTP requests to an OpenAI-compatible server, in processing order.

Chat logs become chat completions with their messages and tools; completion logs become
completions; hash traces become completions of synthetic token ids in which equal hash ids give
equal blocks, so the server's prefix cache sees exactly the trace's sharing.
"""

from __future__ import annotations

import numpy as np
import xxhash

from kvtool.replay.client import Prepared
from kvtool.store import Connection
from kvtool.store.requests import content_keys, load_contents, request_sources
from kvtool.traffic import Workload

TOKEN_RANGE = (1000, 100_000)  # ordinary vocabulary ids for synthetic blocks (no special tokens)


def block_tokens(seed: str, n: int) -> list[int]:
    """``n`` token ids of one hash-trace block, a pure function of ``seed``: equal hash ids give
    equal blocks, so the server's prefix cache sees the trace's sharing exactly."""
    rng = np.random.default_rng(xxhash.xxh3_64_intdigest(seed.encode()))
    return rng.integers(*TOKEN_RANGE, size=n).tolist()


def hash_prompt(ids: list[int], n: int, B: int, salt: str) -> list[int]:
    """Token ids of a hash-trace request of ``n`` tokens: block j from id j (the last id covers
    the partial block), per-request filler if the trace lists too few ids."""
    out: list[int] = []
    for j, h in enumerate(ids):
        take = min(B, n - j * B)
        if take <= 0:
            break
        out += block_tokens(f"{salt}:{h}", take)
    if len(out) < n:
        out += block_tokens(f"{salt}:filler:{n}:{len(ids)}:{ids[:1]}", n - len(out))
    return out


def prepare_requests(
    con: Connection, wl: Workload, model: str, max_tokens: int | None
) -> list[Prepared]:
    """One ``Prepared`` request per workload request, in workload order; ``max_tokens`` (else
    the logged output length, at least 1) output tokens each; offsets from the first timestamp."""
    sources = request_sources(con, wl.req_ids.tolist())
    bodies = load_contents(con, content_keys(s.prompt for s in sources.values()))
    known = wl.ts[~np.isnan(wl.ts)]
    t0 = float(known.min()) if len(known) else 0.0
    out = []
    for k, rid in enumerate(wl.req_ids.tolist()):
        src = sources[rid]
        row = src.prompt
        body: dict
        if row.kind == "chat":
            body = {"model": model, "messages": [bodies[m] for m in row.message_keys]}
            if row.tools_key is not None:
                body["tools"] = bodies[row.tools_key]
                body["tool_choice"] = "none"  # the tools are prompt text here, not calls
            path = "/v1/chat/completions"
        elif row.kind == "completion":
            assert row.prompt_key is not None
            body = {"model": model, "prompt": bodies[row.prompt_key]}
            path = "/v1/completions"
        else:  # a hash trace: synthetic token ids with the trace's sharing
            assert src.input_length is not None and src.hash_block_size is not None
            salt = f"{src.file_digest}:{row.tenant or ''}"
            ids = list(src.hash_ids)
            body = {
                "model": model,
                "prompt": hash_prompt(ids, int(src.input_length), src.hash_block_size, salt),
            }
            path = "/v1/completions"
        body["max_tokens"] = max_tokens or max(1, int(src.output_tokens or 1))
        offset = 0.0 if np.isnan(wl.ts[k]) else float(wl.ts[k]) - t0
        out.append(Prepared(rid, src.request_id, path, body, offset))
    return out
