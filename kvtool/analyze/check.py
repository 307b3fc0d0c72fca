"""``kvtool check``: the CI gate that fails a prompt change which would break the cached prefix.

Fixtures are prompt logs in any ingest format (one request per line: what the application would
send). Three checks, each producing findings:

- **baseline** (``--baseline FILE`` or ``git:REF``): each candidate fixture is paired with its
  baseline fixture (by request id, else by line order) and diffed with analyze's break logic as a
  continuation: the tokens the candidate no longer shares with the baseline, in full blocks, are
  *lost*. A pair fails when more than ``max_loss`` tokens (or percent of the baseline's cacheable
  tokens) are lost, or when the shared prefix falls below ``min_stable_tokens``.
- **consistency**: breaks among the fixtures of one file (analyze's predecessor rules): several
  renders of the same logical prompt that do not share their prefix.
- **volatile**: timestamps and ids that look volatile by themselves inside the stable head (system
  messages and tool schemas), i.e. before the first per-request message.

Appending to a prompt never loses anything; any change before the end of the baseline prompt does.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import duckdb
import orjson

from kvtool.analyze.breaks import (
    Bodies,
    RequestRow,
    break_text,
    detect_breaks,
    lost_tokens,
    pair_break,
)
from kvtool.analyze.volatile import hazards
from kvtool.analyze.workload import load_workload
from kvtool.ingest import UnusableInput, ingest_file
from kvtool.store import connect
from kvtool.tokenize import TokenizerBundle, tokenize_requests
from kvtool.tokenize.chains import PromptIds, PromptTokens
from kvtool.tokenize.template import content_text


@dataclass(frozen=True)
class Policy:
    """When a candidate fails: ``max_loss`` tokens (``max_loss_pct`` percent, if set, instead)
    of the baseline's cacheable prefix may be lost; the prefix shared with the baseline must stay
    at least ``min_stable_tokens``; volatile content in the head fails unless it matches one of
    the ``allow`` regexes."""

    block_size: int = 16
    max_loss: int = 0
    max_loss_pct: float | None = None
    min_stable_tokens: int = 0
    allow: tuple[str, ...] = ()
    volatile: bool = True


def parse_max_loss(text: str) -> tuple[int, float | None]:
    """'0', '512' (tokens) or '5%' (percent) -> (tokens, percent or None)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(%?)\s*", text)
    if m is None:
        raise UnusableInput(f"--max-loss {text!r}: expected tokens (e.g. 256) or percent (e.g. 5%)")
    if m.group(2):
        return 0, float(m.group(1))
    if "." in m.group(1):
        raise UnusableInput(f"--max-loss {text!r}: tokens must be a whole number")
    return int(m.group(1)), None


@dataclass
class Finding:
    """One reason to fail. ``check`` is 'baseline', 'consistency' or 'volatile'; ``cause`` is a
    break cause (analyze's names); ``line`` is the fixture's line in ``file``."""

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

    @property
    def message(self) -> str:
        """One human sentence: what broke, where, and what it costs."""
        where = f"at token {self.position} " if self.position is not None else ""
        if self.check == "volatile":
            return (
                f"volatile {self.cause.removeprefix('volatile_')} in the stable prefix "
                f"({self.path}): {self.detail}; every render gets a new prefix"
            )
        against = (
            "the baseline" if self.check == "baseline" else f"request {self.other_request_id!r}"
        )
        return (
            f"{self.cause} {where}({self.path}) vs {against}: {self.detail}; "
            f"{self.tokens_lost:,} cached tokens lost"
        )


@dataclass
class CheckResult:
    candidate: str
    baseline: str | None
    policy: Policy
    fixtures: int = 0
    fixture_ids: list[tuple[int, str]] = field(default_factory=list)  # (line, request id)
    compared: int = 0
    paired_by: str | None = None
    unmatched_candidates: list[str] = field(default_factory=list)
    unmatched_baseline: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.findings

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
            "findings": [{**asdict(f), "message": f.message} for f in self.findings],
        }


@dataclass
class _Fixtures:
    """One fixture file loaded into its own in-memory store, in file order."""

    path: str
    con: duckdb.DuckDBPyConnection
    rows: list[RequestRow]
    lines: dict[int, int]  # req_id -> line
    explicit_ids: bool
    mode: str
    bodies: Bodies


