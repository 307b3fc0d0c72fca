"""Traffic: the requests every command starts from, ingested, tokenized and loaded.

``load_traffic`` is idempotent on the store: files already ingested are not ingested again and
requests already tokenized with the tokenizer are not tokenized again. Without paths and a
tokenizer it uses the tokenizer the database was last used with (``tokenizations``), in the
mode stored for it, so that every command on a database agrees with the analyze that filled it.
Hash traces are never tokenized (``bundle``, ``signature`` and ``tok_report`` are None).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from kvtool.errors import NotFoundError
from kvtool.ingest import DEFAULT_MAX_LINE_BYTES, FileReport, check_ingest_options, ingest_paths
from kvtool.progress import Progress
from kvtool.store import Connection
from kvtool.store.files import all_file_ids, request_kinds
from kvtool.store.tokenizations import last_tokenizer_spec, mark_used
from kvtool.tiers.kv import lookup
from kvtool.tokenize import TokenizerBundle, TokenizeReport, load_tokenizer, tokenize_requests
from kvtool.traffic.workload import Workload, WorkloadError, load_workload

REUSE_WINDOWS = {"5m": 300.0, "1h": 3600.0, "24h": 86400.0}  # the TTLs reuse is measured at
PRICE_INPUT = 3.0  # $/M input tokens: the default price of a lost (recomputed) token


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
    con: Connection,
    *,
    paths: list[str | Path] | None,
    tokenizer: str | None,
    fmt: str | None,
    hash_block_size: int,
    progress: Progress,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> Traffic:
    """Ingest ``paths`` (all files in the database when None), tokenize what is not tokenized
    yet, and load the workload (what analyze and simulate start from). Without ``paths`` and
    ``tokenizer``, the tokenizer the database was last used with is used. ``OptionError`` for
    an unknown ``fmt``, even when nothing is ingested. Requests the chat template raises for
    are left out (counted in ``tok_report``); ``WorkloadError`` when that leaves none."""
    check_ingest_options(fmt, hash_block_size)
    reports: list[FileReport] = []
    if paths:
        reports = ingest_paths(
            con,
            paths,
            fmt=fmt,
            hash_block_size=hash_block_size,
            max_line_bytes=max_line_bytes,
            progress=progress,
        )
        file_ids = sorted({r.file_id for r in reports})
    else:
        file_ids = all_file_ids(con)
    if not file_ids:
        raise WorkloadError("the database holds no ingested files; pass log files to analyze")
    kinds = request_kinds(con, file_ids)
    bundle = None
    signature = None
    tok_report = None
    mode = "whole"
    if kinds - {"hash"}:
        if tokenizer is None and not paths:  # working on the database: its own tokenizer
            tokenizer = last_tokenizer_spec(con)
        bundle = load_tokenizer(tokenizer)
        progress.stage("tokenize", None)
        tok_report = tokenize_requests(
            con, bundle, file_ids, progress=lambda done, total: progress.update(done, total)
        )
        signature = tok_report.signature
        mode = tok_report.mode
        mark_used(con, signature, bundle.spec)
    progress.stage("load", None)
    wl = load_workload(con, file_ids, signature)
    if tok_report is not None and tok_report.template_errors and not len(wl.req_ids):
        first = tok_report.template_error_examples[0]
        raise WorkloadError(
            f"the chat template raised for all {tok_report.template_errors} requests it was "
            f"given; first: {first.path}:{first.line}: {first.message}"
        )
    return Traffic(wl, file_ids, reports, bundle, signature, mode, tok_report)


def kv_shape_name(model: str | None, wl: Workload) -> tuple[str | None, int | None]:
    """KV bytes per token for ``model``, else for the logs' most common model when it is known."""
    if model:
        return model, lookup(model).bytes_per_token  # NotFoundError propagates: the user asked
    common = Counter(m for m in wl.models if m).most_common(1)
    if common:
        try:
            return common[0][0], lookup(common[0][0]).bytes_per_token
        except NotFoundError:
            return common[0][0], None
    return None, None
