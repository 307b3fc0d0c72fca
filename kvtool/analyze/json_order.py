"""The same JSON value written another way: reordered keys, other whitespace, another spelling
of a string or number.

Two renders of a prompt, ``a`` (earlier) and ``b`` (later), share ``a[:i] == b[:i]`` and first
differ at ``i``. ``json_reordered`` says whether that difference lies inside a JSON object or array
that starts at the same offset in both texts and decodes to the same value in both (types count:
``1``, ``1.0`` and ``true`` differ). The work per call is bounded (``_MAX_STARTS`` starts within
``_MAX_BACK`` chars, ``_MAX_DECODED`` chars decoded), so it is safe on long prompts; unterminated
JSON never matches.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

__all__ = ["Reordered", "json_reordered"]


@dataclass(frozen=True)
class Reordered:
    """The JSON value that starts at ``start`` in both texts; ``path`` is the JSON path,
    relative to it, of the innermost container at the first difference (``""``, ``.key``,
    ``["odd key"]``, ``[3]`` segments)."""

    start: int
    path: str


_MAX_STARTS = 200
_MAX_BACK = 100_000
_MAX_DECODED = 4_000_000  # chars decoded in all before giving up
_DECODER = json.JSONDecoder()
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"?|[{}\[\],:]')
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _same(x: object, y: object) -> bool:
    """JSON equality that ignores key order but, unlike ``==``, not types: 1 vs 1.0 vs true."""
    if type(x) is not type(y):
        return False
    if isinstance(x, dict):
        return x.keys() == y.keys() and all(_same(v, y[k]) for k, v in x.items())  # type: ignore[union-attr]
    if isinstance(x, list):
        return len(x) == len(y) and all(map(_same, x, y))  # type: ignore[arg-type]
    return x == y


def _path_at(text: str, s: int, i: int) -> str:
    """JSON path (relative to the value starting at ``s``) of the innermost object or array that
    contains offset ``i``: ``""``, ``.key``, ``["odd key"]``, ``[3]`` segments."""
    frames: list[list] = []  # [is_object, key or index, expecting a key]
    segs: list[str] = []
    for m in _JSON_TOKEN.finditer(text, s, i):
        t = m.group()
        if t in "{[":
            seg = ""
            if frames:
                top = frames[-1]
                if not top[0]:
                    seg = f"[{top[1]}]"
                elif isinstance(top[1], str):
                    key = top[1]
                    seg = f".{key}" if _PLAIN_KEY.fullmatch(key) else f"[{json.dumps(key)}]"
            frames.append([t == "{", 0 if t == "[" else None, True])
            segs.append(seg)
        elif t in "}]":
            if frames:
                frames.pop()
                segs.pop()
            if not frames:
                break
        elif not frames:
            break
        elif t == ",":
            if frames[-1][0]:
                frames[-1][2] = True
            else:
                frames[-1][1] += 1
        elif t == ":":
            frames[-1][2] = False
        elif frames[-1][0] and frames[-1][2] and len(t) > 1 and t.endswith('"'):
            try:
                frames[-1][1] = json.loads(t)
            except ValueError:
                frames[-1][1] = None
    return "".join(segs)


def _decode(text: str, s: int) -> tuple[object, int, int]:
    """(value, end, chars read); end is -1 when no JSON value starts at ``s``."""
    try:
        value, end = _DECODER.raw_decode(text, s)
    except json.JSONDecodeError as e:
        return None, -1, max(1, e.pos - s)
    except (ValueError, RecursionError):
        return None, -1, len(text) - s
    return value, end, end - s


def _common_prefix(x: str, y: str) -> int:
    """len of the longest common prefix (binary search over C-level slice compares)."""
    lo, hi = 0, min(len(x), len(y))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if x[:mid] == y[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _embedded(a: str, b: str, s: int, i: int) -> tuple[str | None, int]:
    """JSON written escaped inside a JSON string literal that opens at ``s - 1`` (tool-call
    arguments rendered with ``tojson``): ``(path, chars read)``, path None unless both literals
    cover ``i`` and hold equal values written differently. The path is relative to the embedded
    value, at the first difference of the decoded strings."""
    sa, ea, cost = _decode(a, s - 1)
    if ea <= i or not isinstance(sa, str):
        return None, cost
    sb, eb, cost_b = _decode(b, s - 1)
    cost += cost_b
    if eb < i or not isinstance(sb, str) or sa == sb:
        return None, cost
    try:
        va, vb = json.loads(sa), json.loads(sb)
    except (ValueError, RecursionError):
        return None, cost
    if not isinstance(va, dict | list) or not _same(va, vb):
        return None, cost
    return _path_at(sa, 0, _common_prefix(sa, sb)), cost


def json_reordered(a: str, b: str, i: int) -> Reordered | None:
    """``Reordered(s, path)`` when the first difference ``i`` lies inside a JSON object or array
    that starts at ``s`` in both texts and decodes to the same value in both from differently
    written text: reordered keys, other whitespace, or another spelling of the same string or
    number. Key order is ignored, types are not (``1``, ``1.0`` and ``true`` differ, unlike
    ``==``).

    Starts are tried from ``i`` outward (at most ``_MAX_STARTS`` ``{``/``[`` within ``_MAX_BACK``
    chars and ``_MAX_DECODED`` chars decoded); values ending at or before ``i`` are skipped. The
    first hit is returned, so ``s`` is the innermost equal value covering ``i``: the object whose
    keys moved, or the container holding the changed whitespace. ``path`` is the JSON path,
    relative to ``s``, of the innermost container at ``i`` (``""``, ``.key``, ``["odd key"]``,
    ``[3]`` segments); with the innermost value chosen it is ``""``. A value written escaped
    inside a JSON string literal (``"{\\"b\\": 2, ...}"``, as chat templates render tool-call
    arguments with ``tojson``) is decoded from the literal; its path is then relative to the
    embedded value and can be deeper. None when nothing matches, including unterminated JSON."""
    limit = min(len(a), len(b))
    if not 0 <= i <= limit:
        return None
    stop = max(0, i - _MAX_BACK)
    pos = min(i, limit - 1)
    budget = _MAX_DECODED
    tried = 0
    nxt_brace = a.rfind("{", stop, pos + 1)
    nxt_bracket = a.rfind("[", stop, pos + 1)
    while tried < _MAX_STARTS and budget > 0:
        s = max(nxt_brace, nxt_bracket)
        if s < 0:
            break
        if s == nxt_brace:
            nxt_brace = a.rfind("{", stop, s)
        else:
            nxt_bracket = a.rfind("[", stop, s)
        if b[s] != a[s]:
            continue
        tried += 1
        va, ea, cost = _decode(a, s)
        budget -= cost
        if ea < 0 and s and a[s - 1] == '"':
            path, cost = _embedded(a, b, s, i)
            budget -= cost
            if path is not None:
                return Reordered(start=s, path=path)
        # a value ending at or before i reads only the shared prefix: b decodes it identically
        if ea <= i:
            continue
        vb, eb, cost = _decode(b, s)
        budget -= cost
        if eb < i or not _same(va, vb) or a[s:ea] == b[s:eb]:
            continue
        return Reordered(start=s, path=_path_at(a, s, i))
    return None
