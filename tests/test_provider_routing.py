"""OpenAI's routing in the provider engine (kvtool/simulate/providers.py, "Routing") and the
``prompt_cache_key`` it routes by, from ingest to the engine.

The rules are the shipped OpenAI data (kvtool/providers/data/openai.json, from OpenAI's
prompt-caching guide): a request is routed by its first 256 tokens (16 blocks of 16) and its
``prompt_cache_key``; above about 15 requests per minute for one prefix and key, requests
overflow to other machines, each with its own cache. kvtool's rule: a request goes to the lowest
machine of its route that took fewer than 15 of the route's requests in the 60 s before it.
Caching from 1,024 tokens in 128-token increments, in-memory retention 300 s.

Workloads are built with the real chain hashing (tests/workloads.py); the expected numbers are
worked out by hand in each test.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import orjson
import pytest
from workloads import token_workload

from kvtool.ingest import ingest_files
from kvtool.ingest.formats.base import CACHE_KEY_LIMIT
from kvtool.ingest.formats.litellm import normalize_payload, normalize_spendlog
from kvtool.progress import NullProgress
from kvtool.providers import load_provider
from kvtool.simulate.providers import ProviderSpec, predict_provider, routing
from kvtool.store import connect
from kvtool.traffic.load import load_traffic


def toks(start: int, n: int) -> list[int]:
    """n distinct token ids from ``start`` (ranges that do not overlap never share a block)."""
    return list(range(start, start + n))


SYSTEM = toks(1, 1280)  # 80 blocks: a system prompt of 1,280 tokens, a multiple of 128


def asks(n: int) -> list[list[int]]:
    """n prompts: the system prompt and a 100-token question of their own (1,380 tokens; the
    1,280 shared tokens are what a later request on a warm machine reads from the cache)."""
    return [SYSTEM + toks(100_000 + 1_000 * i, 100) for i in range(n)]


def workload(seqs, ts, keys=None, model="gpt-5.4", output=None):
    wl = token_workload(seqs, ts=ts, cache_keys=keys)
    wl = dataclasses.replace(wl, models=[model] * len(seqs))
    if output is not None:
        wl = dataclasses.replace(wl, output_tokens=np.asarray(output, np.int64))
    return wl


def spec(provider: str = "openai", **kw) -> ProviderSpec:
    return ProviderSpec(load_provider(provider), **kw)


def cached(wl, s: ProviderSpec | None = None) -> list[int]:
    pred = predict_provider(wl, s or spec())
    return [int(c) for c in pred.predicted_cached_tokens]


def test_one_system_prompt_without_a_key_overflows_after_15_a_minute():
    # 20 requests 3 s apart (0..57 s): one route; the 16th finds 15 on machine 0 within 60 s
    wl = workload(asks(20), ts=np.arange(20) * 3.0)
    r = routing(wl, spec())
    assert r.machine.tolist() == [0] * 15 + [1] * 5
    assert len(set(r.route.tolist())) == 1 and r.cache.tolist() == r.machine.tolist()
    # machine 0: the first misses, 2..15 read the system prompt (80 blocks = 1,280, a multiple
    # of 128); machine 1 starts cold: the 16th misses, 17..20 read what the 16th wrote
    assert cached(wl) == [0] + [1280] * 14 + [0] + [1280] * 4
    # one machine (routing off): only the first misses
    assert cached(wl, spec(routing=False)) == [0] + [1280] * 19


def test_a_burst_fills_one_machine_after_another():
    # 40 requests 1 s apart: 15 per machine per minute -> machines 0, 1, 2 (15, 15, 10)
    wl = workload(asks(40), ts=np.arange(40) * 1.0)
    assert routing(wl, spec()).machine.tolist() == [0] * 15 + [1] * 15 + [2] * 10
    got = cached(wl)
    assert [i for i, c in enumerate(got) if c == 0] == [0, 15, 30]  # one cold start each
    assert sum(got) == 37 * 1280


def test_four_keys_split_the_route_and_never_overflow():
    # the same 20 requests with 4 keys in turn: 4 routes of 5 requests a minute, all machine 0
    keys = [f"user-{i % 4}" for i in range(20)]
    wl = workload(asks(20), ts=np.arange(20) * 3.0, keys=keys)
    r = routing(wl, spec())
    assert r.machine.tolist() == [0] * 20
    assert r.route.tolist()[:8] == [0, 1, 2, 3, 0, 1, 2, 3]  # dense ids in key order
    # each key's first request misses (nothing is shared across keys), the rest hit 1,280
    assert cached(wl) == [0, 0, 0, 0] + [1280] * 16


def test_two_keys_never_share_a_cache():
    prompt = SYSTEM + toks(50_000, 100)  # 1,380 tokens: 86 full blocks = 1,376 -> 1,280
    wl = workload([prompt] * 4, ts=[0.0, 10.0, 20.0, 30.0], keys=["a", "b", "a", None])
    # b misses though a wrote the same prompt 10 s before; a hits; no key is a route of its own
    assert cached(wl) == [0, 0, 1280, 0]
    assert len(set(routing(wl, spec()).cache.tolist())) == 3
    assert cached(wl, spec(routing=False)) == [0, 1280, 1280, 1280]


def test_prompts_that_differ_within_the_first_256_tokens_meet_different_machines():
    head = toks(1, 200)  # 12 full blocks (192 tokens) + 8 tokens: shorter than the 256 routed
    long_a = head + toks(10_000, 1200)  # 1,400 tokens: the route is its first 16 blocks
    long_b = head + toks(20_000, 1200)  # shares 192 tokens with long_a, then differs
    seqs = [head, long_a, head, long_a, long_b]
    wl = workload(seqs, ts=[0.0, 10.0, 20.0, 30.0, 40.0])
    r = routing(wl, spec())
    # a prompt shorter than 256 tokens is routed by its own full blocks: head, long_a and
    # long_b are three routes
    assert r.route.tolist() == [r.route[0], r.route[1], r.route[0], r.route[1], r.route[4]]
    assert len({int(r.route[0]), int(r.route[1]), int(r.route[4])}) == 3
    # without the minimum: the 2nd shares 12 blocks with the 1st but another route: 0; the 3rd
    # repeats the 1st (12 blocks = 192 -> 128); the 4th repeats the 2nd (87 blocks = 1,392 ->
    # 1,280); the 5th shares 12 blocks with the 2nd and 4th, on another route: 0
    assert cached(wl, spec(no_minimum=True)) == [0, 0, 128, 1280, 0]
    # one machine: the 2nd and 5th read the 192 shared tokens (-> 128)
    assert cached(wl, spec(no_minimum=True, routing=False)) == [0, 128, 128, 1280, 128]


def test_the_60_second_window_slides():
    # 15 requests at 0..14 s fill machine 0; at 59 s all 15 are within 60 s -> machine 1; at
    # 60 s the one at 0 s has left (60 - 0 = 60 is not < 60) -> machine 0 again; at 60.5 s
    # machine 0 holds 1..14 and 60 (15) -> machine 1, which holds only 59
    ts = [float(t) for t in range(15)] + [59.0, 60.0, 60.5]
    wl = workload(asks(18), ts=ts)
    assert routing(wl, spec()).machine.tolist() == [0] * 15 + [1, 0, 1]
    # machine 1 is cold at 59 s, then warm at 60.5 s; machine 0 is warm at 60 s
    assert cached(wl) == [0] + [1280] * 14 + [0, 1280, 1280]


def test_requests_without_timestamps_stay_on_machine_0():
    wl = workload(asks(20), ts=[np.nan] * 20)
    assert routing(wl, spec()).machine.tolist() == [0] * 20
    assert cached(wl) == [0] + [1280] * 19


def test_providers_without_routing_are_one_machine():
    # DeepSeek has no routing rule: 20 requests a minute all meet one cache
    wl = workload(asks(20), ts=np.arange(20) * 3.0, model="deepseek-flash")
    r = routing(wl, spec("deepseek"))
    assert r.machine.tolist() == r.route.tolist() == [0] * 20
    # 86 full blocks of the first are written; later ones read the 80 shared blocks (1,280, a
    # multiple of 64)
    assert cached(wl, spec("deepseek")) == [0] + [1280] * 19


def test_deepseek_output_blocks_are_written_on_the_request_s_machine():
    # turn 1: 640 prompt tokens (40 blocks) and 200 output tokens; turn 2 sends them back with
    # 100 more: 940 tokens (58 full blocks). Turn 1's output covers depths 40 ..
    # (640 + 200) // 16 - 1 = 51: 12 blocks, written at turn 1. Turn 2 reads 40 + 12 = 52
    # blocks = 832 tokens (13 units of 64); without the output, only the 640 of turn 1's prompt.
    first = toks(1, 640)
    second = first + toks(5_000, 300)
    wl = workload([first, second], ts=[0.0, 30.0], model="deepseek-flash", output=[200, 50])
    assert cached(wl, spec("deepseek")) == [0, 832]
    # the output of a request the log never continues adds nothing: turn 2 alone
    assert cached(workload([second], ts=[0.0], model="deepseek-flash", output=[50]),
                  spec("deepseek")) == [0]  # fmt: skip


# ---------------------------------------------------------------------------------------------
# ingest: prompt_cache_key -> requests.cache_key -> Workload.cache_keys

LONG_SYSTEM = "You are a careful assistant who answers from the policy handbook. " * 120


def chat(i: int, key: str | None) -> dict:
    body: dict = {
        "model": "gpt-5.4",
        "messages": [
            {"role": "system", "content": LONG_SYSTEM},
            {"role": "user", "content": f"question number {i}"},
        ],
    }
    if key is not None:
        body["prompt_cache_key"] = key
    return {"id": f"c{i}", "timestamp": 1_700_000_000 + 3 * i, "request": body}


def write(path, records) -> None:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))


def stored_keys(db) -> dict[str, str | None]:
    con = connect(db)
    rows = dict(con.execute("SELECT request_id, cache_key FROM requests").fetchall())
    con.close()
    return rows


def test_openai_chat_responses_and_batch_lines_store_the_key(tmp_path):
    chat_log = tmp_path / "chat.jsonl"
    write(chat_log, [chat(0, "faq-v2"), chat(1, None)])
    responses = tmp_path / "responses.jsonl"
    write(
        responses,
        [
            {"id": "r0", "request": {"model": "gpt-5.4", "input": "hi", "prompt_cache_key": "k"}},
            {  # only the Response echoes the key
                "id": "r1",
                "request": {"model": "gpt-5.4", "input": "hi"},
                "response": {"object": "response", "prompt_cache_key": "echoed"},
            },
        ],
    )
    batch = tmp_path / "batch.jsonl"
    line = {"method": "POST", "url": "/v1/chat/completions"}
    write(
        batch,
        [
            {**line, "custom_id": "b0", "body": {**chat(0, "batch-key")["request"]}},
            {"custom_id": "b1", "method": "POST", "url": "/v1/responses",
             "body": {"model": "gpt-5.4", "input": "hi", "prompt_cache_key": "resp-key"}},
        ],
    )  # fmt: skip
    db = tmp_path / "kv.duckdb"
    con = connect(db)
    reports = ingest_files(con, [chat_log, responses, batch])
    con.close()
    assert [r.format for r in reports] == ["openai-chat", "openai-responses", "openai-batch"]
    assert [r.requests for r in reports] == [2, 2, 2]
    assert stored_keys(db) == {
        "c0": "faq-v2",
        "c1": None,
        "r0": "k",
        "r1": "echoed",
        "b0": "batch-key",
        "b1": "resp-key",
    }


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        (42, "prompt_cache_key must be a string, got int"),
        ("x" * (CACHE_KEY_LIMIT + 1), f"longer than {CACHE_KEY_LIMIT} characters (1025)"),
    ],
)
def test_a_bad_key_rejects_its_line_naming_the_field(tmp_path, key, reason):
    log = tmp_path / "bad.jsonl"
    bad = chat(1, None)
    bad["request"]["prompt_cache_key"] = key
    write(log, [chat(0, "x" * CACHE_KEY_LIMIT), bad])  # the limit itself is accepted
    con = connect(tmp_path / "kv.duckdb")
    (report,) = ingest_files(con, [log])
    (stored,) = con.execute("SELECT length(cache_key) FROM requests").fetchall()
    ((got,),) = con.execute("SELECT reason FROM rejects").fetchall()
    con.close()
    assert report.requests == 1 and report.rejected == 1 and stored == (CACHE_KEY_LIMIT,)
    assert reason in got


def test_litellm_logs_keep_the_key_of_chat_and_responses_calls():
    """A payload keeps the caller's parameters in ``model_parameters``; a SpendLogs row keeps
    the client's body in ``proxy_server_request``. Anthropic Messages have no such key."""
    msgs = [{"role": "user", "content": "hi"}]
    at = {"startTime": 1_700_000_000.5, "id": "p"}
    chat_call = {"call_type": "acompletion", "messages": msgs, **at,
                 "model_parameters": {"prompt_cache_key": "pk"}}  # fmt: skip
    resp_call = {"call_type": "aresponses", "messages": "hello", **at,
                 "model_parameters": {"prompt_cache_key": "rk", "instructions": "sys"}}  # fmt: skip
    claude = {**chat_call, "call_type": "anthropic_messages"}
    assert [normalize_payload(r).cache_key for r in (chat_call, resp_call, claude)] == [
        "pk",
        "rk",
        None,
    ]
    row = {"request_id": "s", "startTime": "2026-01-01T00:00:00"}
    chat_row = {**row, "call_type": "acompletion",
                "proxy_server_request": {"messages": msgs, "prompt_cache_key": "sk"}}  # fmt: skip
    resp_row = {**row, "call_type": "aresponses",
                "proxy_server_request": {"input": "x", "prompt_cache_key": "sr"}}  # fmt: skip
    assert [normalize_spendlog(r).cache_key for r in (chat_row, resp_row)] == ["sk", "sr"]


