"""The compiled engine against the Python engine: the same totals, per-request cached tokens and
TTFT, bit for bit, on several traces x every supported policy x concurrency x capacity, with
and without a warm-up window."""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from workloads import token_workload

from kvtool.generate import generate
from kvtool.progress import NullProgress
from kvtool.simulate import Engine, SimConfig, simulate
from kvtool.simulate.compiled_engine import POLICY_CODES, run_compiled, supports
from kvtool.simulate.engine import EngineResult, next_uses
from kvtool.store import connect
from kvtool.tiers.spec import Tier
from kvtool.traffic import Workload, load_traffic, output_blocks, streams_with_outputs

MOONCAKE = Path(__file__).resolve().parents[1] / "traces" / "mooncake"  # bundled in the repo
FIELDS = ("requests", "prompt_tokens", "cached_tokens", "hit_tokens", "requests_with_hit")
FIELDS += ("evictions", "uncached_blocks", "first_counted")


@dataclass
class Trace:
    name: str
    wl: Workload
    block_size: int
    offsets: np.ndarray
    stream: np.ndarray
    next_use: np.ndarray


def _trace(name: str, wl: Workload, B: int, outputs: bool) -> Trace:
    offsets, stream = streams_with_outputs(wl, B, output_blocks(wl, outputs))
    reach = np.maximum(wl.n_tokens - 1, 0) // B
    return Trace(name, wl, B, offsets, stream, next_uses(offsets, stream, reach))


def _loaded(path: Path, db: Path) -> Workload:
    con = connect(db)
    try:
        return load_traffic(
            con,
            paths=[path],
            tokenizer=None,
            fmt=None,
            hash_block_size=512,
            progress=NullProgress(),
        ).wl
    finally:
        con.close()


