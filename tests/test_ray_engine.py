"""``--engine ray``: the same store and the same numbers as the local engine, on a real local Ray
cluster (2 CPUs, started once in this process and shared by the module's tests)."""

from __future__ import annotations

import gzip
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import ray

import kvtool
from kvtool.analyze import analyze
from kvtool.errors import InputError, OptionError
from kvtool.simulate import SimConfig, simulate
from kvtool.store import connect
from kvtool.store.requests import partition_untokenized
from kvtool.tokenize import load_tokenizer, tokenizer_signature
from kvtool.traffic import Executor

TRACES = Path(__file__).resolve().parents[1] / "traces"
DEMO = TRACES / "demo-agent.jsonl.gz"
MOONCAKE = TRACES / "mooncake" / "conversation_trace.jsonl.gz"
# what a worker's tokenizer did is counted per worker: a piece two partitions share is encoded
# by both, so only these two figures may differ
WORK_COUNTS = ("tokens_encoded", "segments_encoded")


@pytest.fixture(scope="module", autouse=True)
def cluster() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


def _same_result(local: dict, distributed: dict) -> None:
    for key in WORK_COUNTS:
        if local.get("tokenization"):
            assert distributed["tokenization"][key] > 0
            del local["tokenization"][key], distributed["tokenization"][key]
    assert distributed == local


TABLE_DIGESTS = {
    "files": "SELECT count(*), sum(hash(file_id, path, digest, lines, requests, rejected, "
    "records, skipped)) FROM files",
    "requests": "SELECT count(*), sum(hash(req_id, file_id, line, request_id, ts, session_id, "
    "message_keys, tools_key, prompt_key, hash_ids, input_length, synthetic_id)) FROM requests",
    "contents": "SELECT count(*), sum(hash(key, kind, body)) FROM contents",
    "rejects": "SELECT count(*), sum(hash(file_id, path, line, reason, item, skipped)) "
    "FROM rejects",
    "chains": "SELECT count(*), sum(hash(req_id, tokenizer, n_tokens, last_block)) FROM chains",
    "blocks": "SELECT count(*), sum(hash(tokenizer, hash, parent, depth)) FROM blocks",
}


def _digests(db: Path) -> dict[str, tuple]:
    con = connect(db)
    try:
        return {name: con.execute(sql).fetchone() for name, sql in TABLE_DIGESTS.items()}
    finally:
        con.close()


def test_demo_trace_analyze_is_identical(tmp_path):
    local = analyze([DEMO], db=tmp_path / "local.duckdb").to_json()
    distributed = analyze([DEMO], db=tmp_path / "ray.duckdb", engine="ray").to_json()
    assert distributed["tokenization"]["requests"] == 510
    assert local["breaks"]["volatile_id"]["count"] == 12  # break counts per cause are compared
    assert local["top_prefixes"]
    _same_result(local, distributed)
    assert _digests(tmp_path / "ray.duckdb") == _digests(tmp_path / "local.duckdb")


def test_mooncake_trace_analyze_and_simulate_are_identical(tmp_path):
    local = analyze([MOONCAKE], db=tmp_path / "local.duckdb").to_json()
    distributed = analyze([MOONCAKE], db=tmp_path / "ray.duckdb", engine="ray").to_json()
    assert distributed["requests"] == 12031
    _same_result(local, distributed)
    assert _digests(tmp_path / "ray.duckdb") == _digests(tmp_path / "local.duckdb")
    config = SimConfig(policy="lru")
    # a fresh database: simulate ingests with the engine it is given
    sims = [
        simulate(
            [MOONCAKE],
            db=tmp_path / f"sim-{name}.duckdb",
            blocks=[2000, 8000],
            config=config,
            engine=name,
        ).to_json()
        for name in ("local", "ray")
    ]
    assert sims[1]["points"] == sims[0]["points"]
    rates = [p["token_hit_rate"] for p in sims[0]["points"]]
    assert 0 < rates[0] < rates[1]


def _log(tmp_path: Path, name: str, records: list) -> Path:
    path = tmp_path / name
    path.write_bytes(
        b"".join((r if isinstance(r, bytes) else orjson.dumps(r)) + b"\n" for r in records)
    )
    return path


def _chat(rid: str, text: str) -> dict:
    return {"id": rid, "model": "m", "messages": [{"role": "user", "content": text}]}


def test_several_files_with_duplicates_and_rejects_merge_as_locally(tmp_path):
    a = _log(tmp_path, "a.jsonl", [_chat("r1", "hello"), _chat("r2", "world"), b"{not json"])
    b = _log(tmp_path, "b.jsonl", [_chat("r2", "again"), _chat("r3", "third"), b"[]"])
    logs = tmp_path / "logs"
    logs.mkdir()
    shutil.copy(a, logs / "a.jsonl")
    shutil.copy(b, logs / "b.jsonl")
    with gzip.open(logs / "c.jsonl.gz", "wb") as f:  # a's bytes again: already ingested
        f.write(a.read_bytes())
    local = kvtool.ingest([logs], db=tmp_path / "local.duckdb")
    distributed = kvtool.ingest([logs], db=tmp_path / "ray.duckdb", engine="ray")
    assert [r.to_json() for r in distributed] == [r.to_json() for r in local]
    assert [r.skipped for r in local] == [False, False, True]
    assert local[1].reasons == {"duplicate request id …": 1, "record is not a JSON object": 1}
    assert _digests(tmp_path / "ray.duckdb") == _digests(tmp_path / "local.duckdb")
    con = connect(tmp_path / "ray.duckdb")
    try:
        (where,) = con.execute(
            "SELECT reason FROM rejects WHERE reason LIKE 'duplicate%'"
        ).fetchone()
        assert where == "duplicate request id 'r2' (first at " + str(logs / "a.jsonl") + ":2)"
    finally:
        con.close()


