"""`kvtool simulate`: hand-computed traces through every tier path and every registered policy,
the infinite cache against analyze's ideal, LRU against an independent implementation, tenant
salt, sweeps, the result types, option validation, the CLI."""

from __future__ import annotations

import dataclasses
import gzip
import json
from collections import OrderedDict
from pathlib import Path

import duckdb
import numpy as np
import orjson
import pytest
from typer.testing import CliRunner

from kvtool.analyze import analyze
from kvtool.cli import app
from kvtool.errors import NotFoundError, OptionError
from kvtool.generate import generate
from kvtool.simulate import POLICIES, Engine, SimConfig, SimulateResult, simulate
from kvtool.tiers.spec import Tier

B = 16  # the hash traces of these tests use 16-token blocks
MODEL = "Llama-3.1-8B"  # 128 KiB per token: one 16-token block is 2 MiB
BLOCK_GB = B * 131072 / 1e9


def _trace(path: Path, requests: list[list[int]], gap_ms: int = 1000, **columns) -> Path:
    """A hash trace: each request's full blocks and one more token (a unique partial block), so a
    request of k listed blocks has n = 16k + 1 tokens and all k blocks can hit."""
    lines = []
    for i, ids in enumerate(requests):
        rec = {
            "timestamp": i * gap_ms,
            "input_length": B * len(ids) + 1,
            "output_length": 1,
            "hash_ids": [*ids, 100_000 + i],
        }
        rec.update({k: v[i] for k, v in columns.items()})
        lines.append(orjson.dumps(rec))
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _sim(tmp_path: Path, trace: Path, db: str = "s.duckdb", **kw) -> dict:
    """One run through the library, as its ``--json`` object."""
    config = SimConfig(**{"concurrency": 1, **kw.pop("config", {})})
    return simulate([trace], db=tmp_path / db, hash_block_size=B, config=config, **kw).to_json()


def test_lru_follows_vllm_order(tmp_path):
    # Hash ids name a block with everything before it. Capacity 3 blocks, one request at a time:
    # r0 [1,2]: misses; touched last-first, so the LRU order is 2,1 (1 most recent)
    # r1 [3,4]: misses; 4 fills the cache, 3 evicts 2 (the chain's tail)  -> 1,4,3
    # r2 [1,2]: 1 hits, 2 misses; 2 evicts 4 (r2's own 1 is pinned)       -> 3,2,1
    # r3 [3,4]: 3 hits, 4 misses; 4 evicts 2 (3 is pinned)                -> 1,4,3
    # r4 [1,2]: 1 hits, 2 misses; 2 evicts 4                              -> 3,2,1
    # (touching first-to-last instead would evict 1 at r1, and r2 would hit nothing)
    trace = _trace(tmp_path / "t.jsonl", [[1, 2], [3, 4], [1, 2], [3, 4], [1, 2]])
    out = _sim(tmp_path, trace, blocks=[3], config={"policy": "lru", "one_pass": False})
    assert out["prefill_tokens_saved"] == 3 * B
    assert out["hits_by_tier"] == {"hbm": 3 * B}
    assert out["request_hit_rate"] == pytest.approx(3 / 5)
    assert out["evictions"] == 4
    assert out["token_hit_rate"] == pytest.approx(3 * B / out["prompt_tokens"])


# capacity 2; r0 [1], r1 [2], r2 [1] (hit for all but a short TTL), r3 [3] must evict, r4 [1]:
# LRU/LFU/Belady evicted 2 at r3 and hit; FIFO evicted 1 (inserted first). Per registered policy:
# (options, blocks hit); a new policy adds its hand-computed line here.
HAND_HITS: dict[str, list[tuple[dict, int]]] = {
    "lru": [({}, 2)],
    "fifo": [({}, 1)],
    "lfu": [({}, 2)],
    "belady": [({}, 2)],
    "belady_bypass": [({}, 2)],
    "infinite": [({}, 2)],
    "s3fifo": [({}, 1)],
    "arc": [({}, 2)],
    # each reuse of 1 comes 4 s after its last use, which a 3 s TTL does not survive
    "ttl": [({"ttl_s": 5.0}, 2), ({"ttl_s": 3.0}, 0)],
}


