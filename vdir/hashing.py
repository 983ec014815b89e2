"""Content hashing: xxh3-128, computed while data streams (never a second read)."""

from __future__ import annotations

from typing import IO

import xxhash

ALGORITHM = "xxh3-128"


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
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        if data:
            self.hasher.update(data)
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
