"""``validate``: a stored replay run next to the simulation of the same server.

The prediction runs the simulator's engine with the server's block size, ``num_blocks - 1``
blocks (vLLM keeps one null block), LRU, one request at a time, and running requests holding
their partial last block as vLLM allocates it, on the requests that succeeded. The result is a
``ReplayValidation``; its ``to_json()`` is the ``--json`` object of docs/replay.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from kvtool.errors import NotFoundError
from kvtool.jsonview import JsonView
from kvtool.simulate import Engine, SimConfig
from kvtool.store import DEFAULT_DB, Connection, DbArg, open_db
from kvtool.store.runs import ReplayMeasurement, replay_measurements, replay_run
from kvtool.tiers.spec import Tier
from kvtool.traffic import block_streams, load_workload


@dataclass(kw_only=True, eq=False)
class ReplayValidation(JsonView):
    """A replay run (``run_id``, ``endpoint``, ``model``, its stored ``config`` and the
    ``metrics`` delta scraped around it) and what it measured (``requests_ok``/``_failed``, up
    to 5 distinct ``errors``, the token hit rate from ``/metrics`` and from ``usage``), next to
    the simulator's prediction. ``simulated`` is the simulated configuration; when it is None
    nothing was simulated (no block size, KV capacity or successful request in the run, or a
    block size that does not fit the trace: ``prediction_note`` says why) and every
    ``predicted_*``/agreement figure is None.

    ``to_json()`` is the ``--json`` object (a run without a simulation lists only
    ``predicted_hit_rate``, ``request_agreement`` and a note, as it always did). As a
    ``Mapping`` the result is that JSON view, read-only."""

    run_id: int
    endpoint: str
    model: str
    config: dict
    metrics: dict
    requests_ok: int
    requests_failed: int
    errors: list[str]
    observed_hit_rate: float | None
    observed_hit_rate_usage: float | None
    predicted_hit_rate: float | None = None
    predicted_hits_by_tier: dict[str, int] | None = None
    predicted_evictions: int | None = None
    request_agreement: float | None = None
    prompt_token_agreement: float | None = None
    ttft_median_hits_s: float | None = None
    ttft_median_misses_s: float | None = None
    simulated: dict | None = None
    prediction_note: str | None = None

    def to_json(self) -> dict:
        out = {
            "run_id": self.run_id,
            "endpoint": self.endpoint,
            "model": self.model,
            "config": self.config,
            "metrics": self.metrics,
            "requests_ok": self.requests_ok,
            "requests_failed": self.requests_failed,
            "errors": self.errors,
            "observed_hit_rate": self.observed_hit_rate,
            "observed_hit_rate_usage": self.observed_hit_rate_usage,
            "predicted_hit_rate": self.predicted_hit_rate,
        }
        if self.simulated is None:
            out["request_agreement"] = self.request_agreement
            if self.prediction_note is not None:
                out["prediction_note"] = self.prediction_note
            return out
        out["predicted_hits_by_tier"] = self.predicted_hits_by_tier
        out["predicted_evictions"] = self.predicted_evictions
        out["request_agreement"] = self.request_agreement
        out["prompt_token_agreement"] = self.prompt_token_agreement
        out["ttft_median_hits_s"] = self.ttft_median_hits_s
        out["ttft_median_misses_s"] = self.ttft_median_misses_s
        out["simulated"] = self.simulated
        out["prediction_note"] = self.prediction_note
        return out


def validate(run_id: int, *, db: DbArg = DEFAULT_DB) -> ReplayValidation:
    """A stored replay run next to the simulation of its configuration (module docstring);
    ``NotFoundError`` when the database holds no such run. A run with no stored request has
    every figure None and a ``prediction_note`` saying so."""
    with open_db(db) as con:
        run = replay_run(con, run_id)
        if run is None:
            raise NotFoundError(f"no replay run {run_id} in the database")
        got = replay_measurements(con, run_id)
        if not got:  # nothing measured: no figure to present, whatever /metrics moved
            return ReplayValidation(
                run_id=run_id,
                endpoint=run.endpoint,
                model=run.model,
                config=run.config,
                metrics=run.metrics,
                requests_ok=0,
                requests_failed=0,
                errors=[],
                observed_hit_rate=None,
                observed_hit_rate_usage=None,
                prediction_note="no request of this run was stored (it ended before the first "
                "response): nothing to compare",
            )
        ok = {m.req_id: m for m in got if m.ok}
        delta = run.metrics
        queries = delta.get("prefix_cache_queries")
        prompt = sum(m.prompt_tokens or 0 for m in ok.values())
        return ReplayValidation(
            run_id=run_id,
            endpoint=run.endpoint,
            model=run.model,
            config=run.config,
            metrics=delta,
            requests_ok=len(ok),
            requests_failed=len(got) - len(ok),
            errors=sorted({m.error for m in got if not m.ok and m.error is not None})[:5],
            observed_hit_rate=(
                delta["prefix_cache_hits"] / queries
                if isinstance(queries, float) and queries
                else None
            ),
            observed_hit_rate_usage=(
                sum(m.cached_tokens or 0 for m in ok.values()) / prompt if prompt else None
            ),
            **_predict(con, run.config, ok),
        )


def _predict(con: Connection, config: dict, ok: dict[int, ReplayMeasurement]) -> dict[str, Any]:
    """The prediction fields of a ``ReplayValidation`` (by name)."""
    B, blocks = config.get("block_size"), config.get("num_blocks")
    if not B or not blocks or not ok:
        return {"predicted_hit_rate": None, "request_agreement": None}
    wl = load_workload(con, config["file_ids"], config["tokenizer"])
    if B % wl.base:
        return {
            "predicted_hit_rate": None,
            "request_agreement": None,
            "prediction_note": f"the server's block size {B} is not a multiple of the trace's "
            f"{wl.base}: replay a hash trace with --block-size {wl.base}",
        }
    keep = np.isin(wl.req_ids, np.array(sorted(ok), np.int64))
    offsets, stream = block_streams(wl, B)
    sel = np.flatnonzero(keep)
    sub_off = np.concatenate([[0], np.cumsum(np.diff(offsets)[sel])]).astype(np.int64)
    sub_blocks = (
        np.concatenate([stream[offsets[i] : offsets[i + 1]] for i in sel])
        if len(sel)
        else np.zeros(0, np.int64)
    )
    tiers = [Tier("device", blocks - 1)]
    lower = (config.get("tiers") or [])[1:]
    kv = config.get("kv_bytes_per_token")
    note = None
    if lower and kv:
        # vLLM's offloading stores blocks as they are computed (write-through); LMCache in
        # 256-token chunks; disk after host memory (kvtool simulate's tier model)
        chunk = 256 if config.get("offload") == "lmcache" else None
        for name, gb in lower:
            size = chunk or B
            tiers.append(Tier(name, int(gb * 1e9 // (size * kv)), gb, block_tokens=chunk))
        note = "lower tiers predicted with kvtool's tier model, not yet checked on a GPU"
    # prompt blocks only: a replay sends the logged answers, not the server's own, so the
    # server's output blocks never match a later prompt (docs/simulate.md, "Output blocks")
    engine = Engine(
        tiers,
        config=SimConfig(policy="lru", block_size=B, concurrency=1, write_policy="through"),
        kv_bytes_per_token=kv,
        hold_partial=True,
    )
    result = engine.run(
        sub_off, sub_blocks, wl.n_tokens[sel], wl.ts[sel], np.ones(len(sel), np.int64)
    )
    got = [ok[int(r)] for r in wl.req_ids[sel]]
    observed = np.array([m.cached_tokens or 0 for m in got], np.int64)
    prompt_obs = np.array([m.prompt_tokens or 0 for m in got], np.int64)
    ttft = np.array([np.nan if m.ttft_s is None else m.ttft_s for m in got], float)
    hit = observed > 0

    def median(x: np.ndarray) -> float | None:
        x = x[~np.isnan(x)]
        return float(np.median(x)) if len(x) else None

    return {
        "predicted_hit_rate": result.token_hit_rate,
        "predicted_hits_by_tier": dict(zip(result.tiers, result.hit_tokens, strict=True)),
        "predicted_evictions": result.evictions,
        "request_agreement": float((result.cached_per_request == observed).mean()),
        "prompt_token_agreement": float((wl.n_tokens[sel] == prompt_obs).mean()),
        "ttft_median_hits_s": median(ttft[hit]),
        "ttft_median_misses_s": median(ttft[~hit]),
        "simulated": {"block_size": B, "blocks": blocks - 1, "policy": "lru", "concurrency": 1},
        "prediction_note": note,
    }
