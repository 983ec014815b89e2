"""Copies, appends and create-only writes inside the virtual directory (``vd.copy``,
``vd.plan_copy``, ``vd.open(path, "ab"/"xb")``): every one a normal write of the core's protocol
(intent, fresh object, compare-and-set commit), server-side where the store can copy."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

from vdir import objects, paths
from vdir.backends.base import ServerSideCopy, copy_object
from vdir.catalog.base import DIR, FILE, OK, SPECIAL, SYMLINK, Entry, Replica
from vdir.errors import AlreadyExists, Conflict, InvalidArgument, IsADirectory, NotFound
from vdir.filters import Filter, allows
from vdir.streams import RangedReader, SpoolWriter, ordered_replicas

if TYPE_CHECKING:
    from vdir.core import VDir


def plan_copy(vd: VDir, src: str, dst: str, *, recursive: bool = False, force: bool = False,
              filter: Filter | None = None) -> list[tuple[str, str]]:
    """(source, destination) of every file and symbolic link :meth:`copy` would write, after
    the checks ``copy`` makes before moving a byte (same errors); nothing is changed."""
    _, _, _, items = _copy_plan(vd, src, dst, recursive=recursive, force=force, filter=filter)
    return [(s, d) for s, d, e in items if e.type != DIR]


def _copy_plan(vd: VDir, src: str, dst: str, *, recursive: bool, force: bool,
               filter: Filter | None) -> tuple[str, Entry, str, list[tuple[str, str, Entry]]]:
    """Resolve a copy like ``cp`` (into an existing directory), check every destination, and
    list (source, destination, source entry) of what it writes; the top directory itself
    is not in the list."""
    snorm, sentry = vd._resolve(src)
    dnorm = paths.normalize(dst)
    try:
        dentry: Entry | None = vd.catalog.resolve(dnorm)
    except NotFound:
        dentry = None
    if dentry is not None and dentry.type == DIR and dentry.id != sentry.id and snorm != "/":
        dnorm = paths.join(dnorm, sentry.name)
    if sentry.type != DIR:
        _check_copy_target(vd, dnorm, force, sentry.type)
        return snorm, sentry, dnorm, [(snorm, dnorm, sentry)]
    if not recursive:
        raise IsADirectory(f"{snorm}: is a directory (use -r)", path=snorm)
    if paths.is_within(dnorm, snorm):
        raise InvalidArgument(f"cannot copy {snorm} into itself ({dnorm})")
    vd._check_dir_target(dnorm)
    items = []
    for rel, e in vd._walk(sentry.id, snorm):
        if not allows(filter, rel, e.type == DIR):
            continue
        _check_copy_target(vd, paths.join(dnorm, rel), force, e.type)
        items.append((paths.join(snorm, rel), paths.join(dnorm, rel), e))
    return snorm, sentry, dnorm, items


def open_append(vd: VDir, path: str, *, backend: str | None = None, buffering: int = 1024 * 1024) -> IO[bytes]:
    """A writer whose bytes are appended to ``path`` on ``close`` (``path`` is created if missing).

    The written bytes spool to a local temp file; on ``close`` the new content (the old
    content, read back and verified as it streams, followed by the spool) is written as a
    new object and committed with compare-and-set on the version seen at open: if the file
    changed meanwhile, ``close`` raises ``Conflict`` and the other writer's content stays.
    A file that was missing at open is committed create-only (``Conflict`` if someone
    created it meanwhile).  The file stays on its backend unless ``backend`` names another.
    """
    norm = paths.normalize(path)
    try:
        old: Entry | None = vd.catalog.resolve(norm)
    except NotFound:
        old = None
    if old is not None and old.type == DIR:
        raise IsADirectory(f"{norm}: is a directory", path=norm)
    if old is not None and old.type != FILE:
        raise InvalidArgument(f"{norm}: not a regular file (cannot append to a {old.type})", path=norm)
    return io.BufferedWriter(  # type: ignore[type-var]
        SpoolWriter(lambda tail, n: _commit_append(vd, norm, old, tail, n, backend), vd.tmp_dir()),
        buffer_size=buffering,
    )


def _commit_append(vd: VDir, norm: str, old: Entry | None, tail: IO[bytes], n: int, backend: str | None) -> Entry:
    if old is None:
        try:
            return vd.write_stream(norm, tail, backend=backend, size=n)
        except (AlreadyExists, Conflict):
            raise Conflict(f"{norm}: created by another writer while this one was appending; nothing was written",
                           path=norm) from None
    try:
        current: Entry | None = vd.catalog.resolve(norm)
    except NotFound:
        current = None
    if current is None or current.id != old.id or current.version != old.version:
        # removed, replaced or rewritten since open (write_stream's compare-and-set below
        # covers a change during the upload; this covers an entry that is gone or new)
        raise Conflict(f"{norm}: changed since it was opened for appending; nothing was written", path=norm)
    if backend is None and old.replicas:
        backend = old.replicas[0].backend
    head = RangedReader(vd, norm, old)  # a whole sequential read: hash-checked at its end
    try:
        return vd.write_stream(norm, _Concat([head, tail]), backend=backend,  # type: ignore[arg-type]
                                 overwrite=True, size=old.size + n, mode=old.mode, expected_version=old.version)
    finally:
        head.close()


def write_new(vd: VDir, norm: str, src: IO[bytes], size: int | None, backend: str | None) -> Entry:
    """``write_stream`` create-only: ``AlreadyExists`` also when another writer created the
    path while this one uploaded (the catalog insert is unique, so exactly one wins)."""
    try:
        return vd.write_stream(norm, src, backend=backend, overwrite=False, size=size)
    except Conflict as exc:
        if isinstance(exc.__cause__, AlreadyExists):
            raise AlreadyExists(f"{norm}: created by another writer meanwhile; nothing was written", path=norm) from exc
        raise


def copy(vd: VDir, src: str, dst: str, *, recursive: bool = False, force: bool = False,
         backend: str | None = None, filter: Filter | None = None,
         progress: Callable[[int, int], None] | None = None) -> list[Entry]:
    """Copy a file, or with ``recursive`` a directory tree, inside the virtual directory, like
    ``cp`` (``-r``): if ``dst`` is an existing directory the source goes inside it.

    Each copied file gets its own new object (the two paths never share bytes), on
    ``backend`` if given, else on the backend of the source's first healthy replica.  Where
    the source has a replica on that backend and the backend copies server-side, no byte
    passes through vdir and the copy's hash is the source's; otherwise the bytes stream
    through, verified against the source's hash (``IntegrityError``: nothing is committed).
    Each file is committed like any write (fresh key, then a create-only catalog insert, or
    with ``force`` a compare-and-set replace).  Every destination is checked before any
    byte moves; ``AlreadyExists`` for an existing file unless ``force``.  ``filter`` takes
    only matching paths below a copied directory.  ``progress(done, total)`` is called after
    each file or symbolic link (directories are not counted).  Returns the new entries (files,
    symlinks and directories).
    """
    snorm, sentry, dnorm, items = _copy_plan(vd, src, dst, recursive=recursive, force=force, filter=filter)
    if sentry.type != DIR:
        one = _copy_one(vd, snorm, sentry, dnorm, force, backend)
        if progress is not None:
            progress(1, 1)
        return [one]
    out = [vd.mkdir(dnorm, parents=True, exist_ok=True)]
    total = sum(1 for _, _, e in items if e.type != DIR)
    done = 0
    for s, d, e in items:
        if e.type == DIR:
            out.append(vd.mkdir(d, parents=True, exist_ok=True))
        else:
            out.append(_copy_one(vd, s, e, d, force, backend))
            done += 1
            if progress is not None:
                progress(done, total)
    return out


def _check_copy_target(vd: VDir, vpath: str, force: bool, kind: str) -> None:
    if kind == DIR:
        vd._check_dir_target(vpath)
    else:
        vd._check_file_target(vpath, force)


def _copy_one(vd: VDir, snorm: str, sentry: Entry, dnorm: str, force: bool, backend: str | None) -> Entry:
    parent_path, name = paths.split(dnorm)
    parent_id = vd._ensure_dir_id(parent_path)
    existing = vd.catalog.lookup(parent_id, name)
    if existing is not None:
        if existing.type == DIR:
            raise IsADirectory(f"{dnorm}: is a directory", path=dnorm)
        if not force:
            raise AlreadyExists(f"{dnorm}: exists (use force to overwrite)", path=dnorm)
        if existing.id == sentry.id:
            return existing  # a file copied onto itself
    if sentry.type == SYMLINK:
        if existing is not None:
            vd._remove_entries([(dnorm, existing)])
        return vd.symlink(sentry.target or "", dnorm)
    if sentry.type in SPECIAL:
        if existing is not None:
            vd._remove_entries([(dnorm, existing)])
        return vd.mknod(dnorm, sentry.type, sentry.mode, sentry.rdev)
    healthy = [r for r in ordered_replicas(vd, sentry) if r.state == OK]
    bname = vd.choose_backend(backend or (healthy[0].backend if healthy else None))
    store = vd.backend(bname)
    same = next((r for r in healthy if r.backend == bname), None)
    if same is None or not isinstance(store, ServerSideCopy):
        # streamed: a whole sequential read, checked against the source's hash at its end;
        # a mismatch fails the upload, so nothing is stored or committed.  Wrapped so the
        # upload sees a one-pass stream (a rewind and retry would skip the hash check).
        with RangedReader(vd, snorm, sentry) as reader:
            return vd.write_stream(dnorm, _Concat([reader]), backend=bname,  # type: ignore[arg-type]
                                     overwrite=force, size=sentry.size, mode=sentry.mode,
                                     expected_version=existing.version if existing is not None else None)
    old = objects.owned(existing)
    key, key_mode = objects.first_key(store, objects.path_key(dnorm), fresh=existing is not None)
    token = objects.begin_intent(vd.catalog, [(bname, key)] + [(r.backend, r.key) for r in old], "copy")
    meta = copy_object(store, same.key, key, key_mode)
    replica = Replica(backend=bname, key=key, size=sentry.size, hash=sentry.hash or same.hash, etag=meta.etag,
                      state=OK, verified_at=same.verified_at)
    return vd._commit(dnorm, parent_id, existing, replica, token, old, mode=sentry.mode, mtime=None,
                      blocks=sentry.blocks, what="copying")


class _Concat(io.RawIOBase):
    """Read several streams one after the other, as one (the old content, then an append)."""

    def __init__(self, parts: list[IO[bytes]] | list[Any]) -> None:
        super().__init__()
        self._parts = list(parts)

    def readable(self) -> bool:
        return True

    def readinto(self, buf: bytearray | memoryview) -> int:  # type: ignore[override]
        while self._parts:
            data = self._parts[0].read(len(buf))
            if data:
                buf[: len(data)] = data
                return len(data)
            self._parts.pop(0)
        return 0
