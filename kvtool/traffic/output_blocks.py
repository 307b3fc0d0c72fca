"""The blocks a request's generated output adds to a prefix cache: vLLM keeps the full blocks of
a finished request's prompt and output alike, and DeepSeek persists a prefix unit at the end of
the model output (docs/definitions.md, "Output blocks"; docs/providers.md, "Generated tokens").
Analyze's ideal, simulate's engine and the providers' engines share this definition.

A log holds the output's token count, not its tokens. The tokens are known only where a later
request sends the answer back: request j *continues* request i when j comes later in processing
order, belongs to the same session (both unknown counts as the same), and its path passes
through i's last full block to a deeper one, so j carries all of i's full prompt blocks and
then more. The first such j is i's successor; its blocks after i's path, up to the end of i's
output, are i's output blocks.

Invariants, at the workload's base block size B (16 for tokenized logs), with ``d_i`` the depth
of i's last full block and ``n_i``, ``o_i`` its prompt and output tokens:

- i's output blocks are the successor's blocks at depths ``d_i + 1 .. min(d_j, c_i)`` with
  ``c_i = ⌊(n_i + o_i − u) / B⌋ − 1``: only blocks that end within the prompt plus the output
  (floor), and never more than the successor carries. ``u`` is how many of the last output
  tokens never get KV: vLLM never computes the last token it samples (it caches the blocks of
  the tokens a step computes), so ``u = 1`` there (``output_blocks``); DeepSeek persists the
  output as a whole, ``u = 0`` (``output_paths``' default, the provider engine);
- a request with no full block, or without a successor, adds nothing;
- output blocks are ancestor-closed with the prompts before them: an output block's parent is
  i's last prompt block or an output block of i, so "in an earlier prompt or an earlier
  output" is a prefix of every path (the ideal counts leading blocks);
- slack: the successor renders the answer with the template's assistant markers (DeepSeek:
  the end-of-sentence token after the answer). ``completion_tokens`` counts a generated end
  token, so no slack is added; where a template adds a marker the model did not generate,
  the cap can be up to one block short (never long);
- what cannot be seen: an answer the client edits before sending it back, but that keeps i's
  whole prompt ahead of it (reasoning dropped from a thinking model's turn, a rewritten
  answer), is taken as i's output. An edit inside i's prompt (a rewritten earlier turn) breaks
  the continuation, and then nothing is added.
- hash traces get none from ``output_blocks`` (``caches_outputs``): their ids cannot show that
  the next prompt re-renders the answer, and their validated figures stay prompt-only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kvtool.traffic.blocks import block_streams
from kvtool.traffic.workload import Workload

VLLM_UNCOMPUTED = 1
"""vLLM caches the blocks of the tokens each step computes; the last sampled token is never fed
back, so a block it would complete is not cached (``kv_cache_manager.allocate_slots``)."""


@dataclass(frozen=True)
class OutputPaths:
    """Per request (processing order), the block nodes its output adds to the cache, shallowest
    first: ``nodes[offsets[i]:offsets[i + 1]]``; ``successor[i]`` is the request whose blocks
    they are (-1: none, and no nodes)."""

    nodes: np.ndarray
    offsets: np.ndarray
    successor: np.ndarray

    def of(self, i: int) -> np.ndarray:
        """Request i's output blocks."""
        return self.nodes[self.offsets[i] : self.offsets[i + 1]]


def _session_codes(sessions: list[str | None]) -> np.ndarray:
    """A small integer per distinct session; unknown sessions share code 0."""
    names = sorted({s for s in sessions if s is not None})
    code = {s: k + 1 for k, s in enumerate(names)}
    return np.array([code.get(s, 0) if s is not None else 0 for s in sessions], np.int64)


def _end_above(wl: Workload) -> np.ndarray:
    """Per node, its nearest strict ancestor at which some request ends (-1: none), by pointer
    jumping: every node's pointer skips the nodes where no request ends, doubling its reach
    each step (O(log depth) steps over the nodes)."""
    is_end = np.zeros(len(wl.parent), bool)
    is_end[wl.end[wl.end >= 0]] = True
    up = np.asarray(wl.parent, np.int64).copy()
    moving = np.flatnonzero(up >= 0)
    while len(moving):
        moving = moving[~is_end[up[moving]]]  # pointers at an end node have arrived
        up[moving] = up[up[moving]]  # the right side is read whole before the assignment
        moving = moving[up[moving] >= 0]
    return up


