"""Ingest: parse request logs, normalize them to requests, store them (see ``writer``)."""

from kvtool.ingest.formats import FORMATS, Normalized, check_ingest_options
from kvtool.ingest.writer import FileReport, ingest_file, ingest_files

__all__ = [
    "FORMATS",
    "FileReport",
    "Normalized",
    "check_ingest_options",
    "ingest_file",
    "ingest_files",
]
