"""Ingest: parse request logs, normalize them to requests, store them (see ``writer``)."""

from kvtool.ingest.formats import FORMATS, Normalized, RecordError
from kvtool.ingest.reader import UnusableInput
from kvtool.ingest.writer import FileReport, ingest_file, ingest_files

__all__ = [
    "FORMATS",
    "FileReport",
    "Normalized",
    "RecordError",
    "UnusableInput",
    "ingest_file",
    "ingest_files",
]
