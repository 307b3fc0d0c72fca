"""What ``analyze`` is asked (``AnalyzeOptions``) and what it answers (``WorkloadSummary``,
``AnalyzeResult``).

Invariants: ``to_json()`` is the ``--json`` contract of docs/analyze.md, key for key and in the
same order; the per-request arrays (``RequestFigures``) are the ones the figures were summed
from, so ``requests_frame()``'s counted rows (all of them without a warm-up) sum to the totals
(``cached_tokens``, ``within_session_tokens``, ``prompt_tokens``, ``output_tokens``). An
``AnalyzeResult`` is also a read-only mapping: its JSON view, ``result["ideal_hit_rate"]`` is
``result.to_json()["ideal_hit_rate"]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from kvtool.analyze.breaks import BreakSummary
from kvtool.analyze.prefix import Prefix
from kvtool.errors import OptionError
from kvtool.ingest import DEFAULT_MAX_LINE_BYTES, FORMATS, check_max_line_bytes
from kvtool.jsonview import JsonView
from kvtool.store.files import FileRow
from kvtool.store.requests import UnusablePrompts
from kvtool.tokenize import TokenizeReport
from kvtool.traffic import PRICE_INPUT, Window, parse_warmup

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class AnalyzeOptions:
    """The options of one analysis, validated when built (``OptionError`` naming the parameter).

    How the logs are read: ``tokenizer`` (spec; None: the default, or without paths the one the
    database was tokenized with), ``fmt`` (one of ``FORMATS``; None: detected),
    ``hash_block_size`` (tokens per hash id of hash traces), ``max_line_bytes`` (longer input
    lines are rejected). What is computed: ``block_size`` (a
    positive multiple of 16; None: 16 for text logs, a hash trace's own block size), ``model``
    (KV sizing: a built-in name or a config.json path; None: the logs' most common model),
    ``top`` prefixes listed, breaks priced at ``price_input`` $ per million input tokens with
    ``examples`` per cause, and ``charts`` (the report's distributions). ``warmup`` (a fraction
    of the requests such as 0.5 or ``'0.5'``, or a duration such as ``'30m'``; None: none): the
    cache sees those requests, the figures do not count them (``kvtool.traffic.parse_warmup``).
    ``output_cache``: the blocks of a request's output count as cached for later requests that
    re-render it, as vLLM keeps them (``kvtool.traffic.output_blocks``; text logs only); False:
    prompt blocks only."""

    tokenizer: str | None = None
    fmt: str | None = None
    hash_block_size: int = 512
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    block_size: int | None = None
    model: str | None = None
    top: int = 10
    price_input: float = PRICE_INPUT
    examples: int = 3
    charts: bool = False
    warmup: str | float | None = None
    output_cache: bool = True

    def __post_init__(self) -> None:
        if self.block_size is not None and (self.block_size <= 0 or self.block_size % 16):
            raise OptionError(
                "block_size", f"must be a positive multiple of 16, got {self.block_size}"
            )
        if self.fmt is not None and self.fmt not in FORMATS:
            raise OptionError("fmt", f"{self.fmt!r} is not one of {', '.join(FORMATS)}")
        if self.hash_block_size <= 0:
            raise OptionError("hash_block_size", f"must be positive, got {self.hash_block_size}")
        check_max_line_bytes(self.max_line_bytes)
        for name in ("top", "examples"):
            if getattr(self, name) < 0:
                raise OptionError(name, f"must be >= 0, got {getattr(self, name)}")
        if not (math.isfinite(self.price_input) and self.price_input >= 0):
            raise OptionError("price_input", f"must be finite and >= 0, got {self.price_input}")
        if self.warmup is not None:
            parse_warmup(self.warmup)


@dataclass(frozen=True)
class RequestFigures:
    """Per request, in processing order (the workload's), at the analyzed block size.

    ``session`` is the logged session id or None; ``session_code`` the analysis's session
    (logged ids 0, 1, ...; inferred sessions -1, -2, ...). ``cached_tokens`` are ideal-cache
    hits; ``within_session_tokens`` the part of them last used by the same session. ``ts`` is
    seconds (NaN: unknown); ``observed_*`` are the logged usage (NaN: not logged). Every request
    is listed; the figures count rows ``first_counted..`` (after the warm-up; 0 without one)."""

    req_id: np.ndarray
    ts: np.ndarray
    session: list[str | None]
    session_code: np.ndarray
    n_tokens: np.ndarray
    cached_tokens: np.ndarray
    within_session_tokens: np.ndarray
    output_tokens: np.ndarray
    observed_prompt_tokens: np.ndarray
    observed_cached_tokens: np.ndarray
    first_counted: int = 0

    def frame(self) -> pd.DataFrame:
        """One row per request, in processing order; ``counted`` is False for the warm-up."""
        import pandas as pd

        return pd.DataFrame(
            {
                "req_id": self.req_id,
                "ts": self.ts,
                "session": pd.array(self.session, dtype=object),
                "session_code": self.session_code,
                "session_inferred": self.session_code < 0,
                "n_tokens": self.n_tokens,
                "cached_tokens": self.cached_tokens,
                "within_session_tokens": self.within_session_tokens,
                "cross_session_tokens": self.cached_tokens - self.within_session_tokens,
                "output_tokens": self.output_tokens,
                "observed_prompt_tokens": self.observed_prompt_tokens,
                "observed_cached_tokens": self.observed_cached_tokens,
                "counted": np.arange(len(self.req_id)) >= self.first_counted,
            }
        )


@dataclass(frozen=True)
class OutputCaching:
    """The ideal with and without output blocks, over the counted requests at the summary's
    block size. ``enabled``: the semantics of ``ideal_hit_rate`` and every hit figure (the
    option); ``applies``: the log can show outputs re-rendered (a text log with output token
    counts; never a hash trace). ``cached_tokens_added``: the cached tokens output blocks add
    (with − without, whatever ``enabled``); ``output_block_tokens``: tokens of the output blocks
    the counted requests write (full blocks only)."""

    enabled: bool
    applies: bool
    ideal_hit_rate_with_output: float | None
    ideal_hit_rate_prompt_only: float | None
    cached_tokens_added: int
    output_block_tokens: int

    def to_json(self) -> dict:
        return {
            "enabled": self.enabled,
            "applies": self.applies,
            "ideal_hit_rate_with_output": self.ideal_hit_rate_with_output,
            "ideal_hit_rate_prompt_only": self.ideal_hit_rate_prompt_only,
            "cached_tokens_added": self.cached_tokens_added,
            "output_block_tokens": self.output_block_tokens,
        }


@dataclass(kw_only=True, eq=False)
class WorkloadSummary:
    """The figures of one workload at ``block_size`` (``summarize``; no I/O). Rates are None
    where their denominator is 0; ``working_set_gb`` and ``kv_bytes_per_token`` are None for an
    unknown model; ``charts`` (the report's distributions, docs/report.md) is None unless asked
    for. ``prefixes`` are the most valuable shared prefixes, best first; ``per_request`` the
    arrays every total is a sum of. ``window``: the requests counted after a warm-up (None: all);
    the request, session, token and hit figures count only those, while the cache, the working
    set, the top prefixes and the charts cover every request. ``output_caching``: the ideal
    with and without output blocks; the hit figures follow its ``enabled``."""

    requests: int
    sessions: int
    sessions_inferred: int
    prompt_tokens: int
    output_tokens: int
    block_size: int
    cached_tokens: int
    ideal_hit_rate: float | None
    ideal_hit_rate_by_block_size: dict[str, float | None]
    output_caching: OutputCaching
    within_session_tokens: int
    cross_session_tokens: int
    reuse_within: dict[str, float | None]
    working_set_tokens: int
    kv_bytes_per_token: int | None
    working_set_gb: float | None
    observed_requests: int
    observed_hit_rate: float | None
    predicted_hit_rate_on_observed: float | None
    charts: dict | None = field(default=None, repr=False)
    prefixes: list[Prefix] = field(default_factory=list, repr=False)
    per_request: RequestFigures = field(repr=False)
    window: Window | None = field(default=None, repr=False)

    _JSON_FIGURES = (
        "requests",
        "sessions",
        "sessions_inferred",
        "prompt_tokens",
        "output_tokens",
        "block_size",
        "cached_tokens",
        "ideal_hit_rate",
        "ideal_hit_rate_by_block_size",
        "within_session_tokens",
        "cross_session_tokens",
        "reuse_within",
        "working_set_tokens",
        "kv_bytes_per_token",
        "working_set_gb",
        "observed_requests",
        "observed_hit_rate",
        "predicted_hit_rate_on_observed",
    )

    def to_json(self) -> dict:
        """The workload figures of the ``--json`` object (and ``charts`` when computed)."""
        out = {k: getattr(self, k) for k in self._JSON_FIGURES}
        out["output_caching"] = self.output_caching.to_json()
        out["warmup"] = None if self.window is None else self.window.to_json()
        if self.charts is not None:
            out["charts"] = self.charts
        return out

    def requests_frame(self) -> pd.DataFrame:
        """A pandas DataFrame, one row per request in processing order (``RequestFigures``):
        req_id, ts, session, session_code, session_inferred, n_tokens, cached_tokens,
        within_session_tokens, cross_session_tokens, output_tokens, observed_prompt_tokens,
        observed_cached_tokens, counted (False for the warm-up)."""
        return self.per_request.frame()

    def figures(self) -> dict[str, Any]:
        """The fields by name (shallow), to build a subclass from this summary."""
        return {f.name: getattr(self, f.name) for f in fields(WorkloadSummary)}


@dataclass(frozen=True)
class TopPrefix:
    """A listed shared prefix (``prefix``) with its text when the logs have text: ``preview``
    (head … tail, whitespace collapsed) and ``ends_with`` (its tail); None for hash traces."""

    prefix: Prefix
    preview: str | None
    ends_with: str | None

    def to_json(self) -> dict:
        p = self.prefix
        return {
            "tokens": p.tokens,
            "requests": p.requests,
            "sessions": p.sessions,
            "tokens_saved": p.tokens_saved,
            "preview": self.preview,
            "ends_with": self.ends_with,
        }


@dataclass(kw_only=True, eq=False)
class AnalyzeResult(WorkloadSummary, JsonView):
    """What ``analyze`` returns: the workload figures plus what the database adds: the files
    (``files``, ``rejected_lines``; ``warnings``: one line per file this run ingested whose
    records were mostly rejected, ``FileReport.warning``), the ``model`` the KV size is for, the
    ``tokenizer`` signature (None for hash traces), ``trace_kind`` ('tokens' or 'hash') and
    ``hash_identity`` (what names a hash trace's block: 'path'; None for text), ``top_prefixes``
    with their text, the tokenize pass (``tokenization``; None when nothing was tokenized, e.g. hash
    traces), the prefix breaks (``breaks``; None without text) and the requests left out because
    their logged prompt is truncated or incomplete (``unusable_prompts``).

    ``to_json()`` is the ``--json`` object. As a ``Mapping`` the result is that JSON view,
    read-only: ``result["breaks"]`` is ``to_json()["breaks"]`` (the per-cause object), not the
    ``breaks`` attribute. Two results are equal when their JSON views are."""

    rejected_lines: int
    warnings: list[str]
    model: str | None
    tokenizer: str | None
    trace_kind: str
    hash_identity: str | None
    top_prefixes: list[TopPrefix]
    files: list[FileRow]
    tokenization: TokenizeReport | None
    breaks: BreakSummary | None
    unusable_prompts: UnusablePrompts | None = None

    def to_json(self) -> dict:
        out = super().to_json()
        out["rejected_lines"] = self.rejected_lines
        out["warnings"] = list(self.warnings)
        out["model"] = self.model
        out["tokenizer"] = self.tokenizer
        out["trace_kind"] = self.trace_kind
        out["hash_identity"] = self.hash_identity
        out["top_prefixes"] = [p.to_json() for p in self.top_prefixes]
        out["files"] = [
            {
                "path": f.path,
                "format": f.format,
                "lines": f.lines,
                "records": f.lines if f.records is None else f.records,
                "requests": f.requests,
                "rejected": f.rejected,
                "skipped": f.skipped,
            }
            for f in self.files
        ]
        u = self.unusable_prompts
        out["unusable_prompts"] = None if u is None else u.to_json()
        if self.tokenization is not None:
            out["tokenization"] = self.tokenization.to_json()
        b = self.breaks
        out["breaks"] = None if b is None else b.causes_json()
        out["break_summary"] = None if b is None else b.totals_json()
        return out
