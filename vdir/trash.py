"""The trash: with the catalog setting ``settings/trash`` = ``{"keep_seconds": N}`` (N > 0),
``VDir.rm`` moves each removed top-level entry, in one catalog rename that keeps its content,
replicas and objects, into the hidden directory :data:`TRASH_PATH`, and records it in the
record collection ``trash``: ``{id, path, entry_id, type, size, files, deleted_at, deleted_by,
expires_at}``.  Off (0 or absent, the default), ``rm`` deletes as it always did.

The hidden directory is invisible to every path-based call (its name is reserved: it is never
listed, stat'ed, found or written through a path).  The placement planner skips it (nothing is
replicated or trimmed there) and fsck, which reads every replica, counts its objects as used,
so trashed replicas stay live until the item is purged: by ``vdir trash empty``, or by the
placement daemon once the item has expired.

Order of writes: the record is written before the rename (a crash between leaves a record
whose entry is not in the trash: restore and empty drop it), and a record is deleted only
after its entry left the trash.
"""

from __future__ import annotations

import getpass
import os
import secrets
import time
from typing import TYPE_CHECKING, Any

from vdir import paths
from vdir.catalog.base import DIR, FILE, ROOT_ID, Catalog, Entry
from vdir.errors import AlreadyExists, NotFound, VDirError

if TYPE_CHECKING:
    from vdir.core import VDir

TRASH_DIR = ".vdir-trash"
TRASH_PATH = "/" + TRASH_DIR
TRASH = "trash"
"""Record collection of trashed items."""
SETTINGS = "settings"


def is_hidden(norm: str) -> bool:
    """Whether a normal path is the trash directory or lies in it."""
    return norm == TRASH_PATH or norm.startswith(TRASH_PATH + "/")


def load_keep(catalog: Catalog) -> float:
    """Seconds trashed items are kept; 0 when the trash is off."""
    try:
        doc = catalog.get_record(SETTINGS, "trash")[0]
    except NotFound:
        return 0.0
    return float(doc.get("keep_seconds") or 0.0)


def store_keep(catalog: Catalog, seconds: float) -> None:
    from vdir.access import changed

    catalog.put_record(SETTINGS, "trash", {"keep_seconds": float(seconds)})
    changed(catalog)  # a server's cached views of the trash setting are stale now


def _dir_id(catalog: Catalog, *, create: bool) -> int | None:
    found = catalog.lookup_id(ROOT_ID, TRASH_DIR)
    if found is None and create:
        try:
            return catalog.create(Entry(name=TRASH_DIR, type=DIR, parent_id=ROOT_ID, mode=0o700)).id
        except AlreadyExists:
            found = catalog.lookup_id(ROOT_ID, TRASH_DIR)
    return found[0] if found is not None else None


def move(vd: VDir, items: list[tuple[str, Entry]], keep: float) -> None:
    """Move these (path, entry) into the trash, each as one item."""
    catalog = vd.catalog
    dir_id = _dir_id(catalog, create=True)
    assert dir_id is not None
    now = time.time()
    who = vd.principal.user if vd.principal is not None else _local_user()
    records: dict[str, dict[str, Any]] = {}
    for norm, entry in items:
        size, files = entry.size if entry.type == FILE else 0, 1 if entry.type == FILE else 0
        if entry.type == DIR:
            for _, e in catalog.walk(entry.id):
                if e.type == FILE:
                    size, files = size + e.size, files + 1
        tid = secrets.token_hex(8)
        records[tid] = {"id": tid, "path": norm, "entry_id": entry.id, "type": entry.type, "size": size,
                        "files": files, "deleted_at": now, "deleted_by": who, "expires_at": now + keep}
    catalog.put_records(TRASH, records)
    done: list[str] = []
    try:
        for (_, entry), tid in zip(items, records, strict=True):
            catalog.rename(entry.id, dir_id, tid, expected_version=entry.version, source=vd._name_of(entry))
            done.append(tid)
    finally:
        left = [tid for tid in records if tid not in done]
        if left:
            catalog.delete_records(TRASH, left)


def _local_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (some containers)
        return f"uid {os.getuid()}"


def items(vd: VDir, need: str = "read") -> list[dict[str, Any]]:
    """The trash records the principal may ``need`` at their original paths (all standalone)."""
    docs = [doc for _, doc, _ in vd.catalog.list_records(TRASH)]
    if vd._access is None:
        return docs
    return [doc for doc in docs if vd._access.may(doc["path"], need)]


def _get(vd: VDir, trash_id: str, need: str) -> dict[str, Any]:
    try:
        doc = vd.catalog.get_record(TRASH, trash_id)[0]
    except NotFound:
        doc = None
    if doc is None or (vd._access is not None and not vd._access.may(doc["path"], need)):
        raise NotFound(f"no trash item {trash_id!r} (see 'vdir trash list')")
    return doc


def restore(vd: VDir, trash_id: str, to: str | None = None) -> Entry:
    """Put a trashed item back at its path (or ``to``): one rename, the same content, version
    and replicas.  ``AlreadyExists`` when the path is taken."""
    doc = _get(vd, trash_id, "read")
    dest = paths.normalize(to or doc["path"])
    vd._allow(dest, "write")
    catalog = vd.catalog
    dir_id = _dir_id(catalog, create=False)
    entry = catalog.lookup(dir_id, trash_id) if dir_id is not None else None
    if entry is None:
        catalog.delete_records(TRASH, [trash_id])
        raise NotFound(f"trash item {trash_id!r} is gone")
    parent_path, name = paths.split(dest)
    if _exists(catalog, dest):
        raise AlreadyExists(f"{dest}: exists (restore it elsewhere with --to PATH)", path=dest)
    vd._check_quota(dest, int(doc.get("size", 0)), files=int(doc.get("files", 0)))
    parent_id = vd._ensure_dir_id(parent_path)
    try:
        moved, _ = catalog.rename(entry.id, parent_id, name, replace_existing=False, source=(dir_id or 0, trash_id))
    except AlreadyExists:
        raise AlreadyExists(f"{dest}: exists (restore it elsewhere with --to PATH)", path=dest) from None
    catalog.delete_records(TRASH, [trash_id])
    return moved


def _exists(catalog: Catalog, path: str) -> bool:
    try:
        catalog.resolve(path)
        return True
    except VDirError:
        return False


def empty(vd: VDir, *, all: bool = False, now: float | None = None) -> int:
    """Purge the expired items (or, with ``all``, every item) the principal may write at their
    original paths: their entries go and their objects are deleted as ``rm`` deletes them.
    Returns how many items were purged."""
    from vdir.core import RM_BATCH

    now = time.time() if now is None else now
    catalog = vd.catalog
    dir_id = _dir_id(catalog, create=False)
    purged = 0
    for doc in items(vd, "write"):
        if not all and float(doc.get("expires_at", 0)) > now:
            continue
        entry = catalog.lookup(dir_id, doc["id"]) if dir_id is not None else None
        if entry is not None:
            top = f"{TRASH_PATH}/{doc['id']}"
            batch = [(paths.join(top, rel), e) for rel, e in catalog.walk(entry.id)] if entry.type == DIR else []
            batch.sort(key=lambda it: it[0].count("/"), reverse=True)
            batch.append((top, entry))
            for i in range(0, len(batch), RM_BATCH):
                vd._remove_entries(batch[i : i + RM_BATCH])
        catalog.delete_records(TRASH, [doc["id"]])
        purged += 1
    return purged
