"""A hash trace's block tree built by partitions of root blocks is the whole-trace tree, renumbered:
the same sharing, the same depths, and the same analysis and simulation."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kvtool.analyze import analyze
from kvtool.simulate import SimConfig, simulate
from kvtool.traffic import workload
from kvtool.traffic.workload import rooted_tree

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


def test_analyze_and_simulate_agree_with_small_partitions(tmp_path, monkeypatch):
    trace = MOONCAKE / "conversation_trace.jsonl.gz"
    config = SimConfig(policy="lru")
    results = []
    for name, ids in (("whole", 1 << 40), ("parts", 20_000)):  # 20k ids: about 15 partitions
        monkeypatch.setattr(workload, "TREE_PART_IDS", ids)
        db = tmp_path / f"{name}.duckdb"
        summary = analyze([trace], db=db).to_json()
        sim = simulate(db=db, blocks=[1000, 4000, 16000], config=config).to_json()
        results.append((summary, sim["points"]))
    assert results[1] == results[0]
    assert 0 < results[0][1][0]["token_hit_rate"] < results[0][1][2]["token_hit_rate"]
