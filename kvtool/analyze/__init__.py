"""Analyze: how much prompt traffic is reusable prefix, where it comes from, how long it must live.

``analyze`` ingests the given files (idempotently), tokenizes what is not tokenized yet, and
returns an ``AnalyzeResult`` whose ``to_json()`` is the ``--json`` contract (docs/analyze.md);
``summarize`` computes the workload figures alone (no I/O). Options are an ``AnalyzeOptions``,
validated once when built. Everything raised for unusable input or options is a ``KvtoolError``
(``OptionError`` for a parameter value, ``WorkloadError`` for traffic that cannot be analyzed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kvtool.analyze import redacted
from kvtool.analyze.breaks import BreakSummary, detect_breaks, store_breaks, summarize_breaks
from kvtool.analyze.distributions import prefix_tree, prompt_lengths, reuse_gaps, timeline
from kvtool.analyze.losses import break_losses
from kvtool.analyze.prefix import (
    Prefix,
    assign_sessions,
    infer_parents,
    reuse_within,
    top_prefixes,
    within_session,
    working_set_blocks,
)
from kvtool.analyze.result import (
    AnalyzeOptions,
    AnalyzeResult,
    OutputCaching,
    RequestFigures,
    TopPrefix,
    WorkloadSummary,
)
from kvtool.errors import OptionError, WorkloadError
from kvtool.ingest import DEFAULT_MAX_LINE_BYTES
from kvtool.progress import NullProgress, Progress
from kvtool.store import DEFAULT_DB, Connection, DbArg, open_db
from kvtool.store.files import file_rows, rejected_lines
from kvtool.store.requests import unusable_prompts
from kvtool.tokenize import request_token_ids
from kvtool.traffic import (
    PRICE_INPUT,
    Executor,
    Passes,
    Traffic,
    Window,
    Workload,
    as_executor,
    base_hit_blocks,
    caches_outputs,
    ideal_hits,
    kv_shape_name,
    load_traffic,
    measurement_window,
    output_blocks,
    output_hit_blocks,
    parse_warmup,
    passes,
    runs,
)

BLOCK_SIZES = (16, 64, 256, 512)
PREVIEW_CHARS = 48

__all__ = [
    "BLOCK_SIZES",
    "AnalyzeOptions",
    "AnalyzeResult",
    "BreakSummary",
    "RequestFigures",
    "TopPrefix",
    "WorkloadError",
    "WorkloadSummary",
    "analyze",
    "break_losses",
    "summarize",
]


def _preview(text: str) -> tuple[str, str]:
    """(head … tail, tail) of a prefix's text with whitespace collapsed."""
    flat = " ".join(text.split())
    tail = flat[-PREVIEW_CHARS:]
    if len(flat) <= 2 * PREVIEW_CHARS + 3:
        return flat, tail
    return f"{flat[:PREVIEW_CHARS]} … {tail}", tail


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den else None


