"""The structured diff that names a break's cause: one hand-made pair per cause and path rule."""

from __future__ import annotations

import copy

import orjson
import pytest

from kvtool.analyze.diff import CAUSES, Req, first_difference, json_difference
from kvtool.textscan import lcp

SYSTEM = (
    "You are Atlas, a coding agent for Example Corp.\n\n"
    "## Rules\n1. Read files before editing them.\n2. Run the tests.\n\n"
    "## Environment\n- Current date: 2026-11-01\n- Workspace: ws-7f3a9c2e\n"
    "- Policy effective 2024-01-01; refunds within 30 days."
)


def _tool(name: str, desc: str, props: dict) -> dict:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": desc,
            "parameters": {"type": "object", "properties": props, "required": list(props)},
        },
    }


TOOLS = [
    _tool("read_file", "Read a file.", {"path": {"type": "string", "description": "File path."}}),
    _tool(
        "search_code",
        "Search the repository.",
        {"query": {"type": "string"}, "max_results": {"type": "integer"}},
    ),
    _tool("run_tests", "Run the test suite.", {"target": {"type": "string"}}),
]
BLOB = 'Found 2 matches.\n{{\n  {},\n  "ok": true\n}}\nDone.'
ARGS = orjson.dumps({"query": "def main", "max_results": 5}).decode()
HISTORY = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": "Fix the failing test in tests/test_app.py."},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "search_code", "arguments": ARGS},
            }
        ],
    },
    {
        "role": "tool",
        "tool_call_id": "call_1",
        "content": BLOB.format('"file": "app.py",\n  "line": 12'),
    },
]


def _req(messages=HISTORY, tools=TOOLS, model="m1") -> Req:
    return Req(model, None, copy.deepcopy(messages), copy.deepcopy(tools))


def _edit(fn) -> Req:
    messages, tools = copy.deepcopy(HISTORY), copy.deepcopy(TOOLS)
    model = fn(messages, tools)  # an edit returns the new model name, or anything else
    return Req(model if isinstance(model, str) else "m1", None, messages, tools)


def _set_system(text: str):
    def edit(messages, tools):
        messages[0]["content"] = text

    return edit


CASES = [
    ("model", lambda m, t: "m2", "model_changed", "model"),
    ("tool appended", lambda m, t: t.append(_tool("lint", "Lint.", {})), "tool_added", "tools[3]"),
    (
        "tool inserted",
        lambda m, t: t.insert(1, _tool("lint", "Lint.", {})),
        "tool_added",
        "tools[1]",
    ),
    ("tool removed", lambda m, t: t.pop(1), "tool_removed", "tools[1]"),
    ("last tool removed", lambda m, t: t.pop(), "tool_removed", "tools[2]"),
    ("tools swapped", lambda m, t: t.reverse(), "tools_reordered", "tools[0]"),
    (
        "description edited",
        lambda m, t: t[1]["function"].update(description="Search the repository fast."),
        "tool_schema_edited",
        "tools[1].function.description",
    ),
    (
        "parameter added",
        lambda m, t: t[2]["function"]["parameters"]["properties"].update(k={"type": "string"}),
        "tool_schema_edited",
        "tools[2].function.parameters.properties.k",
    ),
    (
        "properties reordered",
        lambda m, t: t[1]["function"]["parameters"].update(
            properties=dict(reversed(t[1]["function"]["parameters"]["properties"].items()))
        ),
        "json_key_order",
        "tools[1].function.parameters.properties",
    ),
    (
        "arguments reserialized",
        lambda m, t: m[2]["tool_calls"][0]["function"].update(
            arguments='{"max_results": 5, "query": "def main"}'
        ),
        "json_key_order",
        "messages[2].tool_calls[0].function.arguments",
    ),
    (
        "arguments whitespace",
        lambda m, t: m[2]["tool_calls"][0]["function"].update(
            arguments='{"query": "def main", "max_results": 5}'
        ),
        "json_key_order",
        "messages[2].tool_calls[0].function.arguments",
    ),
    (
        "json blob in a tool output",
        lambda m, t: m.__setitem__(
            3,
            {
                **m[3],
                "content": BLOB.format('"line": 12,\n  "file": "app.py"'),
            },
        ),
        "json_key_order",
        "messages[3].content",
    ),
    (
        "timestamp",
        _set_system(SYSTEM.replace("2026-11-01", "2026-11-01T09:03:12Z")),
        "volatile_timestamp",
        "messages[0].content",
    ),
    (
        "epoch",
        _set_system(SYSTEM.replace("2026-11-01", "1793005392")),
        "volatile_timestamp",
        "messages[0].content",
    ),
    (
        "request id",
        _set_system(SYSTEM.replace("ws-7f3a9c2e", "ws-0b1d9e44")),
        "volatile_id",
        "messages[0].content",
    ),
    (
        "uuid",
        _set_system(SYSTEM.replace("ws-7f3a9c2e", "3f2b8c1e-9d4a-4f7e-8a21-5c6d7e8f9a0b")),
        "volatile_id",
        "messages[0].content",
    ),
    (
        "system word",
        _set_system(SYSTEM.replace("Run the tests", "Run all tests")),
        "system_edited",
        "messages[0].content",
    ),
    (
        "edit next to a stable date",
        _set_system(SYSTEM.replace("refunds within 30 days", "refunds within 14 days")),
        "system_edited",
        "messages[0].content",
    ),
    (
        "text after a stable id",
        _set_system(SYSTEM.replace("ws-7f3a9c2e", "ws-7f3a9c2e, region eu")),
        "system_edited",
        "messages[0].content",
    ),
    (
        "system whitespace",
        _set_system(SYSTEM.replace("\n\n", "\n")),
        "template_changed",
        "messages[0].content",
    ),
    (
        "second system message",
        lambda m, t: m.insert(1, {"role": "system", "content": "Be brief."}),
        "system_edited",
        "messages[1]",
    ),
    (
        "task edited",
        lambda m, t: m[1].update(content="Fix the failing test in tests/test_api.py."),
        "history_edited",
        "messages[1].content",
    ),
    (
        "tool output truncated",
        lambda m, t: m[3].update(content="Found 2 matches.\n[... truncated]"),
        "history_edited",
        "messages[3].content",
    ),
    (
        "compaction",
        lambda m, t: m.__setitem__(
            slice(2, 4), [{"role": "user", "content": "Summary of earlier steps: searched."}]
        ),
        "history_edited",
        "messages[2]",
    ),
    (
        "call renamed",
        lambda m, t: m[2]["tool_calls"][0]["function"].update(name="read_file"),
        "history_edited",
        "messages[2].tool_calls[0].function.name",
    ),
]


