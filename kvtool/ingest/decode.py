"""The decompressed content of one input, in bounded chunks: plain, gzip or zstd.

The codec comes from the first bytes (gzip ``1f 8b``, zstd ``28 b5 2f fd``), whatever the input
is called. Invariants:
- every chunk holds at most ``READ_CHUNK`` bytes whatever the compression ratio, so a
  decompression bomb cannot blow up memory (gzip through zlib's ``max_length``, zstd through
  pyarrow's streaming decompressor, which inflates in bounded blocks);
- a compressed stream that ends early or is corrupt never raises: ``chunks()`` stops and
  ``cut`` holds the reason; a read error of the input itself (``InputError``) propagates.
  gzip yields everything before the cut; zstd loses up to ``ZSTD_TAIL_READ`` bytes before it
  (pyarrow returns nothing from a read that reaches the cut, so reads near the end are small);
- concatenated gzip members (zero padding between them is ignored) and zstd frames are read in
  turn; a UTF-8 byte order mark at the very start of the content is dropped.
"""

from __future__ import annotations

import io
import zlib
from collections import deque
from collections.abc import Callable, Iterator

from kvtool.ingest.line import one_line

READ_CHUNK = 1 << 16  # bytes per read of the input, and the most output inflated at once
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
BOM = b"\xef\xbb\xbf"
GZIP_CUT = "Compressed file ended before the end-of-stream marker was reached"
ZSTD_TAIL_READ = 1 << 10  # zstd output read at once near the input's end: what a cut loses
ZSTD_AHEAD = 3 * READ_CHUNK  # compressed bytes read ahead, to know when the end is near


class _RawInput(io.RawIOBase):
    """The input as a file object for pyarrow: the bytes already read, then ``read()``, kept
    ``ZSTD_AHEAD`` bytes ahead of what pyarrow took; ``ended`` once the input's end was read
    (what pyarrow has not taken yet is then at most ``ZSTD_AHEAD`` bytes)."""

    def __init__(self, first: bytes, read: Callable[[], bytes]) -> None:
        super().__init__()
        self._chunks: deque[bytes] = deque([first] if first else [])
        self._ahead = len(first)
        self._read = read
        self.ended = False
        self._fill()

    def _fill(self) -> None:
        while not self.ended and self._ahead < ZSTD_AHEAD:
            data = self._read()
            if not data:
                self.ended = True
                return
            self._chunks.append(data)
            self._ahead += len(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if not self._chunks:
            return 0
        chunk = self._chunks[0]
        n = min(len(buffer), len(chunk))
        buffer[:n] = chunk[:n]
        if n == len(chunk):
            self._chunks.popleft()
        else:
            self._chunks[0] = chunk[n:]
        self._ahead -= n
        self._fill()
        return n


class Decoded:
    """The decompressed chunks of one input: ``peek`` the start, then iterate ``chunks()``
    once; ``cut`` is the reason a compressed stream stopped early (None: it ended cleanly)."""

    def __init__(self, first: bytes, read: Callable[[], bytes]) -> None:
        if first[:2] == GZIP_MAGIC:
            self.codec: str | None = "gzip"
        elif first[:4] == ZSTD_MAGIC:
            self.codec = "zstd"
        else:
            self.codec = None
        self.cut: str | None = None
        self._first = first
        self._read = read
        self._head: list[bytes] = []
        raw = {None: self._plain, "gzip": self._gunzip, "zstd": self._unzstd}[self.codec]()
        self._it = _without_bom(raw)

    def peek(self, limit: int) -> bytes:
        """The content up to its first non-blank line's newline (or ``limit`` bytes, or all of
        it), without consuming it: ``chunks()`` yields it again."""
        data = b"".join(self._head)
        while len(data) < limit and b"\n" not in data.lstrip():
            chunk = next(self._it, None)
            if chunk is None:
                break
            self._head.append(chunk)
            data += chunk
        return data

    def chunks(self) -> Iterator[bytes]:
        """The content, in chunks of at most ``READ_CHUNK`` bytes (peeked ones first)."""
        while self._head:
            yield self._head.pop(0)
        yield from self._it

    def _plain(self) -> Iterator[bytes]:
        data = self._first
        while data:
            yield data
            data = self._read()

    def _gunzip(self) -> Iterator[bytes]:
        d = zlib.decompressobj(31)
        data = self._first
        started = True
        while True:
            if not data:
                data = self._read()
                if not data:
                    if started:
                        self.cut = GZIP_CUT
                    return
            try:
                out = d.decompress(data, READ_CHUNK)
                while True:
                    if out:
                        yield out
                    if not d.unconsumed_tail:
                        break
                    out = d.decompress(d.unconsumed_tail, READ_CHUNK)
            except zlib.error as exc:
                self.cut = one_line(exc)
                return
            if d.eof:  # the next member, if any
                data = d.unused_data.lstrip(b"\x00")
                d = zlib.decompressobj(31)
                started = bool(data)
            else:
                data = b""
                started = True

    def _unzstd(self) -> Iterator[bytes]:
        import pyarrow as pa

        raw = _RawInput(self._first, self._read)
        stream = pa.CompressedInputStream(pa.PythonFile(raw, mode="r"), "zstd")
        tail: list[bytes] = []  # small reads near the end, joined into chunks
        size = 0
        while True:
            try:  # a read that reaches a cut returns nothing: keep them small near the end
                out = stream.read(ZSTD_TAIL_READ if raw.ended else READ_CHUNK)
            except (OSError, pa.ArrowException) as exc:  # truncated or corrupt frames
                self.cut = one_line(exc)
                break
            if not out:
                break
            if not raw.ended:
                yield out
                continue
            tail.append(out)
            size += len(out)
            if size >= READ_CHUNK:
                yield b"".join(tail)
                tail, size = [], 0
        if tail:
            yield b"".join(tail)


def _without_bom(chunks: Iterator[bytes]) -> Iterator[bytes]:
    for chunk in chunks:
        if chunk:
            rest = chunk[3:] if chunk.startswith(BOM) else chunk
            if rest:
                yield rest
            break
    yield from chunks
