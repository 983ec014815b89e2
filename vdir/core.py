"""The one API every front end uses: :class:`VDir`.

Writes follow one protocol, which keeps the invariant *the catalog never points at bytes that
are missing or wrong*:

1. stream the bytes to a backend under a fresh key (create-only), hashing as they pass;
2. commit to the catalog with compare-and-set on the entry's version (or a unique insert);
3. only then delete the objects the old version used.

A crash before 2 leaves at most an orphan object, which ``fsck`` reports; a crash after 2
leaves a complete file.  A writer that loses the compare-and-set gets ``Conflict`` and its
object is removed: nothing is lost or mixed.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import stat as stat_mod
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO

from vdir import copying, getting, linking, localin, objects, paths
from vdir import find as find_mod
from vdir import trash as trash_mod
from vdir.access import Access, Principal
from vdir.backends import Backend, PutMode
from vdir.catalog.base import (
    DEVICES,
    DIR,
    FILE,
    OK,
    ROOT_ID,
    SPECIAL,
    SYMLINK,
    BackendRecord,
    Catalog,
    Entry,
    Replica,
)
from vdir.config import Config
from vdir.errors import (
    AlreadyExists,
    Conflict,
    DirectoryNotEmpty,
    InvalidArgument,
    InvalidMode,
    InvalidPath,
    IsADirectory,
    NotADirectory,
    NotFound,
    NotPermitted,
    VDirError,
)
from vdir.filters import Filter
from vdir.guard import Guarded
from vdir.hashing import HashingReader
from vdir.localin import PutPlan
from vdir.objects import LINKED_XATTR
from vdir.opened import OpenedBackends
from vdir.streams import RangedReader, SpoolWriter, read_verified

if TYPE_CHECKING:
    from vdir.sync import SyncReport

log = logging.getLogger("vdir")


Progress = Callable[[int], None]
RM_BATCH = 500
"""Entries removed under one write intent by a recursive ``rm``."""


@dataclass
class Info:
    """What ``ls -l`` and ``stat`` show about one path."""

    path: str
    name: str
    type: str
    size: int
    mtime: float
    mode: int
    hash: str | None = None
    version: int = 0
    target: str | None = None
    replicas: list[dict[str, Any]] = field(default_factory=list)
    rdev: int = 0
    """A device's number (``os.makedev(major, minor)``); 0 for every other type."""
    atime: float = 0.0
    ctime: float = 0.0
    uid: int = 0
    gid: int = 0
    nlink: int = 1
    """Names of this file (hard links); a directory's is 2 plus its subdirectories, as ``stat`` shows."""
    inode: int = 0
    """The catalog's inode id: the names of one file share it (``st_ino`` on the mount)."""

    @classmethod
    def of(cls, path: str, entry: Entry) -> Info:
        return cls(
            rdev=entry.rdev, atime=entry.atime, ctime=entry.ctime, uid=entry.uid, gid=entry.gid, inode=entry.id,
            nlink=2 + entry.subdirs if entry.type == DIR else entry.nlink,
            path=path,
            name=entry.name or "/",
            type=entry.type,
            size=entry.size,
            mtime=entry.mtime,
            mode=entry.mode,
            hash=entry.hash,
            version=entry.version,
            target=entry.target,
            replicas=[asdict(r) for r in entry.replicas],
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Usage:
    files: int = 0
    dirs: int = 0
    bytes: int = 0
    per_backend: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class VDir(Guarded, OpenedBackends):
    """A virtual directory: a catalog plus the backends it names.  Thread-safe.

    Who may do what (principals, the trash, quotas) is :class:`vdir.guard.Guarded`."""

    def __init__(self, catalog: Catalog, config: Config | None = None, default_backend: str | None = None) -> None:
        self.catalog = catalog
        self.config = config
        self.default_backend = default_backend or (config.default_backend if config else None)
        self._backends: dict[str, Backend] = {}
        self._records: dict[str, BackendRecord] = {}
        self._lock = threading.Lock()
        self._opening: dict[str, threading.Lock] = {}  # one thread opens a backend, the others wait for it
        self.principal: Principal | None = None
        """Who is asking; ``None``: standalone, everything allowed (see :mod:`vdir.access`)."""
        self._access: Access | None = None
        self._view = False
        self._trash_keep = trash_mod.load_keep(catalog)  # read once per open: rm never asks again

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        if self._view:
            return  # a view shares its parent's catalog and backends
        for backend in self._backends.values():
            with contextlib.suppress(Exception):
                backend.close()
        self.catalog.close()

    def __enter__(self) -> VDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- lookups -----------------------------------------------------------------------------
    def _resolve(self, path: str, need: str = "read") -> tuple[str, Entry]:
        norm = paths.normalize(path)
        self._allow(norm, need)
        return norm, self.catalog.resolve(norm)

    def exists(self, path: str) -> bool:
        try:
            self._resolve(path)
            return True
        except NotFound:
            return False

    def stat(self, path: str) -> Info:
        norm, entry = self._resolve(path)
        return Info.of(norm, entry)

    def entry(self, path: str) -> Entry:
        return self._resolve(path)[1]

    # -- by entry id (node-level: what an inode-style front end such as the mount needs) -------
    # A front end that already holds a directory's entry asks for its children by id: one index
    # probe on (parent_id, name) instead of resolving the whole path again.  These are thin on
    # purpose; errors are the core's own (vdir.errors, mapped to errno by vdir.errors.to_errno):
    # an unreachable catalog raises CatalogError or BackendUnavailable, as everywhere else.
    @property
    def catalog_url(self) -> str:
        """The catalog's URL (``sqlite:///…``, ``mongodb://…``), or ``""`` when it has none: the
        name of state a front end keeps per catalog (the mount's cache directory)."""
        return self.catalog.url

    def entry_by_id(self, entry_id: int) -> Entry:
        """The entry with this id (one read); ``NotFound`` if there is none (or, for a
        principal, if its path is not theirs to read: checked through its path)."""
        entry = self.catalog.get(entry_id)
        if self._access is not None:
            path = self.catalog.path_of(entry_id)
            if not self._shown(path):
                raise NotFound(f"catalog entry {entry_id} not found")  # what a missing id raises
            self._allow(path, "read")
        return entry

    def _path_of_dir(self, parent_id: int) -> str | None:
        try:
            return "/" if parent_id == ROOT_ID else self.catalog.path_of(parent_id)
        except NotFound:
            return None

    def child(self, parent_id: int, name: str) -> Entry | None:
        """The entry called ``name`` (one path component) in the directory ``parent_id``, or
        ``None`` when there is none (also when ``parent_id`` is gone or not a directory).  One
        index probe (standalone)."""
        if parent_id == ROOT_ID and name == trash_mod.TRASH_DIR:
            return None
        if self._access is not None:
            parent = self._path_of_dir(parent_id)
            if parent is None or not self._shown(paths.join(parent, name)):
                return None
        return self.catalog.lookup(parent_id, name)

    def children(self, parent_id: int, *, after: str | None = None, limit: int | None = None) -> list[Entry]:
        """Entries of the directory ``parent_id`` in name order (UTF-8 byte order), those after
        the name ``after`` only, at most ``limit`` of them: one page of a listing, so a caller
        pages through a huge directory without holding it (pass the last name as ``after``).
        ``[]`` for an empty, missing or non-directory ``parent_id``."""
        page = self.catalog.list(parent_id, after=after, limit=limit)
        if parent_id == ROOT_ID and self._access is None:
            return [e for e in page if e.name != trash_mod.TRASH_DIR]
        if self._access is not None:
            parent = self._path_of_dir(parent_id)
            if parent is None:
                return []
            if not self._access.whole(parent):
                return [e for e in page if self._shown(paths.join(parent, e.name))]
        return page

    def touch_atime(self, entry: Entry, atime: float) -> None:
        """Move ``entry``'s access time forward to ``atime`` (by id): never backward, no new
        version, no effect when the entry is gone.  One catalog write."""
        self.catalog.touch_atime(entry, atime)

    def ls(self, path: str = "/", recursive: bool = False) -> list[Info]:
        """The entries in a directory (or the file itself), sorted by name; ``recursive`` walks."""
        return list(self.iter_ls(path, recursive))

    def iter_ls(self, path: str = "/", recursive: bool = False) -> Iterator[Info]:
        norm, entry = self._resolve(path)
        if entry.type != DIR:
            yield Info.of(norm, entry)
            return
        if recursive:
            for rel, child in self._walk(entry.id, norm):
                yield Info.of(paths.join(norm, rel), child)
        else:
            for child in self._children(entry.id, norm):
                yield Info.of(paths.join(norm, child.name), child)

    def du(self, path: str = "/") -> Usage:
        norm, entry = self._resolve(path)
        usage = Usage()
        items = [entry] if entry.type != DIR else (e for _, e in self._walk(entry.id, norm))
        linked: set[int] = set()
        for e in items:
            if e.type == DIR:
                usage.dirs += 1
                continue
            if e.nlink > 1:  # the names of one inode are one file, counted once (as du does)
                if e.id in linked:
                    continue
                linked.add(e.id)
            usage.files += 1
            usage.bytes += e.size
            for r in e.replicas:
                usage.per_backend[r.backend] = usage.per_backend.get(r.backend, 0) + r.size
        return usage

    # -- globs, find, copy (vdir/find.py, vdir/copying.py; every front end uses these) ------
    def glob(self, pattern: str) -> list[str]:
        return [p for p in find_mod.glob(self, pattern) if self._shown(p)]

    glob.__doc__ = find_mod.glob.__doc__

    def find(self, path: str = "/", *, name: str | None = None, size: str | int | None = None,
             newer: float | str | None = None, type: str | None = None, maxdepth: int | None = None,
             ) -> Iterator[Info]:
        found = find_mod.find(self, path, name=name, size=size, newer=newer, type=type, maxdepth=maxdepth)
        return found if self._access is None else (i for i in found if self._shown(i.path))

    find.__doc__ = find_mod.find.__doc__

    def plan_copy(self, src: str, dst: str, *, recursive: bool = False, force: bool = False,
                  filter: Filter | None = None) -> list[tuple[str, str]]:
        self._allow(paths.normalize(dst), "write")
        return copying.plan_copy(self, src, dst, recursive=recursive, force=force, filter=filter)

    plan_copy.__doc__ = copying.plan_copy.__doc__

    def copy(self, src: str, dst: str, *, recursive: bool = False, force: bool = False,
             backend: str | None = None, filter: Filter | None = None,
             progress: Callable[[int, int], None] | None = None) -> list[Entry]:
        self._allow(paths.normalize(dst), "write")
        if self._access is not None:  # the whole copy against the destination's quota, before a byte moves
            planned = copying.plan_copy(self, src, dst, recursive=recursive, force=force, filter=filter)
            if planned:
                size = sum(self.catalog.resolve(s).size for s, _ in planned)
                self._check_quota(planned[0][1], size, files=len(planned))
        return copying.copy(self, src, dst, recursive=recursive, force=force, backend=backend, filter=filter,
                            progress=progress)

    copy.__doc__ = copying.copy.__doc__






    # -- directories -------------------------------------------------------------------------
    def mkdir(self, path: str, parents: bool = False, exist_ok: bool = False, mode: int = 0o755) -> Entry:
        norm = paths.normalize(path)
        self._allow(norm, "write")
        if norm == "/":
            if parents or exist_ok:
                return self.catalog.root()
            raise AlreadyExists("/: the root directory exists")
        parent_path, name = paths.split(norm)
        parent_id = self._ensure_dir_id(parent_path) if parents else self._dir_id(parent_path)
        try:
            return self.catalog.create(Entry(name=name, type=DIR, parent_id=parent_id, mode=mode, uid=os.getuid(), gid=os.getgid()))
        except AlreadyExists:
            existing = self.catalog.lookup(parent_id, name)
            if existing is not None and existing.type == DIR and (parents or exist_ok):
                return existing
            kind = "directory" if existing is not None and existing.type == DIR else "file"
            raise AlreadyExists(f"{norm}: a {kind} of that name exists", path=norm) from None

    def _dir_id(self, path: str, *, create: bool = False) -> int:
        """Id of the existing directory ``path``: one narrow lookup per component, none for the
        root.  ``NotFound`` / ``NotADirectory`` otherwise; with ``create`` the missing components
        are made (like ``mkdir -p``), one create each."""
        parent = ROOT_ID
        walked = ""
        for name in paths.components(path):
            walked += "/" + name
            found = self.catalog.lookup_id(parent, name)
            if found is None and create:
                try:
                    child = self.catalog.create(Entry(name=name, type=DIR, parent_id=parent, mode=0o755, uid=os.getuid(), gid=os.getgid()))
                    found = (child.id, DIR)
                except AlreadyExists:
                    found = self.catalog.lookup_id(parent, name)
                    if found is None:
                        raise
            if found is None:
                raise NotFound(f"{walked}: no such file or directory", path=walked)
            if found[1] != DIR:
                raise NotADirectory(f"{walked}: not a directory", path=walked)
            parent = found[0]
        return parent

    def _ensure_dir_id(self, path: str) -> int:
        """``_dir_id`` creating what is missing."""
        return self._dir_id(path, create=True)

    def _locate_for_write(self, norm: str, parents: bool) -> tuple[int, Entry | None]:
        """(parent directory id, existing entry or None) of the path a write goes to: *d*
        round trips for a path of depth *d* when the parent exists; with ``parents`` the
        missing directories are created."""
        try:
            parent_id, existing = self.catalog.locate(norm)
        except NotFound:
            if not parents:
                raise
            parent_path, name = paths.split(norm)
            parent_id = self._ensure_dir_id(parent_path)
            existing = self.catalog.lookup(parent_id, name)
        if parent_id is None:  # pragma: no cover - only "/" has no parent, and callers refuse it
            raise IsADirectory(f"{norm}: is the root directory")
        return parent_id, existing

    # -- writing -----------------------------------------------------------------------------
    def write_stream(
        self,
        path: str,
        src: IO[bytes] | BinaryIO,
        *,
        backend: str | None = None,
        overwrite: bool = False,
        size: int | None = None,
        mode: int | None = None,
        mtime: float | None = None,
        progress: Progress | None = None,
        parents: bool = True,
        expected_version: int | None = None,
        _at: tuple[int, Entry | None] | None = None,
    ) -> Entry:
        """Store everything ``src`` yields as the file ``path`` (the write protocol above).

        Raises ``AlreadyExists`` if ``path`` exists and ``overwrite`` is false, ``IsADirectory``
        if it is a directory, ``Conflict`` if someone else changed it meanwhile.
        ``expected_version`` makes an overwrite conditional on the version the caller saw.

        Catalog round trips for a new file at depth *d* whose directory exists: *d* to find it
        (:meth:`Catalog.locate`), one to record the write intent, the create, one to drop the
        intent; replacing a file adds one query for who else uses the old object.  ``_at``
        (``(parent id, existing entry)``, from a caller that has just looked) skips the *d*.
        """
        norm = paths.normalize(path)
        if norm == "/":
            raise IsADirectory("/: is the root directory")
        self._allow(norm, "write")
        parent_id, existing = _at if _at is not None else self._locate_for_write(norm, parents)
        if existing is not None:
            if existing.type == DIR:
                raise IsADirectory(f"{norm}: is a directory", path=norm)
            if not overwrite:
                raise AlreadyExists(f"{norm}: exists (use --force to overwrite)", path=norm)
            if expected_version is not None and existing.version != expected_version:
                raise Conflict(f"{norm}: changed since it was read (version {existing.version})", path=norm)
        self._check_quota(norm, size, replaced=existing)  # before a byte moves, when the size is known
        bname = self.choose_backend(backend)
        store = self.backend(bname)
        old = objects.owned(existing)
        base = objects.path_key(norm)
        first, first_mode = objects.first_key(store, base, fresh=existing is not None or not _seekable(src))
        # the intent names the new object and the ones it replaces: whatever a crash leaves,
        # fsck knows these are vdir's and deletes only those no entry uses
        token = objects.begin_intent(self.catalog, [(bname, first)] + [(r.backend, r.key) for r in old], "put")
        key, meta, reader = self._upload(store, norm, src, size, progress, base, first, first_mode)
        replica = Replica(backend=bname, key=key, size=reader.size, hash=reader.hexdigest, etag=meta.etag, state=OK, verified_at=time.time())
        if key != first:  # another key was needed: name it before the commit can make it live
            moved = objects.begin_intent(self.catalog, [(bname, key)] + [(r.backend, r.key) for r in old], "put")
            objects.end_intent(self.catalog, token)
            token = moved
        if size is None and self._access is not None:  # a stream of unknown size: checked before the commit
            try:
                self._check_quota(norm, reader.size, replaced=existing)
            except BaseException:
                objects.release(self, [replica], norm, token)
                raise
        return self._commit(norm, parent_id, existing, replica, token, old, mode=mode, mtime=mtime,
                            blocks=reader.block_hashes, what="uploading")

    def _commit(self, norm: str, parent_id: int, existing: Entry | None, replica: Replica, token: str,
                old: list[Replica], *, mode: int | None, mtime: float | None, blocks: str | None, what: str) -> Entry:
        """Step 3 of the write protocol for a new object already stored: a create-only insert,
        or compare-and-set on ``existing``; then the replaced objects go (``old``, under the
        intent ``token``).  A lost race removes the new object and raises ``Conflict``."""
        now = time.time()
        name = paths.split(norm)[1]
        try:
            if existing is None:
                entry = self.catalog.create(
                    Entry(
                        name=name, type=FILE, parent_id=parent_id, mode=mode if mode is not None else 0o644,
                        uid=os.getuid(), gid=os.getgid(), size=replica.size, mtime=mtime or now, ctime=now,
                        hash=replica.hash, replicas=[replica], blocks=blocks,
                    )
                )
            else:
                changed = existing.copy(
                    size=replica.size, hash=replica.hash, mtime=mtime or now, ctime=now, replicas=[replica],
                    mode=mode if mode is not None else existing.mode, blocks=blocks,
                )
                changed.xattrs.pop(LINKED_XATTR, None)
                entry = self.catalog.update(changed, existing.version)
        except (AlreadyExists, Conflict, NotFound) as exc:
            objects.release(self, [replica], norm, token)
            raise Conflict(f"{norm}: changed by another writer while this one was {what}; nothing was written", path=norm) from exc
        except BaseException:
            # the commit's outcome is unknown (e.g. catalog unreachable): the intent stays, and
            # fsck deletes the object only if no entry turns out to use it
            raise
        objects.release(self, old, norm, token)
        return entry

    def _upload(self, store: Backend, path: str, src: IO[bytes] | BinaryIO, size: int | None, progress: Progress | None,
                base: str, key: str, mode: PutMode) -> tuple[str, Any, HashingReader]:
        """Stream ``src`` to ``key`` on ``store`` (see :func:`vdir.objects.first_key`); a taken
        key moves to a fresh unique one when ``src`` can be read again."""
        seekable = _seekable(src)
        start = src.tell() if seekable else 0
        for attempt in range(3):
            reader = _ProgressReader(src, progress) if progress else src
            hashing = HashingReader(reader)  # type: ignore[arg-type]
            try:
                meta = store.put(key, hashing, mode, size=size)  # type: ignore[arg-type]
            except AlreadyExists:
                if not seekable or attempt == 2:
                    raise Conflict(f"{path}: object key {key!r} on {store.name} was taken concurrently") from None
                src.seek(start)
                key, mode = objects.unique_key(base), PutMode.OVERWRITE  # type: ignore[attr-defined]
                continue
            if size is not None and hashing.size != size:
                objects.delete_unused(self, [Replica(store.name, key, hashing.size)], path)
                raise Conflict(f"{path}: source changed while it was read ({hashing.size} bytes, expected {size})")
            return key, meta, hashing
        raise AssertionError("unreachable")

    def put(
        self,
        src: str | os.PathLike[str] | bytes | IO[bytes],
        dst: str,
        *,
        backend: str | None = None,
        recursive: bool = False,
        force: bool = False,
        workers: int = 8,
        progress: Progress | None = None,
        follow_symlinks: bool = False,
        filter: Filter | None = None,
        dry_run: bool = False,
    ) -> list[Entry]:
        """Store a local file, directory (with ``recursive``), bytes or a binary stream at ``dst``.

        Like ``cp -r``: if ``dst`` is an existing directory the source goes inside it under its
        own name.  Every name and every destination is checked before any byte moves, so bad
        input leaves nothing written half-way.  With ``recursive``, symbolic links (the source
        itself included) are stored as links, as ``cp -r`` copies them; ``follow_symlinks``
        stores what they point to instead (``cp -rL``).  The returned list holds the files.
        Each file keeps its local modification time (as ``cp -p`` and rclone do).

        ``filter`` (:mod:`vdir.filters`) picks what is taken below a source directory (paths
        relative to it; a single file is matched by its name); ``dry_run`` checks and plans
        everything (see :meth:`plan_put`), writes nothing and returns ``[]``.
        """
        if isinstance(src, (bytes, bytearray, memoryview)):
            data = bytes(src)
            return [self.write_stream(dst, io.BytesIO(data), backend=backend, overwrite=force, size=len(data), progress=progress)]
        if not isinstance(src, (str, os.PathLike)):
            return [self.write_stream(dst, src, backend=backend, overwrite=force, progress=progress)]
        self._allow(paths.normalize(dst), "write")
        plan = self.plan_put(src, dst, recursive=recursive, force=force, follow_symlinks=follow_symlinks, filter=filter)
        bname = self.choose_backend(backend)
        if dry_run:
            return []
        if self._access is not None and plan.files:  # the whole put against the quota, before any byte moves
            total = sum(st.st_size for _, _, st in plan.files)
            self._check_quota(plan.files[0][1], total, files=len(plan.files))
        for d in plan.dirs:
            self.mkdir(d, parents=True, exist_ok=True)
        for target, vpath in plan.links:
            self._make_name(vpath, force, lambda p, t=target: self.symlink(t, p))  # type: ignore[misc]

        def one(item: tuple[Path, str, os.stat_result]) -> Entry:
            local, vpath, st = item
            with open(local, "rb") as fh:
                return self.write_stream(
                    vpath, fh, backend=bname, overwrite=force, size=st.st_size,
                    mode=stat_mod.S_IMODE(st.st_mode), mtime=st.st_mtime, progress=progress, _at=plan.known.get(vpath),
                )

        if len(plan.files) <= 1 or workers <= 1:
            stored = [one(item) for item in plan.files]
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                stored = list(pool.map(one, plan.files))
        for first, vpath in plan.hardlinks:  # the content went up once, under its first name
            there = self.catalog.locate(vpath)[1] if force else None
            if there is not None and there.id == self.entry(first).id:
                stored.append(there)  # already that name of that file (put again with --force)
                continue
            stored.append(self._make_name(vpath, force, lambda p, f=first: self.hardlink(f, p)))  # type: ignore[misc]
        return stored

    def _make_name(self, vpath: str, force: bool, make: Callable[[str], Entry]) -> Entry:
        """Create a link at ``vpath`` with ``make``; with ``force`` an existing file there is
        replaced in one rename (made under a temp name first), like a file put with ``--force``."""
        if not (force and self.exists(vpath)):
            return make(vpath)
        tmp = f"{vpath}.~{os.urandom(4).hex()}"
        make(tmp)
        return self.rename(tmp, vpath, replace=True)

    def plan_put(self, src: str | os.PathLike[str], dst: str, *, recursive: bool = False, force: bool = False,
                 follow_symlinks: bool = False, filter: Filter | None = None) -> PutPlan:
        self._allow(paths.normalize(dst), "write")
        return localin.plan_put(self, src, dst, recursive=recursive, force=force, follow_symlinks=follow_symlinks,
                                filter=filter)

    plan_put.__doc__ = localin.plan_put.__doc__

    def _check_dir_target(self, vpath: str) -> None:
        try:
            e = self.catalog.resolve(vpath)
        except NotFound:
            return
        if e.type != DIR:
            raise NotADirectory(f"{vpath}: exists and is not a directory", path=vpath)

    def _check_file_target(self, vpath: str, force: bool, at: tuple[int, Entry | None] | None = None) -> None:
        """Refuse a file write to ``vpath`` that would meet a directory, or an existing file
        without ``force``; ``at`` is what :meth:`Catalog.locate` just said about it."""
        if at is not None:
            e = at[1]
            if e is None:
                return
        else:
            try:
                e = self.catalog.resolve(vpath)
            except NotFound:
                return
        if e.type == DIR:
            raise IsADirectory(f"{vpath}: is a directory", path=vpath)
        if not force:
            raise AlreadyExists(f"{vpath}: exists (use --force to overwrite)", path=vpath)

    # -- reading -----------------------------------------------------------------------------
    def open(self, path: str, mode: str = "rb", *, backend: str | None = None, buffering: int = 1024 * 1024) -> IO[bytes]:
        """``rb``: a seekable reader (ranged reads, replica failover, hash checked when read in
        full).  ``wb``: a writer whose content is committed on ``close``.  ``xb``: create only
        (``AlreadyExists`` at open if the path exists, and at ``close`` if another writer created
        it meanwhile: the commit itself is create-only).  ``ab``: append (see :func:`vdir.copying.open_append`).
        Any other mode raises ``InvalidMode`` (a ``ValueError``)."""
        if mode in ("ab", "a"):
            self._allow(paths.normalize(path), "write")
            return copying.open_append(self, path, backend=backend, buffering=buffering)
        if mode in ("rb", "r"):
            norm, entry = self._resolve(path)
            if entry.type == DIR:
                raise IsADirectory(f"{norm}: is a directory", path=norm)
            return io.BufferedReader(RangedReader(self, norm, entry), buffer_size=buffering)
        if mode in ("wb", "w", "xb", "x"):
            norm = paths.normalize(path)
            self._allow(norm, "write")
            overwrite = not mode.startswith("x")
            if not overwrite:
                self._check_file_target(norm, force=False)
            return io.BufferedWriter(  # type: ignore[type-var]
                SpoolWriter(lambda f, n: self.write_stream(norm, f, backend=backend, overwrite=overwrite, size=n)
                            if overwrite else copying.write_new(self, norm, f, n, backend), self.tmp_dir()),
                buffer_size=buffering,
            )
        raise InvalidMode(f"unsupported open mode {mode!r} (use 'rb', 'wb', 'ab' or 'xb')")




    def rmdir(self, path: str) -> None:
        """Remove an empty directory: ``NotADirectory`` for anything else, ``DirectoryNotEmpty``
        if it has entries.  The delete is conditional on the entry seen (never removes a file
        that replaced the directory meanwhile)."""
        norm, entry = self._resolve(path, "write")
        if entry.type != DIR:
            raise NotADirectory(f"{norm}: not a directory", path=norm)
        if norm == "/":
            raise InvalidArgument("refusing to remove the root directory")
        if self.catalog.list(entry.id, limit=1):
            raise DirectoryNotEmpty(f"{norm}: directory not empty", path=norm)
        self.catalog.delete(entry.id, expected_version=entry.version)




    def read_to(self, path: str, sink: IO[bytes], progress: Progress | None = None) -> Entry:
        """Write the verified content of ``path`` into the seekable ``sink``."""
        norm, entry = self._resolve(path)
        if entry.type == DIR:
            raise IsADirectory(f"{norm}: is a directory (use -r)", path=norm)
        read_verified(self, norm, entry, sink, progress)
        return entry

    def cat(self, path: str) -> bytes:
        """The whole verified content of a file."""
        buf = io.BytesIO()
        self.read_to(path, buf)
        return buf.getvalue()

    def cat_to(self, path: str, out: IO[bytes]) -> None:
        """Stream verified content to a non-seekable ``out`` (stdout): spooled first, so only
        bytes that matched the hash are ever written."""
        with tempfile.SpooledTemporaryFile(max_size=64 * 1024 * 1024, dir=self.tmp_dir()) as spool:
            self.read_to(path, spool)  # type: ignore[arg-type]
            spool.seek(0)
            shutil.copyfileobj(spool, out, 1024 * 1024)

    def get(self, src: str, dst: str | os.PathLike[str], *, recursive: bool = False, force: bool = False,
            workers: int = 8, progress: Progress | None = None, filter: Filter | None = None,
            dry_run: bool = False) -> list[Path]:
        return getting.get(self, src, dst, recursive=recursive, force=force, workers=workers, progress=progress,
                           filter=filter, dry_run=dry_run)

    get.__doc__ = getting.get.__doc__

    def _record_lazy_hash(self, entry: Entry, digest: str, blocks: str | None = None) -> None:
        """A linked object's hash, learned on its first full read, is recorded (best effort),
        and so are the block hashes of an entry that has none (compare-and-set on its version:
        if the entry changed meanwhile nothing is recorded)."""
        if entry.hash is not None and entry.hash != digest:
            return
        changed = entry.copy(hash=digest, blocks=blocks or entry.blocks)
        for r in changed.replicas:
            r.hash = r.hash or digest
        try:
            updated = self.catalog.update(changed, entry.version)
            entry.hash, entry.version, entry.blocks = updated.hash, updated.version, updated.blocks
        except VDirError as exc:
            log.debug("could not record lazy hash: %s", exc)

    # -- namespace changes -------------------------------------------------------------------
    def rm(self, path: str, recursive: bool = False, *, filter: Filter | None = None, dry_run: bool = False) -> int:
        """Remove a file, symlink or (with ``recursive``) a directory tree; return the number of
        entries removed.  The catalog entry goes first, then the objects no entry uses any more
        (under a write intent: an object left behind by a failure is one fsck may delete, never
        a dangling catalog entry).

        With ``filter`` (:mod:`vdir.filters`), only the files and links it matches are removed
        (paths relative to ``path``; a single file by its name) and directories stay, as with
        ``rclone delete``.  ``dry_run`` removes nothing and returns how many entries would go;
        :meth:`plan_rm` lists them."""
        doomed = self.plan_rm(path, recursive, filter=filter)  # deepest first: a directory after its contents
        if not dry_run and self._trash_keep > 0 and doomed:
            # to the trash: the top entry (or each filtered file), one rename each
            tops = [doomed[-1]] if filter is None or filter.empty else doomed
            trash_mod.move(self, tops, self._trash_keep)
            return len(doomed)
        if not dry_run:
            for i in range(0, len(doomed), RM_BATCH):
                self._remove_entries(doomed[i : i + RM_BATCH])
        return len(doomed)

    def plan_rm(self, path: str, recursive: bool = False, *, filter: Filter | None = None) -> list[tuple[str, Entry]]:
        """(path, entry) of everything ``rm`` with these arguments removes, deepest first; raises
        what ``rm`` raises for bad arguments, having changed nothing."""
        norm, entry = self._resolve(path, "write")
        if norm == "/" and (filter is None or filter.empty):
            raise InvalidArgument("refusing to remove the root directory")
        if filter is not None and not filter.empty:
            if entry.type != DIR:
                return [(norm, entry)] if filter.matches(entry.name, False) else []
            if not recursive:
                raise IsADirectory(f"{norm}: is a directory (use -r)", path=norm)
            return [(paths.join(norm, rel), e) for rel, e in self._walk(entry.id, norm)
                    if e.type != DIR and filter.matches(rel, False)]
        if entry.type != DIR:
            return [(norm, entry)]
        if not recursive:
            if self.catalog.list(entry.id, limit=1):
                raise DirectoryNotEmpty(f"{norm}: directory not empty (use -r)", path=norm)
            return [(norm, entry)]
        items = [(paths.join(norm, rel), e) for rel, e in self._walk(entry.id, norm)]
        items.sort(key=lambda it: it[0].count("/"), reverse=True)
        return items + [(norm, entry)]

    def _remove_entries(self, batch: list[tuple[str, Entry]]) -> None:
        """Delete these entries (compare-and-set on the version read; deepest first), then
        their objects: one intent, one bulk delete of the files and links, one durability wait
        and one query for the objects' other users for the whole batch; directories go one by
        one after, each with its emptiness check.  A file or link that changed meanwhile is
        kept and raises ``Conflict`` (the rest of the batch is gone)."""
        owned = [r for _, e in batch for r in objects.owned(e)]
        token = objects.begin_intent(self.catalog, ((r.backend, r.key) for r in owned), "rm") if owned else None
        try:
            leaves = [e for _, e in batch if e.type != DIR]
            kept = self.catalog.delete_entries(leaves) if leaves else []
            if kept:
                where = next(p for p, e in batch if e.id == kept[0].id)
                raise Conflict(f"{where}: changed by another writer while it was being removed; kept "
                               f"({len(kept)} changed entr{'y' if len(kept) == 1 else 'ies'} in all)", path=where)
            for _, e in batch:
                if e.type == DIR:
                    self.catalog.delete(e.id, expected_version=e.version)
        finally:
            if token:
                objects.release(self, owned, batch[0][0], token)

    def mv(self, src: str, dst: str, *, force: bool = False) -> Entry:
        """Rename or move a file or directory (one catalog write, whatever lies below).

        If ``dst`` is an existing directory the source moves inside it.  An existing file at
        the destination is replaced only with ``force``."""
        snorm, sentry = self._resolve(src, "write")
        if snorm == "/":
            raise InvalidArgument("cannot move the root directory")
        dnorm = paths.normalize(dst)
        self._allow(dnorm, "write")
        try:
            dentry: Entry | None = self.catalog.resolve(dnorm)
        except NotFound:
            dentry = None
        if dentry is not None and dentry.type == DIR and dentry.id != sentry.id:
            parent, name = dentry, sentry.name
            dnorm = paths.join(dnorm, name)
        else:
            ppath, name = paths.split(dnorm)
            parent = self.catalog.resolve(ppath)
            if parent.type != DIR:
                raise NotADirectory(f"{ppath}: not a directory", path=ppath)
        if sentry.type == DIR and paths.is_within(dnorm, snorm):
            raise InvalidArgument(f"cannot move {snorm} into itself ({dnorm})")
        self._check_move_quota(snorm, sentry, dnorm)
        return self.rename(snorm, dnorm, replace=force, _resolved=(sentry, parent, name))

    def rename(self, src: str, dst: str, *, replace: bool = True, _resolved: tuple[Entry, Entry, str] | None = None) -> Entry:
        """POSIX ``rename(2)``: atomic, replacing a file or empty directory at ``dst`` when
        ``replace`` (the FUSE layer's semantics)."""
        if _resolved is None:
            snorm, sentry = self._resolve(src, "write")
            dnorm = paths.normalize(dst)
            self._allow(dnorm, "write")
            ppath, name = paths.split(dnorm)
            parent = self.catalog.resolve(ppath)
            self._check_move_quota(snorm, sentry, dnorm)
        else:
            sentry, parent, name = _resolved
            dnorm = paths.normalize(dst)
        target = self.catalog.lookup(parent.id, name) if replace else None
        owned = objects.owned(target)
        token = objects.begin_intent(self.catalog, ((r.backend, r.key) for r in owned), "rename") if owned else None
        try:
            moved, replaced = self.catalog.rename(sentry.id, parent.id, name, replace_existing=replace,
                                                  expected_version=sentry.version, source=self._name_of(sentry))
        except BaseException:
            if token:
                objects.end_intent(self.catalog, token)
            raise
        if replaced is not None and target is not None and (replaced.id, replaced.version) == (target.id, target.version):
            objects.release(self, owned, dnorm, token)
            return moved
        if token:
            objects.end_intent(self.catalog, token)
        if replaced is not None:  # a newer version than the one looked up was replaced
            objects.release(self, objects.owned(replaced), dnorm)
        return moved

    def update_entry(self, path: str, **changes: Any) -> Entry:
        """Set metadata fields (mode, uid, gid, mtime, xattrs...) with compare-and-set, retrying
        on a concurrent change of other fields."""
        for _ in range(10):
            _, entry = self._resolve(path, "write")
            try:
                return self.catalog.update(entry.copy(ctime=time.time(), **changes), entry.version)
            except Conflict:
                continue
        raise Conflict(f"{path}: kept changing while its attributes were set", path=path)

    def mknod(self, path: str, kind: str, mode: int = 0o644, rdev: int = 0, *, uid: int | None = None,
              gid: int | None = None) -> Entry:
        """Create a special file: ``kind`` is ``"fifo"``, ``"chr"``, ``"blk"`` or ``"sock"``
        (:data:`~vdir.catalog.base.SPECIAL`), ``rdev`` a device's number (devices only).  It is a
        catalog entry only: no object on any backend.  ``AlreadyExists`` if the name is taken."""
        norm = paths.normalize(path)
        self._allow(norm, "write")
        if kind not in SPECIAL:
            raise InvalidArgument(f"{kind!r} is not a special file type (one of {', '.join(SPECIAL)})")
        if rdev and kind not in DEVICES:
            raise InvalidArgument(f"{norm}: only a device has a device number")
        if norm == "/":
            raise AlreadyExists("/: the root directory exists")
        parent_path, name = paths.split(norm)
        entry = Entry(name=name, type=kind, parent_id=self._dir_id(parent_path), mode=mode & 0o7777, rdev=rdev,
                      uid=os.getuid() if uid is None else uid, gid=os.getgid() if gid is None else gid)
        try:
            return self.catalog.create(entry)
        except AlreadyExists:
            raise AlreadyExists(f"{norm}: exists", path=norm) from None

    def hardlink(self, existing: str, new: str) -> Entry:
        """POSIX ``link(2)``: ``new`` becomes another name of the file at ``existing`` (a file, a
        symbolic link — not followed — or a special file; ``NotPermitted`` for a directory).  The
        names share one inode: its content (stored once), replicas, mode and times; a change
        through one is seen through every other, and the content goes when the last name does.
        ``AlreadyExists`` if ``new`` exists.  One catalog write; no bytes move."""
        snorm, sentry = self._resolve(existing, "write")  # the names share the inode: a change through one is seen by all
        norm = paths.normalize(new)
        self._allow(norm, "write")
        if norm == "/":
            raise AlreadyExists("/: the root directory exists")
        parent_path, name = paths.split(norm)
        try:
            return self.catalog.link(sentry.id, self._dir_id(parent_path), name)
        except AlreadyExists:
            raise AlreadyExists(f"{norm}: exists", path=norm) from None
        except NotPermitted:
            raise NotPermitted(f"{snorm}: is a directory (directories cannot have hard links)", path=snorm) from None
        except NotFound:
            raise NotFound(f"{snorm}: no such file (removed meanwhile)", path=snorm) from None

    @staticmethod
    def _name_of(entry: Entry) -> tuple[int, str] | None:
        """Which name of ``entry`` a rename moves: the one it was looked up by."""
        return (entry.parent_id, entry.name) if entry.parent_id is not None else None

    def symlink(self, target: str, path: str) -> Entry:
        norm = paths.normalize(path)
        self._allow(norm, "write")
        parent_path, name = paths.split(norm)
        parent = self.catalog.resolve(parent_path)
        if not target or "\x00" in target:
            raise InvalidPath("symlink target must be a non-empty string without NUL")
        return self.catalog.create(Entry(name=name, type=SYMLINK, parent_id=parent.id, mode=0o777, size=len(target.encode()), target=target, uid=os.getuid(), gid=os.getgid()))

    def readlink(self, path: str) -> str:
        norm, entry = self._resolve(path)
        if entry.type != SYMLINK or entry.target is None:
            raise InvalidArgument(f"{norm}: not a symbolic link", path=norm)
        return entry.target

    # -- registering objects that already exist ---------------------------------------------
    def backend_for_url(self, url: str) -> tuple[str, str]:
        """(backend name, key) of the registered backend whose URL is a prefix of ``url``."""
        best: tuple[str, str] | None = None
        for record in self.catalog.list_backends():
            base = record.url.rstrip("/")
            if url == base or url.startswith(base + "/"):
                key = url[len(base) + 1 :]
                if best is None or len(record.url) > len(best[0]):
                    best = (record.name, key)
        if best is None:
            raise NotFound(f"no registered backend covers {url}; add one with 'vdir backend add NAME URL'")
        return best

    def link(self, url: str, vpath: str, *, compute_hash: bool = False, force: bool = False) -> Entry:
        self.require_admin()  # it reads a backend's objects by URL, whoever owns them
        self._allow(paths.normalize(vpath), "write")
        return linking.link(self, url, vpath, compute_hash=compute_hash, force=force)

    link.__doc__ = linking.link.__doc__

    def import_prefix(self, url: str, vpath: str, *, compute_hash: bool = False, force: bool = False) -> list[Entry]:
        self.require_admin()
        self._allow(paths.normalize(vpath), "write")
        return linking.import_prefix(self, url, vpath, compute_hash=compute_hash, force=force)

    import_prefix.__doc__ = linking.import_prefix.__doc__

    # -- sync ---------------------------------------------------------------------------------
    def sync(self, src: str | os.PathLike[str], dst: str | os.PathLike[str], *, checksum: bool = False,
             delete: bool = False, dry_run: bool = False, filter: Filter | None = None, workers: int = 8,
             progress: Progress | None = None, backend: str | None = None) -> SyncReport:
        """Make DST equal to SRC, sending only what differs; virtual paths are written
        ``vdir:/path``, anything else is local.  See :mod:`vdir.sync` for what is compared,
        what is atomic and what is raised."""
        from vdir.sync import parse_location, sync

        for spec, need in ((src, "read"), (dst, "write")):
            where = parse_location(spec)
            if where.virtual:
                self._allow(where.path, need)
        return sync(self, src, dst, checksum=checksum, delete=delete, dry_run=dry_run, filter=filter, workers=workers,
                    progress=progress, backend=backend)

    # -- misc ---------------------------------------------------------------------------------
    def _path_or_id(self, entry_id: int) -> str:
        try:
            return self.catalog.path_of(entry_id)
        except VDirError:
            return f"<entry {entry_id}>"

    def tmp_dir(self) -> str | None:
        if self.config is None:
            return None
        from vdir.config import data_dir

        d = data_dir() / "tmp"
        d.mkdir(parents=True, exist_ok=True)
        return str(d)


class _ProgressReader:
    def __init__(self, raw: IO[bytes] | BinaryIO, progress: Progress) -> None:
        self.raw = raw
        self.progress = progress

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        if data:
            self.progress(len(data))
        return data

    def close(self) -> None:
        self.raw.close()




def _seekable(src: Any) -> bool:
    try:
        return bool(src.seekable()) and isinstance(src.tell(), int)
    except (AttributeError, OSError, ValueError):
        return False
