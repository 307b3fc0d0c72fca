"""The ``prompt_cache`` pytest fixture (kvtool/check/pytest_plugin.py): pytest run for real on a
copy of examples/pytest_prompts (three runs), and its baseline files in process."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from kvtool.check import Policy
from kvtool.check.prompt_baselines import (
    baseline_bytes,
    baseline_path,
    check_prompt,
    prompt_request,
    read_baseline,
)
from kvtool.errors import InputError, OptionError
from kvtool.tokenize import load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "pytest_prompts"
PLUGIN = "kvtool.check.pytest_plugin"
APPENDED = " I travel with my bike."
STAMP = "\nNow: 2026-12-02T08:46:51+00:00\x1b[2J"


def _pytest(app: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """pytest on ``app`` in a fresh interpreter; the example's conftest.py loads the plugin."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=app,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new))


def test_the_example_gates_prompt_changes_in_pytest(tmp_path):
    app = tmp_path / "app"
    shutil.copytree(EXAMPLE, app, ignore=shutil.ignore_patterns("__pycache__"))
    baselines = app / "__prompt_baselines__"
    committed = {p.name: p.read_bytes() for p in baselines.iterdir()}
    assert set(committed) == {"first-turn.json", "follow-up.json"}
    tests = app / "test_prompts.py"

    # run 1: text appended to the first turn's user message passes; a missing baseline fails
    # and is not written
    _edit(tests, "build_messages(QUESTION)", f"build_messages(QUESTION + {APPENDED!r})")
    (baselines / "follow-up.json").unlink()
    run = _pytest(app)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "1 failed, 1 passed" in run.stdout
    assert (
        "prompt_cache: no baseline for 'follow-up' at __prompt_baselines__/follow-up.json; "
        "run pytest with --kvtool-update-baselines to write it"
    ) in run.stdout
    assert not (baselines / "follow-up.json").exists()

    # run 2: --kvtool-update-baselines writes the missing baseline and rewrites the changed one
    run = _pytest(app, "--kvtool-update-baselines")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 passed" in run.stdout
    assert "kvtool: 2 prompt baseline(s) written" in run.stdout
    # the unchanged prompt renders exactly the committed baseline, byte for byte
    assert (baselines / "follow-up.json").read_bytes() == committed["follow-up.json"]
    expected = json.loads(committed["first-turn.json"])
    expected["messages"][1]["content"] += APPENDED
    assert json.loads((baselines / "first-turn.json").read_bytes()) == expected

    # run 3: a timestamp (and a terminal escape) in the first turn's system prompt fails it;
    # the same prompt passes under a marker that allows its loss; the follow-up passes against
    # the baseline run 2 wrote
    _edit(
        tests,
        '    prompt_cache.check("first-turn"',
        f"    messages[0]['content'] += {STAMP!r}\n    prompt_cache.check(\"first-turn\"",
    )
    source = tests.read_text()
    first_turn = source[source.index("def test_first_turn") : source.index("def test_follow_up")]
    tests.write_text(
        source.replace("from travel_agent", "import pytest\nfrom travel_agent")
        + "\n\n@pytest.mark.prompt_cache(max_loss=160, volatile=False)\n"
        + first_turn.replace("test_first_turn", "test_first_turn_within_max_loss")
    )
    run = _pytest(app)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "1 failed, 2 passed" in run.stdout
    assert "FAILED test_prompts.py::test_first_turn -" in run.stdout
    # The baseline (run 2's first turn) renders 269 tokens before the generation prompt: 16 full
    # blocks. The first differing token is 97 (the system prompt's last '.\n\n' became
    # '.\nNow: …'), so 97 // 16 = 6 blocks stay shared; the candidate (294 tokens) has
    # (294 - 1) // 16 = 18 >= 16 blocks of its own, so 16 * (16 - 6) = 160 tokens are lost.
    assert (
        "[baseline] system_edited at token 97 (messages[0].content) vs the baseline: "
        "system message edited: '' -> 'Now: 2026-12-02T08:46:51+00:00\\x1b[2J'; "
        "160 cached tokens lost"
    ) in run.stdout
    assert "[volatile] volatile timestamp in the stable prefix (messages[0].content)" in run.stdout
    assert "max loss 0 tokens" in run.stdout
    assert "{+.⏎Now: 2026-12-02T08:46:51+00:00\\x1b[2J⏎⏎+}" in run.stdout
    assert "\x1b" not in run.stdout  # the escape is shown, never sent to the terminal


@pytest.fixture(scope="module")
def bundle():
    return load_tokenizer(None)


