"""Anthropic's explicit ``cache_control`` breakpoints (``kvtool simulate --provider anthropic``):
markers placed on kvtool's token ids (``kvtool.tokenize.breakpoints``), the engine
(``kvtool.simulate.anthropic``) on hand-computed traces, and the command on a fixture whose
usage follows Anthropic's documented rules (tests/fixtures/anthropic_cache/make_fixture.py).

Prices are the shipped data (kvtool/providers/data/anthropic.json): Sonnet 4.5 (the
``claude-sonnet-4`` entry) $3 input, $0.30 read, $3.75 write (5 min), $6 write (1 h), $15 output
per million tokens, minimum 1,024 tokens; Opus 4.5 minimum 4,096 tokens.
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib.util
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest
from typer.testing import CliRunner
from workloads import token_workload

from kvtool.cli import app
from kvtool.progress import NullProgress
from kvtool.providers import load_provider
from kvtool.simulate.anthropic import marker_ttls, predict_anthropic, refused
from kvtool.simulate.providers import ProviderSpec
from kvtool.store import open_db
from kvtool.store.requests import PromptRow
from kvtool.tokenize import load_tokenizer
from kvtool.tokenize.breakpoints import Breakpoints, RequestMarks, request_marks
from kvtool.tokenize.plans import PromptTokens
from kvtool.tokenize.template import make_template
from kvtool.traffic import load_traffic
from kvtool.traffic.breakpoints import load_breakpoints, logged_cache_writes

FIXTURES = Path(__file__).parent / "fixtures" / "anthropic_cache"
FIXTURE = FIXTURES / "conversation.jsonl.gz"
RULES = load_provider("anthropic")
SONNET = "claude-sonnet-4-5"
OPUS = "claude-opus-4-5"
MTOK = 1e-6


def _workload(lengths: list[int], ts: list[float], models: list[str] | None = None):
    """Requests of these prompt lengths and times (the token ids do not matter here: the
    breakpoints carry the prefix identities)."""
    wl = token_workload([list(range(n)) for n in lengths], ts=ts)
    return dataclasses.replace(wl, models=list(models or [SONNET] * len(lengths)))


def _marks(*requests) -> Breakpoints:
    """Each request: None (no marker) or (ends, blocks, hashes, marked boundaries, TTLs)."""
    return Breakpoints.build(
        [
            None
            if r is None
            else RequestMarks(
                np.array(r[0], np.int64),
                np.array(r[1], np.int64),
                np.array(r[2], np.int64),
                np.array(r[3], np.int64),
                tuple(r[4]),
            )
            for r in requests
        ]
    )


def _predict(wl, marks: Breakpoints, **spec):
    return predict_anthropic(wl, ProviderSpec(RULES, **spec), marks)


# ---------------------------------------------------------------------------------------------
# the engine on hand-computed traces


def test_no_marker_caches_nothing():
    wl = _workload([2000, 2000], [0.0, 10.0])
    pred = _predict(wl, _marks(None, None))
    # the same 2,000-token prompt twice, but no cache_control: Anthropic caches nothing
    assert pred.predicted_cached_tokens.tolist() == [0, 0]
    assert pred.predicted_write_tokens.tolist() == [0, 0]
    assert pred.bill_predicted.tolist() == pytest.approx([2000 * 3 * MTOK] * 2)
    assert pred.bill_no_cache.tolist() == pytest.approx([2000 * 3 * MTOK] * 2)


def test_lookback_finds_an_entry_within_20_blocks_not_beyond():
    # r0 marks its boundary 1 (1,200 tokens, 4 blocks): writes the entry "2".
    # r1 and r2 share r0's boundaries 0-1, add boundaries of 50 tokens and 1 block each and
    # mark only their last one. r1 adds 21: its breakpoint is 25 - 4 = 21 blocks after the
    # entry, beyond the lookback (20): a miss, written from 0 to 1,200 + 21·50 = 2,250.
    # r2 adds 20: 24 - 4 = 20 blocks, within it: reads 1,200, writes 2,200 - 1,200 = 1,000.
    def request(added: int):
        ends = [100, 1200] + [1200 + 50 * k for k in range(1, added + 1)]
        blocks = [3, 4] + [4 + k for k in range(1, added + 1)]
        hashes = [1, 2] + [100 + k for k in range(1, added + 1)]
        return ends, blocks, hashes, [len(ends) - 1], [""]

    marks = _marks(([100, 1200, 1300], [3, 4, 5], [1, 2, 3], [1], [""]), request(21), request(20))
    wl = _workload([1310, 2260, 2210], [0.0, 10.0, 20.0])
    pred = _predict(wl, marks)
    assert pred.predicted_cached_tokens.tolist() == [0, 0, 1200]
    assert pred.predicted_write_tokens.tolist() == [1200, 2250, 1000]
    # r2: 10 uncached at $3, 1,000 written at $3.75, 1,200 read at $0.30: 30 + 3,750 + 360
    assert pred.bill_predicted[2] == pytest.approx(4140 * MTOK)
    assert pred.bill_no_cache[2] == pytest.approx(2210 * 3 * MTOK)


def test_minimum_length_per_model():
    # a 2,000-token breakpoint twice on Sonnet 4.5 (minimum 1,024): written, then read; twice on
    # Opus 4.5 (minimum 4,096): nothing (its prefixes are its own: other identities)
    one = ([2000], [1], [10], [0], [""])
    other = ([2000], [1], [20], [0], [""])
    wl = _workload([2010] * 4, [0.0, 10.0, 20.0, 30.0], [SONNET, SONNET, OPUS, OPUS])
    marks = _marks(one, one, other, other)
    pred = _predict(wl, marks)
    assert pred.min_cacheable_tokens.tolist() == [1024, 1024, 4096, 4096]
    assert pred.predicted_cached_tokens.tolist() == [0, 2000, 0, 0]
    assert pred.predicted_write_tokens.tolist() == [2000, 0, 0, 0]
    what_if = _predict(wl, marks, no_minimum=True)
    assert what_if.predicted_cached_tokens.tolist() == [0, 2000, 0, 2000]
    assert what_if.predicted_write_tokens.tolist() == [2000, 0, 2000, 0]


def test_5m_ttl_expires_and_a_hit_refreshes_it():
    one = ([1100], [1], [7], [0], [""])
    # t 0 writes; 250 reads (250 <= 300) and refreshes; 500 reads (500 - 250 = 250: only
    # because of the refresh, 500 - 0 > 300); 900 misses (900 - 500 = 400 > 300) and rewrites
    wl = _workload([1110] * 4, [0.0, 250.0, 500.0, 900.0])
    pred = _predict(wl, _marks(one, one, one, one))
    assert pred.predicted_cached_tokens.tolist() == [0, 1100, 1100, 0]
    assert pred.predicted_write_tokens.tolist() == [1100, 0, 0, 1100]
    # without the hits in between, the entry written at 0 is gone at 400
    wl2 = _workload([1110] * 2, [0.0, 400.0])
    assert _predict(wl2, _marks(one, one)).predicted_cached_tokens.tolist() == [0, 0]
    # no expiry (the shortfall's what-if): 900 reads too
    forever = _predict(wl, _marks(one, one, one, one), no_expiry=True)
    assert forever.predicted_cached_tokens.tolist() == [0, 1100, 1100, 1100]


def test_1h_and_5m_writes_are_priced_and_kept_apart():
    # breakpoints at 1,100 (1 h) and 1,500 (5 min), prompt 1,600
    both = ([1100, 1500], [1, 2], [1, 2], [0, 1], ["1h", "5m"])
    wl = _workload([1600, 1600], [0.0, 1000.0])
    pred = _predict(wl, _marks(both, both))
    # r0 writes 1,500: 1,100 at $6 (1 h) + 400 at $3.75 (5 min), 100 uncached at $3:
    # 6,600 + 1,500 + 300 = 8,400
    assert pred.predicted_write_tokens.tolist() == [1500, 400]
    assert pred.bill_predicted[0] == pytest.approx(8400 * MTOK)
    # r1 at 1,000 s: the 1 h entry is alive (1,000 <= 3,600), the 5 min one is not: reads
    # 1,100 at $0.30, rewrites 400 at $3.75, 100 at $3: 330 + 1,500 + 300 = 2,130
    assert pred.predicted_cached_tokens.tolist() == [0, 1100]
    assert pred.bill_predicted[1] == pytest.approx(2130 * MTOK)


def test_a_marker_without_ttl_takes_the_chosen_ttl():
    one = ([1100], [1], [7], [0], [""])
    wl = _workload([1200], [0.0])
    # 1,100 written + 100 uncached: at 5 min 4,125 + 300; at 1 h 6,600 + 300
    assert _predict(wl, _marks(one)).bill_predicted[0] == pytest.approx(4425 * MTOK)
    assert _predict(wl, _marks(one), ttl="1h").bill_predicted[0] == pytest.approx(6900 * MTOK)


def test_more_than_four_breakpoints_or_an_unknown_ttl_is_refused():
    five = ([1100, 1200, 1300, 1400, 1500], [1, 2, 3, 4, 5], [1, 2, 3, 4, 5], range(5), [""] * 5)
    four = ([1100, 1200, 1300, 1400], [1, 2, 3, 4], [1, 2, 3, 4], range(4), [""] * 4)
    odd = ([1100], [1], [1], [0], ["2h"])
    marks = _marks(five, four, odd)
    assert refused(marks, RULES, marker_ttls(marks, ProviderSpec(RULES))).tolist() == [
        True, False, True,
    ]  # fmt: skip
    wl = _workload([1600] * 3, [0.0, 10.0, 20.0])
    pred = _predict(wl, marks)
    # the refused request wrote nothing, so the next one finds nothing: it writes up to its
    # last breakpoint (1,400)
    assert pred.predicted_cached_tokens.tolist() == [0, 0, 0]
    assert pred.predicted_write_tokens.tolist() == [0, 1400, 0]
    assert pred.bill_predicted[0] == pytest.approx(pred.bill_no_cache[0])
    assert pred.bill_predicted[2] == pytest.approx(1600 * 3 * MTOK)


# ---------------------------------------------------------------------------------------------
# markers placed on token ids


SYSTEM = {"role": "system", "content": "You are a careful assistant. " * 20}
USER = {"role": "user", "content": [{"type": "text", "text": "Part one."}, {"type": "text",
        "text": "Part two."}]}  # fmt: skip
CALL = {"id": "c1", "type": "function", "function": {"name": "look", "arguments": '{"q": 1}'}}
ASSISTANT = {"role": "assistant", "content": "Looking it up.", "tool_calls": [CALL]}
TOOL_RESULT = {"role": "tool", "tool_call_id": "c1", "content": "found 42"}
LAST = {"role": "user", "content": "Thanks, and now?"}
TOOLS = [{"type": "function", "function": {"name": "look", "parameters": {"type": "object"}}}]
MARKERS = (
    {"tool": 0, "type": "ephemeral", "ttl": "1h"},
    {"message": 0, "part": None, "type": "ephemeral", "ttl": None},
    {"message": 1, "part": 0, "type": "ephemeral", "ttl": None},
    {"message": 2, "tool_call": 0, "type": "ephemeral", "ttl": None},
    {"auto": True, "type": "ephemeral", "ttl": None},
)


def _request(tenant: str, model: str = SONNET, last: dict = LAST):
    """A stored request's row and bodies (content keys name contents, as in a store)."""
    key = 14 if last is LAST else 15
    bodies = {10: SYSTEM, 11: USER, 12: ASSISTANT, 13: TOOL_RESULT, key: last, 20: TOOLS}
    row = PromptRow(1, "chat", model, tenant, (10, 11, 12, 13, key), 20, None)
    return row, bodies


