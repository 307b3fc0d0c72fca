"""The explicit-cache inputs of a workload: each request's ``cache_control`` markers placed on
its token ids (``kvtool.tokenize.breakpoints``) and its logged cache-write tokens, in the
workload's processing order. Kept beside the ``Workload``, not in it: only a provider with
explicit breakpoints (Anthropic) reads them, and placing markers needs the prompt text.
"""

from __future__ import annotations

import numpy as np

from kvtool.errors import WorkloadError
from kvtool.progress import Progress
from kvtool.store import Connection
from kvtool.store.requests import CacheLog, cache_logs, content_keys, load_contents
from kvtool.tokenize.breakpoints import Breakpoints, RequestMarks, request_marks
from kvtool.tokenize.plans import PromptTokens
from kvtool.traffic.load import Traffic

BATCH = 2000  # requests whose contents are loaded at once


def load_breakpoints(con: Connection, traffic: Traffic, progress: Progress) -> Breakpoints:
    """The markers of ``traffic``'s requests on their token ids, rebuilt with the tokenizer and
    mode the workload was tokenized with; each distinct piece is encoded once. A hash trace or
    a redacted database holds no prompt text to place markers on: ``WorkloadError``."""
    wl = traffic.wl
    if wl.kind == "hash" or traffic.bundle is None:
        raise WorkloadError(
            "anthropic needs prompt text (cache_control markers): a hash trace has none"
        )
    if traffic.redacted:
        raise WorkloadError(
            "anthropic needs prompt text (cache_control markers): a redacted database has none"
        )
    logs = cache_logs(con, [int(r) for r in wl.req_ids])
    marked = [i for i, log in enumerate(logs) if log.markers]
    tokens = PromptTokens(traffic.bundle, traffic.mode)
    out: list[RequestMarks | None] = [None] * wl.n
    progress.stage("breakpoints", len(marked))
    for lo in range(0, len(marked), BATCH):
        batch = [logs[i] for i in marked[lo : lo + BATCH]]
        bodies = load_contents(con, content_keys(log.prompt for log in batch))
        for i, log in zip(marked[lo : lo + BATCH], batch, strict=True):
            out[i] = request_marks(tokens, log.prompt, bodies, log.markers)
        progress.update(min(lo + BATCH, len(marked)), len(marked))
    return Breakpoints.build(out)


def logged_cache_writes(con: Connection, traffic: Traffic) -> np.ndarray:
    """Per request (processing order), the logged cache-write tokens; NaN where not logged."""
    logs: list[CacheLog] = cache_logs(con, [int(r) for r in traffic.wl.req_ids])
    return np.array(
        [np.nan if log.cache_write_tokens is None else log.cache_write_tokens for log in logs],
        np.float64,
    )
