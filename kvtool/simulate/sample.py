"""Prefix-aware spatial sampling (SHARDS for prefix trees): simulate a sample, scaled.

SHARDS samples a cache's reference stream by a hash of each object, keeps rate R of them and
simulates a cache R times smaller: an object's reuse distance shrinks by R, so the sampled cache
hits where the full one does, in expectation. Blocks of a prefix cache cannot be sampled one by
one: a request hits the leading blocks of its prompt, so dropping one block breaks every chain
through it. The unit here is a **prefix family**: the requests whose prompts share a block that
few requests reach. Per request, its family is the shallowest node of its path in the block
tree that at most ``family_cap`` requests pass through; nodes that more requests pass through
(the trunk: system prompts, tool catalogs) are kept with every sampled request, as the shared
prefix they are. A request whose whole prompt is trunk is its own unit. A unit's key is the
first request through its family's first node (no numbering of the tree changes it). A unit is
kept when a 64-bit mix of its key and the salt falls below R; a salt gives an independent
sample, and which tenth of that range the mix falls in is the unit's random group. For
LRU one request at a time, a sampled distance counts the block's own family exactly and the
other families by the sample's average footprint over windows of the same length
(``corrected_curve``), not by the few of them around that one reuse.

``family_cap`` is a twentieth of the expected sample (``R * requests / 20``, at least 1), so
that no family is more than a twentieth of any sample. A point's hits are estimated against
the ideal of prompt blocks (``pooled``): the samples' cached tokens over their own such ideal,
pooled over the salts, times the whole trace's, which the caller computes exactly from the
tree (``SampleSet.base_hits``). The error bar is the random groups' standard error (each group
estimated alone, as a sample at R/10: ``GroupTotals``, ``SampledCurves``), or the salts' where
several salts spread more. Exact where R = 1: every request is kept. A stored hash tree is
sampled from its runs (``run_set``), anything else from its nodes (``whole_set``): the same
sample.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from kvtool.native import library
from kvtool.simulate.engine import EngineResult
from kvtool.simulate.sweep import NEVER, LRUCurve, stack_distances
from kvtool.store.trees import RunRows, TreeIndex
from kvtool.traffic.ideal import first_through_hits, min_up
from kvtool.traffic.tree import depth_levels, depth_order, mix64, pass_order
from kvtool.traffic.workload import Workload

_SALT = 0x9E3779B97F4A7C15  # salt k hashes with (k + 1) times this, modulo 2**64


def point_rate(rate: float, capacity: int, largest: int, salts: int = 1) -> float:
    """The rate a point of ``capacity`` blocks is sampled at: ``rate``, doubled until the
    sampled cache (``capacity`` times it) holds the ``largest`` request, since a sampled cache
    smaller than one request no longer stands for the whole one (a family's blocks come whole
    into the sample, and a few families decide its hits); 1, the whole trace, once ``salts``
    samples at that rate would hold half of it, about the cost of the whole with what each
    sample costs beside its engine run (bench/sample_accuracy.py)."""
    while rate < 1 and rate * capacity < largest:
        rate *= 2
    return 1.0 if rate * salts >= 0.5 else rate


def family_cap(rate: float, n_requests: int) -> int:
    """The most requests a family's first node may have: a twentieth of the sample."""
    return max(1, int(rate * n_requests / 20))


@dataclass(frozen=True)
class Families:
    """The sampling units: ``keys[i]`` is request i's (the first request through its family's
    first node, or ``-1 - i`` alone), ``trunk[v]`` whether more requests pass through node v
    than a family may have (kept with every request that does)."""

    keys: np.ndarray
    trunk: np.ndarray


