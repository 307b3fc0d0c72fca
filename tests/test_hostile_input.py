"""Hostile input: every line is accounted for, bad lines are rejected with a specific reason,
unusable files fail cleanly (nothing written), and the CLI reports errors as DESIGN.md says."""

from __future__ import annotations

import gzip
import json
import random
import zlib

import orjson
import pytest
from typer.testing import CliRunner

from kvtool.cli import app
from kvtool.errors import InputError
from kvtool.ingest import ingest_files
from kvtool.store import connect, one

MSG = [{"role": "user", "content": "hello"}]


def chat(**extra) -> bytes:
    return orjson.dumps({"model": "gpt-4o", "messages": MSG, **extra})


def counts(con) -> tuple[int, int, int]:
    return tuple(one(con, f"SELECT count(*) FROM {t}")[0] for t in ("files", "requests", "rejects"))


# ---------------------------------------------------------------------------------------------
# one file mixing good lines with every kind of bad line


def hostile_lines() -> tuple[list[bytes], dict[int, str], set[int], str]:
    """(lines, {line: expected reason substring}, good line numbers, 10 MB message text)."""
    words = ("prefix", "cache", "block", "token", "évict", "缓存", "latency")
    rng = random.Random(7)
    big_text = " ".join(rng.choice(words) for _ in range(1_500_000))
    assert len(big_text.encode()) > 10_000_000

    spec: list[tuple[bytes, str | None]] = [
        (chat(id="r1", timestamp=1000), None),
        (b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "hel', "invalid JSON"),
        (orjson.dumps({"messages": "hello"}), "messages must be a list, got str"),
        (orjson.dumps({"messages": [{"role": 3, "content": "x"}]}), "messages[0].role must be"),
        (
            orjson.dumps({"messages": [{"role": "user", "content": 42}]}),
            "messages[0].content must be a string, list or null",
        ),
        (chat(tools={"name": "get_weather"}), "tools must be a list, got dict"),
        (chat(timestamp=[2025, 3, 1]), "timestamp must be a number or string, got list"),
        (chat(usage="lots"), "usage must be an object, got str"),
        (b'{"messages": [{"role": "user", "content": "caf\xe9 \xff\xfe"}]}', "invalid UTF-8"),
        (b"", "blank line"),
        (b'[{"role": "user", "content": "hi"}]', "record is not a JSON object"),
        (
            orjson.dumps(
                {
                    "id": "big",
                    "timestamp": 1001,
                    "model": "gpt-4o",
                    "messages": [{"role": "user", "content": big_text}],
                }
            ),
            None,
        ),
        (chat(id="r1", timestamp=1002), "duplicate request id 'r1' (first at line 1)"),
        (chat(id="r2", timestamp=900), None),  # out of order: still ingested
        (chat(id="r3", timestamp=950), None),
        (orjson.dumps({"messages": 5}), "messages must be a list, got int"),
        (chat(response="oops"), "response must be an object, got str"),
        (chat(usage={"prompt_tokens": 1e30}), "usage.prompt_tokens is out of range"),
        (
            chat(usage={"prompt_tokens": 5, "completion_tokens": 2**64 - 1}),
            "usage.completion_tokens is out of range",
        ),
        (chat(usage={"prompt_tokens": -3}), "usage.prompt_tokens must be >= 0"),
        (chat(timestamp="yesterday"), "unreadable timestamp 'yesterday'"),
        (orjson.dumps({"messages": []}), "messages is empty"),
        (orjson.dumps({"messages": [{"role": "robot", "content": "x"}]}), "is not a chat role"),
        (orjson.dumps({"request": "{not json"}), "request is a string that is not JSON"),
        (
            orjson.dumps({"messages": [{"role": "assistant", "tool_calls": [{"id": "c"}]}]}),
            "messages[0].tool_calls[0].function.name must be a string",
        ),
        (b'{"messages": [{"role": "user", "content": "x"}], "temperature": NaN}', "invalid JSON"),
        (chat(id={"nested": 1}), "id must be a string, got dict"),
        (b"   \t ", "blank line"),
        (chat(timestamp=1003) + b"\r", None),  # CRLF line ending
        (chat(), None),  # no id: a generated one
    ]
    lines = [raw for raw, _ in spec]
    expected = {i: reason for i, (_, reason) in enumerate(spec, 1) if reason is not None}
    good = {i for i, (_, reason) in enumerate(spec, 1) if reason is None}
    return lines, expected, good, big_text


def test_hostile_file_every_line_accounted_for(con, tmp_path):
    lines, expected, good, big_text = hostile_lines()
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")

    (report,) = ingest_files(con, [path])

    n = len(lines)
    assert report.format == "openai-chat"
    assert report.lines == n
    assert report.requests + report.rejected == n
    assert (report.requests, report.rejected) == (len(good), len(expected))
    assert one(con, "SELECT lines, requests, rejected FROM files") == (
        n,
        len(good),
        len(expected),
    )

    # requests: exactly the good lines, out-of-order timestamps kept as logged
    rows = con.execute("SELECT line, request_id, ts FROM requests ORDER BY line").fetchall()
    assert {r[0] for r in rows} == good
    by_id = {r[1]: r[2] for r in rows}
    assert [by_id[k] for k in ("r1", "big", "r2", "r3")] == [1000, 1001, 900, 950]

    # the 10 MB message is stored whole
    (key,) = one(con, "SELECT message_keys[1] FROM requests WHERE request_id = 'big'")
    (stored,) = one(con, "SELECT body FROM contents WHERE key = ?", [key])
    assert json.loads(stored) == {"role": "user", "content": big_text}

    # rejects: the right line, a specific non-empty reason and the raw text
    rejects = con.execute("SELECT line, reason, raw, path FROM rejects ORDER BY line").fetchall()
    assert [r[0] for r in rejects] == sorted(expected)
    for line, reason, raw, where in rejects:
        assert reason and expected[line] in reason, (line, reason)
        assert raw == lines[line - 1].decode("utf-8", errors="backslashreplace").rstrip("\r")
        assert where == str(path)
    utf8_line = next(i for i, r in expected.items() if r == "invalid UTF-8")
    assert "\\xff\\xfe" in dict((r[0], r[2]) for r in rejects)[utf8_line]
    assert sum(report.reasons.values()) == report.rejected


def test_duplicate_id_across_files_names_the_first_file(con, write_jsonl):
    first = write_jsonl("day1.jsonl", [chat(id="req-9"), chat(id="req-10")])
    second = write_jsonl("day2.jsonl", [chat(id="req-11"), chat(id="req-9", timestamp=5)])

    r1, r2 = ingest_files(con, [first, second])

    assert (r1.requests, r2.requests, r2.rejected) == (2, 1, 1)
    ((line, reason),) = con.execute(
        "SELECT line, reason FROM rejects WHERE path = ?", [str(second)]
    ).fetchall()
    assert line == 2
    assert "duplicate request id 'req-9'" in reason and f"{first}:1" in reason


def test_empty_file(con, tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    (report,) = ingest_files(con, [path])
    assert (report.lines, report.requests, report.rejected, report.skipped) == (0, 0, 0, False)
    assert one(con, "SELECT lines, requests, rejected FROM files") == (0, 0, 0)
    assert counts(con)[1:] == (0, 0)


BAD_FILES = {
    "missing.jsonl": None,
    "image.jsonl": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8,
    # a CSV table of no known format (CSV requests are read: tests/test_reader_inputs.py)
    "table.csv": b"id,name,comment\nr1,alice,hello there\nr2,bob,general kenobi\n",
    "numbers.csv": b"count\n1\n2\n3\n",  # parses as JSON numbers, but no known format
    "broken.parquet": b"PAR1" + b"\x00" * 64,
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_unusable_file_raises_and_writes_nothing(con, tmp_path, name):
    path = tmp_path / name
    if BAD_FILES[name] is not None:
        path.write_bytes(BAD_FILES[name])
    good = tmp_path / "good.jsonl"
    good.write_bytes(chat(id="ok") + b"\n")

    with pytest.raises(InputError) as info:
        ingest_files(con, [path])
    message = str(info.value)
    assert str(path) in message
    assert "\n" not in message
    assert counts(con) == (0, 0, 0)

    # the connection is still usable afterwards
    (report,) = ingest_files(con, [good])
    assert report.requests == 1


def test_truncated_gzip_keeps_readable_lines(con, tmp_path):
    rng = random.Random(3)
    vocab = [f"w{i}" for i in range(5000)]
    lines = [
        chat(id=f"z{i}", extra=" ".join(rng.choice(vocab) for _ in range(40))) for i in range(2000)
    ]
    data = gzip.compress(b"".join(line + b"\n" for line in lines))
    cut = data[: len(data) // 2]
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(cut)
    # what an independent decoder recovers from the same bytes: complete lines only
    readable = zlib.decompressobj(wbits=31).decompress(cut).count(b"\n")
    assert 0 < readable < len(lines)

    (report,) = ingest_files(con, [path])

    assert report.requests == readable
    assert report.rejected == 1
    assert report.lines == readable + 1
    ((line, reason),) = con.execute("SELECT line, reason FROM rejects").fetchall()
    assert line == readable + 1
    assert "compressed stream is cut off" in reason
    ids = [r[0] for r in con.execute("SELECT request_id FROM requests ORDER BY line").fetchall()]
    assert ids == [f"z{i}" for i in range(readable)]


# ---------------------------------------------------------------------------------------------
# CLI


def test_cli_missing_file_exits_2_naming_the_path(tmp_path):
    missing = tmp_path / "missing.jsonl"
    db = tmp_path / "cli.duckdb"
    result = CliRunner().invoke(app, ["ingest", str(missing), "--db", str(db)])
    assert result.exit_code == 2
    assert "kvtool: error:" in result.stderr
    assert str(missing) in "".join(result.stderr.split())  # robust to terminal wrapping
    assert result.stdout == ""
    with connect(db) as con:
        assert one(con, "SELECT count(*) FROM files") == (0,)


def test_cli_error_is_one_line(tmp_path):
    missing = tmp_path / "a-reasonably-long-directory-name-for-logs" / "missing.jsonl"
    result = CliRunner().invoke(app, ["ingest", str(missing), "--db", str(tmp_path / "x.duckdb")])
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_bad_format_option_exits_2(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_bytes(chat() + b"\n")
    result = CliRunner().invoke(
        app, ["ingest", str(good), "--db", str(tmp_path / "x.duckdb"), "--format", "csv"]
    )
    assert result.exit_code == 2
    assert "--format 'csv'" in result.stderr


def test_option_errors_name_the_parameter_in_python_and_the_flag_on_the_cli(con, tmp_path):
    from kvtool.errors import OptionError

    good = tmp_path / "good.jsonl"
    good.write_bytes(chat() + b"\n")
    with pytest.raises(OptionError, match="^hash_block_size must be positive, got 0$") as info:
        ingest_files(con, [good], hash_block_size=0)
    assert info.value.param == "hash_block_size"
    with pytest.raises(OptionError, match="^fmt 'csv' is not one of openai-chat"):
        ingest_files(con, [good], fmt="csv")
    assert counts(con) == (0, 0, 0)
    db = str(tmp_path / "x.duckdb")
    result = CliRunner().invoke(app, ["ingest", str(good), "--db", db, "--hash-block-size", "0"])
    assert result.exit_code == 2
    assert result.stderr == "kvtool: error: --hash-block-size must be positive, got 0\n"
    result = CliRunner().invoke(app, ["analyze", "--db", db, "--format", "csv"])
    assert result.exit_code == 2 and "--format 'csv' is not one of" in result.stderr


def test_cli_ingest_json_reports_counts(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_bytes(b"\n".join([chat(id="a"), chat(id="b"), b"{oops", chat(id="a")]) + b"\n")
    db = tmp_path / "cli.duckdb"
    runner = CliRunner()

    result = runner.invoke(app, ["ingest", str(good), "--db", str(db), "--json"])

    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["db"] == str(db)
    (file,) = out["files"]
    assert file["path"] == str(good)
    assert file["format"] == "openai-chat"
    assert (file["lines"], file["requests"], file["rejected"]) == (4, 2, 2)
    assert sum(file["reject_reasons"].values()) == 2
    assert "invalid JSON" in file["reject_reasons"]
    assert file["already_ingested"] is False

    again = json.loads(runner.invoke(app, ["ingest", str(good), "--db", str(db), "--json"]).stdout)
    assert again["files"][0]["already_ingested"] is True
    assert (again["files"][0]["lines"], again["files"][0]["requests"]) == (4, 2)
