"""`kvtool check` against hostile input and broken baselines (issue 12): a git baseline passes
only when its file provably does not exist at the ref; JUnit XML stays well-formed whatever the
fixtures hold; text from the input is printed literally, never read as rich markup."""

from __future__ import annotations

import io
import json
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import orjson
import pytest
from rich.console import Console
from typer.testing import CliRunner

from kvtool.check import junit_xml
from kvtool.check.baseline import Baseline, resolve_baseline
from kvtool.check.gate import CheckResult, Finding, FixtureRef, Policy
from kvtool.cli import app
from kvtool.errors import InputError
from kvtool.report.replay import render_replay
from kvtool.report.simulate import render_simulation


def _run(*args: str | Path):
    return _kvtool("check", *args)


def _kvtool(*args: str | Path):
    """The CLI, with a terminal wide enough that rich never wraps a line."""
    return CliRunner().invoke(app, list(map(str, args)), env={"COLUMNS": "500"})


def _write(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


def _fixture(fid: str, system: str, user: str = "hello") -> dict:
    return {
        "id": fid,
        "request": {
            "model": "m",
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": user},
            ],
        },
    }


SYSTEM = "You are a careful support agent. " * 8


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def _repo(tmp_path: Path) -> tuple[Path, Path]:
    """A git repository with one committed fixture file: (repo, fixture)."""
    repo = tmp_path / "app"
    fixture = _write(repo / "fixtures" / "a.jsonl", [_fixture("a", SYSTEM)])
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "fixtures")
    return repo, fixture


def _delete_object(repo: Path, oid: str) -> None:
    obj = repo / ".git" / "objects" / oid[:2] / oid[2:]
    obj.chmod(0o644)
    obj.unlink()


# ---------------------------------------------------------------------------------------------
# item 7: a git baseline passes as "new" only when the file provably does not exist at the ref


def test_git_baseline_absent_path_at_a_valid_commit_is_new(tmp_path, monkeypatch):
    repo, fixture = _repo(tmp_path)
    new = _write(repo / "fixtures" / "new.jsonl", [_fixture("n", SYSTEM)])
    out = _run(new, "--baseline", "git:HEAD", "--format", "json")
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["notes"] == [
        "HEAD:fixtures/new.jsonl does not exist: a new fixture file, nothing to compare"
    ]
    monkeypatch.chdir(repo)  # a typo in git:REF:PATH: absent at a valid commit, so "new" too
    found = resolve_baseline("git:HEAD:fixturs/a.jsonl", fixture, tmp_path)
    assert found == Baseline(path=None, label="HEAD:fixturs/a.jsonl")
    found = resolve_baseline("git:HEAD:fixtures/a.jsonl", fixture, tmp_path)
    assert found.path is not None and found.path.read_bytes() == fixture.read_bytes()


def test_git_baseline_bad_ref_exits_2(tmp_path, monkeypatch):
    repo, fixture = _repo(tmp_path)
    out = _run(fixture, "--baseline", "git:HEAD~5")
    assert out.exit_code == 2, out.output
    assert len(out.stderr.strip().splitlines()) == 1 and "git:HEAD~5" in out.stderr
    monkeypatch.chdir(repo)
    for spec in ("git:no-such-ref:fixtures/a.jsonl", "git:HEAD:../outside.jsonl"):
        with pytest.raises(InputError, match=re.escape(spec)):
            resolve_baseline(spec, fixture, tmp_path)


def test_git_baseline_missing_blob_exits_2_with_gits_message(tmp_path):
    repo, fixture = _repo(tmp_path)
    _delete_object(repo, _git(repo, "rev-parse", "HEAD:fixtures/a.jsonl"))
    out = _run(fixture, "--baseline", "git:HEAD")
    assert out.exit_code == 2, out.output
    (line,) = out.stderr.strip().splitlines()
    assert "git:HEAD" in line and "bad file" in line  # git's own words


def test_git_baseline_missing_tree_exits_2(tmp_path):
    repo, fixture = _repo(tmp_path)
    _delete_object(repo, _git(repo, "rev-parse", "HEAD:fixtures"))
    out = _run(fixture, "--baseline", "git:HEAD")
    assert out.exit_code == 2, out.output
    assert len(out.stderr.strip().splitlines()) == 1 and "git:HEAD" in out.stderr


def test_git_baseline_that_names_a_directory_exits_2(tmp_path, monkeypatch):
    repo, fixture = _repo(tmp_path)
    monkeypatch.chdir(repo)
    out = _run(fixture, "--baseline", "git:HEAD:fixtures")
    assert out.exit_code == 2, out.output
    assert "not a file" in out.stderr


# ---------------------------------------------------------------------------------------------
# item 8: JUnit XML is well-formed XML 1.0 whatever the fixtures and their paths hold

CONTROLS = "".join(chr(c) for c in range(0x20) if c not in (0x09, 0x0A, 0x0D)) + "\x7f"


