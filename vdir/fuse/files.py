"""Open files of a mount: content, write-back and read-ahead, on the core API.

A :class:`Node` is one open file, shared by every handle this mount has on it.  It is *clean*
while it only reads: reads are served block by block (:data:`~vdir.fuse.cache.BLOCK` bytes)
from memory, then the on-disk read cache, then the backend through one
:class:`~vdir.streams.RangedReader`, with the next blocks fetched ahead in the background when
reading is sequential.  Its first write (or truncate) makes it *local*: the whole content is
copied into a journaled data file (see :mod:`vdir.fuse.cache`) and every read and write goes
there.  :meth:`Node.commit` (on ``close``/``fsync``) uploads it with
:meth:`~vdir.core.VDir.write_stream`, conditional on the version the node was based on.

A file written sequentially from its start (a new file, or one truncated to nothing) starts
its upload once it holds :data:`STREAM_AFTER` bytes, streaming from the data file as the writes
arrive, so ``close`` only waits for the tail; the commit still happens on ``close``.  Any other
write pattern (a seek back, a truncate, a rename) cancels the stream and the commit uploads the
whole data file instead.

Conflicts: if the catalog version moved on but the content hash is still the one this node
started from, only metadata changed (a ``chmod``, a rename) and the commit is retried on the new
version.  If the content changed, this mount's content is saved beside the file as
``NAME.conflict-YYYYmmdd-HHMMSS-XXXX`` and the commit fails with ``Conflict`` (``ESTALE``):
nothing is lost and nothing is mixed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from vdir import paths
from vdir.catalog.base import FILE, Entry
from vdir.errors import AlreadyExists, Conflict, IntegrityError, NotFound
from vdir.fuse.cache import BLOCK, CacheDir, PendingRecord
from vdir.streams import RangedReader, read_verified

if TYPE_CHECKING:
    from vdir.core import VDir

log = logging.getLogger("vdir.fuse")

READ_AHEAD = 2
"""Blocks fetched ahead of a sequential reader."""
MEMORY_BLOCKS = 4
"""Blocks each open file keeps in memory."""
STREAM_AFTER = 8 * 1024 * 1024
"""A sequentially written file starts uploading once it holds this many bytes."""


def cache_key(entry: Entry) -> str:
    """Read-cache key of an entry's content: its hash, or id + version while the hash is unknown."""
    return entry.hash or f"e{entry.id}v{entry.version}"


def _current(vd: VDir, path: str) -> Entry | None:
    try:
        return vd.entry(path)
    except (NotFound, NotADirectoryError):
        return None


def upload(vd: VDir, record: PendingRecord, data_path: str | os.PathLike[str], written: Entry | None = None) -> Entry:
    """Commit the content of ``data_path`` at ``record.path`` (the one commit path, used by open
    files and by the journal resumed at mount time).  Updates ``record`` with the new base.
    ``written`` is the entry a streamed upload already committed: only metadata is left to do."""
    size = os.path.getsize(data_path)
    for _ in range(0 if written else 10):
        new = record.base_version is None and not record.replace
        try:
            with open(data_path, "rb") as src:
                entry = vd.write_stream(
                    record.path, src, overwrite=not new, size=size, mode=record.mode, mtime=record.mtime,
                    expected_version=record.base_version, parents=True,
                )
            break
        except (Conflict, AlreadyExists):
            current = _current(vd, record.path)
            if current is not None and current.type == FILE and record.base_hash is not None and current.hash == record.base_hash:
                record.base_version = current.version  # only its metadata changed: retry on it
                continue
            copy = _save_conflict_copy(vd, record, data_path)
            raise Conflict(
                f"{record.path}: changed elsewhere while it was open here; this mount's version was saved as {copy}",
                path=record.path,
            ) from None
    else:
        if written is None:
            raise Conflict(f"{record.path}: kept changing while it was committed", path=record.path)
        entry = written
        if record.mtime is not None and abs(entry.mtime - record.mtime) > 1e-3:
            entry = vd.update_entry(record.path, mtime=record.mtime)
    changes: dict[str, object] = {}
    if record.uid is not None and record.uid != entry.uid:
        changes["uid"] = record.uid
    if record.gid is not None and record.gid != entry.gid:
        changes["gid"] = record.gid
    if record.xattrs:
        changes["xattrs"] = {**entry.xattrs, **{k: bytes.fromhex(v) for k, v in record.xattrs.items()}}
    if changes:
        entry = vd.update_entry(record.path, **changes)
    record.base_version, record.base_hash, record.replace = entry.version, entry.hash, False
    record.uid = record.gid = None
    record.xattrs = {}
    return entry


