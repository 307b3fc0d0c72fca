"""``kvtool check``: the CI gate that fails a prompt change which would break the cached prefix.

Fixtures are prompt logs in any ingest format (one request per line: what the application would
send). Each fixture file is ingested and tokenized into its own in-memory store. Three checks,
each producing ``Finding``s:

- **baseline** (a baseline file or git ref, ``kvtool.check.baseline``): each candidate fixture
  is paired with its baseline fixture (by request id when both files carry ids, else by line
  order) and compared with analyze's break logic as a continuation: the tokens the candidate no
  longer shares with the baseline, in full blocks, are *lost*. A pair fails when more than
  ``max_loss`` tokens (or percent of the baseline's cacheable tokens) are lost, or when the
  shared prefix falls below ``min_stable_tokens``. With a hosted provider
  (``kvtool.check.provider``), lost and shared tokens are those the provider would have cached
  (its minimum, its rounding, its markers) and the loss is priced in dollars; a pair whose
  baseline the provider caches nothing of passes with a note.
- **consistency**: breaks among the fixtures of one file (analyze's predecessor rules): several
  renders of the same logical prompt that do not share their prefix (with a provider: a break
  that costs nothing by its rules is a note).
- **volatile**: timestamps and ids that look volatile by themselves inside the stable head (system
  messages and tool schemas), i.e. before the first per-request message; each (field, kind) once.

Appending to a prompt never loses anything; any change before the end of the baseline prompt does.
Only analyze's public break API is used (``kvtool.analyze.breaks``), and the stores only through
``kvtool.store``.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import orjson

from kvtool.analyze.breaks import Prompts, break_text, compare, detect_breaks, lost_tokens
from kvtool.check.baseline import resolve_baseline
from kvtool.check.provider import ProviderCounter, ProviderGate, ProviderLoss
from kvtool.errors import InputError, OptionError
from kvtool.ingest import ingest_file
from kvtool.ingest.formats.registry import REGISTRY
from kvtool.store import Connection, open_db
from kvtool.store.files import first_reject
from kvtool.store.requests import RequestRow, request_rows
from kvtool.textscan import hazards
from kvtool.tokenize import TokenizerBundle, tokenize_requests
from kvtool.tokenize.template import content_text
from kvtool.traffic import load_workload

CHECKS = ("baseline", "consistency", "volatile")


@dataclass(frozen=True)
class Policy:
    """When a candidate fails: ``max_loss`` tokens (``max_loss_pct`` percent, if set, instead)
    of the baseline's cacheable prefix may be lost; the prefix shared with the baseline must stay
    at least ``min_stable_tokens``; volatile content in the head fails unless it matches one of
    the ``allow`` regexes (``volatile`` False: no volatile scan). Validated when built
    (``OptionError`` naming the parameter)."""

    block_size: int = 16
    max_loss: int = 0
    max_loss_pct: float | None = None
    min_stable_tokens: int = 0
    allow: tuple[str, ...] = ()
    volatile: bool = True

    def __post_init__(self) -> None:
        if self.block_size <= 0 or self.block_size % 16:
            raise OptionError(
                "block_size", f"must be a positive multiple of 16, got {self.block_size}"
            )
        for a in self.allow:
            try:
                re.compile(a)
            except re.error as exc:
                raise OptionError("allow", f"{a!r}: not a regular expression ({exc})") from exc


@dataclass(frozen=True)
class MaxLoss:
    """A parsed loss limit: ``tokens``, or ``percent`` of the cacheable prefix when set."""

    tokens: int
    percent: float | None


def parse_max_loss(text: str) -> MaxLoss:
    """'0', '512' (tokens) or '5%' (percent of the baseline's cacheable tokens)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(%?)\s*", text)
    if m is None:
        raise OptionError("max_loss", f"{text!r}: expected tokens (e.g. 256) or percent (e.g. 5%)")
    if m.group(2):
        return MaxLoss(tokens=0, percent=float(m.group(1)))
    if "." in m.group(1):
        raise OptionError("max_loss", f"{text!r}: tokens must be a whole number")
    return MaxLoss(tokens=int(m.group(1)), percent=None)


@dataclass(kw_only=True)
class Finding:
    """One reason to fail. ``check`` is one of ``CHECKS``; ``cause`` is a break cause (analyze's
    names, ``volatile_*`` for the volatile scan); ``line`` is the fixture's line in ``file``;
    ``other_*`` name the fixture it was compared with (baseline or consistency)."""

    check: str
    cause: str
    file: str
    line: int
    request_id: str
    path: str
    detail: str
    position: int | None = None
    tokens_lost: int = 0
    shared_tokens: int | None = None
    other_request_id: str | None = None
    other_line: int | None = None
    diff: dict = field(default_factory=dict)
    provider: ProviderLoss | None = None

    @property
    def message(self) -> str:
        """One human sentence: what broke, where, and what it costs (with a provider: its
        tokens and dollars, and whether the price is a guess)."""
        where = f"at token {self.position} " if self.position is not None else ""
        if self.check == "volatile":
            return (
                f"volatile {self.cause.removeprefix('volatile_')} in the stable prefix "
                f"({self.path}): {self.detail}; every render gets a new prefix"
            )
        against = (
            "the baseline" if self.check == "baseline" else f"request {self.other_request_id!r}"
        )
        text = f"{self.cause} {where}({self.path}) vs {against}: {self.detail}; "
        p = self.provider
        if p is None:
            return text + f"{self.tokens_lost:,} cached tokens lost"
        text += f"{self.tokens_lost:,} cached tokens lost at {p.provider} ({p.cost})"
        return text + (f"; {p.price_note}" if p.price_note else "")


@dataclass(frozen=True)
class FixtureRef:
    """A candidate fixture: its line in the candidate file and its request id."""

    line: int
    request_id: str


@dataclass
class CheckResult:
    """What the gate found. ``passed`` when there are no findings; ``to_json`` is the
    ``--format json`` contract (docs/ci.md). With a ``provider``, ``provider_losses`` holds
    every pair it counted (failing or not; not those it caches nothing of, which are notes)."""

    candidate: str
    baseline: str | None
    policy: Policy
    fixtures: int = 0
    fixture_refs: list[FixtureRef] = field(default_factory=list)
    compared: int = 0
    paired_by: str | None = None
    unmatched_candidates: list[str] = field(default_factory=list)
    unmatched_baseline: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    provider: ProviderGate | None = None
    provider_losses: list[ProviderLoss] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.findings

    def provider_json(self) -> dict | None:
        """The ``provider`` object of the JSON: the provider, its data's date, the model for
        fixtures without one, and the losses summed over the pairs counted (one call each)."""
        if self.provider is None:
            return None
        losses = self.provider_losses
        per_call = sum(p.usd_per_call for p in losses)
        n = self.provider.calls_per_month
        return {
            "name": self.provider.rules.name,
            "as_of": self.provider.rules.as_of,
            "model": self.provider.model,
            "calls_per_month": n,
            "pairs": len(losses),
            "tokens_lost": sum(p.tokens_lost for p in losses),
            "usd_per_call": per_call,
            "usd_per_month": None if n is None else per_call * n,
            "price_guess": any(p.price_fallback for p in losses),
        }

    def to_json(self) -> dict:
        return {
            "passed": self.passed,
            "candidate": self.candidate,
            "baseline": self.baseline,
            "policy": asdict(self.policy),
            "fixtures": self.fixtures,
            "compared": self.compared,
            "paired_by": self.paired_by,
            "unmatched_candidates": self.unmatched_candidates,
            "unmatched_baseline": self.unmatched_baseline,
            "notes": self.notes,
            "provider": self.provider_json(),
            "findings": [{**asdict(f), "message": f.message} for f in self.findings],
        }


@dataclass
class _Fixtures:
    """One fixture file in its own in-memory store: its requests in file order."""

    label: str
    con: Connection
    file_id: int
    signature: str
    mode: str
    rows: list[RequestRow]
    prompts: Prompts

    @property
    def explicit_ids(self) -> bool:
        """Whether the file carries request ids (at least one not made up by kvtool)."""
        return not all(r.synthetic_id for r in self.rows)


def _load(
    con: Connection, path: Path, label: str, bundle: TokenizerBundle, fmt: str | None
) -> _Fixtures:
    """Ingest and tokenize one fixture file into ``con`` (an empty store); ``InputError`` for a
    rejected line, no requests, a hash trace, or a fixture the chat template raises for."""
    report = ingest_file(con, path, fmt=fmt)
    if report.rejected:
        reject = first_reject(con)
        assert reject is not None
        raise InputError(
            f"{label}:{reject.line}: {reject.reason} "
            f"({report.rejected} of {report.lines} lines rejected)"
        )
    if not report.requests:
        raise InputError(f"{label}: no fixtures (the file holds no requests)")
    if REGISTRY[report.format].hash_trace:
        raise InputError(f"{label}: hash traces carry no prompt text; check needs prompts")
    tok = tokenize_requests(con, bundle)
    if tok.template_errors:  # a gate never passes a fixture it could not render
        first = tok.template_error_examples[0]
        raise InputError(
            f"{label}:{first.line}: the chat template raised: {first.message} "
            f"({tok.template_errors} of {report.requests} fixtures not rendered)"
        )
    rows = request_rows(con, tok.signature)
    return _Fixtures(
        label=label,
        con=con,
        file_id=report.file_id,
        signature=tok.signature,
        mode=tok.mode,
        rows=rows,
        prompts=Prompts(con, bundle, tok.mode),
    )


def _pairs(
    cand: _Fixtures, base: _Fixtures, result: CheckResult
) -> list[tuple[RequestRow, RequestRow]]:
    """(baseline, candidate) fixture pairs; records how they were paired and what is left."""
    by_id = {r.request_id: r for r in base.rows}
    if cand.explicit_ids and base.explicit_ids and any(r.request_id in by_id for r in cand.rows):
        result.paired_by = "request id"
        pairs = [(by_id[r.request_id], r) for r in cand.rows if r.request_id in by_id]
        seen = {r.request_id for r in cand.rows}
        result.unmatched_candidates = [r.request_id for r in cand.rows if r.request_id not in by_id]
        result.unmatched_baseline = [r.request_id for r in base.rows if r.request_id not in seen]
        return pairs
    result.paired_by = "line order"
    n = min(len(cand.rows), len(base.rows))
    result.unmatched_candidates = [r.request_id for r in cand.rows[n:]]
    result.unmatched_baseline = [r.request_id for r in base.rows[n:]]
    return list(zip(base.rows[:n], cand.rows[:n], strict=True))


def _note(fx: _Fixtures, row: RequestRow, text: str) -> str:
    return f"{fx.label}:{row.line} {row.request_id!r}: {text}"


def _compare(
    cand: _Fixtures,
    base: _Fixtures,
    bundle: TokenizerBundle,
    policy: Policy,
    result: CheckResult,
    gate: ProviderGate | None,
) -> None:
    """The baseline check; with a provider ``gate``, counted by its rules (``check.provider``):
    a pair whose baseline it caches nothing of passes with a note."""
    B = policy.block_size
    specials = tuple(bundle.added_tokens)
    pairs = _pairs(cand, base, result)
    counter = None if gate is None else ProviderCounter(gate, base.con, base.prompts)
    if counter is not None:
        counter.load_markers([b_row for b_row, _ in pairs])
    for b_row, c_row in pairs:
        result.compared += 1
        b, c = base.prompts.get(b_row), cand.prompts.get(c_row)
        found = compare(b, c, continues=True, block_size=B, specials=specials)
        shared = b.ids.end if found is None else found.position
        loss = None
        if counter is None:  # kvtool's own cache: full blocks of B tokens
            cacheable, stable = lost_tokens(b.ids.end, 0, len(c.ids.ids), B), shared
            lost = 0 if found is None else found.tokens_lost
            longest, what = b.ids.end, "shared prefix"
        else:
            why = counter.caches_nothing(b_row, b)
            if why is not None:
                result.notes.append(_note(cand, c_row, why))
                continue
            loss = counter.loss(b_row, b, c, b.ids.end, shared)
            result.provider_losses.append(loss)
            cacheable, stable, lost = loss.cacheable_tokens, loss.kept_tokens, loss.tokens_lost
            longest, what = cacheable, f"prefix {counter.rules.name} caches"
        too_much = (
            lost > 0 and 100 * lost > policy.max_loss_pct * cacheable
            if policy.max_loss_pct is not None
            else lost > policy.max_loss
        )
        too_short = policy.min_stable_tokens > 0 and (longest >= policy.min_stable_tokens > stable)
        if not (too_much or too_short):
            continue
        if found is None:  # a prefix that is short by itself cannot be explained by a diff
            continue
        diff = found.difference
        detail = diff.detail
        if too_short:
            detail += f"; {what} {stable:,} < --min-stable-tokens {policy.min_stable_tokens}"
        result.findings.append(
            Finding(
                check="baseline",
                cause=diff.cause,
                file=cand.label,
                line=c_row.line,
                request_id=c_row.request_id,
                path=diff.path,
                detail=detail,
                position=found.position,
                tokens_lost=lost,
                shared_tokens=shared,
                other_request_id=b_row.request_id,
                other_line=b_row.line,
                diff=break_text(bundle, b, c, found),
                provider=loss,
            )
        )


def _consistency(
    fx: _Fixtures,
    bundle: TokenizerBundle,
    policy: Policy,
    result: CheckResult,
    gate: ProviderGate | None,
) -> None:
    """The consistency check: analyze's breaks among the fixtures of one file. With a provider
    ``gate``, a break costing nothing by its rules is a note instead of a finding."""
    B = policy.block_size
    wl = load_workload(fx.con, [fx.file_id], fx.signature)
    lines = {r.req_id: r.line for r in fx.rows}
    rows = {r.req_id: r for r in fx.rows}
    counter = None if gate is None else ProviderCounter(gate, fx.con, fx.prompts)
    if counter is not None:
        counter.load_markers(fx.rows)
    for b in detect_breaks(fx.con, wl, bundle, fx.mode, B, signature=fx.signature):
        loss = None
        if counter is not None:
            p_row, r_row = rows[b.pred_req_id], rows[b.req_id]
            p, r = fx.prompts.get(p_row), fx.prompts.get(r_row)
            why = counter.caches_nothing(p_row, p)
            if why is None:
                # analyze reused p's head only, unless the pair continues (then all of p)
                reusable = p.ids.end if b.continues else p.ids.head_end
                loss = counter.loss(p_row, p, r, reusable, b.position)
                result.provider_losses.append(loss)
                if loss.tokens_lost == 0:
                    why = f"{b.cause} at token {b.position:,} costs nothing at {counter.rules.name}"
            if why is not None:
                result.notes.append(_note(fx, r_row, why))
                continue
        result.findings.append(
            Finding(
                check="consistency",
                cause=b.cause,
                file=fx.label,
                line=lines[b.req_id],
                request_id=b.request_id,
                path=b.path,
                detail=b.detail,
                position=b.position,
                tokens_lost=b.tokens_lost if loss is None else loss.tokens_lost,
                shared_tokens=b.position,
                other_request_id=b.predecessor_id,
                other_line=lines[b.pred_req_id],
                diff=b.diff,
                provider=loss,
            )
        )


def _volatile(fx: _Fixtures, policy: Policy, result: CheckResult) -> None:
    """Volatile-looking spans in each fixture's head; each (field, kind) is reported once."""
    allow = [re.compile(a) for a in policy.allow]
    seen: set[tuple[str, str]] = set()
    for row in fx.rows:
        if row.kind != "chat":
            continue
        req = fx.prompts.req(row)
        fields = [
            (f"messages[{i}].content", content_text(m.get("content")))
            for i, m in enumerate((req.messages or [])[: req.n_system])
        ]
        fields += [(f"tools[{j}]", orjson.dumps(t).decode()) for j, t in enumerate(req.tools or [])]
        for path, text in fields:
            for span in hazards(text):
                if any(a.search(span.text) for a in allow) or (path, span.kind) in seen:
                    continue
                seen.add((path, span.kind))
                around = text[max(0, span.start - 30) : span.end + 30].replace("\n", " ")
                result.findings.append(
                    Finding(
                        check="volatile",
                        cause=f"volatile_{span.kind}",
                        file=fx.label,
                        line=row.line,
                        request_id=row.request_id,
                        path=path,
                        detail=f"{span.text!r} in …{around}…",
                    )
                )


def check(
    candidate: Path,
    bundle: TokenizerBundle,
    *,
    baseline: str | None = None,
    policy: Policy | None = None,
    fmt: str | None = None,
    provider: ProviderGate | None = None,
) -> CheckResult:
    """Run the gate on ``candidate`` (see the module docstring); ``baseline`` is a file,
    ``git:REF`` or ``git:REF:PATH`` (``kvtool.check.baseline``); ``provider``: count losses by a
    hosted provider's rules and prices (``kvtool.check.provider``). Raises ``InputError`` for
    fixtures or a baseline that cannot be read, ``OptionError`` for a bad baseline spec."""
    policy = policy or Policy()
    with open_db(":memory:") as cand_con, open_db(":memory:") as base_con:
        cand = _load(cand_con, candidate, str(candidate), bundle, fmt)
        result = CheckResult(
            candidate=str(candidate),
            baseline=None,
            policy=policy,
            fixtures=len(cand.rows),
            provider=provider,
        )
        result.fixture_refs = [FixtureRef(line=r.line, request_id=r.request_id) for r in cand.rows]
        if baseline is not None:
            with tempfile.TemporaryDirectory(prefix="kvtool-baseline-") as tmp:
                found = resolve_baseline(baseline, candidate, Path(tmp))
                result.baseline = found.label
                if found.path is None:
                    result.notes.append(
                        f"{found.label} does not exist: a new fixture file, nothing to compare"
                    )
                else:
                    base = _load(base_con, found.path, found.label, bundle, fmt)
                    _compare(cand, base, bundle, policy, result, provider)
        _consistency(cand, bundle, policy, result, provider)
        if policy.volatile:
            _volatile(cand, policy, result)
    return result
