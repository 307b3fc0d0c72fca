"""SARIF 2.1.0 rendering of a ``kvtool check`` result, for code-scanning annotations.

Invariants: one ``reportingDescriptor`` (rule) per break cause found, ids in sorted order; one
result per finding, ``ruleId`` = its cause, ``ruleIndex`` its rule's position, level ``error``
(every finding fails the gate; with ``--provider`` its properties add ``provider``,
``usdPerCall``, ``usdPerMonth`` when known and ``priceGuess``); the gate's notes (among them a
pair below the provider's minimum) are ``note``-level tool execution notifications, not results.
Artifact URIs are relative to the working directory when the fixture lies under it (code scanning
resolves them against the repository root), with ``/`` separators and percent-encoding. Output is
JSON, so control characters in fixture text come out escaped (``\\u001b``), never raw.
"""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path, PurePath
from urllib.parse import quote

import orjson

from kvtool.check.gate import CheckResult, Finding

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA = (
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
)


def _kvtool_version() -> str | None:
    try:
        return version("kvtool")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return None


def artifact_uri(path: str) -> str:
    """``path`` as a relative URI reference when it lies under the working directory, else as an
    absolute ``file:`` URI; never a bare OS path with spaces or backslashes."""
    p = Path(path)
    if p.is_absolute():
        try:
            p = p.relative_to(Path.cwd())
        except ValueError:
            return p.as_uri()
    return quote(PurePath(os.path.normpath(p)).as_posix())


def _rule(cause: str) -> dict:
    what = (
        f"volatile {cause.removeprefix('volatile_')} in the stable prompt prefix"
        if cause.startswith("volatile_")
        else f"prompt change breaks the cached prefix: {cause}"
    )
    return {
        "id": cause,
        "name": "".join(part.title() for part in cause.split("_")),
        "shortDescription": {"text": what},
        "defaultConfiguration": {"level": "error"},
    }


def _result(f: Finding, rule_index: int) -> dict:
    text = f.message
    if f.diff:
        text += f"\n-{f.diff.get('removed', '')!r}\n+{f.diff.get('added', '')!r}"
    props: dict = {"check": f.check, "requestId": f.request_id, "path": f.path}
    if f.position is not None:
        props["position"] = f.position
    if f.check != "volatile":
        props["tokensLost"] = f.tokens_lost
    if f.provider is not None:
        props["provider"] = f.provider.provider
        props["usdPerCall"] = f.provider.usd_per_call
        if f.provider.usd_per_month is not None:
            props["usdPerMonth"] = f.provider.usd_per_month
        props["priceGuess"] = f.provider.price_fallback
    return {
        "ruleId": f.cause,
        "ruleIndex": rule_index,
        "level": "error",
        "message": {"text": text},
        "locations": [
            {
                "physicalLocation": {
                    "artifactLocation": {"uri": artifact_uri(f.file)},
                    "region": {"startLine": max(1, f.line)},
                }
            }
        ],
        "properties": props,
    }


def sarif_log(result: CheckResult) -> dict:
    """The SARIF log object (one run) of ``result``."""
    causes = sorted({f.cause for f in result.findings})
    index = {c: i for i, c in enumerate(causes)}
    notes = list(result.notes)
    if result.unmatched_baseline:
        notes.append(
            f"{len(result.unmatched_baseline)} baseline fixture(s) have no candidate: "
            + ", ".join(result.unmatched_baseline[:5])
        )
    return {
        "$schema": SARIF_SCHEMA,
        "version": SARIF_VERSION,
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "kvtool",
                        **({"version": v} if (v := _kvtool_version()) else {}),
                        "rules": [_rule(c) for c in causes],
                    }
                },
                "invocations": [
                    {
                        "executionSuccessful": True,
                        "exitCode": 0 if result.passed else 1,
                        "toolExecutionNotifications": [
                            {"level": "note", "message": {"text": n}} for n in notes
                        ],
                    }
                ],
                "results": [_result(f, index[f.cause]) for f in result.findings],
            }
        ],
    }


def sarif_json(result: CheckResult) -> str:
    """``sarif_log(result)`` as indented JSON text with a final newline."""
    return orjson.dumps(sarif_log(result), option=orjson.OPT_INDENT_2).decode() + "\n"
