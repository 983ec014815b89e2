"""The local state of a mount, all under one cache directory: the write-back journal and the
size-bounded read cache.

Layout::

    lock                      flock'ed by the one mount using the directory
    pending/<id>.data         content of a file written through the mount and not yet committed
    pending/<id>.json         its record: path, base entry id, version and hash, mode, mtime, owner, xattrs
    parked/<id>.data, .json   a record that can never be replayed as it is, moved aside with the reason
    blocks/<kk>/<key>.<n>     read-cache block ``n`` (:data:`BLOCK` bytes) of the content ``key``

A file becomes *pending* on its first write: the record is written (atomically, temp file +
rename) before the write returns, and the data file holds every byte written.  Both are removed
once :meth:`~vdir.core.VDir.write_stream` has committed the content, so a mount killed at any
moment leaves exactly the uncommitted files here, and the next mount uploads them (in the
background, see :mod:`vdir.vfs.writeback`).

Each record remembers what it was based on (the *generation*): the entry id and version for a
change to an existing file, the parent directory's id for a new one.  A replay never creates a
path whose entry was removed or replaced since; such a record is *parked*: moved to
``parked/`` with its reason, reported once, never retried.

Read-cache keys are content hashes (or entry id + version for files whose hash is not known
yet), so a block can never be served for content it does not belong to: a changed file has a
new hash and so a new key.  Blocks are evicted least-recently-used once the cache holds more
than its limit.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vdir.errors import AlreadyExists

log = logging.getLogger("vdir.vfs")

BLOCK = 4 * 1024 * 1024
"""Read-cache block size: the unit fetched from a backend (and so the read-ahead step)."""

@dataclass
class PendingRecord:
    """What the journal knows about one uncommitted file."""

    id: str
    path: str
    base_version: int | None = None
    """Catalog version the content was based on; ``None`` for a file new to the catalog."""
    base_id: int | None = None
    """Entry id the content was based on (generation check: a replay never writes to another entry)."""
    parent_id: int | None = None
    """For a new file: id of the directory it was created in (a replay never re-creates it)."""
    parked: str | None = None
    """Why the record was parked (only in ``parked/``)."""
    base_hash: str | None = None
    """Content hash of that version: a later version with the same hash changed only metadata."""
    replace: bool = False
    """Overwrite whatever is at ``path`` at commit time (the file was renamed over it)."""
    mode: int | None = None
    mtime: float | None = None
    uid: int | None = None
    gid: int | None = None
    xattrs: dict[str, str] = field(default_factory=dict)
    """Extended attributes set before the first commit, values hex-encoded."""
    created: float = field(default_factory=time.time)


class Journal:
    """The ``pending/`` directory: one data file and one JSON record per uncommitted file."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._dir = str(root)
        self._saved: set[str] = set()
        """Records saved at least once by this process (their next save replaces the file)."""
        root.mkdir(parents=True, exist_ok=True)

    def data_path(self, record_id: str) -> Path:
        return self.root / f"{record_id}.data"

    def new(self, path: str, **fields: Any) -> PendingRecord:
        """A new record with an empty data file (the record itself is saved by :meth:`save`)."""
        record, fd = self.create(path, **fields)
        os.close(fd)
        return record

    def create(self, path: str, **fields: Any) -> tuple[PendingRecord, int]:
        """A new record and its empty data file, open for reading and writing (one ``open``)."""
        record = PendingRecord(id=f"{time.time_ns():x}-{secrets.token_hex(4)}", path=path, **fields)
        fd = os.open(f"{self._dir}/{record.id}.data", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        return record, fd

    def save(self, record: PendingRecord) -> None:
        """Write the record so that a reader sees the old or the new one, never a part: the first
        save of a record writes its file at once (there is no old one to keep; a process killed
        between the ``open`` and the ``write`` leaves an empty file, which :meth:`records` skips,
        for a file whose write had not returned yet), later ones go through a temp file and a
        rename.  Not fsync'ed: a crash of the mount process loses nothing, a crash of the
        machine may lose what the kernel had not written yet."""
        text = json.dumps({**record.__dict__, "xattrs": dict(record.xattrs)}).encode()
        target = f"{self._dir}/{record.id}.json"
        if record.id not in self._saved:
            try:
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass
            else:
                try:
                    os.write(fd, text)
                finally:
                    os.close(fd)
                self._saved.add(record.id)
                return
        tmp = f"{self._dir}/.{record.id}.json.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, text)
        finally:
            os.close(fd)
        os.replace(tmp, target)
        self._saved.add(record.id)

    def forget(self, record: PendingRecord) -> None:
        """Remove the record only (the content is committed; the data file may still be open)."""
        self._saved.discard(record.id)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{self._dir}/{record.id}.json")

    def drop(self, record: PendingRecord) -> None:
        """Remove the record and its data file."""
        self.forget(record)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{self._dir}/{record.id}.data")

    @property
    def parked_dir(self) -> Path:
        return self.root.parent / "parked"

    def park(self, record: PendingRecord, reason: str) -> Path:
        """Move the record and its data aside to ``parked/`` (never replayed again); the parked
        data file's path.  Atomic per file (rename within one filesystem)."""
        self.parked_dir.mkdir(exist_ok=True)
        record.parked = reason
        target = self.parked_dir / f"{record.id}.data"
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.data_path(record.id), target)
        tmp = self.parked_dir / f".{record.id}.json.tmp"
        tmp.write_text(json.dumps(asdict(record)), encoding="utf-8")
        os.replace(tmp, self.parked_dir / f"{record.id}.json")
        self.forget(record)
        return target

    def records(self) -> list[PendingRecord]:
        """Every saved record, oldest first; unreadable ones are logged and skipped.  Data files
        without a record (content already committed, or never written) are removed."""
        found: list[PendingRecord] = []
        for item in self.root.glob("*.json"):
            try:
                if item.stat().st_size == 0:  # killed inside its first save (see save): never written
                    item.unlink()
                    continue
                found.append(PendingRecord(**json.loads(item.read_text(encoding="utf-8"))))
            except (OSError, ValueError, TypeError) as exc:
                log.warning("ignoring unreadable journal record %s: %s", item, exc)
        ids = {r.id for r in found}
        for data in self.root.glob("*.data"):
            if data.stem not in ids:
                with contextlib.suppress(FileNotFoundError):
                    data.unlink()
        found.sort(key=lambda r: r.created)
        return found


