"""The workload figures, computed one partition of the block tree at a time and merged.

Partitions share no node (``kvtool.traffic.workload.TreePart``), so every pass, hit, session
continuation and shared prefix lies within one: per-request figures are scattered into
whole-workload arrays, sums are added, and the ranked lists (top prefixes, the prefix-tree
chart) are merged by the same order a single pass uses (tokens saved, then run id: runs are
numbered partition after partition). The result equals the one-partition computation exactly;
memory is the per-request arrays and one partition's tree, runs and passes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np

from kvtool.analyze.distributions import prefix_tree, prompt_lengths, reuse_histogram, timeline
from kvtool.analyze.prefix import (
    Prefix,
    ReuseGaps,
    assign_sessions,
    infer_parents,
    reuse_gap_tokens,
    top_prefixes,
    within_session,
    working_set_blocks,
)
from kvtool.analyze.result import OutputCaching, RequestFigures, WorkloadSummary
from kvtool.errors import WorkloadError
from kvtool.traffic import (
    REUSE_WINDOWS,
    Passes,
    TreePart,
    Window,
    Workload,
    base_hit_blocks,
    caches_outputs,
    ideal_hits,
    output_blocks,
    output_hit_blocks,
    passes,
    runs,
)

BLOCK_SIZES = (16, 64, 256, 512)


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den else None


@dataclass
class _Totals:
    """What the partitions add up to, besides the per-request arrays."""

    out_block_tokens: int = 0
    distinct_blocks: int = 0
    reuse_known_tokens: int = 0
    reuse_any_known: bool = False
    runs: int = 0


class _Merge:
    """The whole-workload arrays and sums that ``summarize`` fills partition by partition."""

    def __init__(self, wl: Workload, sizes: tuple[int, ...], charts: bool) -> None:
        n = wl.n
        self.by_size = {B: np.zeros(n, np.int64) for B in sizes}
        self.other = np.zeros(n, np.int64)
        self.within = np.zeros(n, np.int64)
        self.codes = np.zeros(n, np.int64)
        self.reuse = dict.fromkeys(REUSE_WINDOWS, 0)
        self.totals = _Totals()
        self.logged: dict[str, int] = {}
        self.inferred = 0
        self.prefixes: list[tuple[int, int, int, Prefix]] = []  # (-saved, part, rank, prefix)
        self.tree: list[dict] = []
        self.gaps: list[ReuseGaps] | None = [] if charts else None


def summarize(
    wl: Workload,
    block_size: int,
    kv_bytes_per_token: int | None = None,
    charts: bool = False,
    top: int = 10,
    window: Window | None = None,
    output_cache: bool = True,
    parts: Iterable[TreePart] | None = None,
) -> WorkloadSummary:
    """The workload's figures at ``block_size`` (no I/O): ``WorkloadSummary`` with the ``top``
    most valuable prefixes and, with ``charts``, the report's distributions. With a ``window``
    (``kvtool.traffic.measurement_window``) the cache sees every request and the figures count
    the requests after its warm-up. ``output_cache``: output blocks count as cached
    (``kvtool.traffic.output_blocks``; the figures say which in ``output_caching``).
    ``parts``: the tree by partitions (``WorkloadParts``; ``wl`` is then its ``head``), else
    ``wl``'s whole tree is one. ``WorkloadError`` when ``block_size`` is not a multiple of the
    workload's base block size."""
    if block_size % wl.base:
        raise WorkloadError(
            f"block_size {block_size} is not a multiple of the trace's block size {wl.base}"
        )
    if parts is None:
        parts = [TreePart(np.arange(wl.n, dtype=np.int64), 0, wl)]
    # a hash trace's ids cannot be split: its own block size and the one asked for (a multiple)
    listed = (wl.base,) if wl.kind == "hash" else BLOCK_SIZES
    sizes = tuple(sorted({*listed, block_size}))
    first = 0 if window is None else window.start  # requests first.. are counted
    merged = _Merge(wl, sizes, charts)
    for p, part in enumerate(parts):
        _add_part(merged, p, part, block_size, sizes, first, output_cache, top, charts)
    return _summary(
        wl, merged, block_size, sizes, first, kv_bytes_per_token, top, window, output_cache
    )