def summarize(
    wl: Workload,
    block_size: int,
    kv_bytes_per_token: int | None = None,
    charts: bool = False,
    top: int = 10,
    window: Window | None = None,
    output_cache: bool = True,
) -> WorkloadSummary:
    """The workload's figures at ``block_size`` (no I/O): ``WorkloadSummary`` with the ``top``
    most valuable prefixes and, with ``charts``, the report's distributions. With a ``window``
    (``kvtool.traffic.measurement_window``) the cache sees every request and the figures count
    the requests after its warm-up. ``output_cache``: output blocks count as cached
    (``kvtool.traffic.output_blocks``; the figures say which in ``output_caching``).
    ``WorkloadError`` when ``block_size`` is not a multiple of the workload's base block size."""
    if block_size % wl.base:
        raise WorkloadError(
            f"block_size {block_size} is not a multiple of the trace's block size {wl.base}"
        )
    rs = runs(wl)
    ps = passes(wl, rs)
    sessions = assign_sessions(wl, infer_parents(wl, rs, ps))
    prompt_hits = base_hit_blocks(wl, rs, ps)
    outputs = output_blocks(wl)
    with_output = output_hit_blocks(wl, rs, ps, outputs)
    base_hits = with_output.base_hits if output_cache else prompt_hits
    # reuse times: since the latest request that used a block or wrote it as output
    src = Passes(ps.run, ps.req, with_output.source) if output_cache else ps
    # a hash trace's ids cannot be split: its own block size and the one asked for (a multiple)
    listed = (wl.base,) if wl.kind == "hash" else BLOCK_SIZES
    sizes = tuple(sorted({*listed, block_size}))
    first = 0 if window is None else window.start  # requests first.. are counted
    prompt_tokens = int(wl.n_tokens[first:].sum())
    by_size = {}
    for B in sizes:
        hits_b = ideal_hits(wl, rs, ps, base_hits, B)
        by_size[str(B)] = _ratio(int(hits_b.cached_tokens[first:].sum()), prompt_tokens)
        if B == block_size:
            hits = hits_b
    cached = int(hits.cached_tokens[first:].sum())
    other = ideal_hits(
        wl, rs, ps, prompt_hits if output_cache else with_output.base_hits, block_size
    )
    other_cached = int(other.cached_tokens[first:].sum())
    with_cached, prompt_cached = (cached, other_cached) if output_cache else (other_cached, cached)
    k = block_size // wl.base
    out_owner = np.repeat(np.arange(wl.n), np.diff(outputs.offsets))
    out_full = (wl.depth[outputs.nodes] + 1) % k == 0
    caching = OutputCaching(
        enabled=output_cache,
        applies=caches_outputs(wl),
        ideal_hit_rate_with_output=_ratio(with_cached, prompt_tokens),
        ideal_hit_rate_prompt_only=_ratio(prompt_cached, prompt_tokens),
        cached_tokens_added=with_cached - prompt_cached,
        output_block_tokens=int((out_full & (out_owner >= first)).sum()) * block_size,
    )
    split = within_session(ps, sessions.code)
    within_pass = split.within
    if output_cache:  # a stretch first cached by an output of the same session is within it
        s = np.maximum(src.prev, 0)
        within_pass = within_pass | ((src.prev >= 0) & (sessions.code[s] == sessions.code[ps.req]))
    within_blocks = np.bincount(
        ps.req[within_pass], hits.cached_blocks[within_pass], minlength=wl.n
    ).astype(np.int64)
    within = int(within_blocks[first:].sum()) * block_size
    distinct = working_set_blocks(rs, ps, hits.k)
    observed = ~np.isnan(wl.observed_prompt) & ~np.isnan(wl.observed_cached)
    observed[:first] = False
    codes = sessions.code[first:]
    obs_prompt = float(wl.observed_prompt[observed].sum())
    chart_data = None
    if charts:
        chart_data = {
            "timeline": timeline(wl.ts, wl.n_tokens, hits.cached_tokens),
            "prompt_lengths": prompt_lengths(wl.n_tokens),
            "reuse_gaps": reuse_gaps(src, hits, wl.ts),
            "prefix_tree": prefix_tree(wl, rs, ps, split.sessions_per_run),
        }
    return WorkloadSummary(
        requests=wl.n - first,
        sessions=int(len(np.unique(codes))),
        sessions_inferred=int(len(np.unique(codes[codes < 0]))),
        prompt_tokens=prompt_tokens,
        output_tokens=int(wl.output_tokens[first:].sum()),
        block_size=block_size,
        cached_tokens=cached,
        ideal_hit_rate=_ratio(cached, prompt_tokens),
        ideal_hit_rate_by_block_size=by_size,
        output_caching=caching,
        within_session_tokens=within,
        cross_session_tokens=cached - within,
        reuse_within=reuse_within(src, hits, wl.ts, first),
        working_set_tokens=distinct * block_size,
        kv_bytes_per_token=kv_bytes_per_token,
        working_set_gb=(
            distinct * block_size * kv_bytes_per_token / 1e9 if kv_bytes_per_token else None
        ),
        observed_requests=int(observed.sum()),
        observed_hit_rate=_ratio(float(wl.observed_cached[observed].sum()), obs_prompt),
        predicted_hit_rate_on_observed=_ratio(
            float(hits.cached_tokens[observed].sum()), float(wl.n_tokens[observed].sum())
        ),
        charts=chart_data,
        prefixes=top_prefixes(wl, rs, ps, split.sessions_per_run, hits.k, limit=top),
        per_request=RequestFigures(
            req_id=wl.req_ids,
            ts=wl.ts,
            session=wl.session,
            session_code=sessions.code,
            n_tokens=wl.n_tokens,
            cached_tokens=hits.cached_tokens,
            within_session_tokens=within_blocks * block_size,
            output_tokens=wl.output_tokens,
            observed_prompt_tokens=wl.observed_prompt,
            observed_cached_tokens=wl.observed_cached,
            first_counted=first,
        ),
        window=window,
    )