def test_the_key_is_never_the_tenant_or_the_session(tmp_path):
    log = tmp_path / "chat.jsonl"
    write(log, [chat(0, "shared-prefix")])
    con = connect(tmp_path / "kv.duckdb")
    ingest_files(con, [log])
    row = con.execute("SELECT tenant, session_id, end_user, cache_key FROM requests").fetchall()
    con.close()
    assert row == [(None, None, None, "shared-prefix")]


def _traffic(tmp_path, name: str, keys: list[str | None], redact: bool = False):
    log = tmp_path / f"{name}.jsonl"
    write(log, [chat(i, k) for i, k in enumerate(keys)])
    con = connect(tmp_path / f"{name}.duckdb")
    traffic = load_traffic(
        con,
        paths=[log],
        tokenizer=None,
        fmt=None,
        hash_block_size=512,
        progress=NullProgress(),
        redact=redact,
    )
    con.close()
    assert traffic.redacted == redact
    return traffic.wl


def test_a_redacted_ingest_keeps_the_key(tmp_path):
    # the key is a routing label, not prompt text: kept as logged, like session ids
    wl = _traffic(tmp_path, "redacted", ["k0", None, "k0"], redact=True)
    assert wl.cache_keys == ["k0", None, "k0"]


def test_ingested_keys_route_the_workload(tmp_path):
    # 20 chat requests 3 s apart on one long system prompt (over 256 tokens with any tokenizer)
    plain = _traffic(tmp_path, "plain", [None] * 20)
    assert plain.cache_keys == [None] * 20
    assert routing(plain, spec()).machine.tolist() == [0] * 15 + [1] * 5
    got = cached(plain)
    assert [i for i, c in enumerate(got) if c == 0] == [0, 15]  # each machine's first misses

    keys = [f"user-{i % 4}" for i in range(20)]
    keyed = _traffic(tmp_path, "keyed", keys)
    assert keyed.cache_keys == keys  # processing order is the log's (timestamps ascend)
    assert routing(keyed, spec()).machine.tolist() == [0] * 20
    got = cached(keyed)
    assert [i for i, c in enumerate(got) if c == 0] == [0, 1, 2, 3]
    # every hit reads the same shared prefix (system prompt and template, whole 128s)
    hits = {c for c in got if c} | {c for c in cached(plain) if c}
    assert len(hits) == 1 and hits.pop() >= 1024
