"""The rows of a provider's shortfall waterfall (``provider.shortfall`` of ``simulate --json``,
docs/simulate.md), shared by the terminal table and the HTML chart.

Rows in waterfall order: the ``ideal`` level, the ``breaks`` step and one sub-row per cause,
the ``infinite cache`` level, the provider's steps (``STEPS``), the ``predicted`` level, then,
when the logs carry cached tokens, the ``unexplained`` step and the ``observed`` level. A step
row's ``after`` is the level it leads to (``before − tokens``), so every row spans
[min(before, after), max(before, after)] on one token axis; a cause row spans its share of the
breaks step.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WaterfallRow:
    """One bar: ``key`` is the ``shortfall`` key it shows (``cause`` for a cause); ``kind`` is
    ``level`` (a total, from 0), ``step`` (a loss: ``tokens`` and ``dollars`` taken away;
    negative: a gain) or ``cause`` (part of the breaks step). ``label`` may come from input
    (a cause name): escape it where it is rendered."""

    key: str
    label: str
    kind: str
    tokens: int
    dollars: float
    before: int
    after: int


STEPS = ("placement", "generated_output", "routing", "minimum_length", "ttl_expiry")
LABELS = {
    "ideal": "ideal",
    "breaks": "prompt breaks",
    "infinite_cache": "infinite cache",
    "placement": "placement & increments",
    "generated_output": "cached output",
    "routing": "routing",
    "minimum_length": "minimum length",
    "ttl_expiry": "TTL expiry",
    "predicted": "predicted",
    "unexplained": "unexplained",
    "observed": "observed (logged)",
}


def waterfall_rows(sf: dict) -> list[WaterfallRow]:
    """The rows of a ``shortfall`` JSON object (module docstring)."""

    def row(key: str, kind: str, before: int, label: str = "") -> WaterfallRow:
        a = sf["breaks"]["by_cause"][label] if kind == "cause" else sf[key]
        after = a["tokens"] if kind == "level" else before - a["tokens"]
        label = label or LABELS[key]
        return WaterfallRow(key, label, kind, a["tokens"], a["dollars"], before, after)

    rows = [row("ideal", "level", 0)]
    if sf["breaks"] is not None:
        rows.append(row("breaks", "step", rows[-1].after))
        at = rows[-1].before
        for cause in sf["breaks"]["by_cause"]:
            rows.append(row("cause", "cause", at, cause))
            at = rows[-1].after
    rows.append(row("infinite_cache", "level", 0))
    for key in (k for k in STEPS if k in sf):  # a run stored by an older kvtool lacks some
        rows.append(row(key, "step", rows[-1].after))
    rows.append(row("predicted", "level", 0))
    if sf["unexplained"] is not None and sf["observed"] is not None:
        rows.append(row("unexplained", "step", rows[-1].after))
        rows.append(row("observed", "level", 0))
    return rows
