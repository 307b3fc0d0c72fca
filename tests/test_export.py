"""`kvtool export --format mooncake`: the exported hash trace carries exactly the sharing of
the original traffic."""

from __future__ import annotations

import json
import subprocess

import pytest
from typer.testing import CliRunner

from kvtool.analyze import analyze
from kvtool.cli import app
from kvtool.generate import generate


@pytest.mark.parametrize("block", [64, 512])
def test_export_round_trip_keeps_the_hit_rate(tmp_path, block):
    log = tmp_path / "agent.jsonl"
    truth = generate("agent", 8, 4, log, steps=(3, 8))
    # a hash trace carries prompt blocks only (no answer is re-rendered in it)
    original = analyze([log], db=tmp_path / "a.duckdb", block_size=block, output_cache=False)
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


def test_export_block_size_errors_name_the_parameter_and_the_flag(tmp_path, mooncake_dir):
    from kvtool.errors import OptionError
    from kvtool.export import export_mooncake

    with pytest.raises(OptionError, match="^block_size must be a positive multiple of 16, got 40"):
        export_mooncake(None, tmp_path / "x", db=tmp_path / "a.duckdb", block_size=40)
    r = CliRunner().invoke(app, ["export", "-o", str(tmp_path / "x"), "--block-size", "40"])
    assert r.exit_code == 2
    assert r.stderr == "kvtool: error: --block-size must be a positive multiple of 16, got 40\n"
    trace = mooncake_dir / "synthetic_trace.jsonl.gz"
    r = CliRunner().invoke(
        app, ["export", str(trace), "--db", str(tmp_path / "m.duckdb"), "-o", str(tmp_path / "y"),
              "--block-size", "64"],
    )  # fmt: skip
    assert r.exit_code == 2
    assert "--block-size 64 is not a multiple of the trace's block size 512" in r.stderr


# vLLM's own reader of timed hash traces (`vllm bench serve --dataset-name timed_trace`), run in
# the vLLM CPU environment on the exported file: prints what it would send.
VLLM_BENCH_READER = """
import json, sys
from transformers import PreTrainedTokenizerFast
from vllm.benchmarks.datasets.datasets import TimedTrace

tokenizer = PreTrainedTokenizerFast(tokenizer_file=sys.argv[2])
trace = TimedTrace(
    dataset_path=sys.argv[1], random_seed=0, timed_trace_chunk_hash_size=int(sys.argv[3]),
    timed_trace_sec_multiplier=0.001, timed_trace_label_timestamp="timestamp",
    timed_trace_label_input_length="input_length",
    timed_trace_label_output_length="output_length", timed_trace_label_hash_ids="hash_ids",
)
samples = trace.sample(tokenizer=tokenizer, num_requests=10**9)
print(json.dumps([[s.prompt, s.prompt_len, s.expected_output_len, s.timestamp] for s in samples]))
"""


def test_vllm_bench_serve_reads_the_export(vllm_python, tmp_path):
    """The export replays in `vllm bench serve --dataset-name timed_trace
    --timed-trace-chunk-hash-size B --timed-trace-sec-multiplier 0.001`: vLLM's reader builds
    prompts of exactly `input_length` tokens that share exactly the blocks kvtool says they do."""
    from kvtool.tokenize import default_tokenizer_path

    block = 64
    log = tmp_path / "agent.jsonl"
    generate("agent", 4, 9, log, steps=(3, 5))
    analyze([log], db=tmp_path / "a.duckdb")
    out = tmp_path / "trace.jsonl"
    r = CliRunner().invoke(
        app, ["export", "--db", str(tmp_path / "a.duckdb"), "-o", str(out), "--block-size", "64"]
    )
    assert r.exit_code == 0, r.output
    script = tmp_path / "read.py"
    script.write_text(VLLM_BENCH_READER)
    done = subprocess.run(
        [vllm_python, str(script), str(out), str(default_tokenizer_path()), str(block)],
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    samples = json.loads(done.stdout.strip().splitlines()[-1])
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(samples) == len(records)
    for (prompt, n, output, ts), rec in zip(samples, records, strict=True):
        assert n == len(prompt) == rec["input_length"]
        assert output == rec["output_length"]
        assert ts == pytest.approx(rec["timestamp"] / 1000)
    for i in range(len(records)):  # shared full blocks <=> shared prompt tokens, pair by pair
        for j in range(i):
            a, b = records[i], records[j]
            full = min(a["input_length"], b["input_length"]) // block
            ids = next((k for k in range(full) if a["hash_ids"][k] != b["hash_ids"][k]), full)
            pa, pb = samples[i][0], samples[j][0]
            tokens = next((k for k in range(min(len(pa), len(pb))) if pa[k] != pb[k]), None)
            shared = min(len(pa), len(pb)) if tokens is None else tokens
            assert min(shared // block, full) == ids