@pytest.mark.parametrize("policy", list(POLICIES))
def test_each_policy_on_a_hand_computed_trace(tmp_path, policy):
    assert policy in HAND_HITS, f"add the hand-computed hits of {policy!r} to HAND_HITS"
    trace = _trace(tmp_path / "t.jsonl", [[1], [2], [1], [3], [1]], gap_ms=2000)
    for k, (options, hits) in enumerate(HAND_HITS[policy]):
        result = simulate(
            [trace],
            db=tmp_path / f"{k}.duckdb",
            hash_block_size=B,
            blocks=[2],
            config=SimConfig(policy=policy, concurrency=1, **options),
        )
        assert result.point.prefill_tokens_saved == hits * B, (policy, options)


def test_write_back_demotes_and_write_through_copies(tmp_path):
    # HBM holds 1 block, DRAM 1 block. r1 evicts 1 from HBM; r2 wants 1 again.
    trace = _trace(tmp_path / "t.jsonl", [[1], [2], [1]])
    tiers = f"hbm={BLOCK_GB * 1.5},dram={BLOCK_GB * 1.5}"
    back = _sim(tmp_path, trace, tier_gb=tiers, model=MODEL, config={"write_policy": "back"})
    assert [t["blocks"] for t in back["tiers"]] == [1, 1]
    assert back["hits_by_tier"] == {"hbm": 0, "dram": B}  # demoted at r1, hit at r2
    # write-through: r1 writes 2 into DRAM too, replacing 1 there; HBM's victim is dropped
    through = _sim(
        tmp_path,
        trace,
        db="t.duckdb",
        tier_gb=tiers,
        model=MODEL,
        config={"write_policy": "through"},
    )
    assert through["hits_by_tier"] == {"hbm": 0, "dram": 0}
    # a bigger DRAM keeps both under write-through
    big = f"hbm={BLOCK_GB * 1.5},dram={BLOCK_GB * 2.5}"
    through2 = _sim(
        tmp_path,
        trace,
        db="u.duckdb",
        tier_gb=big,
        model=MODEL,
        config={"write_policy": "through"},
    )
    assert through2["hits_by_tier"] == {"hbm": 0, "dram": B}


def test_a_tier_slower_than_recompute_is_not_used(tmp_path):
    trace = _trace(tmp_path / "t.jsonl", [[1], [2], [1]])
    tiers = f"hbm={BLOCK_GB * 1.5},nvme=1"
    fast = _sim(tmp_path, trace, tier_gb=tiers, model=MODEL)
    assert fast["hits_by_tier"]["nvme"] == B and fast["config"]["usable_lower_tiers"] == {
        "nvme": True
    }
    slow = _sim(
        tmp_path,
        trace,
        db="b.duckdb",
        tier_gb=tiers,
        model=MODEL,
        tier_overrides=["nvme:read_gbps=0.0001"],  # 2 MiB at 100 kB/s: 20 s >> 2 ms recompute
    )
    assert slow["hits_by_tier"]["nvme"] == 0
    assert slow["config"]["usable_lower_tiers"] == {"nvme": False}
    # the load time is part of TTFT: r2 prefills 1 token and loads one block from NVMe
    nvme = Tier("nvme", 10, read_gbps=6.0, latency_s=100e-6)
    engine = Engine(
        [Tier("hbm", 1), nvme],
        config=SimConfig(block_size=B, concurrency=1, prefill_tps=8000.0),
        kv_bytes_per_token=131072,
    )
    offsets = np.array([0, 1, 2, 3])
    result = engine.run(
        offsets, np.array([1, 2, 1]), np.full(3, B + 1), np.array([0.0, 1.0, 2.0]), np.ones(3)
    )
    assert result.hit_tokens == [0, B]
    assert result.ttft[2] == pytest.approx(1 / 8000 + 100e-6 + B * 131072 / 6e9)
    assert result.ttft[0] == pytest.approx((B + 1) / 8000)


