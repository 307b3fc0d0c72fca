"""The breakpoint advisor for providers with explicit cache breakpoints (Anthropic): where the
breakpoints should go and which volatile field to move out of the head, each change priced by
re-simulating the whole trace with it applied (``predict_anthropic``), never estimated.

The changes are applied one after the other, and each one's saving is the bill before it
minus the bill after it:

1. **Move volatile fields** (``kvtool.simulate.field_move``): the timestamps and ids of the
   head that change between consecutive requests of a tenant and model, most changes first
   (at most ``MAX_FIELDS``): the field's tokens move right after the last message (after its
   breakpoint, into the user turn), the logged breakpoints shift with the text, the block
   chains are hashed again and the trace is simulated again. A move that raises the hit rate
   and lowers the bill is kept and later changes start from it; one that does not is tried
   again together with the next field (two volatile values in one head pay only once both
   are gone; moved alone, one only trims the cache writes), so one advice may move several
   fields.
2. **Place the breakpoints**: each policy below gives every chat request at most 4
   breakpoints (positions past the prompt or repeated are dropped; over 4, the earliest go),
   all with the TTL of the request's first logged breakpoint (the provider's default when it
   logs none). The best policy that lowers the bill below the logged placement is the advice;
   every policy's saving is reported with it.
3. **Move the remaining fields** under the advised placement, as in 1: a field whose move
   saves nothing under the logged placement (one that caches little or nothing, such as no
   marker at all) can save once the breakpoints are placed.

   - ``last message``: the end of the last message;
   - ``head + last message``: also the end of the head (system prompt and tools);
   - ``head + previous turn + last message``: also where the previous request of the
     conversation ended (the message before the last assistant turn), for turns that add more
     than the lookback window, and with a tokenizer's own chat template, where the lookback
     finds only marked messages (``kvtool.simulate.prompt_layout``);
   - ``stable system + head + last message`` and ``stable system + head + previous turn +
     last message``: also the end of the head's stable part, before its first volatile field
     (offered only when a request still has one).

**Monthly saving** = saving over the trace / the trace's duration in days × 30, the duration
being last minus first known timestamp; None (with a note) when that is unknown or zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import partial

import numpy as np

from kvtool.errors import InputError, OptionError
from kvtool.simulate.anthropic import predict_anthropic
from kvtool.simulate.field_move import (
    FieldSpans,
    VolatileField,
    find_fields,
    move_layout,
    shift_offset,
    shift_spans,
)
from kvtool.simulate.placement import (
    Chains,
    Placement,
    chained_workload,
    layout_chains,
    logged_placement,
    placement_breakpoints,
)
from kvtool.simulate.prompt_layout import PromptLayout, encode_text, prompt_layouts
from kvtool.simulate.providers import ProviderPrediction, ProviderSpec
from kvtool.store import Connection
from kvtool.tokenize.breakpoints import Breakpoints
from kvtool.traffic.load import Traffic
from kvtool.traffic.workload import Workload

MAX_FIELDS = 3  # volatile fields tried, most changes first
DAYS_PER_MONTH = 30
SECONDS_PER_DAY = 86_400.0
SAVING_EPS = 1e-9  # dollars: a smaller difference is no saving


PLACEMENT_PREFIX = "put the breakpoints at: "


@dataclass(frozen=True)
class Spot:
    """A breakpoint position: ``where`` in words, ``tokens`` its offset in the example request
    (None where that request has no such position)."""

    where: str
    tokens: int | None


@dataclass(frozen=True)
class PolicySaving:
    """One placement policy re-simulated: its saving over the placement before it (dollars per
    trace) and its predicted hit rate."""

    policy: str
    saving_per_trace: float
    hit_rate: float


@dataclass(frozen=True)
class Advice:
    """One change and what it saves, re-simulated. ``kind`` is 'placement' or 'move_field';
    ``breakpoints`` the positions of a placement (offsets in ``example_request``, a logged
    request id),
    ``fields`` the moved fields (a move only). Bills are dollars over the trace before and after
    the change (earlier advice applied); ``saving_per_month`` is None when the trace has no
    duration (``note`` says so). ``policies``: every placement policy tried (placement only)."""

    kind: str
    description: str
    breakpoints: tuple[Spot, ...]
    example_request: str | None
    fields: tuple[VolatileField, ...]
    bill_before: float
    bill_after: float
    saving_per_trace: float
    saving_per_month: float | None
    hit_rate_before: float
    hit_rate_after: float
    policies: tuple[PolicySaving, ...] = ()
    note: str | None = None

    def to_json(self) -> dict:
        return {
            "kind": self.kind,
            "description": self.description,
            "breakpoints": [{"where": s.where, "tokens": s.tokens} for s in self.breakpoints],
            "example_request": self.example_request,
            "fields": [f.to_json() for f in self.fields],
            "bill_before": self.bill_before,
            "bill_after": self.bill_after,
            "saving_per_trace": self.saving_per_trace,
            "saving_per_month": self.saving_per_month,
            "hit_rate_before": self.hit_rate_before,
            "hit_rate_after": self.hit_rate_after,
            "policies": [
                {"policy": p.policy, "saving_per_trace": p.saving_per_trace, "hit_rate": p.hit_rate}
                for p in self.policies
            ],
            "note": self.note,
        }


POLICIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("last message", ("last",)),
    ("head + last message", ("head", "last")),
    ("head + previous turn + last message", ("head", "prev", "last")),
    ("stable system + head + last message", ("stable", "head", "last")),
    ("stable system + head + previous turn + last message", ("stable", "head", "prev", "last")),
)
SPOT_WORDS = {
    "stable": "end of the stable system prompt (before its first volatile field)",
    "head": "end of the head (system prompt and tools)",
    "prev": "end of the previous turn",
    "last": "end of the last message",
}


@dataclass(frozen=True)
class State:
    """The trace with the advice so far applied: its workload, layouts and their chains, the
    logged placement (shifted with any moved field) and its prediction."""

    wl: Workload
    layouts: list[PromptLayout]
    chains: Chains
    placement: Placement
    pred: ProviderPrediction


@dataclass(frozen=True)
class Advisor:
    """What every re-simulation needs: the provider, the tokenizer signature the chains are
    keyed by and the trace's duration in days."""

    spec: ProviderSpec
    signature: str
    days: float | None

    def predict(self, wl: Workload, marks: Breakpoints) -> ProviderPrediction:
        return predict_anthropic(wl, self.spec, marks)

    def state(self, wl: Workload, layouts: list[PromptLayout], placement: Placement) -> State:
        """``layouts`` (``wl``'s requests, in order) chained and simulated under ``placement``."""
        chains = layout_chains(layouts, self.signature)
        wl = chained_workload(wl, chains)
        pred = self.predict(wl, placement_breakpoints(layouts, chains, placement))
        return State(wl, layouts, chains, placement, pred)


