"""The FUSE operations: paths and file handles mapped onto the core API (:class:`~vdir.core.VDir`).

This module does not import libfuse (that happens only in :mod:`vdir.fuse.mount`): every
operation is a plain method, and every error leaves it through :func:`fuse_errors`, which maps
it with :func:`vdir.errors.to_errno` (unexpected exceptions are logged and become ``EIO``).

Consistency: metadata read from the catalog, and names found absent, are kept for
``attr_timeout`` seconds at most (the kernel keeps them as long again), so a change made
elsewhere shows here within twice that; what this mount changes it forgets at once.  Opening a
file asks the catalog (close-to-open) unless this mount holds newer content for it.  A file
written here is committed when ``close`` returns (``sync_close``, the default), or, without
it, is in the write-back journal then and committed by the write-back shortly after;
``fsync`` returns once it is committed either way.

Times: a directory's mtime/ctime come from the catalog (moved by every create, remove and
rename in it); while a file created here is not committed yet, its directory shows the time it
was created.  atime follows ``relatime``: the first read through a handle moves it to now when
it was not later than mtime or ctime, or is more than :data:`RELATIME` seconds old (one catalog
write, without a new version).  An open file that is unlinked stays readable, and ``fstat``
shows it, until its last handle closes: libfuse (``hard_remove`` off) renames it to
``.fuse_hiddenNNNN`` in its directory instead, and unlinks that name after the last close (a
new file not committed yet is only re-keyed there, never uploaded).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import io
import itertools
import json
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from vdir import paths
from vdir.catalog.base import DIR, FILE, SPECIAL, SYMLINK, Entry
from vdir.errors import (
    AlreadyExists,
    Conflict,
    InvalidArgument,
    IsADirectory,
    NotADirectory,
    NotFound,
    ReadOnly,
    to_errno,
)
from vdir.fuse.dirs import KINDS, TYPE_BITS, DirHandle, MetaCache, mapped
from vdir.vfs.cache import CacheDir
from vdir.vfs.files import Node
from vdir.vfs.writeback import WriteBack

if TYPE_CHECKING:
    from vdir.core import VDir

log = logging.getLogger("vdir.fuse")

F = TypeVar("F", bound=Callable[..., Any])

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
XATTR_CREATE = 1
XATTR_REPLACE = 2
XATTR_SIZE_MAX = 65536
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2
READONLY_XATTRS = ("user.vdir.hash", "user.vdir.replicas")
"""Facts of the catalog readable as extended attributes (by name; not listed, so tools that copy
xattrs do not try to write them elsewhere)."""
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND
HIDDEN_PREFIX = ".fuse_hidden"
"""libfuse's name for an unlinked file that is still open (see the module docstring)."""
MAX_LINKED_NAMES = 100_000
"""Names of hard-linked files remembered (for invalidation) before the table starts afresh."""
MAX_CREATED = 1_000_000
"""Files created by this mount whose first ``st_ino`` is remembered (then the table starts afresh)."""
NEW_INO = 1 << 63
"""``st_ino`` of a file created here: this bit with a number unique in this mount (catalog ids
are below 2**63).  It keeps it after its commit, for as long as this mount runs (a program with
the file open, SQLite for one, must not see its inode number change); a later mount shows the
catalog's id."""
RELATIME = 86400.0
"""An atime older than this is moved on read even when it is later than mtime and ctime."""


LOOKUP_PAGE = 256
"""Names read at once by the metadata read-ahead of :meth:`VDirOperations._lookup_child`."""


def _name_before(name: str) -> str:
    """A string sorting (by UTF-8 bytes) below ``name`` and above almost everything else that
    does: the ``after`` bound of a listing that starts at ``name``."""
    code = ord(name[-1]) - 1
    if 0xD800 <= code <= 0xDFFF:
        code = 0xD7FF
    return name[:-1] + chr(code) if code > 0 else name[:-1]


