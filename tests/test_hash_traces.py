"""Hash traces as they come: ids that are not prefix-chained, traces that list full blocks only,
and files whose lines are mostly rejected (real DuckDB files, the real CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import orjson
import pytest
from typer.testing import CliRunner

from kvtool import analyze, ingest
from kvtool.cli import app
from kvtool.simulate import SimConfig, simulate
from kvtool.simulate.policies import POLICIES
from kvtool.store import connect

B = 16  # --hash-block-size of the generated traces


def _line(ts: float, n: int, ids: list[int]) -> dict:
    return {"timestamp": ts, "input_length": n, "output_length": 1, "hash_ids": ids}


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


def _prefix_oracle(rows: list[dict], block: int) -> int:
    """Cached tokens of an infinite cache where a block is its whole path of ids (the documented
    rule), requests in timestamp order, ties in file order."""
    seen: set[tuple[int, ...]] = set()
    cached = 0
    for r in sorted(rows, key=lambda r: r["timestamp"]):
        n = r["input_length"]
        full = r["hash_ids"][: n // block]
        paths = [tuple(full[: k + 1]) for k in range(len(full))]
        h = 0
        while h < len(paths) and paths[h] in seen:
            h += 1
        cached += block * min(h, (n - 1) // block)
        seen.update(paths)
    return cached


# ---------------------------------------------------------------------------------------------
# ids that are not prefix-chained


def test_issue_example_reads_ids_by_their_prefix_on_the_cli(tmp_path):
    rows = [_line(0, 1536, [1, 2, 3]), _line(1, 1536, [4, 2, 3]), _line(2, 1536, [4, 2, 3])]
    path = _write(tmp_path / "local_ids.jsonl", rows)
    db = str(tmp_path / "k.duckdb")
    result = CliRunner().invoke(app, ["analyze", str(path), "--db", db, "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    # request 2 starts with the unseen block 4: nothing cached; request 3 reuses 2 of 3 blocks
    assert out["cached_tokens"] == 1024 == _prefix_oracle(rows, 512)
    assert out["ideal_hit_rate"] == pytest.approx(1024 / (3 * 1536))
    sim = simulate([path], db=db, blocks=[2, 3, 100], config=SimConfig(concurrency=1))
    assert sim.ideal_cached_tokens == 1024
    assert [p.token_hit_rate for p in sim.points] == pytest.approx([0.0, 1024 / 4608, 1024 / 4608])


def test_per_block_content_ids_share_nothing_after_a_different_first_block(tmp_path):
    # the same content id at the same depth behind different first blocks is a different block
    rows = [_line(0, 64, [9, 7, 7, 7]), _line(1, 64, [8, 7, 7, 7]), _line(2, 64, [9, 7, 7, 5])]
    path = _write(tmp_path / "content.jsonl", rows)
    s = analyze([path], db=tmp_path / "k.duckdb", hash_block_size=B)
    assert s["cached_tokens"] == 3 * B == _prefix_oracle(rows, B)


def _random_trace(rng: np.random.Generator, chained: bool) -> list[dict]:
    """Requests of 1-6 blocks: chained ids (a fresh id per new prefix) or ids from a tiny
    alphabet that repeat at any depth behind any prefix; partial last blocks, both id counts."""
    rows: list[dict] = []
    paths: list[list[int]] = []
    fresh = 1000
    ts = 0.0
    for _ in range(int(rng.integers(5, 26))):
        blocks = int(rng.integers(1, 7))
        if chained:
            base = paths[int(rng.integers(len(paths)))] if paths and rng.random() < 0.7 else []
            keep = base[: int(rng.integers(0, len(base) + 1))]
            ids = keep + list(range(fresh, fresh + blocks))
            fresh += blocks
        else:
            ids = [int(x) for x in rng.integers(0, 4, blocks)]
        paths.append(ids)
        n = len(ids) * B - int(rng.integers(0, B))  # the last id covers a partial block
        listed = ids[: n // B] if n % B and rng.random() < 0.5 else ids  # full blocks only
        ts += float(rng.choice([0.0, 1.0, 250.0, 4000.0]))  # ties, close and far in ms
        rows.append(_line(ts, n, listed))
    return rows


@pytest.mark.parametrize("seed", range(3))
def test_no_finite_cache_beats_the_ideal(tmp_path, seed):
    """Every policy at several capacities, one request at a time; LRU also with requests
    overlapping: never above the ideal, which is the prefix-identity oracle's."""
    rng = np.random.default_rng(seed)
    capacities = [1, 2, 3, 5, 8, 13, 1000]
    runs = [(policy, 1) for policy in POLICIES] + [("lru", None)]
    for k, chained in enumerate((True, False)):
        rows = _random_trace(rng, chained)
        path = _write(tmp_path / f"t{k}.jsonl", rows)
        db = tmp_path / f"t{k}.duckdb"
        ingest([path], db=db, hash_block_size=B)
        for policy, concurrency in runs:
            ttl = 2.0 if POLICIES[policy].cls.needs_ttl else None
            config = SimConfig(policy=policy, ttl_s=ttl, concurrency=concurrency)
            out = simulate(db=db, blocks=capacities, config=config)
            assert out.ideal_cached_tokens == _prefix_oracle(rows, B)
            rates = [p.token_hit_rate for p in out.points]
            assert all(r <= out.ideal_hit_rate + 1e-12 for r in rates), (policy, rates)
            if policy == "infinite":
                assert rates == pytest.approx([out.ideal_hit_rate] * len(rates))


