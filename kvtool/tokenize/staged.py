"""The tokenize pass split into partitions that workers run (``kvtool --engine ray``).

The driver decides the mode exactly as a local pass does (the stored decision, else a check on
the first requests) and stores it, then writes the untokenized requests as Parquet, one file per
*partition* (``kvtool.store.requests.partition_untokenized``: by tenant and prefix family), with
the contents each partition refers to. A worker (``tokenize_partition``) loads the tokenizer
from its spec, checks that it yields the driver's signature, runs the normal chain loop
(``chain_batches``) over its partition and writes chains, blocks and template failures as
Parquet. The driver merges them (``merge_staged_chains``).

Exactness: a request's chain depends on its own prompt only (``chain_batches``), so chains and
template failures equal a local pass's whatever the partitioning; blocks are keyed by their
chain hash, so a block that requests of two partitions share (the same first 16 tokens under
different first messages) is produced by both and written once. The partitioning only decides
how much tokenizer work is repeated: every turn of a conversation lands in one partition, so
its resent history is walked from the saved node, as locally.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

import orjson
import pyarrow as pa

from kvtool.errors import InputError
from kvtool.progress import Progress
from kvtool.store import Connection
from kvtool.store.parquet import join, read_dataset, remove, write_batches
from kvtool.store.requests import (
    CONTENT_SCHEMA,
    PROMPT_SCHEMA,
    drop_parted,
    parted_contents,
    parted_prompts,
    partition_untokenized,
    prompt_rows,
    untokenized_prompts,
)
from kvtool.store.tokenizations import (
    BLOCK_SCHEMA,
    CHAIN_SCHEMA,
    FAILURE_SCHEMA,
    Tokenization,
    get_tokenization,
    merge_staged_chains,
    put_tokenization,
    render_failures,
)
from kvtool.tokenize.chains import (
    FAMILY_SHARE,
    TEMPLATE_ERROR_EXAMPLES,
    VERIFY_POOL,
    TokenizeReport,
    chain_batches,
    checked_mode,
    first_mode,
    tokenizer_signature,
)
from kvtool.tokenize.loader import TokenizerBundle, load_tokenizer
from kvtool.tokenize.template import make_template

BATCH_ROWS = 65_536  # rows per Parquet batch the driver writes


class Distributor(Protocol):
    """Where partitions run: ``location`` (staging that workers and driver share), ``parts``
    (how many partitions to cut) and ``map`` (a function over items, run on the workers,
    yielding its results as they finish, in any order)."""

    location: str
    parts: int

    def map(self, fn: Callable[[dict], dict], items: Iterable[dict]) -> Iterator[dict]: ...


@dataclass(frozen=True)
class PartitionReport:
    """What one worker's partition did."""

    part: int
    requests: int
    logical_tokens: int
    tokens_encoded: int
    segments_encoded: int

    def to_item(self) -> dict:
        return dict(self.__dict__)


@functools.lru_cache(maxsize=4)
def _bundle(spec: str) -> TokenizerBundle:
    """A worker loads each tokenizer once per process."""
    return load_tokenizer(spec)


def tokenize_partition(item: dict) -> dict:
    """Run on a worker: the chains of partition ``item['part']`` of ``item['location']``,
    tokenized with ``item['spec']`` in ``item['mode']``; returns a ``PartitionReport`` as a
    dict. ``InputError`` when the worker's tokenizer is not the driver's (another file under
    the same spec)."""
    bundle = _bundle(item["spec"])
    template = make_template(bundle)
    signature = tokenizer_signature(bundle)
    if signature != item["signature"]:
        raise InputError(
            f"tokenizer {item['spec']} on this worker is {signature}, the driver's is "
            f"{item['signature']}: give every node the same tokenizer files"
        )
    part, location = item["part"], item["location"]
    rows = prompt_rows(
        read_dataset(join(location, "prompts", f"{part}.parquet"), PROMPT_SCHEMA).to_table()
    )
    contents = read_dataset(join(location, "contents", f"{part}.parquet"), CONTENT_SCHEMA)
    table = contents.to_table()
    bodies = {
        k: orjson.loads(b)
        for k, b in zip(table["key"].to_pylist(), table["body"].to_pylist(), strict=True)
    }
    del table
    encoder = bundle.encoder
    tokens0, segments0 = encoder.tokens_encoded, encoder.segments_encoded
    counted = TokenizeReport(signature=signature, template=template.id)
    for i, batch in enumerate(
        chain_batches(rows, lambda keys: bodies, signature, template, encoder, item["mode"])
    ):
        out = f"{part}.{i}.parquet"
        write_batches(join(location, "chains", out), CHAIN_SCHEMA, [batch.chains])
        write_batches(join(location, "blocks", out), BLOCK_SCHEMA, [batch.blocks])
        failures = pa.table(
            {
                "req_id": pa.array([f.req_id for f in batch.failures], pa.int64()),
                "message": pa.array([f.message for f in batch.failures], pa.string()),
            }
        )
        write_batches(join(location, "failures", out), FAILURE_SCHEMA, [failures])
        counted.add(batch)
    return PartitionReport(
        part,
        counted.requests,
        counted.logical_tokens,
        encoder.tokens_encoded - tokens0,
        encoder.segments_encoded - segments0,
    ).to_item()


