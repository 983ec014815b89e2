"""Reading and writing file content through the catalog: verified reads with replica failover,
a seekable ranged reader for ``open()``, and a spooling writer.

The invariant lives here and in :mod:`vdir.core`: a full read is checked against the catalog's
xxh3-128; a ranged read is served from whole blocks, each checked against the entry's
per-block hashes (:mod:`vdir.hashing`) before any of its bytes is handed out; a mismatch or an
unreachable backend moves on to the next replica; the caller sees only verified bytes, or an
:class:`~vdir.errors.IntegrityError` naming the path and replicas.
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
from vdir.hashing import BlockHasher, BlockHashes, new_hasher

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
    is rewound between attempts, so it ends up holding exactly the verified bytes.  A hash or
    block hashes the entry lacks are recorded in the catalog on the way (best effort)."""
    return _read_whole(vdir, path, entry, sink, progress)[0]


def _read_whole(vdir: VDir, path: str, entry: Entry, sink: IO[bytes], progress: Callable[[int], None] | None = None) -> tuple[str, BlockHashes]:
    """:func:`read_verified`, also returning the content's block hashes."""
    if not entry.replicas:
        if entry.size == 0:
            return new_hasher().hexdigest(), BlockHasher().result()
        raise NotFound(f"{path}: the catalog lists no replica for this file", path=path)
    problems: list[str] = []
    integrity = False
    for replica in ordered_replicas(vdir, entry):
        sink.seek(0)
        sink.truncate()
        hasher = new_hasher()
        blocks = BlockHasher()
        size = 0
        try:
            backend = vdir.backend(replica.backend)
            with backend.get(replica.key) as stream:
                while chunk := stream.read(CHUNK):
                    hasher.update(chunk)
                    blocks.update(chunk)
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
        result = blocks.result()
        if entry.hash is None or BlockHashes.parse(entry.blocks, entry.size) is None:
            vdir._record_lazy_hash(entry, digest, result.encode())
        sink.flush()
        return digest, result
    detail = "; ".join(problems)
    if integrity:
        raise IntegrityError(f"{path}: no replica matches the recorded hash {entry.hash} ({detail})", path=path)
    raise ReadFailure(f"{path}: no replica could be read ({detail})", path=path)


class _Discard(io.RawIOBase):
    """A seekable, truncatable sink that keeps nothing (for a verification-only pass)."""

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        return len(data)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return 0

    def truncate(self, size: int | None = None) -> int:
        return 0


