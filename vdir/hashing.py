"""Content hashing: xxh3-128, computed while data streams (never a second read), and the
per-block hashes that let a ranged read verify only the blocks it returns.

Block hashes
------------
A file of ``size`` bytes is cut into blocks of ``2**k`` bytes, ``k`` the smallest with
``k >= 20`` (1 MiB) and at most :data:`MAX_BLOCKS` (4096) blocks: 1 MiB blocks up to 4 GiB,
2 MiB up to 8 GiB, and so on; the last block may be short.  Each block's digest is the
xxh3-64 of the concatenated xxh3-64 digests of its 1 MiB *leaves* (8 bytes each, big-endian).
Hashing leaves first means a writer that does not know the size in advance can still hash
while the data streams and choose the block size at the end; checking a block costs one pass
over its bytes.

The catalog stores the result as one opaque string, :attr:`vdir.catalog.base.Entry.blocks`:
``"<k>:<base64 of the concatenated 8-byte block digests>"`` — at most 32 KiB of digests
(about 43 KiB of text) per file, whatever its size.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import IO

import xxhash

ALGORITHM = "xxh3-128"

LEAF_LOG2 = 20
LEAF = 1 << LEAF_LOG2
"""Bytes per leaf, and the smallest block."""
MAX_BLOCKS = 4096
"""A file has at most this many blocks: the block size doubles until it fits."""
_DIGEST = 8


def block_log2(size: int) -> int:
    """log2 of the block size for a file of ``size`` bytes (see the module docstring)."""
    k = LEAF_LOG2
    while (size + (1 << k) - 1) >> k > MAX_BLOCKS:
        k += 1
    return k


def _leaf_digests(data: bytes | bytearray | memoryview) -> bytes:
    view = memoryview(data).cast("B")
    return b"".join(xxhash.xxh3_64_digest(view[i : i + LEAF]) for i in range(0, len(view), LEAF))


@dataclass(frozen=True)
class BlockHashes:
    """Parsed per-block hashes of one file's content."""

    log2: int
    digests: bytes
    size: int

    @property
    def block_size(self) -> int:
        return 1 << self.log2

    @property
    def count(self) -> int:
        return len(self.digests) // _DIGEST

    def span(self, index: int) -> tuple[int, int]:
        """``(start, length)`` of block ``index``."""
        start = index << self.log2
        return start, min(self.block_size, self.size - start)

    def verify(self, index: int, data: bytes | bytearray | memoryview) -> bool:
        """True if ``data`` is exactly block ``index``."""
        if not 0 <= index < self.count or len(data) != self.span(index)[1]:
            return False
        expected = self.digests[index * _DIGEST : (index + 1) * _DIGEST]
        return xxhash.xxh3_64_digest(_leaf_digests(data)) == expected

    def encode(self) -> str:
        return f"{self.log2}:{base64.b64encode(self.digests).decode('ascii')}"

    @classmethod
    def parse(cls, text: str | None, size: int) -> BlockHashes | None:
        """The hashes in ``text`` for a file of ``size`` bytes; ``None`` if absent, malformed,
        or not made for that size (then the caller treats the entry as having none)."""
        if not text:
            return None
        head, _, body = text.partition(":")
        try:
            log2 = int(head)
            digests = base64.b64decode(body.encode("ascii"), validate=True)
        except (ValueError, binascii.Error):
            return None
        if log2 != block_log2(size) or len(digests) != _DIGEST * ((size + (1 << log2) - 1) >> log2):
            return None
        return cls(log2, digests, size)


class BlockHasher:
    """Per-block hashes of a stream fed in pieces of any size (see the module docstring)."""

    def __init__(self) -> None:
        self._leaves = bytearray()
        self._leaf = xxhash.xxh3_64()
        self._fill = 0
        self.size = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        self.size += len(view)
        i = 0
        if self._fill:
            take = min(LEAF - self._fill, len(view))
            self._leaf.update(view[:take])
            self._fill += take
            i = take
            if self._fill == LEAF:
                self._leaves += self._leaf.digest()
                self._leaf.reset()
                self._fill = 0
        while len(view) - i >= LEAF:
            self._leaves += xxhash.xxh3_64_digest(view[i : i + LEAF])
            i += LEAF
        if i < len(view):
            self._leaf.update(view[i:])
            self._fill += len(view) - i

    def result(self) -> BlockHashes:
        """The hashes of everything fed so far (feeding may go on afterwards)."""
        leaves = bytes(self._leaves) + (self._leaf.digest() if self._fill else b"")
        log2 = block_log2(self.size)
        per = _DIGEST << (log2 - LEAF_LOG2)
        digests = b"".join(xxhash.xxh3_64_digest(leaves[i : i + per]) for i in range(0, len(leaves), per))
        return BlockHashes(log2, digests, self.size)

    def encoded(self) -> str:
        return self.result().encode()


def block_hashes(data: bytes) -> str:
    """Encoded per-block hashes of ``data``."""
    hasher = BlockHasher()
    hasher.update(data)
    return hasher.encoded()


def new_hasher() -> xxhash.xxh3_128:
    return xxhash.xxh3_128()


def hash_bytes(data: bytes) -> str:
    return xxhash.xxh3_128_hexdigest(data)


class HashingReader:
    """Wrap a readable binary stream; hash and count every byte that passes through ``read``.

    The backend reads from this wrapper while uploading, so the hash is ready the moment the
    upload finishes, at no extra read of the source.
    """

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.hasher = new_hasher()
        self.blocks = BlockHasher()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        if data:
            self.hasher.update(data)
            self.blocks.update(data)
            self.size += len(data)
        return data

    def readinto(self, buf: bytearray | memoryview) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> HashingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def hexdigest(self) -> str:
        return self.hasher.hexdigest()

    @property
    def block_hashes(self) -> str:
        """Encoded per-block hashes of what was read (for :attr:`Entry.blocks`)."""
        return self.blocks.encoded()


def hash_stream(stream: IO[bytes], chunk: int = 8 * 1024 * 1024) -> tuple[str, int]:
    """(hash, size) of everything ``stream`` yields."""
    h = new_hasher()
    size = 0
    while True:
        data = stream.read(chunk)
        if not data:
            return h.hexdigest(), size
        h.update(data)
        size += len(data)


def hash_stream_blocks(stream: IO[bytes], chunk: int = 8 * 1024 * 1024) -> tuple[str, int, str]:
    """(hash, size, encoded block hashes) of everything ``stream`` yields, in one pass."""
    h = new_hasher()
    blocks = BlockHasher()
    while True:
        data = stream.read(chunk)
        if not data:
            return h.hexdigest(), blocks.size, blocks.encoded()
        h.update(data)
        blocks.update(data)
