"""Mooncake FAST'25 Fig. 9 on the real traces (traces/mooncake): our LRU curve, pinned, beside the
paper's digitised values (docs/validation.md explains every gap above 0.01)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from kvtool.simulate import SimConfig, simulate

REFERENCE = "mooncake_fast25_fig9_extracted.csv"
CAPACITY_TOKENS = [10**4, 10**5, 10**6, 2 * 10**6, 4 * 10**6, 5 * 10**6, 8 * 10**6, 10**7]
CAPACITY_TOKENS += [5 * 10**7, 10**8, 5 * 10**8, 10**9]
# kvtool's curve (token hit rate, vLLM semantics, LRU, one request at a time, 512-token blocks)
PINNED = {
    "conversation": [0.04254, 0.04272, 0.05588, 0.08943, 0.18496, 0.21697, 0.27093, 0.29762]
    + [0.37102, 0.37338, 0.37338, 0.37338],
    "synthetic": [0.00049, 0.01798, 0.15007, 0.24394, 0.38434, 0.43685, 0.54126, 0.58809]
    + [0.65043, 0.65043, 0.65043, 0.65043],
}
# the documented gap to the paper: a constant offset for conversation, none for synthetic
GAP = {"conversation": (-0.032, -0.026), "synthetic": (-0.0095, 0.0095)}


def _paper(mooncake_dir: Path) -> dict[str, list[float]]:
    path = mooncake_dir.parent / "reference" / REFERENCE
    rows = list(csv.reader(line for line in path.open() if not line.startswith("#")))
    header, body = rows[0], rows[1:]
    assert [int(r[0]) for r in body] == CAPACITY_TOKENS
    return {name: [float(r[k]) for r in body] for k, name in enumerate(header) if k}


@pytest.mark.parametrize("trace", ["conversation", "synthetic"])
def test_fig9_curve_is_pinned_and_beside_the_paper(tmp_path, mooncake_dir, trace):
    out = simulate(
        [mooncake_dir / f"{trace}_trace.jsonl.gz"],
        db=tmp_path / "m.duckdb",
        blocks=[c // 512 for c in CAPACITY_TOKENS],
        config=SimConfig(concurrency=1),
    )
    ours = [p.token_hit_rate for p in out.points]
    assert ours == pytest.approx(PINNED[trace], abs=5e-6)
    assert ours[-1] == pytest.approx(out.ideal_hit_rate, abs=1e-12)
    paper = _paper(mooncake_dir)[trace]
    lo, hi = GAP[trace]
    start = 1 if trace == "conversation" else 0  # 1e4 tokens: 19 blocks, below one request
    for capacity, a, b in list(zip(CAPACITY_TOKENS, ours, paper, strict=True))[start:]:
        assert lo <= a - b <= hi, (capacity, a, b)