def _load(path: Path, label: str, bundle: TokenizerBundle, fmt: str | None) -> _Fixtures:
    con = connect(":memory:")
    report = ingest_file(con, path, fmt=fmt)
    if report.rejected:
        reason, line = con.execute(
            "SELECT reason, line FROM rejects ORDER BY line LIMIT 1"
        ).fetchall()[0]
        raise UnusableInput(
            f"{label}:{line}: {reason} ({report.rejected} of {report.lines} lines rejected)"
        )
    if not report.requests:
        raise UnusableInput(f"{label}: no fixtures (the file holds no requests)")
    if report.format == "mooncake":
        raise UnusableInput(f"{label}: hash traces carry no prompt text; check needs prompts")
    tok = tokenize_requests(con, bundle)
    table = con.execute(
        """SELECT r.req_id, r.request_id, r.session_id, r.tenant, r.model, r.kind,
                  r.message_keys, r.tools_key, r.prompt_key, c.n_tokens, r.line
           FROM requests r JOIN chains c USING (req_id) ORDER BY r.line"""
    ).fetchall()
    rows = [
        RequestRow(t[0], t[1], t[2], t[3], t[4], t[5], tuple(t[6] or ()), t[7], t[8], t[9])
        for t in table
    ]
    digest = con.execute("SELECT sha256 FROM files").fetchall()[0][0][:12]
    explicit = not all(r.request_id.startswith(f"{digest}:") for r in rows)
    return _Fixtures(
        label, con, rows, {t[0]: t[10] for t in table}, explicit, tok.mode, Bodies(con)
    )


def resolve_baseline(spec: str, candidate: Path) -> tuple[Path | None, str]:
    """A baseline path for ``spec``: a file, ``git:REF`` (the candidate's own path at REF, in the
    repository that holds the candidate) or ``git:REF:PATH`` (PATH from the root of the
    repository that holds the current directory). Returns (None, label) when the file does not
    exist at REF (a new fixture file has no baseline); ``UnusableInput`` for other failures."""
    if not spec.startswith("git:"):
        path = Path(spec)
        if not path.is_file():
            raise UnusableInput(f"--baseline {spec}: no such file")
        return path, spec
    ref, _, rel = spec[4:].partition(":")
    if not ref:
        raise UnusableInput(f"--baseline {spec!r}: expected git:REF or git:REF:PATH")
    top = Path(
        _git(
            Path.cwd() if rel else candidate.resolve().parent, "rev-parse", "--show-toplevel"
        ).strip()
    )
    rel = rel or candidate.resolve().relative_to(top.resolve()).as_posix()
    _git(top, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}")
    label = f"{ref}:{rel}"
    try:
        data = subprocess.run(
            ["git", "-C", str(top), "show", label], capture_output=True, check=True
        ).stdout
    except subprocess.CalledProcessError:
        return None, label
    out = Path(tempfile.mkdtemp(prefix="kvtool-baseline-")) / Path(rel).name
    out.write_bytes(data)
    return out, label


def _git(where: Path, *args: str) -> str:
    """Run git in ``where``; its failure becomes one ``UnusableInput`` line."""
    try:
        return subprocess.run(
            ["git", "-C", str(where), *args], capture_output=True, check=True, text=True
        ).stdout
    except FileNotFoundError as exc:
        raise UnusableInput("--baseline git:...: git is not installed") from exc
    except subprocess.CalledProcessError as exc:
        lines = (exc.stderr or "").strip().splitlines()
        why = lines[-1] if lines else f"{args[-1]!r} is not a commit"
        raise UnusableInput(f"--baseline: git {' '.join(args[:1])} in {where}: {why}") from exc


def _ids(fx: _Fixtures, row: RequestRow, tokens: PromptTokens) -> PromptIds:
    return tokens.get(row.chain_row, fx.bodies.need([row]))


def _pairs(
    cand: _Fixtures, base: _Fixtures, result: CheckResult
) -> list[tuple[RequestRow, RequestRow]]:
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