@pytest.fixture(scope="module")
def traces(tmp_path_factory) -> list[Trace]:
    tmp = tmp_path_factory.mktemp("compiled")
    rng = np.random.default_rng(7)
    # token sequences: shared system prefixes, sessions that grow, bursts at one timestamp
    heads = [list(rng.integers(0, 50_000, 48 * k)) for k in (1, 2, 3)]
    seqs, ts = [], []
    for r in range(90):
        body = heads[r % 3] + list(rng.integers(0, 50_000, int(rng.integers(5, 200))))
        seqs.append(body)
        ts.append(float(r // 3))  # three arrivals at each second
    tokens = token_workload(seqs, ts=ts)
    tokens.output_tokens[:] = rng.integers(0, 400, tokens.n)
    head = tmp / "conversation.jsonl"
    lines = gzip.decompress((MOONCAKE / "conversation_trace.jsonl.gz").read_bytes())
    head.write_bytes(b"\n".join(lines.splitlines()[:120]) + b"\n")
    agent = tmp / "agent.jsonl"
    generate("agent", 4, 3, agent, steps=(3, 9))
    return [
        _trace("tokens", tokens, 16, False),
        _trace("mooncake", _loaded(head, tmp / "m.duckdb"), 512, False),
        _trace("agent+outputs", _loaded(agent, tmp / "a.duckdb"), 16, True),
    ]


def _both(t: Trace, config: SimConfig, capacity: int, count_from: int):
    tiers = [Tier("hbm", capacity)]
    wl = t.wl
    args = (t.offsets, t.stream, wl.n_tokens, wl.ts, wl.output_tokens, t.next_use)
    python = Engine(tiers, config=config).run(*args, count_from=count_from)
    compiled = run_compiled(tiers, config, *args, count_from=count_from)
    return python, compiled


def _assert_same(python: EngineResult, compiled: EngineResult, label: str) -> None:
    for name in FIELDS:
        assert getattr(compiled, name) == getattr(python, name), (label, name)
    assert np.array_equal(compiled.cached_per_request, python.cached_per_request), label
    assert np.array_equal(compiled.ttft, python.ttft), label  # bit for bit


@pytest.mark.parametrize("policy", list(POLICY_CODES))
def test_compiled_engine_equals_python_engine(traces, policy):
    seen = {"evictions": 0, "uncached": 0, "hits": 0}
    for t in traces:
        counts = np.diff(t.offsets)
        largest = int(counts.max())
        distinct = len(np.unique(t.stream))
        # tiny: below one request (pinned blocks left uncached); mid; larger than the trace
        for capacity, count_from in (
            (largest // 3, 0),
            (distinct // 4, t.wl.n // 3),
            (distinct, 0),
        ):
            for concurrency in (1, 4, None):
                config = SimConfig(
                    policy=policy,
                    block_size=t.block_size,
                    concurrency=concurrency,
                    ttl_s=2.0 if policy == "ttl" else None,
                    prefill_tps=20_000.0,
                )
                python, compiled = _both(t, config, capacity, count_from)
                _assert_same(python, compiled, f"{t.name} cap={capacity} c={concurrency}")
                seen["evictions"] += python.evictions
                seen["uncached"] += python.uncached_blocks
                seen["hits"] += python.cached_tokens
    assert seen["hits"] > 0
    if policy != "infinite":  # the matrix does reach evictions and unplaceable pinned blocks
        assert seen["evictions"] > 0 and seen["uncached"] > 0


def test_ttl_expiry_is_reproduced(traces):
    """A TTL shorter than the gaps between reuses loses hits that a long one keeps."""
    t = traces[0]
    distinct = len(np.unique(t.stream))
    rates = []
    for ttl in (0.5, 1000.0):
        config = SimConfig(policy="ttl", block_size=16, concurrency=None, ttl_s=ttl)
        python, compiled = _both(t, config, distinct, 0)
        _assert_same(python, compiled, f"ttl={ttl}")
        rates.append(compiled.cached_tokens)
    assert 0 < rates[0] < rates[1]


def test_no_room_and_sparse_ids(traces):
    """A first tier of 0 blocks caches nothing; ids far above the stream's length (a token
    tree holding other files' blocks) give the same results as dense ones."""
    t = traces[2]
    for policy in ("lru", "s3fifo"):
        config = SimConfig(policy=policy, block_size=16, concurrency=None)
        python, compiled = _both(t, config, 0, 0)
        _assert_same(python, compiled, f"{policy} no room")
        assert compiled.cached_tokens == 0
    config = SimConfig(policy="arc", block_size=16, concurrency=4)
    tiers = [Tier("hbm", len(np.unique(t.stream)) // 2)]
    wl = t.wl
    rest = (wl.n_tokens, wl.ts, wl.output_tokens)
    dense = run_compiled(tiers, config, t.offsets, t.stream, *rest)
    sparse = run_compiled(tiers, config, t.offsets, t.stream * 1000 + 10**9, *rest)
    _assert_same(dense, sparse, "sparse ids")
    assert dense.cached_tokens > 0


def test_simulate_uses_the_compiled_engine_where_it_is_exact(tmp_path):
    """``simulate`` gives the same points with and without the compiled engine; a two-tier
    configuration (not compiled) still runs on the Python engine."""
    log = tmp_path / "agent.jsonl"
    generate("agent", 5, 11, log, steps=(3, 10))
    db = tmp_path / "s.duckdb"
    runs = [
        simulate([log], db=db, blocks=[40, 400], config=SimConfig(policy="s3fifo", compiled=c))
        for c in (True, False)
    ]
    fast, slow = (r.to_json()["points"] for r in runs)
    assert fast == slow and fast[0]["prefill_tokens_saved"] < fast[1]["prefill_tokens_saved"]
    from kvtool import native

    for name, code in POLICY_CODES.items():  # the wrapper's codes are the kernel's
        assert getattr(native, name.upper()) == code
    config = SimConfig(policy="fifo")
    assert supports(config, [Tier("hbm", 10)], 100)
    assert not supports(config, [Tier("hbm", 10), Tier("dram", 100)], 100)
    assert not supports(SimConfig(policy="fifo", replicas=2), [Tier("hbm", 10)], 100)
    assert not supports(SimConfig(policy="belady_bypass"), [Tier("hbm", 10)], 100)
    # 10M requests: LRU and FIFO stay compiled (a 10M trace fell back to Python: 323 s against
    # about 20 s); LFU and Belady pack a request count into a rank, which caps them at 4M
    for policy in ("lru", "fifo", "arc", "s3fifo"):
        assert supports(SimConfig(policy=policy), [Tier("hbm", 10)], 10_000_000, 230_000_000)
    for policy in ("lfu", "belady"):
        assert not supports(SimConfig(policy=policy), [Tier("hbm", 10)], 10_000_000)
        assert supports(SimConfig(policy=policy), [Tier("hbm", 10)], 4_000_000)
    assert not supports(config, [Tier("hbm", 10)], 100, 1 << 31)  # int32 block links


def test_ideal_in_one_stream_pass_equals_the_block_tree(traces, monkeypatch):
    """simulate's ideal from one C pass over the streams equals the block tree's count (the
    path an install without the C kernels takes), with and without outputs, at the trace's
    block size and at 4 times it, from the first request and after a warm-up."""
    from kvtool.simulate import run

    gained = 0
    for t in traces:
        wl = t.wl
        for B in (t.block_size, 4 * t.block_size):
            outputs = output_blocks(wl, True)
            offsets, stream = streams_with_outputs(wl, B, outputs)
            for first in (0, wl.n // 3):
                args = (wl, B, first, outputs, offsets, stream)
                fast = run._ideals(*args)
                with monkeypatch.context() as m:
                    m.setattr(run, "library", lambda: None)
                    slow = run._ideals(*args)
                assert fast == slow, (t.name, B, first)
                gained += fast.cached_tokens - round(
                    fast.prompt_only_rate * wl.n_tokens[first:].sum()
                )
    assert gained > 0  # the agent trace's outputs raise its ideal


def test_an_install_without_the_c_kernels_gives_the_same_figures(tmp_path, monkeypatch):
    """An install built without a C compiler has no ``kvtool._kernels``: ``kvtool.native``
    warns once and simulate runs the Python engine, the Python curve loop and the block tree's
    ideal, with the same figures."""
    import importlib.util

    from kvtool import native

    log = tmp_path / "agent.jsonl"
    generate("agent", 5, 4, log, steps=(3, 10))
    db = tmp_path / "k.duckdb"
    blocks = [30, 3000, 4000, 5000]  # one point simulated, three from the curve

    def figures(policy: str) -> list:
        config = SimConfig(policy=policy, concurrency=1)
        body = simulate([log], db=db, blocks=blocks, config=config).to_json()
        keys = ("method", "prefill_tokens_saved", "evictions", "ttft_estimate")
        return [body["ideal_hit_rate"], *([p[k] for k in keys] for p in body["points"])]

    with_c = {p: figures(p) for p in ("lru", "fifo")}
    assert [p[0] for p in with_c["lru"][1:]] == ["direct", "stack", "stack", "stack"]
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "kvtool._kernels" else real(name, *a),
    )
    native.library.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="without its C kernels"):
            assert native.library() is None
        assert {p: figures(p) for p in ("lru", "fifo")} == with_c
    finally:
        monkeypatch.undo()
        native.library.cache_clear()
    assert native.library() is not None


def test_sequential_ttft_in_c_equals_the_python_loop(traces, monkeypatch):
    """The one-at-a-time TTFT of the curve's points, in C and in Python, bit for bit (NaN
    arrivals take the previous one's)."""
    from kvtool.simulate import engine
    from kvtool.simulate.config import Timing

    rng = np.random.default_rng(3)
    for t in traces:
        wl = t.wl
        arrivals = wl.ts.copy()
        arrivals[rng.random(wl.n) < 0.2] = np.nan
        cached = (rng.random(wl.n) * wl.n_tokens).astype(np.int64)
        args = (arrivals, wl.n_tokens, cached, wl.output_tokens, Timing(7919.0, 41.0))
        fast = engine.sequential_ttft(*args)
        with monkeypatch.context() as m:
            m.setattr(engine, "library", lambda: None)
            slow = engine.sequential_ttft(*args)
        assert np.array_equal(fast, slow) and fast.max() > 0
