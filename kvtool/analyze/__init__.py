"""Analyze: how much prompt traffic is reusable prefix, where it comes from, how long it must live.

``analyze`` ingests the given files (idempotently), tokenizes what is not tokenized yet, and returns
the summary documented in docs/analyze.md (the ``--json`` contract).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np

from kvtool.analyze.breaks import detect_breaks, store_breaks, summarize_breaks
from kvtool.analyze.distributions import prefix_tree, prompt_lengths, reuse_gaps, timeline
from kvtool.analyze.prefix import (
    assign_sessions,
    base_hit_blocks,
    ideal_hits,
    infer_parents,
    passes,
    reuse_within,
    runs,
    top_prefixes,
    within_session,
    working_set_blocks,
)
from kvtool.analyze.workload import Workload, WorkloadError, load_workload
from kvtool.ingest import FileReport, ingest_files
from kvtool.report.progress import NullProgress, Progress
from kvtool.store import connect, one
from kvtool.tiers.kv import UnknownModel, lookup
from kvtool.tokenize import (
    TokenizerBundle,
    TokenizeReport,
    load_tokenizer,
    request_token_ids,
    tokenize_requests,
)
from kvtool.tokenize.loader import DEFAULT_TOKENIZER

BLOCK_SIZES = (16, 64, 256, 512)
PRICE_INPUT = 3.0  # $/M input tokens: the default price of a lost (recomputed) token
PREVIEW_CHARS = 48

__all__ = ["BLOCK_SIZES", "WorkloadError", "analyze", "summarize"]


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
    wl: Workload, block_size: int, kv_bytes_per_token: int | None = None, charts: bool = False
) -> tuple[dict, list]:
    """The analyze summary of a workload (no I/O). Returns (summary, top prefixes); with
    ``charts`` the summary also holds the report's distributions under ``"charts"``."""
    if block_size % wl.base:
        raise WorkloadError(
            f"--block-size {block_size} is not a multiple of the trace's block size {wl.base}"
        )
    rs = runs(wl)
    ps = passes(wl, rs)
    session, inferred = assign_sessions(wl, infer_parents(wl, rs, ps))
    base_hits = base_hit_blocks(wl, rs, ps)
    sizes = (wl.base,) if wl.kind == "hash" else tuple(sorted({*BLOCK_SIZES, block_size}))
    prompt_tokens = int(wl.n_tokens.sum())
    by_size = {}
    for B in sizes:
        cached_b = ideal_hits(wl, rs, ps, base_hits, B).cached_tokens
        by_size[str(B)] = _ratio(int(cached_b.sum()), prompt_tokens)
    hits = ideal_hits(wl, rs, ps, base_hits, block_size)
    cached = int(hits.cached_tokens.sum())
    same, sessions_per_run = within_session(ps, session)
    within = int(hits.cached_blocks[same].sum()) * block_size
    distinct = working_set_blocks(rs, ps, hits.k)
    observed = ~np.isnan(wl.observed_prompt) & ~np.isnan(wl.observed_cached)
    obs_prompt = float(wl.observed_prompt[observed].sum())
    summary = {
        "requests": wl.n,
        "sessions": int(len(np.unique(session))),
        "sessions_inferred": inferred,
        "prompt_tokens": prompt_tokens,
        "output_tokens": int(wl.output_tokens.sum()),
        "block_size": block_size,
        "cached_tokens": cached,
        "ideal_hit_rate": _ratio(cached, prompt_tokens),
        "ideal_hit_rate_by_block_size": by_size,
        "within_session_tokens": within,
        "cross_session_tokens": cached - within,
        "reuse_within": reuse_within(ps, hits, wl.ts),
        "working_set_tokens": distinct * block_size,
        "kv_bytes_per_token": kv_bytes_per_token,
        "working_set_gb": (
            distinct * block_size * kv_bytes_per_token / 1e9 if kv_bytes_per_token else None
        ),
        "observed_requests": int(observed.sum()),
        "observed_hit_rate": _ratio(float(wl.observed_cached[observed].sum()), obs_prompt),
        "predicted_hit_rate_on_observed": _ratio(
            float(hits.cached_tokens[observed].sum()), float(wl.n_tokens[observed].sum())
        ),
    }
    if charts:
        summary["charts"] = {
            "timeline": timeline(wl.ts, wl.n_tokens, hits.cached_tokens),
            "prompt_lengths": prompt_lengths(wl.n_tokens),
            "reuse_gaps": reuse_gaps(ps, hits, wl.ts),
            "prefix_tree": prefix_tree(wl, rs, ps, sessions_per_run),
        }
    return summary, top_prefixes(wl, rs, ps, sessions_per_run, hits.k)