def advise_breakpoints(
    con: Connection, traffic: Traffic, spec: ProviderSpec, marks: Breakpoints
) -> tuple[Advice, ...]:
    """The advice for ``traffic`` under ``spec``, its logged markers being ``marks``
    (``kvtool.traffic.breakpoints.load_breakpoints``); module docstring. The logged placement
    is simulated again on the advisor's boundaries (``kvtool.simulate.placement``), so every
    saving compares like with like; with kvtool's default template that is the simulation of
    ``marks`` itself. ``InputError`` for a hash trace or a redacted database (no prompt
    text), ``OptionError`` for a provider without explicit breakpoints."""
    if not spec.rules.explicit_breakpoints:
        raise OptionError("provider", f"{spec.rules.name} has no explicit breakpoints to advise on")
    wl = traffic.wl
    if wl.kind == "hash" or traffic.bundle is None or traffic.signature is None:
        raise InputError("the breakpoint advisor needs prompt text: a hash trace has none")
    if traffic.redacted:
        raise InputError("the breakpoint advisor needs prompt text: a redacted database has none")
    layouts = prompt_layouts(con, traffic.bundle, traffic.mode, traffic.signature, wl.req_ids)
    for i, lay in enumerate(layouts):
        if len(lay.ids) != int(wl.n_tokens[i]):
            raise InputError(
                f"request {lay.req_id}: its rebuilt prompt has {len(lay.ids)} tokens, the store "
                f"{int(wl.n_tokens[i])}"
            )
    advisor = Advisor(spec, traffic.signature, _days(wl.ts))
    logged = advisor.state(wl, layouts, logged_placement(marks))
    fields = find_fields(layouts, partial(encode_text, traffic.bundle, traffic.mode))
    return tuple(advise(advisor, logged, fields))