def families(wl: Workload, cap: int, order: np.ndarray | None = None) -> Families:
    """Per request, its sampling unit from the block tree: the shallowest node of its path that
    at most ``cap`` requests pass through (its prefix family), named by the first request
    through it, which no numbering of the tree changes; or the request alone when its last node
    has more (its whole path is trunk). ``order``: ``depth_order(wl.depth)`` where the caller
    has it. In C (``kv_families``: a pass up, a pass down), or level by level in numpy."""
    n, n_nodes = wl.n, len(wl.parent)
    counts = np.zeros(n_nodes, np.int64)
    first = np.full(n_nodes, n, np.int64)
    fam = np.full(n_nodes, -1, np.int64)
    keys = np.empty(n, np.int64)
    end = np.ascontiguousarray(wl.end, np.int64)
    lib = library()
    if lib is not None:
        parent = np.ascontiguousarray(wl.parent, np.int64)
        order = pass_order(parent, wl.depth) if order is None else order
        order = np.ascontiguousarray(order, np.int64)
        lib.kv_families(n_nodes, parent, order, cap, n, end, counts, first, fam, keys)
        return Families(keys, counts > cap)
    order = depth_order(wl.depth) if order is None else order
    has = np.flatnonzero(end >= 0)
    counts += np.bincount(end[has], minlength=n_nodes)
    first[end[has][::-1]] = has[::-1]  # repeated nodes: the last write (earliest) wins
    levels = depth_levels(wl.depth, order)
    for level in reversed(levels):  # deepest first: counts and firsts flow up
        up = level[wl.parent[level] >= 0]
        np.add.at(counts, wl.parent[up], counts[up])
        np.minimum.at(first, wl.parent[up], first[up])
    for level in levels:  # shallowest first: families flow down
        p = wl.parent[level]
        top = (p < 0) | (counts[np.maximum(p, 0)] > cap)
        fam[level] = np.where(
            counts[level] > cap, -1, np.where(top, first[level], fam[np.maximum(p, 0)])
        )
    mine = np.where(end >= 0, fam[np.maximum(end, 0)], -1) if n_nodes else np.full(n, -1)
    keys[:] = np.where(mine >= 0, mine, -1 - np.arange(n, dtype=np.int64))
    return Families(keys, counts > cap)


@dataclass(frozen=True)
class SampleSet:
    """The requests that any sample keeps, on the nodes their paths use: ``wl`` (processing
    order kept; every parent's id below its children's), ``rows`` their indices in the whole
    trace, and per rate each request's unit
    (``keys``) and each node's ``trunk`` flag, as ``families`` gives them on the whole tree.
    ``base_hits``: per request of the whole trace, its leading base blocks that an earlier
    request went through (``first_through_hits``), for the exact ideal."""

    wl: Workload
    rows: np.ndarray
    keys: dict[float, np.ndarray]
    trunk: dict[float, np.ndarray]
    base_hits: np.ndarray


def whole_set(wl: Workload, rates: list[float], salts: range) -> SampleSet:
    """The ``SampleSet`` of the requests that ``salts`` keep at any of ``rates``, from the
    whole workload at hand (a text log): units and trunk from the whole tree, then the kept
    requests on their own paths' nodes (``pruned``: a request's output blocks lie on its
    successor's path, and a successor outside the sample adds none to it). ``base_hits``
    for the whole trace (``first_through_hits``)."""
    order = depth_order(wl.depth)
    units = {rate: families(wl, family_cap(rate, wl.n), order) for rate in rates}
    kept = np.zeros(wl.n, bool)
    for rate, u in units.items():
        for salt in salts:
            kept |= keep(u.keys, rate, salt)
    chosen = np.flatnonzero(kept)
    cut = pruned(wl.select(chosen))
    return SampleSet(
        cut.wl,
        chosen,
        {r: u.keys[chosen] for r, u in units.items()},
        {r: u.trunk[cut.nodes] for r, u in units.items()},
        first_through_hits(wl, order),
    )


