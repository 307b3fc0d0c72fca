"""The distinct heads of one redacted ingest, ranked, so that head similarity survives the text.

Break analysis matches a new conversation to the earlier request whose head text shares the
longest prefix, then suffix (``kvtool.analyze.breaks``): it needs the heads' text order and
common prefix and suffix lengths. Sorted strings give both without the text: the common prefix of
the heads ranked i < j is the minimum of the common prefixes of neighbours ranked i..j-1, and
likewise for suffixes in the order of the reversed texts. So each distinct head is kept as its two
ranks, its length and the common prefix (suffix) with its successor in each order.
"""

from __future__ import annotations

import pyarrow as pa

from kvtool.textscan import lcp
from kvtool.tokenize.redact.elements import text_id


def _ranked(texts: list[str]) -> tuple[dict[str, int], list[int]]:
    order = sorted(texts)
    nxt = [lcp(order[r], order[r + 1]) for r in range(len(order) - 1)] + [0]
    return {t: r for r, t in enumerate(order)}, nxt


def head_table(batch: int, heads: set[str]) -> pa.Table:
    """The ``fp_heads`` rows of one batch's distinct head texts."""
    texts = sorted(heads)
    rank, lcp_next = _ranked(texts)
    reversed_texts = {t[::-1]: t for t in texts}
    rank_rev_of, lcs_next = _ranked(list(reversed_texts))
    rank_rev = {reversed_texts[r]: k for r, k in rank_rev_of.items()}
    return pa.table(
        {
            "batch": pa.array([batch] * len(texts), pa.int32()),
            "head": pa.array([text_id(t) for t in texts], pa.int64()),
            "length": pa.array([len(t) for t in texts], pa.int64()),
            "rank": pa.array([rank[t] for t in texts], pa.int32()),
            "lcp_next": pa.array([lcp_next[rank[t]] for t in texts], pa.int64()),
            "rank_rev": pa.array([rank_rev[t] for t in texts], pa.int32()),
            "lcs_next": pa.array([lcs_next[rank_rev[t]] for t in texts], pa.int64()),
        }
    )