def advise(advisor: Advisor, state: State, fields: list[FieldSpans]) -> list[Advice]:
    """The changes that lower ``state``'s bill, in the order they apply (module docstring);
    ``fields`` are the volatile fields of ``state``'s heads, most changes first. Fields whose
    move saves nothing under the logged placement (one that caches little or nothing) are
    tried again after the placement advice."""
    out, state, left = _moves(advisor, state, fields)
    stable = _stable_ends(state.layouts, left)
    choice = _placement_advice(advisor, state, stable)
    if choice is not None:
        out.append(choice.advice)
        placed = advisor.state(state.wl, state.layouts, choice.placement)
        out.extend(_moves(advisor, placed, left)[0])
    elif left:  # neither alone saves (a volatile field before every breakpoint): both together
        moved_all = _moved(advisor, state, left, [])[0]
        target = _placement_advice(advisor, moved_all, [None] * len(moved_all.layouts))
        if target is not None:
            name = target.advice.description.removeprefix(PLACEMENT_PREFIX)
            forced = _placement_advice(advisor, state, stable, only=name)
            assert forced is not None
            placed = advisor.state(state.wl, state.layouts, forced.placement)
            moves = _moves(advisor, placed, left)[0]
            if moves:
                note = "needed by the field moves below; alone it may cost more than it saves"
                out.append(replace(forced.advice, note=forced.advice.note or note))
                out.extend(moves)
    return out


def _moves(
    advisor: Advisor, state: State, fields: list[FieldSpans]
) -> tuple[list[Advice], State, list[FieldSpans]]:
    """Move advice for ``fields`` from ``state``: the advices, the state after them and the
    fields not moved (in that state's offsets)."""
    out: list[Advice] = []
    pending = list(fields[:MAX_FIELDS])  # token spans always in ``state``'s offsets
    kept = list(fields[MAX_FIELDS:])
    group: list[FieldSpans] = []
    while pending:
        group.append(pending.pop(0))
        moved, rest = _moved(advisor, state, group, pending + kept)
        hit_rate = moved.pred.totals.predicted_hit_rate
        if hit_rate > state.pred.totals.predicted_hit_rate and _saving(state, moved.pred) > 0:
            out.append(_move_advice(state, moved, group, advisor.days))
            state, group = moved, []
            pending, kept = rest[: len(pending)], rest[len(pending) :]
    return out, state, group + kept


@dataclass(frozen=True)
class PlacementChoice:
    """The placement advice and the placement it simulated."""

    advice: Advice
    placement: Placement


def _saving(before: State, after: ProviderPrediction) -> float:
    return before.pred.totals.bill_predicted - after.totals.bill_predicted


def _moved(
    advisor: Advisor, state: State, group: list[FieldSpans], others: list[FieldSpans]
) -> tuple[State, list[FieldSpans]]:
    """``state`` with the fields of ``group`` moved after the last message, one after the
    other, in every request carrying them; and ``others`` in the moved token offsets."""
    layouts = list(state.layouts)
    offsets = list(state.placement.offsets)
    todo = list(group)
    while todo:
        spans = todo.pop(0)
        ends = np.array([lay.end for lay in layouts], np.int64)
        for i in np.flatnonzero(spans.starts >= 0):
            a, b, end = int(spans.starts[i]), int(spans.stops[i]), int(ends[i])
            layouts[i] = move_layout(layouts[i], a, b)
            offsets[i] = tuple(shift_offset(m, a, b, end) for m in offsets[i])
        todo = [shift_spans(f, spans, ends) for f in todo]
        others = [shift_spans(f, spans, ends) for f in others]
    placement = Placement(tuple(offsets), state.placement.blocks, state.placement.ttls)
    return advisor.state(state.wl, layouts, placement), others


def _move_advice(
    before: State, after: State, group: list[FieldSpans], days: float | None
) -> Advice:
    saving = _saving(before, after.pred)
    monthly, note = _monthly(saving, days)
    fields = tuple(f.field for f in group)
    named = " and ".join(f"the {f.kind} in {f.path} (e.g. {f.example!r})" for f in fields)
    return Advice(
        kind="move_field",
        description=f"move {named} out of the head, after the last breakpoint (into the user turn)",
        breakpoints=(),
        example_request=None,
        fields=fields,
        bill_before=before.pred.totals.bill_predicted,
        bill_after=after.pred.totals.bill_predicted,
        saving_per_trace=saving,
        saving_per_month=monthly,
        hit_rate_before=before.pred.totals.predicted_hit_rate,
        hit_rate_after=after.pred.totals.predicted_hit_rate,
        note=note,
    )