def tokenize_distributed(
    con: Connection,
    bundle: TokenizerBundle,
    file_ids: list[int] | None,
    distributor: Distributor,
    progress: Progress,
) -> TokenizeReport:
    """``tokenize_requests`` with the chain loop run on ``distributor``'s workers (see the module
    docstring): the same rows in ``chains``, ``blocks`` and ``template_errors``, and the same
    report, except ``tokens_encoded`` and ``segments_encoded``: the driver's mode check plus
    every worker's tokenizer work (a piece two partitions share is encoded by both)."""
    template = make_template(bundle)
    signature = tokenizer_signature(bundle)
    report = TokenizeReport(signature=signature, template=template.id)
    stored = get_tokenization(con, signature)
    head = untokenized_prompts(con, signature, file_ids, limit=VERIFY_POOL)
    if stored is not None:
        mode = stored.mode
    else:
        mode = first_mode(bundle, template)
        if head:
            before = bundle.encoder.tokens_encoded, bundle.encoder.segments_encoded
            mode = checked_mode(con, head, template, bundle.encoder, mode, report)
            report.tokens_encoded += bundle.encoder.tokens_encoded - before[0]
            report.segments_encoded += bundle.encoder.segments_encoded - before[1]
            put_tokenization(
                con, Tokenization(signature, bundle.spec, template.id, mode, report.verified)
            )
    report.mode = mode
    if head:
        _run_partitions(con, bundle, signature, mode, file_ids, distributor, report, progress)
    report.template_errors, report.template_error_examples = render_failures(
        con, signature, file_ids, TEMPLATE_ERROR_EXAMPLES
    )
    return report


def _run_partitions(
    con: Connection,
    bundle: TokenizerBundle,
    signature: str,
    mode: str,
    file_ids: list[int] | None,
    distributor: Distributor,
    report: TokenizeReport,
    progress: Progress,
) -> None:
    location = join(distributor.location, "tokenize")
    remove(location)
    try:
        parts = partition_untokenized(con, signature, file_ids, distributor.parts, FAMILY_SHARE)
        try:
            for part in parts:
                write_batches(
                    join(location, "prompts", f"{part}.parquet"),
                    PROMPT_SCHEMA,
                    parted_prompts(con, part, BATCH_ROWS),
                )
                write_batches(
                    join(location, "contents", f"{part}.parquet"),
                    CONTENT_SCHEMA,
                    parted_contents(con, part, BATCH_ROWS),
                )
        finally:
            drop_parted(con)
        items = [
            {
                "part": p,
                "location": location,
                "spec": bundle.spec,
                "signature": signature,
                "mode": mode,
            }
            for p in parts
        ]
        progress.stage("tokenize (ray)", len(items))
        for result in distributor.map(tokenize_partition, items):
            done = PartitionReport(**result)
            report.requests += done.requests
            report.logical_tokens += done.logical_tokens
            report.tokens_encoded += done.tokens_encoded
            report.segments_encoded += done.segments_encoded
            progress.advance(1)
        merge_staged_chains(
            con,
            signature,
            read_dataset(join(location, "chains"), CHAIN_SCHEMA),
            read_dataset(join(location, "blocks"), BLOCK_SCHEMA),
            read_dataset(join(location, "failures"), FAILURE_SCHEMA),
        )
    finally:
        remove(location)
