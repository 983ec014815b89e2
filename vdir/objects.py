"""The objects vdir writes on backends: how they are named, how vdir remembers that it wrote
them, and the one way they are deleted.

Names
    A file's object is stored under its virtual path (``/a/b.txt`` → key ``a/b.txt``), so a
    person who opens the bucket finds their files.  Where that key is taken, or where the store
    cannot make a create-only write atomic (``Backend.create_only_atomic`` is false: two writers
    of one new key would share it), the key gets a random suffix, ``a/b.txt.~1a2b3c4d``; the
    name part is shortened (at a UTF-8 character boundary) so that the last component never
    passes 255 bytes, and a key longer than :data:`MAX_KEY_BYTES` moves under
    ``.vdir-long/<hash of the path>/<name>``.  No name that vdir accepts yields a key a
    backend refuses for its length.

Ownership: write intents
    Before vdir writes an object, and before it deletes the objects an entry used, it records
    an *intent* in the catalog (record collection :data:`INTENTS`) naming those objects; it
    drops the intent once the catalog and the store agree again.  A crash in between leaves
    the intent behind.  ``fsck --delete-orphans`` deletes an object only when an intent names
    it, no entry uses it, and the intent is older than the minimum age; an object no entry
    uses and no intent names is *foreign* (another tool's, an imported bucket's rest, a file
    someone put in the folder) and is listed, never deleted.

Deletion
    :func:`delete_unused` is the only way the core and the placement daemon delete objects:
    it waits until the commit that made them unused is durable (:meth:`Catalog.make_durable`),
    then deletes each object that no entry uses (:meth:`Catalog.replica_users`), so a linked
    name, a crash that loses the last commits, or a concurrent writer can never leave an entry
    pointing at deleted bytes.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import xxhash

from vdir.backends.base import Backend, PutMode
from vdir.catalog.base import FILE, Catalog, Entry, Replica
from vdir.errors import VDirError
from vdir.paths import MAX_NAME_BYTES, fit

if TYPE_CHECKING:
    from vdir.core import VDir

log = logging.getLogger("vdir")

LINKED_XATTR = "vdir.linked"
"""Set on entries registered with ``link``/``import``: their objects belong to someone else and
are never deleted by vdir."""
INTENTS = "intents"
"""Record collection holding write intents."""
MAX_KEY_BYTES = 768
"""Longest key vdir makes from a path (S3 and GCS allow 1024 bytes; room for a backend's prefix)."""
_SUFFIX_BYTES = len(".~") + 8
USERS_BATCH = 1000
"""Objects whose users :func:`delete_unused` asks the catalog about in one query."""


_fit = fit  # kept for callers of the old name


def path_key(path: str) -> str:
    """The key an object of the virtual ``path`` gets when it is free: the path itself."""
    key = path.lstrip("/")
    if len(key.encode("utf-8", "surrogateescape")) > MAX_KEY_BYTES:
        name = key.rsplit("/", 1)[-1]
        key = f".vdir-long/{xxhash.xxh64_hexdigest(path.encode('utf-8', 'surrogateescape'))}/{name}"
    return key


def unique_key(base: str) -> str:
    """A fresh key beside ``base``, still recognisable: ``dir/name.~1a2b3c4d``."""
    head, _, name = base.rpartition("/")
    name = _fit(name, MAX_NAME_BYTES - _SUFFIX_BYTES) + f".~{secrets.token_hex(4)}"
    return f"{head}/{name}" if head else name


def first_key(store: Backend, base: str, *, fresh: bool = False) -> tuple[str, PutMode]:
    """Where a new object goes first, and how: its own name create-only where the store makes
    that atomic, else (or with ``fresh``: the name is likely taken, or the source cannot be
    read twice) a fresh unique key, with no check-then-write race to lose."""
    if not fresh and store.create_only_atomic:
        return base, PutMode.CREATE  # type: ignore[attr-defined]
    return unique_key(base), PutMode.OVERWRITE  # type: ignore[attr-defined]


# -- intents ---------------------------------------------------------------------------------


def begin_intent(catalog: Catalog, objects: Iterable[tuple[str, str]], op: str) -> str:
    """Record that vdir is about to write or delete ``objects`` (``(backend, key)`` pairs);
    return the intent's token for :func:`end_intent`."""
    token = f"{time.time_ns():x}-{secrets.token_hex(4)}"
    doc = {"op": op, "objects": [[b, k] for b, k in objects], "created": time.time(),
           "host": socket.gethostname(), "pid": os.getpid()}
    catalog.put_records(INTENTS, {token: doc})  # one write, no version read back (the token is new)
    return token


def end_intent(catalog: Catalog, token: str) -> None:
    """Drop an intent whose objects the catalog and the stores agree on again (best effort: a
    left-over intent only lets fsck look at objects it would list anyway)."""
    try:
        catalog.delete_records(INTENTS, [token])
    except VDirError as exc:
        log.debug("could not drop write intent %s: %s", token, exc)


@dataclass
class Intent:
    token: str
    created: float
    objects: list[tuple[str, str]] = field(default_factory=list)


def load_intents(catalog: Catalog) -> list[Intent]:
    return [Intent(token, float(doc.get("created", 0.0)), [(b, k) for b, k in doc.get("objects", [])])
            for token, doc, _ in catalog.list_records(INTENTS)]


# -- deletion --------------------------------------------------------------------------------


def owned(entry: Entry | None) -> list[Replica]:
    """The replicas whose objects vdir wrote for ``entry`` (a linked file's belong to someone else)."""
    if entry is None or entry.type != FILE or LINKED_XATTR in entry.xattrs:
        return []
    return list(entry.replicas)



def delete_unused(vd: VDir, replicas: Iterable[Replica], path: str) -> bool:
    """Delete the objects of ``replicas`` that no entry uses, once the catalog is durable.
    Returns False when some were kept (another entry, e.g. a link, still uses them) or could
    not be deleted: the caller's intent then stays, so fsck can delete them once unused.
    Asks the catalog who uses them :data:`USERS_BATCH` objects per query."""
    todo = list({(r.backend, r.key): r for r in replicas}.values())
    if not todo:
        return True
    vd.catalog.make_durable()
    ok = True
    for i in range(0, len(todo), USERS_BATCH):
        chunk = todo[i : i + USERS_BATCH]
        try:
            users = vd.catalog.replica_users_many((r.backend, r.key) for r in chunk)
        except VDirError as exc:
            log.warning("%s: could not check who uses %d old objects (fsck will find them): %s", path, len(chunk), exc)
            ok = False
            continue
        for r in chunk:
            if users[(r.backend, r.key)]:
                log.info("%s: object %s on %s is still used by entry %s; kept", path, r.key, r.backend,
                         users[(r.backend, r.key)][0])
                ok = False
                continue
            try:
                vd.backend(r.backend).delete(r.key)
            except VDirError as exc:
                ok = False
                log.warning("%s: could not delete old object %s on %s (fsck will find it): %s", path, r.key, r.backend, exc)
    return ok


def release(vd: VDir, replicas: list[Replica], path: str, token: str | None = None) -> None:
    """Delete ``replicas``' objects that nothing uses any more, under an intent (``token``, or a
    new one), and drop the intent when all went."""
    if not replicas:
        if token:
            end_intent(vd.catalog, token)
        return
    token = token or begin_intent(vd.catalog, ((r.backend, r.key) for r in replicas), "delete")
    if delete_unused(vd, replicas, path):
        end_intent(vd.catalog, token)
