"""Golden `--json` outputs: every documented key keeps its value while the code moves.

Each case runs one command through the CLI (flags and JSON keys are the stable contract,
docs/json.md) on bundled data: the demo agent trace, the Mooncake FAST'25 traces and the CI
example fixtures. The expected objects in ``tests/golden/`` were written by the code before the
restructuring of issue 11; regenerate them only for a deliberate change of results:
``python tests/test_golden.py --write`` (and say why in the commit).
"""

from __future__ import annotations

import hashlib
import math
import sys
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from kvtool.cli import app

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).with_name("golden")
DEMO = ROOT / "traces" / "demo-agent.jsonl.gz"
MOONCAKE = ROOT / "traces" / "mooncake"
FIXTURES = ROOT / "examples" / "ci" / "fixtures" / "support.jsonl"
CONVERSATION = MOONCAKE / "conversation_trace.jsonl.gz"
SYNTHETIC = MOONCAKE / "synthetic_trace.jsonl.gz"


def _db(tmp: Path, name: str) -> list[str]:
    return ["--db", str(tmp / f"{name}.duckdb")]


def _edited_fixtures(tmp: Path) -> Path:
    """The CI fixtures with a clock in the system prompt and the tool catalog reordered."""
    out = []
    for line in FIXTURES.read_bytes().splitlines():
        rec = orjson.loads(line)
        req = rec["request"]
        req["messages"][0]["content"] = (
            "Now: 2026-11-30T10:15:00Z.\n" + req["messages"][0]["content"]
        )
        req["tools"] = list(reversed(req.get("tools") or []))
        out.append(orjson.dumps(rec))
    path = tmp / "candidate.jsonl"
    path.write_bytes(b"\n".join(out) + b"\n")
    return path


def _export(tmp: Path, args: list[str]) -> dict:
    target = tmp / "export.jsonl"
    out = _run([*args, "-o", str(target)])
    data = target.read_bytes()
    return {**out, "out": "<out>", "sha256": hashlib.sha256(data).hexdigest()}


def _run(args: list[str], code: int = 0) -> dict:
    result = CliRunner().invoke(app, [*args, "--json"] if args[0] != "check" else args)
    assert result.exit_code == code, result.output
    return orjson.loads(result.stdout)


def _cases(tmp: Path) -> dict[str, dict]:
    """name -> the JSON object the case prints (paths made relative to the repo)."""
    demo_db = _db(tmp, "demo")
    conv_db = _db(tmp, "conv")
    cases = {
        "analyze_demo": lambda: _run(["analyze", str(DEMO), *demo_db, "--html", str(tmp / "a.h")]),
        "analyze_demo_again": lambda: _run(["analyze", *demo_db, "--block-size", "64"]),
        "simulate_demo_hbm_sweep": lambda: _run(
            ["simulate", *demo_db, "--tier-gb", "hbm=0.2,0.4,0.8,1.6"]
        ),
        "simulate_demo_dram_sweep": lambda: _run(
            ["simulate", *demo_db, "--tier-gb", "hbm=0.8,dram=0,0.4,0.8,1.6"]
        ),
        "simulate_demo_replicas": lambda: _run(
            ["simulate", *demo_db, "--tier-gb", "hbm=0.3,dram=1", "--policy", "s3fifo"]
            + ["--replicas", "2", "--routing", "session", "--concurrency", "4"]
            + ["--write-policy", "through", "--model", "Llama-3.1-8B"]
        ),
        "export_demo": lambda: _export(tmp, ["export", *demo_db, "--block-size", "64"]),
        "analyze_conversation": lambda: _run(["analyze", str(CONVERSATION), *conv_db]),
        "analyze_synthetic": lambda: _run(["analyze", str(SYNTHETIC), *_db(tmp, "syn")]),
        "simulate_conversation_blocks": lambda: _run(
            ["simulate", *conv_db, "--blocks", "100,1000,4000,20000"]
        ),
        "simulate_conversation_lfu": lambda: _run(
            ["simulate", *conv_db, "--blocks", "2000", "--policy", "lfu", "--concurrency", "8"]
        ),
        "export_conversation": lambda: _export(tmp, ["export", *conv_db]),
        "check_fixtures_same": lambda: _run(
            ["check", str(FIXTURES), "--baseline", str(FIXTURES), "--format", "json"]
        ),
        "check_fixtures_edited": lambda: _run(
            ["check", str(_edited_fixtures(tmp)), "--baseline", str(FIXTURES)]
            + ["--format", "json", "--max-loss", "5%"],
            code=1,
        ),
    }
    return {name: _relative(fn(), tmp) for name, fn in cases.items()}


def _relative(value: object, tmp: Path) -> object:
    """Paths under tmp or the repo as placeholders (they differ per run and per clone)."""
    if isinstance(value, dict):
        return {k: _relative(v, tmp) for k, v in value.items()}
    if isinstance(value, list):
        return [_relative(v, tmp) for v in value]
    if isinstance(value, str):
        return value.replace(str(tmp), "<tmp>").replace(str(ROOT), "<repo>")
    return value


def _same(got: object, want: object, where: str = "") -> None:
    if isinstance(want, float) and isinstance(got, int | float):
        assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12), f"{where}: {got} != {want}"
    elif isinstance(want, dict):
        assert isinstance(got, dict), f"{where}: {got!r} is not an object"
        missing = want.keys() - got.keys()
        assert not missing, f"{where}: keys missing: {sorted(missing)}"
        for k, v in want.items():
            _same(got[k], v, f"{where}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: length differs"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _same(g, w, f"{where}[{i}]")
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    return _cases(tmp_path_factory.mktemp("golden"))


NAMES = sorted(p.stem for p in GOLDEN.glob("*.json"))


def test_every_case_has_a_golden(outputs: dict[str, dict]) -> None:
    assert sorted(outputs) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_json_unchanged(outputs: dict[str, dict], name: str) -> None:
    want = orjson.loads((GOLDEN / f"{name}.json").read_bytes())
    _same(outputs[name], want, name)


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/test_golden.py --write")
    import tempfile

    GOLDEN.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as d:
        for name, value in _cases(Path(d)).items():
            text = orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
            (GOLDEN / f"{name}.json").write_bytes(text + b"\n")
            print(name, len(text))
