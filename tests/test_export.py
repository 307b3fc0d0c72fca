"""`kvtool export --format mooncake`: the exported hash trace carries exactly the sharing of
the original traffic."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from kvtool.analyze import analyze
from kvtool.cli import app
from kvtool.generate import generate


@pytest.mark.parametrize("block", [64, 512])
def test_export_round_trip_keeps_the_hit_rate(tmp_path, block):
    log = tmp_path / "agent.jsonl"
    truth = generate("agent", 8, 4, log, steps=(3, 8))
    original = analyze([log], db=tmp_path / "a.duckdb", block_size=block)
    out = tmp_path / "trace.jsonl"
    r = CliRunner().invoke(
        app,
        [
            "export",
            "--db",
            str(tmp_path / "a.duckdb"),
            "-o",
            str(out),
            "--block-size",
            str(block),
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["requests"] == truth.requests
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == truth.requests
    assert sum(rec["input_length"] for rec in records) == original["prompt_tokens"]
    assert sum(rec["output_length"] for rec in records) == truth.output_tokens
    ts = [rec["timestamp"] for rec in records]
    assert ts[0] == 0 and ts == sorted(ts)
    for rec in records:  # ceil(n / block) ids, the last one partial when n is not a multiple
        assert len(rec["hash_ids"]) == -(-rec["input_length"] // block)
    seen = sorted({h for rec in records for h in rec["hash_ids"]})
    assert seen == list(range(len(seen)))  # dense ids in order of first appearance
    assert records[0]["hash_ids"] == list(range(len(records[0]["hash_ids"])))
    again = analyze([out], db=tmp_path / "b.duckdb", hash_block_size=block)
    assert again["trace_kind"] == "hash"
    assert again["cached_tokens"] == original["cached_tokens"]
    assert again["ideal_hit_rate"] == pytest.approx(original["ideal_hit_rate"], abs=1e-12)


def test_export_rejects_other_formats(tmp_path):
    r = CliRunner().invoke(app, ["export", "-o", str(tmp_path / "x"), "--format", "csv"])
    assert r.exit_code == 2 and "only 'mooncake'" in r.stderr
