"""DeepSeek-V4's chat encoding (``--tokenizer deepseek-v4-api``): its structure, and prompt-token
counts equal to those of DeepSeek's published encoder on every request of the bundled demo
trace and of a set of odd requests (tests/fixtures/deepseek_v4_counts/SOURCE.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kvtool.ingest import ingest_files
from kvtool.providers import load_provider
from kvtool.providers.tokens import token_counts
from kvtool.store import connect
from kvtool.tokenize import load_tokenizer, tokenize_requests
from kvtool.tokenize.deepseek_v4 import (
    CLOSING_TOKENS,
    PLACEHOLDER,
    PREAMBLE_TOKENS,
    DeepSeekV4Format,
)
from kvtool.tokenize.template import make_template, render_head, render_prompt

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "deepseek_v4_counts"
DEMO = ROOT / "traces" / "demo-agent.jsonl.gz"
READ = {
    "type": "function",
    "function": {
        "name": "read",
        "description": "Read a file",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
    },
}


def call(cid: str, name: str, arguments: str) -> dict:
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": arguments}}


@pytest.fixture(scope="module")
def api():
    return load_tokenizer("deepseek-v4-api")


def test_the_bundle_renders_with_deepseeks_encoding(api):
    assert api.name == "deepseek-v4-api" and api.chat_format == "deepseek-v4"
    assert isinstance(make_template(api), DeepSeekV4Format)
    assert load_tokenizer().chat_format is None  # the default keeps kvtool's template
    # the same vocabulary as the default, a different signature (chains never mix)
    assert api.tokenizer.get_vocab_size() == load_tokenizer().tokenizer.get_vocab_size()
    assert api.signature != load_tokenizer().signature
    assert len(api.tokenizer.encode(PLACEHOLDER * 7, add_special_tokens=False).ids) == 7


def test_an_agent_step_renders_as_deepseek_v4_does():
    fmt = DeepSeekV4Format()
    messages = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Q"},
        {
            "role": "assistant",
            "content": "A",
            "tool_calls": [call("c1", "read", '{"path": "a", "n": 2}')],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "R"},
    ]
    schema = json.dumps(READ["function"], ensure_ascii=False)
    tools = f"\n\n{PLACEHOLDER * PREAMBLE_TOKENS}\n\n{schema}\n\n{PLACEHOLDER * CLOSING_TOKENS}"
    expected = (
        "<｜begin▁of▁sentence｜>S" + tools + "<｜User｜>Q<｜Assistant｜></think>A\n\n"
        "<｜DSML｜tool_calls>\n"
        '<｜DSML｜invoke name="read">\n'
        '<｜DSML｜parameter name="path" string="true">a</｜DSML｜parameter>\n'
        '<｜DSML｜parameter name="n" string="false">2</｜DSML｜parameter>\n'
        "</｜DSML｜invoke>\n"
        "</｜DSML｜tool_calls><｜end▁of▁sentence｜>"
        "<｜User｜><tool_result>R</tool_result>"
    )
    assert render_prompt(fmt, messages, [READ]) == expected + "<｜Assistant｜></think>"
    assert render_prompt(fmt, messages, [READ], generation=False) == expected
    assert render_head(fmt, messages, [READ]) == "<｜begin▁of▁sentence｜>S" + tools


def test_turns_merge_and_results_follow_the_call_order():
    fmt = DeepSeekV4Format()
    messages = [
        {"role": "user", "content": "go"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [call("c1", "read", "{}"), call("c2", "read", "not json")],
        },
        {"role": "tool", "tool_call_id": "c2", "content": "second"},
        {
            "role": "tool",
            "tool_call_id": "c1",
            "content": [{"type": "text", "text": "x"}, {"type": "image_url"}],
        },
        {"role": "user", "content": "more"},
    ]
    text = render_prompt(fmt, messages, [READ])
    # no system message: the tools open the prompt in a system message without text
    assert text.startswith(f"<｜begin▁of▁sentence｜>\n\n{PLACEHOLDER}")
    # arguments that are not a JSON object are one string parameter named arguments
    assert '<｜DSML｜invoke name="read">\n\n</｜DSML｜invoke>' in text
    assert '<｜DSML｜parameter name="arguments" string="true">not json<' in text
    # the run of tool results and the user's text is one turn, results in call order
    assert text.endswith(
        "<｜User｜><tool_result>x\n\n[Unsupported image_url]</tool_result>\n\n"
        "<tool_result>second</tool_result>\n\nmore<｜Assistant｜></think>"
    )
    # consecutive user messages are one turn too; a later system message is bare text
    chat = [
        {"role": "user", "content": "a"},
        {"role": "user", "content": "b"},
        {"role": "assistant", "content": "c"},
        {"role": "system", "content": "d"},
        {"role": "user", "content": "e"},
    ]
    assert render_prompt(fmt, chat, None) == (
        "<｜begin▁of▁sentence｜><｜User｜>a\n\nb<｜Assistant｜></think>c<｜end▁of▁sentence｜>"
        "d<｜User｜>e<｜Assistant｜></think>"
    )


def test_counts_equal_deepseeks_published_encoder(tmp_path, api):
    """Every request of the demo trace (510, agent traffic with tools) and of the odd requests,
    ingested into a real DuckDB file and tokenized by the tokenize pass, has the prompt-token
    count DeepSeek-V4's published encoder gives it (the issue asks for 1%)."""
    expected = json.loads((FIXTURE / "counts.json").read_text())["counts"]
    con = connect(tmp_path / "t.duckdb")
    ingest_files(con, [DEMO, FIXTURE / "edges.jsonl"])
    report = tokenize_requests(con, api)
    assert report.requests == len(expected) == 520 and report.template_errors == 0
    got = dict(
        con.execute(
            "SELECT r.request_id, c.n_tokens FROM chains c JOIN requests r USING (req_id) "
            "WHERE c.tokenizer = ?",
            [report.signature],
        ).fetchall()
    )
    assert got == expected
    # kvtool's default template on the same vocabulary counts 14% fewer on the demo trace
    default = tokenize_requests(con, load_tokenizer())
    demo = sum(v for k, v in expected.items() if not k.startswith("edge-"))
    short = 1 - (default.logical_tokens - sum(got[k] for k in got if k.startswith("edge-"))) / demo
    assert 0.14 < short < 0.15


