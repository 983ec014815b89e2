"""``sync SRC DST``: make the destination tree equal to the source tree, sending only what differs.

Locations: a virtual path is written ``vdir:/path`` (``vdir:path`` and ``vdir:`` for the root
also work), like rclone's ``remote:path``; anything else is a local path.  Python callers may
also pass a :class:`pathlib.Path` for a local one.  All three directions work: local→vdir,
vdir→local and vdir→vdir (local→local is refused: use rsync).

As with ``rclone sync``, the *contents* of SRC go into DST (``sync ./data vdir:/data`` puts
``./data/a`` at ``/data/a``).  A file is skipped when the destination holds one of the same
size and modification time (within :data:`MODIFY_WINDOW`), or with ``checksum`` the same
size and content hash (the catalog knows its files' sizes and hashes without listing a
backend; local files are hashed with :mod:`vdir.hashing`; where a hash is unknown, size
alone decides, as in rclone) — a file whose content matches but whose time differs then only
gets its time set.  Symbolic links are not synced.

Every file is sent through the core's own write paths (``write_stream``, staged local writes,
``copy``), so each one is verified and committed atomically on its own: a sync killed half-way
leaves every file either complete or untouched, and running it again sends only the rest.
Destination-only files are removed (``delete``) after the transfers, through the core's normal
``rm`` (so objects go through :mod:`vdir.objects`' safe deletion), then destination-only
directories left empty.  Filtered-out paths are neither sent nor deleted.  ``dry_run`` works
the plan out and changes nothing.
"""

from __future__ import annotations

import os
import stat as stat_mod
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vdir import getting, localout, paths
from vdir.catalog.base import DIR, FILE, Entry
from vdir.errors import InvalidArgument, NotADirectory, NotFound
from vdir.filters import Filter
from vdir.hashing import hash_stream

if TYPE_CHECKING:
    from vdir.core import VDir

PREFIX = "vdir:"
MODIFY_WINDOW = 0.001
"""Seconds two modification times may differ and still count as the same (float round trips)."""
BATCH = 256
"""Local files written by a vdir→local sync are made durable and renamed in batches of this many."""


@dataclass
class Location:
    """One end of a sync: a virtual path (``virtual``) or a local one."""

    virtual: bool
    path: str

    def __str__(self) -> str:
        return f"{PREFIX}{self.path}" if self.virtual else self.path


def parse_location(spec: str | os.PathLike[str]) -> Location:
    """``vdir:/x`` -> virtual ``/x``; a ``Path`` or any other string -> local."""
    if isinstance(spec, os.PathLike):
        return Location(False, os.fspath(spec))
    if spec.startswith(PREFIX):
        return Location(True, paths.normalize(spec[len(PREFIX):] or "/"))
    if not spec:
        raise InvalidArgument("empty path")
    return Location(False, spec)


@dataclass
class Item:
    """A file seen on one side: size, mtime, hash (virtual side, or computed), and where it is."""

    size: int
    mtime: float
    hash: str | None = None
    entry: Entry | None = None
    local: str | None = None