def analyze(
    paths: list[str | Path] | None = None,
    *,
    db: DbArg = DEFAULT_DB,
    tokenizer: str | None = None,
    block_size: int | None = None,
    model: str | None = None,
    fmt: str | None = None,
    hash_block_size: int = 512,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    top: int = 10,
    price_input: float = PRICE_INPUT,
    examples: int = 3,
    charts: bool = False,
    progress: Progress | None = None,
    redact: bool = False,
    warmup: str | float | None = None,
    output_cache: bool = True,
    engine: Executor | str | None = None,
) -> AnalyzeResult:
    """Ingest ``paths`` (all files in the database when None), tokenize, and analyze: the
    keyword parameters are the fields of ``AnalyzeOptions`` (validated before the database is
    opened). ``db`` is a path or an open connection (left open). ``redact``: ingest ``paths``
    without prompt text (docs/redaction.md); a redacted database is analyzed from its
    fingerprints, and the result holds no prompt text (no previews, labels or diff text).
    ``warmup``: the cache sees the requests of the warm-up, the figures count the rest
    (``AnalyzeOptions``; the result's ``warmup`` key says which). ``output_cache``: the blocks of
    an answer that the next prompt re-renders count as cached (vLLM's semantics; False: prompt
    blocks only; the result's ``output_caching`` gives both ideals). ``engine``: where
    ingest and tokenization run, 'local' (default) or 'ray' or an ``Executor``
    (``kvtool.traffic.engine``, docs/scale.md); the result is the same.

    Raises a ``KvtoolError`` for input or options that cannot be analyzed (the CLI turns it into
    one line and exit code 2): ``OptionError`` naming the parameter (also a ``block_size`` that
    is not a multiple of a hash trace's own), ``WorkloadError`` for traffic that cannot be
    analyzed (nothing ingested, mixed kinds). A file of ``paths`` whose records were mostly
    rejected is analyzed, and named in the result's ``warnings``."""
    options = AnalyzeOptions(
        tokenizer=tokenizer,
        fmt=fmt,
        hash_block_size=hash_block_size,
        max_line_bytes=max_line_bytes,
        block_size=block_size,
        model=model,
        top=top,
        price_input=price_input,
        examples=examples,
        charts=charts,
        warmup=warmup,
        output_cache=output_cache,
    )
    executor = as_executor(engine)
    progress = progress or NullProgress()
    try:
        with open_db(db) as con:
            return _analyze(con, paths, options, progress, redact, executor)
    finally:
        progress.close()


