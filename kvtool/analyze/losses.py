"""The tokens each request lost to prompt breaks, by cause (``BreakLosses``), for a stage that
prices them (the shortfall waterfall of ``simulate --provider``; the caller passes this
function in, ``kvtool.traffic.BreakFinder``)."""

from __future__ import annotations

import numpy as np

from kvtool.analyze import redacted
from kvtool.analyze.breaks import Break, detect_breaks
from kvtool.progress import Progress
from kvtool.store import Connection
from kvtool.traffic import BreakLosses, Traffic, Workload


def break_losses(con: Connection, traffic: Traffic, progress: Progress) -> BreakLosses | None:
    """analyze's breaks of ``traffic`` at its block size (on fingerprints for a redacted
    database), priced on prompt blocks alone (output caching off): the shortfall waterfall
    starts from a prompt-only infinite cache, so its steps sum exactly; None for a hash trace,
    which has no prompt text to diff."""
    wl = traffic.wl
    if traffic.bundle is None or traffic.signature is None:
        return None
    progress.stage("breaks", None)
    step = lambda d, t: progress.update(d, t)  # noqa: E731
    if traffic.redacted:
        found = redacted.detect_breaks(
            con, wl, traffic.signature, wl.base, step, output_cache=False
        )
    else:
        found = detect_breaks(
            con, wl, traffic.bundle, traffic.mode, wl.base, step, output_cache=False
        )
    return losses_of(wl, found)


def losses_of(wl: Workload, breaks: list[Break]) -> BreakLosses:
    """``breaks`` summed per cause and request of ``wl``."""
    index = {int(r): i for i, r in enumerate(wl.req_ids)}
    tokens: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for b in breaks:
        lost = tokens.setdefault(b.cause, np.zeros(wl.n, np.int64))
        lost[index[b.req_id]] += b.tokens_lost
        counts[b.cause] = counts.get(b.cause, 0) + 1
    return BreakLosses(tokens, counts)