def _add_part(
    m: _Merge,
    p: int,
    part: TreePart,
    block_size: int,
    sizes: tuple[int, ...],
    first: int,
    output_cache: bool,
    top: int,
    charts: bool,
) -> None:
    """Add partition ``p``'s figures to ``m``."""
    w, rows = part.wl, part.rows
    local_first = int(np.searchsorted(rows, first))  # rows are increasing
    rs = runs(w)
    ps = passes(w, rs)
    sessions = assign_sessions(w, infer_parents(w, rs, ps), m.logged, m.inferred)
    m.inferred += sessions.inferred
    m.codes[rows] = sessions.code
    prompt_hits = base_hit_blocks(w, rs, ps)
    outputs = output_blocks(w)
    with_output = output_hit_blocks(w, rs, ps, outputs)
    base_hits = with_output.base_hits if output_cache else prompt_hits
    src = Passes(ps.run, ps.req, with_output.source) if output_cache else ps
    for B in sizes:
        hits_b = ideal_hits(w, rs, ps, base_hits, B)
        m.by_size[B][rows] = hits_b.cached_tokens
        if B == block_size:
            hits = hits_b
    other = ideal_hits(
        w, rs, ps, prompt_hits if output_cache else with_output.base_hits, block_size
    )
    m.other[rows] = other.cached_tokens
    k = block_size // w.base
    out_owner = rows[np.repeat(np.arange(w.n), np.diff(outputs.offsets))]
    out_full = (w.depth[outputs.nodes] + 1) % k == 0
    m.totals.out_block_tokens += int((out_full & (out_owner >= first)).sum()) * block_size
    split = within_session(ps, sessions.code)
    within_pass = split.within
    if output_cache:  # a stretch first cached by an output of the same session is within it
        s = np.maximum(src.prev, 0)
        code = sessions.code
        within_pass = within_pass | ((src.prev >= 0) & (code[s] == code[ps.req]))
    m.within[rows] = np.bincount(
        ps.req[within_pass], hits.cached_blocks[within_pass], minlength=w.n
    ).astype(np.int64)
    m.totals.distinct_blocks += working_set_blocks(rs, ps, hits.k)
    gaps = reuse_gap_tokens(src, hits, w.ts, local_first)
    known = ~np.isnan(gaps.seconds)
    if known.any():
        m.totals.reuse_any_known = True
        gap, weight = gaps.seconds[known], gaps.tokens[known]
        m.totals.reuse_known_tokens += int(weight.sum())
        for name, limit in REUSE_WINDOWS.items():
            m.reuse[name] += int(weight[gap <= limit].sum())
    for rank, pre in enumerate(top_prefixes(w, rs, ps, split.sessions_per_run, hits.k, top)):
        m.prefixes.append(
            (-pre.tokens_saved, p, rank, replace(pre, first_request=int(rows[pre.first_request])))
        )
    if charts:
        assert m.gaps is not None
        m.gaps.append(reuse_gap_tokens(src, hits, w.ts))
        for node in prefix_tree(w, rs, ps, split.sessions_per_run):
            node["id"] += m.totals.runs
            if node["parent"] >= 0:
                node["parent"] += m.totals.runs
            m.tree.append(node)
    m.totals.runs += len(rs.lo)


def _merged_tree(nodes: list[dict], limit: int = 40) -> list[dict]:
    """The prefix-tree chart of the whole tree from each partition's: the ``limit`` runs that
    save most (ties: lower run id) and their ancestors, parents before children."""
    by_id = {n["id"]: n for n in nodes}
    ranked = sorted(nodes, key=lambda n: (-n["tokens_saved"], n["id"]))[:limit]
    keep: set[int] = set()
    for n in ranked:
        c = n["id"]
        while c >= 0 and c not in keep:
            keep.add(c)
            c = by_id[c]["parent"]
    return sorted((by_id[c] for c in keep), key=lambda n: (n["start"], n["id"]))


def _renumber(codes: np.ndarray) -> np.ndarray:
    """Session codes numbered by first appearance: logged 0, 1, ...; inferred -1, -2, ..."""
    out = np.empty_like(codes)
    for logged in (True, False):
        mask = codes >= 0 if logged else codes < 0
        c = codes[mask]
        uniq, at = np.unique(c, return_index=True)
        rank = np.empty(len(uniq), np.int64)
        rank[np.argsort(at)] = np.arange(len(uniq))
        new = rank[np.searchsorted(uniq, c)]
        out[mask] = new if logged else -1 - new
    return out