def test_running_requests_pin_their_blocks(tmp_path):
    # r0 [1,2] decodes 4000 tokens (100 s at 40 tokens/s) and pins both blocks of a 2-block cache;
    # r1 [3] and r2 [3] arrive meanwhile: r1 waits for free blocks (vLLM's scheduler), r2 waits
    # behind r1 (first come, first served) and then hits 3
    trace = _trace(tmp_path / "t.jsonl", [[1, 2], [3], [3]], output_length=[4000, 1, 1])
    out = _sim(tmp_path, trace, blocks=[2], config={"concurrency": None})
    assert out["uncached_blocks"] == 0
    assert out["prefill_tokens_saved"] == B
    assert out["ttft_estimate"]["p90"] > 90  # the wait shows in TTFT
    # a request larger than the whole cache runs alone and caches what fits
    big = _trace(tmp_path / "b.jsonl", [[1, 2, 3], [1, 2, 3]])
    out = _sim(tmp_path, big, db="b.duckdb", blocks=[2], config={"concurrency": None})
    assert out["uncached_blocks"] == 2  # blocks 1, then 1 again (inserted last to first)
    assert out["prefill_tokens_saved"] == 0  # the walk stops at the missing block 1


def test_tenant_salt_prevents_cross_tenant_hits(tmp_path):
    same = _trace(tmp_path / "a.jsonl", [[1, 2], [1, 2]], tenant=["acme", "acme"])
    other = _trace(tmp_path / "b.jsonl", [[1, 2], [1, 2]], tenant=["acme", "globex"])
    config = {"policy": "infinite"}
    assert _sim(tmp_path, same, blocks=[10], config=config)["prefill_tokens_saved"] == 2 * B
    out = _sim(tmp_path, other, db="o.duckdb", blocks=[10], config=config)
    assert out["prefill_tokens_saved"] == 0


@pytest.mark.parametrize("block_size", [16, 64])
def test_infinite_equals_analyze_ideal(tmp_path, block_size):
    log = tmp_path / "agent.jsonl"
    generate("agent", 8, 3, log, steps=(3, 8))
    ideal = analyze([log], db=tmp_path / "a.duckdb", block_size=block_size)["ideal_hit_rate"]
    out = simulate(
        [log],
        db=tmp_path / "a.duckdb",
        blocks=[1],
        config=SimConfig(policy="infinite", block_size=block_size),
    )
    assert out.point.token_hit_rate == pytest.approx(ideal, abs=1e-12)
    assert out.ideal_hit_rate == pytest.approx(ideal, abs=1e-12)


