"""Arrow columns as numpy arrays, read from their buffers.

pyarrow's ``to_numpy`` (and ``pa.array``) import pandas on first use, a third of a second that
commands which never touch pandas should not pay; these readers need numpy alone. A result is a
read-only view of the Arrow buffer when no conversion is needed (no nulls, the same dtype), else
a new array.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

_NUMPY_TYPES = {
    pa.int8(): np.int8,
    pa.int16(): np.int16,
    pa.int32(): np.int32,
    pa.int64(): np.int64,
    pa.uint64(): np.uint64,
    pa.float32(): np.float32,
    pa.float64(): np.float64,
}


def _one_array(col: pa.ChunkedArray | pa.Array) -> pa.Array | None:
    """The column as one array; None when it is empty."""
    if len(col) == 0:
        return None
    if isinstance(col, pa.Array):
        return col
    return col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()


def _bits(buffer: pa.Buffer, offset: int, n: int) -> np.ndarray:
    """Bits ``offset..offset+n`` of an Arrow bitmap (validity or boolean data) as bools."""
    packed = np.frombuffer(buffer, np.uint8)
    return np.unpackbits(packed, bitorder="little", count=offset + n)[offset:].astype(bool)


def valid(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Per element, whether it is not null."""
    arr = _one_array(col)
    if arr is None:
        return np.zeros(0, bool)
    if arr.null_count == 0:
        return np.ones(len(arr), bool)
    return _bits(arr.buffers()[0], arr.offset, len(arr))


def numbers(col: pa.ChunkedArray | pa.Array, dtype: type, null: float = 0) -> np.ndarray:
    """A numeric or boolean column as ``dtype``, nulls as ``null`` (NaN for a float ``dtype``
    when asked). Reads the Arrow buffers: a view without copying when no conversion is needed
    (read-only then). pyarrow's ``to_numpy`` would import pandas (a third of a second)."""
    arr = _one_array(col)
    if arr is None:
        return np.zeros(0, dtype)
    n = len(arr)
    if pa.types.is_boolean(arr.type):
        raw = _bits(arr.buffers()[1], arr.offset, n)
    else:
        kind = np.dtype(_NUMPY_TYPES[arr.type])
        raw = np.frombuffer(arr.buffers()[1], kind, n, arr.offset * kind.itemsize)
    out = raw.astype(dtype, copy=False)
    if arr.null_count:
        out = out.copy()
        out[~valid(arr)] = null
    return out


def list_parts(col: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(offsets from 0, int64 values) of a list column without nulls inside."""
    arr = _one_array(col)
    if arr is None:
        return np.zeros(1, np.int64), np.zeros(0, np.int64)
    width = 8 if pa.types.is_large_list(arr.type) else 4
    offsets = np.frombuffer(arr.buffers()[1], f"<i{width}", len(arr) + 1, arr.offset * width)
    offsets = offsets.astype(np.int64)
    values = numbers(arr.values, np.int64)[offsets[0] : offsets[-1]]
    return offsets - offsets[0], values


def int64_array(values: np.ndarray) -> pa.Array:
    """``values`` as an Arrow int64 array sharing their memory. ``pa.array`` of a numpy array
    would import pandas to check what it was given (0.3 s a command that never needs it)."""
    values = np.ascontiguousarray(values, np.int64)
    return pa.Array.from_buffers(pa.int64(), len(values), [None, pa.py_buffer(values)])
