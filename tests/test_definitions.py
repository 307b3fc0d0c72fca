"""The definitions matrix (bench/definitions_matrix.py, docs/validation.md#definitions-matrix):
every hit-rate definition on a hand-made trace with hand-computed values, and the cells of the
Mooncake traces that the docs name."""

from __future__ import annotations

import importlib.util
import sys
from fractions import Fraction as F
from pathlib import Path

import numpy as np
import pytest

_spec = importlib.util.spec_from_file_location(
    "definitions_matrix", Path(__file__).resolve().parents[1] / "bench" / "definitions_matrix.py"
)
dm = importlib.util.module_from_spec(_spec)
sys.modules["definitions_matrix"] = dm  # dataclasses look their module up
_spec.loader.exec_module(dm)

# 4-token blocks; ids are prefix blocks (Mooncake's), the last one partial unless n % 4 == 0.
#   r0  n=10  [1, 2, 3]     3 ids, 2 full; the partial id 3 weighs 2 tokens
#   r1  n=10  [1, 2, 3]     r0 again: all 3 ids hit; vLLM keeps 2 full blocks (cap (10-1)//4 = 2)
#   r2  n=8   [1, 4]        2 full blocks, no partial; [1] hits, [1, 4] is new
#   r3  n=13  [1, 2, 5, 6]  3 full; [1], [1, 2] hit; the partial id 6 weighs 1 token
#   r4  n=10  [1, 2, 3]     r0 again
IDS = [[1, 2, 3], [1, 2, 3], [1, 4], [1, 2, 5, 6], [1, 2, 3]]
N = [10, 10, 8, 13, 10]
TOTAL = sum(N)  # 51: the token totals agree whether the partial block counts or not


def _trace():
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in IDS])])
    return dm.trace_from_ids(offsets, np.concatenate(IDS), np.array(N), 4)


def _mean(*xs):
    return sum(F(x) for x in xs) / len(xs)


# infinite cache; warm-up 0.5 counts r2, r3, r4 (floor(2.5) = 2 requests warm the cache)
IDEAL = {
    ("token", False, 0.0, "pooled"): F(0 + 8 + 4 + 8 + 8, TOTAL),
    ("token", True, 0.0, "pooled"): F(0 + 10 + 4 + 8 + 10, TOTAL),
    ("block", False, 0.0, "pooled"): F(0 + 2 + 1 + 2 + 2, 2 + 2 + 2 + 3 + 2),
    ("block", True, 0.0, "pooled"): F(0 + 3 + 1 + 2 + 3, 3 + 3 + 2 + 4 + 3),
    ("token", False, 0.0, "request"): _mean(0, F(8, 10), F(4, 8), F(8, 13), F(8, 10)),
    ("token", True, 0.0, "request"): _mean(0, 1, F(4, 8), F(8, 13), 1),
    ("block", False, 0.0, "request"): _mean(0, 1, F(1, 2), F(2, 3), 1),
    ("block", True, 0.0, "request"): _mean(0, 1, F(1, 2), F(2, 4), 1),
    ("token", False, 0.5, "pooled"): F(4 + 8 + 8, 8 + 13 + 10),
    ("token", True, 0.5, "pooled"): F(4 + 8 + 10, 8 + 13 + 10),
    ("block", False, 0.5, "pooled"): F(1 + 2 + 2, 2 + 3 + 2),
    ("block", True, 0.5, "pooled"): F(1 + 2 + 3, 2 + 4 + 3),
    ("token", False, 0.5, "request"): _mean(F(4, 8), F(8, 13), F(8, 10)),
    ("token", True, 0.5, "request"): _mean(F(4, 8), F(8, 13), 1),
    ("block", False, 0.5, "request"): _mean(F(1, 2), F(2, 3), 1),
    ("block", True, 0.5, "request"): _mean(F(1, 2), F(2, 4), 1),
}


def test_every_definition_on_a_hand_made_trace():
    trace = _trace()
    assert sorted(IDEAL) == sorted((d.weight, d.partial, d.warmup, d.mean) for d in dm.DEFINITIONS)
    for partial in (False, True):
        hits = dm.lru_hits(trace, partial, [dm.INFINITE])
        expected = [0, 3, 1, 2, 3] if partial else [0, 2, 1, 2, 2]
        assert hits.hit[0].tolist() == expected
        for d in (d for d in dm.DEFINITIONS if d.partial == partial):
            got = dm.rates(trace, hits, d)[0]
            assert got == pytest.approx(float(IDEAL[d.weight, partial, d.warmup, d.mean])), d