class RangedReader(io.RawIOBase):
    """Seekable raw reader over a file's replicas: ranged GETs from the backend, one open stream
    reused while reads are sequential, failover to the next replica on a backend error.

    Every byte returned is verified: reads are served from whole blocks (:mod:`vdir.hashing`),
    each fetched and checked against the entry's block hash before any of it is handed out.
    A block that does not match or cannot be read is fetched from the next replica; when no
    replica yields it, ``IntegrityError`` (some replica had wrong bytes) or ``ReadFailure``
    (none could be read) names the path.  The last block read is kept, so reads smaller than a
    block cost one fetch per block.  An entry without block hashes (written by an older vdir, or
    a linked object) is read in full once, checked against its content hash, and its block
    hashes are computed and recorded in the catalog before the first byte is served.

    ``verify=False`` turns all checking off; it exists only to measure the cost of verifying
    (``bench/verify.py``) and is never used by vdir itself.
    """

    def __init__(self, vdir: VDir, path: str, entry: Entry, *, verify: bool = True) -> None:
        super().__init__()
        self.vdir = vdir
        self.path = path
        self.entry = entry
        self.size = entry.size
        self.pos = 0
        self.verify = verify
        self._replicas = ordered_replicas(vdir, entry)
        self._which = 0
        self._stream: IO[bytes] | None = None
        self._stream_at = (-1, -1)  # (replica index, position) the open stream is at
        self._blocks: BlockHashes | None = None
        self._kept: tuple[int, bytearray] | None = None  # last block read in full: (index, bytes)

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

    def _open(self, which: int, pos: int) -> IO[bytes]:
        if self._stream is not None and self._stream_at == (which, pos):
            return self._stream
        self._close_stream()
        replica = self._replicas[which]
        self._stream = self.vdir.backend(replica.backend).get(replica.key, pos)
        self._stream_at = (which, pos)
        return self._stream

    def _close_stream(self) -> None:
        if self._stream is not None:
            try:
                self._stream.close()
            except Exception:  # noqa: BLE001 - closing a dead connection must not mask the read
                log.debug("closing stream failed", exc_info=True)
        self._stream = None
        self._stream_at = (-1, -1)

    def _read_exact(self, which: int, pos: int, view: memoryview) -> int:
        """Fill ``view`` from replica ``which`` at ``pos``; fewer bytes only at the object's end."""
        stream = self._open(which, pos)
        got = 0
        readinto = getattr(stream, "readinto", None)
        while got < len(view):
            if readinto is not None:
                k = readinto(view[got:])
            else:
                data = stream.read(len(view) - got)
                k = len(data)
                view[got : got + k] = data
            if not k:
                break
            got += k
        self._stream_at = (which, pos + got)
        return got

    def _block_hashes(self) -> BlockHashes:
        if self._blocks is None:
            blocks = BlockHashes.parse(self.entry.blocks, self.size)
            if blocks is None:
                # no block hashes yet: one full, hash-checked read computes (and records) them
                log.info("%s: no block hashes recorded; reading it in full once to verify it", self.path)
                blocks = _read_whole(self.vdir, self.path, self.entry, _Discard())[1]  # type: ignore[arg-type]
            self._blocks = blocks
        return self._blocks

    def _fetch_block(self, index: int, view: memoryview) -> None:
        """Fill ``view`` with verified block ``index``, trying the replicas in turn."""
        blocks = self._block_hashes()
        start, length = blocks.span(index)
        assert len(view) == length
        count = len(self._replicas)
        problems: list[str] = []
        integrity = False
        for which in [*range(self._which, count), *range(self._which)]:
            replica = self._replicas[which]
            try:
                got = self._read_exact(which, start, view)
            except VDirError as exc:
                self._close_stream()
                problems.append(f"{replica.backend}:{replica.key}: {exc}")
                log.warning("%s: replica on %s unreadable, trying the next: %s", self.path, replica.backend, exc)
                continue
            if got == length and blocks.verify(index, view):
                self._which = which
                return
            self._close_stream()
            integrity = True
            what = f"ends at {start + got} bytes" if got < length else "does not match its block hash"
            problems.append(f"{replica.backend}:{replica.key}: bytes {start}-{start + length} {what}")
            log.warning("%s: replica on %s is corrupt at bytes %d-%d, trying the next", self.path, replica.backend, start, start + length)
        detail = "; ".join(problems) or "no replicas"
        if integrity:
            raise IntegrityError(f"{self.path}: no replica has the right bytes at {start}-{start + length} ({detail})", path=self.path)
        raise ReadFailure(f"{self.path}: no replica could be read ({detail})", path=self.path)

    def readinto(self, buf: bytearray | memoryview) -> int:  # type: ignore[override]
        if self.pos >= self.size:
            return 0
        if not self.verify:
            return self._readinto_unverified(buf)
        blocks = self._block_hashes()
        index = self.pos >> blocks.log2
        start, length = blocks.span(index)
        off = self.pos - start
        out = memoryview(buf).cast("B")
        n = min(len(out), length - off)
        if self._kept is not None and self._kept[0] == index:
            out[:n] = memoryview(self._kept[1])[off : off + n]
        elif off == 0 and len(out) >= length:
            # the caller's buffer holds the whole block: verify it in place, no copy
            self._fetch_block(index, out[:length])
        else:
            # one block buffer, reused: a fresh one per read would cost an allocation and page faults
            data = self._kept[1] if self._kept is not None else bytearray(blocks.block_size)
            self._kept = None
            view = memoryview(data)[:length]
            self._fetch_block(index, view)
            self._kept = (index, data)
            out[:n] = view[off : off + n]
        self.pos += n
        return n

    def _readinto_unverified(self, buf: bytearray | memoryview) -> int:
        want = min(len(buf), self.size - self.pos)
        out = memoryview(buf).cast("B")[:want]
        while True:
            if self._which >= len(self._replicas):
                raise ReadFailure(f"{self.path}: no replica could be read", path=self.path)
            try:
                n = self._read_exact(self._which, self.pos, out)
            except VDirError:
                self._close_stream()
                self._which += 1
                continue
            break
        if n == 0:
            raise IntegrityError(f"{self.path}: replica ended at {self.pos} bytes, the catalog says {self.size}", path=self.path)
        self.pos += n
        return n

    def close(self) -> None:
        self._close_stream()
        self._kept = None
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
