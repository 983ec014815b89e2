"""Copies out of the virtual directory to the local filesystem (``vd.get``, and the files
``vd.sync`` writes locally): every file staged under a temp name beside its destination,
verified while it streams, made durable and renamed into place (see :mod:`vdir.localout`)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING

from vdir import localout, paths
from vdir.catalog.base import DIR, FILE, SOCK, SPECIAL, SYMLINK, Entry
from vdir.errors import AlreadyExists, InvalidArgument, IsADirectory, NotADirectory
from vdir.filters import Filter
from vdir.streams import read_verified

if TYPE_CHECKING:
    from vdir.core import Progress, VDir


def get(vd: VDir, src: str, dst: str | os.PathLike[str], *, recursive: bool = False, force: bool = False,
        workers: int = 8, progress: Progress | None = None, filter: Filter | None = None,
        dry_run: bool = False) -> list[Path]:
    """Copy a file (or, with ``recursive``, a directory) to the local filesystem, up to
    ``workers`` files at a time.

    Each file is written to a temp file beside its destination, verified, made durable, then
    renamed into place (a directory's files in batches: synced together, then renamed): a
    failed or interrupted get never leaves a partial file under the real name.  Nothing is
    written through a symbolic link below ``dst`` (``NotADirectory``, raised before any
    byte is written); with ``force`` an existing link is replaced, never its target.
    Each file gets the modification time the catalog records (as ``cp -p`` does).

    ``filter`` (:mod:`vdir.filters`) picks what is taken below a source directory (paths
    relative to it; a single file is matched by its name).  ``dry_run`` makes every check,
    writes nothing and returns the local files that would be written.
    """
    norm, entry = vd._resolve(src)
    if filter is not None and filter.empty:
        filter = None
    dest = Path(os.fsdecode(dst))
    # below the destination the user named, nothing is followed: every directory a recursive
    # get writes into is checked with lstat (localout.DestTree), so a symlink the catalog or
    # an earlier get put there is refused, never written through
    tree, prefix = localout.DestTree(dest), ""
    if dest.is_dir():
        tree, prefix = localout.DestTree(dest), entry.name or "root"
        dest = dest / prefix
    if entry.type != DIR:
        if filter is not None and not filter.matches(entry.name, False):
            return []
        if dry_run:
            if dest.exists() and not force:
                raise AlreadyExists(f"{dest}: exists (use --force to overwrite)")
            return [dest]
        if entry.type in SPECIAL:
            if os.path.lexists(dest) and not force:
                raise AlreadyExists(f"{dest}: exists (use --force to overwrite)")
            return [dest] if localout.make_special(dest, entry.type, entry.mode, entry.rdev, entry.mtime, norm) else []
        return [get_file(vd, norm, entry, dest, force, progress)]
    if not recursive:
        raise IsADirectory(f"{norm}: is a directory (use -r)", path=norm)
    if prefix:
        tree.check(prefix)
    elif dest.exists() and not dest.is_dir():
        raise NotADirectory(f"{dest}: exists and is not a directory")
    items = [(rel, e) for rel, e in vd._walk(entry.id, norm) if filter is None or filter.matches(rel, e.type == DIR)]

    def local_dir(rel: str) -> str:
        """The directory (relative to the tree's root) an item at ``rel`` is written into."""
        return "/".join(p for p in (prefix, rel) if p)

    for d in sorted({local_dir(rel if e.type == DIR else paths.split("/" + rel)[0][1:]) for rel, e in items}):
        tree.check(d)  # all refusals come before the first byte is written
    if not force:
        for rel, e in items:
            if (e.type == FILE or e.type in SPECIAL) and os.path.lexists(dest / rel):
                raise AlreadyExists(f"{dest / rel}: exists (use --force to overwrite)")
    if dry_run:
        return [dest / rel for rel, e in items if e.type == FILE or (e.type in SPECIAL and e.type != SOCK)]
    if prefix:
        tree.ensure(prefix)
    else:
        dest.mkdir(parents=True, exist_ok=True)
    files: list[tuple[str, Entry]] = []
    first_name: dict[int, str] = {}
    """The first name met of each inode with several names (the one whose content is written)"""
    links: list[tuple[str, str]] = []
    for rel, e in items:
        target = dest / rel
        if e.type != DIR and e.nlink > 1:
            if e.id in first_name:  # another name of a file already taken: a hard link, as cp -a/tar make
                tree.ensure(local_dir(paths.split("/" + rel)[0][1:]))
                links.append((first_name[e.id], rel))
                continue
            first_name[e.id] = rel
        if e.type == DIR:
            tree.ensure(local_dir(rel))
        elif e.type == FILE:
            files.append((rel, e))
        elif e.type == SYMLINK and e.target is not None:
            tree.ensure(local_dir(paths.split("/" + rel)[0][1:]))
            with contextlib.suppress(FileExistsError):
                os.symlink(e.target, target)
        elif e.type in SPECIAL:
            tree.ensure(local_dir(paths.split("/" + rel)[0][1:]))
            localout.make_special(target, e.type, e.mode, e.rdev, e.mtime, paths.join(norm, rel))

    def one(item: tuple[str, Entry]) -> tuple[Path, Path]:
        rel, e = item
        tree.ensure(local_dir(paths.split("/" + rel)[0][1:]))
        return stage_file(vd, paths.join(norm, rel), e, dest / rel, progress, sync=False), dest / rel

    # files are staged under temp names in batches; each batch is synced once and renamed
    # into place (see vdir.localout)
    written: list[Path] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for batch in batches(files):
            futures = [pool.submit(one, item) for item in batch]
            try:
                wait(futures)
                failed = next((f.exception() for f in futures if f.exception()), None)
                if failed is not None:
                    raise failed
            except BaseException:  # a failed file or an interrupt: no temp file stays behind
                for f in futures:
                    f.cancel()
                wait(futures)
                localout.discard(f.result()[0] for f in futures if not f.cancelled() and not f.exception())
                raise
            written += localout.publish([f.result() for f in futures])
    linked = [dest / rel for first, rel in links if localout.hard_link(dest / first, dest / rel, paths.join(norm, rel))]
    if linked:
        localout.sync_paths({p.parent for p in linked})  # the new names are durable like the files
    return written + linked

def stage_file(vd: VDir, vpath: str, entry: Entry, dest: Path, progress: Progress | None, *, sync: bool) -> Path:
    if entry.type == SYMLINK:
        raise InvalidArgument(f"{vpath}: is a symbolic link to {entry.target}")
    return localout.stage(dest, lambda out: read_verified(vd, vpath, entry, out, progress), entry.mode, entry.mtime,
                          sync=sync)

def get_file(vd: VDir, vpath: str, entry: Entry, dest: Path, force: bool, progress: Progress | None) -> Path:
    if dest.exists() and not force:
        raise AlreadyExists(f"{dest}: exists (use --force to overwrite)")
    tmp = stage_file(vd, vpath, entry, dest, progress, sync=True)
    try:
        os.replace(tmp, dest)
    except BaseException:
        localout.discard([tmp])
        raise
    localout.sync_paths([dest.parent])
    return dest


def batches(files: list[tuple[str, Entry]]) -> Iterator[list[tuple[str, Entry]]]:
    """``files`` in runs of at most ``localout.BATCH_FILES`` files and about ``BATCH_BYTES`` bytes."""
    batch: list[tuple[str, Entry]] = []
    size = 0
    for item in files:
        batch.append(item)
        size += item[1].size
        if len(batch) >= localout.BATCH_FILES or size >= localout.BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch
