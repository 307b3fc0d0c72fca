"""The docs cannot drift from the code: every command page carries the current option table, every
documented JSON key is what the command prints, and every link between pages resolves."""

from __future__ import annotations

import json
import re
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from kvtool import cli_reference
from kvtool.cli import app
from kvtool.store import connect

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    return {_slug(m) for m in re.findall(r"^#+ (.+)$", page.read_text(), re.M)}


def documented_keys(page: Path, heading: str) -> set[str]:
    """The backticked names in the first column of the first table under ``heading``."""
    text = page.read_text()
    start = text.index(f"\n{heading}\n")
    keys: set[str] = set()
    in_table = False
    for line in text[start:].splitlines()[2:]:
        if line.startswith("|"):
            in_table = True
            first = line.split("|")[1]
            keys.update(re.findall(r"`([^`]+)`", first))
        elif in_table:
            break
    assert keys, f"no key table under {heading!r} in {page}"
    return keys


@pytest.mark.parametrize("name", sorted(cli_reference.commands()))
def test_command_page_is_current(name):
    page = DOCS / "commands" / f"{name}.md"
    assert page.exists(), f"no page for `kvtool {name}`: write {page}, then run the generator"
    text = page.read_text()
    assert cli_reference.MARKER in text
    command = cli_reference.commands()[name]
    assert text == cli_reference.render(text, name, command), (
        f"{page} is stale: run python -m kvtool.cli_reference"
    )
    for param in command.params:  # every option by name, with its help text
        if param.param_type_name == "option":
            assert f"`{param.opts[0]}`" in text
            assert (param.help or "").replace("|", "\\|") in text


def test_links_between_pages_resolve():
    pages = [ROOT / "README.md", *DOCS.rglob("*.md")]
    checked = 0
    for page in pages:
        for target in LINK.findall(page.read_text()):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            assert dest.exists(), f"{page.relative_to(ROOT)}: broken link {target}"
            if anchor and dest.suffix == ".md":
                assert anchor in _anchors(dest), f"{page.relative_to(ROOT)}: no #{anchor} in {path}"
            checked += 1
    assert checked > 50


def _json(args: list[str]) -> dict:
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    return orjson.loads(r.stdout)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("docs")
    log = tmp / "agent.jsonl"
    truth = _json(["generate", "--kind", "agent", "--sessions", "4", "-o", str(log), "--json"])
    return {"tmp": tmp, "log": log, "db": str(tmp / "kv.duckdb"), "generate": truth}


def test_analyze_and_simulate_keys_are_the_documented_ones(demo):
    db = demo["db"]
    plain = _json(["analyze", str(demo["log"]), "--db", db, "--json"])
    html = str(demo["tmp"] / "a.html")
    charts = _json(["analyze", "--db", db, "--json", "--html", html])
    documented = documented_keys(DOCS / "analyze.md", "## JSON keys (stable)")
    assert set(plain) == documented - {"charts"}
    assert set(charts) == documented
    one = _json(["simulate", "--db", db, "--blocks", "300", "--json"])
    sweep = _json(["simulate", "--db", db, "--blocks", "100,300", "--json"])
    sampled = _json(["simulate", "--db", db, "--blocks", "300", "--sample", "0.5", "--json"])
    documented = documented_keys(DOCS / "simulate.md", "## JSON keys (stable)")
    assert set(one) <= documented and set(sweep) <= documented and set(sampled) <= documented
    assert set(one) | set(sweep) == documented - {"sample"}  # only where a point was sampled
    assert "sample" in sampled


def test_json_md_keys_are_what_the_commands_print(demo, tmp_path):
    db, log = demo["db"], demo["log"]
    page = DOCS / "json.md"

    def keys(command: str) -> set[str]:
        return documented_keys(page, f"## `kvtool {command}`")

    assert set(demo["generate"]) == keys("generate --json")
    ingest = _json(["ingest", str(log), "--db", str(tmp_path / "i.duckdb"), "--json"])
    assert set(ingest) | set(ingest["files"][0]) == keys("ingest --json") | {
        "path", "file_id", "format", "lines", "records", "requests", "rejected",
        "reject_reasons", "skipped", "skip_reasons", "already_ingested", "warning",
    }  # fmt: skip
    assert set(ingest) == {"db", "files"}
    export = _json(["export", "--db", db, "-o", str(tmp_path / "m.jsonl"), "--json"])
    assert set(export) == keys("export --json")
    report = _json(["report", "--db", db, "-o", str(tmp_path / "r.html"), "--json"])
    assert set(report) == keys("report --json")
    r = CliRunner().invoke(app, ["check", str(log), "--format", "json"])
    assert r.exit_code in (0, 1), r.output
    assert set(json.loads(r.stdout)) == keys("check --format json")
    # a stored replay run (the real-engine replay is in test_replay.py): its validation's keys
    with connect(db) as con:
        ((signature,),) = con.execute("SELECT DISTINCT tokenizer FROM chains").fetchall()
        rows = con.execute("SELECT req_id, n_tokens FROM chains").fetchall()
        files = [f for (f,) in con.execute("SELECT file_id FROM files").fetchall()]
        config = {"block_size": 16, "num_blocks": 200, "tokenizer": signature, "file_ids": files}
        con.execute(
            "INSERT INTO replay_runs (run_id, endpoint, model, config, metrics) "
            "VALUES (7, 'http://x', 'm', ?, '{}')",
            [orjson.dumps(config).decode()],
        )
        for req_id, n in rows:
            con.execute(
                "INSERT INTO replay_requests VALUES (7, ?, 'r', true, NULL, 0, 0.01, 0.02, ?, 0)",
                [req_id, n],
            )
    validate = _json(["validate", "7", "--db", db, "--json"])
    assert set(validate) == keys("replay --json` and `kvtool validate --json")


def test_ingest_md_has_a_row_per_format():
    """docs/ingest.md's format table names every format the registry knows, and no other."""
    from kvtool.ingest.formats.registry import FORMATS

    rows = [
        line.split("|")[1].strip().strip("`")
        for line in (DOCS / "ingest.md").read_text().splitlines()
        if line.startswith("| `") and not line.startswith("| `--format`")
    ]
    assert sorted(rows) == sorted(FORMATS)
