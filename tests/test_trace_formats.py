"""Published hash-trace formats: RAGPulse (chunk ids and companion files), kv-cache-tester (a
conversation per JSON file, sub-agents nested) and the Qwen-Bailian usage traces (chat chains,
16-token blocks). Each is read into hash-id requests whose blocks are keyed by their whole path;
the cached tokens below are worked out by hand (or, for the RAGPulse slice, by laying out its
chunks token by token in ``_token_oracle``)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import orjson
import pytest

from kvtool import analyze
from kvtool.errors import InputError
from kvtool.ingest import ingest_files
from kvtool.ingest.formats.registry import detect_record, normalizer

FIXTURES = Path(__file__).parent / "fixtures"
RAGPULSE = FIXTURES / "ragpulse"
COMPONENTS = ("1_sys_prompt", "2_passages", "3_history", "4_user_input", "5_web_search")


def _rows(con, sql: str) -> list[tuple]:
    return con.execute(sql).fetchall()


def _rejects(con) -> list[tuple[int, int, str]]:
    return _rows(con, "SELECT line, item, reason FROM rejects WHERE NOT skipped ORDER BY 1, 2")


def _jsonl(path: Path, records: list) -> Path:
    path.write_bytes(
        b"".join((r if isinstance(r, bytes) else orjson.dumps(r)) + b"\n" for r in records)
    )
    return path


# ---------------------------------------------------------------------------------------------
# RAGPulse


def _ragpulse_dir(tmp_path: Path, trace: list, chunks: dict[str, list]) -> Path:
    """A RAGPulse directory: ``0_trace.jsonl`` and the five companion files (empty if absent)."""
    for stem in COMPONENTS:
        _jsonl(tmp_path / f"{stem}.jsonl", chunks.get(stem, []))
    return _jsonl(tmp_path / "0_trace.jsonl", trace)


def _rag(ts, sys, passages, user, n, session="s"):
    return {
        "timestamp": ts,
        "input_length": n,
        "output_length": 3,
        "hash_ids": {
            "sys_prompt": sys,
            "passages_ids": passages,
            "history": [],
            "web_search": [],
            "user_input": user,
        },
        "session_id": session,
    }


CHUNKS = {
    "1_sys_prompt": [
        {"sys_prompt_id": 1, "token_length": 8},
        {"sys_prompt_id": 2, "token_length": 8},
    ],
    "2_passages": [{"passage_id": 10, "token_length": 6}, {"passage_id": 11, "token_length": 4}],
    "4_user_input": [{"user_input_id": i, "token_length": 3} for i in (20, 21, 22)],
}


def test_ragpulse_blocks_follow_the_chunks_and_their_whole_prefix(tmp_path):
    # 4-token blocks. r1 = sys 1 (8) + passage 10 (6) + user 20 (3) + 2 template tokens: nothing
    # cached. r2 adds passage 11 after passage 10: its first 3 blocks (sys 1, passage 10's first
    # 4 tokens) are r1's, block 3 holds passage 10's last 2 and passage 11's first 2: 12 cached.
    # r3 has passage 10 after sys 2: a shared passage after another system prompt is no hit.
    # r4 repeats r2: its 5 full blocks are r2's, the 2 template tokens (r4's own) sit in the
    # partial 6th: 20 cached. Flattened chunk ids would also count r3's passage 10.
    trace = [
        _rag("1", [1], [10], [20], 19, "a"),
        _rag("2", [1], [10, 11], [21], 23, "a"),
        _rag(3, [2], [10], [22], 17, "b"),
        _rag("4", [1], [10, 11], [21], 23, "c"),
    ]
    path = _ragpulse_dir(tmp_path, trace, CHUNKS)
    result = analyze([path], db=tmp_path / "k.duckdb", hash_block_size=4)
    assert result["prompt_tokens"] == 19 + 23 + 17 + 23
    assert result["cached_tokens"] == 0 + 12 + 0 + 20
    assert result["sessions"] == 3
    assert result["hash_identity"] == "path"
    assert result["files"][0]["format"] == "ragpulse"


def _token_oracle(directory: Path, block: int) -> tuple[int, int]:
    """(prompt, cached) tokens of an infinite prefix cache over a RAGPulse trace laid out token by
    token: a token is (chunk, offset), the tokens past the chunks are the request's own, a block
    is the tuple of every token up to its end; requests in timestamp order."""

    def lines(stem: str) -> list[dict]:
        with gzip.open(directory / f"{stem}.jsonl.gz", "rt") as f:
            return [json.loads(x) for x in f if x.strip()]

    length = {}
    for stem in COMPONENTS:
        for rec in lines(stem):
            (key,) = [k for k in rec if k.endswith("_id")]
            length[rec[key]] = rec["token_length"]
    trace = sorted(enumerate(lines("0_trace")), key=lambda x: (float(x[1]["timestamp"]), x[0]))
    seen: set[tuple] = set()
    prompt = cached = 0
    for i, rec in trace:
        n = rec["input_length"]
        tokens = [(c, o) for ids in rec["hash_ids"].values() for c in ids for o in range(length[c])]
        tokens += [("own", i, o) for o in range(n - len(tokens))]
        blocks = [tuple(tokens[: (k + 1) * block]) for k in range(n // block)]
        hit = 0
        while hit < len(blocks) and blocks[hit] in seen:
            hit += 1
        prompt += n
        cached += block * min(hit, (n - 1) // block)
        seen.update(blocks)
    return prompt, cached


def test_ragpulse_slice_of_the_published_trace(tmp_path):
    """The first 40 requests of RAGPulse (gzipped with their chunks' lines, MIT): detected,
    every line read, and the cached tokens of the token-by-token layout."""
    result = analyze([RAGPULSE / "0_trace.jsonl.gz"], db=tmp_path / "k.duckdb", hash_block_size=16)
    assert (result["requests"], result["sessions"]) == (40, 23)
    assert (result["prompt_tokens"], result["cached_tokens"]) == (123_754, 34_816)
    assert (123_754, 34_816) == _token_oracle(RAGPULSE, 16)


def test_ragpulse_directory_reads_the_companion_files_as_skipped(tmp_path, con):
    path = _ragpulse_dir(tmp_path, [_rag("1", [1], [10], [20], 19)], CHUNKS)
    reports = ingest_files(con, [path.parent], hash_block_size=4)
    kept = [(r.format, r.requests, r.out_of_scope) for r in reports if r.lines]
    assert kept == [  # the empty history and web-search files hold nothing to detect
        ("ragpulse", 1, 0),
        ("ragpulse-chunks", 0, 2),
        ("ragpulse-chunks", 0, 2),
        ("ragpulse-chunks", 0, 3),
    ]


def test_ragpulse_hostile_lines_are_rejected_with_reasons(tmp_path, con):
    chunks = {
        **CHUNKS,
        "3_history": [
            {"history_id": 30, "token_length": -4},
            {"history_id": 31, "token_length": 2},
            {"history_id": 31, "token_length": 5},
            b"{not json",
        ],
    }
    good = _rag("1", [1], [10], [20], 19)
    history = {**good, "hash_ids": {**good["hash_ids"], "history": [30]}}
    twice = {**good, "hash_ids": {**good["hash_ids"], "history": [31]}}
    trace = [
        good,
        _rag("2", [1], [99], [20], 30),  # 2: a chunk no file lists
        history,  # 3: a chunk on a bad companion line
        twice,  # 4: a chunk listed with two lengths
        _rag("5", [1], [10, 11], [20], 12),  # 5: chunks longer than the prompt
        {**good, "hash_ids": [1, 10, 20]},  # 6: ids as a list
        {**good, "hash_ids": {"sys_prompt": [1, "10"]}},  # 7: a string id
        {**good, "timestamp": "soon"},  # 8
        {**good, "timestamp": 5e9},  # 9: after 2100
        {k: v for k, v in good.items() if k != "timestamp"},  # 10
        {**good, "input_length": True},  # 11
        {**good, "output_length": -1},  # 12
        {**good, "session_id": ["x"]},  # 13
        {**good, "input_length": 17 + 5000},  # 14: far more than its chunks
        b'{"timestamp": "1", "input_length": 19, "hash_ids": {"sys_prompt": [%d]}}' % 2**64,
    ]
    path = _ragpulse_dir(tmp_path, trace, chunks)
    (report,) = ingest_files(con, [path], hash_block_size=4)
    assert (report.format, report.requests, report.rejected) == ("ragpulse", 1, 14)
    reasons = {line: reason for line, _, reason in _rejects(con)}
    assert reasons[2] == (
        "'passages_ids' chunk 99 is in no component file (1 unreadable line 3_history.jsonl:4: "
        "invalid JSON: unexpected character, expected a string key: line 1 column 2 (char 1))"
    )
    assert reasons[3] == (
        "'history' chunk 30: 3_history.jsonl:1: token_length must be an integer in 0..2**31, got -4"
    )
    assert reasons[4] == (
        "'history' chunk 31: listed with two lengths (3_history.jsonl:2, 3_history.jsonl:3)"
    )
    assert reasons[5] == "the chunks add up to 21 tokens, more than input_length 12"
    assert reasons[6] == "hash_ids must be an object of components (lists of chunk ids)"
    assert reasons[7] == "hash_ids.'sys_prompt' must be a list of chunk ids"
    assert reasons[8] == "unreadable timestamp 'soon'"
    assert reasons[9].startswith("timestamp 5000000000.0 is outside 1970-01-01..2100-01-01")
    assert reasons[10] == "timestamp is missing (seconds from the trace's start)"
    assert reasons[11] == "input_length must be a positive integer"
    assert reasons[12] == "output_length must be >= 0, got -1"
    assert reasons[13] == "session_id must be a string, got list"
    assert reasons[14] == (
        "input_length 5017 is 5000 tokens more than its chunks (at most 4096 are taken as the "
        "request's own)"
    )
    assert (
        reasons[15] == "hash_ids.'sys_prompt' must be a list of chunk ids"
    )  # 2**64 reads as float


def test_ragpulse_from_a_stream_says_it_needs_the_files():
    normalize = normalizer("ragpulse", 16)  # no source file: stdin
    with pytest.raises(InputError, match="needs its component files"):
        normalize(_rag("1", [1], [10], [20], 19))


# ---------------------------------------------------------------------------------------------
# kv-cache-tester


def test_kvcache_tester_conversation_with_a_subagent(tmp_path, con):
    # 4-token blocks, in time order: r0 (10) nothing; r1 (17) [1,2] of r0: 8; the sub-agent at
    # t=6: s0 (12) [1] then 9: 4; s1 (16) [1,9,10] of s0: 12; r2 (20) [1,2,3,4] of r1: 16;
    # r3 (12) starts with 5, a block never first: 0 (its 2 and 3 follow 5, not 1).
    path = FIXTURES / "kvcache_tester" / "conversation.json"
    (report,) = ingest_files(con, [path], hash_block_size=4)
    assert (report.format, report.lines, report.records, report.requests) == (
        "kv-cache-tester",
        1,
        6,
        6,
    )
    rows = _rows(
        con, "SELECT request_id, session_id, ts, model, input_length, output_tokens FROM requests"
    )
    assert rows == [
        ("conv-a:requests[0]", "conv-a", 0.0, "model-x", 10, 5),
        ("conv-a:requests[1]", "conv-a", 5.0, "model-x", 17, 3),
        ("conv-a:requests[2].requests[0]", "conv-a/sa1", 6.0, "model-y", 12, 7),
        ("conv-a:requests[2].requests[1]", "conv-a/sa1", 8.0, "model-y", 16, 2),
        ("conv-a:requests[3]", "conv-a", 10.0, "model-x", 20, 1),
        ("conv-a:requests[4]", "conv-a", 12.0, "model-x", 12, 1),
    ]
    result = analyze(db=con)
    assert (result["prompt_tokens"], result["cached_tokens"]) == (87, 40)
    assert result["sessions"] == 2


def test_kvcache_tester_block_size_must_match(tmp_path, con):
    path = FIXTURES / "kvcache_tester" / "conversation.json"
    with pytest.raises(InputError, match="block_size is 4, read at hash block size 512: read it"):
        ingest_files(con, [path])


def test_kvcache_tester_hostile_requests_are_rejected_by_item(tmp_path, con):
    doc = {
        "id": "c",
        "block_size": 4,
        "requests": [
            {"t": 0, "in": 8, "out": 1, "hash_ids": [1, 2]},
            {"t": 1, "in": 8, "out": 1, "hash_ids": [1]},
            {"t": -1, "in": 8, "out": 1, "hash_ids": [1, 2]},
            {"t": 2, "in": 0, "out": 1, "hash_ids": []},
            {"t": 3, "type": "subagent", "agent_id": "x", "requests": "none"},
            {"t": 4, "type": "subagent", "agent_id": "y", "requests": [["not", "a", "request"]]},
            "text",
            {"t": 5, "in": 8, "out": 1.5, "hash_ids": [1, 2]},
        ],
    }
    path = _jsonl(tmp_path / "c.json", [doc, {"id": "d", "block_size": 0, "requests": []}])
    (report,) = ingest_files(con, [path], hash_block_size=4, fmt="kv-cache-tester")
    assert (report.requests, report.rejected, report.records) == (1, 8, 9)
    assert _rejects(con) == [
        (1, 1, "requests[1].hash_ids has 1 ids, in 8 at block size 4 needs 2"),
        (1, 2, "requests[2].t must be a number of seconds >= 0, got -1"),
        (1, 3, "requests[3].in must be a positive integer"),
        (1, 4, "sub-agent requests[4]: requests must be a list"),
        (1, 5, "requests[5].requests[0] is not an object"),
        (1, 6, "requests[6] is not an object"),
        (1, 7, "requests[7].out must be an integer, got 1.5"),
        (2, 0, "block_size must be a positive integer, got 0"),
    ]


# ---------------------------------------------------------------------------------------------
# Qwen-Bailian


def test_bailian_chains_and_path_identity(tmp_path, con):
    # 16-token blocks: chat 3 follows chat 1 and reuses its [100, 101]: 32; chat 4 follows 3 and
    # reuses [100, 101, 103, 104] (3's last id, 105, covered a partial block): 64; chat 5 holds
    # 101 and 102 at chat 1's places, behind another first block: 0.
    path = FIXTURES / "bailian" / "trace.jsonl"
    (report,) = ingest_files(con, [path], hash_block_size=16)
    assert (report.format, report.requests, report.rejected) == ("bailian", 5, 0)
    rows = _rows(con, "SELECT request_id, session_id, ts, input_length FROM requests")
    assert rows == [("1", "1", 0.5, 40), ("2", "2", 1.0, 33), ("3", "1", 2.0, 70),
                    ("4", "1", 3.0, 90), ("5", "5", 4.0, 48)]  # fmt: skip
    result = analyze(db=con)
    assert (result["prompt_tokens"], result["cached_tokens"]) == (281, 96)
    assert result["sessions"] == 3


def test_bailian_at_the_wrong_block_size_says_which(con):
    path = FIXTURES / "bailian" / "trace.jsonl"
    with pytest.raises(InputError, match="use 16-token blocks: read them with hash block size 16"):
        ingest_files(con, [path])


def test_bailian_hostile_lines(tmp_path, con):
    good = {"chat_id": 1, "parent_chat_id": -1, "timestamp": 0.5, "input_length": 20,
            "output_length": 1, "type": "text", "turn": 1, "hash_ids": [1, 2]}  # fmt: skip
    lines = [
        good,
        {**good, "chat_id": "7"},
        {**good, "chat_id": 8, "parent_chat_id": -2},
        {**good, "chat_id": 9, "parent_chat_id": 9},
        {**good, "chat_id": 10, "type": "video"},
        {**good, "chat_id": 11, "turn": -1},
        {**good, "chat_id": 12, "hash_ids": [1, 2**63]},
        {**good, "chat_id": 13, "timestamp": "x"},
        {**good},  # a duplicate chat_id
    ]
    (report,) = ingest_files(con, [_jsonl(tmp_path / "b.jsonl", lines)], hash_block_size=16)
    assert (report.format, report.requests) == ("bailian", 1)
    assert [(line, reason) for line, _, reason in _rejects(con)] == [
        (2, "chat_id must be an integer >= 0, got '7'"),
        (3, "parent_chat_id must be an integer >= -1, got -2"),
        (4, "parent_chat_id is the request's own chat_id 9"),
        (5, "type must be one of text, search, image, file, got 'video'"),
        (6, "turn must be an integer >= 0, got -1"),
        (7, "hash_ids must fit in 64 bits"),
        (8, "unreadable timestamp 'x'"),
        (9, "duplicate request id '1' (first at line 1)"),
    ]


# ---------------------------------------------------------------------------------------------
# detection


def test_each_format_is_detected_from_its_records():
    rag = _rag("1", [1], [10], [20], 19)
    kvt = json.loads((FIXTURES / "kvcache_tester" / "conversation.json").read_text())
    bailian = json.loads((FIXTURES / "bailian" / "trace.jsonl").read_text().splitlines()[0])
    mooncake = {"timestamp": 1, "input_length": 20, "output_length": 1, "hash_ids": [1]}
    assert detect_record(rag) == "ragpulse"
    assert detect_record({"passage_id": 3, "token_length": 9}) == "ragpulse-chunks"
    assert detect_record(kvt) == "kv-cache-tester"
    assert detect_record(bailian) == "bailian"
    assert detect_record(mooncake) == "mooncake"
