"""Redaction: ingest logs, keep no prompt text (docs/redaction.md).

``redact_ingest`` ingests and tokenizes in memory and stores only what analysis needs: requests,
chains, blocks and fingerprints (``elements``: messages, tools, texts, heads; ``heads``: head
ranks; ``prefixes``: which pieces extend which). ``check_not_mixed`` and ``check_tokenizer``
keep a database either redacted or not, and redacted with one tokenizer; ``ingest_logs`` ingests
with or without redaction.
"""

from kvtool.tokenize.redact.ingest import (
    RedactReport,
    check_not_mixed,
    check_tokenizer,
    ingest_logs,
    redact_ingest,
    redacted_reason,
)

__all__ = [
    "RedactReport",
    "check_not_mixed",
    "check_tokenizer",
    "ingest_logs",
    "redact_ingest",
    "redacted_reason",
]
