"""Volatile spans in prompts: timestamps and ids.

Two renders of a prompt, ``a`` (earlier) and ``b`` (later), share ``a[:i] == b[:i]`` and first
differ at ``i``. ``volatile_change`` says whether that difference lies inside a timestamp or an id
that changed. ``hazards`` is the static scan behind ``kvtool check``: spans that look volatile by
themselves in what should be a stable prefix. (Whether the difference is the same JSON value
written another way is ``kvtool.analyze.json_order``.) It sits below every stage: the redacted
ingest (``kvtool.tokenize.redact``) finds the same spans while the text is still in memory.

Invariants of every span list returned here: spans are non-overlapping, sorted by ``start``,
``text == source[start:end]``, and among overlapping candidates the longest wins (ties go to the
more specific pattern). Everything is heuristic; docs/limitations are in the function docstrings.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Span", "VolatileChange", "hazards", "id_spans", "timestamp_spans", "volatile_change"]


@dataclass(frozen=True)
class Span:
    """``text == source[start:end]``; ``kind`` is ``'timestamp'`` or ``'id'``."""

    kind: str
    start: int
    end: int  # exclusive
    text: str


@dataclass(frozen=True)
class VolatileChange:
    """A first difference inside a volatile span that changed: ``cause`` is
    ``'volatile_timestamp'`` or ``'volatile_id'``; ``before`` is the span in the earlier text,
    ``after`` the one in the later text."""

    cause: str
    before: Span
    after: Span


@dataclass(frozen=True, slots=True)
class _Hit:
    """A candidate span: ``rank`` breaks length ties (lower wins); ``hazard`` marks spans that look
    volatile by themselves (``hazards``)."""

    start: int
    end: int
    rank: int
    hazard: bool


# ---------------------------------------------------------------------------------------------
# Timestamps

_YEAR = r"(?:19|20|21)\d\d"
_MM = r"(?:0[1-9]|1[0-2])"
_DD = r"(?:0[1-9]|[12]\d|3[01])"
_M = r"(?:0?[1-9]|1[0-2])"
_D = r"(?:0?[1-9]|[12]\d|3[01])"
_MON = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
)
_WDAY_WORD = (
    r"(?:mon(?:day)?|tue(?:s(?:day)?)?|wed(?:nesday)?|thu(?:r(?:s(?:day)?)?)?|fri(?:day)?"
    r"|sat(?:urday)?|sun(?:day)?)"
)
_WDAY = _WDAY_WORD + r"\.?"
_ORD = r"(?:st|nd|rd|th)?"
_ZNAME = (
    r"(?-i:UTC|GMT|UT|Z|[ECMP][SD]T|AK[SD]T|HST|CES?T|EES?T|WES?T|BST|IST|JST|KST|HKT|SGT"
    r"|AE[SD]T|ACST|AWST|NZ[SD]T|MSK)"
)
_OFFSET = r"[+-](?:[01]\d|2[0-3])(?::?[0-5]\d)?"
# zone after a clock: attached offset or Z, an RFC 2822 "+0000" after a space, or a zone name
_ZONE = (
    rf"(?:{_OFFSET}| ?[+-]\d{{4}}| ?{_ZNAME}(?:{_OFFSET})?)"
    r"(?: ?\((?-i:[A-Z]{2,5})\))?"
)
_TIME = r"(?:[01]?\d|2[0-3]):[0-5]\d(?::(?:[0-5]\d|60)(?:[.,]\d{1,9})?)?"
_AMPM = r" ?(?-i:[AaPp](?:[Mm]|\.[Mm]\.))(?![A-Za-z])"
_CLOCK = rf"(?:{_TIME}(?:{_AMPM})?|(?:1[0-2]|0?[1-9]){_AMPM})(?:{_ZONE})?"
_AT = r"(?:,?[ \t]+(?:at[ \t]+)?|[ \t]*@[ \t]*)"  # joins a date to its time, on one line
_END = r"(?![0-9A-Za-z])"

# (rank, may take a weekday before it, pattern). Each pattern opens with a lookahead on its
# first character: the regex engine then skips other positions quickly.
_TS_PATTERNS: list[tuple[int, bool, re.Pattern[str]]] = [
    (  # ISO 8601 date or datetime, extended format
        0,
        False,
        re.compile(
            rf"(?=[12])(?<![0-9A-Za-z]){_YEAR}-{_MM}-{_DD}(?P<t>(?:T|{_AT}){_CLOCK})?{_END}", re.I
        ),
    ),
    (  # ISO 8601 basic datetime: 20261101T090312Z
        0,
        False,
        re.compile(
            rf"(?=[12])(?<![0-9A-Za-z]){_YEAR}{_MM}{_DD}(?P<t>T(?:[01]\d|2[0-3])[0-5]\d"
            rf"(?:[0-5]\d)?(?:[.,]\d{{1,9}})?(?:Z|[+-]\d{{4}})?){_END}"
        ),
    ),
    (  # day-month-year, RFC 2822 / HTTP: 01 Nov 2026[ 09:03:12 +0000], 1st of November 2026
        1,
        True,
        re.compile(
            rf"(?=\d)(?<![0-9A-Za-z]){_D}{_ORD}(?:\s+of)?(?:\s+|-){_MON}(?:,?\s+|-){_YEAR}"
            rf"(?P<t>{_AT}{_CLOCK})?{_END}",
            re.I,
        ),
    ),
    (  # month-day-year: November 1, 2026[ at 9:03 AM]
        1,
        True,
        re.compile(
            rf"(?=[JFMASONDjfmasond])(?<![0-9A-Za-z]){_MON}\s+{_D}{_ORD},?\s+{_YEAR}"
            rf"(?P<t>{_AT}{_CLOCK})?{_END}",
            re.I,
        ),
    ),
    (  # asctime / date(1): Sun Nov  1 09:03:12 [UTC ]2026
        1,
        False,
        re.compile(
            rf"(?=[MTWFSmtwfs])(?<![0-9A-Za-z]){_WDAY}\s+{_MON}\s+{_D}\s+"
            rf"(?P<t>{_TIME}(?:\s+{_ZNAME})?)\s+{_YEAR}{_END}",
            re.I,
        ),
    ),
    (  # YYYY/MM/DD, DD/MM/YYYY or MM/DD/YYYY, DD.MM.YYYY, DD-MM-YYYY
        2,
        False,
        re.compile(
            rf"(?=\d)(?<![0-9A-Za-z.,])(?:{_YEAR}/{_M}/{_D}|(?:{_D}/{_M}|{_M}/{_D})/{_YEAR}"
            rf"|{_D}\.{_M}\.{_YEAR}|{_DD}-{_MM}-{_YEAR})(?P<t>{_AT}{_CLOCK})?"
            r"(?![0-9A-Za-z]|[/.]\d)",
            re.I,
        ),
    ),
    (  # bare time of day: 09:03:12, 9:03 AM, 9 PM
        4,
        False,
        re.compile(rf"(?=\d)(?<![0-9A-Za-z:.])(?P<t>{_CLOCK})(?![0-9A-Za-z]|:\d|[.,]\d)", re.I),
    ),
]
# "Sunday, " right before a date
_WDAY_BEFORE = re.compile(rf"(?<![0-9A-Za-z]){_WDAY},?[ \t]+\Z", re.I)
# 13-digit millisecond epochs first so a 10-digit prefix does not shadow them
_EPOCH = re.compile(
    r"(?=[12])(?<![0-9A-Za-z_.$€£+\-])(?:1\d{12}|20\d{11}|1\d{9}|20\d{8})(?:\.\d{1,9})?"
    r"(?![0-9A-Za-z_]|\.\d)"
)
# a 10-digit number after these words on its line is a phone number, not an epoch
_PHONE_WORDS = re.compile(
    r"(?i)\b(?:phones?|tel|telephone|fax|call|mobile|cell|sms|text|whatsapp|contact|hotline)\b"
)
_PHRASE = re.compile(
    r"(?=[TtCcNnIiAaRrDd])(?<![A-Za-z])(?:"
    r"(?:today(?:'s|’s)?\s+(?:date\s+)?is|the\s+date\s+today\s+is|it\s+is\s+(?:currently|now)"
    r"|(?:the\s+)?current\s+(?:date\s+and\s+time|date/time|datetime|date|time|timestamp"
    r"|local\s+time)\s+is|as\s+of\s+(?:today|now))[ \t]*[:,(]?"
    r"|(?:today(?:'s|’s)?\s+date|(?:the\s+)?current\s+(?:date\s+and\s+time|date/time|datetime"
    r"|date|time|timestamp|local\s+time|utc\s+time)|now|right\s+now|date\s+today)"
    r"(?:\s*\([^()\n]{0,24}\))?[ \t]*[:=]"
    r")[ \t]*(?:\n[ \t]*)?",
    re.I,
)
# after a phrase only: dates without a year and bare weekdays ("Today is Sunday, November 1")
_LOOSE = re.compile(
    rf"(?:(?:{_WDAY},?\s+)?(?:{_MON}\s+{_D}{_ORD}|{_D}{_ORD}\s+(?:of\s+)?{_MON})"
    rf"|{_WDAY_WORD})(?:{_AT}{_CLOCK})?{_END}",
    re.I,
)


def _timestamp_hits(text: str, pos: int = 0, endpos: int | None = None) -> list[_Hit]:
    """Timestamp candidates in ``text[pos:endpos]`` (lookbehinds see before ``pos``)."""
    endpos = len(text) if endpos is None else endpos
    anchored = {m.end() for m in _PHRASE.finditer(text, pos, endpos)}
    hits = []
    for rank, weekday, pat in _TS_PATTERNS:
        for m in pat.finditer(text, pos, endpos):
            start = m.start()
            if weekday and (w := _WDAY_BEFORE.search(text, max(0, start - 16), start)):
                start = w.start()
            timed = m.group("t") is not None
            hazard = (rank < 4 and timed) or start in anchored
            hits.append(_Hit(start, m.end(), rank, hazard))
    for m in _EPOCH.finditer(text, pos, endpos):
        line = text.rfind("\n", 0, m.start()) + 1
        if _PHONE_WORDS.search(text, max(line, m.start() - 80), m.start()):
            continue
        hits.append(_Hit(m.start(), m.end(), 3, True))
    for p in anchored:
        m = _LOOSE.match(text, p, endpos)
        if m:
            hits.append(_Hit(m.start(), m.end(), 5, True))
    return hits


# ---------------------------------------------------------------------------------------------
# Ids

_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_RE_UUID = re.compile(rf"(?=[0-9a-fA-F])(?<![0-9A-Za-z]){_UUID}(?![0-9A-Za-z])")
_RE_ULID = re.compile(
    r"(?=[0-7])(?<![0-9A-Za-z])(?:[0-7][0-9A-HJKMNP-TV-Z]{25}|[0-7][0-9a-hjkmnp-tv-z]{25})"
    r"(?![0-9A-Za-z])"
)
_RE_HEX = re.compile(
    r"(?=[0-9a-fA-F])(?<![0-9A-Za-z])(?P<x>0[xX])?(?P<h>[0-9a-f]{8,}|[0-9A-F]{8,})"
    r"(?![0-9A-Za-z])"
)
# word(s), then _ or -, then a token of >= 6 alphanumerics holding a digit (or a UUID), then an
# optional -<digits> counter: req_01HF8K2M9Q, my-workspace-7f3a9c2e-3
_RE_PREFIXED = re.compile(
    r"(?=[A-Za-z])(?<![0-9A-Za-z_\-])[A-Za-z][A-Za-z0-9]*(?:[_-][A-Za-z][A-Za-z0-9]*)*?[_-]"
    rf"(?P<tok>{_UUID}|(?=[A-Za-z]*\d)[A-Za-z0-9]{{6,}})(?:-\d+)?(?![0-9A-Za-z])"
)
# technical names with a short number, not ids: sha256, conv2d, utf16le
_STEM_NUMBER = re.compile(
    r"(?i:u?int|float|bf|fp|base|sha|md|crc|utf|ucs|conv|x|arm|aarch|amd|win|py|python|ipv|http"
    r"|gpt|llama|mp|vp|av|h)\d{1,3}[a-z]{0,2}"
)
_WORD_NUMBER = re.compile(r"([A-Za-z]{1,12})\d{1,2}")
_BINARY = re.compile(r"0[bB][01]+")
_COLOUR_CONTEXT = re.compile(r"[\"'=:(][ \t]*\Z")
_RE_B62 = re.compile(
    r"(?=[A-Za-z0-9])(?<![0-9A-Za-z_\-])[A-Za-z0-9][A-Za-z0-9_\-]{14,}[A-Za-z0-9]"
    r"(?![0-9A-Za-z_\-])"
)
_ID_WORDS = r"id|nonce|seq|counter|request|trace|span|run|turn|attempt"
_RE_COUNTER = re.compile(
    rf"(?=[#IiNnSsCcRrTtAa])(?:(?<![A-Za-z0-9])(?i:{_ID_WORDS})(?![A-Za-z])"
    r"|(?<=[a-z])I[dD](?![a-z]))"
    r"(?P<sep>[\"']?[ \t]*[:=]?[ \t]*#?[ \t]*)(?P<n>\d+)(?![0-9A-Za-z]|[.,]\d)"
    r"|(?<![0-9A-Za-z&#])#(?P<h>\d+)(?![0-9A-Za-z]|[.,]\d)"
)
_PROSE_AFTER = re.compile(r"[ \t]+(?!of\b)[a-z]")


def _letter_digit_switches(s: str) -> int:
    """How often ``s`` switches between letters and digits (separators ignored)."""
    kinds = [c.isdigit() for c in s if c.isalnum()]
    return sum(x != y for x, y in zip(kinds, kinds[1:], strict=False))


def _is_name(tok: str) -> bool:
    """A name with a number, not an id: ``sha256``, ``conv2d``, or one word in one case (not
    only hex letters) with 1-2 digits: ``green4``, ``Turquoise1``, ``float64``."""
    if _STEM_NUMBER.fullmatch(tok):
        return True
    m = _WORD_NUMBER.fullmatch(tok)
    if not m:
        return False
    word = m.group(1)
    one_case = word.islower() or word.isupper() or word.istitle()
    return one_case and not all(c in "abcdefABCDEF" for c in word)


def _is_base62(tok: str) -> bool:
    """Random-looking: >= 16 alphanumerics, letters and digits interleaved (>= 3 switches); with
    ``-``/``_`` inside (base64url), also mixed case and a segment of >= 8 that mixes letters and
    digits itself (so ``Qwen-Coder-7B-Instruct``-like names are not tokens)."""
    alnum = sum(c.isalnum() for c in tok)
    if alnum < 16 or _letter_digit_switches(tok) < 3:
        return False
    if "-" in tok or "_" in tok:
        has_case = any(c.isupper() for c in tok) and any(c.islower() for c in tok)
        return has_case and any(
            len(p) >= 8 and _letter_digit_switches(p) >= 2 for p in re.split(r"[-_]", tok)
        )
    return True


def _id_hits(text: str, pos: int = 0, endpos: int | None = None) -> list[_Hit]:
    """Id candidates in ``text[pos:endpos]`` (lookbehinds see before ``pos``)."""
    endpos = len(text) if endpos is None else endpos
    hits = [_Hit(m.start(), m.end(), 0, True) for m in _RE_UUID.finditer(text, pos, endpos)]
    for m in _RE_ULID.finditer(text, pos, endpos):
        s = m.group()
        if any(c.isdigit() for c in s) and any(c.isalpha() for c in s):
            hits.append(_Hit(m.start(), m.end(), 1, True))
    for m in _RE_PREFIXED.finditer(text, pos, endpos):
        tok = m.group("tok")
        if _is_name(tok):
            continue
        hits.append(_Hit(m.start(), m.end(), 2, sum(c.isalnum() for c in tok) >= 12))
    for m in _RE_HEX.finditer(text, pos, endpos):
        h = m.group("h")
        if _BINARY.fullmatch(m.group()):
            continue  # 0b0101 literal
        if len(h) < 16:
            if h.isdigit() or not any(c.isdigit() for c in h):
                continue
            if len(h) == 8 and not m.group("x") and text[m.start() - 1 : m.start()] == "#":
                continue  # #rrggbbaa colour
        hits.append(_Hit(m.start(), m.end(), 3, len(h) >= 16))
    for m in _RE_B62.finditer(text, pos, endpos):
        if _is_base62(m.group()):
            hits.append(_Hit(m.start(), m.end(), 4, False))
    for m in _RE_COUNTER.finditer(text, pos, endpos):
        if m.group("n") is not None:
            if not m.group("sep"):
                continue  # id3, run1: a name, not a counter
            if not m.group("sep").strip() and _PROSE_AFTER.match(text, m.end(), endpos):
                continue  # "run 3 tests", "turn 90 degrees"
            hits.append(_Hit(m.start("n"), m.end("n"), 5, True))
        else:  # bare #1234: issue and order references are stable text, so no hazard
            n = len(m.group("h"))
            if n in (3, 6, 8) and _COLOUR_CONTEXT.search(text, max(0, m.start() - 4), m.start()):
                continue  # "#000000", color: #333333
            hits.append(_Hit(m.start("h"), m.end("h"), 5, False))
    return hits


# ---------------------------------------------------------------------------------------------
# Selection and the public span API


def _select(hits: list[_Hit]) -> list[_Hit]:
    """Non-overlapping subset: longest first, then lowest rank, then leftmost; sorted by start."""
    chosen_starts: list[int] = []
    chosen: list[_Hit] = []
    for h in sorted(hits, key=lambda h: (h.start - h.end, h.rank, h.start)):
        k = bisect_right(chosen_starts, h.start)
        if k and chosen[k - 1].end > h.start:
            continue
        if k < len(chosen) and chosen[k].start < h.end:
            continue
        chosen_starts.insert(k, h.start)
        chosen.insert(k, h)
    return chosen


def _spans(kind: str, text: str, hits: list[_Hit]) -> list[Span]:
    return [Span(kind, h.start, h.end, text[h.start : h.end]) for h in hits]


def timestamp_spans(text: str) -> list[Span]:
    """Date/time-like substrings: ISO 8601 (extended and basic), RFC 2822/HTTP dates, English
    dates with an optional ``at <time>``, asctime, numeric ``/``, ``.`` and ``-`` dates, bare
    times, Unix epochs in seconds or milliseconds (2001..2036), and after a "Today is" / "Current
    date:" / "Now:" phrase also weekdays and dates without a year. The phrase is never part of a
    span. Years alone, versions and durations without a colon never match."""
    return _spans("timestamp", text, _select(_timestamp_hits(text)))


def id_spans(text: str) -> list[Span]:
    """Id-like substrings: UUIDs, ULIDs, hex (>= 16 chars, or 8-15 with a digit and a letter,
    optionally ``0x``), prefixed ids (``req_01HF8K2M9Q``, ``ws-7f3a9c2e-3`` whole), random-looking
    base62/base64url tokens of >= 16 chars, and the digits of counters after an id keyword
    (``Request #1042``, ``seq=17``) or a bare ``#1042``."""
    return _spans("id", text, _select(_id_hits(text)))


def hazards(text: str) -> list[Span]:
    """Spans that look volatile by themselves in a prefix that should be stable: datetimes with a
    time of day, epochs, any date or time right after a "today is" / "current date" / "now:"
    phrase, UUIDs, ULIDs, hex >= 16, prefixed ids whose token has >= 12 chars, and counters after
    an id keyword. Plain dates, bare times, short ids, bare ``#123`` and base62 tokens are not
    hazards. An id overlapping a timestamp hazard is dropped. Sorted by start."""
    ts = [h for h in _select(_timestamp_hits(text)) if h.hazard]
    out = _spans("timestamp", text, ts)
    starts = [h.start for h in ts]
    for h in _select(_id_hits(text)):
        if not h.hazard:
            continue
        k = bisect_right(starts, h.start)
        if (k and ts[k - 1].end > h.start) or (k < len(ts) and ts[k].start < h.end):
            continue
        out.append(Span("id", h.start, h.end, text[h.start : h.end]))
    return sorted(out, key=lambda s: s.start)


# ---------------------------------------------------------------------------------------------
# volatile_change

_WINDOWS = (256, 8192)  # chars scanned each side of i: small first, wider if a span nears an edge
_EDGE = 64

_Finder = Callable[[str, int, int], list[_Hit]]


def _near_i(hits: list[_Hit], i: int) -> tuple[_Hit | None, _Hit | None]:
    """(span with start <= i < end, span with end == i) among selected ``hits``."""
    strict = touch = None
    for h in hits:
        if h.start <= i < h.end:
            strict = h
        elif h.end == i:
            touch = h
    return strict, touch


def _snap(text: str, lo: int, hi: int) -> tuple[int, int]:
    """Widen ``[lo, hi)`` to whitespace (at most ``_WINDOWS[-1]`` more) so no token is cut."""
    n, far = len(text), _WINDOWS[-1]
    if lo <= 0:
        lo = 0
    else:
        cut = max(text.rfind(c, max(0, lo - far), lo) for c in " \n\t")
        lo = cut + 1 if cut >= 0 else max(0, lo - far)
    if hi >= n:
        hi = n
    else:
        ends = [e for c in " \n\t" if (e := text.find(c, hi, hi + far)) >= 0]
        hi = min(ends) if ends else min(n, hi + far)
    return lo, hi


def _spans_at(text: str, i: int, finder: _Finder) -> tuple[_Hit | None, _Hit | None]:
    """``_near_i`` over a window around ``i``, widened when a span comes close to its edge."""
    for w in _WINDOWS:
        lo, hi = _snap(text, i - w, i + w)
        strict, touch = _near_i(_select(finder(text, lo, hi)), i)
        cut = any(
            h is not None
            and ((lo and h.start - lo < _EDGE) or (hi < len(text) and hi - h.end < _EDGE))
            for h in (strict, touch)
        )
        if not cut:
            break
    return strict, touch


def _changed(a: str, b: str, i: int, finder: _Finder) -> tuple[_Hit, _Hit] | None:
    sa, ta = _spans_at(a, i, finder)
    sb, tb = _spans_at(b, i, finder)
    if sa and (sb or tb):
        return sa, sb or tb  # type: ignore[return-value]
    if ta and sb:
        return ta, sb
    return None


def volatile_change(a: str, b: str, i: int) -> VolatileChange | None:
    """Whether the first difference ``i`` of ``a`` and ``b`` (``a[:i] == b[:i]``) lies in a
    timestamp (checked first) or an id that changed.

    A kind matches when both texts have a span of it with ``start <= i <= end`` and at least one
    of the two has ``start <= i < end`` (the changed character is inside it): text inserted right
    after a stable id or date is not a change of it. Returns the ``VolatileChange`` (cause
    ``'volatile_timestamp'`` or ``'volatile_id'``, the span in ``a`` and in ``b``) or None. Spans
    are those of ``timestamp_spans`` / ``id_spans``, computed on a window around ``i`` (256 chars
    each side, 8192 when a span comes near the window's edge). Raises ValueError when ``i`` is
    outside both texts."""
    if not 0 <= i <= min(len(a), len(b)):
        raise ValueError(f"i={i} is outside texts of length {len(a)} and {len(b)}")
    for finder, kind in ((_timestamp_hits, "timestamp"), (_id_hits, "id")):
        found = _changed(a, b, i, finder)
        if found:
            x, y = found
            return VolatileChange(
                cause=f"volatile_{kind}",
                before=Span(kind, x.start, x.end, a[x.start : x.end]),
                after=Span(kind, y.start, y.end, b[y.start : y.end]),
            )
    return None
