"""A hash trace's block tree built by partitions of root blocks is the whole-trace tree, renumbered:
the same sharing, the same depths, and the same analysis and simulation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kvtool import ingest
from kvtool.analyze import analyze, summarize
from kvtool.simulate import SimConfig, simulate
from kvtool.store import connect
from kvtool.store.arrow import numbers
from kvtool.store.files import all_file_ids, file_rows
from kvtool.store.requests import hash_request_table
from kvtool.traffic import hash_tree, measurement_window, parse_warmup
from kvtool.traffic.ideal import first_through_hits
from kvtool.traffic.tree import by_depth, depth_order, rooted_tree, seen_blocks, unary_runs
from kvtool.traffic.workload import load_parts

MOONCAKE = Path(__file__).resolve().parents[1] / "traces" / "mooncake"


def _canonical(end: np.ndarray, parent: np.ndarray, depth: np.ndarray) -> list[tuple]:
    """Each request's path as node labels numbered by first appearance, with depths."""
    label: dict[int, int] = {}
    out = []
    for e in end:
        path = []
        v = int(e)
        while v >= 0:
            path.append(v)
            v = int(parent[v])
        path.reverse()
        assert [int(depth[v]) for v in path] == list(range(len(path)))
        out.append(tuple(label.setdefault(v, len(label)) for v in path))
    return out


def test_partitions_give_the_same_tree_renumbered():
    rng = np.random.default_rng(7)
    chains = []
    for _ in range(400):  # requests that share prefixes of a few roots, some empty
        root = int(rng.integers(0, 12))
        n = int(rng.integers(0, 9))
        chains.append([root, *(int(rng.integers(0, 3)) + 100 * k for k in range(1, n))][:n])
    offsets = np.zeros(len(chains) + 1, np.int64)
    np.cumsum([len(c) for c in chains], out=offsets[1:])
    ids = np.array([x for c in chains for x in c], np.uint64)
    sizes = np.diff(offsets)
    salts = np.zeros(len(chains), np.uint64)
    salts[::7] = 12345  # a seventh of the requests in another tenant: shares nothing with them
    whole = rooted_tree(offsets[:-1], sizes, ids, salts, 1)
    split = rooted_tree(offsets[:-1], sizes, ids, salts, 5)
    assert len(split[1]) == len(whole[1])  # the same number of distinct blocks
    assert _canonical(*split) == _canonical(*whole)
    assert len(set(int(e) for e in split[0] if e >= 0)) > 12  # a non-trivial tree
    for _, parent, _ in (whole, split):  # numbered by depth: a parent before its children
        assert (parent < np.arange(len(parent))).all()
    depth = whole[2]  # by depth within a partition: one partition, the whole tree
    assert (np.diff(depth) >= 0).all() and depth_order(depth).tolist() == list(range(len(depth)))
    assert not (np.diff(split[2]) >= 0).all()  # five partitions, one after the other
    order = depth_order(split[2])  # sorted for the passes up and down the tree
    assert (np.diff(split[2][order]) >= 0).all() and sorted(order) == list(range(len(order)))
    shuffled = np.random.default_rng(1).permutation(len(whole[1]))  # any numbering, renumbered
    back = np.argsort(shuffled)
    end, parent, depth = whole
    moved = by_depth(
        np.where(end >= 0, back[end], -1),
        np.where(parent >= 0, back[parent], -1)[shuffled],
        depth[shuffled],
    )
    assert _canonical(*moved) == _canonical(*whole) and (np.diff(moved[2]) >= 0).all()