def _analyze(
    con: Connection,
    paths: list[str | Path] | None,
    opts: AnalyzeOptions,
    progress: Progress,
    redact: bool = False,
    engine: Executor | None = None,
) -> AnalyzeResult:
    traffic = load_traffic(
        con,
        paths=paths,
        tokenizer=opts.tokenizer,
        fmt=opts.fmt,
        hash_block_size=opts.hash_block_size,
        max_line_bytes=opts.max_line_bytes,
        progress=progress,
        redact=redact,
        engine=engine,
    )
    wl = traffic.wl
    progress.stage("analyze", None)
    model_name, kv_bytes = kv_shape_name(opts.model, wl)
    # hash traces: their own block size; text logs: vLLM's GPU default
    block_size = opts.block_size or (wl.base if wl.kind == "hash" else 16)
    if block_size % wl.base:  # a hash trace's ids cannot be split into smaller blocks
        raise OptionError(
            "block_size", f"{block_size} is not a multiple of the trace's block size {wl.base}"
        )
    warmup = None if opts.warmup is None else parse_warmup(opts.warmup)
    window = measurement_window(wl, warmup)
    summary = summarize(wl, block_size, kv_bytes, opts.charts, opts.top, window, opts.output_cache)
    if summary.charts is not None:
        _label_tree(con, traffic, summary.charts["prefix_tree"])
    breaks = None
    if traffic.bundle is not None and traffic.signature is not None:
        progress.stage("breaks", None)
        step = lambda d, t: progress.update(d, t)  # noqa: E731
        oc = opts.output_cache  # breaks are priced under the ideal's semantics
        if traffic.redacted:
            found = redacted.detect_breaks(
                con, wl, traffic.signature, block_size, step, output_cache=oc
            )
        else:
            found = detect_breaks(
                con,
                wl,
                traffic.bundle,
                traffic.mode,
                block_size,
                step,
                output_cache=oc,
                cached_tokens=summary.per_request.cached_tokens,
            )
        store_breaks(con, traffic.signature, block_size, wl.req_ids, found)
        if window.start:  # every break is stored; the summary counts the window's
            counted = set(wl.req_ids[window.start :].tolist())
            found = [b for b in found if b.req_id in counted]
        breaks = summarize_breaks(found, summary.prompt_tokens, opts.price_input, opts.examples)
    return AnalyzeResult(
        **summary.figures(),
        rejected_lines=rejected_lines(con, traffic.file_ids),
        warnings=traffic.warnings,
        model=model_name,
        tokenizer=traffic.signature,
        trace_kind=wl.kind,
        hash_identity=wl.hash_identity,
        top_prefixes=[_with_text(con, traffic, p) for p in summary.prefixes],
        files=file_rows(con, traffic.file_ids),
        tokenization=traffic.tok_report,
        breaks=breaks,
        unusable_prompts=unusable_prompts(con, traffic.file_ids),
    )


def _with_text(con: Connection, traffic: Traffic, p: Prefix) -> TopPrefix:
    """A prefix with its preview text (None for hash traces and redacted databases)."""
    if traffic.bundle is None or traffic.redacted:
        return TopPrefix(p, None, None)
    rid = int(traffic.wl.req_ids[p.first_request])
    ids = request_token_ids(con, traffic.bundle, rid, traffic.mode)
    text = traffic.bundle.preview(ids[: p.tokens].tolist())
    return TopPrefix(p, *_preview(text))


def _label_tree(con: Connection, traffic: Traffic, tree: list[dict]) -> None:
    """Give each prefix-tree node its ``text`` (None without a tokenizer or text); each
    request's token ids are looked up once, shared by its nodes."""
    token_ids: dict[int, np.ndarray] = {}
    for node in tree:
        node["text"] = None
        if traffic.bundle is not None and not traffic.redacted:
            rid = node["req_id"]
            if rid not in token_ids:
                token_ids[rid] = request_token_ids(con, traffic.bundle, rid, traffic.mode)
            node["text"] = traffic.bundle.preview(
                token_ids[rid][node["start"] : node["end"]].tolist()
            )
