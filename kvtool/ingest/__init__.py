"""Ingest: parse request logs, normalize them to requests, store them (see ``writer``)."""

from kvtool.ingest.formats import Normalized
from kvtool.ingest.formats.registry import FORMATS, check_ingest_options
from kvtool.ingest.reader import DEFAULT_MAX_LINE_BYTES, check_max_line_bytes
from kvtool.ingest.writer import FileReport, ingest_file, ingest_files, ingest_paths

__all__ = [
    "DEFAULT_MAX_LINE_BYTES",
    "FORMATS",
    "FileReport",
    "Normalized",
    "check_ingest_options",
    "check_max_line_bytes",
    "ingest_file",
    "ingest_files",
    "ingest_paths",
]