# ---------------------------------------------------------------------------------------------
# traces that list full blocks only


def test_full_block_lists_and_mooncake_lists_give_the_same_figures(tmp_path):
    shapes = [(0, 1100, [1, 2, 3]), (5, 1100, [1, 2, 4]), (9, 2000, [1, 2, 5, 6]), (12, 300, [7])]
    every = [_line(t, n, ids) for t, n, ids in shapes]  # ⌈n/B⌉ ids: the last one partial
    full = [_line(t, n, ids[: n // 512]) for t, n, ids in shapes]  # ⌊n/B⌋ ids
    assert [len(r["hash_ids"]) for r in full] == [2, 2, 3, 0]
    a = analyze([_write(tmp_path / "every.jsonl", every)], db=tmp_path / "a.duckdb")
    b = analyze([_write(tmp_path / "full.jsonl", full)], db=tmp_path / "b.duckdb")
    assert a["rejected_lines"] == b["rejected_lines"] == 0
    assert a["requests"] == b["requests"] == 4
    # request 2 reuses blocks 1, 2 (1,024); request 3 reuses 1, 2 of 3 full blocks (1,024)
    assert a["cached_tokens"] == b["cached_tokens"] == 2048 == _prefix_oracle(every, 512)


def test_a_list_of_neither_length_is_rejected_with_both_counts(tmp_path):
    rows = [_line(0, 1100, [1, 2, 3]), _line(1, 1100, [1, 2]), _line(2, 1100, [1])]
    rows += [_line(3, 1024, [1, 2])]
    (report,) = ingest([_write(tmp_path / "t.jsonl", rows)], db=tmp_path / "k.duckdb")
    assert (report.requests, report.rejected, report.warning) == (3, 1, None)
    with connect(tmp_path / "k.duckdb") as con:
        rejects = con.execute("SELECT line, reason FROM rejects").fetchall()
    reason = "hash_ids has 1 ids, input_length 1100 at block size 512 needs 3 (or 2, full blocks"
    assert rejects == [(3, reason + " only)")]


# ---------------------------------------------------------------------------------------------
# files whose lines are mostly rejected


def _floor_trace(path: Path, good: int, bad: int) -> Path:
    """``good`` lines of the ⌈n/B⌉ convention, then ``bad`` lines with one id too few."""
    rows = [_line(i, 1100, [1, 2, 3]) for i in range(good)]
    rows += [_line(good + i, 1100, [1]) for i in range(bad)]
    return _write(path, rows)


def test_a_mostly_rejected_file_warns_and_exits_2(tmp_path):
    path = _floor_trace(tmp_path / "mostly.jsonl", good=2, bad=5)
    db = str(tmp_path / "k.duckdb")
    result = CliRunner().invoke(app, ["ingest", str(path), "--db", db, "--json"])
    assert result.exit_code == 2
    (file,) = json.loads(result.stdout)["files"]
    assert (file["requests"], file["rejected"]) == (2, 5)
    warning = file["warning"]
    assert warning.startswith(f"{path}: 5 of 7 records rejected (commonest: hash_ids has")
    assert "×5; first: line 3: hash_ids has 1 ids" in warning
    (line,) = result.stderr.strip().splitlines()
    assert line == f"kvtool: warning: {warning}"
    # the file is stored with its rejects, so they can be read back
    again = CliRunner().invoke(app, ["ingest", str(path), "--db", db, "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["files"][0]["already_ingested"] is True
    with connect(db) as con:
        assert con.execute("SELECT count(*) FROM rejects").fetchone() == (5,)


def test_half_rejected_blank_lines_and_duplicates_do_not_warn(tmp_path):
    path = _floor_trace(tmp_path / "half.jsonl", good=3, bad=3)
    path.write_bytes(path.read_bytes() + b"\n\n\n")  # blank lines are not records
    dup = {"request_id": "a", **_line(9, 1100, [1, 2, 3])}
    dups = _write(tmp_path / "dups.jsonl", [dup, dup, dup, _line(10, 1100, [1])])
    db = str(tmp_path / "k.duckdb")
    result = CliRunner().invoke(app, ["ingest", str(path), str(dups), "--db", db, "--json"])
    assert result.exit_code == 0, result.output
    files = json.loads(result.stdout)["files"]
    assert [(f["requests"], f["rejected"], f["warning"]) for f in files] == [
        (3, 6, None),
        (1, 3, None),
    ]


def test_an_all_rejected_file_is_one_line_and_exit_2(tmp_path):
    path = _floor_trace(tmp_path / "all.jsonl", good=0, bad=4)
    result = CliRunner().invoke(app, ["ingest", str(path), "--db", str(tmp_path / "k.duckdb")])
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert "every line was rejected, nothing ingested (first: line 1: hash_ids has 1" in line
