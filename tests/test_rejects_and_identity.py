"""What analyze and simulate say about the input they ingest: a mostly rejected file warns and
exits 2 after the output, as ``kvtool ingest`` does; the JSON names a hash trace's block identity;
a block size that is a multiple of a hash trace's own is analyzed (real DuckDB files, the CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from kvtool import analyze
from kvtool.cli import app


def _line(ts: float, n: int, ids: list[int]) -> dict:
    return {"timestamp": ts, "input_length": n, "output_length": 1, "hash_ids": ids}


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


def _mostly_rejected(path: Path) -> Path:
    """2 good lines of 1,100 tokens (3 ids at 512), then 5 with one id: 5 of 7 rejected."""
    rows = [_line(0, 1100, [1, 2, 3]), _line(1, 1100, [1, 2, 4])]
    return _write(path, rows + [_line(2 + i, 1100, [1]) for i in range(5)])


def _invoke(args: list[str]):
    return CliRunner().invoke(app, args)


@pytest.fixture
def ingest_warning(tmp_path) -> tuple[Path, str]:
    """A mostly rejected file and the warning ``kvtool ingest`` gives for it."""
    path = _mostly_rejected(tmp_path / "mostly.jsonl")
    result = _invoke(["ingest", str(path), "--db", str(tmp_path / "i.duckdb"), "--json"])
    assert result.exit_code == 2
    (file,) = json.loads(result.stdout)["files"]
    assert file["warning"].startswith(f"{path}: 5 of 7 records rejected (commonest: ")
    return path, file["warning"]


@pytest.mark.parametrize("command", ["analyze", "simulate"])
def test_a_mostly_rejected_file_warns_after_the_json_and_exits_2(tmp_path, ingest_warning, command):
    path, warning = ingest_warning
    db = str(tmp_path / f"{command}.duckdb")
    extra = ["--blocks", "10"] if command == "simulate" else []
    result = _invoke([command, str(path), "--db", db, "--json", *extra])
    assert result.exit_code == 2
    out = json.loads(result.stdout)  # the whole output came first
    assert out["warnings"] == [warning]
    assert out["requests"] == 2 and out["prompt_tokens"] == 2200
    # request 2 shares the path [1, 2]: 1,024 tokens, in the ideal and in 10 blocks of LRU
    cached = out["cached_tokens"] if command == "analyze" else out["ideal_cached_tokens"]
    assert cached == 1024
    (line,) = result.stderr.strip().splitlines()
    assert line == f"kvtool: warning: {warning}"
    # the warning belongs to the run that ingested the file: later runs say nothing more
    again = _invoke([command, "--db", db, "--json", *extra])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["warnings"] == [] and again.stderr == ""
    if command == "analyze":
        assert json.loads(again.stdout)["rejected_lines"] == 5


def test_the_table_and_the_html_page_come_before_the_warning(tmp_path, ingest_warning):
    path, warning = ingest_warning
    html = tmp_path / "a.html"
    result = _invoke(
        ["analyze", str(path), "--db", str(tmp_path / "k.duckdb"), "--html", str(html)]
    )
    assert result.exit_code == 2
    assert "2 requests in" in result.stdout and "5 lines rejected" in result.stdout
    assert html.stat().st_size > 0
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith(f"wrote {html}") and lines[-1] == f"kvtool: warning: {warning}"


def test_the_warning_is_escaped_and_the_library_returns_it(tmp_path):
    # a file name that is rich markup and holds a control character prints as it is, escaped
    path = _mostly_rejected(tmp_path / "[bold red]x\x07.jsonl")
    db = tmp_path / "k.duckdb"
    result = _invoke(["simulate", str(path), "--db", str(db), "--blocks", "10"])
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    shown = f"{tmp_path}/[bold red]x\\x07.jsonl: 5 of 7 records rejected (commonest: "
    assert line.startswith(f"kvtool: warning: {shown}")
    assert "\x07" not in result.stderr
    # the Python API: the same line in the result, no exit
    other = _mostly_rejected(tmp_path / "other.jsonl")
    other.write_bytes(other.read_bytes() + orjson.dumps(_line(9, 600, [5, 6])) + b"\n")
    s = analyze([other], db=db)
    assert s["warnings"] == [
        f"{other}: 5 of 8 records rejected (commonest: hash_ids has 1 ids, input_length 1100 "
        "at block size 512 needs 3 ×5; first: line 3: hash_ids has 1 "
        "ids, input_length 1100 at block size 512 needs 3 (or 2, full blocks only))"
    ]


def test_hash_identity_is_path_for_hash_traces_and_null_for_text(tmp_path):
    trace = _write(tmp_path / "t.jsonl", [_line(0, 1100, [1, 2, 3]), _line(1, 1100, [7, 2, 3])])
    db = str(tmp_path / "h.duckdb")
    a = json.loads(_invoke(["analyze", str(trace), "--db", db, "--json"]).stdout)
    s = json.loads(_invoke(["simulate", "--db", db, "--blocks", "4", "--json"]).stdout)
    assert a["trace_kind"] == s["trace_kind"] == "hash"
    assert a["hash_identity"] == s["hash_identity"] == "path"
    # [7, 2, 3]'s second id is [1, 2, 3]'s, behind another first block: nothing is shared
    assert a["cached_tokens"] == s["ideal_cached_tokens"] == 0
    chat = tmp_path / "chat.jsonl"
    messages = [{"role": "user", "content": "Say hello to the cache."}]
    chat.write_bytes(orjson.dumps({"model": "gpt-4o", "messages": messages}) + b"\n")
    db = str(tmp_path / "c.duckdb")
    a = json.loads(_invoke(["analyze", str(chat), "--db", db, "--json"]).stdout)
    s = json.loads(_invoke(["simulate", "--db", db, "--blocks", "4", "--json"]).stdout)
    assert a["trace_kind"] == s["trace_kind"] == "tokens"
    assert a["hash_identity"] is None and s["hash_identity"] is None


def test_a_multiple_of_the_trace_block_size_is_analyzed(tmp_path):
    # two 2,048-token requests that share 3 of 4 ids: at 512 the second caches 3 blocks, at 1024
    # one (3 // 2), at 1536 one (3 // 3, and (2048 - 1) // 1536 = 1)
    trace = _write(
        tmp_path / "t.jsonl", [_line(0, 2048, [1, 2, 3, 4]), _line(1, 2048, [1, 2, 3, 5])]
    )
    db = str(tmp_path / "k.duckdb")
    # distinct full blocks: 3 of 1024 ([1, 2] shared), 1 of 1536 ([1, 2, 3], the only full one)
    for size, cached, working_set in ((1024, 1024, 3 * 1024), (1536, 1536, 1536)):
        args = ["analyze", str(trace), "--db", db, "--block-size", str(size), "--json"]
        result = _invoke(args)
        assert result.exit_code == 0, result.output
        out = json.loads(result.stdout)
        assert (out["block_size"], out["cached_tokens"]) == (size, cached)
        assert out["working_set_tokens"] == working_set
        assert out["ideal_hit_rate_by_block_size"] == {
            "512": 1536 / 4096,
            str(size): cached / 4096,
        }
        args = ["simulate", "--db", db, "--block-size", str(size), "--blocks", "8", "--json"]
        sim = json.loads(_invoke(args).stdout)
        assert sim["ideal_cached_tokens"] == cached == sim["prefill_tokens_saved"]


@pytest.mark.parametrize("command", ["analyze", "simulate"])
def test_a_block_size_that_splits_the_trace_ids_is_one_line(tmp_path, command):
    trace = _write(tmp_path / "t.jsonl", [_line(0, 2048, [1, 2, 3, 4])])
    args = [command, str(trace), "--db", str(tmp_path / "k.duckdb"), "--block-size", "768"]
    result = _invoke(args + (["--blocks", "8"] if command == "simulate" else []))
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.strip() == (
        "kvtool: error: --block-size 768 is not a multiple of the trace's block size 512"
    )
