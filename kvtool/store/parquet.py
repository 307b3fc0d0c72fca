"""Parquet in a staging area: what distributed workers write and the store merges.

A staging location is a local path or a URL that ``pyarrow.fs`` resolves (``s3://``, ``gs://``,
``abfs://``, ``file://``); workers on other machines need it on storage they share with the
driver. Writing streams record batches; reading hands DuckDB a ``pyarrow.dataset`` that it scans
lazily, so neither side holds a whole table.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from kvtool.errors import InputError

if TYPE_CHECKING:  # imported where used: pyarrow.dataset alone takes 0.4 s to import
    import pyarrow.dataset as pads
    import pyarrow.fs as pafs


def is_url(location: str | Path) -> bool:
    """Whether ``location`` names an object by URL (a string with ``s3://``, ``file://``...)
    rather than a path (a ``Path`` never is one: it would have lost a slash)."""
    return isinstance(location, str) and "://" in location


def resolve(location: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem of ``location`` and the path inside it; ``InputError`` when pyarrow does
    not know the scheme or cannot reach it."""
    import pyarrow.fs as pafs

    if not is_url(location):
        return pafs.LocalFileSystem(), location
    try:
        return pafs.FileSystem.from_uri(location)
    except (pa.ArrowException, ValueError, OSError) as exc:
        raise InputError(f"{location}: cannot open: {exc}") from None


def join(location: str, *parts: str) -> str:
    """``location`` with ``parts`` appended, as a path or URL."""
    return "/".join([location.rstrip("/"), *parts])


def write_batches(
    location: str, schema: pa.Schema, batches: Iterable[pa.RecordBatch | pa.Table]
) -> int:
    """Write ``batches`` as one Parquet file at ``location`` (parents created); returns rows."""
    import pyarrow.parquet as pq

    fs, path = resolve(location)
    parent = path.rsplit("/", 1)[0]
    if parent and parent != path:
        fs.create_dir(parent, recursive=True)
    rows = 0
    with pq.ParquetWriter(path, schema, filesystem=fs, compression="zstd") as writer:
        for batch in batches:
            if len(batch):
                if isinstance(batch, pa.RecordBatch):
                    writer.write_batch(batch)
                else:
                    writer.write_table(batch)
                rows += len(batch)
    return rows


def read_dataset(location: str, schema: pa.Schema) -> pads.Dataset:
    """The Parquet files under ``location`` (a file or a directory, recursively) as one
    dataset of ``schema``; empty when nothing is there."""
    import pyarrow.dataset as pads
    import pyarrow.fs as pafs

    fs, path = resolve(location)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        return pads.dataset(pa.table({f.name: pa.array([], f.type) for f in schema}))
    return pads.dataset(path, schema=schema, format="parquet", filesystem=fs)


def remove(location: str) -> None:
    """Delete ``location`` (a directory tree or file) if it exists."""
    import pyarrow.fs as pafs

    fs, path = resolve(location)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.Directory:
        fs.delete_dir(path)
    elif info.type == pafs.FileType.File:
        fs.delete_file(path)