def successors(wl: Workload) -> np.ndarray:
    """Per request, the first later request of its session that continues it (-1: none), from
    the block tree: the pairs (node, request) where the request passes through a node at which
    a request ends to a deeper one are the strict end-node ancestors of each request's last
    node (a walk up ``_end_above``), so the work is in those pairs, not in the blocks."""
    n = wl.n
    succ = np.full(n, -1, np.int64)
    has = wl.end >= 0
    if not has.any():
        return succ
    sess = _session_codes(wl.session)
    n_sess = int(sess.max()) + 1
    above = _end_above(wl)
    walker = np.flatnonzero(has)
    at = above[wl.end[walker]]
    nodes, reqs = [], []
    while len(walker):
        live = at >= 0
        walker, at = walker[live], at[live]
        nodes.append(at)
        reqs.append(walker)
        at = above[at]
    node, req = np.concatenate(nodes), np.concatenate(reqs)
    key = node * n_sess + sess[req]
    uniq, rank = np.unique(key, return_inverse=True)
    composite = np.sort(rank.astype(np.int64) * n + req)
    mine = np.flatnonzero(has)
    my_key = wl.end[mine] * n_sess + sess[mine]
    pos = np.searchsorted(uniq, my_key)
    found = pos < len(uniq)
    found[found] = uniq[pos[found]] == my_key[found]
    mine, pos = mine[found], pos[found]
    # the first pair of the same key whose request comes after i
    at = np.searchsorted(composite, pos * n + mine, side="right")
    ok = at < len(composite)
    ok[ok] = composite[at[ok]] // n == pos[ok]
    succ[mine[ok]] = composite[at[ok]] % n
    return succ


def output_paths(wl: Workload, uncomputed: int = 0) -> OutputPaths:
    """The blocks each request's output adds to the cache (module docstring; ``uncomputed`` is
    ``u``, the last output tokens that get no KV). From the block tree, with no loop over
    requests and no block streams: each output is read off its successor's path by a walk up
    from the successor's last node, so the work is in the nodes below the request's last one."""
    succ = successors(wl)
    n = wl.n
    has = succ >= 0
    depth_i = np.full(n, -1, np.int64)
    depth_i[wl.end >= 0] = wl.depth[wl.end[wl.end >= 0]]
    tokens = wl.n_tokens.astype(np.int64) + wl.output_tokens.astype(np.int64) - uncomputed
    cap = tokens // wl.base - 1
    depth_j = np.full(n, -1, np.int64)
    depth_j[has] = depth_i[succ[has]]
    last = np.minimum(depth_j, cap)
    counts = np.where(has, np.maximum(last - depth_i, 0), 0)
    out_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    nodes = np.empty(int(out_offsets[-1]), np.int64)
    # walk up the successor's path from its last node to just below i's: a node at depth d
    # within the output (d <= last) is i's output block d - depth_i - 1
    walker = np.flatnonzero(counts > 0)
    at = wl.end[succ[walker]]
    while len(walker):
        d = wl.depth[at]
        mine = d <= last[walker]
        nodes[out_offsets[walker[mine]] + d[mine] - depth_i[walker[mine]] - 1] = at[mine]
        live = d > depth_i[walker] + 1
        walker, at = walker[live], wl.parent[at[live]]
    return OutputPaths(nodes=nodes, offsets=out_offsets, successor=succ)


def caches_outputs(wl: Workload) -> bool:
    """Whether output caching can apply to ``wl``: a text log (hash traces never) that logs some
    output tokens."""
    return wl.kind == "tokens" and bool((wl.output_tokens > 0).any())


def no_outputs(n: int) -> OutputPaths:
    """No request adds output blocks (output caching off, or a hash trace)."""
    return OutputPaths(
        nodes=np.zeros(0, np.int64),
        offsets=np.zeros(n + 1, np.int64),
        successor=np.full(n, -1, np.int64),
    )


def output_blocks(wl: Workload, enabled: bool = True) -> OutputPaths:
    """The output blocks of ``wl`` under vLLM's semantics (the last sampled token gets no KV:
    ``uncomputed=1``) where ``enabled`` and ``caches_outputs(wl)``, else none."""
    if not enabled or not caches_outputs(wl):
        return no_outputs(wl.n)
    return output_paths(wl, uncomputed=VLLM_UNCOMPUTED)


def streams_with_outputs(
    wl: Workload, block_size: int, outputs: OutputPaths
) -> tuple[np.ndarray, np.ndarray]:
    """``block_streams(wl, block_size)`` with each request's output blocks at ``block_size``
    appended after its prompt blocks (those of its base output nodes that end a
    ``block_size`` block): the blocks a request leaves in the cache. A request's hits stay
    within its prompt (``(n - 1) // B`` caps them below its prompt's full blocks)."""
    offsets, blocks = block_streams(wl, block_size)
    if len(outputs.nodes) == 0:
        return offsets, blocks
    k = block_size // wl.base
    n = wl.n
    owner = np.repeat(np.arange(n, dtype=np.int64), np.diff(outputs.offsets))
    keep = (wl.depth[outputs.nodes] + 1) % k == 0
    out_nodes, out_owner = outputs.nodes[keep], owner[keep]
    out_counts = np.bincount(out_owner, minlength=n).astype(np.int64)
    counts = np.diff(offsets) + out_counts
    new_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    merged = np.empty(int(new_offsets[-1]), np.int64)
    prompt_owner = np.repeat(np.arange(n, dtype=np.int64), np.diff(offsets))
    pos = new_offsets[prompt_owner] + np.arange(len(blocks)) - offsets[prompt_owner]
    merged[pos] = blocks
    out_start = new_offsets[:-1] + np.diff(offsets)
    out_first = np.concatenate([[0], np.cumsum(out_counts)])[:-1]
    merged[out_start[out_owner] + np.arange(len(out_nodes)) - out_first[out_owner]] = out_nodes
    return new_offsets, merged