def kv_shape_name(model: str | None, wl: Workload) -> tuple[str | None, int | None]:
    """KV bytes per token for --model, else for the logs' most common model when it is known."""
    if model:
        return model, lookup(model).bytes_per_token  # UnknownModel propagates: the user asked
    common = Counter(m for m in wl.models if m).most_common(1)
    if common:
        try:
            return common[0][0], lookup(common[0][0]).bytes_per_token
        except UnknownModel:
            return common[0][0], None
    return None, None


def analyze(
    paths: list[str | Path] | None = None,
    *,
    db: str | Path | duckdb.DuckDBPyConnection = "kvtool.duckdb",
    tokenizer: str | None = None,
    block_size: int | None = None,
    model: str | None = None,
    fmt: str | None = None,
    hash_block_size: int = 512,
    top: int = 10,
    price_input: float = PRICE_INPUT,
    examples: int = 3,
    charts: bool = False,
    progress: Progress | None = None,
) -> dict:
    """Ingest ``paths`` (all files in the database when None), tokenize, and summarize at
    ``block_size`` (default 16; a hash trace's own block size for hash traces), find prefix
    breaks (priced at ``price_input`` $/M tokens, ``examples`` per cause). ``charts`` adds the
    report's distributions (``summary["charts"]``, docs/report.md).

    Raises ``UnusableInput`` / ``TokenizerNotFound`` / ``WorkloadError`` / ``UnknownModel`` for
    input that cannot be analyzed (the CLI turns them into one line and exit code 2)."""
    if block_size is not None and (block_size <= 0 or block_size % 16):
        raise WorkloadError(f"--block-size must be a positive multiple of 16, got {block_size}")
    progress = progress or NullProgress()
    con = db if isinstance(db, duckdb.DuckDBPyConnection) else connect(db)
    try:
        return _analyze(
            con,
            paths,
            tokenizer,
            block_size,
            model,
            fmt,
            hash_block_size,
            top,
            price_input,
            examples,
            charts,
            progress,
        )
    finally:
        progress.close()
        if con is not db:
            con.close()


@dataclass
class Traffic:
    """Requests ready for analysis: the workload arrays and how its text was tokenized."""

    wl: Workload
    file_ids: list[int]
    reports: list[FileReport]
    bundle: TokenizerBundle | None
    signature: str | None
    mode: str
    tok_report: TokenizeReport | None


def load_traffic(
    con: duckdb.DuckDBPyConnection,
    paths: list[str | Path] | None,
    tokenizer: str | None,
    fmt: str | None,
    hash_block_size: int,
    progress: Progress,
) -> Traffic:
    """Ingest ``paths`` (all files in the database when None), tokenize what is not tokenized
    yet, and load the workload (what analyze and simulate start from). Without ``paths`` and
    ``tokenizer``, the tokenizer the database was last tokenized with is used (``meta``
    ``tokenizer_spec``), so commands on a database agree with the analyze that filled it."""
    reports: list[FileReport] = []
    if paths:
        files = [Path(p) for p in paths]
        progress.stage("ingest", sum(p.stat().st_size for p in files if p.is_file()))
        reports = ingest_files(
            con, files, fmt=fmt, hash_block_size=hash_block_size, progress=progress.advance
        )
        file_ids = sorted({r.file_id for r in reports})
    else:
        file_ids = [f for (f,) in con.execute("SELECT file_id FROM files ORDER BY 1").fetchall()]
    if not file_ids:
        raise WorkloadError("the database holds no ingested files; pass log files to analyze")
    ids = ",".join(map(str, file_ids))
    kinds = {
        k
        for (k,) in con.execute(
            f"SELECT DISTINCT kind FROM requests WHERE file_id IN ({ids})"
        ).fetchall()
    }
    bundle = None
    signature = None
    tok_report = None
    mode = "whole"
    if kinds - {"hash"}:
        if tokenizer is None and not paths:  # working on the database: its own tokenizer
            stored = one(con, "SELECT value FROM meta WHERE key = 'tokenizer_spec'")
            tokenizer = stored[0] if stored else None
        bundle = load_tokenizer(tokenizer)
        progress.stage("tokenize", None)
        tok_report = tokenize_requests(
            con, bundle, file_ids, progress=lambda done, total: progress.update(done, total)
        )
        signature = tok_report.signature
        mode = tok_report.mode
        spec = tokenizer or DEFAULT_TOKENIZER
        if Path(spec).expanduser().exists():
            spec = str(Path(spec).expanduser().resolve())
        con.execute("INSERT OR REPLACE INTO meta VALUES ('tokenizer_spec', ?)", [spec])
    progress.stage("load", None)
    wl = load_workload(con, file_ids, signature)
    return Traffic(wl, file_ids, reports, bundle, signature, mode, tok_report)


