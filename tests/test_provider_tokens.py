"""Provider token counts: OpenAI's, exact against published numbers; the others, labelled.

Published numbers (OpenAI Cookbook, "How to count tokens with tiktoken",
https://github.com/openai/openai-cookbook/blob/main/examples/How_to_count_tokens_with_tiktoken.ipynb,
read 2026-12-02):

- o200k_base token ids: "antidisestablishmentarianism" -> [493, 129901, 376, 160388, 21203,
  2367]; "2 + 2 = 4" -> [17, 659, 220, 17, 314, 220, 19]; "お誕生日おめでとう" -> [8930, 9697,
  243, 128225, 8930, 17693, 4344, 48669]; "tiktoken is great!" -> 6 tokens.
- Section 6, six example messages (four with a ``name``): "124 prompt tokens counted by the
  OpenAI API" for gpt-4o and for gpt-4o-mini (``response.usage.prompt_tokens``).
- Section 7, two messages and one function tool: "101 prompt tokens counted by the OpenAI API"
  for gpt-4o and gpt-4o-mini.
- Two gpt-4o calls logged with their usage in a public repository (see
  ``test_logged_gpt4o_calls_match_their_usage``).
- tiktoken 0.14 (tiktoken_ext/openai_public.py) checks the rank file o200k_base.tiktoken
  against SHA-256 446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
from pathlib import Path

import numpy as np
import orjson
import pytest

from kvtool.ingest import ingest_files
from kvtool.providers import load_provider
from kvtool.providers.tokens import token_counts
from kvtool.store import connect
from kvtool.tokenize import load_tokenizer, tokenize_requests
from kvtool.tokenize.segments import SegmentEncoder
from kvtool.tokenize.template import (
    OpenAIChatFormat,
    content_text,
    make_template,
    render_prompt,
    split_leading_systems,
)
from kvtool.tokenize.tiktoken_bpe import (
    O200K_PATH,
    O200K_SHA256,
    O200K_SPLITS_PATH,
    merge_splits,
    read_ranks,
)

ROOT = Path(__file__).resolve().parent.parent
COOKBOOK_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate "
        "jargon into plain English.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "New synergies will help drive top-line growth.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on opportunities "
        "for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client "
        "deliverable.",
    },
]
COOKBOOK_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {
                        "type": "string",
                        "description": "The city and state, e.g. San Francisco, CA",
                    },
                    "unit": {
                        "type": "string",
                        "description": "The unit of temperature to return",
                        "enum": ["celsius", "fahrenheit"],
                    },
                },
                "required": ["location"],
            },
        },
    }
]
COOKBOOK_TOOL_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful assistant that can answer to questions about the weather.",
    },
    {"role": "user", "content": "What's the weather like in San Francisco?"},
]


@pytest.fixture(scope="module")
def o200k():
    return load_tokenizer("o200k")


def _count(bundle, messages: list[dict], tools: list | None = None) -> int:
    text = render_prompt(make_template(bundle), messages, tools)
    return len(bundle.tokenizer.encode(text, add_special_tokens=False).ids)


def test_vendored_vocabulary_is_openais_file():
    # the shipped rank file, decompressed, is byte for byte the one tiktoken downloads
    assert hashlib.sha256(gzip.decompress(O200K_PATH.read_bytes())).hexdigest() == O200K_SHA256
    assert O200K_SHA256 == "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"


def test_shipped_merges_are_recomputed_from_the_ranks():
    ranks = read_ranks(O200K_PATH)
    assert len(ranks) == 199_998  # ranks 0..199997; 199999 and 200018 are special tokens
    assert merge_splits(ranks) == gzip.decompress(O200K_SPLITS_PATH.read_bytes())


def test_o200k_ids_equal_the_published_ids(o200k):
    def ids(text: str) -> list[int]:
        return o200k.tokenizer.encode(text, add_special_tokens=False).ids

    assert ids("antidisestablishmentarianism") == [493, 129901, 376, 160388, 21203, 2367]
    assert ids("2 + 2 = 4") == [17, 659, 220, 17, 314, 220, 19]
    assert ids("お誕生日おめでとう") == [8930, 9697, 243, 128225, 8930, 17693, 4344, 48669]
    assert len(ids("tiktoken is great!")) == 6
    # the chat markers carry o200k_harmony's ids and split the text around them
    assert ids("<|start|>user<|message|>hi<|end|>") == [200006, 1428, 200008, 3686, 200007]


def test_chat_format_overheads_are_openais(o200k):
    assert isinstance(make_template(o200k), OpenAIChatFormat)
    # "hi", "user", "Alice" and "system" are one o200k token each (ids 3686, 1428, ...)
    # one message: 3 markers + role 1 + content 1, then 3 priming the reply = 8
    assert _count(o200k, [{"role": "user", "content": "hi"}]) == 8
    # a name adds its tokens (1) + 1 = 10
    assert _count(o200k, [{"role": "user", "name": "Alice", "content": "hi"}]) == 10
    # any name OpenAI accepts ([a-zA-Z0-9_-]+) costs its own tokens + 1, as the cookbook says
    rng = random.Random(3)
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"
    for _ in range(300):
        name = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 24)))
        alone = len(o200k.tokenizer.encode(name, add_special_tokens=False).ids)
        named = [{"role": "system", "name": name, "content": "hi"}]
        assert _count(o200k, named) == 8 + alone + 1, name
    # two messages: 3 + (3+1+1) + (3+1+1) = 13
    two = [{"role": "system", "content": "hi"}, {"role": "user", "content": "hi"}]
    assert _count(o200k, two) == 13


def test_cookbook_messages_through_the_pipeline_match_the_api(tmp_path, o200k):
    """The cookbook's request, logged with the API's published usage, ingested into a real
    DuckDB file and tokenized by the tokenize pass: every prompt is 124 tokens, the API's
    count, exactly (the issue asks for 1%)."""
    records = [
        {
            "id": f"req-{model}",
            "timestamp": 1_700_000_000 + i,
            "request": {"model": model, "messages": COOKBOOK_MESSAGES, "max_tokens": 1},
            "response": {"usage": {"prompt_tokens": 124, "completion_tokens": 1}},
        }
        for i, model in enumerate(["gpt-4o", "gpt-4o-mini"])
    ]
    log = tmp_path / "cookbook.jsonl"
    log.write_bytes(b"\n".join(orjson.dumps(r) for r in records) + b"\n")
    con = connect(tmp_path / "t.duckdb")
    ingest_files(con, [log])
    report = tokenize_requests(con, o200k)
    assert report.mode == "pieces" and report.verified == 2 and report.requests == 2
    rows = con.execute(
        "SELECT r.model, c.n_tokens, r.observed_prompt_tokens FROM chains c "
        "JOIN requests r USING (req_id) WHERE c.tokenizer = ? ORDER BY r.model",
        [report.signature],
    ).fetchall()
    assert rows == [("gpt-4o", 124, 124), ("gpt-4o-mini", 124, 124)]


def test_logged_gpt4o_calls_match_their_usage(o200k):
    """Two real gpt-4o-2024-08-06 calls logged with their usage in a public repository
    (github.com/Bharathkumarraju/learn-ai-llm-ml-ops, 11.OpenAI/3.chat_completions_api.sh, read
    2026-12-02): content given as text parts; prompt_tokens 21 and 25."""

    def turn(answer: str) -> list[dict]:
        return [
            {"role": "user", "content": [{"type": "text", "text": "hello"}]},
            {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        ]

    # 3 + (3 + 1 + 1) + (3 + 1 + 9) = 21: "Hello! How can I assist you today?" is 9 tokens
    assert _count(o200k, turn("Hello! How can I assist you today?")) == 21
    assert _count(o200k, turn("What is the capital city of AndhraPradesh State in India?")) == 25


def test_cookbook_tool_example_within_one_percent(o200k):
    # published 101; kvtool renders the tool catalog in harmony's format: 102 tokens,
    # |102 - 101| / 101 = 0.0099 < 1%
    n = _count(o200k, COOKBOOK_TOOL_MESSAGES, COOKBOOK_TOOLS)
    assert n == 102
    assert abs(n - 101) / 101 < 0.01
    # without the tool: 3 + (3 + 1 + 14) + (3 + 1 + 8) = 33 (contents of 14 and 8 tokens), so
    # the catalog and its "\n\n" separator are 102 - 33 = 69 tokens
    assert _count(o200k, COOKBOOK_TOOL_MESSAGES) == 33


def _agent_requests(n: int, seed: int = 7) -> list[dict]:
    """Chat requests with names, tools, tool calls, tool results and multilingual text."""
    rng = random.Random(seed)
    words = ["cache", "prefix", "naïve", "東京", "缓存", "🙂", "x=1;", "<div>", "'s", "  ", "\n"]
    tools = [
        {
            "type": "function",
            "function": {
                "name": "search",
                "description": "Search the index",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "q": {"type": "string", "description": "query"},
                        "n": {"type": "integer", "default": 5},
                        "tags": {"type": "array", "items": {"type": "string"}},
                    },
                    "required": ["q"],
                },
            },
        },
        {"type": "web_search"},
    ]

    def text(k: int) -> str:
        return " ".join(rng.choice(words) for _ in range(k))

    out = []
    for _ in range(n):
        msgs: list[dict] = [{"role": "system", "content": text(20)}]
        if rng.random() < 0.5:
            msgs.append({"role": "developer", "name": "policy", "content": text(5)})
        for t in range(rng.randint(1, 4)):
            msgs.append({"role": "user", "content": text(rng.randint(1, 30))})
            if rng.random() < 0.5:
                args = json.dumps({"q": text(3), "n": t}, ensure_ascii=False)
                call = {"id": f"c{t}", "type": "function"}
                call["function"] = {"name": "search", "arguments": args}
                msgs.append({"role": "assistant", "content": None, "tool_calls": [call]})
                msgs.append({"role": "tool", "tool_call_id": f"c{t}", "content": text(12)})
            else:
                msgs.append({"role": "assistant", "content": text(rng.randint(0, 20))})
        body: dict = {"model": "gpt-5.4", "messages": msgs}
        if rng.random() < 0.7:
            body["tools"] = tools
        out.append(body)
    return out


def test_openai_pieces_equal_one_call_tokenization(o200k):
    template = make_template(o200k)
    encoder = SegmentEncoder(o200k.tokenizer, o200k.added_tokens)
    for body in _agent_requests(60):
        systems, rest = split_leading_systems(body["messages"])
        pieces = [template.head(systems, body.get("tools"))]
        pieces += [template.message(m) for m in rest] + [template.generation]
        assert all(p.startswith("<|start|>") for p in pieces if p)
        composed = np.concatenate(encoder.encode_many(pieces))
        text = render_prompt(template, body["messages"], body.get("tools"))
        assert np.array_equal(composed, encoder.encode_whole(text))


def test_two_public_tokenizers_differ_by_five_percent_on_demo_text(o200k):
    """The indication docs/providers.md gives for tokenizers that are not public: on the demo
    trace's distinct message texts o200k counts 129,809 tokens and DeepSeek-V4 136,533,
    129,809 / 136,533 = 0.951."""
    texts = set()
    with gzip.open(ROOT / "traces" / "demo-agent.jsonl.gz") as fh:
        for line in fh:
            for msg in orjson.loads(line)["request"]["messages"]:
                texts.add(content_text(msg.get("content")))
    deepseek = load_tokenizer()

    def total(bundle) -> int:
        return sum(len(e.ids) for e in bundle.tokenizer.encode_batch(sorted(texts), False))

    assert (total(o200k), total(deepseek)) == (129_809, 136_533)


def test_labels_per_provider():
    openai = load_provider("openai")
    exact = token_counts(openai, "o200k", ["gpt-4o-2024-08-06", "openai/gpt-5.4-mini"])
    assert exact.exact and exact.provider_tokenizer == "o200k"
    assert "124" in exact.expected_error
    assert exact.to_json()["exact"] is True
    # a family tiktoken does not map to o200k_base: approximate, and the model is named
    gpt6 = token_counts(openai, "o200k", ["gpt-5.4", "gpt-6-sol"])
    assert not gpt6.exact and "gpt-6-sol" in gpt6.expected_error
    assert "gpt-5.4" not in gpt6.expected_error.split("for ")[1].split(";")[0]
    # the right provider, another tokenizer: approximate, pointing at the right one
    other = token_counts(openai, "deepseek-v4", ["gpt-4o"])
    assert not other.exact and other.provider_tokenizer == "o200k"
    assert "--tokenizer o200k" in other.expected_error
    # DeepSeek: its own vocabulary, but not its chat encoding (test_deepseek_v4_format.py)
    deepseek = token_counts(load_provider("deepseek"), "deepseek-v4", ["deepseek-chat"])
    assert not deepseek.exact and deepseek.provider_tokenizer == "deepseek-v4-api"
    assert "14%" in deepseek.expected_error
    for name in ("anthropic", "gemini"):
        label = token_counts(load_provider(name), "o200k", [])
        assert not label.exact and label.provider_tokenizer is None
        assert "not public" in label.expected_error and name in label.expected_error


def test_gemini_with_gemmas_tokenizer_is_labelled_text_only():
    label = token_counts(load_provider("gemini"), "gemma-3-4b-it", ["gemini-2.5-pro"])
    assert not label.exact and label.provider_tokenizer is None
    assert "Gemma 3" in label.expected_error and "not published" in label.expected_error


def test_label_follows_an_override_of_tokenizer_public(tmp_path):
    rules = tmp_path / "rules.json"
    rules.write_text(
        json.dumps({"rules": {"tokenizer_public": {"value": False, "source": "tiktoken"}}})
    )
    label = token_counts(load_provider("openai", rules_file=rules), "o200k", ["gpt-4o"])
    assert not label.exact and label.provider_tokenizer is None


def test_many_unconfirmed_models_are_listed_briefly():
    label = token_counts(load_provider("openai"), "o200k", [f"gpt-9-{i}" for i in range(10)])
    # three names shown, the other seven counted
    assert "gpt-9-0, gpt-9-1, gpt-9-2 and 7 more" in label.expected_error


def test_odd_tools_and_messages_render_and_compose_exactly(o200k):
    """Logged tools and messages of unexpected shapes render without raising, and the pieces
    still compose to the one-call ids."""
    deep: dict = {"type": "string"}
    for _ in range(50):
        deep = {"type": "array", "items": deep}
    tools = [
        "not a tool",
        {"type": "function", "name": "flat", "parameters": {"properties": {"a": deep}}},
        {"function": {"name": 5, "description": ["x"]}},
        {"function": {"name": "odd", "parameters": {"required": [{}], "properties": []}}},
        {"function": {"name": "k", "parameters": {"properties": {"t": {"type": {"x": 1}}}}}},
        {"type": "function", "function": {"name": "e", "description": None}},
    ]
    messages = [
        {"role": None, "content": "no role"},
        {"role": "user", "name": 7, "content": [{"type": "image_url"}, {"text": "<|end|>"}]},
        {"role": "assistant", "content": "", "tool_calls": ["x", {"function": "y"}, {}]},
        {"role": "tool", "content": None},
    ]
    template = make_template(o200k)
    text = render_prompt(template, messages, tools)
    # the deep array is cut at TS_DEPTH: "any" followed by its nine "[]"
    assert "a?: any[][][][][][][][][]," in text
    # a name that is not a string is left out; a role that is not one is "user"
    assert "<|start|>user<|message|>no role<|end|>" in text
    assert "<|start|>user<|message|><image_url><|end|><|end|>" in text
    encoder = SegmentEncoder(o200k.tokenizer, o200k.added_tokens)
    systems, rest = split_leading_systems(messages)
    pieces = [template.head(systems, tools), *map(template.message, rest), template.generation]
    composed = np.concatenate(encoder.encode_many(pieces))
    assert np.array_equal(composed, encoder.encode_whole(text))