@dataclass
class SyncReport:
    """What a sync did (or, with ``dry_run``, would do).  Paths are relative to SRC/DST."""

    src: str
    dst: str
    dry_run: bool = False
    copied: list[str] = field(default_factory=list)
    """Files new at the destination."""
    updated: list[str] = field(default_factory=list)
    """Files replaced at the destination (they differed)."""
    touched: list[str] = field(default_factory=list)
    """Files whose content matched (``checksum``) and only had their time set."""
    deleted: list[str] = field(default_factory=list)
    """Files and directories removed from the destination (``delete``)."""
    skipped: int = 0
    """Files already identical."""
    bytes: int = 0
    """Bytes sent (or to send)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def actions(self) -> Iterator[tuple[str, str]]:
        """(verb, relative path) for every change, in the order they are made."""
        for rel in self.copied:
            yield "copy", rel
        for rel in self.updated:
            yield "update", rel
        for rel in self.touched:
            yield "touch", rel
        for rel in self.deleted:
            yield "delete", rel


# -- scanning ----------------------------------------------------------------------------------
def _scan_local(root: str, flt: Filter | None) -> tuple[dict[str, Item], set[str]] | None:
    """Files and directories below ``root`` (relative paths), or None if it does not exist."""
    try:
        st = os.stat(root)
    except FileNotFoundError:
        return None
    if not stat_mod.S_ISDIR(st.st_mode):
        raise NotADirectory(f"{root}: not a directory (sync works on directories)")
    files: dict[str, Item] = {}
    dirs: set[str] = set()
    stack = [("", root)]
    while stack:
        rel_dir, abs_dir = stack.pop()
        with os.scandir(abs_dir) as it:
            for de in it:
                name = de.name
                try:
                    name.encode("utf-8")
                except UnicodeEncodeError:
                    raise InvalidArgument(f"local name {os.fsencode(name)!r} in {abs_dir} is not valid UTF-8; rename it first") from None
                rel = f"{rel_dir}/{name}" if rel_dir else name
                if de.is_dir(follow_symlinks=False):
                    if flt is None or flt.matches(rel, True):
                        dirs.add(rel)
                        stack.append((rel, de.path))
                elif de.is_file(follow_symlinks=False) and (flt is None or flt.matches(rel, False)):
                    s = de.stat(follow_symlinks=False)
                    files[rel] = Item(s.st_size, s.st_mtime, local=de.path)
    return files, dirs


def _scan_virtual(vd: VDir, root: str, flt: Filter | None) -> tuple[dict[str, Item], set[str]] | None:
    try:
        top = vd.catalog.resolve(root)
    except NotFound:
        return None
    if top.type != DIR:
        raise NotADirectory(f"{PREFIX}{root}: not a directory (sync works on directories)", path=root)
    files: dict[str, Item] = {}
    dirs: set[str] = set()
    for rel, e in vd._walk(top.id, root):
        if e.type == DIR:
            if flt is None or flt.matches(rel, True):
                dirs.add(rel)
        elif e.type == FILE and (flt is None or flt.matches(rel, False)):
            files[rel] = Item(e.size, e.mtime, e.hash, entry=e)
    if flt is not None:  # a directory below one left out is left out too (walk does not prune)
        dirs = {d for d in dirs if flt.matches(d, True)}
    return files, dirs


def _local_hash(item: Item) -> str:
    if item.hash is None:
        assert item.local is not None
        with open(item.local, "rb") as fh:
            item.hash = hash_stream(fh)[0]
    return item.hash


# -- the sync ----------------------------------------------------------------------------------
def sync(vd: VDir, src: str | os.PathLike[str], dst: str | os.PathLike[str], *, checksum: bool = False,
         delete: bool = False, dry_run: bool = False, filter: Filter | None = None, workers: int = 8,
         progress: Callable[[int], None] | None = None, backend: str | None = None) -> SyncReport:
    """Make DST equal to SRC (see the module docstring).  Raises ``NotFound`` for a missing
    source, ``NotADirectory`` when an end is not a directory, ``InvalidArgument`` for a
    local→local sync or when a path is a file on one side and a directory on the other
    (nothing is changed then).  Files sent into vdir are stored on ``backend`` (default: the
    configured default backend; vdir→vdir: the source replica's backend)."""
    s, d = parse_location(src), parse_location(dst)
    if not s.virtual and not d.virtual:
        raise InvalidArgument(f"both {s} and {d} are local paths; write virtual paths as {PREFIX}/path")
    if s.virtual and d.virtual and (paths.is_within(d.path, s.path) or paths.is_within(s.path, d.path)):
        raise InvalidArgument(f"{s} and {d} overlap; sync between separate trees")
    flt = None if filter is None or filter.empty else filter
    scanned = _scan_virtual(vd, s.path, flt) if s.virtual else _scan_local(s.path, flt)
    if scanned is None:
        raise NotFound(f"{s}: no such directory")
    sfiles, sdirs = scanned
    dscan = _scan_virtual(vd, d.path, flt) if d.virtual else _scan_local(d.path, flt)
    dfiles, ddirs = dscan if dscan is not None else ({}, set())
    for rel in sfiles:
        if rel in ddirs:
            raise InvalidArgument(f"{rel}: a file in {s} but a directory in {d}; nothing was changed")
    for rel in sdirs:
        if rel in dfiles:
            raise InvalidArgument(f"{rel}: a directory in {s} but a file in {d}; nothing was changed")

    report = SyncReport(src=str(s), dst=str(d), dry_run=dry_run)
    send: list[str] = []

    def compare(rel: str) -> str:
        """'copy', 'update', 'touch' or 'skip' for one source file."""
        a, b = sfiles[rel], dfiles.get(rel)
        if b is None:
            return "copy"
        if a.size != b.size:
            return "update"
        if checksum:
            ha = _local_hash(a) if a.local else a.hash
            hb = _local_hash(b) if b.local else b.hash
            if ha is not None and hb is not None and ha != hb:
                return "update"
            return "skip" if abs(a.mtime - b.mtime) <= MODIFY_WINDOW else "touch"
        return "skip" if abs(a.mtime - b.mtime) <= MODIFY_WINDOW else "update"

    order = sorted(sfiles)
    if checksum and workers > 1 and len(order) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            verdicts = list(pool.map(compare, order))
    else:
        verdicts = [compare(rel) for rel in order]
    for rel, verdict in zip(order, verdicts, strict=True):
        if verdict == "skip":
            report.skipped += 1
            continue
        if verdict == "touch":
            report.touched.append(rel)
            continue
        (report.copied if verdict == "copy" else report.updated).append(rel)
        report.bytes += sfiles[rel].size
        send.append(rel)
    gone_files = sorted(set(dfiles) - set(sfiles)) if delete else []
    gone_dirs = sorted(ddirs - sdirs, key=lambda r: (-r.count("/"), r)) if delete else []
    report.deleted = gone_files + gone_dirs
    if dry_run:
        return report

    new_dirs = sorted(sdirs - ddirs)
    if d.virtual:
        vd.mkdir(d.path, parents=True, exist_ok=True)
        for rel in new_dirs:
            vd.mkdir(paths.join(d.path, rel), parents=True, exist_ok=True)
    else:
        os.makedirs(d.path, exist_ok=True)
    if s.virtual and not d.virtual:
        _to_local(vd, s.path, d.path, sfiles, send, new_dirs, workers, progress)
    else:
        def one(rel: str) -> None:
            item, target = sfiles[rel], paths.join(d.path, rel)
            if s.virtual:
                vd.copy(paths.join(s.path, rel), target, force=True, backend=backend)
                vd.update_entry(target, mtime=item.mtime)
                if progress:
                    progress(item.size)
                return
            assert item.local is not None
            st = os.stat(item.local)
            with open(item.local, "rb") as fh:
                vd.write_stream(target, fh, backend=backend, overwrite=True, size=st.st_size, mode=stat_mod.S_IMODE(st.st_mode),
                                mtime=st.st_mtime, progress=progress)

        _run(one, send, workers)
    for rel in report.touched:
        mtime = sfiles[rel].mtime
        if d.virtual:
            vd.update_entry(paths.join(d.path, rel), mtime=mtime)
        else:
            os.utime(os.path.join(d.path, rel), (mtime, mtime))
    for rel in gone_files:
        if d.virtual:
            vd.rm(paths.join(d.path, rel))
        else:
            os.unlink(os.path.join(d.path, rel))
    for rel in gone_dirs:  # deepest first; one still holding filtered-out files stays
        try:
            if d.virtual:
                vd.rmdir(paths.join(d.path, rel))
            else:
                os.rmdir(os.path.join(d.path, rel))
        except OSError:
            report.deleted.remove(rel)
    return report


def _run(fn: Callable[[str], None], items: list[str], workers: int) -> None:
    if workers <= 1 or len(items) <= 1:
        for rel in items:
            fn(rel)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in pool.map(fn, items):
            pass


def _to_local(vd: VDir, vroot: str, lroot: str, sfiles: dict[str, Item], send: list[str], new_dirs: list[str],
              workers: int, progress: Callable[[int], None] | None) -> None:
    """Stage verified temp files beside their destinations, then make each batch durable and
    rename it into place (as ``VDir.get`` does); nothing is written through a symbolic link."""
    tree = localout.DestTree(Path(lroot))
    for rel in new_dirs:
        tree.ensure(rel)
    for rel in send:
        tree.check(rel.rpartition("/")[0])

    def stage(rel: str) -> tuple[Path, Path]:
        entry = sfiles[rel].entry
        assert entry is not None
        dest = tree.ensure(rel.rpartition("/")[0]) / rel.rpartition("/")[2]
        return getting.stage_file(vd, paths.join(vroot, rel), entry, dest, progress, sync=False), dest

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for i in range(0, len(send), BATCH):
            futures = [pool.submit(stage, rel) for rel in send[i : i + BATCH]]
            staged: list[tuple[Path, Path]] = []
            failed: BaseException | None = None
            for f in futures:
                try:
                    staged.append(f.result())
                except BaseException as exc:  # noqa: BLE001 - the first failure is raised below
                    failed = failed or exc
            if failed is not None:
                localout.discard(tmp for tmp, _ in staged)
                raise failed
            localout.publish(staged)
