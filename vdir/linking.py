"""Registering objects that already exist on a backend, without copying them: ``vd.link`` and
``vd.import_prefix``.  Such entries carry :data:`~vdir.objects.LINKED_XATTR`: their objects
belong to someone else and vdir never deletes them.  Their hash (and block hashes) are computed
now with ``compute_hash``, otherwise on the first read."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from vdir import objects, paths
from vdir.catalog.base import DIR, FILE, OK, Entry, Replica
from vdir.errors import AlreadyExists, InvalidArgument, IsADirectory
from vdir.hashing import hash_stream_blocks
from vdir.objects import LINKED_XATTR

if TYPE_CHECKING:
    from vdir.core import VDir


def link(vd: VDir, url: str, vpath: str, *, compute_hash: bool = False, force: bool = False) -> Entry:
    """Register an object that already exists on a backend at ``vpath`` without copying it.
    Its hash is computed now with ``compute_hash``, otherwise on its first full read."""
    name, key = vd.backend_for_url(url)
    if not key:
        raise InvalidArgument(f"{url}: names the backend's root, not an object (use 'vdir import')")
    return link_key(vd, name, key, vpath, compute_hash=compute_hash, force=force)

def link_key(vd: VDir, backend: str, key: str, vpath: str, *, compute_hash: bool, force: bool, size: int | None = None, etag: str | None = None) -> Entry:
    store = vd.backend(backend)
    if size is None:
        meta = store.head(key)
        size, etag = meta.size, meta.etag
    digest: str | None = None
    blocks: str | None = None
    if compute_hash:
        with store.get(key) as stream:
            digest, size, blocks = hash_stream_blocks(stream)
    norm = paths.normalize(vpath)
    parent_path, name = paths.split(norm)
    parent_id = vd._ensure_dir_id(parent_path)
    existing = vd.catalog.lookup(parent_id, name)
    replica = Replica(backend=backend, key=key, size=size, hash=digest, etag=etag, state=OK, verified_at=time.time() if digest else None)
    if existing is not None:
        if existing.type == DIR:
            raise IsADirectory(f"{norm}: is a directory", path=norm)
        if not force:
            raise AlreadyExists(f"{norm}: exists (use --force to replace)", path=norm)
        changed = existing.copy(size=size, hash=digest, mtime=time.time(), replicas=[replica], blocks=blocks)
        changed.xattrs[LINKED_XATTR] = b"1"
        owned = objects.owned(existing)
        token = objects.begin_intent(vd.catalog, ((r.backend, r.key) for r in owned), "link") if owned else None
        entry = vd.catalog.update(changed, existing.version)
        objects.release(vd, owned, norm, token)
        return entry
    return vd.catalog.create(
        Entry(name=name, type=FILE, parent_id=parent_id, size=size, hash=digest, replicas=[replica],
              xattrs={LINKED_XATTR: b"1"}, uid=os.getuid(), gid=os.getgid(), blocks=blocks)
    )

def import_prefix(vd: VDir, url: str, vpath: str, *, compute_hash: bool = False, force: bool = False) -> list[Entry]:
    """Index every object under a backend prefix into ``vpath`` (no bytes copied)."""
    name, prefix = vd.backend_for_url(url.rstrip("/") + "/")
    store = vd.backend(name)
    base = paths.normalize(vpath)
    entries: list[Entry] = []
    for meta in store.list(prefix):
        rel = meta.key[len(prefix) :]
        if not rel or rel.startswith(".vdir-tmp/") or rel.endswith("/"):
            continue
        target = paths.normalize(paths.join(base, rel))
        entries.append(link_key(vd, name, meta.key, target, compute_hash=compute_hash, force=force, size=meta.size, etag=meta.etag))
    return entries