def _analyze(
    con: duckdb.DuckDBPyConnection,
    paths: list[str | Path] | None,
    tokenizer: str | None,
    block_size: int | None,
    model: str | None,
    fmt: str | None,
    hash_block_size: int,
    top: int,
    price_input: float,
    examples: int,
    charts: bool,
    progress: Progress,
) -> dict:
    traffic = load_traffic(con, paths, tokenizer, fmt, hash_block_size, progress)
    wl, file_ids, bundle = traffic.wl, traffic.file_ids, traffic.bundle
    signature, mode, tok_report = traffic.signature, traffic.mode, traffic.tok_report
    ids = ",".join(map(str, file_ids))
    progress.stage("analyze", None)
    model_name, kv_bytes = kv_shape_name(model, wl)
    if block_size is None:  # hash traces: their own block size; text logs: vLLM's GPU default
        block_size = wl.base if wl.kind == "hash" else 16
    summary, prefixes = summarize(wl, block_size, kv_bytes, charts)
    (rejected,) = one(con, f"SELECT count(*) FROM rejects WHERE file_id IN ({ids})")
    summary["rejected_lines"] = int(rejected)
    summary["model"] = model_name
    summary["tokenizer"] = signature
    summary["trace_kind"] = wl.kind
    summary["top_prefixes"] = []
    for p in prefixes[:top]:
        preview = ends_with = None
        if bundle is not None:
            ids_ = request_token_ids(con, bundle, int(wl.req_ids[p.first_request]), mode)
            text = bundle.tokenizer.decode(ids_[: p.tokens].tolist(), skip_special_tokens=False)
            preview, ends_with = _preview(text)
        summary["top_prefixes"].append(
            {
                "tokens": p.tokens,
                "requests": p.requests,
                "sessions": p.sessions,
                "tokens_saved": p.tokens_saved,
                "preview": preview,
                "ends_with": ends_with,
            }
        )
    token_ids: dict[int, np.ndarray] = {}  # one lookup per request, shared by its nodes
    for node in summary.get("charts", {}).get("prefix_tree", []):
        node["text"] = None
        if bundle is not None:
            rid = node["req_id"]
            if rid not in token_ids:
                token_ids[rid] = request_token_ids(con, bundle, rid, mode)
            node["text"] = bundle.tokenizer.decode(
                token_ids[rid][node["start"] : node["end"]].tolist(), skip_special_tokens=False
            )
    files = con.execute(
        "SELECT path, format, lines, requests, rejected FROM files "
        f"WHERE file_id IN ({ids}) ORDER BY file_id"
    ).fetchall()
    summary["files"] = [
        {"path": f[0], "format": f[1], "lines": f[2], "requests": f[3], "rejected": f[4]}
        for f in files
    ]
    if tok_report is not None:
        summary["tokenization"] = tok_report.to_json()
    summary["breaks"] = summary["break_summary"] = None
    if bundle is not None and signature is not None:
        progress.stage("breaks", None)
        breaks = detect_breaks(
            con, wl, bundle, mode, block_size, lambda d, t: progress.update(d, t)
        )
        store_breaks(con, signature, block_size, wl.req_ids, breaks)
        summary["breaks"], summary["break_summary"] = summarize_breaks(
            breaks, summary["prompt_tokens"], price_input, examples
        )
    return summary
