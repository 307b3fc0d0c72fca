"""The gates where teams already run checks, each run for real: ``kvtool check --format sarif``
(validated against the SARIF 2.1.0 schema's required properties), the ``kvtool-check`` hook of
``.pre-commit-hooks.yaml`` (its entry run the way pre-commit runs it, in a temp git repository) and
the composite action ``action.yml`` (its check step's script run with the inputs as environment
variables, as the runner does; no act, no network).

SARIF requirements come from the OASIS SARIF 2.1.0 JSON schema
(docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json): sarifLog
requires version and runs; run requires tool; tool requires driver; toolComponent requires name;
reportingDescriptor requires id; result requires message; message requires text (or id);
artifactLocation needs a uri here; region.startLine is an integer >= 1; invocation requires
executionSuccessful; notification requires message.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import yaml
from typer.testing import CliRunner

from kvtool.cli import app

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "ci"
BIN = str(Path(sys.executable).parent)  # where the venv's `kvtool` script lives


def _records(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def _write(path: Path, records: list[dict]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


def _repo(tmp_path: Path) -> Path:
    """The worked example as a committed git repository (branch main)."""
    repo = tmp_path / "app"
    shutil.copytree(EXAMPLE, repo, ignore=shutil.ignore_patterns("__pycache__"))
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "prompts")
    return repo


def _break(fixtures: Path) -> None:
    """A pull request that reorders the tools (every fixture) and puts an ANSI escape into the
    system prompt of the second fixture."""
    records = _records(fixtures)
    for r in records:
        r["request"]["tools"].reverse()
    records[1]["request"]["messages"][0]["content"] += "\n\x1b[31mBe brief.\x1b[0m"
    _write(fixtures, records)


def _require(obj: object, keys: tuple[str, ...], what: str) -> dict:
    assert isinstance(obj, dict), f"{what} is not an object"
    missing = [k for k in keys if k not in obj]
    assert not missing, f"{what} lacks {missing}"
    return obj


def _validate_sarif(log: object) -> dict:
    """Hand-written checks of what the SARIF 2.1.0 schema requires (see the module docstring)."""
    log = _require(log, ("version", "runs", "$schema"), "sarifLog")
    assert log["version"] == "2.1.0" and "sarif-schema-2.1.0" in log["$schema"]
    assert isinstance(log["runs"], list) and len(log["runs"]) == 1
    run = _require(log["runs"][0], ("tool", "results"), "run")
    driver = _require(_require(run["tool"], ("driver",), "tool")["driver"], ("name",), "driver")
    assert driver["name"] == "kvtool"
    rules = driver.get("rules", [])
    ids = [_require(r, ("id",), "reportingDescriptor")["id"] for r in rules]
    assert len(ids) == len(set(ids)), "duplicate rule ids"
    for inv in run.get("invocations", []):
        _require(inv, ("executionSuccessful",), "invocation")
        for n in inv.get("toolExecutionNotifications", []):
            assert isinstance(_require(n, ("message",), "notification")["message"]["text"], str)
    for res in run["results"]:
        _require(res, ("message", "ruleId", "level", "locations"), "result")
        assert isinstance(_require(res["message"], ("text",), "message")["text"], str)
        assert res["level"] in ("none", "note", "warning", "error")
        assert ids[res["ruleIndex"]] == res["ruleId"]
        phys = _require(res["locations"][0], ("physicalLocation",), "location")["physicalLocation"]
        _require(phys, ("artifactLocation", "region"), "physicalLocation")
        uri = _require(phys["artifactLocation"], ("uri",), "artifactLocation")["uri"]
        assert isinstance(uri, str) and " " not in uri and "\\" not in uri
        line = _require(phys["region"], ("startLine",), "region")["startLine"]
        assert isinstance(line, int) and line >= 1
    return run


def _uri(result: dict) -> str:
    return result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]


def test_sarif_on_a_failing_fixture_pair(tmp_path, monkeypatch):
    base = _write(tmp_path / "base.jsonl", _records(EXAMPLE / "fixtures" / "support.jsonl"))
    cand = tmp_path / "prompts dir" / "cand.jsonl"
    cand.parent.mkdir()
    shutil.copy(base, cand)
    _break(cand)
    monkeypatch.chdir(tmp_path)  # URIs are relative to the working directory
    runner = CliRunner()
    out = runner.invoke(app, ["check", str(cand), "--baseline", str(base), "--format", "sarif"])
    assert out.exit_code == 1, out.output
    raw = out.stdout
    assert not re.search(r"[\x00-\x09\x0b-\x1f]", raw), "a raw control character in the SARIF"
    run = _validate_sarif(json.loads(raw))
    js = runner.invoke(app, ["check", str(cand), "--baseline", str(base), "--format", "json"])
    findings = json.loads(js.stdout)["findings"]
    assert len(findings) >= 3
    got = [
        (r["ruleId"], r["locations"][0]["physicalLocation"]["region"]["startLine"])
        for r in run["results"]
    ]
    assert got == [(f["cause"], f["line"]) for f in findings]
    assert {c for c, _ in got} >= {"tools_reordered"}
    assert all(r["level"] == "error" for r in run["results"])
    assert {_uri(r) for r in run["results"]} == {"prompts%20dir/cand.jsonl"}
    rules = [r["id"] for r in run["tool"]["driver"]["rules"]]
    assert rules == sorted({f["cause"] for f in findings})
    assert any("system_edited" in r["message"]["text"] for r in run["results"])
    assert run["invocations"][0]["exitCode"] == 1
    # a pass: no results, no rules, exit 0; -o writes the same document
    report = tmp_path / "ok.sarif"
    ok = runner.invoke(
        app, ["check", str(base), "--baseline", str(base), "--format", "sarif", "-o", str(report)]
    )
    assert ok.exit_code == 0 and ok.stdout == ""
    run = _validate_sarif(json.loads(report.read_text()))
    assert run["results"] == [] and run["tool"]["driver"]["rules"] == []
    assert run["invocations"][0]["exitCode"] == 0


def _hook() -> dict:
    hooks = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    (hook,) = (h for h in hooks if h["id"] == "kvtool-check")
    return hook


def _run_hook(repo: Path, files: list[str], args: list[str] | None = None):
    """The hook's entry as pre-commit runs it: entry words, then args, then the file names."""
    hook = _hook()
    cmd = [*shlex.split(hook["entry"]), *(hook.get("args", []) if args is None else args), *files]
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ["PATH"]}
    return subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=120)


