"""Volatile fields in the head (timestamps, ids in a system prompt) and the what-if of moving one
to the end of the last message, at the token level (``kvtool.simulate.advisor``).

**A field** is found where two consecutive requests of one tenant and model have heads that
differ inside a timestamp or an id that changed (``kvtool.textscan.volatile_change``): at
their first difference, then again after both spans, up to ``MAX_CHANGES`` times. A field is
keyed by its *chain*: the stable text before it and its kind, after those of the fields
before it. A request carries the field when its head follows the chain (each stable text,
then a span of the kind right there); the first request of a tenant included.

**The move** takes the field's tokens ``[a, b)`` out of the head and puts them right after the
last message (offset ``end``): ``ids[:a] + ids[b:end] + ids[a:b] + ids[end:]``. ``[a, b)`` are
whole tokens: ``a`` is the common prefix of the head's ids and the ids of the text before the
span; ``b`` the number of ids of the text up to the span's end when they are a prefix of the
head's (a token boundary there), else the head's length minus the common suffix of its ids
and the ids of the text after the span; so a token that straddles the span's edge moves with
it. Token ids are moved, not
re-rendered text: a real edit (a user-turn block holding the value) tokenizes its edges anew,
a few tokens per request (docs/providers.md, "Breakpoint advisor"). Offsets after ``a`` up to
``end`` shift by ``-(b - a)``: the last message now ends at ``end - (b - a)`` and the field
follows it, after any breakpoint placed at the end of the last message.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from kvtool.simulate.prompt_layout import PromptLayout
from kvtool.textscan import Span, id_spans, lcp, timestamp_spans, volatile_change

SCAN_CHARS = 256  # chars before and after a field's start scanned for its span
MAX_CHANGES = 8  # volatile changes followed along one pair of heads
FINDERS: dict[str, Callable[[str], list[Span]]] = {"timestamp": timestamp_spans, "id": id_spans}


@dataclass(frozen=True)
class VolatileField:
    """A volatile value in the head: ``kind`` ('timestamp' or 'id'), ``path`` (where it is:
    ``system``, ``system[j]`` for the j-th text block, ``system message k``, ``tools`` or
    ``head``), ``example`` (its text in the first request that has it, as logged: escape it
    before display), ``requests`` (how many carry it) and ``changes`` (consecutive requests
    of a tenant and model where it changed)."""

    kind: str
    path: str
    example: str
    requests: int
    changes: int

    def to_json(self) -> dict:
        return {
            "kind": self.kind,
            "path": self.path,
            "example": self.example,
            "requests": self.requests,
            "changes": self.changes,
        }


Chain = tuple[tuple[str, str], ...]  # (stable text before it, kind) of a field and those before


@dataclass(frozen=True)
class FieldSpans:
    """A field and, per request (layout order), its token span in the head: ``starts[i] <
    stops[i]`` where request i carries it, ``-1`` in both where it does not. ``chain`` says
    how to find it in a head (module docstring)."""

    field: VolatileField
    chain: Chain
    starts: np.ndarray
    stops: np.ndarray


def find_fields(
    layouts: list[PromptLayout], encode: Callable[[str], np.ndarray]
) -> list[FieldSpans]:
    """The head's volatile fields, most changes first, with their token spans; ``encode`` is
    the stored mode's tokenization of a text. Spans of one request never overlap (a span
    that would overlap an earlier one is dropped)."""
    prev: dict[tuple, str] = {}
    changes: dict[Chain, int] = {}
    for lay in layouts:
        group = (lay.tenant, lay.model)
        head, last = lay.head_text, prev.get(group)
        prev[group] = head
        if last is None or last == head or not head:
            continue
        for chain in _chains(last, head):
            changes[chain] = changes.get(chain, 0) + 1
    out = [_spans(layouts, chain, n, encode) for chain, n in changes.items()]
    out = [f for f in out if f.field.requests]
    _drop_overlaps(out)
    return sorted(out, key=lambda f: (-f.field.changes, len(f.chain), f.chain))


def _chains(last: str, head: str) -> list[Chain]:
    """The chain of each volatile change from ``last`` to ``head``, in order: after a change
    the comparison goes on after both spans, until the texts agree or differ otherwise."""
    out: list[Chain] = []
    chain: Chain = ()
    pa = pb = 0
    for _ in range(MAX_CHANGES):
        a, b = last[pa:], head[pb:]
        if a == b:
            break
        change = volatile_change(a, b, lcp(a, b))
        if change is None:
            break
        chain = (*chain, (b[: change.after.start], change.after.kind))
        out.append(chain)
        pa += change.before.end
        pb += change.after.end
    return out


def _find(head: str, chain: Chain) -> Span | None:
    """The span of ``chain``'s last field in ``head`` (None: the head does not follow it)."""
    at = 0
    span = None
    for before, kind in chain:
        if not head.startswith(before, at):
            return None
        at += len(before)
        lo = max(0, at - SCAN_CHARS)
        found = next(
            (s for s in FINDERS[kind](head[lo : at + SCAN_CHARS]) if s.start == at - lo), None
        )
        if found is None:
            return None
        span = Span(kind, at, at + len(found.text), found.text)
        at = span.end
    return span