@pytest.mark.parametrize(("name", "edit", "cause", "path"), CASES, ids=[c[0] for c in CASES])
def test_each_cause_and_path(name, edit, cause, path):
    diff = first_difference(_req(), _edit(edit))
    assert diff is not None
    assert (diff.cause, diff.path) == (cause, path), diff.detail
    assert diff.cause in CAUSES


def test_extension_and_unrendered_fields_are_no_difference():
    longer = HISTORY + [{"role": "assistant", "content": "Done."}]
    assert first_difference(_req(), _req(longer)) is None
    renamed_call_id = copy.deepcopy(HISTORY)
    renamed_call_id[2]["tool_calls"][0]["id"] = "call_999"
    renamed_call_id[3]["tool_call_id"] = "call_999"
    assert first_difference(_req(), _req(renamed_call_id)) is None
    # r ends inside p (an earlier state of the conversation): nothing of r differs
    assert first_difference(_req(), _req(HISTORY[:2])) is None


def test_the_first_difference_wins():
    both = _edit(
        lambda m, t: (
            m[0].update(content=SYSTEM.replace("2026-11-01", "2026-11-01T10:00:00Z")),
            t.pop(0),
        )
    )
    assert first_difference(_req(), both).cause == "volatile_timestamp"


def test_completion_prompts():
    p = Req("m", None, prompt="<|im_start|>system\nYou are Atlas.<|im_end|>\n<|im_start|>user\nhi")
    edited = Req("m", None, prompt=p.prompt.replace("Atlas", "Forge"))
    spaced = Req("m", None, prompt=p.prompt.replace("<|im_end|>\n", "<|im_end|>\n\n"))
    stamped = Req("m", None, prompt=p.prompt.replace("Atlas.", "Atlas. Now: 2026-11-01 09:00:00"))
    assert first_difference(p, Req("m", None, prompt=p.prompt + " there")) is None
    assert first_difference(p, edited).cause == "other"
    assert first_difference(p, spaced, ("<|im_start|>", "<|im_end|>")).cause == "template_changed"
    assert first_difference(p, stamped).cause == "other"  # inserted, not changed in place
    ids = Req("m", None, prompt=[1, 2, 3])
    assert first_difference(ids, Req("m", None, prompt=[1, 2, 3, 4])) is None
    assert first_difference(ids, Req("m", None, prompt=[1, 5, 3])).cause == "other"


def test_json_difference_and_lcp():
    assert json_difference({"a": 1, "b": 2}, {"b": 2, "a": 1}) == ("", "order")
    assert json_difference({"a": {"x": [1, 2]}}, {"a": {"x": [1, 3]}}) == (".a.x[1]", "value")
    assert json_difference({"a": 1}, {"a": 1, "b": 2}) == (".b", "value")
    assert json_difference([1, {"k": True}], [1, {"k": True}]) is None
    assert json_difference(1, 1.0) == ("", "value")
    assert lcp("abcdef", "abcxyz") == 3
    assert lcp("abc", "abc") == 3
    assert lcp("", "x") == 0
    assert lcp("x" * 1000 + "a", "x" * 1000 + "b") == 1000
