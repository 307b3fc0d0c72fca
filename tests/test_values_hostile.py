"""Hostile values in otherwise well-formed lines: far-future or non-finite timestamps, token ids
out of range, inconsistent usage counts, requests shorter than one block, model configs that
are not configs. Each bad line is rejected with a reason naming the field; nothing raises later."""

from __future__ import annotations

import orjson
import pytest
from typer.testing import CliRunner

from kvtool.cli import app
from kvtool.errors import InputError, OptionError
from kvtool.export import export_mooncake
from kvtool.ingest import ingest_files
from kvtool.ingest.formats.mooncake import make_mooncake
from kvtool.simulate import simulate
from kvtool.tiers.kv import lookup

MSG = [{"role": "user", "content": "hello"}]


def chat(**extra) -> dict:
    return {"model": "m", "messages": MSG, **extra}


def rejects(con) -> dict[int, str]:
    return dict(con.execute("SELECT line, reason FROM rejects ORDER BY line").fetchall())


def stored_ts(con) -> list[float]:
    return [r[0] for r in con.execute("SELECT ts FROM requests ORDER BY line").fetchall()]


# ---------------------------------------------------------------------------------------------
# item 10: timestamps inside 1970-01-01 .. 2100-01-01 after unit detection


@pytest.mark.parametrize(
    ("stamp", "shown"),
    [
        (1e25, "1e+25"),  # read as ns: 1e16 s, year ~3e8
        (4102444800, "4102444800"),  # 2100-01-01 itself, in seconds
        (4102444800001, "4102444800001"),  # just after 2100 in ms
        ("9999-12-31T00:00:00Z", "9999-12-31T00:00:00Z"),
        ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00Z"),
        ("1e30", "1e30"),
    ],
)
def test_timestamp_outside_window_is_rejected_naming_field_and_value(
    con, write_jsonl, stamp, shown
):
    path = write_jsonl("t.jsonl", [chat(id="ok", timestamp=1740830400), chat(created=stamp)])
    (report,) = ingest_files(con, [path])
    assert (report.requests, report.rejected) == (1, 1)
    reason = rejects(con)[2]
    assert "created" in reason and shown in reason and "2100-01-01" in reason


@pytest.mark.parametrize("stamp", ["NaN", "inf", "-inf", -1])
def test_non_finite_or_negative_timestamp_is_rejected(con, write_jsonl, stamp):
    path = write_jsonl("t.jsonl", [chat(id="ok", timestamp=0), chat(timestamp=stamp)])
    (report,) = ingest_files(con, [path])
    assert (report.requests, report.rejected) == (1, 1)
    assert "timestamp" in rejects(con)[2]


def test_timestamp_window_edges_and_units_still_accepted(con, write_jsonl):
    stamps = [0, 4102444799, 4102444799000, 4102444799000000, 1740830400000000000]
    (report,) = ingest_files(con, [write_jsonl("t.jsonl", [chat(timestamp=s) for s in stamps])])
    assert (report.requests, report.rejected) == (5, 0)
    assert stored_ts(con) == pytest.approx([0, 4102444799, 4102444799, 4102444799, 1740830400])


def test_mooncake_far_future_timestamp_is_rejected(con, write_jsonl):
    lines = [
        {"timestamp": 1000, "input_length": 10, "hash_ids": [1]},
        {"timestamp": 1e25, "input_length": 10, "hash_ids": [1]},
    ]
    (report,) = ingest_files(con, [write_jsonl("m.jsonl", lines)])
    assert (report.format, report.requests, report.rejected) == ("mooncake", 1, 1)
    assert "timestamp" in rejects(con)[2] and "1e+25" in rejects(con)[2]


# ---------------------------------------------------------------------------------------------
# item 11: completions token ids 0 <= id < 2**32