@pytest.fixture(scope="module")
def bundle():
    return load_tokenizer(None)


def test_markers_resolve_to_the_head_and_message_ends(bundle):
    row, bodies = _request("a")
    got = request_marks(PromptTokens(bundle, "pieces"), row, bodies, MARKERS)
    template = make_template(bundle)

    def count(text: str) -> int:
        return len(bundle.tokenizer.encode(text, add_special_tokens=False).ids)

    head = count(template.head([SYSTEM], TOOLS))
    ends = np.cumsum([head] + [count(template.message(m)) for m in (USER, ASSISTANT,
                     TOOL_RESULT, LAST)])  # fmt: skip
    assert got.ends.tolist() == ends.tolist()
    # tool and system markers: the head (0); the marker on USER's first part: USER's end (1);
    # on ASSISTANT's tool call: its end (2); automatic: the last message's end (4)
    assert got.mark_at.tolist() == [0, 0, 1, 2, 4]
    assert got.mark_ttl == ("1h", "", "", "", "")
    # content blocks: head = system 1 + tool 1 = 2; USER 2 parts -> 4; ASSISTANT text + call
    # -> 6; the tool result -> 7; LAST -> 8
    assert got.blocks.tolist() == [2, 4, 6, 7, 8]
    # with one render per marked message (a tokenizer's own template works this way): the
    # same offsets, at the head, the marked messages and the last message only
    whole = request_marks(PromptTokens(bundle, "whole"), row, bodies, MARKERS)
    assert whole.ends.tolist() == ends[[0, 1, 2, 4]].tolist()
    assert whole.blocks.tolist() == [2, 4, 6, 8]
    assert whole.mark_at.tolist() == [0, 0, 1, 2, 3]


