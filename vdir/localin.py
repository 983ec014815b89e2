"""Reading a local tree for ``put``: every directory, file and symbolic link it will create,
worked out and checked before the first byte moves (``vd.plan_put``)."""

from __future__ import annotations

import os
import stat as stat_mod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from vdir import paths
from vdir.catalog.base import DIR, Entry
from vdir.errors import InvalidArgument, InvalidPath, IsADirectory, NotADirectory, NotFound, VDirError
from vdir.filters import Filter

if TYPE_CHECKING:
    from vdir.core import VDir


@dataclass
class PutPlan:
    dirs: list[str] = field(default_factory=list)
    files: list[tuple[Path, str, os.stat_result]] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)
    """(target, vpath) of the symbolic links to store as links (``put -r`` without ``-L``)."""
    hardlinks: list[tuple[str, str]] = field(default_factory=list)
    """(vpath of the first name, vpath) of local files met again under another name (hard links,
    same device and inode): stored once, the other names made hard links, as ``rsync -H`` does."""
    known: dict[str, tuple[int, Entry | None]] = field(default_factory=dict)
    """vpath → (parent directory id, entry there or None), as the plan found them (the
    destination of a one-file put), so the write need not look again."""


def plan_put(vd: VDir, src: str | os.PathLike[str], dst: str, *, recursive: bool = False, force: bool = False,
             follow_symlinks: bool = False, filter: Filter | None = None) -> PutPlan:
    """Work out (and check) every file, directory and symbolic link a local ``put`` will
    create.  With ``recursive`` and without ``follow_symlinks`` links are planned as links
    (never as the empty directory a symlinked directory used to become); with it, a link
    back to a directory above it is refused (``InvalidArgument``: a loop).  ``filter`` leaves
    out what it does not match (relative to a source directory; a single file by its name)."""
    local = Path(os.fsdecode(src))
    try:
        keep_link = recursive and not follow_symlinks and local.is_symlink()
        st = local.lstat() if keep_link else local.stat()
    except FileNotFoundError:
        raise NotFound(f"{os.fsdecode(src)}: no such local file or directory") from None
    except PermissionError:
        raise VDirError(f"{os.fsdecode(src)}: permission denied") from None
    target = paths.normalize(dst)
    base = _local_name(local)
    into_dir = dst.endswith("/")
    # one look at the destination (locate: the parent's id and the entry), handed on to the
    # checks and to write_stream, so a one-file put reads the catalog once per component
    dest_entry: Entry | None = None
    at: tuple[int, Entry | None] | None = None
    try:
        parent_id, dest_entry = vd.catalog.locate(target)
        if parent_id is not None:
            at = (parent_id, dest_entry)
    except NotFound:
        pass
    if dest_entry is not None and dest_entry.type == DIR:
        target = paths.join(target, base)
        at = None
        if not stat_mod.S_ISDIR(st.st_mode):
            at = (dest_entry.id, vd.catalog.lookup(dest_entry.id, base))
    elif into_dir and dest_entry is not None:
        raise NotADirectory(f"{target}: not a directory", path=target)
    elif into_dir:
        target = paths.join(target, base)
        at = None
    plan = PutPlan()
    if at is not None:
        plan.known[target] = at
    if filter is not None and not filter.empty and not stat_mod.S_ISDIR(st.st_mode):
        if not filter.matches(base, False):
            return plan
        filter = None
    if stat_mod.S_ISLNK(st.st_mode):
        plan.links.append((_link_target(local), target))
    elif stat_mod.S_ISDIR(st.st_mode):
        if not recursive:
            raise IsADirectory(f"{local}: is a directory (use -r to copy directories)")
        plan.dirs.append(target)
        seen = {str(local): (st.st_dev, st.st_ino)}  # directory -> identity, for loop checks with -L
        inodes: dict[tuple[int, int], str] = {}  # (device, inode) -> vpath of the first name met
        for root, dirnames, filenames in os.walk(local, followlinks=follow_symlinks):
            dirnames.sort()
            rel_root = Path(root).relative_to(local)
            if filter is not None:  # prune left-out directories before walking into them
                rel_dir = "" if str(rel_root) == "." else rel_root.as_posix()
                dirnames[:] = [d for d in dirnames if filter.matches(f"{rel_dir}/{d}" if rel_dir else d, True)]
                filenames = [f for f in filenames if filter.matches(f"{rel_dir}/{f}" if rel_dir else f, False)]
            vroot = target if str(rel_root) == "." else paths.join(target, "/".join(_local_name(Path(p)) for p in rel_root.parts))
            if follow_symlinks:
                rst = os.stat(root)
                seen[root] = (rst.st_dev, rst.st_ino)
            ancestors = {seen[str(p)] for p in (Path(root), *Path(root).parents) if str(p) in seen}
            for d in list(dirnames):
                full = Path(root) / d
                vpath = paths.join(vroot, _local_name(Path(d)))
                if not full.is_symlink():
                    plan.dirs.append(vpath)
                elif not follow_symlinks:
                    plan.links.append((_link_target(full), vpath))
                else:
                    dst_ = full.stat()
                    if (dst_.st_dev, dst_.st_ino) in ancestors:
                        raise InvalidArgument(f"{full}: symbolic link loop (it points to a directory above it)")
                    plan.dirs.append(vpath)
            for f in sorted(filenames):
                full = Path(root) / f
                fst = full.lstat()
                if stat_mod.S_ISLNK(fst.st_mode):
                    if not follow_symlinks:
                        plan.links.append((_link_target(full), paths.join(vroot, _local_name(Path(f)))))
                        continue
                    try:
                        fst = full.stat()
                    except FileNotFoundError:
                        raise NotFound(f"{full}: dangling symbolic link (-L follows links)") from None
                if stat_mod.S_ISREG(fst.st_mode):
                    vpath = paths.join(vroot, _local_name(Path(f)))
                    if fst.st_nlink > 1:
                        first = inodes.setdefault((fst.st_dev, fst.st_ino), vpath)
                        if first != vpath:
                            plan.hardlinks.append((first, vpath))
                            continue
                    plan.files.append((full, vpath, fst))
    elif stat_mod.S_ISREG(st.st_mode):
        plan.files.append((local, target, st))
    else:
        raise InvalidArgument(f"{local}: not a regular file or directory")
    for d in plan.dirs:
        vd._check_dir_target(d)
    for _, vpath, _ in plan.files:
        vd._check_file_target(vpath, force, plan.known.get(vpath))
    for _, vpath in plan.links + plan.hardlinks:
        vd._check_file_target(vpath, force, plan.known.get(vpath))
    return plan


def _link_target(p: Path) -> str:
    """A local symbolic link's target, as stored in the catalog (verbatim, like ``cp -P``)."""
    target = os.readlink(p)
    try:
        target.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidPath(f"{p}: link target {os.fsencode(target)!r} is not valid UTF-8") from None
    return target


def _local_name(p: Path) -> str:
    """A local file name as a vdir name; non-UTF-8 names are refused with the name shown."""
    name = p.name
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidPath(f"local name {os.fsencode(name)!r} is not valid UTF-8; rename it first") from None
    return paths.check_name(name)
