"""Input formats: one module per source (``registry`` lists them), each turning one parsed log
record into a ``Normalized`` request (see ``base``)."""

from kvtool.ingest.formats.base import (
    Format,
    FormatOptions,
    Normalized,
    Skip,
    parse_timestamp,
)
from kvtool.ingest.formats.chat import check_message

__all__ = [
    "Format",
    "FormatOptions",
    "Normalized",
    "Skip",
    "check_message",
    "parse_timestamp",
]
