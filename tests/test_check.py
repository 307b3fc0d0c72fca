"""`kvtool check`, the CI gate: every cause fails with its name, unchanged and append-only changes
pass, git baselines, the policy options, and each output format."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

import kvtool
from kvtool.check import Policy
from kvtool.cli import app
from kvtool.generate import generate

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "ci"
STABLE_DATE = ["--allow", r"^2026-11-01$"]  # the generator's "Current date" line is stable here


def _run(*args: str):
    return CliRunner().invoke(app, ["check", *map(str, args)])


def _records(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


@pytest.fixture(scope="module")
def injected(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], dict[str, dict]]:
    """A generated agent log with one session per break cause, and its records by id."""
    log = tmp_path_factory.mktemp("gen") / "agent.jsonl"
    truth = generate("agent", 14, 21, log, steps=(3, 6), breakers=1)
    by_id = {r["id"]: r for r in _records(log)}
    first = {}  # the first break of each cause (volatile causes break every later step too)
    for b in truth.breaks:
        first.setdefault(b["cause"], b)
    return list(first.values()), by_id


def _write(path: Path, records: list[dict]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


def _fixture(record: dict, fixture_id: str) -> dict:
    return {"id": fixture_id, "request": record["request"]}


def test_every_cause_fails_with_its_name(injected, tmp_path):
    rows, by_id = injected
    assert len(rows) == 11
    for b in rows:
        base = _write(tmp_path / "base.jsonl", [_fixture(by_id[b["predecessor_id"]], "f")])
        cand = _write(tmp_path / "cand.jsonl", [_fixture(by_id[b["request_id"]], "f")])
        out = _run(cand, "--baseline", base, "--format", "json", *STABLE_DATE)
        assert out.exit_code == 1, (b, out.output)
        result = json.loads(out.stdout)
        found = [f for f in result["findings"] if f["check"] == "baseline"]
        assert [(f["cause"], f["path"]) for f in found] == [(b["cause"], b["path"])], b
        assert found[0]["tokens_lost"] > 0 and found[0]["request_id"] == "f"
        assert found[0]["line"] == 1 and found[0]["other_request_id"] == "f"


def test_unchanged_and_append_only_pass(injected, tmp_path):
    rows, by_id = injected
    record = by_id[rows[0]["predecessor_id"]]
    base = _write(tmp_path / "base.jsonl", [_fixture(record, "a")])
    assert _run(base, "--baseline", base, *STABLE_DATE).exit_code == 0
    longer = json.loads(json.dumps(record))
    longer["request"]["messages"].append({"role": "user", "content": "One more thing."})
    appended = json.loads(json.dumps(record))
    appended["request"]["messages"][-1]["content"] += "\n(also check the logs)"
    for variant in (longer, appended):
        cand = _write(tmp_path / "cand.jsonl", [_fixture(variant, "a")])
        out = _run(cand, "--baseline", base, *STABLE_DATE)
        assert out.exit_code == 0, out.output
        assert "PASS" in out.stdout


def test_volatile_content_in_the_head_fails_even_alone(tmp_path):
    sys.path.insert(0, str(EXAMPLE))
    try:
        from support_agent import SYSTEM_PROMPT, build_request
    finally:
        sys.path.remove(str(EXAMPLE))
    clean = _write(tmp_path / "clean.jsonl", [{"id": "x", "request": build_request("hi")}])
    assert _run(clean).exit_code == 0  # its fixed policy date is not volatile
    stamped = build_request("hi")
    stamped["messages"][0]["content"] = SYSTEM_PROMPT + "\nCurrent time: 2026-11-23 10:41:07 UTC"
    path = _write(tmp_path / "stamped.jsonl", [{"id": "x", "request": stamped}])
    out = _run(path, "--format", "json")
    assert out.exit_code == 1
    (finding,) = json.loads(out.stdout)["findings"]
    assert finding["check"] == "volatile" and finding["cause"] == "volatile_timestamp"
    assert finding["path"] == "messages[0].content" and "10:41:07" in finding["detail"]
    assert _run(path, "--allow", r"\d\d:\d\d:\d\d").exit_code == 0
    assert _run(path, "--no-volatile").exit_code == 0


def test_renders_that_do_not_share_their_prefix_fail_self_consistency(tmp_path):
    sys.path.insert(0, str(EXAMPLE))
    try:
        from support_agent import SYSTEM_PROMPT, build_request
    finally:
        sys.path.remove(str(EXAMPLE))
    records = []
    for i, minute in enumerate((3, 9, 17)):
        req = build_request(f"question {i}")
        req["messages"][0]["content"] = SYSTEM_PROMPT.replace(
            "(effective 2024-03-01)", f"(rendered 2026-11-23T10:{minute:02d}:00Z)"
        )
        records.append({"id": f"render-{i}", "request": req})
    path = _write(tmp_path / "renders.jsonl", records)
    result = kvtool.check(path, policy=Policy(volatile=False))
    assert not result.passed
    assert [(f.check, f.cause, f.request_id, f.other_request_id) for f in result.findings] == [
        ("consistency", "volatile_timestamp", "render-1", "render-0"),
        ("consistency", "volatile_timestamp", "render-2", "render-1"),
    ]
    assert all(f.tokens_lost > 0 and f.path == "messages[0].content" for f in result.findings)


def test_max_loss_and_min_stable_tokens(injected, tmp_path):
    rows, by_id = injected
    b = next(r for r in rows if r["cause"] == "system_edited")
    base = _write(tmp_path / "base.jsonl", [_fixture(by_id[b["predecessor_id"]], "f")])
    cand = _write(tmp_path / "cand.jsonl", [_fixture(by_id[b["request_id"]], "f")])
    out = _run(cand, "--baseline", base, "--format", "json", *STABLE_DATE)
    (finding,) = json.loads(out.stdout)["findings"]
    lost, shared = finding["tokens_lost"], finding["shared_tokens"]
    assert lost % 16 == 0 and 0 < shared
    assert _run(cand, "--baseline", base, "--max-loss", lost, *STABLE_DATE).exit_code == 0
    assert _run(cand, "--baseline", base, "--max-loss", lost - 16, *STABLE_DATE).exit_code == 1
    assert _run(cand, "--baseline", base, "--max-loss", "100%", *STABLE_DATE).exit_code == 0
    assert _run(cand, "--baseline", base, "--max-loss", "1%", *STABLE_DATE).exit_code == 1
    loose = ["--max-loss", "100%", *STABLE_DATE]
    assert _run(cand, "--baseline", base, *loose, "--min-stable-tokens", shared).exit_code == 0
    out = _run(cand, "--baseline", base, *loose, "--min-stable-tokens", shared + 1)
    assert out.exit_code == 1 and "--min-stable-tokens" in out.stdout
    bad = _run(cand, "--baseline", base, "--max-loss", "lots")
    assert bad.exit_code == 2 and "--max-loss 'lots'" in bad.stderr


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


def test_git_ref_baseline(tmp_path, monkeypatch):
    repo = tmp_path / "app"
    shutil.copytree(EXAMPLE, repo, ignore=shutil.ignore_patterns("__pycache__"))
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "prompts")
    fixtures = repo / "fixtures" / "support.jsonl"
    assert _run(fixtures, "--baseline", "git:HEAD").exit_code == 0
    # a pull request that reorders the tools
    records = _records(fixtures)
    for r in records:
        r["request"]["tools"].reverse()
    _write(fixtures, records)
    out = _run(fixtures, "--baseline", "git:HEAD", "--format", "json")
    assert out.exit_code == 1
    result = json.loads(out.stdout)
    assert result["baseline"] == "HEAD:fixtures/support.jsonl"
    assert {f["cause"] for f in result["findings"]} == {"tools_reordered"}
    assert len(result["findings"]) == 3
    monkeypatch.chdir(repo)  # git:REF:PATH names PATH in the repository of the working directory
    assert _run(fixtures, "--baseline", "git:HEAD:fixtures/support.jsonl").exit_code == 1
    elsewhere = tmp_path / "rendered.jsonl"  # e.g. a pre-commit hook rendering to a temp file
    shutil.copy(fixtures, elsewhere)
    assert _run(elsewhere, "--baseline", "git:HEAD:fixtures/support.jsonl").exit_code == 1
    # a fixture file that does not exist at the baseline is new: nothing to compare
    new = repo / "fixtures" / "new.jsonl"
    _write(new, records)
    out = _run(new, "--baseline", "git:HEAD")
    assert out.exit_code == 0 and "does not exist" in out.stdout
    bad = _run(fixtures, "--baseline", "git:no-such-ref")
    assert bad.exit_code == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "no-such-ref" in bad.stderr


def test_output_formats(injected, tmp_path):
    rows, by_id = injected
    b = next(r for r in rows if r["cause"] == "tool_removed")
    base = _write(
        tmp_path / "base.jsonl",
        [_fixture(by_id[b["predecessor_id"]], "one"), _fixture(by_id[b["predecessor_id"]], "two")],
    )
    cand = _write(
        tmp_path / "cand.jsonl",
        [_fixture(by_id[b["predecessor_id"]], "one"), _fixture(by_id[b["request_id"]], "two")],
    )
    gh = _run(cand, "--baseline", base, "--format", "github", *STABLE_DATE)
    assert gh.exit_code == 1
    errors = [line for line in gh.stdout.splitlines() if line.startswith("::error ")]
    # fixture two lost the tool against its baseline, and against fixture one of the same file
    assert len(errors) == 2
    for line in errors:
        assert line.startswith(f"::error file={cand},line=2,title=kvtool check%3A tool_removed::")
    assert "vs the baseline" in errors[0] and "vs request 'one'" in errors[1]
    assert gh.stdout.splitlines()[-1].startswith("::notice ")

    report = tmp_path / "junit.xml"
    out = _run(cand, "--baseline", base, "--format", "junit", "-o", report, *STABLE_DATE)
    assert out.exit_code == 1 and out.stdout == ""
    suite = ET.parse(report).getroot()
    assert (suite.get("tests"), suite.get("failures")) == ("2", "1")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["one (line 1)", "two (line 2)"]
    assert cases[0].find("failure") is None
    assert cases[1].find("failure").get("type") == "tool_removed"

    js = _run(cand, "--baseline", base, "--format", "json", *STABLE_DATE)
    result = json.loads(js.stdout)
    assert result["passed"] is False and result["compared"] == 2
    assert result["paired_by"] == "request id"

    text = _run(cand, "--baseline", base, *STABLE_DATE)
    assert "tool_removed" in text.stdout and "FAIL" in text.stdout


def test_pairing_by_line_order_and_unmatched(tmp_path):
    sys.path.insert(0, str(EXAMPLE))
    try:
        from support_agent import build_request
    finally:
        sys.path.remove(str(EXAMPLE))
    base = _write(tmp_path / "b.jsonl", [build_request("a"), build_request("b")])
    cand = _write(tmp_path / "c.jsonl", [build_request("a")])
    out = _run(cand, "--baseline", base, "--format", "json")
    result = json.loads(out.stdout)
    assert out.exit_code == 0 and result["paired_by"] == "line order"
    assert result["compared"] == 1 and len(result["unmatched_baseline"]) == 1


def test_bad_fixtures_exit_2_with_one_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n{not json\n')
    out = _run(bad)
    assert out.exit_code == 2 and len(out.stderr.strip().splitlines()) == 1
    assert f"{bad}:2:" in out.stderr
    assert _run(tmp_path / "missing.jsonl").exit_code == 2
    assert _run(bad, "--baseline", tmp_path / "nope.jsonl").exit_code == 2
    ok = _write(tmp_path / "ok.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}])
    assert _run(ok, "--format", "xml").exit_code == 2


def test_the_documented_example_renders_and_passes(tmp_path):
    """docs/ci.md's example: render the app's prompts, compare with the committed fixtures;
    then a change that stamps the time into the system prompt fails."""
    app_dir = tmp_path / "app"
    shutil.copytree(EXAMPLE, app_dir, ignore=shutil.ignore_patterns("__pycache__"))
    rendered = subprocess.run(
        [sys.executable, "render_fixtures.py"], cwd=app_dir, capture_output=True, check=True
    ).stdout
    out = app_dir / "rendered.jsonl"
    out.write_bytes(rendered)
    committed = app_dir / "fixtures" / "support.jsonl"
    assert rendered == committed.read_bytes()
    assert _run(out, "--baseline", committed).exit_code == 0
    source = app_dir / "support_agent.py"
    source.write_text(
        source.read_text().replace(
            '    messages = [{"role": "system", "content": SYSTEM_PROMPT}',
            "    import datetime\n"
            "    now = datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')\n"
            '    messages = [{"role": "system", "content": SYSTEM_PROMPT + f"\\nNow: {now}"}',
        )
    )
    rendered = subprocess.run(
        [sys.executable, "render_fixtures.py"], cwd=app_dir, capture_output=True, check=True
    ).stdout
    out.write_bytes(rendered)
    result = _run(out, "--baseline", committed, "--format", "json")
    assert result.exit_code == 1
    causes = {f["cause"] for f in json.loads(result.stdout)["findings"]}
    assert causes == {"system_edited", "volatile_timestamp"}
