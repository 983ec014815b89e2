"""Writing copies to the local filesystem so that no one ever sees half of one.

Each file is written to a temp name beside its destination and renamed into place only once
its bytes are durable: an interrupted ``get`` never leaves a partial file under the real name,
and a power cut never leaves an empty one there.  Many files are made durable together, with
one ``syncfs`` per batch instead of one ``fsync`` per file (on ext4 every fsync is a journal
commit; with a thousand small files the fsyncs took most of the time).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO

from vdir import paths
from vdir.errors import NotADirectory

log = logging.getLogger("vdir.localout")

BATCH_FILES = 512
BATCH_BYTES = 512 * 1024 * 1024
"""A batch is published (synced, then renamed into place) after this many files or bytes."""

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_syncfs = getattr(_libc, "syncfs", None)


def stage(dest: Path, fill: Callable[[IO[bytes]], object], mode: int, mtime: float, *, sync: bool) -> Path:
    """Write a temp file beside ``dest`` with ``fill``, with ``mode`` and ``mtime`` set (and
    fsync'ed with ``sync``); the temp file is removed if anything fails."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{paths.fit(dest.name, 100)}.", suffix=".vdir-part", dir=dest.parent)
    try:
        with os.fdopen(fd, "w+b") as out:
            fill(out)
            os.fchmod(out.fileno(), mode & 0o777)
            out.flush()
            if sync:
                os.fsync(out.fileno())
        os.utime(tmp, (mtime, mtime))
    except BaseException:
        discard([tmp])
        raise
    return Path(tmp)


def hard_link(existing: Path, dest: Path, vpath: str) -> bool:
    """Make ``dest`` another name of ``existing`` (a file ``get -r`` wrote, never followed if it
    is a symbolic link), replacing a non-directory at ``dest``, as ``cp -a`` does for the names
    of one inode.  Where the filesystem has no hard links the content is copied instead (with a
    warning).  False if ``existing`` was not written (a socket, a device without root)."""
    if not os.path.lexists(existing):
        return False
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISDIR(os.lstat(dest).st_mode):
            os.unlink(dest)
    try:
        os.link(existing, dest, follow_symlinks=False)
    except OSError as exc:
        if not stat.S_ISREG(os.lstat(existing).st_mode):
            raise
        log.warning("%s: hard link not made here (%s); copied instead", vpath, exc.strerror)
        shutil.copy2(existing, dest)
        sync_paths([dest])
    return True


def make_special(dest: Path, kind: str, mode: int, rdev: int, mtime: float, vpath: str) -> bool:
    """Recreate a special file of the catalog at ``dest`` where this system allows it, as
    ``cp -a`` and ``tar`` do: a FIFO always, a device node when running as root (else skipped
    with a warning), never a socket (a socket file means nothing without its server: skipped
    with a warning).  An existing non-directory at ``dest`` is replaced.  True if made."""
    import stat as stat_mod

    if kind == "sock":
        log.warning("%s: socket not copied (a socket cannot be recreated; tar and cp -a skip them too)", vpath)
        return False
    with contextlib.suppress(FileNotFoundError):
        if not stat_mod.S_ISDIR(os.lstat(dest).st_mode):
            os.unlink(dest)
    try:
        if kind == "fifo":
            os.mkfifo(dest, mode & 0o7777)
        else:
            os.mknod(dest, (stat_mod.S_IFCHR if kind == "chr" else stat_mod.S_IFBLK) | (mode & 0o7777), rdev)
    except PermissionError:
        log.warning("%s: device node not copied (creating device nodes needs root)", vpath)
        return False
    os.chmod(dest, mode & 0o7777)  # the umask applied to mkfifo/mknod
    os.utime(dest, (mtime, mtime))
    return True


class DestTree:
    """The directories below ``root`` that a recursive get writes into, made and checked one
    component at a time with ``lstat``: a symbolic link (or any non-directory) below ``root`` is
    refused with ``NotADirectory``, so nothing is ever written through a link, whether the
    catalog or an earlier get put it there.  ``root`` itself is the user's choice and may be a
    link (as with ``cp``).  Checked directories are remembered; thread-safe."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._checked: set[str] = {""}
        self._lock = threading.Lock()

    def check(self, rel: str) -> None:
        """Raise if an existing component of ``rel`` (a directory below root) is not a real
        directory; missing components are fine.  Creates nothing."""
        self._walk(rel, create=False)

    def ensure(self, rel: str) -> Path:
        """Create the directory ``rel`` below root (and its parents), refusing links."""
        return self._walk(rel, create=True)

    def _walk(self, rel: str, *, create: bool) -> Path:
        parts = [p for p in rel.split("/") if p]
        done = ""
        with self._lock:
            for part in parts:
                done = f"{done}/{part}" if done else part
                if done in self._checked:
                    continue
                p = self.root / done
                try:
                    st = os.lstat(p)
                except FileNotFoundError:
                    if not create:
                        return self.root / rel
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(p, 0o777)
                    st = os.lstat(p)  # what is there now (a racing writer may have put a link)
                if stat.S_ISLNK(st.st_mode):
                    raise NotADirectory(f"{p}: is a symbolic link; get never writes through links (remove it first)")
                if not stat.S_ISDIR(st.st_mode):
                    raise NotADirectory(f"{p}: exists and is not a directory")
                if create:
                    self._checked.add(done)
        return self.root / rel


def discard(paths: Iterable[str | Path]) -> None:
    for p in paths:
        with contextlib.suppress(OSError):
            os.unlink(p)


def sync_paths(paths: Iterable[Path]) -> None:
    """Make ``paths`` (files or directories) durable: ``syncfs`` once per filesystem holding
    several of them, else (one path, no ``syncfs``, or it failed) ``fsync`` of each."""
    by_device: dict[int, list[Path]] = {}
    for p in paths:
        by_device.setdefault(os.stat(p).st_dev, []).append(p)
    for group in by_device.values():
        if len(group) > 1 and _syncfs is not None and _sync_filesystem(group[0]):
            continue
        for p in group:
            _fsync(p)


def _sync_filesystem(p: Path) -> bool:
    fd = os.open(p, os.O_RDONLY)
    try:
        if _syncfs(fd) == 0:  # type: ignore[misc]
            return True
        log.debug("syncfs %s: %s; falling back to fsync", p, os.strerror(ctypes.get_errno()))
        return False
    finally:
        os.close(fd)


def _fsync(p: Path) -> None:
    fd = os.open(p, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(staged: list[tuple[Path, Path]]) -> list[Path]:
    """Sync the staged temp files, rename each onto its destination, then sync the directories
    (so the new names are durable too).  Returns the destinations."""
    if not staged:
        return []
    try:
        sync_paths(tmp for tmp, _ in staged)
        for tmp, dest in staged:
            os.replace(tmp, dest)
    except BaseException:
        discard(tmp for tmp, _ in staged)  # those already renamed are gone from their temp names
        raise
    sync_paths({dest.parent for _, dest in staged})
    return [dest for _, dest in staged]
