"""Prefix-aware sampling (``kvtool.simulate.sample``, ``simulate --sample``): whole prefix
families are kept or dropped, rate 1 is the exact simulation, and a 1% sample of a trace with
many families estimates its LRU curve within its error bars."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import orjson
import pytest
from typer.testing import CliRunner
from workloads import token_workload

from kvtool.cli import app
from kvtool.errors import OptionError
from kvtool.simulate import SimConfig, sample, simulate
from kvtool.store import connect
from kvtool.store.files import all_file_ids
from kvtool.traffic import block_streams, tree, workload
from kvtool.traffic.workload import load_parts

MOONCAKE = Path(__file__).resolve().parents[1] / "traces" / "mooncake"


def _blocks(*ids: int) -> list[int]:
    """Token ids whose 16-token blocks are the given block labels, in order."""
    return [t for b in ids for t in [b] * 16]


def test_families_keep_a_prefix_family_whole_and_the_trunk_with_everyone(monkeypatch):
    # block 0 is a system prompt every request starts with (the trunk); blocks 1 and 5 start two
    # conversations, each growing by a block per turn; request 6 is the system prompt alone
    paths = [[0, 1], [0, 5], [0, 1, 2], [0, 5, 6], [0, 1, 2, 3], [0, 5, 6, 7], [0]]
    wl = token_workload([_blocks(*p) + [9] for p in paths])
    units = sample.families(wl, cap=3)
    keys = units.keys.tolist()
    assert keys[0] == keys[2] == keys[4] >= 0 and keys[1] == keys[3] == keys[5] >= 0
    assert keys[0] != keys[1] and keys[6] == -7  # the system prompt alone: its own unit
    root = int(wl.parent[wl.end[0]])  # block 0's node
    assert units.trunk.tolist() == [v == root for v in range(len(wl.parent))]
    with monkeypatch.context() as m:  # an install without the C kernels: the same units
        m.setattr(sample, "library", lambda: None)
        slow = sample.families(wl, cap=3)
    assert np.array_equal(slow.keys, units.keys) and np.array_equal(slow.trunk, units.trunk)
    for salt in range(20):  # a family is kept or dropped whole, whatever the salt
        kept = sample.keep(units.keys, 0.5, salt)
        assert len(set(kept[[0, 2, 4]])) == 1 and len(set(kept[[1, 3, 5]])) == 1
    rates = [sample.keep(units.keys, 0.5, s)[[0, 1]].mean() for s in range(400)]
    assert 0.4 < np.mean(rates) < 0.6  # salts draw independent samples at the rate
    offsets = np.array([0, 2, 4, 7], np.int64)
    offs, blocks = sample.gather(offsets, np.arange(7, dtype=np.int64), np.array([2, 0]))
    assert offs.tolist() == [0, 3, 5] and blocks.tolist() == [4, 5, 6, 0, 1]


def test_point_rate_doubles_until_the_sampled_cache_holds_the_largest_request():
    assert sample.point_rate(0.01, 100_000, 246) == 0.01
    assert sample.point_rate(0.01, 10_000, 246) == 0.04  # 0.02 * 10,000 = 200 < 246
    assert sample.point_rate(0.01, 100, 246) == 1.0
    assert sample.point_rate(0.01, 10_000, 246, salts=3) == 0.04
    assert sample.point_rate(0.01, 1_000, 246, salts=3) == 1.0  # 3 samples at 0.32: the whole


@pytest.fixture(scope="module")
def conversation_x6(tmp_path_factory) -> Path:
    """The bundled Mooncake conversation trace six times, ids and timestamps offset per copy
    (many prefix families; every copy new content), ingested once."""
    import orjson

    tmp = tmp_path_factory.mktemp("sample")
    lines = gzip.decompress((MOONCAKE / "conversation_trace.jsonl.gz").read_bytes()).splitlines()
    out = []
    for copy in range(6):
        for line in lines:
            rec = orjson.loads(line)
            rec["timestamp"] += copy * 4_000_000
            rec["hash_ids"] = [h + copy * 10_000_000 for h in rec["hash_ids"]]
            out.append(orjson.dumps(rec))
    trace = tmp / "x6.jsonl"
    trace.write_bytes(b"\n".join(out) + b"\n")
    db = tmp / "x6.duckdb"
    simulate([trace], db=db, blocks=[10], config=SimConfig(concurrency=1))  # ingest once
    return db


def test_footprint_is_the_mean_of_distinct_blocks_over_every_window(monkeypatch):
    # against its definition: every window of w consecutive requests of the trace, its
    # distinct blocks, averaged; references of one request and blocks used once both occur
    rng = np.random.default_rng(7)
    n = 40
    times = np.sort(rng.integers(3, n - 2, 150))  # per reference; the first and last make none
    blocks = rng.integers(0, 25, 150)
    made = np.unique(times)  # the requests that make references, and their streams
    offsets = np.searchsorted(times, np.append(made, n)).astype(np.int64)
    uses = sample.reuse(offsets, blocks, made, n)
    fp = sample.footprint(uses.gaps, uses.distinct, n, np.arange(n + 1))
    for w in range(n + 1):
        windows = [
            len(set(blocks[(times >= s) & (times < s + w)].tolist())) for s in range(n - w + 1)
        ]
        assert fp[w] == pytest.approx(np.mean(windows)), w
    assert fp[0] == 0 and fp[n] == len(set(blocks.tolist())) == uses.distinct
    some = np.array([12, 3, 12, 0])  # any windows, in any order
    assert sample.footprint(uses.gaps, uses.distinct, n, some).tolist() == fp[some].tolist()
    # each reference's previous one: the last earlier reference to its block
    want = [max((k for k in range(j) if blocks[k] == blocks[j]), default=-1) for j in range(150)]
    assert uses.previous.tolist() == want
    monkeypatch.setattr(sample, "library", lambda: None)  # without the C kernels: the same
    slow = sample.reuse(offsets, blocks, made, n)
    assert slow.previous.tolist() == want and slow.distinct == uses.distinct
    assert sorted(slow.gaps.tolist()) == sorted(uses.gaps.tolist())


def test_a_pruned_sample_keeps_its_paths_and_its_output_blocks():
    # two conversations under one system prompt (block 0), each turn sending the last answer
    # back; the second conversation's requests alone, on their own paths' nodes
    from dataclasses import replace

    from kvtool.traffic.output_blocks import output_blocks

    paths = [[0, 1], [0, 5], [0, 1, 2, 3], [0, 5, 6, 7], [0, 1, 2, 3, 4], [0, 5, 6, 7, 8]]
    wl = token_workload([_blocks(*p) + [9] for p in paths], sessions=list("abab" + "ab"))
    wl = replace(wl, output_tokens=np.full(6, 17, np.int64))  # one block of answer each
    mine = np.array([1, 3, 5])
    part = wl.select(mine)
    cut = sample.pruned(part)
    nodes = cut.nodes.tolist()
    assert len(nodes) == 5 and nodes == sorted(nodes)  # blocks 0, 5, 6, 7, 8
    assert cut.wl.depth.tolist() == wl.depth[cut.nodes].tolist() == [0, 1, 2, 3, 4]
    assert cut.nodes[cut.wl.end].tolist() == part.end.tolist()
    up = cut.wl.parent
    assert [cut.nodes[p] if p >= 0 else -1 for p in up] == wl.parent[cut.nodes].tolist()
    whole, small = output_blocks(part), output_blocks(cut.wl)
    assert small.successor.tolist() == whole.successor.tolist() == [1, 2, -1]
    assert cut.nodes[small.nodes].tolist() == whole.nodes.tolist() and len(whole.nodes) == 2
    with pytest.MonkeyPatch.context() as m:  # without the C kernels: the same nodes
        m.setattr(tree, "library", lambda: None)
        assert sample.pruned(part).nodes.tolist() == nodes


def test_a_stored_trees_runs_give_the_samples_of_its_nodes(conversation_x6, monkeypatch):
    # the stored tree's runs against its nodes: the same requests, units, ideal and paths
    con = connect(conversation_x6, read_only=True)
    parts = load_parts(con, all_file_ids(con), None)
    rates, salts = [0.05, 0.2], range(3)
    whole_set = sample.whole_set
    by_runs = sample.run_set(parts.head, parts.runs(), parts.index, rates, salts)
    by_nodes = sample.whole_set(parts.whole(), rates, salts)
    con.close()
    assert np.array_equal(by_runs.rows, by_nodes.rows)
    assert 0 < len(by_runs.rows) < 0.6 * parts.head.n
    assert np.array_equal(by_runs.base_hits, by_nodes.base_hits) and by_runs.base_hits.sum() > 0
    base = parts.head.base
    paths = []
    for got in (by_runs, by_nodes):
        assert len(got.wl.parent) == len(got.trunk[0.05]) and got.wl.n == len(got.rows)
        offsets, stream = block_streams(got.wl, base)
        _, first, label = np.unique(stream, return_index=True, return_inverse=True)
        rank = np.empty(len(first), np.int64)
        rank[np.argsort(first)] = np.arange(len(first))  # blocks named by their first use
        trunk = {rate: got.trunk[rate][stream].tolist() for rate in rates}
        paths.append((offsets.tolist(), rank[label].tolist(), trunk))
    assert paths[0] == paths[1]
    assert any(paths[0][2][0.2]) and not all(paths[0][2][0.2])
    for rate in rates:
        assert np.array_equal(by_runs.keys[rate], by_nodes.keys[rate])
    # and simulate gives the same estimates read either way
    config = SimConfig(concurrency=1, sample=0.05)
    runs = simulate(None, db=conversation_x6, blocks=[5_000, 40_000], config=config).points
    calls = []
    monkeypatch.setattr(sample, "whole_set", lambda *a: calls.append(1) or whole_set(*a))
    # as a database that cannot store the tree: built in memory, whole, and sampled on nodes
    monkeypatch.setattr(workload, "load_index", lambda con, key: None)
    nodes = simulate(None, db=conversation_x6, blocks=[5_000, 40_000], config=config).points
    assert [p.to_json() for p in runs] == [p.to_json() for p in nodes] and calls == [1]
    assert runs[0].sample.token_hit_rate_error > 0


def test_rate_one_is_the_exact_simulation(conversation_x6):
    caps = [100, 5_000, 40_000, 200_000]
    for policy in ("lru", "fifo"):
        exact = simulate(None, db=conversation_x6, blocks=caps, config=SimConfig(policy=policy))
        whole = simulate(
            None, db=conversation_x6, blocks=caps, config=SimConfig(policy=policy, sample=1.0)
        )
        for e, w in zip(exact.points, whole.points, strict=True):
            assert w.prefill_tokens_saved == e.prefill_tokens_saved and w.method == e.method
            assert w.sample is not None and w.sample.rate == 1.0
            assert w.sample.token_hit_rate_error == 0.0


def test_a_small_sample_estimates_the_lru_curve_within_its_error(conversation_x6):
    caps = [5_000, 20_000, 40_000, 80_000, 400_000]
    config = SimConfig(concurrency=1)
    exact = simulate(None, db=conversation_x6, blocks=caps, config=config)
    est = simulate(
        None, db=conversation_x6, blocks=caps, config=SimConfig(concurrency=1, sample=0.05)
    )
    assert est.ideal_hit_rate == exact.ideal_hit_rate  # the ideal is exact, from the tree
    n = exact.requests
    for e, s in zip(exact.points, est.points, strict=True):
        assert s.method == "sampled" and s.sample.rate == 0.05 and s.sample.salts == 1
        assert all(0.02 * n < k < 0.08 * n for k in s.sample.requests_by_salt)
        error = s.sample.token_hit_rate_error
        assert 0 <= error < 0.05
        assert abs(s.token_hit_rate - e.token_hit_rate) < max(4 * error, 0.01), s.tiers
    # the samples' spread shrinks as the cache grows: a sample hits its whole ideal at 400k
    errors = [p.sample.token_hit_rate_error for p in est.points]
    assert errors[0] > errors[2] > 0 and errors[-1] == 0
    assert est.points[-1].prefill_tokens_saved == exact.points[-1].prefill_tokens_saved
    rates = [p.token_hit_rate for p in est.points]
    assert rates == sorted(rates)  # a larger cache hits more, in the estimate too


def test_the_error_bar_is_the_spread_of_independent_draws(conversation_x6):
    # the groups' standard error of one sample against the spread of eight independent ones
    caps = [20_000, 40_000]
    draws = [
        simulate(
            None,
            db=conversation_x6,
            blocks=caps,
            config=SimConfig(concurrency=1, sample=0.05, sample_seed=seed),
        ).points
        for seed in range(8)
    ]
    for j in range(len(caps)):
        spread = np.std([d[j].token_hit_rate for d in draws], ddof=1)
        errors = [d[j].sample.token_hit_rate_error for d in draws]
        assert all(e is not None and e > 0 for e in errors)
        assert 0.4 < np.mean(errors) / spread < 2.5, (caps[j], np.mean(errors), spread)
    assert {len(d[0].sample.requests_by_salt) for d in draws} == {1}
    assert len({d[0].sample.requests_by_salt for d in draws}) == 8  # other families each time


def test_cli_sample_prints_the_estimate_and_rejects_a_bad_rate(conversation_x6):
    runner = CliRunner()
    args = ["simulate", "--db", str(conversation_x6), "--blocks", "50000", "--concurrency", "1"]
    r = runner.invoke(app, [*args, "--sample", "0.05", "--sample-salts", "4", "--json"])
    assert r.exit_code == 0, r.output
    import orjson

    body = orjson.loads(r.stdout)
    assert body["method"] == "sampled" and body["sample"]["salts"] == 4
    assert len(body["sample"]["token_hit_rate_by_salt"]) == 4
    assert body["sample"]["token_hit_rate_error"] > 0
    draws = [
        orjson.loads(runner.invoke(app, [*args, "--sample", "0.05", *seed, "--json"]).stdout)
        for seed in ([], ["--sample-seed", "0"], ["--sample-seed", "1"])
    ]
    assert draws[0]["sample"] == draws[1]["sample"]  # seed 0 is the default draw, every run
    assert draws[2]["sample"]["requests_by_salt"] != draws[0]["sample"]["requests_by_salt"]
    assert draws[2]["config"]["sample_seed"] == 1
    table = runner.invoke(app, [*args, "--sample", "0.05"])
    assert table.exit_code == 0 and " ± " in table.stdout and "from a sample" in table.stdout
    bad = runner.invoke(app, [*args, "--sample", "1.5"])
    assert bad.exit_code == 2 and "sample" in bad.stderr and "(0, 1]" in bad.stderr
    with pytest.raises(OptionError, match="sample_salts"):
        SimConfig(sample=0.1, sample_salts=0)


def test_a_large_trace_gets_the_suggestion_to_sample(conversation_x6, monkeypatch):
    from kvtool.simulate import run

    config = SimConfig(concurrency=1)
    assert not simulate(None, db=conversation_x6, blocks=[1000], config=config).suggestions
    monkeypatch.setattr(run, "SUGGEST_SAMPLE_LOOKUPS", 1000)  # the trace has about 1.6 M
    result = simulate(None, db=conversation_x6, blocks=[1000], config=config)
    (hint,) = result.suggestions
    assert "--sample 0.01" in hint and "block lookups" in hint
    assert not result.warnings  # advice, not a warning: the command line exits 0
    got = CliRunner().invoke(
        app, ["simulate", "--db", str(conversation_x6), "--blocks", "1000", "--json"]
    )
    assert got.exit_code == 0 and "kvtool: hint:" in got.stderr and "--sample 0.01" in got.stderr
    assert orjson.loads(got.stdout)["suggestions"] == [hint]
    sampled = SimConfig(concurrency=1, sample=0.5)
    assert not simulate(None, db=conversation_x6, blocks=[1000], config=sampled).suggestions


def test_pooled_scales_hits_by_their_share_of_the_exact_ideal():
    from kvtool.simulate.engine import EngineResult

    def run(cached: int) -> EngineResult:
        return EngineResult(["hbm"], 10, 1000, cached, [cached], int(cached > 0), 0, 0, np.ones(10))

    def totals(cached: list[int], ideal: list[int], hits: list[int]) -> sample.GroupTotals:
        # ten requests per sample, in two groups of five (the other groups empty)
        pad = [0] * (sample.GROUPS - 2)
        return sample.GroupTotals(
            *(np.array(v + pad, np.int64) for v in (cached, ideal, [5, 5], hits))
        )

    # three samples keep 0/400, 300/400 and 600/800 of their own ideal's tokens; the whole
    # trace's ideal hits 6,000 of 10,000 tokens: the estimate is 900/1600 of 6,000
    runs = [run(0), run(300), run(600)]
    groups = [
        totals([0, 0], [200, 200], [0, 0]),
        totals([100, 200], [200, 200], [1, 1]),
        totals([300, 300], [400, 400], [1, 2]),
    ]
    result, estimate = sample.pooled(runs, groups, 0.1, 100, 10_000, 6_000)
    assert result.cached_tokens == 3375 and result.hit_tokens == [3375]
    assert result.requests_with_hit == 7  # 2 of 30 requests, scaled to 100
    assert estimate.token_hit_rate_by_salt == pytest.approx((0.0, 0.45, 0.45))
    # the error: the spread of the six groups' estimates (the empty ones have none), or the
    # three salts' where that is larger, as here (0, 0.45, 0.45)
    by_group = [0, 0, 0.3, 0.6, 0.45, 0.45]
    assert estimate.token_hit_rate_error > np.std(by_group, ddof=1) / 6**0.5  # the salts'
    assert estimate.token_hit_rate_error == pytest.approx(np.std([0, 0.45, 0.45], ddof=1) / 3**0.5)
    by_requests = [0, 0, 0.2, 0.2, 0.2, 0.4]
    assert estimate.request_hit_rate_error == pytest.approx(np.std(by_requests, ddof=1) / 6**0.5)
    assert estimate.groups == sample.GROUPS and estimate.salts == 3
    # two salts that agree: the groups' spread
    _, estimate = sample.pooled([run(300)] * 2, [groups[1]] * 2, 0.1, 100, 10_000, 6_000)
    assert estimate.token_hit_rate_error == pytest.approx(np.std([0.3, 0.6] * 2, ddof=1) / 2)
    # a sample whose ideal is 0 has no share to give: no rate of its own, and no hits to scale
    empty = totals([0, 0], [0, 0], [0, 0])
    result, estimate = sample.pooled(
        [run(0), run(300)], [empty, groups[1]], 0.1, 100, 10_000, 6_000
    )
    assert result.cached_tokens == 4500 and estimate.token_hit_rate_by_salt[0] is None
    assert estimate.token_hit_rate_by_salt[1] == pytest.approx(0.45)
    assert estimate.token_hit_rate_error == pytest.approx(0.15)  # groups at 0.3 and 0.6
    one = totals([300, 0], [400, 0], [2, 0])
    _, estimate = sample.pooled([run(300)], [one], 0.1, 100, 10_000, 6_000)
    assert estimate.token_hit_rate_error is None  # one group with a rate: no spread to measure


def test_draw_keeps_units_whole_and_splits_them_into_even_groups(monkeypatch):
    keys = np.arange(200_000, dtype=np.int64)
    group = sample.draw(keys, 0.1, 4)
    kept = group >= 0
    assert np.array_equal(kept, sample.keep(keys, 0.1, 4)) and 0.09 < kept.mean() < 0.11
    counts = np.bincount(group[kept], minlength=sample.GROUPS)
    assert len(counts) == sample.GROUPS and counts.min() > 0.9 * counts.mean()
    units = np.repeat(keys[kept][:50], 3)  # a unit's requests share its group
    assert (sample.draw(units, 0.1, 4).reshape(-1, 3).std(axis=1) == 0).all()
    # group g is the sample at rate 0.1 * (g + 1) / 10 less the one at 0.1 * g / 10
    assert np.array_equal(sample.keep(keys, 0.03, 4), kept & (group <= 2))
    assert sample.keep(keys, 1.0, 4).all() and (sample.draw(keys, 1e-30, 4) == -1).all()
    with monkeypatch.context() as m:  # an install without the C kernels: the same draw
        m.setattr(sample, "library", lambda: None)
        slow = [sample.draw(keys, 0.1, 4), sample.draw(keys, 1.0, 7)]
    assert np.array_equal(slow[0], group)
    assert np.array_equal(slow[1], sample.draw(keys, 1.0, 7)) and slow[1].max() == 9


def test_requests_without_a_full_block_are_sampled_too(tmp_path):
    # a tree (or a partition of one) may hold only requests shorter than one block: no node,
    # no run; then the same with conversations that do have blocks, after them
    short = [
        {"timestamp": i * 10, "input_length": 100, "output_length": 5, "hash_ids": [i]}
        for i in range(40)
    ]
    long = [
        {
            "timestamp": 400 + i,
            "input_length": 1100,
            "output_length": 5,
            "hash_ids": [90 + i % 4, 7, 8],
        }
        for i in range(40)
    ]
    config = SimConfig(concurrency=1, sample=0.3)
    for name, lines in (("short", short), ("both", short + long)):
        trace = tmp_path / f"{name}.jsonl"
        trace.write_bytes(b"\n".join(orjson.dumps(r) for r in lines) + b"\n")
        db = tmp_path / f"{name}.duckdb"
        est = simulate([trace], db=db, blocks=[10, 100], config=config)
        exact = simulate(None, db=db, blocks=[10, 100], config=SimConfig(concurrency=1))
        assert est.ideal_hit_rate == exact.ideal_hit_rate
        assert all(p.sample is not None and p.sample.rate < 1 for p in est.points)
        assert 0 <= est.points[0].token_hit_rate <= est.ideal_hit_rate
        assert (est.ideal_hit_rate > 0) == (name == "both")