def test_prefix_identities_separate_tenants_and_models(bundle):
    tokens = PromptTokens(bundle, "pieces")
    a = request_marks(tokens, *_request("a"), MARKERS).hashes
    assert request_marks(tokens, *_request("a"), MARKERS).hashes.tolist() == a.tolist()
    b = request_marks(tokens, *_request("b"), MARKERS).hashes
    opus = request_marks(tokens, *_request("a", OPUS), MARKERS).hashes
    assert not set(a.tolist()) & set(b.tolist())
    assert not set(a.tolist()) & set(opus.tolist())
    # another last message: the same prefix identities up to the message before it
    other = request_marks(tokens, *_request("a", last={"role": "user", "content": "No."}), MARKERS)
    assert other.hashes[:4].tolist() == a[:4].tolist() and other.hashes[4] != a[4]


# ---------------------------------------------------------------------------------------------
# the command on the documented-rules fixture


def _make_fixture():
    spec = importlib.util.spec_from_file_location("make_fixture", FIXTURES / "make_fixture.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_fixture_is_what_make_fixture_writes():
    make = _make_fixture()
    assert gzip.decompress(FIXTURE.read_bytes()) == make.encode(make.records())


def _usage() -> list[dict]:
    lines = gzip.decompress(FIXTURE.read_bytes()).splitlines()
    return [orjson.loads(line)["response"]["usage"] for line in lines]


@pytest.fixture(scope="module")
def command(tmp_path_factory) -> dict:
    db = str(tmp_path_factory.mktemp("anthropic") / "kv.duckdb")
    args = ["simulate", str(FIXTURE), "--db", db, "--blocks", "100", "--provider", "anthropic"]
    r = CliRunner().invoke(app, [*args, "--json"])
    assert r.exit_code == 0, r.output
    return {"db": db, "out": orjson.loads(r.stdout)}


def test_command_predicts_the_logged_usage(command):
    out, usage = command["out"], _usage()
    p = out["provider"]
    reads = [u["cache_read_input_tokens"] for u in usage]
    writes = [u["cache_creation_input_tokens"] for u in usage]
    prompts = [u["input_tokens"] + r + w for u, r, w in zip(usage, reads, writes, strict=True)]
    # the fixture counts with kvtool's tokenizer and template, so the approximation (token
    # counts) is zero here: prompts, reads and bills agree exactly
    assert out["prompt_tokens"] == sum(prompts)
    assert p["name"] == "anthropic" and p["ttl"] == "5m" and p["fallback_models"] == []
    assert p["predicted_cached_tokens"] == p["observed_cached_tokens"] == sum(reads)
    assert p["request_agreement"] == 1.0
    out_tokens = 20 * len(usage)
    no_cache = (sum(prompts) * 3 + out_tokens * 15) * MTOK
    # every write of the fixture is a 5-minute one
    bill = (
        sum(u["input_tokens"] for u in usage) * 3 + sum(reads) * 0.3 + sum(writes) * 3.75
        + out_tokens * 15
    ) * MTOK  # fmt: skip
    assert p["bill"]["no_cache"] == pytest.approx(no_cache)
    assert p["bill"]["predicted"] == pytest.approx(bill)
    assert p["bill"]["observed"] == pytest.approx(bill)


def test_command_per_request(command):
    usage = _usage()
    with open_db(command["db"]) as con:
        traffic = load_traffic(
            con, paths=None, tokenizer=None, fmt=None, hash_block_size=512,
            progress=NullProgress(),
        )  # fmt: skip
        marks = load_breakpoints(con, traffic, NullProgress())
        logged_writes = logged_cache_writes(con, traffic)
    pred = predict_anthropic(traffic.wl, ProviderSpec(RULES), marks)
    # processing order is the fixture's (time order)
    assert pred.predicted_cached_tokens.tolist() == [u["cache_read_input_tokens"] for u in usage]
    writes = [u["cache_creation_input_tokens"] for u in usage]
    assert pred.predicted_write_tokens.tolist() == writes
    assert logged_writes.tolist() == writes
    # team-b-0 (index 2) repeats team-a-0's prompt in another workspace: nothing read
    assert pred.predicted_cached_tokens[2] == 0 and writes[2] == writes[0]


def test_a_hash_trace_is_refused_in_one_line(tmp_path):
    trace = tmp_path / "trace.jsonl"
    trace.write_text(
        '{"timestamp": 0, "input_length": 2048, "output_length": 8, "hash_ids": [1, 2, 3, 4]}\n'
    )
    r = CliRunner().invoke(
        app, ["simulate", str(trace), "--db", str(tmp_path / "kv.duckdb"), "--blocks", "10",
              "--provider", "anthropic", "--json"],
    )  # fmt: skip
    assert r.exit_code == 2
    lines = r.output.strip().splitlines()
    assert len(lines) == 1
    assert "anthropic needs prompt text (cache_control markers): a hash trace has none" in lines[0]


def test_a_redacted_database_is_refused_in_one_line(tmp_path):
    r = CliRunner().invoke(
        app, ["simulate", str(FIXTURE), "--db", str(tmp_path / "kv.duckdb"), "--redact",
              "--blocks", "10", "--provider", "anthropic", "--json"],
    )  # fmt: skip
    assert r.exit_code == 2
    lines = r.output.strip().splitlines()
    assert len(lines) == 1
    assert "anthropic needs prompt text (cache_control markers): a redacted database" in lines[0]