def _independent_lru(path: Path, capacity: int, block: int = 512, limit: int = 2000) -> int:
    """vLLM-order LRU over raw hash ids, one request at a time, written from the definitions."""
    cache: OrderedDict[int, None] = OrderedDict()
    cached = 0
    for line in path.read_bytes().splitlines()[:limit]:
        rec = orjson.loads(line)
        n = rec["input_length"]
        ids = rec["hash_ids"][: n // block]
        h = 0
        for b in ids[: max(n - 1, 0) // block]:
            if b not in cache:
                break
            h += 1
        cached += h * block
        mine = set(ids)
        for b in reversed(ids):
            if b in cache:
                cache.move_to_end(b)
                continue
            while len(cache) >= capacity:
                victim = next(v for v in cache if v not in mine)
                del cache[victim]
            cache[b] = None
    return cached


def test_lru_equals_an_independent_implementation_on_mooncake(tmp_path, mooncake_dir):
    src = mooncake_dir / "conversation_trace.jsonl.gz"
    head = tmp_path / "conv2000.jsonl"
    head.write_bytes(b"\n".join(gzip.decompress(src.read_bytes()).splitlines()[:2000]) + b"\n")
    for capacity in (300, 3000):
        out = simulate(
            [head], db=tmp_path / "m.duckdb", blocks=[capacity], config=SimConfig(concurrency=1)
        )
        assert out.point.prefill_tokens_saved == _independent_lru(head, capacity), capacity


def test_sweep_points_equal_single_runs_and_report_the_knee(tmp_path):
    log = tmp_path / "agent.jsonl"
    generate("agent", 10, 5, log, steps=(3, 10))
    sweep = simulate([log], db=tmp_path / "a.duckdb", blocks=[50, 200, 800, 3200])
    rates = [p.token_hit_rate for p in sweep.points]
    assert rates == sorted(rates) and rates[-1] <= sweep.ideal_hit_rate + 1e-12
    single = simulate(None, db=tmp_path / "a.duckdb", blocks=[800])
    assert single.point.token_hit_rate == rates[2]
    assert sweep.sweep is not None and sweep.sweep.unit == "blocks"
    assert sweep.sweep.knee in (200, 800, 3200)
    for key, capacity in sweep.sweep.capacity_for_share_of_ideal.items():
        share = int(key.rstrip("%")) / 100
        if capacity is not None:
            i = [50, 200, 800, 3200].index(capacity)
            assert rates[i] >= share * sweep.ideal_hit_rate - 1e-12
            assert i == 0 or rates[i - 1] < share * sweep.ideal_hit_rate
    con = duckdb.connect(str(tmp_path / "a.duckdb"), read_only=True)
    rows = con.execute("SELECT run_id, policy, block_size, result FROM sim_runs").fetchall()
    con.close()
    assert [r[0] for r in rows] == [0, 1] and rows[0][1] == "lru" and rows[0][2] == 16
    assert json.loads(rows[1][3])["token_hit_rate"] == rates[2]


def test_cli_json_table_and_errors(tmp_path):
    trace = _trace(tmp_path / "t.jsonl", [[1, 2], [1, 2], [1, 3]])
    db = str(tmp_path / "c.duckdb")
    base = ["simulate", str(trace), "--db", db, "--hash-block-size", "16"]
    out = CliRunner().invoke(app, [*base, "--blocks", "4", "--json"])
    assert out.exit_code == 0, out.output
    s = json.loads(out.stdout)
    for key in (
        "token_hit_rate",
        "hits_by_tier",
        "prefill_tokens_saved",
        "request_hit_rate",
        "ttft_estimate",
        "cost",
        "config",
        "run_id",
    ):
        assert key in s
    assert s["prefill_tokens_saved"] == 3 * B
    assert set(s["cost"]) >= {"recompute_avoided", "storage_per_month", "net_per_month"}
    table = CliRunner().invoke(app, [*base, "--blocks", "1,2,4"])
    assert table.exit_code == 0 and "hit rate vs hbm capacity" in table.stdout
    for bad, message in (
        (["--tier-gb", "hbm=1"], "KV size per token is unknown"),
        (["--blocks", "4", "--policy", "nope"], "--policy 'nope' is not one of"),
        (["--blocks", "4", "--policy", "ttl"], "--ttl is needed by policy 'ttl'"),
        (["--blocks", "4", "--policy", "ttl", "--ttl", "0s"], "--ttl must be positive"),
        (["--blocks", "4", "--routing", "random"], "--routing 'random' is not one of"),
        (["--blocks", "4", "--block-size", "24"], "--block-size 24 is not a multiple"),
        (["--tier-gb", "hbm=1,dram=2,3,nvme=1,2", "--model", MODEL], "only one tier"),
        (["--tier-gb", "hbm=1,weird=2", "--model", MODEL], "unknown kind"),
        (["--blocks", "x"], "--blocks"),
    ):
        r = CliRunner().invoke(app, [*base, *bad])
        assert r.exit_code == 2, (bad, r.output)
        assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_one_pass_lru_curve_equals_direct_simulation(tmp_path, mooncake_dir):
    """The stack-distance curve against the engine, point by point (and TTFT with it)."""
    src = mooncake_dir / "conversation_trace.jsonl.gz"
    head = tmp_path / "conv3000.jsonl"
    head.write_bytes(b"\n".join(gzip.decompress(src.read_bytes()).splitlines()[:3000]) + b"\n")
    log = tmp_path / "agent.jsonl"
    generate("agent", 10, 9, log, steps=(3, 12))
    for path, capacities in ((head, [10, 200, 700, 2500, 9000]), (log, [5, 120, 600, 2000, 4000])):
        db = tmp_path / f"{path.stem}.duckdb"
        config = SimConfig(concurrency=1)
        sweep = simulate([path], db=db, blocks=capacities, config=config)
        methods = [p.method for p in sweep.points]
        assert "stack" in methods and "direct" in methods  # the smallest ones cannot hold a request
        engine_only = dataclasses.replace(config, one_pass=False)
        for capacity, point in zip(capacities, sweep.points, strict=True):
            one = simulate(None, db=db, blocks=[capacity], config=config).point
            assert one.method == "direct"  # one point: faster simulated than from the curve
            assert one.prefill_tokens_saved == point.prefill_tokens_saved
            direct = simulate(None, db=db, blocks=[capacity], config=engine_only).point
            assert direct.method == "direct"
            assert point.prefill_tokens_saved == direct.prefill_tokens_saved, capacity
            assert point.request_hit_rate == direct.request_hit_rate
            assert point.ttft_estimate.p50 == pytest.approx(direct.ttft_estimate.p50)
            assert point.ttft_estimate.p90 == pytest.approx(direct.ttft_estimate.p90)
            assert point.ttft_estimate.p99 == pytest.approx(direct.ttft_estimate.p99)


def test_compiled_and_python_stack_kernels_agree(tmp_path):
    from kvtool.native import library
    from kvtool.progress import NullProgress
    from kvtool.simulate.sweep import lru_curve
    from kvtool.store import connect
    from kvtool.traffic import block_streams, load_traffic

    assert library() is not None  # the install compiled the C kernels: the curve runs in C
    log = tmp_path / "agent.jsonl"
    generate("agent", 6, 2, log, steps=(3, 8))
    con = connect(tmp_path / "k.duckdb")
    wl = load_traffic(
        con, paths=[log], tokenizer=None, fmt=None, hash_block_size=512, progress=NullProgress()
    ).wl
    offsets, blocks = block_streams(wl, 16)
    fast = lru_curve(offsets, blocks, wl.n_tokens, 16)
    slow = lru_curve(offsets, blocks, wl.n_tokens, 16, compiled=False)
    assert (fast.maxima == slow.maxima).all() and (fast.offsets == slow.offsets).all()
    assert fast.exact_from == slow.exact_from > 1
    con.close()


def test_replicas_routing_and_a_shared_lower_tier(tmp_path):
    import zlib

    trace = _trace(tmp_path / "t.jsonl", [[1], [1], [1], [1]])

    def run(db: str, **config) -> dict:
        return _sim(tmp_path, trace, db=db, blocks=[2], config={"replicas": 2, **config})

    # round robin: r0 and r1 miss on replicas 0 and 1; r2 and r3 hit there
    assert run("a.duckdb", routing="round_robin")["prefill_tokens_saved"] == 2 * B
    # prefix-aware: everything after r0 goes where block 1 is
    assert run("b.duckdb", routing="prefix_aware")["prefill_tokens_saved"] == 3 * B
    # session: a session stays on one replica; pick two sessions on different replicas
    names = [f"s{k}" for k in range(10)]
    a = names[0]
    b = next(x for x in names if zlib.crc32(x.encode()) % 2 != zlib.crc32(a.encode()) % 2)
    sessions = _trace(tmp_path / "s.jsonl", [[1], [1], [1], [1]], session_id=[a, a, b, b])
    out = _sim(
        tmp_path,
        sessions,
        db="c.duckdb",
        blocks=[2],
        config={"replicas": 2, "routing": "session"},
    )
    assert out["prefill_tokens_saved"] == 2 * B  # r1 and r3 hit their session's replica

    # one HBM block per replica; r2 on replica 0 demotes block 1, which r3 on replica 1 wants
    demote = _trace(tmp_path / "d.jsonl", [[1], [2], [3], [1]])
    tiers = f"hbm={BLOCK_GB * 1.5},dram={BLOCK_GB * 4.5}"
    for shared, dram_hits in ((False, 0), (True, B)):
        out = _sim(
            tmp_path,
            demote,
            db=f"e{shared}.duckdb",
            tier_gb=tiers,
            model=MODEL,
            config={"replicas": 2, "routing": "round_robin", "shared_lower": shared},
        )
        assert out["hits_by_tier"] == {"hbm": 0, "dram": dram_hits}, shared
        hbm, dram = out["tiers"]
        expected = 2 * hbm["gb"] * 22.8 + (1 if shared else 2) * dram["gb"] * 4.0
        assert out["cost"]["storage_per_month"] == pytest.approx(expected)


def test_a_chunked_lower_tier_stores_full_chunks_only(tmp_path):
    # HBM 3 blocks; r0 [1,2,3] is computed, r1 [4,5,6] evicts it from HBM, r2 [1,2,3] returns.
    # DRAM with 32-token chunks stored r0's one full chunk (blocks 1-2) as r0 computed; block 3
    # (half a chunk) was never stored. With DRAM in 16-token blocks, write-back demoted all 3.
    trace = _trace(tmp_path / "t.jsonl", [[1, 2, 3], [4, 5, 6], [1, 2, 3]])
    tiers = f"hbm={BLOCK_GB * 3.5},dram={BLOCK_GB * 20}"
    chunked = _sim(tmp_path, trace, tier_gb=tiers, model=MODEL, tier_overrides=["dram:block=32"])
    assert chunked["hits_by_tier"] == {"hbm": 0, "dram": 2 * B}
    assert chunked["tiers"][1]["block_tokens"] == 32 and chunked["tiers"][1]["blocks"] == 10
    plain = _sim(tmp_path, trace, db="p.duckdb", tier_gb=tiers, model=MODEL)
    assert plain["hits_by_tier"] == {"hbm": 0, "dram": 3 * B}
    bad = CliRunner().invoke(
        app,
        [
            "simulate",
            str(trace),
            "--db",
            str(tmp_path / "x.duckdb"),
            "--hash-block-size",
            "16",
            "--tier-gb",
            tiers,
            "--model",
            MODEL,
            "--tier",
            "dram:block=24",
        ],
    )
    assert bad.exit_code == 2 and "multiple of 16" in bad.stderr


def test_prefill_throughput_preset_from_the_model(tmp_path):
    from kvtool.tiers.kv import lookup

    trace = _trace(tmp_path / "t.jsonl", [[1], [2], [1]])
    tiers = f"hbm={BLOCK_GB * 1.5},dram=1"
    preset = _sim(tmp_path, trace, tier_gb=tiers, model=MODEL)
    expected = 0.4 * 989e12 / (2 * 8.0e9)  # 40% of an H100's bf16 FLOP/s, 2 FLOPs/param/token
    assert preset["config"]["prefill_tps"] == pytest.approx(expected)
    assert lookup("meta-llama/Llama-3.1-70B-Instruct").prefill_tps() == pytest.approx(
        0.4 * 989e12 / (2 * 70.6e9)
    )
    # a slow prefill makes even a slow tier worth loading from; a fast one does not
    slow_tier = ["dram:read_gbps=0.5"]  # 2 MiB per block: 4.2 ms to load
    fast = _sim(
        tmp_path,
        trace,
        db="f.duckdb",
        tier_gb=tiers,
        model=MODEL,
        tier_overrides=slow_tier,
        config={"prefill_tps": 20000.0},  # 16 tokens in 0.8 ms
    )
    slow = _sim(
        tmp_path,
        trace,
        db="s.duckdb",
        tier_gb=tiers,
        model=MODEL,
        tier_overrides=slow_tier,
        config={"prefill_tps": 1000.0},  # 16 tokens in 16 ms
    )
    assert fast["hits_by_tier"]["dram"] == 0 and slow["hits_by_tier"]["dram"] == B


@pytest.mark.parametrize(
    ("fields", "param", "message"),
    [
        ({"policy": "nope"}, "policy", "'nope' is not one of"),
        ({"block_size": 0}, "block_size", "must be positive"),
        ({"write_policy": "around"}, "write_policy", "'around' is not one of back, through"),
        ({"concurrency": 0}, "concurrency", "must be >= 1"),
        ({"policy": "ttl"}, "ttl_s", "is needed by policy 'ttl'"),
        ({"policy": "ttl", "ttl_s": 0.0}, "ttl_s", "must be positive"),
        ({"prefill_tps": 0.0}, "prefill_tps", "must be positive"),
        ({"decode_tps": -1.0}, "decode_tps", "must be positive"),
        ({"price_input": -0.5}, "price_input", "must be >= 0"),
        ({"replicas": 0}, "replicas", "must be >= 1"),
        ({"routing": "random"}, "routing", "'random' is not one of"),
    ],
)
def test_sim_config_validates_its_fields(fields, param, message):
    with pytest.raises(OptionError, match=message) as err:
        SimConfig(**fields)
    assert err.value.param == param


def test_tier_and_model_errors_name_their_parameter(tmp_path):
    trace = _trace(tmp_path / "t.jsonl", [[1, 2], [1, 2]])
    cases = [
        ({"tier_gb": "hbm=1,weird=2", "model": MODEL}, "tier_gb", "unknown kind"),
        ({"tier_gb": "hbm=x"}, "tier_gb", "is not a size in GB"),
        (
            {"tier_gb": "hbm=1,dram=2", "tier_overrides": ["ssd:price=1"]},
            "tier_overrides",
            "no tier",
        ),
        ({"tier_gb": "hbm=1,dram=2", "tier_overrides": ["dram:speed=1"]}, "tier_overrides", "key"),
        ({"blocks": [-1]}, "blocks", ">= 0"),
        ({"blocks": [1, 2], "tier_gb": "hbm=1,2"}, "blocks", "tier is swept"),
        ({"tier_gb": "hbm=1"}, "model", "KV size per token is unknown"),
    ]
    for kw, param, message in cases:
        with pytest.raises(OptionError, match=message) as err:
            simulate([trace], db=tmp_path / "e.duckdb", hash_block_size=B, **kw)
        assert err.value.param == param, kw
    with pytest.raises(NotFoundError, match="unknown model 'no-such-model'"):
        simulate([trace], db=tmp_path / "e.duckdb", hash_block_size=B, model="no-such-model")


def test_result_types_json_store_and_frame(tmp_path):
    trace = _trace(tmp_path / "t.jsonl", [[1, 2], [1, 2], [1, 3], [4], [1, 2]])
    db = tmp_path / "r.duckdb"
    tiers = f"hbm={BLOCK_GB * 2.5},dram=0,{BLOCK_GB * 2},{BLOCK_GB * 8}"
    config = SimConfig(concurrency=1)
    sweep = simulate([trace], db=db, hash_block_size=B, tier_gb=tiers, model=MODEL, config=config)
    assert isinstance(sweep, SimulateResult) and sweep.run_id == 0
    assert sweep.config.block_size == B and sweep.config.prefill_tps > 0  # resolved
    assert len(sweep.points) == 3 and sweep.sweep is not None and sweep.sweep.tier == "dram"
    with pytest.raises(ValueError, match="sweep"):
        _ = sweep.point
    out = sweep.to_json()
    assert out["run_id"] == 0 and out["config"]["tier_gb"] == tiers
    assert [p["tiers"][1]["blocks"] for p in out["points"]] == [0, 2, 8]
    assert out["sweep"]["unit"] == "gb" and "token_hit_rate" not in out
    assert orjson.loads(orjson.dumps(out)) == out  # plain JSON values only
    # the stored run is the JSON: config and result columns
    con = duckdb.connect(str(db), read_only=True)
    ((cfg, res),) = con.execute("SELECT config, result FROM sim_runs").fetchall()
    con.close()
    assert json.loads(cfg) == out["config"]
    assert json.loads(res) == {k: v for k, v in out.items() if k not in ("config", "run_id")}
    frame = sweep.points_frame()
    assert list(frame["dram_blocks"]) == [0, 2, 8] and list(frame["hbm_blocks"]) == [2, 2, 2]
    assert list(frame["token_hit_rate"]) == [p.token_hit_rate for p in sweep.points]
    assert list(frame["method"]) == ["direct"] * 3
    for column in ("dram_gb", "prefill_tokens_saved", "storage_per_month", "net_per_month"):
        assert column in frame.columns
    one = simulate(None, db=db, blocks=[2], config=config)
    assert one.run_id == 1 and one.sweep is None
    flat = one.to_json()
    assert flat["prefill_tokens_saved"] == one.point.prefill_tokens_saved
    # 2 blocks hold the largest request, but one point is faster simulated than the curve
    assert "points" not in flat and flat["method"] == "direct" and flat["evictions"] is not None
    assert len(one.points_frame()) == 1
