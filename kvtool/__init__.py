"""kvtool: make the KV cache visible and plannable from real LLM request logs.

Library entry points (the CLI is a thin wrapper over these):
``kvtool.analyze(paths, db=..., ...)`` (an ``AnalyzeResult``: typed figures, ``to_json()`` as
``--json`` prints it, ``requests_frame()`` one row per request), ``kvtool.ingest(paths, db=...)``
and ``kvtool.check(candidate, baseline=..., ...)``; a real vLLM through ``kvtool.replay``
(``replay``/``validate`` return a ``ReplayValidation``).
"""

from __future__ import annotations

import sys
import types
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING

from kvtool.ingest import DEFAULT_MAX_LINE_BYTES, FileReport
from kvtool.progress import NullProgress, Progress
from kvtool.store import DEFAULT_DB, DbArg, open_db

if TYPE_CHECKING:
    from kvtool.analyze import AnalyzeOptions, AnalyzeResult, analyze
    from kvtool.check import CheckResult, Policy, ProviderGate
    from kvtool.traffic.engine import Executor

__version__ = "0.1.0"
__all__ = ["AnalyzeOptions", "AnalyzeResult", "analyze", "check", "ingest"]
_LAZY = {"AnalyzeOptions", "AnalyzeResult", "analyze"}  # from kvtool.analyze, on first use
_FUNCTIONS = {"analyze", "check"}  # names of a function here and of a subpackage


class _Package(types.ModuleType):
    """This package: ``kvtool.analyze`` and ``kvtool.check`` stay the functions. Loading a
    subpackage binds it as an attribute of its parent; here that binding is skipped (the
    subpackage is in ``sys.modules`` as ever), so the order of imports does not matter."""

    def __setattr__(self, name: str, value: object) -> None:
        if name in _FUNCTIONS and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> object:
    """``AnalyzeOptions``, ``AnalyzeResult`` and ``analyze``, imported when first asked for
    (``kvtool.analyze`` imports pandas: commands that do not analyze start without it)."""
    if name not in _LAZY:
        raise AttributeError(f"module 'kvtool' has no attribute {name!r}")
    value = getattr(import_module("kvtool.analyze"), name)
    globals()[name] = value
    return value


def ingest(
    paths: list[str | Path],
    *,
    db: DbArg = DEFAULT_DB,
    fmt: str | None = None,
    hash_block_size: int = 512,
    progress: Progress | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    redact: bool = False,
    tokenizer: str | None = None,
    engine: Executor | str | None = None,
) -> list[FileReport]:
    """Ingest log files (``-``: stdin) into the database at ``db``; see
    ``kvtool.ingest.ingest_file``. Progress has no total when an input is not a regular file.
    ``redact``: store no prompt text; the logs are tokenized now with ``tokenizer`` (default:
    the one the database was redacted with, else deepseek-v4) and only hashes, token counts and
    fingerprints are kept (docs/redaction.md). A database is redacted or not, never both:
    ``InputError`` when this ingest would mix them, or use another tokenizer than the database's.
    ``tokenizer`` is only used with ``redact``. ``engine``: 'ray' (or an ``Executor``) parses
    the files on a Ray cluster, one task per file (docs/scale.md); the database ends up the
    same."""
    from kvtool.store.tokenizations import mark_used
    from kvtool.tokenize.redact import ingest_logs
    from kvtool.traffic.engine import as_executor

    executor = as_executor(engine)
    progress = progress or NullProgress()
    try:
        with open_db(db) as con:
            if executor.distributed:
                from kvtool.traffic.ray_cluster import ingest_on_ray

                return ingest_on_ray(
                    con,
                    executor,
                    paths,
                    fmt=fmt,
                    hash_block_size=hash_block_size,
                    max_line_bytes=max_line_bytes,
                    redact=redact,
                    progress=progress,
                )
            done = ingest_logs(
                con,
                paths,
                redact=redact,
                tokenizer=tokenizer or None,
                fmt=fmt,
                hash_block_size=hash_block_size,
                max_line_bytes=max_line_bytes,
                progress=progress,
            )
            if done.tokenize is not None:
                assert done.signature is not None and done.spec is not None
                mark_used(con, done.signature, done.spec)
            return done.files
    finally:
        progress.close()


def check(
    candidate: str | Path,
    *,
    baseline: str | None = None,
    tokenizer: str | None = None,
    policy: Policy | None = None,
    fmt: str | None = None,
    provider: ProviderGate | None = None,
) -> CheckResult:
    """The CI gate on prompt fixtures; see ``kvtool.check`` and docs/ci.md. ``provider``:
    count and price losses by a hosted provider's rules (``kvtool.check.ProviderGate``)."""
    from kvtool.check import check as run_check
    from kvtool.tokenize import load_tokenizer

    return run_check(
        Path(candidate),
        load_tokenizer(tokenizer),
        baseline=baseline,
        policy=policy,
        fmt=fmt,
        provider=provider,
    )