@pytest.mark.parametrize(
    ("trace", "parts"),
    [("synthetic_trace.jsonl.gz", 12), ("conversation_trace.jsonl.gz", 1)],
)
def test_analyze_and_simulate_agree_with_small_partitions(tmp_path, monkeypatch, trace, parts):
    """Partitions change node numbers, never the figures: analyze and simulate agree with one
    partition. And analyze, which merges the figures of each stored partition
    (``kvtool.analyze.summary``), equals the one-pass summary of the same tree: numbers, top
    prefixes, charts and per-request arrays, with and without a warm-up. The synthetic trace's
    requests start with 2,211 different blocks; every request of the conversation trace starts
    with the same one, so it is one partition however small they are asked to be. ``--sample``
    reads the partitions too, and its ideal is the exact one."""
    config = SimConfig(policy="lru")
    sampled_config = SimConfig(concurrency=1, sample=0.2, warmup="0.3")
    results = []
    for name, ids in (("whole", 1 << 40), ("parts", 10_000)):
        monkeypatch.setattr(hash_tree, "TREE_PART_IDS", ids)
        db = tmp_path / f"{name}.duckdb"
        summary = analyze([MOONCAKE / trace], db=db, top=25).to_json()
        sim = simulate(db=db, blocks=[1000, 4000, 16000], config=config).to_json()
        sampled = simulate(db=db, blocks=[4000, 16000], config=sampled_config).to_json()
        results.append((summary, sim["points"], sampled["points"], sampled["ideal_hit_rate"]))
    assert results[1] == results[0]
    summary, points, _, sampled_ideal = results[0]
    # the sampled run's ideal, summed over the partitions, is the exact run's, warm-up and all
    exact = simulate(db=db, blocks=[4000], config=SimConfig(warmup="0.3")).ideal_hit_rate
    assert sampled_ideal == exact
    assert 0 < points[0]["token_hit_rate"] < points[2]["token_hit_rate"]
    assert len(summary["top_prefixes"]) == 25
    con = connect(tmp_path / "parts.duckdb", read_only=True)
    loaded = load_parts(con, all_file_ids(con), None)
    assert loaded.parts == parts
    assert sum(len(p.rows) for p in loaded) == loaded.head.n == summary["requests"]
    whole = loaded.whole()
    for warmup in (None, 0.3):
        window = measurement_window(whole, None if warmup is None else parse_warmup(warmup))
        one = summarize(whole, 512, charts=True, top=25, window=window)
        merged = summarize(loaded.head, 512, charts=True, top=25, window=window, parts=loaded)
        assert merged.to_json() == one.to_json()
        assert len(one.charts["prefix_tree"]) >= 40
        assert [vars(p) for p in merged.prefixes] == [vars(p) for p in one.prefixes]
        a, b = merged.per_request, one.per_request
        for field in ("session_code", "cached_tokens", "within_session_tokens"):
            assert np.array_equal(getattr(a, field), getattr(b, field))
    assert one.requests == summary["requests"] - int(0.3 * summary["requests"])
    con.close()


def test_stored_partitions_are_the_in_memory_tree(tmp_path, monkeypatch):
    """The tree built from spilled partitions and stored equals the whole-trace build that a
    database which cannot store a tree gets, node for node."""
    monkeypatch.setattr(hash_tree, "TREE_PART_IDS", 10_000)
    db = tmp_path / "t.duckdb"
    ingest([MOONCAKE / "synthetic_trace.jsonl.gz"], db=db)
    con = connect(db)
    files = all_file_ids(con)
    stored = load_parts(con, files, None)
    whole = stored.whole()
    table = hash_request_table(con, files)
    digests = {f.file_id: f.digest for f in file_rows(con, files)}

    def col(name: str) -> np.ndarray:
        return numbers(table.column(name), np.int64)

    plan = hash_tree.Plan(
        col("req_id"),
        col("n_tokens"),
        col("first_id"),
        col("n_ids"),
        col("file_id"),
        table.column("tenant"),
        digests,
        512,
    )
    end, parent, depth = hash_tree.build_in_memory(con, files, plan)
    assert np.array_equal(whole.end, end)
    assert np.array_equal(whole.parent, parent)
    assert np.array_equal(whole.depth, depth)
    # each partition is the whole tree's nodes node_base.. with parents inside it
    assert stored.parts > 1
    for part in stored:
        n = len(part.wl.parent)
        assert np.array_equal(
            part.wl.parent,
            np.where(
                parent[part.node_base : part.node_base + n] >= 0,
                parent[part.node_base : part.node_base + n] - part.node_base,
                -1,
            ),
        )
        assert part.wl.parent.max(initial=-1) < n
        assert np.array_equal(part.wl.req_ids, whole.req_ids[part.rows])
    # the stored runs, partition after partition, are the whole tree's unary stretches
    runs, rs = stored.runs(), unary_runs(parent, depth, end)
    assert np.array_equal(runs.parent, rs.parent)
    assert np.array_equal(runs.lo, rs.lo) and np.array_equal(runs.length, rs.hi - rs.lo + 1)
    has = end >= 0
    assert np.array_equal(stored.index.end_run[has], rs.of[end[has]])
    assert (stored.index.end_run[~has] == -1).all() and (~has).any()
    # and each request's blocks an earlier one went through, the ideal's prompt hits
    assert np.array_equal(stored.index.seen, first_through_hits(whole))
    assert np.array_equal(seen_blocks(rs, end), stored.index.seen) and stored.index.seen.any()
    assert stored.max_depth() == int(depth.max()) and len(runs.lo) < len(depth) / 5
    con.close()
