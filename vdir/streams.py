"""Reading and writing file content through the catalog: verified reads with replica failover,
a seekable ranged reader for ``open()``, and a spooling writer.

The invariant lives here and in :mod:`vdir.core`: a full read is checked against the catalog's
xxh3-128; a mismatch or an unreachable backend moves on to the next replica; the caller sees
only verified bytes, or an :class:`~vdir.errors.IntegrityError` naming the path and replicas.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from typing import IO, TYPE_CHECKING

from vdir.backends.base import CHUNK
from vdir.catalog.base import OK, Entry, Replica
from vdir.errors import IntegrityError, NotFound, VDirError
from vdir.hashing import new_hasher

if TYPE_CHECKING:
    from vdir.core import VDir

log = logging.getLogger("vdir.io")


def ordered_replicas(vdir: VDir, entry: Entry) -> list[Replica]:
    """Replicas in the order reads should try them: healthy first, then local and cheap ones."""

    def rank(r: Replica) -> tuple[int, int, float]:
        loc = vdir.location_of(r.backend)
        return (0 if r.state == OK else 1, 0 if loc.cloud == "local" else 1, loc.cost)

    return sorted(entry.replicas, key=rank)


class ReadFailure(VDirError):
    """Every replica failed; the message lists what happened to each."""


def read_verified(vdir: VDir, path: str, entry: Entry, sink: IO[bytes], progress: Callable[[int], None] | None = None) -> str:
    """Copy the whole content of ``entry`` into ``sink`` (seekable, truncatable) and return its
    hash.  Tries replicas in order until one yields bytes that match the recorded hash; the sink
    is rewound between attempts, so it ends up holding exactly the verified bytes."""
    if not entry.replicas:
        if entry.size == 0:
            return new_hasher().hexdigest()
        raise NotFound(f"{path}: the catalog lists no replica for this file", path=path)
    problems: list[str] = []
    integrity = False
    for replica in ordered_replicas(vdir, entry):
        sink.seek(0)
        sink.truncate()
        hasher = new_hasher()
        size = 0
        try:
            backend = vdir.backend(replica.backend)
            with backend.get(replica.key) as stream:
                while chunk := stream.read(CHUNK):
                    hasher.update(chunk)
                    sink.write(chunk)
                    size += len(chunk)
                    if progress:
                        progress(len(chunk))
        except VDirError as exc:
            problems.append(f"{replica.backend}:{replica.key}: {exc}")
            log.warning("%s: replica on %s unreadable: %s", path, replica.backend, exc)
            continue
        digest = hasher.hexdigest()
        expected = entry.hash or replica.hash
        if size != entry.size or (expected is not None and digest != expected):
            integrity = True
            problems.append(f"{replica.backend}:{replica.key}: content does not match the catalog (size {size}, hash {digest})")
            log.warning("%s: replica on %s is corrupt", path, replica.backend)
            continue
        if entry.hash is None:
            vdir._record_lazy_hash(entry, digest)
        sink.flush()
        return digest
    detail = "; ".join(problems)
    if integrity:
        raise IntegrityError(f"{path}: no replica matches the recorded hash {entry.hash} ({detail})", path=path)
    raise ReadFailure(f"{path}: no replica could be read ({detail})", path=path)


class RangedReader(io.RawIOBase):
    """Seekable raw reader over a file's replicas: ranged GETs from the backend, one open stream
    reused while reads are sequential, failover to the next replica on a backend error.

    Reading the whole file from offset 0 in order also checks the hash at the end and raises
    ``IntegrityError`` there on a mismatch; random-access reads cannot be checked and are not.
    """

    def __init__(self, vdir: VDir, path: str, entry: Entry) -> None:
        super().__init__()
        self.vdir = vdir
        self.path = path
        self.entry = entry
        self.size = entry.size
        self.pos = 0
        self._replicas = ordered_replicas(vdir, entry)
        self._which = 0
        self._stream: IO[bytes] | None = None
        self._stream_pos = -1
        self._hasher = new_hasher()
        self._hashed = 0  # bytes hashed contiguously from offset 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self.pos, os.SEEK_END: self.size}[whence]
        new = base + offset
        if new < 0:
            raise ValueError("negative seek position")
        self.pos = new
        return new

    def _open_at(self, pos: int) -> IO[bytes]:
        if self._stream is not None and self._stream_pos == pos:
            return self._stream
        self._close_stream()
        errors: list[str] = []
        while self._which < len(self._replicas):
            replica = self._replicas[self._which]
            try:
                self._stream = self.vdir.backend(replica.backend).get(replica.key, pos)
                self._stream_pos = pos
                return self._stream
            except VDirError as exc:
                errors.append(f"{replica.backend}: {exc}")
                log.warning("%s: replica on %s unreadable, trying the next: %s", self.path, replica.backend, exc)
                self._which += 1
        raise ReadFailure(f"{self.path}: no replica could be read ({'; '.join(errors) or 'no replicas'})", path=self.path)

    def _close_stream(self) -> None:
        if self._stream is not None:
            try:
                self._stream.close()
            except Exception:  # noqa: BLE001 - closing a dead connection must not mask the read
                log.debug("closing stream failed", exc_info=True)
        self._stream = None
        self._stream_pos = -1

    def readinto(self, buf: bytearray | memoryview) -> int:  # type: ignore[override]
        if self.pos >= self.size:
            return 0
        want = min(len(buf), self.size - self.pos)
        while True:
            stream = self._open_at(self.pos)
            try:
                data = stream.read(want)
            except VDirError as exc:
                log.warning("%s: read failed on %s, failing over: %s", self.path, self._replicas[self._which].backend, exc)
                self._close_stream()
                self._which += 1
                continue
            break
        n = len(data)
        if n == 0:
            raise IntegrityError(f"{self.path}: replica ended at {self.pos} bytes, the catalog says {self.size}", path=self.path)
        buf[:n] = data
        if self._hashed == self.pos:
            self._hasher.update(data)
            self._hashed += n
        self.pos += n
        self._stream_pos = self.pos
        if self._hashed == self.size and self.entry.hash and self._hasher.hexdigest() != self.entry.hash:
            raise IntegrityError(f"{self.path}: content read does not match the recorded hash", path=self.path)
        return n

    def close(self) -> None:
        self._close_stream()
        super().close()


class SpoolWriter(io.RawIOBase):
    """Writable file for ``VDir.open(path, 'wb')``: spools to a local temp file, and on close
    streams it to the backend through :meth:`VDir.write_stream` (hash computed during the upload).
    Nothing is visible in the catalog until ``close`` returns."""

    def __init__(self, commit: Callable[[IO[bytes], int], Entry], tmpdir: str | None = None) -> None:
        super().__init__()
        self._commit = commit
        self._file = tempfile.TemporaryFile(dir=tmpdir)
        self.entry: Entry | None = None

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        return self._file.write(data)

    def close(self) -> None:
        if self.closed:
            return
        try:
            size = self._file.tell()
            self._file.seek(0)
            self.entry = self._commit(self._file, size)
        finally:
            self._file.close()
            super().close()

    def abort(self) -> None:
        """Drop what was written; nothing reaches the catalog."""
        self._file.close()
        super().close()


def iter_file(stream: IO[bytes], chunk: int = CHUNK) -> Iterator[bytes]:
    while data := stream.read(chunk):
        yield data
