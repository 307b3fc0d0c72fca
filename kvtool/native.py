"""The C kernels (``kernels.c``, compiled when kvtool is installed), loaded with ctypes.

Loading takes about a millisecond and compiles nothing. ``library()`` is None when the install
had no C compiler (the extension is optional in setup.py); the engine then runs in Python and
the curve's kernel as plain Python, with a warning. Every call releases the GIL (ctypes does for
a ``CDLL``), so a thread can work beside it. The argument types below are the C signatures';
``ndpointer`` checks each array's dtype and contiguity before the call.
"""

from __future__ import annotations

import ctypes
import importlib.util
import warnings
from functools import cache

import numpy as np
from numpy.ctypeslib import ndpointer

# policy codes and state indices: the enums at the top of kernels.c
LRU, FIFO, LFU, ARC, S3FIFO, TTL, INFINITE, BELADY = range(8)
LFU_LISTS = 8  # LFU one request at a time: count lists instead of the heap
NODE_FIELDS = 6  # a block's int32 fields (NEXT, PREV, WHERE, FREQ, PINS, SEEN)
N_LISTS = 6  # NONE, MAIN, SECOND, GHOST, GHOST2, HELD
HEAD, TAIL, LEN = 0, 1, 2
(
    RESIDENT,
    PINNED,
    EVICTIONS,
    UNCACHED,
    CACHED,
    WITH_HIT,
    WARM_EVICTIONS,
    WARM_UNCACHED,
    CLOCK,
    HEAP_LEN,
    RUN_LEN,
    MARK,
    LOW,
    N_INTS,
) = range(14)
PREV_ARRIVAL, LAST_START, ARC_P, N_FLOATS = range(4)

_I64 = ctypes.c_int64
_F64 = ctypes.c_double
_I64S = ndpointer(np.int64, flags="C_CONTIGUOUS")
_I32S = ndpointer(np.int32, flags="C_CONTIGUOUS")
_F64S = ndpointer(np.float64, flags="C_CONTIGUOUS")

_SIGNATURES = {
    "kv_run_requests": (
        [_I64] * 5  # first, last, policy, room, capacity
        + [_F64, _I64, _I64]  # ttl (seconds), block_size, concurrency
        + [_F64, _F64, _I64, _I64]  # prefill_tps, decode_tps, count_from, n_req
        + [_I64S, _I64S, _I64S, _F64S, _I64S]  # offsets, stream, n_tokens, arrivals, outputs
        + [ctypes.c_void_p]  # next_use: NULL unless Belady
        + [_I32S, _I64S, _F64S, _I64S, _I64S, _F64S, _I64S, _I64S, _F64S]  # the state
        + [_F64S, _I64S],  # ttft, cached_per_request
        None,
    ),
    "kv_first_use_ids": ([_I64S, _I64, _I64S, _I64S], _I64),
    "kv_stack_maxima": (
        [_I64, _I64S, _I64S, _I64, _I64S, _I64, _I64S, _I64S, _I32S, _I32S],
        _I64,
    ),
    "kv_families": ([_I64, _I64S, _I64S, _I64, _I64, _I64S, _I64S, _I64S, _I64S, _I64S], None),
    "kv_draw": (
        [_I64, _I64S, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_uint64, _I64, _I64S],
        None,
    ),
    "kv_first_through": ([_I64, _I64S, _I64S, _I64S], None),
    "kv_reuse": ([_I64, _I64S, _I64S, _I64S, _I64, _I64, _I64S, _I64S, _I64S, _I64S], _I64),
    "kv_sequential_ttft": ([_I64, _F64S, _I64S, _I64S, _I64S, _F64, _F64, _F64S], None),
    "kv_ideal_hits": (
        [_I64, _I64S, _I64S, _I64S, _I64S, ndpointer(np.uint8, flags="C_CONTIGUOUS")]
        + [_I64S, _I64S],
        None,
    ),
}


@cache
def library() -> ctypes.CDLL | None:
    """The compiled kernels, or None (with a warning, once) when the install built none."""
    spec = importlib.util.find_spec("kvtool._kernels")
    if spec is None or spec.origin is None:
        warnings.warn(
            "kvtool was installed without its C kernels (no C compiler at install time): "
            "simulating with the Python engine, tens of times slower; reinstall with a C "
            "compiler present to get them",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    lib = ctypes.CDLL(spec.origin)
    for name, (args, result) in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes = args
        fn.restype = result
    return lib


def first_use_ids(stream: np.ndarray, n_ids: int) -> np.ndarray:
    """``stream`` (int64 ids below ``n_ids``) renumbered 0, 1, ... in order of first use: no
    id's meaning changes, and blocks used together sit together in the state arrays."""
    lib = library()
    assert lib is not None
    out = np.empty(len(stream), np.int64)
    lib.kv_first_use_ids(stream, len(stream), np.full(n_ids, -1, np.int64), out)
    return out