def test_a_file_that_fails_stops_after_the_files_before_it(tmp_path):
    good = _log(tmp_path, "1-good.jsonl", [_chat("r1", "hello")])
    bad = _log(tmp_path, "2-bad.jsonl", [b"{not json", b"[also not"])
    later = _log(tmp_path, "3-later.jsonl", [_chat("r9", "never")])
    errors = []
    for name in ("local", "ray"):
        with pytest.raises(InputError) as caught:
            kvtool.ingest([good, bad, later], db=tmp_path / f"{name}.duckdb", engine=name)
        errors.append(str(caught.value))
        con = connect(tmp_path / f"{name}.duckdb")
        try:
            assert con.execute("SELECT path FROM files").fetchall() == [(str(good),)]
        finally:
            con.close()
    assert errors[1] == errors[0]
    assert errors[0].startswith(f"{bad}:1: not JSON Lines")


def test_partitions_keep_conversations_together_and_split_a_shared_system_prompt(tmp_path):
    kvtool.ingest([DEMO], db=tmp_path / "kv.duckdb")
    con = connect(tmp_path / "kv.duckdb")
    try:
        signature = tokenizer_signature(load_tokenizer(None))
        parts = partition_untokenized(con, signature, None, 8, 2.0)
        # a session's turns under one head (model, tools, system prompt); a break that changes
        # the head may move the rest of the session (no block after it is shared anyway)
        rows = con.execute(
            "SELECT r.session_id, r.model, r.tools_key, r.message_keys[1], "
            "count(DISTINCT p.part), count(*) FROM _kv_parted p "
            "JOIN requests r USING (req_id) GROUP BY ALL"
        ).fetchall()
        # the commonest system prompt (and tool catalog) heads most sessions: split by session
        (spread, share) = con.execute(
            "SELECT count(DISTINCT p.part), count(*) / 510 FROM _kv_parted p "
            "GROUP BY p.model, p.tools_key, p.message_keys[1] ORDER BY count(*) DESC LIMIT 1"
        ).fetchone()
        largest = con.execute(
            "SELECT max(n) FROM (SELECT count(*) AS n FROM _kv_parted GROUP BY part)"
        ).fetchone()[0]
    finally:
        con.close()
    assert sum(n for *_, n in rows) == 510
    assert all(spread == 1 for *_, spread, _ in rows)
    assert share > 0.2 and spread >= 4 and len(parts) == 8
    assert largest < 0.25 * 510


def test_engine_options_are_checked_before_anything_runs(tmp_path):
    with pytest.raises(OptionError, match="engine must be one of local, ray"):
        Executor("spark")
    with pytest.raises(OptionError, match="ray_address needs engine 'ray'"):
        Executor("local", address="auto")
    with pytest.raises(OptionError, match="ray_staging needs engine 'ray'"):
        Executor("local", staging="/tmp/x")
    with pytest.raises(OptionError, match="redact runs on the local engine"):
        analyze([DEMO], db=tmp_path / "kv.duckdb", engine="ray", redact=True)
    with pytest.raises(OptionError, match="not stdin"):
        kvtool.ingest(["-"], db=tmp_path / "kv.duckdb", engine="ray")


def test_without_ray_installed_the_engine_says_how_to_get_it(tmp_path, monkeypatch):
    # the one fault a real Ray cannot produce here: not being installed
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(OptionError, match=r"pip install 'kvtool\[ray\]'"):
        kvtool.ingest([DEMO], db=tmp_path / "kv.duckdb", engine="ray")
    assert analyze([DEMO], db=tmp_path / "kv.duckdb").to_json()["requests"] == 510


def test_the_command_line_runs_the_ray_engine(tmp_path):
    from typer.testing import CliRunner

    from kvtool.cli import app

    db = str(tmp_path / "kv.duckdb")
    got = CliRunner().invoke(
        app, ["ingest", str(MOONCAKE), "--db", db, "--engine", "ray", "--json"]
    )
    assert got.exit_code == 0, got.output
    assert orjson.loads(got.stdout)["files"][0]["requests"] == 12031
    bad = CliRunner().invoke(app, ["analyze", "--db", db, "--ray-staging", "/tmp/x"])
    assert bad.exit_code == 2
    assert "--ray-staging needs engine 'ray'" in bad.output


def test_an_object_store_url_is_read_through_pyarrow_by_both_engines(tmp_path):
    url = MOONCAKE.resolve().as_uri()  # file:///...: the same code path as s3:// or gs://
    reports = [
        kvtool.ingest([url], db=tmp_path / f"{name}.duckdb", engine=name)[0]
        for name in ("local", "ray")
    ]
    assert reports[0].path == url and reports[0].requests == 12031
    assert reports[1].to_json() == reports[0].to_json()
    assert _digests(tmp_path / "ray.duckdb") == _digests(tmp_path / "local.duckdb")
    # the same bytes by path: already ingested (a file's identity is its content)
    again = kvtool.ingest([MOONCAKE], db=tmp_path / "local.duckdb")
    assert again[0].skipped
