"""Directory listings for the mount, and the short-lived metadata cache they fill.

A listing is read from the catalog a page at a time, as the kernel asks for entries, so a huge
directory is never held in memory; the entries it returns are kept for ``attr_timeout`` seconds
so the ``stat`` calls of an ``ls -l`` that follows cost no further catalog queries.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from vdir import paths
from vdir.catalog.base import BLK, CHR, DIR, FIFO, FILE, SOCK, SYMLINK, Entry
from vdir.errors import to_errno

if TYPE_CHECKING:
    from vdir.core import VDir

TYPE_BITS = {DIR: stat.S_IFDIR, FILE: stat.S_IFREG, SYMLINK: stat.S_IFLNK, FIFO: stat.S_IFIFO, CHR: stat.S_IFCHR,
             BLK: stat.S_IFBLK, SOCK: stat.S_IFSOCK}
KINDS = {bits: kind for kind, bits in TYPE_BITS.items()}
"""Entry type of the ``S_IFMT`` bits of a mode."""
Item = tuple[str, dict[str, int], int]
"""One directory entry as the kernel takes it: name, attributes (at least ``st_mode``), offset.
Entries from the catalog carry full attributes, so a READDIRPLUS answers ``ls -l`` without a
lookup per name."""


def mapped(items: Iterator[Item]) -> Iterator[Item]:
    """A directory listing whose errors (raised while the kernel reads it) are mapped too."""
    try:
        yield from items
    except Exception as exc:  # noqa: BLE001 - see fuse_errors
        code = to_errno(exc)
        raise OSError(code, os.strerror(code)) from None


class MetaCache:
    """Entries by path for at most ``ttl`` seconds (bounded in size), so ``ls -l`` of a large
    directory costs one listing, not one catalog query per name.

    It also remembers names found absent (in a directory that exists) for as long: the lookup
    that precedes every create, and the create itself, then cost one catalog query together.
    Whatever this mount creates, removes or renames is forgotten at once (:meth:`forget`);
    changes made elsewhere show within ``ttl``.

    A directory whose attributes went stale because this mount changed something in it
    (:meth:`stale`: its mtime, ctime or subdirectory count moved) is still known by id and type
    for the rest of its ``ttl`` (:meth:`get_dir`): looking up a name in it then costs one
    catalog probe (parent id, name), not a walk of the path first."""

    def __init__(self, ttl: float, max_items: int = 65536) -> None:
        self.ttl = ttl
        self.max_items = max_items
        self._items: OrderedDict[str, tuple[float, Entry | None, bool]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: str) -> Entry | None:
        item = self._items.get(path)  # a dict read is atomic; the lock guards changes
        if item is None or not item[2] or item[0] < time.monotonic():
            return None
        return item[1]

    def get_dir(self, path: str) -> Entry | None:
        """The directory at ``path`` for its id and type only (its attributes may be stale)."""
        item = self._items.get(path)
        if item is None or item[1] is None or item[1].type != DIR or item[0] < time.monotonic():
            return None
        return item[1]

    def absent(self, path: str) -> bool:
        """``path`` was found not to exist less than ``ttl`` seconds ago (and not created here since)."""
        item = self._items.get(path)
        return item is not None and item[1] is None and item[0] >= time.monotonic()

    def put_absent(self, path: str) -> None:
        self._put(path, None)

    def put(self, path: str, entry: Entry) -> None:
        self._put(path, entry)

    def _put(self, path: str, entry: Entry | None) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            self._items.pop(path, None)
            self._items[path] = (time.monotonic() + self.ttl, entry, True)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)

    def stale(self, path: str) -> None:
        """``path``'s attributes changed (an entry was created, removed or renamed in it), its
        identity did not: :meth:`get` forgets it, :meth:`get_dir` keeps it."""
        with self._lock:
            item = self._items.get(path)
            if item is not None:
                if item[1] is None or item[1].type != DIR:
                    del self._items[path]
                else:
                    self._items[path] = (item[0], item[1], False)

    def forget(self, path: str, tree: bool = False) -> None:
        with self._lock:
            self._items.pop(path, None)
            if tree:
                prefix = path.rstrip("/") + "/"
                for p in [p for p in self._items if p.startswith(prefix)]:
                    del self._items[p]


class DirHandle:
    """An open directory: entries are read from the catalog a page at a time, as the kernel asks
    for them, so a huge directory is never held in memory."""

    PAGE = 1000

    def __init__(
        self,
        vd: VDir,
        meta: MetaCache,
        pending: Callable[[str], dict[str, int]],
        path: str,
        entry: Entry,
        attrs: Callable[[Entry], dict[str, int]] | None = None,
    ) -> None:
        self.vd = vd
        self.attrs = attrs or (lambda e: {"st_mode": TYPE_BITS.get(e.type, stat.S_IFREG), "st_ino": e.id})
        self.meta = meta
        self.pending = pending
        self.path = path
        self.entry = entry
        self._gen: Iterator[Item] | None = None
        self._buf: deque[Item] = deque()
        self._next = 1

    def _produce(self) -> Iterator[Item]:
        off = 1
        # every entry carries an inode number: the mount reports the catalog's (use_ino), and
        # glibc's readdir skips an entry whose d_ino is 0
        for name, ino in ((".", self.entry.id), ("..", self.entry.parent_id or self.entry.id)):
            yield name, {"st_mode": stat.S_IFDIR, "st_ino": ino}, off
            off += 1
        after: str | None = None
        seen_pending = self.pending(self.path)
        while True:
            batch = self.vd.children(self.entry.id, after=after, limit=self.PAGE)
            for child in batch:
                seen_pending.pop(child.name, None)
                self.meta.put(paths.join(self.path, child.name), child)
                yield child.name, self.attrs(child), off
                off += 1
            if len(batch) < self.PAGE:
                break
            after = batch[-1].name
        for name in sorted(seen_pending):
            yield name, {"st_mode": stat.S_IFREG, "st_ino": seen_pending[name]}, off
            off += 1

    def items_from(self, offset: int) -> Iterator[Item]:
        """Entries after ``offset`` (the offset of the last one the kernel took)."""
        while self._buf and self._buf[0][2] <= offset:
            self._buf.popleft()
        expected = self._buf[0][2] if self._buf else self._next
        if self._gen is None or offset == 0 or expected != offset + 1:
            self._gen, self._buf, self._next = self._produce(), deque(), 1
            while self._next <= offset:
                if next(self._gen, None) is None:
                    return
                self._next += 1
        yield from list(self._buf)
        for item in self._gen:
            self._buf.append(item)
            self._next = item[2] + 1
            yield item