class BlockCache:
    """Size-bounded LRU cache of content blocks on disk.  Thread-safe."""

    def __init__(self, root: Path, max_bytes: int, block: int = BLOCK) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.block = block
        self._lock = threading.Lock()
        self._lru: OrderedDict[str, int] = OrderedDict()  # relative file name -> size
        self.used = 0
        root.mkdir(parents=True, exist_ok=True)
        existing = []
        for item in root.glob("*/*"):
            if item.name.startswith("."):
                item.unlink(missing_ok=True)  # a temp file left by a crash
                continue
            st = item.stat()
            existing.append((st.st_atime, f"{item.parent.name}/{item.name}", st.st_size))
        for _, name, size in sorted(existing):
            self._lru[name] = size
            self.used += size
        self._evict()

    @staticmethod
    def _name(key: str, n: int) -> str:
        return f"{key[:2]}/{key}.{n}"

    def get(self, key: str, n: int) -> bytes | None:
        """Block ``n`` of ``key``, or ``None`` when it is not cached."""
        name = self._name(key, n)
        with self._lock:
            if name not in self._lru:
                return None
            self._lru.move_to_end(name)
        try:
            with open(self.root / name, "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            with self._lock:
                self.used -= self._lru.pop(name, 0)
            return None

    def put(self, key: str, n: int, data: bytes) -> None:
        """Store a block (atomically: temp file + rename) and evict old ones over the limit."""
        if len(data) > self.max_bytes:
            return
        name = self._name(key, n)
        path = self.root / name
        path.parent.mkdir(exist_ok=True)
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}"
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except OSError as exc:  # a full cache disk only costs speed
            log.warning("read cache: cannot store a block: %s", exc)
            tmp.unlink(missing_ok=True)
            return
        with self._lock:
            self.used += len(data) - self._lru.pop(name, 0)
            self._lru[name] = len(data)
            self._evict()

    def discard(self, key: str) -> None:
        """Forget every block of ``key`` (its content turned out to be wrong)."""
        prefix = f"{key[:2]}/{key}."
        with self._lock:
            names = [n for n in self._lru if n.startswith(prefix)]
            for name in names:
                self.used -= self._lru.pop(name)
        for name in names:
            (self.root / name).unlink(missing_ok=True)

    def _evict(self) -> None:
        while self.used > self.max_bytes and self._lru:
            name, size = self._lru.popitem(last=False)
            self.used -= size
            (self.root / name).unlink(missing_ok=True)


class CacheDir:
    """One mount's cache directory: journal, read cache and the lock that keeps it to one mount."""

    def __init__(self, root: str | os.PathLike[str], max_bytes: int) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock_fd: int | None = None
        self.lock()
        self.journal = Journal(self.root / "pending")
        self.blocks = BlockCache(self.root / "blocks", max_bytes)

    def lock(self) -> None:
        """Take the directory for this process; ``AlreadyExists`` if another mount has it."""
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise AlreadyExists(
                f"cache directory {self.root} is in use by another vdir mount (pid {holder}); pass --cache-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
