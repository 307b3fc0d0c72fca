"""Chat templates that raise for one request, and tokenizer configs that cannot be read: the
request is set aside with the template's message (stored once, reported on every analyze), the
CI gate refuses to pass what it could not render, and a bad config is one line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kvtool.analyze import analyze
from kvtool.cli import app
from kvtool.errors import InputError, NotFoundError
from kvtool.store import connect, one
from kvtool.tokenize import default_tokenizer_path, load_tokenizer

ALTERNATE = "Conversation roles must alternate user/assistant/user/assistant/..."
TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('" + ALTERNATE + "') }}{% endif %}"
    "{% if m['role'] == 'user' %}<｜User｜>{{ m['content'] }}"
    "{% else %}<｜Assistant｜>{{ m['content'] }}<｜end▁of▁sentence｜>{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<｜Assistant｜>{% endif %}"
)
HEAD = "You are a support agent for a prefix cache. " * 8


def tokdir(tmp_path: Path, config: str | None = None) -> Path:
    """A tokenizer directory: the bundled tokenizer.json (linked) and a tokenizer_config.json."""
    d = tmp_path / "tok"
    d.mkdir(exist_ok=True)
    (d / "tokenizer.json").symlink_to(default_tokenizer_path())
    if config is None:
        config = json.dumps({"chat_template": TEMPLATE, "bos_token": "<｜begin▁of▁sentence｜>"})
    (d / "tokenizer_config.json").write_text(config, encoding="utf-8")
    return d


def log(tmp_path: Path, bad_line: int = 3) -> Path:
    """Five chat requests; the one on ``bad_line`` sends two user messages in a row."""
    lines = []
    for i in range(1, 6):
        msgs = [
            {"role": "user", "content": HEAD + f"question {i}"},
            {"role": "assistant", "content": f"answer {i}"},
            {"role": "user", "content": f"follow-up {i}"},
        ]
        if i == bad_line:
            msgs[1] = {"role": "user", "content": "[bold]again[/bold]"}
        lines.append(json.dumps({"id": f"r{i}", "timestamp": i, "model": "m", "messages": msgs}))
    path = tmp_path / "fixtures.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def analyzed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A database after one analyze of the five requests, and that analyze's JSON."""
    tmp = tmp_path_factory.mktemp("template")
    db = tmp / "kv.duckdb"
    return db, analyze([log(tmp)], db=db, tokenizer=str(tokdir(tmp))).to_json()


def test_a_raising_template_sets_one_request_aside(analyzed: tuple[Path, dict]) -> None:
    _, first = analyzed
    assert first["requests"] == 4
    t = first["tokenization"]
    assert t["requests"] == 4 and t["template_errors"] == 1
    (example,) = t["template_error_examples"]
    assert example["request_id"] == "r3" and example["line"] == 3
    assert ALTERNATE in example["message"]


def test_a_second_analyze_neither_retries_nor_forgets(analyzed: tuple[Path, dict]) -> None:
    db, _ = analyzed
    again = analyze(db=db).to_json()
    assert again["requests"] == 4
    assert again["tokenization"]["requests"] == 0
    assert again["tokenization"]["template_errors"] == 1
    con = connect(db)
    assert one(con, "SELECT count(*) FROM template_errors")[0] == 1
    con.close()


def test_a_template_that_raises_for_every_request_is_a_workload_error(tmp_path: Path) -> None:
    config = json.dumps({"chat_template": "{{ raise_exception('no chats here') }}"})
    tok, path = tokdir(tmp_path, config), log(tmp_path)
    out = CliRunner().invoke(
        app, ["analyze", str(path), "--db", str(tmp_path / "kv.duckdb"), "--tokenizer", str(tok)]
    )
    assert out.exit_code == 2, out.output
    assert "no chats here" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_check_exits_2_naming_the_fixture_a_template_cannot_render(tmp_path: Path) -> None:
    tok, path = tokdir(tmp_path), log(tmp_path)
    out = CliRunner().invoke(app, ["check", str(path), "--tokenizer", str(tok)])
    assert out.exit_code == 2, out.output
    line = out.stderr.strip()
    assert len(line.splitlines()) == 1
    assert f"{path}:3" in line and ALTERNATE in line


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ('{"chat_template": "{% for %}"', "not valid JSON"),
        ('["a list"]', "not a JSON object"),
        (json.dumps({"chat_template": 42}), "chat_template must be a string"),
        (json.dumps({"chat_template": [{"name": "default"}]}), "chat_template"),
        (json.dumps({"chat_template": "{% for m in messages %}"}), "chat template"),
        (b"\xff\xfe{}", "not valid UTF-8"),
    ],
)
def test_a_malformed_tokenizer_config_is_one_line(
    tmp_path: Path, config: str | bytes, words: str
) -> None:
    tok = tokdir(tmp_path, "{}")
    cfg = tok / "tokenizer_config.json"
    cfg.write_bytes(config if isinstance(config, bytes) else config.encode())
    with pytest.raises((InputError, NotFoundError), match=words):
        load_tokenizer(str(tok))
    out = CliRunner().invoke(
        app,
        ["analyze", str(log(tmp_path)), "--db", str(tmp_path / "kv.duckdb")]
        + ["--tokenizer", str(tok)],
    )
    assert out.exit_code == 2, out.output
    assert words in out.stderr and len(out.stderr.strip().splitlines()) == 1