def test_junit_xml_with_control_characters_parses(tmp_path):
    folder = tmp_path / f"ctl{CONTROLS[1:]}"  # a file name cannot hold NUL
    base = _write(folder / "base.jsonl", [_fixture(f"f{CONTROLS}", SYSTEM + "A" + CONTROLS)])
    cand = _write(folder / "cand.jsonl", [_fixture(f"f{CONTROLS}", SYSTEM + "B" + CONTROLS)])
    report = tmp_path / "junit.xml"
    out = _run(cand, "--baseline", base, "--format", "junit", "-o", report, "--no-volatile")
    assert out.exit_code == 1, out.output
    suite = ET.fromstring(report.read_bytes())
    (case,) = suite.findall("testcase")
    assert case.get("name").startswith("f\\x00\\x01") and "\\x1f\x7f (line 1)" in case.get("name")
    classname = case.get("classname")
    assert "ctl\\x01\\x02" in classname and classname.endswith("\\x1f\x7f/cand.jsonl")
    (failure,) = case.findall("failure")
    assert failure.get("type") == "system_edited" and failure.text


def test_junit_xml_escapes_every_text_and_attribute():
    bad = "x\x00\x0b\x1b\ufffe\uffff\ud800y\t\n\r"
    finding = Finding(
        check="baseline",
        cause=f"cause{bad}",
        file=bad,
        line=1,
        request_id=bad,
        path=bad,
        detail=bad,
        other_request_id=bad,
        diff={"removed": bad, "added": bad},
    )
    result = CheckResult(
        candidate=bad,
        baseline=bad,
        policy=Policy(),
        fixture_refs=[FixtureRef(line=1, request_id=bad)],
        findings=[finding],
    )
    text = junit_xml(result)
    text.encode("utf-8")  # no lone surrogate left
    failure = ET.fromstring(text.split("\n", 1)[1]).find("testcase/failure")
    assert failure.get("type") == "causex\\x00\\x0b\\x1b\\ufffe\\uffff\\ud800y\t\n\r"


# ---------------------------------------------------------------------------------------------
# item 9: text from the input is printed literally, never read as rich markup (or emoji codes)

MARKUP = "[/] [link=http://x]y[/link] [bold]b :thumbs_up:"


def test_check_prints_paths_ids_and_diffs_literally(tmp_path):
    folder = tmp_path / "[prod]"
    base = _write(folder / "x.jsonl", [_fixture(f"id {MARKUP}", "[/] one. " + SYSTEM)])
    out = _run(base, "--baseline", base)
    assert out.exit_code == 0, out.output  # the real verdict, not a crash read as "failed"
    assert f"kvtool check {base} against {base}:" in out.stdout
    cand = _write(folder / "[link=http://x]c.jsonl", [_fixture(f"id {MARKUP}", MARKUP + SYSTEM)])
    out = _run(cand, "--baseline", base)
    assert out.exit_code == 1, out.output
    assert f"kvtool check {cand} against {base}:" in out.stdout
    assert f"{cand}:1 id {MARKUP} [baseline] system_edited" in out.stdout
    assert "{+ [link=http://x]y[/link] [bold]b :thumbs_up:You+}" in out.stdout


def test_ingest_and_analyze_tables_print_input_literally(tmp_path):
    log = _write(
        tmp_path / "[prod]" / "[link=http://x]x.jsonl",
        [_fixture(f"r{i}", SYSTEM + MARKUP, f"question {i} {MARKUP}") for i in range(3)],
    )
    db = tmp_path / "kv.duckdb"
    out = _kvtool("ingest", log, "--db", db)
    assert out.exit_code == 0, out.output
    assert str(log) in out.stdout
    out = _kvtool("analyze", "--db", db)
    assert out.exit_code == 0, out.output
    assert "]y[/link] [bold]b :thumbs_up:" in out.stdout  # the end of the shared prefix


def test_simulate_and_replay_renderers_print_names_literally(tmp_path):
    console = Console(file=io.StringIO(), width=500)
    log = _write(tmp_path / "x.jsonl", [_fixture(f"r{i}", SYSTEM, str(i)) for i in range(3)])
    sim = _kvtool("simulate", log, "--db", tmp_path / "kv.duckdb", "--blocks", "100", "--json")
    assert sim.exit_code == 0, sim.output
    s = json.loads(sim.stdout)
    s["config"]["model"] = MARKUP  # names from a stored run
    s["config"]["usable_lower_tiers"] = {MARKUP: False}
    render_simulation(console, s)
    replay = {
        "run_id": 1,
        "endpoint": "http://127.0.0.1:1/[/]",
        "model": MARKUP,
        "requests_ok": 0,
        "requests_failed": 1,
        "errors": [f"r1: HTTP 500 {MARKUP}"],
        "config": {"launch_command": ["vllm", "serve", MARKUP]},
        "observed_hit_rate": None,
        "observed_hit_rate_usage": None,
        "predicted_hit_rate": None,
        "request_agreement": None,
    }
    render_replay(console, replay)
    text = console.file.getvalue()
    assert f"({MARKUP}); ideal hit rate" in text and f"loading from {MARKUP} is" in text
    assert f"against http://127.0.0.1:1/[/] ({MARKUP})" in text
    assert f"error: r1: HTTP 500 {MARKUP}" in text and f"vllm serve {MARKUP}" in text