@pytest.mark.parametrize(
    ("prompt", "reason"),
    [
        ([1, 2, -1], "prompt[2] token id -1 is out of range"),
        ([1, 2**32], "prompt[1] token id 4294967296 is out of range"),
        ([[5, 2**40]], "prompt[1] token id 1099511627776 is out of range"),
        ([1, True], "prompt[1] must be an integer token id, got bool"),
        ([1, 2.5], "prompt[1] must be an integer token id, got float"),
        ([1, "x"], "prompt[1] must be an integer token id, got str"),
        ([], "prompt must be a string or one list of token ids"),
    ],
)
def test_bad_token_ids_are_rejected(con, write_jsonl, prompt, reason):
    lines = [{"id": "ok", "prompt": [0, 2**32 - 1]}, {"id": "bad", "prompt": prompt}]
    (report,) = ingest_files(con, [write_jsonl("c.jsonl", lines)])
    assert (report.format, report.requests, report.rejected) == ("completions", 1, 1)
    assert reason in rejects(con)[2]


# ---------------------------------------------------------------------------------------------
# item 12: usage counts are integers in 0 .. 2**63 - 1, cached <= prompt


def usage(prompt=None, cached=None, completion=None) -> dict:
    out: dict = {}
    if prompt is not None:
        out["prompt_tokens"] = prompt
    if completion is not None:
        out["completion_tokens"] = completion
    if cached is not None:
        out["prompt_tokens_details"] = {"cached_tokens": cached}
    return out


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (
            chat(usage=usage(prompt=100, cached=120)),
            "usage.prompt_tokens_details.cached_tokens 120 exceeds usage.prompt_tokens 100",
        ),
        (chat(usage=usage(prompt=100, cached=-1)), "cached_tokens must be >= 0"),
        (chat(usage=usage(prompt=10.5)), "usage.prompt_tokens must be an integer, got 10.5"),
        (chat(usage=usage(prompt=10, completion=-2)), "usage.completion_tokens must be >= 0"),
        (
            chat(response={"usage": {"input_tokens": 2**62, "cache_read_input_tokens": 2**62}}),
            "usage.input_tokens + cache tokens is out of range",
        ),
        (
            {"timestamp": 0, "input_length": 10, "output_length": -1, "hash_ids": [1]},
            "output_length must be >= 0",
        ),
    ],
)
def test_inconsistent_or_out_of_range_usage_is_rejected(con, write_jsonl, record, reason):
    fmt = "mooncake" if "hash_ids" in record else "openai-chat"
    good = (
        {"timestamp": 0, "input_length": 10, "hash_ids": [1]}
        if fmt == "mooncake"
        else chat(id="ok", usage=usage(prompt=100, cached=100, completion=3))
    )
    (report,) = ingest_files(con, [write_jsonl("u.jsonl", [good, record])], fmt=fmt)
    assert (report.requests, report.rejected) == (1, 1)
    assert reason in rejects(con)[2]


def test_consistent_usage_is_kept(con, write_jsonl):
    lines = [chat(usage=usage(prompt=100, cached=100, completion=3)), chat(usage={"x": 1})]
    (report,) = ingest_files(con, [write_jsonl("u.jsonl", lines)])
    assert (report.requests, report.rejected) == (2, 0)


def test_mooncake_input_length_beyond_int64_is_rejected():
    normalize = make_mooncake(2**30)
    rec = {"timestamp": 0, "input_length": 2**63 + 1, "hash_ids": [1]}
    with pytest.raises(InputError, match=r"input_length must be a positive integer below 2\*\*63"):
        normalize(rec)


def test_hash_block_size_beyond_int32_is_an_option_error(con, write_jsonl):
    path = write_jsonl("m.jsonl", [{"timestamp": 0, "input_length": 10, "hash_ids": [1]}])
    with pytest.raises(OptionError) as info:
        ingest_files(con, [path], hash_block_size=2**31)
    assert info.value.param == "hash_block_size"
    assert con.execute("SELECT count(*) FROM files").fetchone() == (0,)


# ---------------------------------------------------------------------------------------------
# item 13: requests with no full block at all


def tiny_log(write_jsonl):
    """Two valid chat requests, each a few tokens: no request has a full 16-token block."""
    return write_jsonl(
        "tiny.jsonl",
        [
            chat(id="a", timestamp=1740830400, messages=[{"role": "user", "content": "hi"}]),
            chat(id="b", timestamp=1740830401, messages=[{"role": "user", "content": "yo"}]),
        ],
    )


def test_no_full_block_simulate_library(tmp_path, write_jsonl):
    result = simulate([tiny_log(write_jsonl)], db=tmp_path / "kv.duckdb", blocks=[0, 4])
    assert result["requests"] == 2 and result["ideal_hit_rate"] == 0.0
    assert [p["token_hit_rate"] for p in result["points"]] == [0.0, 0.0]