def run_set(
    head: Workload, runs: RunRows, index: TreeIndex, rates: list[float], salts: range
) -> SampleSet:
    """The ``SampleSet`` of the requests that ``salts`` keep at any of ``rates``, from a stored
    tree's runs (``RunRows``, global ids) and ``index`` (each request's last run, and its
    ``seen`` blocks, which are ``base_hits``) instead of its nodes: the requests through a run
    are the same at each of its nodes, so the runs, taken as the nodes of a tree, give the
    same units (and keys) and trunk as the nodes. Only the kept requests' runs are unrolled
    into nodes (``unrolled``). Mooncake conversation x20 has 17 times fewer runs than nodes
    (205 K, 3.4 M); a hash trace has no output blocks, so the kept requests' paths are all
    they use."""
    forest = replace(head, end=index.end_run, parent=runs.parent, depth=runs.lo)  # runs as nodes
    units = {rate: families(forest, family_cap(rate, head.n)) for rate in rates}
    keys: dict[float, np.ndarray] = {}
    kept = np.zeros(head.n, bool)
    for rate, u in units.items():
        keys[rate] = u.keys
        for salt in salts:
            kept |= keep(keys[rate], rate, salt)
    chosen = np.flatnonzero(kept)
    cut = pruned(forest.select(chosen))  # the kept requests on their own runs
    nodes = unrolled(cut.wl, runs.length[cut.nodes])
    return SampleSet(
        nodes.wl,
        chosen,
        {rate: k[chosen] for rate, k in keys.items()},
        {rate: u.trunk[cut.nodes][nodes.run] for rate, u in units.items()},
        index.seen,
    )


@dataclass(frozen=True)
class Unrolled:
    """A workload whose nodes were runs, on nodes again: ``wl``, and ``run[v]``, the run node
    v belongs to."""

    wl: Workload
    run: np.ndarray


def unrolled(wl: Workload, length: np.ndarray) -> Unrolled:
    """``wl``, whose node c is a run of ``length[c]`` nodes from depth ``wl.depth[c]`` on
    (``RunRows``), on one node per block, numbered run after run: a run's nodes hang one below
    the other, its first below its parent run's last, and a request ends at its run's last
    node. A run's parent has a lower id, so every parent keeps a lower id than its children
    (``kvtool.traffic.tree.pass_order``)."""
    start = np.zeros(len(length) + 1, np.int64)
    np.cumsum(length, out=start[1:])
    run = np.repeat(np.arange(len(length), dtype=np.int64), length)
    at = np.arange(int(start[-1]), dtype=np.int64)
    within = at - start[run]
    last = start[1:] - 1  # each run's last node
    parent = np.where(within > 0, at - 1, _moved(wl.parent[run], last))
    depth = wl.depth[run] + within
    return Unrolled(replace(wl, end=_moved(wl.end, last), parent=parent, depth=depth), run)


@dataclass(frozen=True)
class Pruned:
    """A workload on the nodes of its own requests' paths alone: ``wl``, its nodes renumbered
    0.. in their old order (a tree numbered by depth stays so), and ``nodes[v]``, node v's id
    in the tree it came from."""

    wl: Workload
    nodes: np.ndarray


def pruned(wl: Workload) -> Pruned:
    """``wl`` on the nodes its requests' paths go through (``Pruned``): a sample picked from
    the whole tree costs its own nodes, not the tree's, in every pass over nodes that follows
    (its output blocks lie on its own paths). One pass up the tree marks them
    (``min_up``)."""
    n_nodes = len(wl.parent)
    mark = np.ones(n_nodes, np.int64)  # 0: on a path
    mark[wl.end[wl.end >= 0]] = 0
    min_up(wl, mark)
    nodes = np.flatnonzero(mark == 0)
    new = np.full(n_nodes, -1, np.int64)
    new[nodes] = np.arange(len(nodes), dtype=np.int64)
    up = wl.parent[nodes]
    end = wl.end
    return Pruned(
        replace(
            wl,
            end=_moved(end, new),
            parent=_moved(up, new),
            depth=wl.depth[nodes],
        ),
        nodes,
    )


GROUPS = 10
"""Random groups per sample behind the error bar: a sample's units split ten ways by the same
hash that keeps them (``draw``), so each group is a sample at a tenth of the rate, with nine
degrees of freedom for the spread."""


