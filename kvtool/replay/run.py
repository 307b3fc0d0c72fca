"""``replay``: launch (optionally) a vLLM server, send the stored requests, store what it measured.

The run's row (``replay_runs``) is stored once the first ``/metrics`` scrape worked, and each
request's measurement (``replay_requests``) the moment it completes, so a run that ends badly
(a dead server, Ctrl-C, a crash) still leaves every result it took for ``kvtool validate``; its
``metrics`` then say how it ended. Options and the endpoint are checked before anything is sent
or stored; a server whose ``/metrics`` cannot be read at the start stores nothing.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

from kvtool.errors import OptionError
from kvtool.progress import NullProgress, Progress
from kvtool.replay import metrics
from kvtool.replay.client import check_options
from kvtool.replay.client import replay as send
from kvtool.replay.model import build_tiny_model
from kvtool.replay.prepare import prepare_requests
from kvtool.replay.server import LAUNCH_TIMEOUT_S, ServerConfig, VLLMServer, tier_args
from kvtool.replay.validate import ReplayValidation, validate
from kvtool.store import DEFAULT_DB, DbArg, open_db
from kvtool.store.fingerprints import require_text
from kvtool.store.runs import (
    ReplayMeasurement,
    add_replay_measurement,
    finish_replay_run,
    start_replay_run,
)
from kvtool.tiers.kv import lookup
from kvtool.tiers.spec import parse_tier_gb
from kvtool.traffic import load_traffic


@dataclass(frozen=True)
class LaunchConfig:
    """``--launch``: the Python of a vLLM environment, where to build the tiny model and logs,
    and the server's block size and KV capacity in blocks. With ``model`` (a local model
    directory; nothing is downloaded) and ``tier_gb`` the server gets the tiers instead: the
    first sizes the KV blocks, the second is host memory through vLLM's KV offloading
    (``offload``: native or lmcache), a third LMCache's local disk (GPU only).
    ``launch_timeout_s`` is how long the server may take to answer ``/health`` (a positive
    number of seconds; ``OptionError`` otherwise)."""

    python: str
    workdir: Path
    block_size: int = 32
    num_blocks: int = 400
    model: Path | None = None
    tier_gb: str | None = None
    offload: str = "native"
    launch_timeout_s: float = LAUNCH_TIMEOUT_S

    def __post_init__(self) -> None:
        t = self.launch_timeout_s
        if isinstance(t, bool) or not isinstance(t, int | float) or not 0 < t < math.inf:
            raise OptionError("launch_timeout_s", f"must be a positive duration, got {t!r}")


def replay(
    paths: list[str | Path] | None = None,
    *,
    db: DbArg = DEFAULT_DB,
    endpoint: str | None = None,
    model: str | None = None,
    launch: LaunchConfig | None = None,
    tokenizer: str | None = None,
    block_size: int | None = None,
    num_blocks: int | None = None,
    max_tokens: int | None = None,
    timing: str = "closed",
    concurrency: int | None = 1,
    speedup: float = 1.0,
    timeout_s: float = 120.0,
    max_errors: int = 5,
    hash_block_size: int = 512,
    progress: Progress | None = None,
) -> ReplayValidation:
    """Replay the traffic of ``paths`` against ``endpoint`` (or a launched server), store the
    run and return it validated (``validate``; docs/replay.md). Every measurement is stored
    before validation; ``OptionError`` unless exactly one of ``endpoint`` and ``launch``."""
    if endpoint is None and launch is None:
        raise OptionError("endpoint", "is missing: give a server's base URL, or launch a server")
    if endpoint is not None and launch is not None:
        raise OptionError("launch", "starts its own server: give it without an endpoint")
    check_options(
        timing=timing,
        concurrency=concurrency,
        speedup=speedup,
        timeout_s=timeout_s,
        max_errors=max_errors,
    )
    if endpoint is not None:
        metrics.check_url(endpoint)
    progress = progress or NullProgress()
    server_config = None
    tiers: list[tuple[str, float]] = []
    kv_bytes: int | None = None
    offload = launch.offload if launch is not None else None
    if launch is not None:
        if launch.model is None:
            tiny = build_tiny_model(launch.workdir / "tiny", launch.python)
            model_dir, tok_dir = tiny.model_dir, tiny.tokenizer_dir
        else:
            model_dir, tok_dir = launch.model, Path(tokenizer or launch.model)
        tokenizer = str(tok_dir)
        block_size, num_blocks = launch.block_size, launch.num_blocks
        extra: list[str] = []
        env: dict[str, str] = {}
        if launch.tier_gb:
            specs = parse_tier_gb(launch.tier_gb)
            tiers = [(t.name, t.gbs[0]) for t in specs]
            kv_bytes = lookup(str(model_dir)).bytes_per_token
            num_blocks, extra, env = tier_args(
                tiers, block_size, kv_bytes, launch.offload, launch.workdir
            )
        server_config = ServerConfig(
            model_dir,
            tok_dir,
            block_size,
            num_blocks,
            served_name=model or "kvtool-replay",
            extra_args=extra,
            env=env,
        )
    with open_db(db) as con:
        require_text(con, "replay")
        traffic = load_traffic(
            con,
            paths=paths,
            tokenizer=tokenizer,
            fmt=None,
            hash_block_size=hash_block_size,
            progress=progress,
        )
        served = model or "kvtool-replay"
        requests = prepare_requests(con, traffic.wl, served, max_tokens)
        config = {
            "timing": timing,
            "concurrency": concurrency,
            "speedup": speedup,
            "max_tokens": max_tokens,
            "block_size": block_size,
            "num_blocks": num_blocks,
            "tokenizer": traffic.signature,
            "file_ids": traffic.file_ids,
            "tiers": tiers,
            "offload": offload,
            "kv_bytes_per_token": kv_bytes,
        }

        def run(url: str) -> int:
            before = metrics.scrape(url)  # ServerError: nothing is stored
            run_id = start_replay_run(con, endpoint=url, model=served, config=config)
            taken: list[ReplayMeasurement] = []

            def keep(m: ReplayMeasurement) -> None:
                add_replay_measurement(con, run_id, m)
                taken.append(m)

            try:
                progress.stage("replay", len(requests))
                send(
                    requests,
                    url,
                    timing=timing,
                    concurrency=concurrency,
                    speedup=speedup,
                    timeout_s=timeout_s,
                    max_errors=max_errors,
                    progress=lambda d, t: progress.update(d, t),
                    on_result=keep,
                )
            except BaseException as exc:  # Ctrl-C or a crash: what completed is stored
                how = "interrupted (Ctrl-C)" if isinstance(exc, KeyboardInterrupt) else "stopped"
                reason = "" if isinstance(exc, KeyboardInterrupt) else f": {type(exc).__name__}"
                finish_replay_run(
                    con,
                    run_id,
                    {"error": f"{how} after {len(taken)} of {len(requests)} requests{reason}"},
                )
                raise
            try:
                after = metrics.scrape(url)
                delta = metrics.diff(before, after)
            except Exception as exc:  # the server died: keep the per-request measurements
                delta = {"error": f"{type(exc).__name__}: {exc}"[:200]}
            finish_replay_run(con, run_id, delta)
            return run_id

        if launch is not None:
            assert server_config is not None
            server = VLLMServer(
                launch.python,
                server_config,
                launch.workdir / f"vllm-{int(time.time())}.log",
                timeout_s=launch.launch_timeout_s,
            )

            config["launch_command"] = server.command
            config["server_log"] = str(server.log)
            with server as url:
                run_id = run(url)
        else:
            assert endpoint is not None
            run_id = run(endpoint)
        progress.close()
        return validate(run_id, db=con)
