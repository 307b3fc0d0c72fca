"""Returning the memory a stage freed to the operating system.

A stage that makes and drops millions of small objects (ingest's parsed records, the tokenize
pass's pieces and trie) leaves glibc's heap holding pages it no longer uses. Large NumPy arrays
are mapped apart from that heap, so the next stage cannot reuse those pages: they stay in the
process's resident memory and add to its peak. ``trim`` asks glibc to give them back
(``malloc_trim``, as Dask does for its workers' unmanaged memory). Elsewhere (macOS, musl) it
does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable
from functools import cache


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


def trim() -> bool:
    """Give the heap's free pages back to the system; whether glibc did (False where there is
    no ``malloc_trim``, or nothing was free)."""
    fn = _malloc_trim()
    return bool(fn(0)) if fn is not None else False