def _placement_advice(
    advisor: Advisor, state: State, stable: list[int | None], only: str | None = None
) -> PlacementChoice | None:
    """The best policy's advice when it saves anything, else None; ``stable``: per request,
    where its head's first volatile field starts (None: none). ``only``: that policy's advice,
    whatever it saves (a placement the field moves after it need)."""
    limit = advisor.spec.rules.max_breakpoints or len(SPOT_WORDS)
    tried: list[tuple[float, int, str, tuple[str, ...], ProviderPrediction, Placement]] = []
    for rank, (name, spots) in enumerate(POLICIES):
        if "stable" in spots and all(s is None for s in stable):
            continue
        if only is not None and name != only:
            continue
        placement = policy_placement(state.layouts, spots, stable, state.placement, limit)
        pred = advisor.predict(
            state.wl, placement_breakpoints(state.layouts, state.chains, placement)
        )
        tried.append((_saving(state, pred), rank, name, spots, pred, placement))
    policies = tuple(PolicySaving(n, s, p.totals.predicted_hit_rate) for s, _, n, _, p, _ in tried)
    top = max(t[0] for t in tried)
    saving, _, name, spots, pred, chosen = min(  # the best; among equals, the fewest breakpoints
        (t for t in tried if t[0] >= top - SAVING_EPS), key=lambda t: t[1]
    )
    if saving <= SAVING_EPS and only is None:
        return None
    example = _example(state.layouts, spots, stable)
    lay = state.layouts[example]
    monthly, note = _monthly(saving, advisor.days)
    advice = Advice(
        kind="placement",
        description=f"{PLACEMENT_PREFIX}{name}",
        breakpoints=tuple(Spot(SPOT_WORDS[s], _spot(lay, s, stable[example])) for s in spots),
        example_request=lay.request_id,
        fields=(),
        bill_before=state.pred.totals.bill_predicted,
        bill_after=pred.totals.bill_predicted,
        saving_per_trace=saving,
        saving_per_month=monthly,
        hit_rate_before=state.pred.totals.predicted_hit_rate,
        hit_rate_after=pred.totals.predicted_hit_rate,
        policies=policies,
        note=note,
    )
    return PlacementChoice(advice, chosen)


def policy_placement(
    layouts: Sequence[PromptLayout],
    spots: tuple[str, ...],
    stable: Sequence[int | None],
    logged: Placement,
    limit: int,
) -> Placement:
    """Every chat request's breakpoints under a policy (module docstring): at most ``limit``,
    the latest kept, all with the TTL of the request's first logged breakpoint. A breakpoint
    at the stable part of the head counts the content blocks of the boundaries before it."""
    offsets, blocks, ttls = [], [], []
    for lay, st, logged_ttls in zip(layouts, stable, logged.ttls, strict=True):
        found: dict[int, int] = {}
        for s in spots if lay.chat else ():
            m = _spot(lay, s, st)
            if m is not None and 0 < m <= len(lay.ids):
                found.setdefault(m, lay.prev_turn_blocks if s == "prev" else lay.blocks_at(m))
        marks = sorted(found)[-limit:]
        offsets.append(tuple(marks))
        blocks.append(tuple(found[m] for m in marks))
        ttls.append((logged_ttls[0] if logged_ttls else "",) * len(marks))
    return Placement(tuple(offsets), tuple(blocks), tuple(ttls))


def _spot(lay: PromptLayout, spot: str, stable: int | None) -> int | None:
    if spot == "stable":
        return stable
    if spot == "head":
        return lay.head_end
    if spot == "prev":
        return lay.prev_turn_end
    return lay.end


def _stable_ends(layouts: list[PromptLayout], fields: list[FieldSpans]) -> list[int | None]:
    """Per request, where the first of ``fields`` starts in its head (None: none is there)."""
    out: list[int | None] = [None] * len(layouts)
    for spans in fields:
        for i in np.flatnonzero(spans.starts >= 0):
            a = int(spans.starts[i])
            out[i] = a if out[i] is None else min(out[i], a)
    return out


def _example(layouts: list[PromptLayout], spots: tuple[str, ...], stable: list[int | None]) -> int:
    """The last request that has the most of the policy's positions."""
    have = [
        sum(_spot(lay, s, st) is not None for s in spots)
        for lay, st in zip(layouts, stable, strict=True)
    ]
    top = max(have)
    return max(i for i, h in enumerate(have) if h == top)


def _days(ts: np.ndarray) -> float | None:
    known = ts[~np.isnan(ts)]
    if len(known) < 2:
        return None
    span = float(known.max() - known.min())
    return span / SECONDS_PER_DAY if span > 0 else None


def _monthly(saving: float, days: float | None) -> tuple[float | None, str | None]:
    if days is None:
        return None, "no monthly figure: the trace has no duration (timestamps missing or equal)"
    return saving / days * DAYS_PER_MONTH, None
