"""Fingerprints of a request's elements, computed while its text is in memory (a redacted ingest).

What break analysis compares (``kvtool.analyze.diff``), kept as hashes:
- a message: its role, content text and tool calls (name, arguments text), exactly what a
  template renders of it (``message_fp``); tool-call arguments also as the hash of the parsed
  value with Python equality (key order, ``1 == 1.0`` ignored), as the diff compares them;
- a tool: its JSON text, its name, and a tree of hashes of its JSON (``tool_tree``) that answers
  the same questions ``json_difference`` asks of the value: type, key order, keys, items, values;
- a text: a ``TextFp`` (``text_fp``): hashes of prefixes at the boundaries of its volatile spans
  and JSON values, those spans, and hashes of the text with whitespace (and special tokens)
  folded, so the first difference of two texts can be classified as the diff's ``text_cause``
  classifies it;
- a head: the head text break analysis keys predecessors by (``head_text``).

Hashes are xxh3-64 as DuckDB BIGINTs. A fingerprint lets its holder confirm a guessed text, never
read one (docs/redaction.md).
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
import xxhash

from kvtool.store import as_bigint
from kvtool.store.fingerprints import MessageFp, TextFp, ToolFp
from kvtool.textscan import fold_text, id_spans, timestamp_spans
from kvtool.tokenize.template import SYSTEM_ROLES, content_text

MAX_SPANS = 4096  # volatile spans of each kind kept per text
MAX_JSON = 1024  # JSON values kept per text
MAX_DECODED = 4_000_000  # characters decoded per text while looking for JSON values
NONE = 0  # the hash standing for "no name"
_DECODER = json.JSONDecoder()
_OPEN = re.compile(r"[{\[]")
# tool-schema keys that are vocabulary of the OpenAI / JSON Schema shape, not prompt text; other
# keys show as * in a redacted break's path
SCHEMA_KEYS = frozenset(
    {
        "type", "function", "name", "description", "parameters", "strict", "properties",
        "items", "required", "enum", "anyOf", "oneOf", "allOf", "not", "additionalProperties",
        "default", "format", "title", "minimum", "maximum", "minItems", "maxItems", "minLength",
        "maxLength", "pattern", "examples", "const", "nullable", "$ref", "$defs", "definitions",
        "input_schema",
    }
)  # fmt: skip


def digest(data: bytes) -> int:
    return as_bigint(xxhash.xxh3_64_intdigest(data))


def utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def text_id(text: str) -> int:
    """The identity of a text (equal ids: equal texts, but for 64-bit collisions)."""
    return digest(utf8(text))


def _dumps(value: Any) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True
    ).encode("utf-8", "surrogatepass")


def same_hash(value: Any) -> int:
    """Hash of a JSON value ignoring key order but not types (``1``, ``1.0``, ``true`` differ):
    the equality ``json_reordered`` uses."""
    return digest(_dumps(value))


def _py_equal_form(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _py_equal_form(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_py_equal_form(v) for v in value]
    return value


def eq_hash(value: Any) -> int:
    """Hash of a JSON value under Python ``==`` (key order ignored, ``True == 1 == 1.0``)."""
    return digest(_dumps(_py_equal_form(value)))


def json_containers(text: str) -> list[tuple[int, int, int]]:
    """(start, end, ``same_hash``) of every JSON object or array that decodes at a ``{`` or
    ``[`` of ``text``, nested ones included, in start order; bounded by ``MAX_JSON`` values and
    ``MAX_DECODED`` characters decoded (what ``json_reordered`` tries around a difference)."""
    out: list[tuple[int, int, int]] = []
    budget = MAX_DECODED
    for m in _OPEN.finditer(text):
        if len(out) >= MAX_JSON or budget <= 0:
            break
        s = m.start()
        try:
            value, end = _DECODER.raw_decode(text, s)
        except json.JSONDecodeError as e:
            budget -= max(1, e.pos - s)
            continue
        except (ValueError, RecursionError):
            budget -= len(text) - s
            continue
        budget -= end - s
        if isinstance(value, dict | list):
            out.append((s, end, same_hash(value)))
    return out


def text_fp(text: str, specials: tuple[str, ...]) -> TextFp:
    """The ``TextFp`` of ``text``; ``fold`` folds ``specials`` (special-token strings) too."""
    ts = [(s.start, s.end) for s in timestamp_spans(text)][:MAX_SPANS]
    ids = [(s.start, s.end) for s in id_spans(text)][:MAX_SPANS]
    found = json_containers(text)
    cuts = sorted({x for pair in (*ts, *ids, *((s, e) for s, e, _ in found)) for x in pair})
    cuts = [c for c in cuts if 0 < c < len(text)] + [len(text)]
    state = xxhash.xxh3_64()
    prefixes = []
    at = 0
    for cut in cuts:
        state.update(utf8(text[at:cut]))
        prefixes.append(as_bigint(state.intdigest()))
        at = cut
    return TextFp(
        id=text_id(text),
        length=len(text),
        fold=text_id(fold_text(text, specials)),
        fold_plain=text_id(fold_text(text)),
        cuts=tuple(cuts),
        prefixes=tuple(prefixes),
        timestamps=tuple(ts),
        ids=tuple(ids),
        json=tuple((s, e) for s, e, _ in found),
        json_hashes=tuple(h for _, _, h in found),
    )


def arguments_text(value: Any) -> str:
    """Tool-call arguments as the diff compares them: a string as is, else its JSON."""
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def calls(msg: dict) -> list[tuple[str, str]]:
    """(name, arguments text) of each tool call, as the diff reads them."""
    out = []
    for call in msg.get("tool_calls") or []:
        fn = call.get("function") if isinstance(call, dict) else None
        if isinstance(fn, dict):
            out.append((str(fn.get("name")), arguments_text(fn.get("arguments", ""))))
    return out


def parsed_arguments_hash(args: str) -> int | None:
    """``eq_hash`` of the arguments' JSON value, None when they are not JSON."""
    try:
        return eq_hash(json.loads(args))
    except (ValueError, RecursionError):
        return None


class Texts:
    """Text fingerprints computed once per distinct (text, fold) pair; ``rows`` collects them."""

    def __init__(self, specials: tuple[str, ...]):
        self.specials = specials
        self.rows: dict[int, TextFp] = {}

    def add(self, text: str) -> int:
        tid = text_id(text)
        if tid not in self.rows:
            self.rows[tid] = text_fp(text, self.specials)
        return tid


def message_fp(msg: dict, texts: Texts) -> MessageFp:
    """The fingerprint of one message: equal fingerprints exactly when the diff sees no
    difference between two messages (role, content text, calls)."""
    role = msg.get("role")
    text = content_text(msg.get("content"))
    found = calls(msg)
    fp = digest(orjson.dumps([role, text, found]))
    return MessageFp(
        fp=fp,
        role=role if isinstance(role, str) else None,
        content=texts.add(text),
        call_names=tuple(digest(utf8(name)) for name, _ in found),
        call_args=tuple(texts.add(args) for _, args in found),
        call_json=tuple(parsed_arguments_hash(args) for _, args in found),
    )


def tool_name(tool: Any) -> Any:
    """The tool's name as the diff reads it (None without one)."""
    if not isinstance(tool, dict):
        return None
    fn = tool.get("function")
    return fn.get("name") if isinstance(fn, dict) else tool.get("name")


def _type(value: Any) -> str:
    if isinstance(value, bool):
        return "b"
    if isinstance(value, int):
        return "i"
    if isinstance(value, float):
        return "f"
    if isinstance(value, str):
        return "s"
    if value is None:
        return "n"
    return "d" if isinstance(value, dict) else "l"


def tool_tree(value: Any, texts: Texts) -> list:
    """A JSON value as a tree of hashes: ``["d", eq, [[key hash, key name or None, child],
    ...]]`` for an object (the name only for ``SCHEMA_KEYS``), ``["l", eq, [child, ...]]`` for
    an array, ``["s", text id]`` for a string (its ``TextFp`` goes to ``texts``) and ``[type,
    value hash]`` for other values; ``eq`` is ``eq_hash`` (Python equality)."""
    kind = _type(value)
    if kind == "d":
        items = [
            [digest(utf8(k)), k if k in SCHEMA_KEYS else None, tool_tree(v, texts)]
            for k, v in value.items()
        ]
        return ["d", eq_hash(value), items]
    if kind == "l":
        return ["l", eq_hash(value), [tool_tree(v, texts) for v in value]]
    if kind == "s":
        return ["s", texts.add(value)]
    return [kind, digest(orjson.dumps(value))]


def tool_fp(tool: Any, texts: Texts) -> ToolFp:
    name = tool_name(tool)
    return ToolFp(
        fp=digest(orjson.dumps(tool)),
        name=NONE if name is None else digest(_dumps(name)),
        tree=tool_tree(tool, texts),
    )


def n_system(messages: list[dict]) -> int:
    """How many leading messages are system/developer messages."""
    n = 0
    while n < len(messages) and messages[n].get("role") in SYSTEM_ROLES:
        n += 1
    return n


def head_text(
    model: str | None, messages: list | None, tools: Any, prompt: str | list | None
) -> str:
    """The text break analysis keys a request's predecessors by: model, leading system messages
    and tool catalog (completions: model and prompt)."""
    if messages is None:
        body = prompt if isinstance(prompt, str) else orjson.dumps(prompt).decode()
        return f"{model}\x00{body}"
    systems = []
    for msg in messages:
        if not isinstance(msg, dict) or msg.get("role") not in SYSTEM_ROLES:
            break
        systems.append(content_text(msg.get("content")))
    catalog = orjson.dumps(tools).decode() if tools is not None else ""
    return f"{model}\x00{chr(1).join(systems)}\x02{catalog}"