def test_labels_for_deepseek():
    deepseek = load_provider("deepseek")
    exact = token_counts(deepseek, "deepseek-v4-api", ["deepseek-v4-pro", "deepseek-V4-Pro"])
    assert exact.exact and exact.provider_tokenizer == "deepseek-v4-api"
    flash = token_counts(deepseek, "deepseek-v4-api", ["deepseek-v4-pro", "deepseek-flash"])
    assert not flash.exact and "deepseek-flash" in flash.expected_error
    assert "V4.1" in flash.expected_error
    unnamed = token_counts(deepseek, "deepseek-v4-api", [])
    assert not unnamed.exact
    default = token_counts(deepseek, "deepseek-v4", ["deepseek-v4-pro"])
    assert not default.exact and "--tokenizer deepseek-v4-api" in default.expected_error
    other = token_counts(deepseek, "o200k", ["deepseek-v4-pro"])
    assert not other.exact and "--tokenizer deepseek-v4-api" in other.expected_error


def test_previews_show_deepseeks_prose_as_one_label(api):
    text = render_prompt(DeepSeekV4Format(), [{"role": "user", "content": "hi"}], [READ])
    ids = api.tokenizer.encode(text, add_special_tokens=False).ids
    preview = api.preview(ids)
    assert PLACEHOLDER not in preview
    assert "\n\n[DeepSeek tool text: 202 tokens]\n\n{" in preview
    assert preview.endswith(
        "}\n\n[DeepSeek tool text: 18 tokens]<｜User｜>hi<｜Assistant｜></think>"
    )
    assert api.preview(ids[:5]).endswith("[DeepSeek tool text: 3 tokens]")  # a cut run: its part