def test_pre_commit_hook_runs_on_changed_fixtures(tmp_path):
    hook = _hook()
    assert hook["language"] == "python" and hook.get("pass_filenames", True)
    assert re.search(hook["files"], "fixtures/support.jsonl")
    assert not re.search(hook["files"], "support_agent.py")
    repo = _repo(tmp_path)
    target = "fixtures/support.jsonl"
    unchanged = _run_hook(repo, [target])
    assert unchanged.returncode == 0, unchanged.stdout + unchanged.stderr
    assert "PASS" in unchanged.stdout
    _write(repo / "fixtures" / "extra.jsonl", _records(repo / target))  # new: nothing to compare
    _break(repo / target)
    broken = _run_hook(repo, ["fixtures/extra.jsonl", target])
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "tools_reordered" in broken.stdout and "PASS" in broken.stdout  # extra.jsonl passes
    as_json = _run_hook(repo, [target], ["--baseline=git:HEAD", "--format=json"])
    assert as_json.returncode == 1
    assert {f["cause"] for f in json.loads(as_json.stdout)["findings"]} >= {"tools_reordered"}
    (repo / "fixtures" / "bad.jsonl").write_text("{not json\n")
    worst = _run_hook(repo, [target, "fixtures/bad.jsonl"])
    assert worst.returncode == 2  # unusable input outranks a finding


def _action() -> dict:
    return yaml.safe_load((REPO / "action.yml").read_text())