def test_a_rendered_prompt_string_is_checked_like_a_completion_body(tmp_path, bundle):
    """Missing, written, appended, edited: the outcomes of ``check_prompt`` on a string."""
    policy = Policy()
    text = "You answer questions about trains. " * 20
    missing = check_prompt("p", prompt_request(text), tmp_path, bundle, policy)
    assert (missing.missing, missing.written, missing.passed) == (True, False, False)
    assert not (tmp_path / "p.json").exists()
    written = check_prompt("p", prompt_request(text), tmp_path, bundle, policy, update=True)
    assert (written.missing, written.written, written.passed) == (False, True, True)
    assert read_baseline(tmp_path / "p.json") == {"prompt": text}
    again = check_prompt("p", prompt_request(text), tmp_path, bundle, policy, update=True)
    assert (again.written, again.passed) == (False, True)  # unchanged: not rewritten
    longer = check_prompt("p", prompt_request(text + "Where?"), tmp_path, bundle, policy)
    assert longer.passed
    edited = check_prompt("p", prompt_request("Hi. " + text), tmp_path, bundle, policy)
    assert edited.result is not None and not edited.passed
    (finding,) = edited.result.findings
    assert (finding.check, finding.path) == ("baseline", "prompt")
    # A completion prompt has no BOS. The baseline is 20 repeats of 6 tokens ('You' or ' You',
    # ' answer', ' questions', ' about', ' trains', '.') and the final ' ': 121 tokens, 121 // 16
    # = 7 full blocks. 'Hi' replaces the first token (position 0), so all 7 are lost: 7 * 16 =
    # 112 (the candidate, 123 tokens, has (123 - 1) // 16 = 7 blocks of its own).
    assert (finding.position, finding.tokens_lost) == (0, 7 * 16)


def test_prompt_forms_and_their_errors():
    msgs = [{"role": "user", "content": "hi"}]
    tools = [{"type": "function", "function": {"name": "f"}}]
    assert prompt_request(msgs, tools=tools, model="m") == {
        "model": "m",
        "messages": msgs,
        "tools": tools,
    }
    assert prompt_request(msgs) == {"messages": msgs}
    assert prompt_request("text", model="m") == {"model": "m", "prompt": "text"}
    body = {"model": "m", "messages": msgs}
    assert prompt_request(body) is body
    with pytest.raises(OptionError, match="put tools and model inside it"):
        prompt_request(body, model="m")
    with pytest.raises(OptionError, match="cannot go with a rendered prompt"):
        prompt_request("text", tools=tools)
    with pytest.raises(OptionError, match="got tuple"):
        prompt_request(tuple(msgs))


@pytest.mark.parametrize(
    "name", ["", ".hidden", "../up", "a/b", "a\\b", "-rf", "x" * 129, "tab\there", 7]
)
def test_baseline_names_are_plain_file_names(tmp_path, name):
    with pytest.raises(OptionError, match="^name "):
        baseline_path(tmp_path, name)


def test_baseline_files_keep_key_order_and_reject_garbage(tmp_path):
    # key order is part of the prompt: written as given, indented, with a final newline
    assert baseline_bytes({"b": 1, "a": [2]}) == b'{\n  "b": 1,\n  "a": [\n    2\n  ]\n}\n'
    with pytest.raises(OptionError, match="not JSON data"):
        baseline_bytes({"messages": {1, 2}})
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"{not json")
    with pytest.raises(InputError, match="not JSON"):
        read_baseline(bad)
    bad.write_bytes(b"[1]")
    with pytest.raises(InputError, match="expected a request body"):
        read_baseline(bad)


def test_a_baseline_the_gate_rejects_is_named_in_the_error(tmp_path, bundle):
    messages = [{"role": "user", "content": "hi"}]
    (tmp_path / "edited.json").write_bytes(baseline_bytes({"messages": messages, "tools": 5}))
    request = prompt_request(messages)
    with pytest.raises(InputError, match=r"baseline/edited\.json: .*tools must be a list"):
        check_prompt("edited", request, tmp_path, bundle, Policy())


def test_the_plugin_is_opt_in():
    """No ``pytest11`` entry point: pytest runs that do not ask for the fixture never import
    kvtool; the example asks for it in its root conftest.py."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "pytest11" not in project.get("entry-points", {})
    assert not [ep for ep in entry_points(group="pytest11") if ep.value.startswith("kvtool")]
    assert f'pytest_plugins = ["{PLUGIN}"]' in (EXAMPLE / "conftest.py").read_text()
