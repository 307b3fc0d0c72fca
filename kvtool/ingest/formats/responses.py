"""(being written) responses records."""

from __future__ import annotations

from kvtool.ingest.formats.base import Format

FORMATS: tuple[Format, ...] = ()