def fuse_errors(method: F) -> F:
    """Let an operation fail only with ``OSError(errno)``, mapped by :func:`to_errno`."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the one place errors become errno
            code = to_errno(exc)
            raise OSError(code, os.strerror(code)) from None

    return wrapper  # type: ignore[return-value]


class VDirOperations:
    """fusepy/mfusepy-style operations over one :class:`~vdir.core.VDir`.  Thread-safe."""

    use_ns = True

    def __init__(
        self,
        vd: VDir,
        cache: CacheDir,
        *,
        read_only: bool = False,
        attr_timeout: float = 1.0,
        context: Callable[[], tuple[int, int, int]] | None = None,
        workers: int = 8,
        xattrs: bool = True,
        noatime: bool = False,
        sync_close: bool = True,
        write_back_delay: float = 0.0,
        kernel_cache: Any = None,
    ) -> None:
        self.vd = vd
        self.cache = cache
        self.read_only = read_only
        self.xattrs = xattrs
        self.noatime = noatime
        """Access times are never moved (``--noatime``); else ``relatime`` rules (:meth:`_access`)."""
        self.sync_close = sync_close
        """``close`` waits for the upload and the commit; else it returns once the file is in
        the journal and the write-back commits it (``fsync`` always waits)."""
        self.write_back_delay = write_back_delay
        """Without ``sync_close``: seconds from the last close of a file to the start of its
        upload (a file still being streamed up is finished at once)."""
        self.meta = MetaCache(attr_timeout)
        self.context = context or (lambda: (os.getuid(), os.getgid(), os.getpid()))
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vdir-read-ahead")
        self._lock = threading.RLock()
        self._nodes: dict[str, Node] = {}
        self._handles: dict[int, Node] = {}
        self._dirs: dict[int, DirHandle] = {}
        self._next_fh = 1
        self._writers: set[int] = set()
        """Handles opened for writing: only their close (flush) commits."""
        self._recent_misses: dict[int, float] = {}
        self._dir_touched: dict[str, float] = {}
        """Directories in which this mount created files not committed yet: when (their mtime
        until the catalog's moves past it)."""
        self.writeback = WriteBack(vd, cache, self.pool, self._lock, self._nodes)
        """Commits pending files in the background (started by :func:`~vdir.fuse.mount.serve`)."""
        self.writeback.on_commit = self._file_changed
        self.kernel_cache = kernel_cache
        """Called with a path whose kernel-cached attributes and pages are stale (``KernelCache``
        of vdir/fuse/mount.py), with ``capture()`` called at ``init``; ``None``: not told."""
        self._names: dict[int, set[str]] = {}
        """Inode id -> the paths this mount showed the kernel, of files with several names."""
        self._inode_at: dict[str, int] = {}
        self._created_ino: dict[int, int] = {}
        """Catalog id -> the ``st_ino`` a file created by this mount showed before its commit."""
        self._next_ino = itertools.count(1)

    def init(self, path: str) -> None:
        if self.kernel_cache is not None:
            self.kernel_cache.capture()

    # -- hard links: one inode, several names the kernel caches apart ----------------------
    def _seen(self, path: str, entry: Entry) -> None:
        """Remember ``path`` as a name of ``entry``'s inode if it has several (the kernel keeps
        attributes and pages per name: a change through one must drop the others')."""
        if entry.nlink <= 1 or entry.type == DIR:
            return
        with self._lock:
            if len(self._inode_at) > MAX_LINKED_NAMES:
                self._names.clear()
                self._inode_at.clear()
            self._names.setdefault(entry.id, set()).add(path)
            self._inode_at[path] = entry.id

    def _file_changed(self, path: str, *, keep: tuple[str, ...] = ()) -> None:
        """The file at ``path`` changed here (content, metadata or its number of names): its
        cached attributes go, and so do those of its other names this mount showed the kernel,
        in our cache and in the kernel's (but not those of ``keep``: names a request in progress
        holds)."""
        self.meta.forget(path)
        with self._lock:
            node = self._nodes.get(path)
            if node is not None and node.ino and node.entry is not None:
                if len(self._created_ino) > MAX_CREATED:
                    self._created_ino.clear()
                self._created_ino.setdefault(node.entry.id, node.ino)
            ino = self._inode_at.get(path)
            others = set(self._names.get(ino, ())) - {path, *keep} if ino is not None else set()
        for other in others:
            self.meta.forget(other)
            if self.kernel_cache is not None:
                try:
                    self.kernel_cache(other)
                except Exception as exc:  # noqa: BLE001 - the attribute timeout still bounds it
                    log.debug("%s: kernel cache not dropped: %s", other, exc)

    def _forget_name(self, path: str) -> None:
        with self._lock:
            ino = self._inode_at.pop(path, None)
            if ino is not None:
                names = self._names.get(ino, set())
                names.discard(path)
                if not names:
                    self._names.pop(ino, None)

    # -- helpers ---------------------------------------------------------------------------
    def _entry(self, path: str) -> Entry:
        """The entry at ``path``: from the metadata cache, else one catalog lookup under the
        (cached) parent, so a ``stat`` of a name in a known directory costs one query."""
        norm = paths.normalize(path)
        cached = self.meta.get(norm)
        if cached is not None:
            return cached
        if self.meta.absent(norm):
            raise NotFound(f"{norm}: no such file or directory", path=norm)
        if norm == "/":
            entry = self.vd.entry("/")
        else:
            parent_path, name = paths.split(norm)
            parent = self._parent(parent_path)
            found = self._lookup_child(parent, parent_path, name)
            if found is None:
                self.meta.put_absent(norm)
                raise NotFound(f"{norm}: no such file or directory", path=norm)
            entry = found
        self.meta.put(norm, entry)
        return entry

    def _parent(self, parent_path: str) -> Entry:
        """The directory ``parent_path`` for a look-up of a name in it: its id is enough, so a
        directory whose attributes went stale by a change made here is not read again."""
        parent = self.meta.get_dir(parent_path) or self._entry(parent_path)
        if parent.type != DIR:
            raise NotADirectory(f"{parent_path}: not a directory", path=parent_path)
        return parent

    def _lookup_child(self, parent: Entry, parent_path: str, name: str) -> Entry | None:
        """One name in a directory.  The second miss in the same directory within the cache
        time reads a page of names from this one on instead (metadata read-ahead): ``stat`` of
        many files of a directory in name order, as ``find``, ``rsync`` or ``tar`` do, then
        costs one catalog query per page rather than one per name."""
        now = time.monotonic()
        with self._lock:
            mark = self._recent_misses.get(parent.id, 0.0)
            creating = -mark > now  # the last page read ahead held none of the names asked for
            streak = mark > now
            if len(self._recent_misses) > 4096:
                self._recent_misses.clear()
            self._recent_misses[parent.id] = -(now + self.meta.ttl) if creating else now + self.meta.ttl
        if not streak or self.meta.ttl <= 0:
            found = self.vd.child(parent.id, name)
            if creating and found is not None:
                with self._lock:  # names that exist again: read ahead from the next miss on
                    self._recent_misses[parent.id] = now + self.meta.ttl
            return found
        found = None
        for child in self.vd.children(parent.id, after=_name_before(name), limit=LOOKUP_PAGE):
            self.meta.put(paths.join(parent_path, child.name), child)
            if child.name == name:
                found = child
        if found is None:
            # The names looked up are not there: files being created (cp, tar, untar), not a
            # scan.  Read-ahead would cost a page per name; single lookups until a name is found.
            with self._lock:
                self._recent_misses[parent.id] = -(now + self.meta.ttl)
        return found

    def _writable(self) -> None:
        if self.read_only:
            raise ReadOnly("mounted read-only")

    def _new_fh(self) -> int:
        with self._lock:
            fh = self._next_fh
            self._next_fh += 1
            return fh

    def _node(self, path: str | None, fh: int | None) -> Node | None:
        with self._lock:
            if fh is not None and fh in self._handles:
                return self._handles[fh]
            return self._nodes.get(paths.normalize(path)) if path else None

    def pending_names(self, dir_path: str) -> dict[str, int]:
        """Names of files created in ``dir_path`` by this mount and not committed yet, with the
        inode number each shows."""
        with self._lock:
            return {paths.split(p)[1]: self._number(n) for p, n in self._nodes.items()
                    if n.is_new and paths.split(p)[0] == dir_path}

    def _number(self, node: Node) -> int:
        """The inode number of a file created here (or left pending by an earlier mount) before
        its commit: :data:`NEW_INO` with a number unique in this mount."""
        with self._lock:
            if not node.ino:
                node.ino = NEW_INO | next(self._next_ino)
            return node.ino

    def _ino(self, entry_id: int) -> int:
        """``st_ino``: the catalog's inode id, or the number a file created here showed before its
        commit (SQLite, for one, refuses a database whose inode number changed under it)."""
        return self._created_ino.get(entry_id, entry_id)

    def _attrs(self, entry: Entry) -> dict[str, Any]:
        kind = entry.type
        mode = TYPE_BITS.get(kind, stat.S_IFREG) | (entry.mode & 0o7777)
        size = len(entry.target.encode()) if kind == SYMLINK and entry.target else entry.size
        return {
            "st_mode": mode, "st_nlink": 2 + entry.subdirs if kind == DIR else max(1, entry.nlink), "st_size": size,
            "st_ino": self._ino(entry.id),
            "st_uid": entry.uid, "st_gid": entry.gid, "st_blocks": (size + 511) // 512, "st_blksize": 1 << 20,
            "st_mtime": int(entry.mtime * 1e9), "st_atime": int(entry.atime * 1e9), "st_ctime": int(entry.ctime * 1e9),
            "st_rdev": entry.rdev,
        }

    def _dir_attrs(self, norm: str, entry: Entry) -> dict[str, Any]:
        """A directory's attributes, with the creation time of files made here and not committed
        yet as its mtime/ctime (the catalog's moves when they are)."""
        attrs = self._attrs(entry)
        with self._lock:
            touched = self._dir_touched.get(norm)
            if touched is not None and touched <= entry.mtime:
                del self._dir_touched[norm]
                touched = None
        if touched is not None:
            attrs["st_mtime"] = attrs["st_ctime"] = max(attrs["st_ctime"], int(touched * 1e9))
        return attrs

    def _changed_in(self, path: str) -> None:
        """An entry was created, removed or renamed under ``path``'s directory: its cached
        attributes (mtime, ctime, subdirectory count) are stale, its id is not."""
        self.meta.stale(paths.split(paths.normalize(path))[0])

    def _listing_attrs(self, entry: Entry, path: str) -> dict[str, Any]:
        """Attributes for a directory listing; a file open here with local changes reports
        only its type, so the kernel asks getattr (and gets the open file's size)."""
        with self._lock:
            node = self._nodes.get(path)
            busy = node is not None and node.is_local and (node.entry is None or node.entry.id == entry.id)
        if busy:
            return {"st_mode": TYPE_BITS.get(entry.type, stat.S_IFREG), "st_ino": self._ino(entry.id)}
        return self._attrs(entry)

    def _node_attrs(self, node: Node) -> dict[str, Any]:
        base = node.entry or Entry(name="", type=FILE, mode=node.mode, uid=self.context()[0], gid=self.context()[1])
        if node.ino or node.entry is None:  # created here: the number it showed first, also once committed
            base = base.copy(id=self._number(node))
        if node.record is not None:
            base = base.copy(uid=node.record.uid if node.record.uid is not None else base.uid,
                             gid=node.record.gid if node.record.gid is not None else base.gid)
        return self._attrs(base.copy(size=node.size, mtime=node.mtime, mode=node.mode, ctime=max(base.ctime, node.mtime)))

    # -- attributes ------------------------------------------------------------------------
    @fuse_errors
    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, Any]:
        node = self._node(path, fh)
        if node is not None and (node.is_local or node.is_new):
            return self._node_attrs(node)
        if path is None:
            raise NotFound("file was removed")
        entry = self._entry(path)
        if entry.type == DIR:
            return self._dir_attrs(paths.normalize(path), entry)
        self._seen(paths.normalize(path), entry)
        return self._attrs(entry)

    @fuse_errors
    def chmod(self, path: str | None, mode: int) -> int:
        self._writable()
        if path is None:
            raise NotFound("file was removed")
        node = self._node(path, None)
        if node is not None:
            node.mode = mode & 0o7777
            if node.is_new:
                return 0
        self._update(path, mode=mode & 0o7777)
        return 0

    @fuse_errors
    def chown(self, path: str | None, uid: int, gid: int) -> int:
        self._writable()
        if path is None:
            raise NotFound("file was removed")
        new_uid, new_gid = (uid if uid >= 0 else None), (gid if gid >= 0 else None)
        node = self._node(path, None)
        if node is not None and node.is_new:
            node.set_owner(new_uid, new_gid)
            return 0
        changes = {k: v for k, v in (("uid", new_uid), ("gid", new_gid)) if v is not None}
        if changes:
            self._update(path, **changes)
        return 0

    @fuse_errors
    def utimens(self, path: str | None, times: tuple[int, int] | None = None) -> int:
        self._writable()
        if path is None:
            raise NotFound("file was removed")
        atime_ns, mtime_ns = times if times else (UTIME_NOW, UTIME_NOW)
        now = time.time()
        changes = {name: now if ns == UTIME_NOW else ns / 1e9
                   for name, ns in (("atime", atime_ns), ("mtime", mtime_ns)) if ns != UTIME_OMIT}
        if not changes:
            return 0
        node = self._node(path, None)
        if node is not None and "mtime" in changes:
            node.touch(changes["mtime"])
            if node.is_new:
                return 0
        self._update(path, **changes)  # ctime moves to now with any change (update_entry)
        return 0

    def _update(self, path: str, **changes: Any) -> Entry:
        norm = paths.normalize(path)
        entry = self.vd.update_entry(norm, **changes)
        self._file_changed(norm)
        node = self._node(norm, None)
        if node is not None and not node.dirty:
            node.entry = entry
        return entry

    @fuse_errors
    def statfs(self, path: str) -> dict[str, int]:
        blocks = (1 << 50) // 4096  # a virtual directory has no fixed size: report 1 PiB
        return {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": blocks, "f_bfree": blocks, "f_bavail": blocks,
                "f_files": 1 << 32, "f_ffree": 1 << 32, "f_favail": 1 << 32, "f_namemax": paths.MAX_NAME_BYTES}

    # -- extended attributes ----------------------------------------------------------------
    def _xattrs(self, path: str) -> tuple[Entry | None, dict[str, bytes]]:
        node = self._node(path, None)
        if node is not None and (node.is_new or node.record is not None):
            return node.entry, node.xattrs()
        entry = self._entry(path)
        return entry, entry.xattrs

    def _xattrs_on(self) -> None:
        """With xattrs off, every xattr call answers ENOSYS: the kernel then stops sending them
        for the whole mount (``ls -l`` no longer pays two round trips per file)."""
        if not self.xattrs:
            raise OSError(errno.ENOSYS, "extended attributes are off on this mount (--no-xattrs)")

    @fuse_errors
    def getxattr(self, path: str, name: str, position: int = 0) -> bytes:
        self._xattrs_on()
        if not name.startswith("user."):
            # security.*, system.posix_acl_*, trusted.*: not supported, answered without a look
            # at the entry.  ENOTSUP (not ENODATA) lets ls and other tools remember that for the
            # whole filesystem instead of asking again for every file.
            raise OSError(errno.EOPNOTSUPP, "only user.* extended attributes are supported")
        entry, xattrs = self._xattrs(path)
        if name in READONLY_XATTRS and entry is not None and entry.type == FILE:
            if name == "user.vdir.hash":
                if entry.hash:
                    return entry.hash.encode()
            else:
                return json.dumps([{"backend": r.backend, "key": r.key, "state": r.state, "size": r.size}
                                   for r in entry.replicas]).encode()
        if name in xattrs:
            return xattrs[name]
        raise OSError(errno.ENODATA, "no such attribute")

    @fuse_errors
    def listxattr(self, path: str) -> list[str]:
        self._xattrs_on()
        return sorted(k for k in self._xattrs(path)[1] if k.startswith("user."))

    @fuse_errors
    def setxattr(self, path: str, name: str, value: bytes, options: int, position: int = 0) -> int:
        self._xattrs_on()
        self._writable()
        if not name.startswith("user."):
            raise OSError(errno.ENOTSUP, "only user.* extended attributes are supported")
        if name.startswith("user.vdir."):
            raise OSError(errno.EPERM, "user.vdir.* attributes are read-only")
        if len(value) > XATTR_SIZE_MAX:
            raise OSError(errno.E2BIG, "attribute value too large")
        _, xattrs = self._xattrs(path)
        if options & XATTR_CREATE and name in xattrs:
            raise OSError(errno.EEXIST, "attribute exists")
        if options & XATTR_REPLACE and name not in xattrs:
            raise OSError(errno.ENODATA, "no such attribute")
        node = self._node(path, None)
        if node is not None and node.is_new:
            node.set_xattr(name, value)
            return 0
        self._update(path, xattrs={**self._entry(path).xattrs, name: value})
        return 0

    @fuse_errors
    def removexattr(self, path: str, name: str) -> int:
        self._xattrs_on()
        self._writable()
        if name.startswith("user.vdir."):
            raise OSError(errno.EPERM, "user.vdir.* attributes are read-only")
        xattrs = dict(self._entry(path).xattrs)
        if name not in xattrs:
            raise OSError(errno.ENODATA, "no such attribute")
        del xattrs[name]
        self._update(path, xattrs=xattrs)
        return 0

    # -- directories -----------------------------------------------------------------------
    @fuse_errors
    def opendir(self, path: str) -> int:
        entry = self._entry(path)
        if entry.type != DIR:
            raise NotADirectory(f"{path}: not a directory", path=path)
        fh = self._new_fh()
        norm = paths.normalize(path)

        def attrs(child: Entry) -> dict[str, Any]:
            return self._listing_attrs(child, paths.join(norm, child.name))

        with self._lock:
            self._dirs[fh] = DirHandle(self.vd, self.meta, self.pending_names, norm, entry, attrs)
        return fh

    @fuse_errors
    def readdir_with_offset(self, path: str | None, offset: int, fh: int) -> Iterator[tuple[str, dict[str, int], int]]:
        with self._lock:
            handle = self._dirs[fh]
        return mapped(handle.items_from(offset))

    @fuse_errors
    def releasedir(self, path: str | None, fh: int) -> int:
        with self._lock:
            self._dirs.pop(fh, None)
        return 0

    @fuse_errors
    def mkdir(self, path: str, mode: int) -> int:
        self._writable()
        norm = paths.normalize(path)
        entry = self.vd.mkdir(norm, mode=mode & 0o7777)
        self.meta.forget(norm)
        self._changed_in(norm)
        uid, gid, _ = self.context()
        if (uid, gid) != (entry.uid, entry.gid):
            self._update(norm, uid=uid, gid=gid)
        return 0

    @fuse_errors
    def rmdir(self, path: str) -> int:
        self._writable()
        norm = paths.normalize(path)
        entry = self.vd.entry(norm)
        if entry.type != DIR:
            raise NotADirectory(f"{norm}: not a directory", path=norm)
        if self.pending_names(norm):
            raise OSError(errno.ENOTEMPTY, "directory not empty")
        self.vd.rm(norm)
        self.meta.forget(norm, tree=True)
        self._changed_in(norm)
        return 0

    # -- names -----------------------------------------------------------------------------
    @fuse_errors
    def unlink(self, path: str) -> int:
        self._writable()
        norm = paths.normalize(path)
        with self._lock:
            node = self._nodes.get(norm)
            if node is not None:
                # Settle its write-back first: a background upload gives way, the journal record
                # goes, so neither this mount nor a later one brings the file back.
                node.discard()
                del self._nodes[norm]
                if node.refs == 0:
                    node.close()
                if node.is_new:
                    return 0
            entry = self.vd.entry(norm)
            if entry.type == DIR:
                raise IsADirectory(f"{norm}: is a directory", path=norm)
            self.vd.rm(norm)
            self._file_changed(norm)  # the other names have one name less
            self._forget_name(norm)
            self._changed_in(norm)
        return 0

    @fuse_errors
    def rename(self, old: str, new: str, flags: int = 0) -> int:
        self._writable()
        if flags & RENAME_EXCHANGE:
            raise InvalidArgument("RENAME_EXCHANGE is not supported")
        src, dst = paths.normalize(old), paths.normalize(new)
        if src == dst:
            return 0
        with self._lock, contextlib.ExitStack() as held:
            prefix = src + "/"
            moving = [p for p in self._nodes if p == src or p.startswith(prefix)]
            for p in moving:  # background uploads under src give way before the catalog moves
                self._nodes[p].interrupt()
            for p in moving:
                held.enter_context(self._nodes[p].lock)
            node = self._nodes.get(src)
            if node is not None and node.is_new and self._rekey_new(node, src, dst, flags):
                if paths.split(dst)[1].startswith(HIDDEN_PREFIX):
                    node.discard()  # an unlink of an open file: readable until closed, never uploaded
                return 0
            if node is not None and node.is_new:
                node.commit()  # a file must be in the catalog to be renamed there
            self.vd.rename(src, dst, replace=not flags & RENAME_NOREPLACE)
            self.meta.forget(src, tree=True)
            self.meta.forget(dst, tree=True)
            self._forget_name(src)
            self._forget_name(dst)
            self._changed_in(src)
            self._changed_in(dst)
            victim = self._nodes.pop(dst, None)
            if victim is not None and victim is not node:
                self._drop(victim)
            for p in moving:
                moved = self._nodes.pop(p)
                target = dst + p[len(src):]
                moved.set_path(target)
                self._nodes[target] = moved
        return 0

    def _rekey_new(self, node: Node, src: str, dst: str, flags: int) -> bool:
        """Rename a file not in the catalog yet by moving its pending record to ``dst``, when
        nothing is there (so a rename never waits for, or fails on, the upload); ``False`` when
        ``dst`` is taken in the catalog and the ordinary rename must decide."""
        parent_path, name = paths.split(dst)
        parent = self._entry(parent_path)
        if parent.type != DIR:
            raise NotADirectory(f"{parent_path}: not a directory", path=parent_path)
        if self.vd.child(parent.id, name) is not None:
            return False
        victim = self._nodes.get(dst)
        if victim is not None:
            if flags & RENAME_NOREPLACE:
                raise AlreadyExists(f"{dst}: exists", path=dst)
            del self._nodes[dst]
            self._drop(victim)
        del self._nodes[src]
        node.parent_id = parent.id
        if node.record is not None:
            node.record.parent_id = parent.id
        node.set_path(dst)
        self._nodes[dst] = node
        self.meta.forget(src)
        self.meta.forget(dst)
        return True

    def _drop(self, node: Node) -> None:
        """A file replaced or removed: settle its write-back (never uploaded, record gone)."""
        node.discard()
        if node.refs == 0:
            node.close()

    @fuse_errors
    def symlink(self, path: str, target: str) -> int:
        self._writable()
        norm = paths.normalize(path)
        self.vd.symlink(target, norm)
        self.meta.forget(norm)
        self._changed_in(norm)
        return 0

    @fuse_errors
    def readlink(self, path: str) -> str:
        return self.vd.readlink(path)

    @fuse_errors
    def link(self, target: str, source: str) -> int:
        """``link(2)``: ``target`` (the new name) becomes another name of ``source``'s inode; a
        file this mount has not committed yet is committed first (a name needs a catalog inode)."""
        self._writable()
        src, dst = paths.normalize(source), paths.normalize(target)
        with self._lock:
            node = self._nodes.get(src)
        if node is not None and (node.is_new or node.dirty):
            node.commit()
        linked = self.vd.hardlink(src, dst)
        self._seen(src, linked)
        self._file_changed(src, keep=(dst,))  # every name's st_nlink and ctime changed
        self._seen(dst, linked)
        self.meta.forget(dst)
        self._changed_in(dst)
        return 0

    @fuse_errors
    def mknod(self, path: str, mode: int, dev: int) -> int:
        """FIFOs, device nodes (``dev``: their number) and unix sockets (``bind``) become catalog
        entries with no content; a regular file is created empty."""
        self._writable()
        norm = paths.normalize(path)
        kind = KINDS.get(stat.S_IFMT(mode), FILE)
        uid, gid, _ = self.context()
        pending = self._node(norm, None)
        if pending is not None and pending.is_new:
            raise AlreadyExists(f"{norm}: exists", path=norm)
        if kind == FILE:
            self.vd.write_stream(norm, io.BytesIO(b""), mode=mode & 0o7777, parents=False)  # AlreadyExists if taken
            if (uid, gid) != (os.getuid(), os.getgid()):
                self._update(norm, uid=uid, gid=gid)
        elif kind in SPECIAL:
            self.vd.mknod(norm, kind, mode & 0o7777, dev if kind in ("chr", "blk") else 0, uid=uid, gid=gid)
        else:
            raise InvalidArgument(f"{norm}: mknod cannot make a {kind}")
        self.meta.forget(norm)
        self._changed_in(norm)
        return 0

    # -- files -----------------------------------------------------------------------------
    def _attach(self, path: str, node: Node, flags: int = os.O_RDWR) -> int:
        fh = self._new_fh()
        with self._lock:
            node.refs += 1
            self._handles[fh] = node
            if flags & (os.O_WRONLY | os.O_RDWR):
                self._writers.add(fh)
        return fh

    @fuse_errors
    def create(self, path: str, mode: int, flags: int = 0) -> int:
        self._writable()
        norm = paths.normalize(path)
        parent_path, name = paths.split(norm)
        parent = self._parent(parent_path)
        with self._lock:
            existing = self._nodes.get(norm)
            known_absent = self.meta.absent(norm)  # the kernel's lookup just before found nothing
            self.meta.forget(norm)
            if existing is None:
                if not known_absent and self.vd.child(parent.id, name) is not None:
                    if flags & os.O_EXCL:
                        raise OSError(errno.EEXIST, "file exists")
                    return self._open(norm, flags)
            elif flags & os.O_EXCL:
                raise OSError(errno.EEXIST, "file exists")
            else:
                return self._open(norm, flags)
            node = Node(self.vd, self.cache, self.pool, norm, None, mode & 0o7777, parent_id=parent.id)
            self._number(node)
            uid, gid, _ = self.context()
            node.make_local()
            if (uid, gid) != (os.getuid(), os.getgid()):
                node.set_owner(uid, gid)
            assert node.record is not None
            node.mark_dirty(save=False)
            self._nodes[norm] = node
            self._dir_touched[parent_path] = node.mtime
            self.meta.stale(parent_path)
            return self._attach(norm, node, flags | os.O_WRONLY)

    @fuse_errors
    def open(self, path: str, flags: int) -> int:
        if flags & _WRITE_FLAGS:
            self._writable()
        return self._open(paths.normalize(path), flags)

    def _open(self, norm: str, flags: int) -> int:
        with self._lock:
            node = self._nodes.get(norm)
            if node is None or not (node.dirty or node.is_new):
                entry = self.vd.entry(norm)  # close-to-open: always the catalog's current version
                self.meta.put(norm, entry)
                if entry.type == DIR:
                    raise IsADirectory(f"{norm}: is a directory", path=norm)
                if node is None or node.entry is None or node.entry.version != entry.version:
                    node = Node(self.vd, self.cache, self.pool, norm, entry)
                    self._nodes[norm] = node
            fh = self._attach(norm, node, flags)
        if flags & os.O_TRUNC and flags & (os.O_WRONLY | os.O_RDWR):
            try:
                node.truncate(0)
            except BaseException:
                self.release(norm, fh)
                raise
        return fh

    @fuse_errors
    def read(self, path: str | None, size: int, offset: int, fh: int) -> bytes:
        node = self._handles[fh]
        if not node.accessed:
            node.accessed = True
            self._access(node)
        return node.read(size, offset)

    def _access(self, node: Node) -> None:
        """``relatime``: move the file's atime to now if it was not later than mtime or ctime,
        or is older than :data:`RELATIME` (a failure is logged: a read never fails for it)."""
        entry = node.entry
        if entry is None or self.read_only or self.noatime or node.unlinked:
            return
        now = time.time()
        if entry.atime > max(entry.mtime, entry.ctime) and now - entry.atime < RELATIME:
            return
        try:
            self.vd.touch_atime(entry, now)
        except Exception as exc:  # noqa: BLE001 - an access time is not worth a failed read
            log.debug("%s: atime not updated: %s", node.path, exc)
            return
        node.entry = entry.copy(atime=now)
        self._file_changed(node.path)

    @fuse_errors
    def write(self, path: str | None, data: bytes, offset: int, fh: int) -> int:
        self._writable()
        return self._handles[fh].write(data, offset)

    @fuse_errors
    def truncate(self, path: str | None, length: int, fh: int | None = None) -> int:
        self._writable()
        node = self._node(path, fh)
        if node is not None:
            node.truncate(length)
            if fh is None:  # truncate(2) by name: committed now, like any other change by name
                try:
                    node.commit()
                except Exception:
                    with self._lock:
                        unheld = node.refs == 0 and node.dirty and not node.unlinked
                        node.background = node.background or unheld
                    if unheld:  # no close will come: the write-back retries it
                        self.writeback.enqueue(node)
                    raise
                self._file_changed(node.path)
            return 0
        if path is None:
            raise NotFound("file was removed")
        norm = paths.normalize(path)
        temp = self._open(norm, os.O_WRONLY)
        try:
            self._handles[temp].truncate(length)
            self._handles[temp].commit()
        finally:
            self.release(norm, temp)
        self.meta.forget(norm)
        return 0

    @fuse_errors
    def flush(self, path: str | None, fh: int) -> int:
        node = self._handles[fh]
        if fh in self._writers and node.dirty and not node.background:
            if not self.sync_close:
                node.checkpoint()  # in the journal: the write-back commits it after the last close
            elif node.commit() is not None:
                self._file_changed(node.path)
        return 0

    @fuse_errors
    def fsync(self, path: str | None, datasync: int, fh: int) -> int:
        node = self._handles[fh]
        if node.dirty and node.commit() is not None:  # durable: even a file left to the write-back
            self._file_changed(node.path)
        return 0

    @fuse_errors
    def release(self, path: str | None, fh: int) -> int:
        with self._lock:
            node = self._handles.pop(fh, None)
            self._writers.discard(fh)
            if node is None:
                return 0
            node.refs -= 1
            if node.refs:
                return 0
        try:
            if node.dirty and not node.background and self.sync_close:
                node.commit()
                self._file_changed(node.path)
        except Conflict:
            pass  # reported to flush already; this mount's content was saved as a conflict copy
        except Exception as exc:  # noqa: BLE001 - release has no caller to tell; the write-back retries
            log.warning("%s: could not commit on close, kept pending (retried in the background): %s", node.path, exc)
        with self._lock:
            if node.refs:
                return 0  # opened again meanwhile
            pending = node.dirty and not node.unlinked and node.record is not None
            if pending:
                node.background = True  # stays listed and readable here until committed
            elif self._nodes.get(node.path) is node:
                del self._nodes[node.path]
        if pending:
            late = not self.sync_close and not node.streaming
            self.writeback.enqueue(node, self.write_back_delay if late else 0.0, quiet=late)
        else:
            node.close()
        return 0

    # -- lifecycle -------------------------------------------------------------------------
    def destroy(self, path: str) -> None:
        """Unmounted: commit what is still open (what fails stays journaled), stop read-ahead."""
        self.writeback.stop()
        with self._lock:
            nodes = set(self._handles.values())
            pending = set(self._nodes.values()) - nodes
            self._handles.clear()
            self._writers.clear()
            self._nodes.clear()
        for node in nodes:
            try:
                if not node.background:
                    node.commit()
            except Exception as exc:  # noqa: BLE001 - kept in the journal, resumed by the next mount
                log.warning("%s: not committed at unmount, kept in the journal: %s", node.path, exc)
            node.close()
        left = sum(1 for node in pending if node.dirty)
        for node in pending:
            node.close()  # dirty ones keep their journal record
        if left:
            log.warning("unmounted with %d upload(s) pending; the next mount with this cache directory resumes them", left)
        self.pool.shutdown(wait=False, cancel_futures=True)