def _save_conflict_copy(vd: VDir, record: PendingRecord, data_path: str | os.PathLike[str]) -> str:
    parent, name = paths.split(record.path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    copy = paths.join(parent, f"{name[:200]}.conflict-{stamp}-{secrets.token_hex(2)}")
    with open(data_path, "rb") as src:
        vd.write_stream(copy, src, mode=record.mode, parents=True)
    log.warning("%s: changed elsewhere while open in this mount; saved this mount's content as %s", record.path, copy)
    return copy


def resume(vd: VDir, cache: CacheDir) -> tuple[int, int]:
    """Upload what a previous mount left in the journal; (committed, still pending).

    A record whose content is already in the catalog (the mount died between the commit and
    removing the record) is simply dropped; one that cannot be uploaded now stays for next time.
    """
    from vdir.hashing import hash_stream

    done = kept = 0
    for record in cache.journal.records():
        data = cache.journal.data_path(record.id)
        try:
            current = _current(vd, record.path)
            if current is not None and current.hash is not None and current.type == FILE:
                with open(data, "rb") as fh:
                    digest, size = hash_stream(fh)
                if digest == current.hash and size == current.size:
                    cache.journal.drop(record)
                    done += 1
                    continue
            entry = upload(vd, record, data)
            log.warning("resumed the upload of %s left pending by an earlier mount (%d bytes)", record.path, entry.size)
            cache.journal.drop(record)
            done += 1
        except Conflict as exc:
            log.warning("%s", exc)
            cache.journal.drop(record)
            done += 1
        except FileNotFoundError:
            cache.journal.drop(record)
        except OSError as exc:
            log.warning("%s: upload left pending by an earlier mount failed again, kept for later: %s", record.path, exc)
            kept += 1
    return done, kept


class _Aborted(Exception):
    """A streamed upload was cancelled (the file was not written sequentially after all)."""


class StreamUpload:
    """Upload of a file that is still being written sequentially: a thread runs
    :meth:`~vdir.core.VDir.write_stream` over a reader that hands out the data file's bytes as
    the writes land, and reports end of file only after :meth:`finish`."""

    def __init__(self, vd: VDir, record: PendingRecord, fd: int, written: int) -> None:
        self._fd = fd
        self._cond = threading.Condition()
        self._limit = written
        self._pos = 0
        self._done = False
        self._aborted = False
        self._result: Entry | None = None
        self._error: BaseException | None = None
        new = record.base_version is None and not record.replace
        args = dict(overwrite=not new, mode=record.mode, expected_version=record.base_version, parents=True)
        self._thread = threading.Thread(target=self._run, args=(vd, record.path, args), daemon=True, name="vdir-stream-upload")
        self._thread.start()

    def _run(self, vd: VDir, path: str, args: dict[str, object]) -> None:
        try:
            self._result = vd.write_stream(path, self, **args)  # type: ignore[arg-type]
        except BaseException as exc:  # noqa: BLE001 - reported by finish()
            self._error = exc

    def read(self, n: int = -1) -> bytes:
        with self._cond:
            while not self._aborted and self._pos >= self._limit and not self._done:
                self._cond.wait()
            if self._aborted:
                raise _Aborted("upload cancelled")
            avail = self._limit - self._pos
            if avail <= 0:
                return b""
            want = avail if n is None or n < 0 else min(n, avail)
        data = os.pread(self._fd, want, self._pos)
        self._pos += len(data)
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def advance(self, written: int) -> None:
        with self._cond:
            self._limit = written
            self._cond.notify_all()

    def abort(self) -> None:
        with self._cond:
            self._aborted = True
            self._cond.notify_all()
        self._thread.join()

    def finish(self, size: int) -> Entry | None:
        """Let the upload reach the end (``size`` bytes) and commit; the entry, or ``None`` if
        it failed (the caller then uploads the whole file the ordinary way)."""
        with self._cond:
            self._limit = size
            self._done = True
            self._cond.notify_all()
        self._thread.join()
        if self._error is not None or self._result is None or self._pos != size:
            log.debug("streamed upload not used: %s", self._error)
            return None
        return self._result


class Node:
    """One open file of the mount (see the module docstring).  Thread-safe."""

    def __init__(self, vd: VDir, cache: CacheDir, pool: ThreadPoolExecutor, path: str, entry: Entry | None, mode: int = 0o644) -> None:
        self.vd = vd
        self.cache = cache
        self.pool = pool
        self.path = path
        self.entry = entry
        self.lock = threading.RLock()
        self.refs = 0
        self.unlinked = False
        self.dirty = False
        self.size = entry.size if entry else 0
        self.mode = entry.mode if entry else mode
        self.mtime = entry.mtime if entry else time.time()
        self.record: PendingRecord | None = None
        self.fd: int | None = None
        # clean reads
        self._reader: RangedReader | None = None
        self._fetch_lock = threading.Lock()
        self._mem: OrderedDict[int, bytes] = OrderedDict()
        self._inflight: dict[int, Future[bytes]] = {}
        self._state_lock = threading.Lock()
        self._last_block = -1
        self._use_cache: bool | None = None
        # streamed upload of a sequentially written file
        self._sequential = False
        self._stream: StreamUpload | None = None

    # -- attributes ------------------------------------------------------------------------
    @property
    def is_new(self) -> bool:
        """Not in the catalog yet (created here, never committed)."""
        return self.entry is None

    @property
    def is_local(self) -> bool:
        return self.fd is not None

    def set_path(self, path: str) -> None:
        with self.lock:
            self._cancel_stream()
            self.path = path
            if self.record is not None:
                self.record.path = path
                if self.dirty:
                    self.cache.journal.save(self.record)

    # -- local content ---------------------------------------------------------------------
    def make_local(self, truncate: bool = False) -> None:
        """Copy the content into a journaled data file (skipped when it is to be truncated)."""
        with self.lock:
            if self.fd is not None:
                return
            entry = self.entry
            record = self.cache.journal.new(
                self.path, base_version=entry.version if entry else None, base_hash=entry.hash if entry else None,
                mode=self.mode, mtime=self.mtime,
            )
            data = self.cache.journal.data_path(record.id)
            fd = os.open(data, os.O_RDWR)
            try:
                if entry is not None and entry.size and not truncate:
                    with os.fdopen(os.dup(fd), "r+b") as sink:
                        read_verified(self.vd, self.path, entry, sink)
            except BaseException:
                os.close(fd)
                self.cache.journal.drop(record)
                raise
            self.fd, self.record = fd, record
            if truncate:
                self.size = 0
            self._sequential = self.size == 0
            self._drop_reader()

    def mark_dirty(self) -> None:
        assert self.record is not None
        self.record.mtime = self.mtime
        self.record.mode = self.mode
        if not self.dirty:
            self.dirty = True
            self.cache.journal.save(self.record)

    def write(self, data: bytes, offset: int) -> int:
        with self.lock:
            self.make_local()
            assert self.fd is not None
            self.mtime = time.time()
            self.mark_dirty()
            if offset != self.size:
                self._sequential = False
                self._cancel_stream()
            n = os.pwrite(self.fd, data, offset)
            self.size = max(self.size, offset + n)
            if self._stream is not None:
                self._stream.advance(self.size)
            elif self._sequential and self.size >= STREAM_AFTER and self.record is not None:
                self.record.path = self.path
                self._stream = StreamUpload(self.vd, self.record, self.fd, self.size)
            return n

    def _cancel_stream(self) -> None:
        if self._stream is not None:
            self._stream.abort()
            self._stream = None

    def truncate(self, length: int) -> None:
        with self.lock:
            self.make_local(truncate=length == 0)
            assert self.fd is not None
            if length != self.size:
                self._cancel_stream()
                self._sequential = length == 0
            os.ftruncate(self.fd, length)
            self.size = length
            self.mtime = time.time()
            self.mark_dirty()

    def touch(self, mtime: float) -> None:
        """Set the modification time (kept through the next commit)."""
        with self.lock:
            self.mtime = mtime
            if self.record is not None:
                self.record.mtime = mtime
                if self.dirty:
                    self.cache.journal.save(self.record)

    def set_owner(self, uid: int | None, gid: int | None) -> None:
        """Owner of a file not in the catalog yet, applied at its first commit."""
        with self.lock:
            if self.record is None:
                self.make_local()
            assert self.record is not None
            if uid is not None:
                self.record.uid = uid
            if gid is not None:
                self.record.gid = gid
            self.mark_dirty()

    def xattrs(self) -> dict[str, bytes]:
        if self.record is not None and self.record.xattrs:
            return {**(self.entry.xattrs if self.entry else {}), **{k: bytes.fromhex(v) for k, v in self.record.xattrs.items()}}
        return dict(self.entry.xattrs) if self.entry else {}

    def set_xattr(self, name: str, value: bytes) -> None:
        """An extended attribute of a file not in the catalog yet, applied at its first commit."""
        with self.lock:
            if self.record is None:
                self.make_local()
            assert self.record is not None
            self.record.xattrs[name] = value.hex()
            self.mark_dirty()

    # -- commit ----------------------------------------------------------------------------
    def commit(self) -> Entry | None:
        """Upload the local content if it changed; returns the committed entry (or ``None``).

        On failure other than a conflict the content stays journaled and dirty, so a later
        ``close``/``fsync`` or the next mount retries it."""
        with self.lock:
            if not self.dirty or self.unlinked or self.record is None:
                return None
            assert self.fd is not None
            self.record.path, self.record.mtime, self.record.mode = self.path, self.mtime, self.mode
            streamed = None
            if self._stream is not None:
                streamed = self._stream.finish(self.size)
                self._stream = None
            if streamed is not None and streamed.mode != self.mode:
                streamed = self.vd.update_entry(self.path, mode=self.mode)
            try:
                entry = upload(self.vd, self.record, self.cache.journal.data_path(self.record.id), streamed)
            except Conflict:
                self.dirty = False
                self.cache.journal.forget(self.record)
                raise
            self.entry = entry
            self.dirty = False
            self.cache.journal.forget(self.record)
            return entry

    def discard(self) -> None:
        """The file was removed: nothing of it is ever uploaded."""
        with self.lock:
            self._cancel_stream()
            self.unlinked = True
            self.dirty = False
            if self.record is not None:
                self.cache.journal.forget(self.record)

    def close(self) -> None:
        """Last handle gone: release the data file (kept in the journal if still dirty)."""
        with self.lock:
            self._cancel_stream()
            self._drop_reader()
            if self.fd is not None:
                os.close(self.fd)
                self.fd = None
            if self.record is not None and not self.dirty:
                self.cache.journal.drop(self.record)
                self.record = None

    # -- reads -----------------------------------------------------------------------------
    def read(self, size: int, offset: int) -> bytes:
        fd = self.fd
        if fd is not None:
            return os.pread(fd, size, offset)
        with self.lock:
            fd = self.fd
        if fd is not None:
            return os.pread(fd, size, offset)
        end = min(offset + size, self.size)
        if offset >= end:
            return b""
        first, last = offset // BLOCK, (end - 1) // BLOCK
        sequential = first in (self._last_block, self._last_block + 1) or offset == 0
        self._last_block = last
        if sequential:
            for n in range(last + 1, min(last + 1 + READ_AHEAD, (self.size - 1) // BLOCK + 1)):
                self._prefetch(n)
        if first == last:
            start = offset - first * BLOCK
            return self._block(first)[start : start + end - offset]
        parts = []
        for n in range(first, last + 1):
            block = self._block(n)
            lo = max(offset, n * BLOCK) - n * BLOCK
            hi = min(end, (n + 1) * BLOCK) - n * BLOCK
            parts.append(block[lo:hi])
        return b"".join(parts)

    def _block(self, n: int) -> bytes:
        with self._state_lock:
            data = self._mem.get(n)
            if data is not None:
                self._mem.move_to_end(n)
                return data
            future = self._inflight.get(n)
        if future is not None:
            return future.result()
        return self._fetch(n)

    def _prefetch(self, n: int) -> None:
        with self._state_lock:
            if n in self._mem or n in self._inflight:
                return
            future: Future[bytes] = Future()
            self._inflight[n] = future

        def run() -> None:
            try:
                future.set_result(self._fetch(n))
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits for the block
                future.set_exception(exc)
                log.debug("read-ahead of block %d of %s failed: %s", n, self.path, exc)
            finally:
                with self._state_lock:
                    self._inflight.pop(n, None)

        try:
            self.pool.submit(run)
        except RuntimeError:  # shutting down
            with self._state_lock:
                self._inflight.pop(n, None)
            future.cancel()

    def _cacheable(self, entry: Entry) -> bool:
        """Blocks are cached on disk unless a replica is on a local-folder backend (the cache
        would only be a second copy on the same kind of disk, and cost its write bandwidth)."""
        if self._use_cache is None:
            self._use_cache = all(self.vd.location_of(r.backend).cloud != "local" for r in entry.replicas)
        return self._use_cache

    def _fetch(self, n: int) -> bytes:
        entry = self.entry
        assert entry is not None
        key = cache_key(entry)
        cacheable = self._cacheable(entry)
        data = self.cache.blocks.get(key, n) if cacheable else None
        if data is None:
            with self._fetch_lock:
                with self._state_lock:
                    data = self._mem.get(n)
                if data is None:
                    data = self._read_backend(entry, n)
                    if cacheable:
                        self.cache.blocks.put(key, n, data)
        with self._state_lock:
            self._mem[n] = data
            self._mem.move_to_end(n)
            while len(self._mem) > MEMORY_BLOCKS:
                self._mem.popitem(last=False)
        return data

    def _read_backend(self, entry: Entry, n: int) -> bytes:
        if self._reader is None:
            self._reader = RangedReader(self.vd, self.path, entry)
        reader = self._reader
        want = min(BLOCK, entry.size - n * BLOCK)
        buf = bytearray(want)
        view = memoryview(buf)
        reader.seek(n * BLOCK)
        got = 0
        try:
            while got < want:
                k = reader.readinto(view[got:])
                if not k:
                    raise IntegrityError(f"{self.path}: content ended early at {n * BLOCK + got} bytes", path=self.path)
                got += k
        except IntegrityError:
            self.cache.blocks.discard(cache_key(entry))
            with self._state_lock:
                self._mem.clear()
            raise
        return bytes(buf)

    def _drop_reader(self) -> None:
        with self._fetch_lock:
            if self._reader is not None:
                with contextlib.suppress(Exception):
                    self._reader.close()
                self._reader = None
        with self._state_lock:
            self._mem.clear()