def _summary(
    wl: Workload,
    m: _Merge,
    block_size: int,
    sizes: tuple[int, ...],
    first: int,
    kv_bytes_per_token: int | None,
    top: int,
    window: Window | None,
    output_cache: bool,
) -> WorkloadSummary:
    prompt_tokens = int(wl.n_tokens[first:].sum())
    by_size = {str(B): _ratio(int(m.by_size[B][first:].sum()), prompt_tokens) for B in sizes}
    cached_tokens = m.by_size[block_size]
    cached = int(cached_tokens[first:].sum())
    other_cached = int(m.other[first:].sum())
    with_cached, prompt_cached = (cached, other_cached) if output_cache else (other_cached, cached)
    caching = OutputCaching(
        enabled=output_cache,
        applies=caches_outputs(wl),
        ideal_hit_rate_with_output=_ratio(with_cached, prompt_tokens),
        ideal_hit_rate_prompt_only=_ratio(prompt_cached, prompt_tokens),
        cached_tokens_added=with_cached - prompt_cached,
        output_block_tokens=m.totals.out_block_tokens,
    )
    codes = _renumber(m.codes)
    within = int(m.within[first:].sum()) * block_size
    distinct = m.totals.distinct_blocks
    observed = ~np.isnan(wl.observed_prompt) & ~np.isnan(wl.observed_cached)
    observed[:first] = False
    counted_codes = codes[first:]
    obs_prompt = float(wl.observed_prompt[observed].sum())
    total = m.totals.reuse_known_tokens
    reuse = (
        {k: float(v / total) for k, v in m.reuse.items()}
        if m.totals.reuse_any_known
        else dict.fromkeys(REUSE_WINDOWS)
    )
    chart_data = None
    if m.gaps is not None:
        gaps = ReuseGaps(
            np.concatenate([g.seconds for g in m.gaps]) if m.gaps else np.zeros(0),
            np.concatenate([g.tokens for g in m.gaps]) if m.gaps else np.zeros(0, np.int64),
        )
        chart_data = {
            "timeline": timeline(wl.ts, wl.n_tokens, cached_tokens),
            "prompt_lengths": prompt_lengths(wl.n_tokens),
            "reuse_gaps": reuse_histogram(gaps),
            "prefix_tree": _merged_tree(m.tree),
        }
    return WorkloadSummary(
        requests=wl.n - first,
        sessions=int(len(np.unique(counted_codes))),
        sessions_inferred=int(len(np.unique(counted_codes[counted_codes < 0]))),
        prompt_tokens=prompt_tokens,
        output_tokens=int(wl.output_tokens[first:].sum()),
        block_size=block_size,
        cached_tokens=cached,
        ideal_hit_rate=_ratio(cached, prompt_tokens),
        ideal_hit_rate_by_block_size=by_size,
        output_caching=caching,
        within_session_tokens=within,
        cross_session_tokens=cached - within,
        reuse_within=reuse,
        working_set_tokens=distinct * block_size,
        kv_bytes_per_token=kv_bytes_per_token,
        working_set_gb=(
            distinct * block_size * kv_bytes_per_token / 1e9 if kv_bytes_per_token else None
        ),
        observed_requests=int(observed.sum()),
        observed_hit_rate=_ratio(float(wl.observed_cached[observed].sum()), obs_prompt),
        predicted_hit_rate_on_observed=_ratio(
            float(cached_tokens[observed].sum()), float(wl.n_tokens[observed].sum())
        ),
        charts=chart_data,
        prefixes=[t[3] for t in sorted(m.prefixes, key=lambda t: t[:3])[:top]],
        per_request=RequestFigures(
            req_id=wl.req_ids,
            ts=wl.ts,
            session=wl.session,
            session_code=codes,
            n_tokens=wl.n_tokens,
            cached_tokens=cached_tokens,
            within_session_tokens=m.within * block_size,
            output_tokens=wl.output_tokens,
            observed_prompt_tokens=wl.observed_prompt,
            observed_cached_tokens=wl.observed_cached,
            first_counted=first,
        ),
        window=window,
    )
