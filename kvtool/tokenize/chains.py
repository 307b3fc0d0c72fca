"""The tokenize pass: every request's prompt to block chain hashes (tables ``chains``, ``blocks``).

The pass chooses a mode once per tokenizer signature ('pieces' with the default template,
'segments' for other templates whose text splits at added tokens, else 'whole'), checks it on a
sample against one-call tokenization (falling back to 'whole' on a mismatch) and stores the
decision in ``tokenizations``; every later pass and every rebuilt prompt uses the stored mode.

A request the tokenizer's chat template raises for (e.g. "roles must alternate") is set aside:
it gets no chain, its message is stored in ``template_errors`` (so later passes neither render
it again nor forget it) and every report of the signature counts it; the pass goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kvtool import heap
from kvtool.errors import InputError
from kvtool.store import Connection, as_bigint
from kvtool.store.requests import (
    PromptRow,
    assign_parts,
    content_keys,
    count_untokenized,
    drop_parted,
    load_contents,
    part_prompts,
    untokenized_prompts,
)
from kvtool.store.tokenizations import (
    RenderFailure,
    Tokenization,
    get_tokenization,
    put_tokenization,
    render_failures,
    write_chains,
    write_render_failures,
)
from kvtool.tokenize.hashing import PrefixTrie, root_seed
from kvtool.tokenize.loader import TokenizerBundle
from kvtool.tokenize.plans import Pieces, encode_pieces, request_plans
from kvtool.tokenize.segments import SegmentEncoder
from kvtool.tokenize.template import DefaultTemplate, Template, make_template, render_prompt

CHAIN_VERSION = "c2"  # c2: hub templates see tool-call arguments as objects, as vLLM passes them
VERIFY_SAMPLE = 4  # requests checked against one-call tokenization per pass
VERIFY_POOL = 64  # ... chosen among this many first requests
VERIFY_MAX_CHARS = 200_000  # ... skipping huge prompts (the check would cost more than it tells)
PART_REQUESTS = 20_000  # a pass over more requests runs one family partition at a time
FAMILY_SHARE = 2  # a family above this many times a partition's fair share is split
TEMPLATE_ERROR_EXAMPLES = 3  # template failures a report lists with their message


@dataclass
class TokenizeReport:
    """What one tokenize pass did; ``tokens_encoded`` counts tokens the tokenizer really ran on.
    ``requests`` counts the requests this pass gave a chain; ``template_errors`` counts every
    request of the selection the chat template raised for (this pass or an earlier one), and
    ``template_error_examples`` lists the first few with their message."""

    signature: str
    template: str
    requests: int = 0
    logical_tokens: int = 0
    tokens_encoded: int = 0
    segments_encoded: int = 0
    verified: int = 0
    mode: str = "pieces"
    template_errors: int = 0
    template_error_examples: list[RenderFailure] = field(default_factory=list)

    def add(self, batch: ChainBatch) -> None:
        """Count a batch's chains."""
        self.requests += len(batch.chains)
        self.logical_tokens += int(pc.sum(batch.chains["n_tokens"]).as_py() or 0)

    def to_json(self) -> dict:
        out = dict(self.__dict__)
        out["template_error_examples"] = [
            {"request_id": f.request_id, "file": f.path, "line": f.line, "message": f.message}
            for f in self.template_error_examples
        ]
        return out


def _signature(bundle: TokenizerBundle, template: Template) -> str:
    return f"{bundle.signature}/{template.id}/{CHAIN_VERSION}"


def tokenizer_signature(bundle: TokenizerBundle) -> str:
    """The ``chains.tokenizer`` value this bundle writes."""
    return _signature(bundle, make_template(bundle))


def first_mode(bundle: TokenizerBundle, template: Template) -> str:
    """The mode a signature's first pass tries (then checks): 'pieces' for the default
    template, 'segments' where the text splits at added tokens, else 'whole'."""
    if isinstance(template, DefaultTemplate) and template.segmentable:
        return "pieces"
    return "segments" if bundle.encoder.splits else "whole"


