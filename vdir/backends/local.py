"""A folder on a local (or locally mounted) filesystem as an object store: ``file:///srv/objects``.

Keys map to paths below the root.  Writes land atomically: the bytes go to a temp file in the
destination directory, are fsync'ed, then renamed (overwrite) or hard-linked (create-only,
which fails atomically when the name exists) into place, and the directory is fsync'ed.
Temp files start with ``.vdir-tmp-`` and are never listed.

The etag is derived from inode, size and mtime in nanoseconds: every completed put changes it.
``update(etag)`` is checked and applied under an ``flock`` on a lock file in the root, so
writers sharing the folder (threads, processes, hosts on NFS with lock support) serialize.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlsplit

from vdir.backends.base import CHUNK, Backend, BoundedReader, ListResult, Location, ObjectMeta, PutMode, reader
from vdir.errors import (
    AlreadyExists,
    ConfigError,
    Conflict,
    InvalidPath,
    NotFound,
    PermissionDenied,
    VDirError,
)

TMP_PREFIX = ".vdir-tmp-"
LOCK_NAME = ".vdir-lock"


def _translate(name: str, key: str, exc: OSError) -> Exception:
    """The one place filesystem errors become vdir errors."""
    if isinstance(exc, VDirError):
        return exc
    if exc.errno == errno.ENOENT:
        return NotFound(f"{name}: no object {key}", path=key)
    if exc.errno in (errno.EACCES, errno.EPERM):
        return PermissionDenied(f"{name}: permission denied for {key} ({exc.strerror})", path=key)
    if exc.errno in (errno.ENOTDIR, errno.EISDIR, errno.EEXIST):
        return AlreadyExists(f"{name}: {key} clashes with an existing object or folder of that name", path=key)
    if exc.errno == errno.ENAMETOOLONG:
        return InvalidPath(f"{name}: key too long for the filesystem: {key[:80]}...", path=key)
    err = VDirError(f"{name}: {key}: {exc.strerror or exc}")
    err.errno = exc.errno
    return err


_libc: Any = None


def _rename_noreplace(src: Path, dst: Path) -> None:
    """rename(2) that fails with EEXIST instead of replacing: renameat2(RENAME_NOREPLACE) where
    the kernel and filesystem have it, else link + unlink (same guarantee, one more operation)."""
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(None, use_errno=True)
            _libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        except (OSError, AttributeError):
            _libc = False
    if _libc:
        at_fdcwd, rename_noreplace = -100, 1
        if _libc.renameat2(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), rename_noreplace) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise OSError(err, os.strerror(err), str(dst))
    os.link(src, dst)
    os.unlink(src)


def _path_from_url(url: str) -> Path:
    if url.startswith("file:"):
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(f"file URL {url!r} names a host; use file:///absolute/path")
        return Path(unquote(parts.path))
    return Path(os.path.expanduser(url)).resolve()


class LocalBackend(Backend):
    scheme = "file"
    create_only_atomic = True  # create-only is a hard link / a locked dict: atomic

    def __init__(self, name: str, url: str, location: Location | None = None, fsync: bool = True, create: bool = True, **_: Any) -> None:
        super().__init__(name, url, location)
        self.root = _path_from_url(url)
        self.fsync = fsync if isinstance(fsync, bool) else str(fsync).lower() not in ("0", "false", "no")
        if create:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"{name}: cannot create folder {self.root}: {exc.strerror}") from exc
        if not self.root.is_dir():
            raise ConfigError(f"{name}: {self.root} is not a folder")
        self._thread_lock = threading.Lock()

    # -- helpers -----------------------------------------------------------------------------
    def _path(self, key: str) -> Path:
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in key.split("/")):
            raise InvalidPath(f"{self.name}: invalid object key {key!r}", path=key)
        if key.rsplit("/", 1)[-1].startswith(TMP_PREFIX) or key == LOCK_NAME:
            raise InvalidPath(f"{self.name}: key {key!r} uses a reserved name", path=key)
        return self.root / key

    def _etag(self, st: os.stat_result) -> str:
        return f"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"

    def _meta(self, key: str, st: os.stat_result) -> ObjectMeta:
        return ObjectMeta(key, st.st_size, self._etag(st), st.st_mtime)

    def _fsync_dir(self, path: Path) -> None:
        if not self.fsync:
            return
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _update_lock(self) -> Iterator[None]:
        with self._thread_lock, open(self.root / LOCK_NAME, "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    # -- the interface -----------------------------------------------------------------------
    def put(self, key: str, src: IO[bytes], mode: PutMode = PutMode("overwrite"), size: int | None = None) -> ObjectMeta:
        path = self._path(key)
        tmp = path.parent / f"{TMP_PREFIX}{secrets.token_hex(8)}"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.parent.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, "not a directory")
            with open(tmp, "xb") as out:
                while chunk := src.read(CHUNK):
                    out.write(chunk)
                out.flush()
                if self.fsync:
                    os.fsync(out.fileno())
            if mode.kind == "create":
                _rename_noreplace(tmp, path)  # atomic, fails with EEXIST when the key exists
            elif mode.kind == "update":
                with self._update_lock():
                    try:
                        current = self._etag(path.stat())
                    except FileNotFoundError:
                        current = None
                    if current != mode.etag:
                        raise Conflict(f"{self.name}: {key} changed since etag {mode.etag}", path=key)
                    os.replace(tmp, path)
            else:
                if path.is_dir():
                    raise IsADirectoryError(errno.EISDIR, "is a directory")
                os.replace(tmp, path)
            self._fsync_dir(path.parent)
            return self._meta(key, path.stat())
        except FileExistsError as exc:
            raise AlreadyExists(f"{self.name}: {key} already exists", path=key) from exc
        except OSError as exc:
            raise _translate(self.name, key, exc) from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def get(self, key: str, start: int = 0, end: int | None = None) -> IO[bytes]:
        path = self._path(key)
        try:
            if path.is_dir():
                raise FileNotFoundError(errno.ENOENT, "is a folder")
            f = open(path, "rb", buffering=0)
        except OSError as exc:
            raise _translate(self.name, key, exc) from exc
        if start:
            f.seek(start)
        length = None if end is None else max(0, end - start)
        if length is None:
            return reader(f)  # type: ignore[arg-type]
        return reader(BoundedReader(f, length))

    def head(self, key: str) -> ObjectMeta:
        path = self._path(key)
        try:
            st = path.stat()
        except OSError as exc:
            raise _translate(self.name, key, exc) from exc
        if not os.path.isfile(path):
            raise NotFound(f"{self.name}: no object {key}", path=key)
        return self._meta(key, st)

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except IsADirectoryError:
            return
        except OSError as exc:
            raise _translate(self.name, key, exc) from exc
        # Tidy empty folders left behind (another writer may fill one again: ignore that).
        parent = path.parent
        while parent != self.root:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    def _scan(self, folder: Path, rel: str) -> Iterator[tuple[str, os.DirEntry[str], bool]]:
        """(key-ish name, entry, is_dir) of a folder, in the order its keys sort as bytes:
        a folder ``a`` sorts as ``a/`` so that ``a-b`` comes before ``a/x``."""
        try:
            with os.scandir(folder) as it:
                items = []
                for e in it:
                    if e.name.startswith(TMP_PREFIX) or (not rel and e.name == LOCK_NAME):
                        continue
                    is_dir = e.is_dir(follow_symlinks=False)
                    items.append((rel + e.name + ("/" if is_dir else ""), e, is_dir))
        except FileNotFoundError:
            return
        except NotADirectoryError:
            return
        items.sort(key=lambda t: os.fsencode(t[0]))
        yield from items

    def list(self, prefix: str = "") -> Iterator[ObjectMeta]:
        folder_rel, _, _ = prefix.rpartition("/")
        folder_rel = folder_rel + "/" if folder_rel else ""
        yield from self._walk(self.root / folder_rel if folder_rel else self.root, folder_rel, prefix)

    def _walk(self, folder: Path, rel: str, prefix: str) -> Iterator[ObjectMeta]:
        for key, e, is_dir in self._scan(folder, rel):
            if is_dir:
                if key.startswith(prefix) or prefix.startswith(key):
                    yield from self._walk(Path(e.path), key, prefix)
            elif key.startswith(prefix):
                try:
                    st = e.stat(follow_symlinks=True)
                except FileNotFoundError:
                    continue
                yield self._meta(key, st)

    def list_with_delimiter(self, prefix: str = "") -> ListResult:
        if prefix and not prefix.endswith("/"):
            raise InvalidPath(f"{self.name}: list_with_delimiter needs a folder prefix ending in '/', got {prefix!r}")
        objects: list[ObjectMeta] = []
        prefixes: list[str] = []
        for key, e, is_dir in self._scan(self.root / prefix if prefix else self.root, prefix):
            if is_dir:
                if any(True for _ in self._walk(Path(e.path), key, key)):
                    prefixes.append(key)
            else:
                try:
                    objects.append(self._meta(key, e.stat()))
                except FileNotFoundError:
                    continue
        return ListResult(objects, prefixes)
