"""The one implementation of placement work: copy a replica, verify one, trim one.

Every change to a file's replica list is a compare-and-set on the entry's version, done after
the bytes are in place and checked, so the catalog never points at bytes that are missing or
wrong.  A copy whose commit loses (the file changed meanwhile, or another worker got there
first) deletes what it uploaded.  Objects are only deleted after the catalog stopped pointing
at them, and never for linked objects (vdir did not create those).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vdir import objects
from vdir.backends.base import Backend, ObjectMeta, PutMode, ServerSideCopy
from vdir.catalog.base import CORRUPT, MISSING, OK, Entry, Replica
from vdir.errors import (
    AlreadyExists,
    AuthenticationError,
    Conflict,
    IntegrityError,
    NotFound,
    PermissionDenied,
    VDirError,
)
from vdir.hashing import HashingReader, hash_stream

if TYPE_CHECKING:
    from vdir.core import VDir

log = logging.getLogger("vdir.placement")

LINKED_XATTR = "vdir.linked"


class LeaseLost(VDirError):
    """Another worker took the task over (this one was too slow to renew its lease)."""


@dataclass
class Outcome:
    done: bool
    detail: str
    bytes: int = 0


def _update_replicas(vd: VDir, entry_id: int, change: Callable[[Entry], Entry | None], attempts: int = 10) -> Entry | None:
    """Apply ``change`` to the current entry with compare-and-set, retrying on conflicts.
    ``change`` returns the new entry, or ``None`` to give up (nothing to do any more)."""
    for _ in range(attempts):
        try:
            current = vd.catalog.get(entry_id)
        except NotFound:
            return None
        new = change(current.copy())
        if new is None:
            return None
        try:
            return vd.catalog.update(new, current.version)
        except Conflict:
            continue
    raise Conflict(f"entry {entry_id} kept changing; try again later")


def set_replica_state(vd: VDir, entry_id: int, backend: str, key: str, state: str) -> None:
    """Record that a replica is ok, missing or corrupt (with the time it was checked)."""

    def change(e: Entry) -> Entry | None:
        for r in e.replicas:
            if r.backend == backend and r.key == key:
                r.state, r.verified_at = state, time.time()
                return e
        return None

    _update_replicas(vd, entry_id, change)


def replicate(vd: VDir, entry_id: int, destination: str, source: str | None = None,
              check_lease: Callable[[], None] | None = None) -> Outcome:
    """Copy one good replica of the file to ``destination``, verify it, commit it."""
    try:
        entry = vd.catalog.get(entry_id)
    except NotFound:
        return Outcome(True, "file is gone")
    if any(r.backend == destination and r.state == OK for r in entry.replicas):
        return Outcome(True, f"already on {destination}")
    sources = sorted((r for r in entry.replicas if r.state == OK and r.backend != destination),
                     key=lambda r: (r.backend != source, vd.location_of(r.backend).cost))
    if not sources:
        raise IntegrityError(f"{_path(vd, entry)}: no good copy to replicate from")
    src = sources[0]
    src_store, dst_store = vd.backend(src.backend), vd.backend(destination)
    key, mode = objects.first_key(dst_store, src.key)
    token = objects.begin_intent(vd.catalog, [(destination, key)], "replicate")
    expected = entry.hash
    how = "streamed"
    for attempt in range(2):
        try:
            copied = _server_copy(src_store, src, dst_store, key, mode)
            if copied is not None and copied.same_as_source and expected is not None:
                # the destination computed the same MD5 over the bytes it stored as over the
                # source version whose hash the catalog records
                meta, how, digest, size = copied, "server-side, checked by the store's MD5", expected, copied.size
            elif copied is not None:  # the bytes never passed through here: read them back at the destination
                meta, how = copied, "server-side, read back"
                try:
                    digest, size = _hash_object(dst_store, key)
                except BaseException:
                    dst_store.delete(key)
                    raise
            else:  # streamed: the destination reads what the source yields, hashing on the way
                with src_store.get(src.key) as stream:
                    hashing = HashingReader(stream)
                    meta = dst_store.put(key, hashing, mode, size=src.size)  # type: ignore[arg-type]
                digest, size = hashing.hexdigest, hashing.size
            break
        except AlreadyExists:
            if attempt:
                raise
            key, mode = objects.unique_key(src.key), PutMode.OVERWRITE  # type: ignore[attr-defined]
            objects.end_intent(vd.catalog, token)
            token = objects.begin_intent(vd.catalog, [(destination, key)], "replicate")
    if size != entry.size or (expected is not None and digest != expected):
        dst_store.delete(key)
        set_replica_state(vd, entry_id, src.backend, src.key, CORRUPT)
        raise IntegrityError(
            f"{_path(vd, entry)}: the copy read from {src.backend} hashes to {digest} ({size} bytes), the catalog says "
            f"{expected} ({entry.size} bytes); that replica is marked corrupt"
        )
    if check_lease is not None:
        try:
            check_lease()
        except LeaseLost:
            dst_store.delete(key)
            raise
    new_replica = Replica(backend=destination, key=key, size=size, hash=digest, etag=meta.etag, state=OK, verified_at=time.time())

    def commit(e: Entry) -> Entry | None:
        if e.hash != expected and expected is not None or e.size != size:
            return None  # the content changed meanwhile: this copy is of an old version
        if any(r.backend == destination and r.state == OK for r in e.replicas):
            return None  # another worker committed one first
        e.replicas = [r for r in e.replicas if not (r.backend == destination and r.key == key)] + [new_replica]
        if e.hash is None:
            e.hash = digest  # a linked file's hash, learnt on the way
        return e

    try:
        committed = _update_replicas(vd, entry_id, commit)
    except BaseException:
        dst_store.delete(key)
        raise
    objects.end_intent(vd.catalog, token)
    if committed is None:
        objects.release(vd, [new_replica], _path(vd, entry))
        return Outcome(True, "file changed or already replicated; copy discarded")
    return Outcome(True, f"copied {src.backend} -> {destination} ({how})", size)


def _server_copy(src_store: Backend, src: Replica, dst_store: Backend, dst_key: str, mode: PutMode) -> ObjectMeta | None:
    """A copy made by the service itself when both backends are on one (two buckets of one S3,
    two containers of one Azure account...), of the source version the replica records; None
    when not, or when the service refuses to read the source with the destination's
    credentials (then the copy is streamed)."""
    if not isinstance(dst_store, ServerSideCopy):
        return None
    try:
        return dst_store.server_copy_from(src_store, src.key, dst_key, mode, source_etag=src.etag)
    except PermissionDenied as exc:
        if isinstance(exc, AuthenticationError):
            raise
        log.info("server-side copy %s:%s -> %s refused (%s); streaming instead", src_store.name, src.key, dst_store.name, exc)
        return None
    except Conflict as exc:  # the source object is not the version recorded: the streamed copy's hash will tell
        log.info("server-side copy %s:%s -> %s: %s; streaming instead", src_store.name, src.key, dst_store.name, exc)
        return None


def _hash_object(store: Backend, key: str) -> tuple[str, int]:
    with store.get(key) as stream:
        return hash_stream(stream)


def verify(vd: VDir, entry_id: int, backend: str, key: str | None = None) -> Outcome:
    """Re-hash one replica and record ok / missing / corrupt."""
    try:
        entry = vd.catalog.get(entry_id)
    except NotFound:
        return Outcome(True, "file is gone")
    replica = next((r for r in entry.replicas if r.backend == backend and (key is None or r.key == key)), None)
    if replica is None:
        return Outcome(True, "replica is gone")
    try:
        digest, size = _hash_object(vd.backend(backend), replica.key)
    except NotFound:
        set_replica_state(vd, entry_id, backend, replica.key, MISSING)
        return Outcome(True, f"missing on {backend}")
    expected = entry.hash or replica.hash
    state = OK if size == replica.size and (expected is None or digest == expected) else CORRUPT
    set_replica_state(vd, entry_id, backend, replica.key, state)
    return Outcome(True, f"{state} on {backend}", size)


def trim(vd: VDir, entry_id: int, backend: str, key: str | None, still_wanted: Callable[[Entry], bool]) -> Outcome:
    """Drop one replica from the catalog (then its object), if ``still_wanted(entry)`` says the
    trim is still right for the entry as it is now."""
    removed: list[Replica] = []
    linked = [False]
    token = objects.begin_intent(vd.catalog, [(backend, key)], "trim") if key is not None else None

    def change(e: Entry) -> Entry | None:
        if not still_wanted(e):
            return None
        keep = [r for r in e.replicas if not (r.backend == backend and (key is None or r.key == key))]
        if len(keep) == len(e.replicas) or not any(r.state == OK for r in keep):
            return None  # never drop the last good copy
        removed[:] = [r for r in e.replicas if r not in keep]
        linked[0] = LINKED_XATTR in e.xattrs
        e.replicas = keep
        return e

    try:
        changed = _update_replicas(vd, entry_id, change)
    except BaseException:
        if token:
            objects.end_intent(vd.catalog, token)
        raise
    if changed is None or linked[0] or not removed:
        if token:
            objects.end_intent(vd.catalog, token)
        return Outcome(True, "no longer needed") if changed is None else Outcome(True, f"trimmed the copy on {backend}")
    if token and [(r.backend, r.key) for r in removed] != [(backend, key)]:
        objects.end_intent(vd.catalog, token)
        token = None
    objects.release(vd, removed, _path(vd, changed), token)
    return Outcome(True, f"trimmed the copy on {backend}")


def _path(vd: VDir, entry: Entry) -> str:
    try:
        return vd.catalog.path_of(entry.id)
    except VDirError:
        return f"<entry {entry.id}>"
