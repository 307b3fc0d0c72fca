"""Generated tokens in a provider's cache (kvtool/traffic/output_blocks.py and the engine's use
of it): DeepSeek persists a prefix unit at the end of each request's output (its
context-caching guide), so a follow-up that sends the answer back can hit prompt plus answer;
the other providers cache what a later prompt carries only (``caches_output`` false).

Hand-computed traces use the real chain hashing (tests/workloads.py) with 16-token blocks and
the shipped DeepSeek rules (64-token units from 64 tokens, no expiry). The fixture
``tests/fixtures/deepseek_usage/documented-example.jsonl.gz`` is *not* a real log: no public
log with DeepSeek usage next to its prompts was found (SOURCE.md); its cached tokens follow
DeepSeek's documented rule, written by ``make_fixture.py``.
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
from kvtool.errors import InputError
from kvtool.ingest.formats.base import Normalized
from kvtool.ingest.formats.openai import read_usage
from kvtool.progress import NullProgress
from kvtool.providers import load_provider
from kvtool.simulate.providers import ProviderSpec, predict_provider
from kvtool.store.db import open_db
from kvtool.traffic.load import load_traffic
from kvtool.traffic.output_blocks import output_paths

FIXTURES = Path(__file__).parent / "fixtures" / "deepseek_usage"
FIXTURE = FIXTURES / "documented-example.jsonl.gz"


def toks(start: int, n: int) -> list[int]:
    """n distinct token ids from ``start`` (ranges that do not overlap never share a block)."""
    return list(range(start, start + n))


def workload(seqs, output, sessions=None):
    wl = token_workload(seqs, sessions=sessions)
    return dataclasses.replace(
        wl, output_tokens=np.asarray(output, np.int64), models=["deepseek-v4-flash"] * len(seqs)
    )


def cached(wl, caches_output: bool = True) -> list[int]:
    rules = dataclasses.replace(load_provider("deepseek"), caches_output=caches_output)
    pred = predict_provider(wl, ProviderSpec(rules))
    return [int(c) for c in pred.predicted_cached_tokens]


PROMPT = toks(1, 200)  # call 1: 200 tokens, 12 full blocks (depths 0..11)
ANSWER = toks(10_000, 100)  # call 1's answer: 100 generated tokens
NEXT = toks(20_000, 50)  # call 2's new user turn


def test_two_calls_answer_sent_back():
    wl = workload([PROMPT, PROMPT + ANSWER + NEXT], output=[100, 30])
    out = output_paths(wl)
    # call 1 ends at depth 11; its output reaches (200 + 100) // 16 - 1 = depth 17, and call 2
    # (350 tokens, depths 0..20) carries depths 12..17: 6 blocks. Call 2 has no successor.
    assert out.successor.tolist() == [1, -1]
    assert out.offsets.tolist() == [0, 6, 6]
    assert wl.depth[out.of(0)].tolist() == [12, 13, 14, 15, 16, 17]
    # with output caching call 2 hits 18 blocks = 288 tokens -> 64-token units: 256;
    # without, call 1's 12 blocks = 192 tokens -> 192
    assert cached(wl) == [0, 256]
    assert cached(wl, caches_output=False) == [0, 192]
    # OpenAI caches no output: nothing changes there (and 350 tokens are below its 1,024)
    openai = predict_provider(wl, ProviderSpec(load_provider("openai")))
    assert openai.predicted_cached_tokens.tolist() == [0, 0]


def test_output_is_capped_by_the_answer_and_by_the_successor():
    # a 20-token answer ends inside block 13 ((200 + 20) // 16 - 1 = 12): one block, depth 12
    wl = workload([PROMPT, PROMPT + ANSWER[:20] + NEXT], output=[20, 0])
    assert wl.depth[output_paths(wl).of(0)].tolist() == [12]
    # a logged output longer than what the successor carries: the successor's 270 tokens
    # (depths 0..15, 16 blocks) bound it -> depths 12..15, and call 2 hits all 16 blocks:
    # 256 tokens -> 256 (its last 14 tokens are no full block)
    wl = workload([PROMPT, PROMPT + ANSWER[:20] + NEXT], output=[500, 0])
    assert wl.depth[output_paths(wl).of(0)].tolist() == [12, 13, 14, 15]
    assert cached(wl) == [0, 256]


def test_edited_answer_is_not_a_continuation():
    # call 3 sends call 1's answer back with its 41st token edited: it does not carry call 2's
    # whole prompt, so call 2's answer (80 tokens) adds nothing to call 3. Call 1's output is
    # seen through call 2 (depths 12..17). Call 3 matches call 2's blocks up to the edit at
    # token 200 + 40 = 240, i.e. 15 blocks (240 tokens) -> 192, with or without output caching
    edited = ANSWER[:40] + [99_999] + ANSWER[41:]
    seqs = [PROMPT, PROMPT + ANSWER + NEXT, PROMPT + edited + toks(30_000, 60)]
    wl = workload(seqs, output=[100, 80, 10])
    out = output_paths(wl)
    assert out.successor.tolist() == [1, -1, -1]
    assert out.offsets.tolist() == [0, 6, 6, 6]
    assert cached(wl) == [0, 256, 192]
    assert cached(wl, caches_output=False) == [0, 192, 192]


def test_successor_is_the_first_later_request_of_the_same_session():
    # call 2 of another session extends call 1's path: it is not call 1's successor; call 3 of
    # call 1's session is. Call 1's answer blocks (depths 12..17, seen through call 3) are
    # written at call 1's time, so call 2 hits them up to where it leaves the answer: token
    # 248 is in block 15, so 15 blocks, 240 tokens -> 192. Call 3: 18 blocks, 288 -> 256.
    other = PROMPT + ANSWER[:48] + toks(40_000, 30)
    seqs = [PROMPT, other, PROMPT + ANSWER + NEXT]
    wl = workload(seqs, output=[100, 0, 0], sessions=["a", "b", "a"])
    out = output_paths(wl)
    assert out.successor.tolist() == [2, -1, -1]
    assert cached(wl) == [0, 192, 256]
    # without sessions the first later continuation is the other call 2 (278 tokens, depths
    # 0..16): it gives depths 12..16, up to call 1's cap 17; blocks 15 and 16 hold its own
    # turn, not call 1's answer, which an unlogged session cannot tell apart
    wl = workload(seqs, output=[100, 0, 0])
    assert output_paths(wl).successor.tolist() == [1, -1, -1]
    assert wl.depth[output_paths(wl).of(0)].tolist() == [12, 13, 14, 15, 16]


def test_no_full_block_and_empty_workload():
    wl = workload([toks(1, 10), toks(1, 10) + toks(500, 100)], output=[100, 0])
    out = output_paths(wl)
    assert out.successor.tolist() == [-1, -1]  # call 1 has no full block to be continued
    assert len(out.nodes) == 0
    empty = workload([], output=[])
    assert output_paths(empty).offsets.tolist() == [0]


def test_deepseek_usage_fields_are_read():
    # DeepSeek's own field stands for the cached tokens when prompt_tokens_details is absent;
    # the OpenAI field wins when both are logged (DeepSeek's newer responses carry both, equal)
    out = Normalized(kind="chat")
    read_usage({"prompt_tokens": 1000, "completion_tokens": 5, "prompt_cache_hit_tokens": 640,
                "prompt_cache_miss_tokens": 360}, out)  # fmt: skip
    assert (out.observed_prompt_tokens, out.observed_cached_tokens) == (1000, 640)
    out = Normalized(kind="chat")
    read_usage({"prompt_tokens": 1000, "prompt_tokens_details": {"cached_tokens": 512},
                "prompt_cache_hit_tokens": 640}, out)  # fmt: skip
    assert out.observed_cached_tokens == 512
    with pytest.raises(InputError, match=r"usage\.prompt_cache_hit_tokens 1200 exceeds"):
        read_usage({"prompt_tokens": 1000, "prompt_cache_hit_tokens": 1200}, Normalized("chat"))
    with pytest.raises(InputError, match="prompt_cache_hit_tokens"):
        read_usage({"prompt_tokens": 1000, "prompt_cache_hit_tokens": -3}, Normalized("chat"))


# ---------------------------------------------------------------------------------------------
# the documented-example fixture


def _make_fixture():
    spec = importlib.util.spec_from_file_location("make_fixture", FIXTURES / "make_fixture.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_fixture_is_what_make_fixture_writes():
    make = _make_fixture()
    assert gzip.decompress(FIXTURE.read_bytes()) == make.encode(make.records())


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("deepseek_usage")
    with open_db(str(tmp / "kv.duckdb")) as con:
        traffic = load_traffic(
            con, paths=[FIXTURE], tokenizer=None, fmt=None, hash_block_size=512,
            progress=NullProgress(),
        )  # fmt: skip
    return tmp, traffic.wl


def test_fixture_counts_are_kvtools(logged):
    _, wl = logged
    assert wl.n == 10
    # kvtool renders and counts each prompt as the fixture's usage says, and reads DeepSeek's
    # prompt_cache_hit_tokens as the cached tokens
    assert wl.n_tokens.tolist() == wl.observed_prompt.astype(int).tolist()
    assert wl.observed_cached.astype(int).tolist() == [
        0, 1472, 1600, 1728, 0, 960, 1536, 0, 1152, 1216,
    ]  # fmt: skip


def test_follow_ups_exceed_the_previous_prompt(logged):
    _, wl = logged
    # follow-ups: qa-1..3, agent-1..2, thinking-1..2 (7). Cached > previous prompt:
    # qa-1 1472 > 1313, qa-2 1600 > 1488, qa-3 1728 > 1611, agent-2 1536 > 1427; not agent-1
    # (960: 996 + an 18-token tool call = 1014 -> 960) nor thinking-1/2 (the reasoning is
    # dropped, so only the input units match: 1152 = 1152, 1216 < 1229). 4 of 7.
    prev = {}
    above = follow = 0
    for i in range(wl.n):
        s = wl.session[i]
        if s in prev:
            follow += 1
            above += int(wl.observed_cached[i] > wl.n_tokens[prev[s]])
        prev[s] = i
    assert (above, follow) == (4, 7)


def _agreement(log: Path, db: Path, extra: list[str]) -> dict:
    r = CliRunner().invoke(
        app,
        ["simulate", str(log), "--db", str(db), "--blocks", "300", "--provider", "deepseek",
         "--json", *extra],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    return orjson.loads(r.stdout)["provider"]


def test_output_caching_agrees_with_the_logged_usage(logged):
    """request_agreement on the fixture: 0.8 with output caching, 0.6 without.

    With: the first calls (3) and every call after an answer sent back (qa-1..3, agent-1..2)
    agree (hit = 64·⌊(prompt + output) / 64⌋, as logged); thinking-1 and -2 do not, since the
    logged output includes reasoning that the next call drops (predicted 1216 vs 1152 logged,
    1280 vs 1216): 8 of 10. Without: the first calls, agent-1 (64·⌊996 / 64⌋ = 960 either
    way) and thinking-1/2 agree, qa-1..3 and agent-2 fall one answer short: 6 of 10."""
    tmp, _ = logged
    rules = tmp / "no-output.json"
    rules.write_bytes(
        orjson.dumps({"rules": {"caches_output": {"value": False, "source": "caching"}}})
    )
    with_out = _agreement(FIXTURE, tmp / "a.duckdb", [])
    without = _agreement(FIXTURE, tmp / "b.duckdb", ["--rules", str(rules)])
    assert with_out["request_agreement"] == pytest.approx(0.8)
    assert without["request_agreement"] == pytest.approx(0.6)
    # predicted cached tokens, summed: with = 0+1472+1600+1728 + 0+960+1536 + 0+1216+1280
    # = 9792; without = 0+1280+1472+1600 + 0+960+1408 + 0+1152+1216 = 9088
    assert with_out["predicted_cached_tokens"] == 9792
    assert without["predicted_cached_tokens"] == 9088
    assert with_out["observed_cached_tokens"] == 9664