def draw(keys: np.ndarray, rate: float, salt: int, count: int = GROUPS) -> np.ndarray:
    """Per request, its random group in 0..count-1 where salt ``salt`` keeps its unit
    (``keys``) at ``rate``, else -1. A unit is kept when a 64-bit mix of its key and the salt
    falls below ``rate`` of the range; its group is which of ``count`` equal parts of that
    interval it falls in, so a unit is in one group whole and each group is a sample at
    ``rate / count``. In C (``kv_draw``) or numpy."""
    keys = np.ascontiguousarray(keys, np.int64)
    salted = (salt + 1) * _SALT % 2**64
    limit = 2**64 if rate >= 1 else min(int(rate * 2.0**64), 2**64)
    out = np.full(len(keys), -1, np.int64)
    if limit == 0 or not len(keys):
        return out
    width = max(1, limit // count)
    lib = library()
    if lib is not None:
        lib.kv_draw(len(keys), keys, salted, limit - 1, width, count, out)
        return out
    hashed = mix64(keys.view(np.uint64), salted)
    kept = hashed <= np.uint64(limit - 1)
    out[kept] = np.minimum(hashed[kept] // np.uint64(width), count - 1).astype(np.int64)
    return out


def _moved(ids: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Node ids renumbered by ``new`` (-1 stays -1; ``new`` may be empty)."""
    out = np.full(len(ids), -1, np.int64)
    has = ids >= 0
    out[has] = new[ids[has]]
    return out


def keep(keys: np.ndarray, rate: float, salt: int) -> np.ndarray:
    """Which requests salt ``salt`` keeps at ``rate``: those whose unit ``draw`` keeps."""
    return draw(keys, rate, salt) >= 0


def gather(
    offsets: np.ndarray, stream: np.ndarray, idx: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The block streams of requests ``idx``, in that order: (offsets, stream)."""
    counts = offsets[idx + 1] - offsets[idx]
    new = np.zeros(len(idx) + 1, np.int64)
    np.cumsum(counts, out=new[1:])
    starts = np.repeat(offsets[idx] - new[:-1], counts)
    return new, stream[starts + np.arange(int(new[-1]), dtype=np.int64)]


@dataclass(frozen=True)
class Reuse:
    """How a stream's blocks come back: ``previous[j]``, reference j's block's previous
    reference (-1 for none); ``gaps``, for each block, the requests of the trace strictly
    between two consecutive requests that use it, before its first and after its last (the
    windows that miss it); ``distinct``, the blocks."""

    previous: np.ndarray
    gaps: np.ndarray
    distinct: int


def reuse(offsets: np.ndarray, stream: np.ndarray, times: np.ndarray, n: int) -> Reuse:
    """``Reuse`` of a stream of requests (request i's blocks ``stream[offsets[i]:offsets[i +
    1]]``, dense ids, made at ``times[i]``, never decreasing, of a trace of ``n`` requests):
    one pass in C (``kv_reuse``), or numpy sorts by block."""
    offsets = np.ascontiguousarray(offsets, np.int64)
    stream = np.ascontiguousarray(stream, np.int64)
    times = np.ascontiguousarray(times, np.int64)
    n_ids = int(stream.max()) + 1 if len(stream) else 0
    previous = np.empty(len(stream), np.int64)
    lib = library()
    if lib is not None:
        gaps = np.empty(len(stream) + n_ids, np.int64)
        last, last_t = np.full(n_ids, -1, np.int64), np.full(n_ids, -1, np.int64)
        args = (len(times), offsets, stream, times, n, n_ids, last, last_t, previous, gaps)
        count = lib.kv_reuse(*args)
        return Reuse(previous, gaps[:count], int((last >= 0).sum()))
    made = np.repeat(times, np.diff(offsets))
    order = np.argsort(stream, kind="stable")  # by block, then time: times never decrease
    previous[:] = -1
    same = stream[order[1:]] == stream[order[:-1]]
    previous[order[1:][same]] = order[:-1][same]
    b, t = stream[order], made[order]
    fresh = np.ones(len(b), bool)  # one reference per (block, request)
    fresh[1:] = (b[1:] != b[:-1]) | (t[1:] != t[:-1])
    b, t = b[fresh], t[fresh]
    first = np.ones(len(b), bool)
    first[1:] = b[1:] != b[:-1]
    last = np.ones(len(b), bool)
    last[:-1] = first[1:]
    later = np.flatnonzero(~first)
    gaps = np.concatenate([t[first], n - 1 - t[last], t[later] - t[later - 1] - 1])
    return Reuse(previous, gaps, int(first.sum()))


def footprint(gaps: np.ndarray, distinct: int, n: int, windows: np.ndarray) -> np.ndarray:
    """The average footprint of a reference stream over a trace of ``n`` requests, at each of
    ``windows`` (0..n): how many distinct blocks a window of w consecutive requests holds,
    averaged over the window's ``n - w + 1`` positions (Xiang et al.'s footprint), from the
    stream's ``distinct`` blocks and ``gaps`` (``Reuse``). A window misses a block exactly when
    it lies within one of the block's gaps, and a gap of g requests holds ``g - w + 1`` windows
    of w: so the footprint is the number of distinct blocks less those windows over all gaps,
    per position. From the gaps sorted, or their histogram where there are many, and suffix
    sums: O(gaps log gaps + windows), or O(gaps + n + windows)."""
    w = np.asarray(windows, np.int64)
    if 16 * len(gaps) < n:  # few gaps: sorted, and their suffix sums
        ordered = np.sort(gaps)
        at = np.searchsorted(ordered, w, side="left")  # ordered[at:] are of w or more
        longer = np.zeros(len(ordered) + 1, np.float64)
        longer[:-1] = np.cumsum(ordered[::-1])[::-1]
        count, length = len(ordered) - at, longer[at]
    else:  # many: their histogram over 0..n
        below = np.zeros(n + 2, np.float64)  # gaps shorter than w, and their total length
        np.cumsum(np.bincount(gaps, minlength=n + 1), out=below[1:])
        shorter = np.zeros(n + 2, np.float64)
        np.cumsum(np.bincount(gaps, gaps, minlength=n + 1), out=shorter[1:])
        count, length = len(gaps) - below[w], shorter[-1] - shorter[w]  # gaps of w or more
    missed = length - (w - 1) * count  # windows of w within a gap, over all gaps
    return distinct - missed / np.maximum(n - w + 1, 1)


@dataclass(frozen=True)
class SampledCurves:
    """A sample's LRU curve (``curve``), and ``grouped``, the same with each random group's
    references scaled by the group's own footprint (None without groups): what each group
    alone, a sample at a tenth of the rate, would have estimated."""

    curve: LRUCurve
    grouped: LRUCurve | None


def corrected_curve(
    offsets: np.ndarray,
    stream: np.ndarray,
    n_tokens: np.ndarray,
    B: int,
    keys: np.ndarray,
    trunk: np.ndarray,
    rate: float,
    times: np.ndarray,
    n: int,
    group: np.ndarray | None = None,
) -> SampledCurves:
    """The stack model of one sample (requests with family ``keys``, made at ``times`` of a
    trace of ``n`` requests), its distances in blocks of a cache ``rate`` times smaller.
    Between two uses of a block the whole trace's cache sees the blocks of the block's own
    family and those of others. The own family is in the sample whole: its part is its
    distance ``d_own`` within the family alone (the same references, sorted by family), times
    ``rate``. The others are in the sample at ``rate``, but around one reuse there are only a
    few of them, so counting them there is noisy, and at a knee the noise smooths the curve
    (a few families decide whether a session's next turn finds its blocks). Their part is
    taken from the sample's average footprint instead (``footprint``, over every window of the
    same number of requests of the whole trace, less the own family's blocks that it counts
    whole), which averages over the whole sample. So a reuse after ``L`` requests is at
    ``max(fp[L - 1] - (1 - rate) * d_own, rate * d_own)``. Trunk blocks, kept with every
    family, keep the sample's own distance. With ``group`` (each request's random group,
    ``draw``), also the grouped curve: a group's references with the footprint of the group's
    own requests, times the number of groups, since the common footprint is what a knee turns
    on and what groups sharing it cannot show."""
    distances, out_offsets = stack_distances(offsets, stream, n_tokens, B)
    counted = np.diff(out_offsets)
    order = np.lexsort((np.arange(len(keys)), keys))  # by family, processing order within
    own_offsets, own_stream = gather(offsets, stream, order)
    own_sorted, own_out = stack_distances(own_offsets, own_stream, n_tokens[order], B)
    own = np.empty_like(own_sorted)
    back = np.repeat(out_offsets[order] - own_out[:-1], counted[order])
    own[back + np.arange(len(own_sorted), dtype=np.int64)] = own_sorted
    within = np.arange(len(distances), dtype=np.int64) - np.repeat(out_offsets[:-1], counted)
    at = np.repeat(offsets[:-1], counted) + within  # each counted reference in the stream
    blocks = stream[at]
    never = distances == NEVER
    own[never | (own == NEVER) | trunk[blocks]] = 0
    # the request of each reference, and of the block's previous reference (any, outputs too)
    made = np.repeat(np.asarray(times, np.int64), np.diff(offsets))
    uses = reuse(offsets, stream, times, n)
    before = uses.previous[at]
    span = np.where(before >= 0, made[at] - made[np.maximum(before, 0)], 0)
    windows = np.clip(span - 1, 0, n)
    others = footprint(uses.gaps, uses.distinct, n, windows)
    curve = _curve(others, own, distances, trunk[blocks], never, counted, rate, out_offsets, B)
    if group is None:
        return SampledCurves(curve, None)
    of_ref = np.repeat(group, counted)  # each counted reference's group
    grouped = np.empty(len(others), np.float64)
    count = int(group.max()) + 1 if len(group) else 0
    for g in range(count):
        mine = np.flatnonzero(group == g)
        if not len(mine):
            continue
        sub_offsets, sub_stream = gather(offsets, stream, mine)
        alone = reuse(sub_offsets, sub_stream, np.asarray(times)[mine], n)
        refs = of_ref == g
        grouped[refs] = GROUPS * footprint(alone.gaps, alone.distinct, n, windows[refs])
    grouped_curve = _curve(
        grouped, own, distances, trunk[blocks], never, counted, rate, out_offsets, B
    )
    return SampledCurves(curve, grouped_curve)


def _curve(
    others: np.ndarray,
    own: np.ndarray,
    distances: np.ndarray,
    trunk: np.ndarray,
    never: np.ndarray,
    counted: np.ndarray,
    rate: float,
    out_offsets: np.ndarray,
    B: int,
) -> LRUCurve:
    """``corrected_curve``'s distances from the others' footprint: each counted reference at
    ``max(others - (1 - rate) * own, rate * own)`` (a trunk block at its sample distance),
    lifted to the prefix maxima of its request."""
    scaled = np.maximum(others - (1 - rate) * own, rate * own)
    scaled = np.where(trunk, distances, scaled)
    scaled[never] = 0.0
    # the prefix maxima per request: each request's values lifted above every earlier one's
    top = float(scaled.max()) + 1 if len(scaled) else 1.0
    lift = np.repeat(np.arange(len(counted), dtype=np.float64) * top, counted)
    maxima = np.maximum.accumulate(scaled + lift) - lift
    maxima[never] = np.inf  # a block never seen misses, and so does every block after it
    return LRUCurve(maxima, out_offsets, B, 1)


@dataclass(frozen=True)
class GroupTotals:
    """One sample's counted requests by random group (``draw``): per group, the tokens the
    run cached, the tokens the sample's own ideal of prompt blocks caches, the requests and
    the requests with a hit."""

    cached: np.ndarray
    ideal: np.ndarray
    requests: np.ndarray
    hits: np.ndarray

    @classmethod
    def of(
        cls, group: np.ndarray, cached: np.ndarray, ideal: np.ndarray, first: int = 0
    ) -> GroupTotals:
        """From each request's ``group``, ``cached`` tokens and ``ideal`` tokens, counting the
        requests from ``first`` on (a warm-up's are not counted)."""
        g = group[first:]
        totals = [
            np.bincount(g, weights, minlength=GROUPS)
            for weights in (cached[first:], ideal[first:], None, cached[first:] > 0)
        ]
        return cls(*(t.astype(np.int64) for t in totals))


@dataclass(frozen=True)
class SampleEstimate:
    """How a point was estimated from samples: ``rate`` R, ``salts`` samples, the requests each
    kept, each salt's token hit rate, and the standard errors of the pooled estimate, from the
    spread of its ``groups`` random groups of units (None where fewer than two could be
    estimated; 0 at rate 1, where the whole trace was simulated)."""

    rate: float
    salts: int
    groups: int
    requests_by_salt: tuple[int, ...]
    token_hit_rate_by_salt: tuple[float | None, ...]
    token_hit_rate_error: float | None
    request_hit_rate_error: float | None


def _error(values: list[float]) -> float | None:
    return float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else None


def _larger(by_group: list[float], by_salt: list[float]) -> float | None:
    """The groups' standard error, or the salts' where several salts spread more: groups
    share their sample's cache, so they miss what the sample as a whole varies by (at a knee
    of the curve, whether a few families' next turns find their blocks)."""
    errors = [e for e in (_error(by_group), _error(by_salt)) if e is not None]
    return max(errors) if errors else None


def pooled(
    runs: list[EngineResult],
    totals: list[GroupTotals],
    rate: float,
    requests: int,
    prompt_tokens: int,
    ideal_tokens: int,
) -> tuple[EngineResult, SampleEstimate]:
    """One point's estimate from its runs on ``len(runs)`` samples (``totals``: each one's
    counted requests by random group), scaled to the whole trace (``requests`` counted
    requests, ``prompt_tokens`` their tokens, ``ideal_tokens`` what the infinite cache hits of
    their prompt blocks, exactly). Hit figures by the ratio estimator with that ideal as the
    auxiliary variable: the samples' cached tokens over their own ideal, pooled, times the
    whole trace's. The ideal varies from sample to sample far more than that ratio does (long
    conversations hit more), so this removes most of the spread, and a cache that holds a
    whole sample of a hash trace gets its ideal exactly. Other token figures by the ratio of
    prompt tokens, request figures by the ratio of requests; TTFT percentiles from every
    sampled request. The error bars are the random groups' (each group of each sample
    estimated alone, the same way): their standard deviation over the square root of their
    number, since the pooled estimate averages that many groups' worth of units; with several
    salts, the salts' own standard error where it is larger (``_larger``)."""
    pool_tokens = sum(r.prompt_tokens for r in runs)
    pool_requests = sum(r.requests for r in runs)
    run_ideals = [int(t.ideal.sum()) for t in totals]
    pool_ideal = sum(run_ideals)
    f_tokens = prompt_tokens / pool_tokens if pool_tokens else 0.0
    f_requests = requests / pool_requests if pool_requests else 0.0
    f_hits = ideal_tokens / pool_ideal if pool_ideal else f_tokens  # no sample could hit: 0
    tiers = runs[0].tiers
    evictions = -1 if any(r.evictions < 0 for r in runs) else sum(r.evictions for r in runs)
    result = EngineResult(
        tiers,
        requests=requests,
        prompt_tokens=prompt_tokens,
        cached_tokens=round(sum(r.cached_tokens for r in runs) * f_hits),
        hit_tokens=[round(sum(r.hit_tokens[t] for r in runs) * f_hits) for t in range(len(tiers))],
        requests_with_hit=round(sum(r.requests_with_hit for r in runs) * f_requests),
        evictions=evictions if evictions < 0 else round(evictions * f_tokens),
        uncached_blocks=round(sum(r.uncached_blocks for r in runs) * f_tokens),
        ttft=np.concatenate([r.counted_ttft for r in runs]) if runs else np.zeros(0),
    )
    ideal_rate = ideal_tokens / prompt_tokens if prompt_tokens else 0.0
    token_rates = [
        r.cached_tokens / i * ideal_rate if i else None
        for r, i in zip(runs, run_ideals, strict=True)
    ]
    cached = np.concatenate([t.cached for t in totals])
    ideal = np.concatenate([t.ideal for t in totals])
    counts = np.concatenate([t.requests for t in totals])
    hits = np.concatenate([t.hits for t in totals])
    by_tokens = (cached[ideal > 0] / ideal[ideal > 0] * ideal_rate).tolist()
    by_requests = (hits[counts > 0] / counts[counts > 0]).tolist()
    request_rates = [r.requests_with_hit / r.requests for r in runs if r.requests]
    estimate = SampleEstimate(
        rate=rate,
        salts=len(runs),
        groups=GROUPS,
        requests_by_salt=tuple(r.requests for r in runs),
        token_hit_rate_by_salt=tuple(token_rates),
        token_hit_rate_error=(
            0.0 if rate >= 1 else _larger(by_tokens, [x for x in token_rates if x is not None])
        ),
        request_hit_rate_error=0.0 if rate >= 1 else _larger(by_requests, request_rates),
    )
    return result, estimate
