"""Open files of a mount: content, write-back and read-ahead, on the core API.

A :class:`Node` is one open file, shared by every handle this mount has on it.  It is *clean*
while it only reads: reads are served block by block (:data:`~vdir.vfs.cache.BLOCK` bytes)
from memory, then the on-disk read cache, then the backend through one
:class:`~vdir.streams.RangedReader`, with the next blocks fetched ahead in the background when
reading is sequential.  Its first write (or truncate) makes it *local*: the whole content is
copied into a journaled data file (see :mod:`vdir.vfs.cache`) and every read and write goes
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
import io
import logging
import os
import secrets
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from vdir import paths
from vdir.catalog.base import DIR, FILE, Entry
from vdir.errors import AlreadyExists, Conflict, IntegrityError, NotFound
from vdir.streams import RangedReader, read_verified
from vdir.vfs.cache import BLOCK, CacheDir, PendingRecord

if TYPE_CHECKING:
    from vdir.core import VDir

log = logging.getLogger("vdir.vfs")

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


class Unreplayable(Exception):
    """A journal record that can never be committed as it is (the reason is the message): its
    entry was removed or replaced, its directory is gone, its path was taken.  Parked, never
    retried."""


class _Aborted(Exception):
    """An upload was cancelled (a streamed one: the file was not written sequentially after
    all; a background one: the file was changed, renamed or removed meanwhile)."""


class _CancellableFile(io.FileIO):
    """The data file as an upload source that fails with :class:`_Aborted` once ``cancel`` is set."""

    def __init__(self, path: str | os.PathLike[str], cancel: threading.Event) -> None:
        super().__init__(path, "rb")
        self._cancel = cancel

    def read(self, size: int | None = -1) -> bytes:
        if self._cancel.is_set():
            raise _Aborted("upload cancelled")
        return super().read(size)

    def readinto(self, buffer: Any) -> int:
        if self._cancel.is_set():
            raise _Aborted("upload cancelled")
        return super().readinto(buffer)

    def readall(self) -> bytes:
        if self._cancel.is_set():
            raise _Aborted("upload cancelled")
        return super().readall()


def check_generation(vd: VDir, record: PendingRecord) -> Entry | None:
    """The entry now at ``record.path`` if ``record`` may still be committed there, else
    :class:`Unreplayable`: a change to an existing file needs that same entry (same id) at the
    path, a new file needs the directory it was created in (same id)."""
    current = _current(vd, record.path)
    if record.base_version is not None:
        if current is None:
            raise Unreplayable("the file was removed after this change was made")
        if current.type != FILE or (record.base_id is not None and current.id != record.base_id):
            raise Unreplayable("the file was replaced by another one after this change was made")
        return current
    parent_path = paths.split(record.path)[0]
    parent = _current(vd, parent_path)
    if parent is None or parent.type != DIR or (record.parent_id is not None and parent.id != record.parent_id):
        raise Unreplayable(f"its directory {parent_path} was removed or replaced after the file was written")
    if current is not None and not record.replace:
        raise Unreplayable("the path was taken by another file")
    return current


def upload(vd: VDir, record: PendingRecord, data_path: str | os.PathLike[str], written: Entry | None = None,
           *, cancel: threading.Event | None = None, replay: bool = False) -> Entry:
    """Commit the content of ``data_path`` at ``record.path`` (the one commit path, used by open
    files and by the background write-back).  Updates ``record`` with the new base.
    ``written`` is the entry a streamed upload already committed: only metadata is left to do.

    ``replay`` (a background commit of a file no handle is writing) applies the generation
    check (:func:`check_generation`, raising :class:`Unreplayable`) and never creates parent
    directories; ``cancel`` aborts the upload when set (raising :class:`_Aborted`)."""
    size = os.path.getsize(data_path)
    for _ in range(0 if written else 10):
        new = record.base_version is None and not record.replace
        if replay:
            check_generation(vd, record)
        try:
            with (_CancellableFile(data_path, cancel) if cancel is not None else open(data_path, "rb")) as src:
                entry = vd.write_stream(
                    record.path, src, overwrite=not new, size=size, mode=record.mode, mtime=record.mtime,
                    expected_version=record.base_version, parents=not replay,
                )
            break
        except (Conflict, AlreadyExists):
            current = _current(vd, record.path)
            if current is not None and current.type == FILE and record.base_hash is not None and current.hash == record.base_hash:
                record.base_version = current.version  # only its metadata changed: retry on it
                continue
            if replay:
                check_generation(vd, record)  # removed or replaced meanwhile: parked, not copied
            copy = _save_conflict_copy(vd, record, data_path)
            raise Conflict(
                f"{record.path}: changed elsewhere while it was open here; this mount's version was saved as {copy}",
                path=record.path,
            ) from None
        except NotFound:
            if replay and _current(vd, paths.split(record.path)[0]) is None:
                raise Unreplayable(f"its directory {paths.split(record.path)[0]} was removed") from None
            raise
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
    record.base_id, record.parent_id = entry.id, None
    record.uid = record.gid = None
    record.xattrs = {}
    return entry


def _save_conflict_copy(vd: VDir, record: PendingRecord, data_path: str | os.PathLike[str]) -> str:
    parent, name = paths.split(record.path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    copy = paths.join(parent, f"{paths.fit(name, 200)}.conflict-{stamp}-{secrets.token_hex(2)}")
    with open(data_path, "rb") as src:
        vd.write_stream(copy, src, mode=record.mode, parents=True)
    log.warning("%s: changed elsewhere while open in this mount; saved this mount's content as %s", record.path, copy)
    return copy


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

    def __init__(self, vd: VDir, cache: CacheDir, pool: ThreadPoolExecutor, path: str, entry: Entry | None, mode: int = 0o644,
                 parent_id: int | None = None) -> None:
        self.vd = vd
        self.parent_id = parent_id
        """For a new file: id of its directory (recorded in the journal for the generation check)."""
        self.cache = cache
        self.pool = pool
        self.path = path
        self.entry = entry
        self.lock = threading.RLock()
        self.refs = 0
        self.unlinked = False
        self.accessed = False
        """Read through a handle already (the atime check is made once per open file)."""
        self.dirty = False
        self.size = entry.size if entry else 0
        self.mode = entry.mode if entry else mode
        self.mtime = entry.mtime if entry else time.time()
        self.record: PendingRecord | None = None
        self.fd: int | None = None
        self.background = False
        self.ino = 0
        """The inode number a front end gave this new file before it had a catalog id (0: none);
        kept for it after the commit, so ``st_ino`` does not change under an open file."""
        """Dirty content left to the background write-back (no handle will commit it on close)."""
        self._saved: tuple[object, ...] | None = None
        """What the journal record held when this node last saved it."""
        self._bg_cancel: threading.Event | None = None
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
    def streaming(self) -> bool:
        """Its upload started while it was written (see :class:`StreamUpload`)."""
        return self._stream is not None

    @property
    def is_local(self) -> bool:
        return self.fd is not None

    @classmethod
    def adopt(cls, vd: VDir, cache: CacheDir, pool: ThreadPoolExecutor, record: PendingRecord, entry: Entry | None) -> Node:
        """A pending file left in the journal (by this or an earlier mount), served from its data
        file until the background write-back commits it.  ``entry`` is the catalog entry it
        changes (``None`` for a new file)."""
        node = cls(vd, cache, pool, record.path, entry, record.mode if record.mode is not None else 0o644, record.parent_id)
        node.fd = os.open(cache.journal.data_path(record.id), os.O_RDWR)
        node.record = record
        node.size = os.fstat(node.fd).st_size
        node.mtime = record.mtime if record.mtime is not None else node.mtime
        node.dirty = node.background = True
        return node

    def interrupt(self) -> None:
        """Cancel a background upload of this file (it is about to change, move or go); the
        caller then takes :attr:`lock`, which the upload gives up promptly."""
        cancel = self._bg_cancel
        if cancel is not None:
            cancel.set()

    def set_path(self, path: str) -> None:
        self.interrupt()
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
            if self.fd is not None and self.record is not None:
                return
            if self.fd is not None:  # parked: its content was moved aside; start again from the catalog's
                os.close(self.fd)
                self.fd = None
                self.size = self.entry.size if self.entry else 0
            entry = self.entry
            record, fd = self.cache.journal.create(
                self.path, base_version=entry.version if entry else None, base_hash=entry.hash if entry else None,
                base_id=entry.id if entry else None, parent_id=None if entry else self.parent_id,
                mode=self.mode, mtime=self.mtime,
            )
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

    def mark_dirty(self, save: bool = True) -> None:
        """The content differs from the catalog's.  The record is saved the first time (before
        the change returns) unless ``save`` is false: a new file's record waits for its first
        write or its close (:meth:`checkpoint`), so ``create`` writes one file, not two."""
        assert self.record is not None
        self.record.mtime = self.mtime
        self.record.mode = self.mode
        if not self.dirty or (save and self._saved is None):
            self.dirty = True
            if save:
                self._save()

    def _save(self) -> None:
        assert self.record is not None
        self.cache.journal.save(self.record)
        self._saved = self._state()

    def _state(self) -> tuple[object, ...]:
        r = self.record
        assert r is not None
        return (r.path, r.mtime, r.mode, r.uid, r.gid, tuple(r.xattrs.items()), r.base_version, r.replace)

    def write(self, data: bytes, offset: int) -> int:
        self.interrupt()
        with self.lock:
            self.background = False  # a handle writes: its close commits
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
        self.interrupt()
        with self.lock:
            self.background = False  # committed on close, or at once by ops.truncate
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
        self.interrupt()
        with self.lock:
            self.mtime = mtime
            if self.record is not None:
                self.record.mtime = mtime
                if self.dirty:
                    self.cache.journal.save(self.record)

    def set_owner(self, uid: int | None, gid: int | None) -> None:
        """Owner of a file not in the catalog yet, applied at its first commit."""
        self.interrupt()
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
        self.interrupt()
        with self.lock:
            if self.record is None:
                self.make_local()
            assert self.record is not None
            self.record.xattrs[name] = value.hex()
            self.mark_dirty()

    # -- commit ----------------------------------------------------------------------------
    def checkpoint(self) -> None:
        """Bring the journal record up to date (path, mtime, mode) without committing: what a
        ``close`` does when the upload is left to the write-back.  From here on a crash of the
        mount loses nothing: the next mount replays the record."""
        with self.lock:
            if self.dirty and self.record is not None and not self.unlinked:
                self.record.path, self.record.mtime, self.record.mode = self.path, self.mtime, self.mode
                if self._saved != self._state():
                    self._save()

    def commit(self, background: bool = False) -> Entry | None:
        """Upload the local content if it changed; returns the committed entry (or ``None``).

        On failure other than a conflict the content stays journaled and dirty, so a later
        ``close``/``fsync``, the background write-back or the next mount retries it.

        ``background``: a commit by the write-back of a file left pending: the generation check
        applies (``Unreplayable``), and it gives way (returns ``None``) to a change, rename or
        removal of the file, or to a handle that wrote since."""
        with self.lock:
            if not self.dirty or self.unlinked or self.record is None or (background and not self.background):
                return None
            assert self.fd is not None
            self.record.path, self.record.mtime, self.record.mode = self.path, self.mtime, self.mode
            if background and self._stream is None:
                cancel = self._bg_cancel = threading.Event()
                try:
                    entry = upload(self.vd, self.record, self.cache.journal.data_path(self.record.id), cancel=cancel, replay=True)
                except Conflict:
                    self.dirty = False
                    self.cache.journal.forget(self.record)
                    raise
                except Exception:
                    if cancel.is_set():
                        return None  # gave way; whoever cancelled decides what happens next
                    raise
                finally:
                    self._bg_cancel = None
                self.entry = entry
                self.dirty = self.background = False
                self.cache.journal.forget(self.record)
                return entry
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
            self.dirty = self.background = False
            self.cache.journal.forget(self.record)
            return entry

    def discard(self) -> None:
        """The file was removed: nothing of it is ever uploaded, and its journal record is gone
        (so no later mount brings it back)."""
        self.interrupt()
        with self.lock:
            self.background = False
            self._cancel_stream()
            self.unlinked = True
            self.dirty = False
            if self.record is not None:
                self.cache.journal.forget(self.record)

    def park(self, reason: str) -> str:
        """Move the pending content aside (:meth:`~vdir.vfs.cache.Journal.park`): it is never
        committed; the parked data file's path.  Reads through open handles go on working."""
        with self.lock:
            assert self.record is not None
            where = self.cache.journal.park(self.record, reason)
            self.record = None
            self.dirty = self.background = False
            return str(where)

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
