"""Analyze: how much prompt traffic is reusable prefix, where it comes from, how long it must live.

``analyze`` ingests the given files (idempotently), tokenizes what is not tokenized yet, and returns
the summary documented in docs/analyze.md (the ``--json`` contract).
"""

from __future__ import annotations

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
from kvtool.progress import NullProgress, Progress
from kvtool.store import connect, one
from kvtool.tokenize import request_token_ids
from kvtool.traffic import PRICE_INPUT, Workload, WorkloadError, kv_shape_name, load_traffic

BLOCK_SIZES = (16, 64, 256, 512)
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
    traffic = load_traffic(
        con,
        paths=paths,
        tokenizer=tokenizer,
        fmt=fmt,
        hash_block_size=hash_block_size,
        progress=progress,
    )
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
