"""Traffic: the requests every command starts from, ingested, tokenized and loaded.

``load_traffic`` is idempotent on the store: files already ingested are not ingested again and
requests already tokenized with the tokenizer are not tokenized again. Without paths and a
tokenizer it uses the tokenizer the database was last used with (``tokenizations``), in the
mode stored for it, so that every command on a database agrees with the analyze that filled it.
Hash traces are never tokenized (``bundle``, ``signature`` and ``tok_report`` are None).

With ``redact`` the paths are ingested without prompt text (``kvtool.tokenize.redact``): tokenized
at ingest, with the tokenizer the database was redacted with unless another is named (then it
is refused: a redacted database cannot be tokenized again). A database is redacted or not, never
both: adding logs to a redacted database needs ``redact``, and ``redact`` refuses a database that
holds prompt text. ``Traffic.redacted`` says which one the workload came from.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from kvtool.errors import NotFoundError
from kvtool.ingest import DEFAULT_MAX_LINE_BYTES, FileReport, check_ingest_options
from kvtool.progress import Progress
from kvtool.store import Connection
from kvtool.store.db import release_cache
from kvtool.store.files import all_file_ids, request_kinds
from kvtool.store.fingerprints import redacted_files, redaction_spec
from kvtool.store.tokenizations import last_tokenizer_spec, mark_used
from kvtool.tiers.kv import lookup
from kvtool.traffic.engine import Executor
from kvtool.traffic.workload import Workload, WorkloadError, WorkloadParts, load_parts

if TYPE_CHECKING:  # tokenize is imported where text is tokenized: a hash trace never needs it
    from kvtool.tokenize import TokenizerBundle, TokenizeReport
    from kvtool.traffic.ray_cluster import RayCluster

REUSE_WINDOWS = {"5m": 300.0, "1h": 3600.0, "24h": 86400.0}  # the TTLs reuse is measured at
PRICE_INPUT = 3.0  # $/M input tokens: the default price of a lost (recomputed) token


@dataclass
class Traffic:
    """Requests ready for analysis: the workload (``tree``: by partitions of its block tree;
    ``wl``: whole, read on first use) and how its text was tokenized."""

    tree: WorkloadParts
    file_ids: list[int]
    reports: list[FileReport]
    bundle: TokenizerBundle | None
    signature: str | None
    mode: str
    tok_report: TokenizeReport | None
    redacted: bool = False

    @cached_property
    def wl(self) -> Workload:
        """The workload with its whole block tree."""
        return self.tree.whole()

    @property
    def warnings(self) -> list[str]:
        """The ``FileReport.warning`` of each file ingested by this load that was mostly
        rejected (files ingested before are not reported again, as by ``kvtool ingest``)."""
        return [r.warning for r in self.reports if r.warning]


class _Cluster:
    """The Ray cluster of one load, connected to on first use (None: the local engine)."""

    def __init__(self, engine: Executor) -> None:
        self.engine = engine
        self.cluster: RayCluster | None = None

    def get(self) -> RayCluster | None:
        if self.engine.distributed and self.cluster is None:
            from kvtool.traffic.ray_cluster import RayCluster

            self.cluster = RayCluster(self.engine)
        return self.cluster

    def __enter__(self) -> _Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.cluster is not None:
            self.cluster.close()


def load_traffic(
    con: Connection,
    *,
    paths: list[str | Path] | None,
    tokenizer: str | None,
    fmt: str | None,
    hash_block_size: int,
    progress: Progress,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    redact: bool = False,
    engine: Executor | None = None,
    parts: bool = False,
) -> Traffic:
    """Ingest ``paths`` (all files in the database when None), tokenize what is not tokenized
    yet, and load the workload (what analyze and simulate start from). Without ``paths`` and
    ``tokenizer``, the tokenizer the database was last used with is used. ``OptionError`` for
    an unknown ``fmt``, even when nothing is ingested. Requests the chat template raises for
    are left out (counted in ``tok_report``); ``WorkloadError`` when that leaves none.
    ``redact``: ingest ``paths`` without prompt text (see the module docstring); ``InputError``
    when that would mix redacted and unredacted files, or when a redacted database is asked
    for another tokenizer than the one it was tokenized with. ``engine``: where ingest and
    tokenization run (``kvtool.traffic.engine``; default: this process); the store ends up the
    same either way. ``parts``: the whole tree (``Traffic.wl``) is read only when first asked
    for, on ``con``, which must then still be open; a caller that reads the tree partition by
    partition (``Traffic.tree``) never holds it whole. Without it, ``wl`` is read here."""
    check_ingest_options(fmt, hash_block_size)
    engine = engine or Executor()
    engine.refuse_redact(redact)
    with _Cluster(engine) as clusters:
        reports: list[FileReport] = []
        tok_report = None
        redacted_spec = redaction_spec(con)
        if tokenizer is None and redacted_spec is not None:
            tokenizer = redacted_spec  # a redacted database has only the tokenizer of its ingest
        cluster = clusters.get() if paths else None  # None: the local engine
        if cluster is not None:
            from kvtool.traffic.ray_cluster import ray_ingest

            reports = ray_ingest(
                con,
                cluster,
                paths,
                fmt=fmt,
                hash_block_size=hash_block_size,
                max_line_bytes=max_line_bytes,
                progress=progress,
            )
            file_ids = sorted({r.file_id for r in reports})
        elif paths:
            from kvtool.tokenize.redact import ingest_logs

            done = ingest_logs(
                con,
                paths,
                redact=redact,
                tokenizer=tokenizer,
                fmt=fmt,
                hash_block_size=hash_block_size,
                max_line_bytes=max_line_bytes,
                progress=progress,
            )
            reports, tok_report = done.files, done.tokenize
            file_ids = sorted({r.file_id for r in reports})
        else:
            file_ids = all_file_ids(con)
        if not file_ids:
            raise WorkloadError("the database holds no ingested files; pass log files to analyze")
        if paths:
            release_cache(con)  # what ingest wrote stays cached: tokenization needs the room
        kinds = request_kinds(con, file_ids)
        redacted = bool(redacted_files(con, file_ids))
        bundle = None
        signature = None
        mode = "whole"
        if kinds - {"hash"}:
            from kvtool.tokenize import load_tokenizer, tokenize_requests, tokenizer_signature
            from kvtool.tokenize.redact import check_tokenizer

            if tokenizer is None and not paths:  # working on the database: its own tokenizer
                tokenizer = last_tokenizer_spec(con)
            bundle = load_tokenizer(tokenizer)
            if redacted:
                check_tokenizer(con, tokenizer_signature(bundle), bundle.spec)
            cluster = clusters.get()
            if cluster is not None:
                from kvtool.tokenize.staged import tokenize_distributed

                again = tokenize_distributed(con, bundle, file_ids, cluster, progress)
            else:
                progress.stage("tokenize", None)
                again = tokenize_requests(
                    con, bundle, file_ids, progress=lambda done, total: progress.update(done, total)
                )
            if tok_report is None:
                tok_report = again
            else:  # the redacted ingest tokenized in memory: its pass, this selection's failures
                tok_report.template_errors = again.template_errors
            signature = again.signature
            mode = again.mode
            mark_used(con, signature, bundle.spec)
        if kinds - {"hash"}:
            release_cache(con)  # the tables tokenization scanned: the tree needs the room
        progress.stage("load", None)
        tree = load_parts(con, file_ids, signature)
        release_cache(con)  # and those the tree was read from
        if tok_report is not None and tok_report.template_errors and not tree.head.n:
            first = tok_report.template_error_examples[0]
            raise WorkloadError(
                f"the chat template raised for all {tok_report.template_errors} requests it was "
                f"given; first: {first.path}:{first.line}: {first.message}"
            )
        traffic = Traffic(tree, file_ids, reports, bundle, signature, mode, tok_report, redacted)
        if not parts:
            traffic.wl  # noqa: B018 (read now, while the connection is open)
        return traffic


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