def tokenize_requests(
    con: Connection,
    bundle: TokenizerBundle,
    file_ids: list[int] | None = None,
    progress: Callable[[int, int], None] | None = None,
    batch_size: int = 20_000,
    part_requests: int = PART_REQUESTS,
) -> TokenizeReport:
    """Write ``chains`` rows for every chat/completion request (of ``file_ids``) not yet tokenized
    with this bundle. Idempotent. More than ``part_requests`` requests are tokenized one
    partition at a time (``assign_parts``: by tenant and prefix family, as ``--engine ray``
    splits them), each with fresh caches, so memory follows the partition, not the log; the
    chains are the same (a request's chain depends on its own prompt only). The first pass of a
    signature checks a sample of requests against one-call tokenization (on a mismatch the
    whole pass falls back to one-call tokenization per distinct prompt) and stores the
    decision; later passes use it. A request the chat template raises for is stored in
    ``template_errors`` instead of ``chains`` and counted in the report; it never aborts the
    pass."""
    template = make_template(bundle)
    signature = _signature(bundle, template)
    report = TokenizeReport(signature=signature, template=template.id)
    total = count_untokenized(con, signature, file_ids)
    encoder = bundle.encoder
    stored = get_tokenization(con, signature)
    mode = stored.mode if stored is not None else first_mode(bundle, template)
    if stored is None and total:
        head = untokenized_prompts(con, signature, file_ids, limit=VERIFY_POOL)
        mode = checked_mode(con, head, template, encoder, mode, report)
        put_tokenization(
            con, Tokenization(signature, bundle.spec, template.id, mode, report.verified)
        )
    report.mode = mode
    tally = _Tally(total, progress)
    if 0 < total <= part_requests:
        rows = untokenized_prompts(con, signature, file_ids)
        _tokenize(con, rows, signature, template, encoder, mode, report, tally, batch_size)
    elif total:  # one family partition at a time, each with its own caches
        parts = assign_parts(con, signature, file_ids, -(-total // part_requests), FAMILY_SHARE)
        try:
            for part in parts:
                rows = part_prompts(con, part)
                _tokenize(con, rows, signature, template, encoder, mode, report, tally, batch_size)
                del rows
                encoder.forget()
                heap.trim()
        finally:
            drop_parted(con)
    report.template_errors, report.template_error_examples = render_failures(
        con, signature, file_ids, TEMPLATE_ERROR_EXAMPLES
    )
    return report


@dataclass
class ChainBatch:
    """The chains of one batch of requests: ``chains`` (req_id, n_tokens, last_block),
    the ``blocks`` first met in this batch (hash, parent, depth; a block met again in a later
    batch is not repeated), the template ``failures`` and how many ``rows`` the batch covered."""

    chains: pa.Table
    blocks: pa.Table
    failures: list[RenderFailure]
    rows: int


def chain_batches(
    rows: list[PromptRow],
    bodies_of: Callable[[set[int]], dict[int, object]],
    signature: str,
    template: Template,
    encoder: SegmentEncoder,
    mode: str,
    batch_size: int = 20_000,
) -> Iterator[ChainBatch]:
    """Chains of ``rows`` (in order) batch by batch; ``bodies_of`` gives the parsed contents of
    a set of keys. A request's chain depends on its own prompt only, never on the other rows:
    any split of the rows gives the same chains, and the union of the blocks."""
    pieces = Pieces(encoder)
    trie = PrefixTrie()
    conversations: set[tuple] = set()
    saved: dict[tuple, int] = {}
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        bodies = bodies_of(content_keys(chunk))
        plans = request_plans(chunk, bodies, template, pieces, mode, conversations)
        encode_pieces(pieces)
        req_ids: list[int] = []
        n_tokens: list[int] = []
        lasts: list[int | None] = []
        failures: list[RenderFailure] = []
        children = trie.children
        for row, plan in zip(chunk, plans, strict=True):
            if plan.error is not None:
                failures.append(RenderFailure(row.req_id, plan.error))
                continue
            req_ids.append(row.req_id)
            if plan.resume is None:
                node = trie.root(root_seed(signature, row.model, row.tenant))
            else:
                node = saved[plan.resume]
            for pid in plan.pieces:  # the known-path lookup is inlined: this loop is the hot one
                nxt = children.get((node, pid))
                node = nxt if nxt is not None else trie.extend(node, pid, pieces.tokens)
            if plan.save is not None:
                saved[plan.save] = node
            for pid in plan.tail:
                nxt = children.get((node, pid))
                node = nxt if nxt is not None else trie.extend(node, pid, pieces.tokens)
            n_tokens.append(trie.n[node])
            last = trie.last_block(node)
            lasts.append(None if last is None else as_bigint(last))
        chains = pa.table(
            {
                "req_id": pa.array(req_ids, pa.int64()),
                "n_tokens": pa.array(n_tokens, pa.int64()),
                "last_block": pa.array(lasts, pa.int64()),
            }
        )
        yield ChainBatch(chains, trie.take_blocks(), failures, len(chunk))


@dataclass
class _Tally:
    """Requests tokenized so far of ``total``, reported to ``progress``."""

    total: int
    progress: Callable[[int, int], None] | None
    done: int = 0

    def add(self, rows: int) -> None:
        self.done += rows
        if self.progress:
            self.progress(self.done, self.total)


def _tokenize(
    con: Connection,
    rows: list[PromptRow],
    signature: str,
    template: Template,
    encoder: SegmentEncoder,
    mode: str,
    report: TokenizeReport,
    tally: _Tally,
    batch_size: int,
) -> None:
    """Chains (or template failures) of ``rows``, written batch by batch."""
    for batch in chain_batches(
        rows, lambda keys: load_contents(con, keys), signature, template, encoder, mode, batch_size
    ):
        write_chains(con, signature, batch.chains, batch.blocks)
        write_render_failures(con, signature, batch.failures)
        report.add(batch)
        tally.add(batch.rows)
    report.tokens_encoded = encoder.tokens_encoded
    report.segments_encoded = encoder.segments_encoded


def checked_mode(
    con: Connection,
    sample: list[PromptRow],
    template: Template,
    encoder: SegmentEncoder,
    mode: str,
    report: TokenizeReport,
) -> str:
    """``mode`` if composed ids equal one-call ids on up to ``VERIFY_SAMPLE`` chat requests of
    ``sample`` (those of at most ``VERIFY_MAX_CHARS`` rendered characters), else 'whole'."""
    chats = [r for r in sample if r.kind == "chat"]
    if mode == "whole" or not chats:
        return mode
    bodies = load_contents(con, content_keys(chats))
    texts = {}
    for row in chats:
        tools = bodies[row.tools_key] if row.tools_key is not None else None
        try:
            text = render_prompt(template, [bodies[k] for k in row.message_keys], tools)
        except InputError:  # set aside by the pass itself; the sample takes the next one
            continue
        if len(text) <= VERIFY_MAX_CHARS:
            texts[row.req_id] = text
        if len(texts) == VERIFY_SAMPLE:
            break
    chats = [r for r in chats if r.req_id in texts]
    pieces = Pieces(encoder)
    lists = []
    for row in chats:  # each planned alone: a full piece list, no resume
        (plan,) = request_plans([row], bodies, template, pieces, mode, set())
        lists.append(plan.pieces + list(plan.tail))
    encode_pieces(pieces)
    for row, plist in zip(chats, lists, strict=True):
        composed = np.concatenate([pieces.tokens(p) for p in plist])
        if not encoder.verify(texts[row.req_id], composed):
            return "whole"
        report.verified += 1
    return mode
