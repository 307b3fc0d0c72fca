"""Input paths as given (files, directories, globs, ``-``) expanded to the files to read.

- ``-`` (stdin) and a path that exists and is not a directory (a file, a FIFO, a device) are
  kept as given; so is a missing path without glob characters (opening it says "no such file");
- a directory stands for the log files under it, recursively, sorted by path: names ending in
  one of ``LOG_SUFFIXES`` (.jsonl .ndjson .json .csv, each also with .gz or .zst, and
  .parquet). Everything else is left out (READMEs, checksums, ``.log``/``.txt``: name those
  explicitly), as are hidden files and directories (a name starting with ``.``) and directories
  reached through a symbolic link;
- a path that does not exist and holds a glob character (``*``, ``?``, ``[``) is a glob: its
  matches, sorted (``**`` matches any depth; hidden names only when the pattern spells the dot).
  Every matched file is kept, whatever its name; a matched directory expands as above;
- a directory or glob that yields no file is an ``InputError`` naming it, before anything is
  read;
- a URL (``scheme://...``: ``s3://``, ``gs://``, ``file://``, what ``pyarrow.fs`` opens) names
  one object and is kept as the string given (never a glob).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from pathlib import Path

from kvtool.errors import InputError
from kvtool.ingest.reader import STDIN
from kvtool.store.parquet import is_url

_TEXT = (".jsonl", ".ndjson", ".json", ".csv")
LOG_SUFFIXES = (*_TEXT, *(s + c for s in _TEXT for c in (".gz", ".zst")), ".parquet")
GLOB_CHARS = frozenset("*?[")


def is_log_name(name: str) -> bool:
    """Whether a file name inside a directory is read as a log (see the module docstring)."""
    return not name.startswith(".") and name.lower().endswith(LOG_SUFFIXES)


def _walk(root: Path) -> list[Path]:
    """The log files under ``root``, sorted; ``InputError`` when a directory cannot be read."""

    def fail(exc: OSError) -> None:
        raise InputError(f"{exc.filename}: cannot read the directory: {exc.strerror}")

    found: list[Path] = []
    for top, dirs, files in os.walk(root, onerror=fail):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found.extend(Path(top, f) for f in files if is_log_name(f) and Path(top, f).is_file())
    return sorted(found)  # by path components: a/sub/x before a/y


def _directory(path: Path) -> list[Path]:
    found = _walk(path)
    if not found:
        raise InputError(
            f"{path}: no log files in the directory (looked for {' '.join(LOG_SUFFIXES)})"
        )
    return found


def _glob(pattern: str) -> list[Path]:
    found: list[Path] = []
    for match in sorted(glob.glob(pattern, recursive=True)):
        path = Path(match)
        if path.is_dir():
            found.extend(_walk(path))
        else:
            found.append(path)
    if not found:
        raise InputError(f"{pattern}: no files match")
    return found


def expand_paths(paths: Iterable[str | Path]) -> list[Path | str]:
    """The files to read for ``paths``, in order (see the module docstring)."""
    out: list[Path | str] = []
    for given in paths:
        text = str(given)
        if is_url(given):
            out.append(text)
            continue
        path = Path(given)
        if text == STDIN:
            out.append(path)
        elif path.is_dir():
            out.extend(_directory(path))
        elif path.exists() or path.is_symlink() or not GLOB_CHARS & set(text):
            out.append(path)
        else:
            out.extend(_glob(text))
    return out