def test_lru_at_a_finite_capacity():
    """One request at a time, each request's blocks referenced last to first (vLLM's order).
    Full blocks, 2 of them: r2 references [1, 4] then [1], pushing out [1, 2], so r3 hits only
    [1]. Every id, 3 blocks: r2 pushes out [1, 2, 3] but keeps [1, 2]; r4 misses its id 3."""
    trace = _trace()
    full = dm.lru_hits(trace, False, [2])
    assert full.hit[0].tolist() == [0, 2, 1, 1, 2]
    assert dm.rates(trace, full, dm.DEFAULT)[0] == pytest.approx((8 + 4 + 4 + 8) / TOTAL)
    every = dm.lru_hits(trace, True, [3])
    assert every.hit[0].tolist() == [0, 3, 1, 2, 2]
    assert dm.rates(trace, every, dm.LAB)[0] == pytest.approx((4 + 8 + 8) / 31)


def test_block_weights_are_the_remainder_and_at_least_one():
    # n = 9 with 4 ids: 4, 4, 1 tokens, then an id past ceil(9 / 4) weighs 1
    trace = dm.trace_from_ids(np.array([0, 4]), np.array([7, 8, 9, 10]), np.array([9]), 4)
    assert dm.block_tokens(trace).tolist() == [4, 4, 1, 1]
    assert trace.full.tolist() == [2]


@pytest.fixture(scope="module")
def mooncake(tmp_path_factory):
    traces = Path(__file__).resolve().parents[1] / "traces" / "mooncake"
    db = tmp_path_factory.mktemp("dm")
    out = {}
    for name in ("conversation", "synthetic"):
        trace = dm.load_trace(traces / f"{name}_trace.jsonl.gz", db / f"{name}.duckdb")
        hits = {p: dm.lru_hits(trace, p, [5859, dm.INFINITE]) for p in (False, True)}
        out[name] = {d: dm.rates(trace, hits[d.partial], d) for d in dm.DEFINITIONS}
    return out


def _cell(table, weight, partial, warmup, mean):
    return table[dm.Definition(weight, partial, warmup, mean)]


def test_mooncake_cells_the_docs_claim(mooncake):
    conv, syn = mooncake["conversation"], mooncake["synthetic"]
    ideal = {name: {d: r[-1] for d, r in t.items()} for name, t in mooncake.items()}
    # kvtool's definition: the plateaus of docs/validation.md (0.373, 0.650)
    assert ideal["conversation"][dm.DEFAULT] == pytest.approx(0.37338, abs=1e-5)
    assert ideal["synthetic"][dm.DEFAULT] == pytest.approx(0.65043, abs=1e-5)
    # conversation, paper 0.401: the warm-up (ours and the lab's) within 0.004
    assert _cell(conv, "token", False, 0.5, "pooled")[-1] == pytest.approx(0.39779, abs=1e-5)
    assert _cell(conv, "token", True, 0.5, "pooled")[-1] == pytest.approx(0.39811, abs=1e-5)
    assert abs(ideal["conversation"][dm.LAB] - 0.401) < 0.004
    # synthetic, paper 0.658: full blocks only, block-weighted, every request, within 0.002
    assert _cell(syn, "block", False, 0.0, "pooled")[-1] == pytest.approx(0.65944, abs=1e-5)
    assert _cell(syn, "token", False, 0.5, "pooled")[-1] == pytest.approx(0.86159, abs=1e-5)
    # the other definitions the docs quote
    assert _cell(conv, "block", True, 0.0, "pooled")[-1] == pytest.approx(0.36641, abs=1e-5)
    assert _cell(conv, "block", False, 0.0, "pooled")[-1] == pytest.approx(0.38190, abs=1e-5)
    assert _cell(conv, "token", False, 0.0, "request")[-1] == pytest.approx(0.40779, abs=1e-5)
    assert _cell(syn, "token", False, 0.0, "request")[-1] == pytest.approx(0.42424, abs=1e-5)
    # share of the maximum at the paper's 3M-token line (paper: 41% and 46%)
    share = {n: t[dm.DEFAULT][0] / t[dm.DEFAULT][-1] for n, t in mooncake.items()}
    assert share["conversation"] == pytest.approx(0.385, abs=5e-4)
    assert share["synthetic"] == pytest.approx(0.494, abs=5e-4)


def test_the_lab_summaries_beside_the_paper():
    """The KV cache lab's own definition (TPWS) sits 0.003-0.004 below the paper's plateau on
    both timestamped traces: tool&agent (the lab's figure; the trace is not here) and
    conversation (ours, test above)."""
    reference = Path(__file__).resolve().parents[1] / "traces" / "reference"
    rows = {r["trace_id"]: r for r in dm.lab_summaries(reference / dm.LAB_FILE)}
    tool = rows["mooncake_fast25"]
    assert (int(tool["requests"]), int(tool["warmup_requests"])) == (23608, 11804)
    rate = int(tool["infinite_hit_tokens"]) / int(tool["total_measured_tokens"])
    assert rate == pytest.approx(float(tool["infinite_hit_rate"]), abs=1e-12)
    paper = dm.fig9(reference / "mooncake_fast25_fig9_extracted.csv")
    assert paper["toolagent"][-1] - rate == pytest.approx(0.0038, abs=1e-4)
    assert (reference / "LICENSE-kvcache-blog.md").read_text().startswith("MIT License")