def _spans(
    layouts: list[PromptLayout], chain: Chain, changes: int, encode: Callable[[str], np.ndarray]
) -> FieldSpans:
    starts = np.full(len(layouts), -1, np.int64)
    stops = np.full(len(layouts), -1, np.int64)
    example = path = None
    for i, lay in enumerate(layouts):
        head = lay.head_text
        span = _find(head, chain) if head else None
        if span is None:
            continue
        head_ids = lay.ids[: lay.head_end]
        a = _common_prefix(head_ids, encode(head[: span.start]))
        upto = encode(head[: span.end])
        if np.array_equal(head_ids[: len(upto)], upto):  # a token boundary at the span's end
            b = len(upto)
        else:
            b = len(head_ids) - _common_suffix(head_ids, encode(head[span.end :]))
        if b <= a:
            continue
        starts[i], stops[i] = a, b
        if example is None:
            example, path = span.text, _path(lay, span.start)
    kind = chain[-1][1]
    field = VolatileField(kind, path or "head", example or "", int((starts >= 0).sum()), changes)
    return FieldSpans(field, chain, starts, stops)


def _drop_overlaps(fields: list[FieldSpans]) -> None:
    """Per request, drop a field's span where it overlaps one that starts earlier."""
    for i in range(len(fields[0].starts) if fields else 0):
        taken = sorted(
            (int(f.starts[i]), int(f.stops[i]), k) for k, f in enumerate(fields) if f.starts[i] >= 0
        )
        stop = -1
        for a, b, k in taken:
            if a < stop:
                fields[k].starts[i] = fields[k].stops[i] = -1
            else:
                stop = b


def _path(lay: PromptLayout, at: int) -> str:
    """Where head character ``at`` is, in the request's own terms."""
    for sys in lay.systems:
        if sys.start < 0 or not sys.start <= at < sys.start + len(sys.text):
            continue
        if len(lay.systems) > 1:
            return f"system message {sys.message}"
        within = at - sys.start
        part = [j for start, j in sys.parts if start <= within]
        return f"system[{part[-1]}]" if part else "system"
    last = lay.systems[-1] if lay.systems else None
    if last is not None and last.start >= 0 and at >= last.start + len(last.text):
        return "tools"
    return "head"


def _common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    m = min(len(a), len(b))
    diff = np.flatnonzero(a[:m] != b[:m])
    return int(diff[0]) if len(diff) else m


def _common_suffix(a: np.ndarray, b: np.ndarray) -> int:
    return _common_prefix(a[::-1], b[::-1])


def move_layout(lay: PromptLayout, a: int, b: int) -> PromptLayout:
    """``lay`` with tokens ``[a, b)`` of its head moved right after its last message (module
    docstring); ``a < 0``: unchanged. Boundaries keep their content-block counts; ``head_text``
    and ``systems`` stay as logged (fields are found once, on the logged heads)."""
    if a < 0:
        return lay
    ids, end = lay.ids, lay.end
    moved = np.concatenate([ids[:a], ids[b:end], ids[a:b], ids[end:]])
    prev = lay.prev_turn_end
    return replace(
        lay,
        ids=moved,
        bounds=tuple(shift_offset(m, a, b, end) for m in lay.bounds),
        head_end=shift_offset(lay.head_end, a, b, end),
        prev_turn_end=None if prev is None else shift_offset(prev, a, b, end),
        end=shift_offset(end, a, b, end),
    )


def shift_spans(spans: FieldSpans, moved: FieldSpans, ends: np.ndarray) -> FieldSpans:
    """``spans`` after ``moved`` went to ``ends`` (per request, where its last message ended
    before the move); fields never overlap, so each span shifts as a whole."""
    starts, stops = spans.starts.copy(), spans.stops.copy()
    for i in np.flatnonzero((starts >= 0) & (moved.starts >= 0)):
        a, b, end = int(moved.starts[i]), int(moved.stops[i]), int(ends[i])
        starts[i] = shift_offset(int(starts[i]), a, b, end)
        stops[i] = shift_offset(int(stops[i]), a, b, end)
    return replace(spans, starts=starts, stops=stops)


def shift_offset(m: int, a: int, b: int, end: int) -> int:
    """Where token offset ``m`` lands when ``[a, b)`` moves to ``end``: unchanged up to ``a``
    and after ``end``, ``-(b - a)`` in between (an offset inside the field lands at ``a``)."""
    if m <= a or m > end:
        return m
    return max(a, m - (b - a))