def test_no_full_block_export_library(tmp_path, write_jsonl):
    out = tmp_path / "trace.jsonl"
    log = tiny_log(write_jsonl)
    assert export_mooncake([log], out, db=tmp_path / "kv.duckdb", block_size=16) == 2
    lines = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [(r["timestamp"], r["hash_ids"]) for r in lines] == [(0, [0]), (1000, [1])]
    assert all(0 < r["input_length"] < 16 for r in lines)


def test_no_full_block_simulate_cli(tmp_path, write_jsonl):
    log, db = tiny_log(write_jsonl), str(tmp_path / "kv.duckdb")
    r = CliRunner().invoke(app, ["simulate", str(log), "--db", db, "--blocks", "4", "--json"])
    assert r.exit_code == 0, r.output
    assert orjson.loads(r.stdout)["token_hit_rate"] == 0.0


def test_no_full_block_export_cli(tmp_path, write_jsonl):
    log, db, out = tiny_log(write_jsonl), str(tmp_path / "kv.duckdb"), tmp_path / "t.jsonl"
    r = CliRunner().invoke(app, ["export", str(log), "--db", db, "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert [orjson.loads(x)["hash_ids"] for x in out.read_bytes().splitlines()] == [[0], [1]]


def test_no_full_block_hash_trace(tmp_path, write_jsonl):
    log = write_jsonl(
        "mc.jsonl",
        [
            {"timestamp": 0, "input_length": 10, "hash_ids": [5]},
            {"timestamp": 5, "input_length": 20, "hash_ids": [5]},
        ],
    )
    result = simulate([log], db=tmp_path / "kv.duckdb", blocks=[4])
    assert (result["requests"], result["token_hit_rate"]) == (2, 0.0)


# ---------------------------------------------------------------------------------------------
# item 21 (part): --model files that are not model configs; --hash-block-size bounds

GOOD_CONFIG = {"num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 256}


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\xff", "is not a JSON model config"),
        (b"layers: 32\n", "is not a JSON model config"),
        (b"[1, 2, 3]", "is not a model config (a JSON object)"),
        (b'{"model_type": "llama"}', "num_hidden_layers"),
        (orjson.dumps(GOOD_CONFIG | {"num_hidden_layers": "many"}), "num_hidden_layers"),
        (orjson.dumps(GOOD_CONFIG | {"num_attention_heads": 0}), "num_attention_heads"),
        (orjson.dumps(GOOD_CONFIG | {"num_key_value_heads": -8}), "num_key_value_heads"),
        (orjson.dumps({"text_config": [1]}), "is not a model config"),
    ],
)
def test_model_file_that_is_not_a_config_is_an_input_error(tmp_path, content, reason):
    path = tmp_path / "config.json"
    path.write_bytes(content)
    with pytest.raises(InputError) as info:
        lookup(str(path))
    assert reason in str(info.value) and str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_model_config_file_still_read(tmp_path):
    path = tmp_path / "config.json"
    path.write_bytes(orjson.dumps(GOOD_CONFIG))
    assert lookup(str(tmp_path)).bytes_per_token == 2 * 2 * 4 * 64 * 2


def test_cli_model_not_a_config_exits_2_one_line(tmp_path, write_jsonl):
    bad = tmp_path / "model.json"
    bad.write_bytes(b"not json at all")
    log = write_jsonl("m.jsonl", [{"timestamp": 0, "input_length": 10, "hash_ids": [1]}])
    args = ["simulate", str(log), "--db", str(tmp_path / "kv.duckdb"), "--model", str(bad)]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2, r.output
    assert "is not a JSON model config" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("size", ["0", "-4", str(2**31)])
def test_cli_analyze_bad_hash_block_size_exits_2(tmp_path, write_jsonl, size):
    log = write_jsonl("x.jsonl", [{"timestamp": 0, "input_length": 10, "hash_ids": [1]}])
    db = str(tmp_path / "kv.duckdb")
    r = CliRunner().invoke(app, ["analyze", str(log), "--db", db, "--hash-block-size", size])
    assert r.exit_code == 2, r.output
    assert "--hash-block-size" in r.output and len(r.output.strip().splitlines()) == 1
