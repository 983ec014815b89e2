"""An upload's source cut into the parts of an S3 multipart upload: read into buffers of the
right size however short the source's reads are, so that the protocol code in
:mod:`vdir.backends.s3` deals only in whole parts."""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO

from vdir.backends.s3_read import READ_PIECE


def _read_part(src: IO[bytes], n: int) -> bytearray:
    """Up to ``n`` bytes of ``src`` (fewer only at its end) into one buffer, however short its
    reads are, without the joins and copies of reading pieces (parts are big)."""
    buf = bytearray(n)
    got = 0
    readinto = getattr(src, "readinto", None)
    with memoryview(buf) as view:
        while got < n:
            if readinto is not None:
                k = readinto(view[got:]) or 0
            else:
                data = src.read(n - got)
                k = len(data)
                view[got:got + k] = data
            if k == 0:
                break
            got += k
    if got < n:
        del buf[got:]
    return buf


def read_head(src: IO[bytes], limit: int, size: int | None) -> bytes | bytearray:
    """The first ``limit`` bytes of ``src`` (fewer if it ends first), in a buffer no larger than
    needed: a small object does not pay for a whole part's buffer."""
    if size is not None and size < limit:
        head = _read_part(src, size + 1)  # one byte more shows a source longer than announced
        if len(head) > size:
            head += _read_part(src, limit - len(head))
        return head
    if size is not None:
        return _read_part(src, limit)
    chunks: list[bytes] = []
    got = 0
    while got < limit:
        data = src.read(min(limit - got, READ_PIECE))
        if not data:
            break
        chunks.append(data)
        got += len(data)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def split_parts(head: bytes | bytearray, src: IO[bytes], part_size: int) -> Iterator[bytes | bytearray]:
    """Parts of ``part_size`` bytes (the last may be shorter): ``head`` first, then ``src``.
    With the default settings ``head`` is exactly the first part and is sent as it is."""
    rest: bytes | bytearray = b""
    if len(head) == part_size:
        yield head
    else:
        whole = len(head) // part_size * part_size
        for offset in range(0, whole, part_size):
            yield head[offset:offset + part_size]
        rest = head[whole:]
    del head
    while True:
        data = _read_part(src, part_size - len(rest))
        if rest:
            data[:0] = rest
            rest = b""
        if not data:
            return
        yield data
        if len(data) < part_size:
            return