def _compare(
    cand: _Fixtures, base: _Fixtures, bundle: TokenizerBundle, policy: Policy, result: CheckResult
) -> None:
    B = policy.block_size
    specials = tuple(bundle.added_tokens)
    tok_c, tok_b = PromptTokens(bundle, cand.mode), PromptTokens(bundle, base.mode)
    for b_row, c_row in _pairs(cand, base, result):
        result.compared += 1
        b_ids, c_ids = _ids(base, b_row, tok_b), _ids(cand, c_row, tok_c)
        found = pair_break(
            base.bodies.req(b_row), cand.bodies.req(c_row), b_ids, c_ids, True, B, specials
        )
        shared = b_ids.end if found is None else found[1]
        cacheable = lost_tokens(b_ids.end, 0, len(c_ids.ids), B)
        lost = 0 if found is None else found[2]
        too_much = (
            lost > 0 and 100 * lost > policy.max_loss_pct * cacheable
            if policy.max_loss_pct is not None
            else lost > policy.max_loss
        )
        too_short = policy.min_stable_tokens > 0 and (
            b_ids.end >= policy.min_stable_tokens > shared
        )
        if not (too_much or too_short):
            continue
        if found is None:  # a prefix that is short by itself cannot be explained by a diff
            continue
        diff, position, _ = found
        text = break_text(bundle, diff, b_row.model, c_row.model, b_ids, c_ids, position)
        detail = diff.detail
        if too_short:
            detail += f"; shared prefix {shared:,} < --min-stable-tokens {policy.min_stable_tokens}"
        result.findings.append(
            Finding(
                "baseline",
                diff.cause,
                cand.path,
                cand.lines[c_row.req_id],
                c_row.request_id,
                diff.path,
                detail,
                position,
                lost,
                shared,
                b_row.request_id,
                base.lines[b_row.req_id],
                text,
            )
        )


def _consistency(
    fx: _Fixtures, bundle: TokenizerBundle, policy: Policy, result: CheckResult
) -> None:
    (signature,) = fx.con.execute("SELECT DISTINCT tokenizer FROM chains").fetchall()[0]
    wl = load_workload(fx.con, [0], signature)
    for b in detect_breaks(fx.con, wl, bundle, fx.mode, policy.block_size):
        result.findings.append(
            Finding(
                "consistency",
                b.cause,
                fx.path,
                fx.lines[b.req],
                b.request_id,
                b.path,
                b.detail,
                b.position,
                b.tokens_lost,
                b.position,
                b.predecessor_id,
                fx.lines[b.pred],
                b.diff,
            )
        )


def _volatile(fx: _Fixtures, policy: Policy, result: CheckResult) -> None:
    """Volatile-looking spans in each fixture's head; each (field, kind) is reported once."""
    allow = [re.compile(a) for a in policy.allow]
    seen: set[tuple[str, str]] = set()
    for row in fx.rows:
        if row.kind != "chat":
            continue
        req = fx.bodies.req(row)
        fields = [
            (f"messages[{i}].content", content_text(m.get("content")))
            for i, m in enumerate(req.messages[: req.n_system])
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
                        "volatile",
                        f"volatile_{span.kind}",
                        fx.path,
                        fx.lines[row.req_id],
                        row.request_id,
                        path,
                        f"{span.text!r} in …{around}…",
                    )
                )


def check(
    candidate: Path,
    bundle: TokenizerBundle,
    *,
    baseline: str | None = None,
    policy: Policy | None = None,
    fmt: str | None = None,
) -> CheckResult:
    """Run the gate on ``candidate`` (see the module docstring). Raises ``UnusableInput`` for
    fixtures or a baseline that cannot be read."""
    policy = policy or Policy()
    if policy.block_size <= 0 or policy.block_size % 16:
        raise UnusableInput(
            f"--block-size must be a positive multiple of 16, got {policy.block_size}"
        )
    for a in policy.allow:
        try:
            re.compile(a)
        except re.error as exc:
            raise UnusableInput(f"--allow {a!r}: not a regular expression ({exc})") from exc
    cand = _load(candidate, str(candidate), bundle, fmt)
    result = CheckResult(str(candidate), None, policy, fixtures=len(cand.rows))
    result.fixture_ids = [(cand.lines[r.req_id], r.request_id) for r in cand.rows]
    if baseline is not None:
        path, label = resolve_baseline(baseline, candidate)
        result.baseline = label
        if path is None:
            result.notes.append(f"{label} does not exist: a new fixture file, nothing to compare")
        else:
            base = _load(path, label, bundle, fmt)
            _compare(cand, base, bundle, policy, result)
    _consistency(cand, bundle, policy, result)
    if policy.volatile:
        _volatile(cand, policy, result)
    return result
