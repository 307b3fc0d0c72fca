"""The block tree as runs and passes, and its infinite-cache (ideal) hits (docs/architecture.md:
definitions). Analyze's statistics and simulate's ideal hit rate both start here.

With an infinite cache and requests in processing order, request r's hit count h is the number of
its leading blocks that occurred in an earlier request; its cached tokens are
``B * min(h, (n - 1) // B)`` (vLLM computes at least one prompt token). With output caching
(``kvtool.traffic.output_blocks``), a block also counts when it is among the output blocks of an
earlier request (written when that request finishes, so for every request after it in
processing order): ``output_hit_blocks``.

The work is proportional to distinct blocks and to *passes* — (run, request) pairs where a run
(``Runs``) is a maximal unary stretch of the block tree that no request ends inside. The set of
requests passing through a run is the same at every block of it, so every statistic can be
computed per pass and weighted by how many of the run's blocks count.

The *measurement window* (``Warmup``, ``measurement_window``): with a warm-up, the cache sees
every request but only the requests after the warm-up are counted. The warm-up is always a
prefix of processing order, so the window is one index, ``Window.start``: requests
``start..n-1`` count.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from kvtool.errors import OptionError, WorkloadError
from kvtool.tiers.spec import parse_duration
from kvtool.traffic.output_blocks import OutputPaths
from kvtool.traffic.tree import Runs, subtree_min, unary_runs
from kvtool.traffic.workload import Workload

WARMUP_FORMS = "a fraction of the requests in [0, 1) such as 0.5, or a duration such as 30m, 2h"


@dataclass(frozen=True)
class Warmup:
    """A warm-up that the cache sees but the figures do not count; exactly one of ``fraction``
    (of the requests, in processing order: 0.5 leaves out the first half) and ``seconds``
    (requests less than this after the first request's timestamp) is set. ``spec`` is the value
    as given. Valid once built: ``parse_warmup`` makes one from a string or a number."""

    spec: str
    fraction: float | None = None
    seconds: float | None = None


def parse_warmup(value: str | float) -> Warmup:
    """``'0.5'`` or ``0.5`` (a fraction of the requests, in [0, 1)), ``'30m'``, ``'2h'``,
    ``'90s'`` (a duration: a number with a unit s, m, h or d) -> ``Warmup``; ``OptionError``
    naming ``warmup`` otherwise. A bare number is always a fraction."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise OptionError("warmup", f"{value!r}: expected {WARMUP_FORMS}")
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d+(?:\.\d+)?\s*[smhd]", text):
            try:
                seconds = parse_duration(text)
            except OptionError:
                raise OptionError("warmup", f"{value!r}: expected {WARMUP_FORMS}") from None
            return Warmup(value, seconds=seconds)
        try:
            fraction = float(text)
        except ValueError:
            raise OptionError("warmup", f"{value!r}: expected {WARMUP_FORMS}") from None
    else:
        fraction = float(value)
    if not 0 <= fraction < 1:
        raise OptionError(
            "warmup",
            f"{value!r}: a fraction of the requests must be in [0, 1) (0.5: the first half is "
            "warm-up); a duration needs a unit: 30s, 30m, 2h",
        )
    return Warmup(str(value), fraction=fraction)


@dataclass(frozen=True)
class Window:
    """Which requests a command counts: ``start..requests-1`` in processing order (the first
    ``start`` are the warm-up, which the cache sees but no figure counts). ``first_counted_ts``
    is request ``start``'s timestamp (None: unknown); ``warmup`` None means no warm-up
    (``start`` 0)."""

    warmup: Warmup | None
    start: int
    requests: int
    first_counted_ts: float | None

    @property
    def counted(self) -> int:
        return self.requests - self.start

    def to_json(self) -> dict | None:
        """The ``warmup`` object of ``--json`` (None without a warm-up)."""
        if self.warmup is None:
            return None
        return {
            "spec": self.warmup.spec,
            "requests_warmup": self.start,
            "requests_counted": self.counted,
            "first_counted_ts": self.first_counted_ts,
        }


def measurement_window(wl: Workload, warmup: Warmup | None) -> Window:
    """The window of ``wl`` after ``warmup``: a fraction f leaves out the first ``floor(f * n)``
    requests; a duration d leaves out the requests whose timestamp is less than the first
    one's + d (requests without a timestamp come last and count). ``OptionError`` naming
    ``warmup`` when a duration meets a trace without timestamps, or when nothing is left to
    count."""
    n = wl.n
    if warmup is None:
        start = 0
    elif warmup.fraction is not None:
        start = math.floor(warmup.fraction * n)
    else:
        assert warmup.seconds is not None
        known = int((~np.isnan(wl.ts)).sum())
        if known == 0:
            raise OptionError(
                "warmup",
                f"{warmup.spec!r} is a duration, but the requests have no timestamps; give a "
                "fraction of the requests instead, such as 0.5",
            )
        # processing order is timestamp order, requests without one last: ts[:known] is sorted
        start = int(np.searchsorted(wl.ts[:known], wl.ts[0] + warmup.seconds, side="left"))
        if start >= n:
            span = float(wl.ts[known - 1] - wl.ts[0])
            raise OptionError(
                "warmup",
                f"{warmup.spec!r} leaves no request to count: the requests span {span:g} s",
            )
    ts = float(wl.ts[start]) if start < n and not np.isnan(wl.ts[start]) else None
    return Window(warmup, start, n, ts)


def run_starts(keys: np.ndarray) -> np.ndarray:
    """Boolean mask: element i starts a run of equal ``keys``."""
    if len(keys) == 0:
        return np.zeros(0, bool)
    return np.concatenate([[True], keys[1:] != keys[:-1]])


def runs(wl: Workload) -> Runs:
    """``wl``'s block tree with its unary stretches merged (``unary_runs``)."""
    return unary_runs(wl.parent, wl.depth, wl.end)


@dataclass
class Passes:
    """(run, request) pairs for every run on every request's path, sorted by run then request.
    ``prev[i]`` is the previous request through the same run (-1 for the first)."""

    run: np.ndarray
    req: np.ndarray
    prev: np.ndarray

    @property
    def seen(self) -> np.ndarray:
        return self.prev >= 0


def passes(wl: Workload, rs: Runs) -> Passes:
    """Walk every request's path up the run tree (one vectorized step per run level)."""
    req = np.nonzero(wl.end >= 0)[0]
    run = rs.of[wl.end[req]]
    out_run, out_req = [], []
    while len(req):
        out_run.append(run)
        out_req.append(req)
        up = rs.parent[run]
        keep = up >= 0
        run, req = up[keep], req[keep]
    run = np.concatenate(out_run) if out_run else np.zeros(0, np.int64)
    req = np.concatenate(out_req) if out_req else np.zeros(0, np.int64)
    order = np.argsort(run * wl.n + req, kind="stable")
    run, req = run[order], req[order]
    first = run_starts(run)
    prev = np.where(first, -1, np.roll(req, 1))
    return Passes(run, req, prev)


def base_hit_blocks(wl: Workload, rs: Runs, ps: Passes) -> np.ndarray:
    """Per request: leading base blocks that occurred in an earlier request (seen runs form a
    prefix of the path, and a seen run was seen whole)."""
    length = (rs.hi - rs.lo + 1)[ps.run]
    return np.bincount(ps.req[ps.seen], weights=length[ps.seen], minlength=wl.n).astype(np.int64)


def min_up(wl: Workload, values: np.ndarray, order: np.ndarray | None = None) -> None:
    """Each node's ``values`` entry (int64, one per node of ``wl``'s tree) lowered to the least
    over its subtree, in place (``subtree_min``). ``order``: ``depth_order(wl.depth)`` where
    the caller has it."""
    subtree_min(wl.parent, wl.depth, values, order)


def first_through_hits(
    wl: Workload, order: np.ndarray | None = None, outputs: OutputPaths | None = None
) -> np.ndarray:
    """``base_hit_blocks`` (with ``outputs``: ``output_hit_blocks``'s ``base_hits``) without
    runs and passes, in O(nodes + requests). A node is available to request j when an earlier
    request went through it or wrote it as output: from the first request ending below it or
    at it, or writing it or a node below it (output blocks are ancestor-closed), which is one
    pass up the tree (C ``kv_first_through``, or a numpy level loop). Availability only grows
    along a path, so j misses exactly its path's nodes that it makes available itself: those
    whose first is j, less j's own output nodes (deeper than its prompt): ``min_up``. ``order``:
    ``depth_order(wl.depth)`` where the caller has it. What ``simulate --sample`` uses for the
    exact ideal without the whole trace's block streams (``seen_blocks``, on runs, for a stored
    hash tree)."""
    n, n_nodes = wl.n, len(wl.parent)
    has = np.flatnonzero(wl.end >= 0)
    if not n_nodes or not len(has):
        return np.zeros(n, np.int64)
    first = np.full(n_nodes, n, np.int64)
    first[wl.end[has][::-1]] = has[::-1]  # repeated nodes: the last write (earliest) wins
    owner = np.zeros(0, np.int64)
    if outputs is not None and len(outputs.nodes):
        owner = np.repeat(np.arange(n, dtype=np.int64), np.diff(outputs.offsets))
        np.minimum.at(first, outputs.nodes, owner)
    min_up(wl, first, order)
    length = np.zeros(n, np.int64)
    length[has] = wl.depth[wl.end[has]] + 1
    misses = np.bincount(first[first < n], minlength=n)
    if len(owner):  # j's own output nodes that j made available are not on its path
        assert outputs is not None
        written = first[outputs.nodes] == owner
        misses -= np.bincount(owner[written], minlength=n)
    return length - misses


@dataclass(frozen=True)
class OutputHits:
    """Infinite-cache hits with output blocks: ``base_hits[i]`` leading base blocks of request i
    that were in an earlier request's prompt or output; per pass, ``source`` is the latest
    earlier request that used or wrote the pass's run (its prompt went through it, or the run's
    first block is among its output blocks), -1 where none did (``Passes.prev`` otherwise)."""

    base_hits: np.ndarray
    source: np.ndarray


def output_hit_blocks(wl: Workload, rs: Runs, ps: Passes, outputs: OutputPaths) -> OutputHits:
    """The ideal's leading hits when output blocks are cached too. A node is available to
    request j from ``avail = min(first request through it, first request whose output holds
    it)`` on, for ``j > avail``; availability never decreases along a path (output blocks are
    ancestor-closed, ``output_blocks``), so j's hits are its path's nodes with ``avail < j``:
    per pass, a search in its run's nodes sorted by depth. Equals ``base_hit_blocks`` without
    output blocks."""
    n = wl.n
    n_nodes = len(wl.parent)
    first_prompt = np.full(len(rs.lo), n, np.int64)
    starts = ~ps.seen
    first_prompt[ps.run[starts]] = ps.req[starts]
    avail = first_prompt[rs.of] if n_nodes else np.zeros(0, np.int64)
    owner = np.repeat(np.arange(n, dtype=np.int64), np.diff(outputs.offsets))
    np.minimum.at(avail, outputs.nodes, owner)
    # nodes by (run, depth): within a run avail is non-decreasing, so keys are sorted
    order = np.lexsort((wl.depth, rs.of))
    keys = rs.of[order] * (n + 1) + avail[order]
    run_first = np.searchsorted(keys, np.arange(len(rs.lo), dtype=np.int64) * (n + 1))
    count = np.searchsorted(keys, ps.run * (n + 1) + ps.req) - run_first[ps.run]
    base = np.bincount(ps.req, weights=count, minlength=n).astype(np.int64)
    # the latest writer of each run's first block before each pass
    at_head = wl.depth[outputs.nodes] == rs.lo[rs.of[outputs.nodes]]
    heads, head_owner = outputs.nodes[at_head], owner[at_head]
    source = ps.prev.copy()
    if len(heads):
        pairs = np.sort(rs.of[heads] * (n + 1) + head_owner)
        at = np.searchsorted(pairs, ps.run * (n + 1) + ps.req) - 1
        ok = at >= 0
        ok[ok] = pairs[at[ok]] // (n + 1) == ps.run[ok]
        writer = np.where(ok, pairs[np.maximum(at, 0)] % (n + 1), -1)
        source = np.maximum(source, writer)
    return OutputHits(base, source)


def boundaries(lo: np.ndarray, top: np.ndarray, k: int) -> np.ndarray:
    """How many depths d in [lo, top] end a k-block (d % k == k - 1); 0 when top < lo."""
    return np.where(top >= lo, (top + 1) // k - lo // k, 0)


@dataclass
class Hits:
    """At block size ``B``: cached tokens per request and cached B-blocks per pass."""

    B: int
    k: int
    cached_tokens: np.ndarray
    cached_blocks: np.ndarray  # per pass


def ideal_hits(wl: Workload, rs: Runs, ps: Passes, base_hits: np.ndarray, B: int) -> Hits:
    """Infinite-cache hits at ``B``: h_B = h_base // k, capped at (n - 1) // B. ``B`` must be a
    multiple of the workload's base block size (``WorkloadError`` otherwise)."""
    if B % wl.base:
        raise WorkloadError(f"block_size {B} is not a multiple of the trace's block size {wl.base}")
    k = B // wl.base
    used = hit_blocks(wl, base_hits, B)
    top = np.minimum(rs.hi[ps.run], used[ps.req] * k - 1)
    return Hits(B, k, used * B, boundaries(rs.lo[ps.run], top, k))


def hit_blocks(wl: Workload, base_hits: np.ndarray, B: int) -> np.ndarray:
    """Per request, its cached ``B``-blocks from its leading base blocks seen earlier:
    ``base_hits // k``, capped at ``(n - 1) // B`` (vLLM computes at least one prompt token).
    ``B`` is a multiple of the base block size (``ideal_hits`` checks it)."""
    return np.minimum(base_hits // (B // wl.base), np.maximum(wl.n_tokens - 1, 0) // B)
