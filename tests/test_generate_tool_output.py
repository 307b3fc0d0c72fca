"""Long tool outputs in generated agent logs (``generate(..., tool_output=(lo, hi))``): the default
keeps the old bytes, long outputs keep every invariant of the agent kind, and analyze counts their
prompts exactly as one-call tokenization of the rendered prompt does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from kvtool import analyze
from kvtool.errors import OptionError
from kvtool.generate import generate
from kvtool.tokenize import load_tokenizer
from kvtool.tokenize.template import make_template, render_prompt


def _records(path: Path) -> list[dict]:
    with open(path, "rb") as f:
        return [orjson.loads(line) for line in f]


def _tool_lengths(records: list[dict]) -> list[int]:
    seen: dict[str, int] = {}
    for rec in records:
        for m in rec["request"]["messages"]:
            if m["role"] == "tool":
                seen[m["tool_call_id"]] = len(m["content"])
    return list(seen.values())


def test_the_default_range_writes_the_same_bytes(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    generate("agent", 5, 3, a, steps=(2, 6), breakers=0)
    generate("agent", 5, 3, b, steps=(2, 6), tool_output=(60, 400))
    assert a.read_bytes() == b.read_bytes()


def test_long_tool_outputs_are_long_and_sessions_still_extend(tmp_path: Path) -> None:
    short, long = tmp_path / "short.jsonl", tmp_path / "long.jsonl"
    generate("agent", 4, 8, short, steps=(3, 5))
    truth = generate("agent", 4, 8, long, steps=(3, 5), tool_output=(1500, 2500))
    short_len, long_len = _tool_lengths(_records(short)), _tool_lengths(_records(long))
    # 1500+ words of about 6 characters: thousands of tokens each (the default: 60-400 words)
    assert min(long_len) > 6_000 > max(short_len)
    assert np.median(long_len) > 5 * np.median(short_len)
    assert truth.continuation and not truth.breaks
    by_session: dict[str, list[list[dict]]] = {}
    for rec in _records(long):
        by_session.setdefault(rec["session_id"], []).append(rec["request"]["messages"])
    for steps in by_session.values():
        for prev, cur in zip(steps, steps[1:], strict=False):
            assert cur[: len(prev)] == prev and len(cur) == len(prev) + 2


def test_analyze_counts_long_prompts_as_one_call_tokenization(tmp_path: Path) -> None:
    log = tmp_path / "agent.jsonl"
    generate("agent", 2, 5, log, steps=(3, 4), tool_output=(1000, 3000))
    result = analyze([log], db=tmp_path / "k.duckdb")
    bundle = load_tokenizer()
    template = make_template(bundle)
    texts = [
        render_prompt(template, r["request"]["messages"], r["request"].get("tools"))
        for r in _records(log)
    ]
    whole = [len(e.ids) for e in bundle.tokenizer.encode_batch(texts, add_special_tokens=False)]
    frame = result.requests_frame()
    assert sorted(frame["n_tokens"].tolist()) == sorted(whole)
    assert result["prompt_tokens"] == sum(whole)
    # the history is tokenized once (plus a few whole prompts the pass checks its mode on)
    assert result["tokenization"]["tokens_encoded"] < sum(whole)


@pytest.mark.parametrize(
    ("kind", "tool_output", "says"),
    [
        ("chat", (100, 200), "only generated for kind 'agent'"),
        ("agent", (0, 10), "1 <= lo <= hi"),
        ("agent", (20, 10), "1 <= lo <= hi"),
    ],
)
def test_bad_tool_output_ranges_are_refused(
    tmp_path: Path, kind: str, tool_output: tuple[int, int], says: str
) -> None:
    with pytest.raises(OptionError, match="tool_output") as err:
        generate(kind, 2, 1, tmp_path / "x.jsonl", tool_output=tool_output)
    assert says in str(err.value)
    assert not (tmp_path / "x.jsonl").exists()


def test_the_command_line_writes_what_the_library_writes(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from kvtool.cli import app

    lib, cli = tmp_path / "lib.jsonl", tmp_path / "cli.jsonl"
    generate("agent", 3, 7, lib, steps=(3, 5), tool_output=(100, 3000))
    args = ["generate", "-o", str(cli), "--sessions", "3", "--seed", "7"]
    result = CliRunner().invoke(app, [*args, "--steps", "3,5", "--tool-output", "100,3000"])
    assert result.exit_code == 0, result.output
    assert cli.read_bytes() == lib.read_bytes()
    for flag, value in (("--steps", "3"), ("--tool-output", "x,9"), ("--tool-output", "9,3")):
        bad = CliRunner().invoke(app, [*args, flag, value])
        assert bad.exit_code == 2
        assert flag in bad.output