def test_action_inputs_are_used_by_its_steps():
    action = _action()
    assert action["runs"]["using"] == "composite"
    steps_text = yaml.safe_dump(action["runs"]["steps"])
    for name in action["inputs"]:
        assert f"inputs.{name}" in steps_text, f"input {name} is never used"
    used = set(re.findall(r"inputs\.([\w-]+)", yaml.safe_dump(action)))
    assert used <= set(action["inputs"]), used - set(action["inputs"])
    uses = [s["uses"] for s in action["runs"]["steps"] if "uses" in s]
    assert any(u.startswith("actions/setup-python@") for u in uses)
    assert any(u.startswith("github/codeql-action/upload-sarif@") for u in uses)
    install = next(s for s in action["runs"]["steps"] if "pip install" in s.get("run", ""))
    assert install["env"]["KVTOOL_SOURCE"] == "${{ github.action_path }}"
    for step in action["runs"]["steps"]:  # inputs reach scripts only through env, never inline
        assert "${{" not in step.get("run", ""), step.get("name")


def _step_env(step: dict, inputs: dict[str, str], outputs: dict[str, str]) -> dict[str, str]:
    def sub(value: str) -> str:
        value = re.sub(r"\$\{\{\s*inputs\.([\w-]+)\s*\}\}", lambda m: inputs[m.group(1)], value)
        return re.sub(
            r"\$\{\{\s*steps\.check\.outputs\.([\w-]+)\s*\}\}", lambda m: outputs[m.group(1)], value
        )

    return {k: sub(str(v)) for k, v in step.get("env", {}).items()}


def _run_action(repo: Path, tmp_path: Path, **given: str) -> tuple[int, dict, Path]:
    """The action's check and verdict steps run as the runner runs a composite bash step."""
    action = _action()
    inputs = {k: str(v.get("default", "")) for k, v in action["inputs"].items()}
    inputs.update(given)
    steps = {s.get("id") or s.get("name"): s for s in action["runs"]["steps"]}
    out_file = tmp_path / "github_output"
    out_file.write_text("")
    base_env = {k: v for k, v in os.environ.items() if k != "GITHUB_BASE_REF"}
    base_env |= {"PATH": BIN + os.pathsep + os.environ["PATH"], "GITHUB_OUTPUT": str(out_file)}

    def bash(step: dict, outputs: dict[str, str]) -> subprocess.CompletedProcess:
        assert step["shell"] == "bash"
        script = tmp_path / "step.sh"
        script.write_text(step["run"])
        env = base_env | _step_env(step, inputs, outputs)
        cmd = ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)]
        return subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=120)

    check = bash(steps["check"], {})
    assert check.returncode == 0, check.stderr  # the step itself never fails: upload comes first
    outputs = dict(line.split("=", 1) for line in out_file.read_text().splitlines())
    verdict = bash(steps["verdict"], outputs)
    return verdict.returncode, outputs, repo / inputs["sarif-file"]


def test_action_check_step_runs_for_real(tmp_path):
    repo = _repo(tmp_path)
    rc, outputs, sarif = _run_action(repo, tmp_path, fixtures="fixtures/support.jsonl")
    assert rc == 0 and outputs == {"exit-code": "0"}
    assert _validate_sarif(json.loads(sarif.read_text()))["results"] == []
    _git(repo, "checkout", "-q", "-b", "feature")
    _break(repo / "fixtures" / "support.jsonl")
    rc, outputs, sarif = _run_action(
        repo, tmp_path, fixtures="fixtures/support.jsonl", **{"baseline-ref": "main"}
    )
    assert rc == 1 and outputs == {"exit-code": "1"}
    run = _validate_sarif(json.loads(sarif.read_text()))
    assert {r["ruleId"] for r in run["results"]} >= {"tools_reordered"}
    assert {_uri(r) for r in run["results"]} == {"fixtures/support.jsonl"}
    # extra args reach kvtool check: a loose gate accepts the tool reorder; the edited system
    # prompt of one fixture still fails self-consistency
    rc, outputs, sarif = _run_action(
        repo, tmp_path, fixtures="fixtures/support.jsonl", args="--max-loss 100% --no-volatile"
    )
    assert rc == 1 and outputs == {"exit-code": "1"}
    results = _validate_sarif(json.loads(sarif.read_text()))["results"]
    assert results and {r["properties"]["check"] for r in results} == {"consistency"}
