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
from kvtool.analyze.losses import break_losses
from kvtool.analyze.prefix import Prefix
from kvtool.analyze.result import (
    AnalyzeOptions,
    AnalyzeResult,
    RequestFigures,
    TopPrefix,
    WorkloadSummary,
)
from kvtool.analyze.summary import BLOCK_SIZES, summarize
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
    Traffic,
    as_executor,
    kv_shape_name,
    load_traffic,
    measurement_window,
    parse_warmup,
)

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
        parts=True,
    )
    wl = traffic.tree.head  # the requests; the tree is read by partitions
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
    summary = summarize(
        wl, block_size, kv_bytes, opts.charts, opts.top, window, opts.output_cache, traffic.tree
    )
    if summary.charts is not None:
        _label_tree(con, traffic, summary.charts["prefix_tree"])
    breaks = None
    if traffic.bundle is not None and traffic.signature is not None:
        progress.stage("breaks", None)
        step = lambda d, t: progress.update(d, t)  # noqa: E731
        oc = opts.output_cache  # breaks are priced under the ideal's semantics
        if traffic.redacted:
            found = redacted.detect_breaks(
                con, traffic.wl, traffic.signature, block_size, step, output_cache=oc
            )
        else:
            found = detect_breaks(
                con,
                traffic.wl,
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
