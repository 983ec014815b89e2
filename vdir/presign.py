"""Direct transfers: a client moves a file's bytes to or from the cloud itself, through a
short-lived pre-signed URL the server hands out, while the catalog stays the server's.

* :func:`download_url` — a URL that reads the best readable replica of a file, with the hash
  and size the client must check what it downloaded against (the server never sees the bytes,
  so the client verifies).
* :func:`start_direct_upload` / :func:`finish_direct_upload` — a pre-signed PUT to a fresh key
  on the chosen backend (the key the object keeps: no copy afterwards).  The key is named in a
  write intent before the URL is handed out, so an upload that is never finished leaves an
  orphan ``fsck --delete-orphans`` may remove, never an unknown object.  Finishing reads the
  object back through the backend (the client's word is not trusted), checks its size and the
  xxh3-128 the client claims, and commits it like any put (compare-and-set on the catalog, the
  replaced version's objects released).  A mismatch deletes the staged object and raises
  :class:`~vdir.errors.IntegrityError`; nothing reaches the catalog.

Every function takes the :class:`~vdir.core.VDir` the request acts as (``vd.as_user(...)`` on the
server), so the permission and quota checks of the core apply: a path the principal cannot see
is ``NotFound``, one it cannot write ``PermissionDenied``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from vdir import objects, paths
from vdir.catalog.base import DIR, FILE, OK, Entry, Replica
from vdir.errors import (
    AlreadyExists,
    IntegrityError,
    InvalidArgument,
    IsADirectory,
    NotFound,
    VDirError,
)
from vdir.hashing import HashingReader

if TYPE_CHECKING:
    from vdir.core import VDir

log = logging.getLogger("vdir.presign")

HASH_PREFIX = "xxh128:"
"""How a hash is written on the wire (``xxh128:<hex>``); a bare hex digest is accepted too."""
DEFAULT_EXPIRES = 900.0
UPLOAD_EXPIRES = 3600.0


def wire_hash(digest: str | None) -> str | None:
    """``xxh128:<hex>`` for a catalog digest (the catalog stores the bare hex)."""
    return None if digest is None else HASH_PREFIX + digest


def bare_hash(claimed: str | None) -> str | None:
    """The hex digest of ``xxh128:<hex>`` (or of a bare hex); ``InvalidArgument`` for another algorithm."""
    if claimed is None or claimed == "":
        return None
    algo, sep, digest = claimed.partition(":")
    if not sep:
        digest = algo
    elif algo.lower() not in ("xxh128", "xxh3-128", "xxh3_128"):
        raise InvalidArgument(f"unsupported hash {algo!r}: use xxh128:<hex>")
    digest = digest.strip().lower()
    if len(digest) != 32 or any(c not in "0123456789abcdef" for c in digest):
        raise InvalidArgument(f"bad xxh128 digest {claimed!r} (32 hex digits)")
    return digest


def _allow(vd: VDir, norm: str, need: str) -> None:
    """The core's permission check for ``norm`` (a no-op on a VDir without one)."""
    check = getattr(vd, "_allow", None)
    if check is not None:
        check(norm, need)


# -- downloads ------------------------------------------------------------------------------------
def download_url(vd: VDir, path: str, expires: float = DEFAULT_EXPIRES) -> dict[str, Any] | None:
    """``{url, method, headers, expires, hash, size}`` reading the file ``path`` from its best
    healthy replica whose backend can pre-sign, or None when none can (or the file has no
    recorded hash the client could verify against: then the server streams and verifies).
    ``Range`` requests work on the URL."""
    from vdir.streams import ordered_replicas

    entry = vd.entry(path)  # NotFound / invisible through the core's checks
    norm = paths.normalize(path)
    if entry.type == DIR:
        raise IsADirectory(f"{norm}: is a directory", path=norm)
    if entry.type != FILE or entry.hash is None or not entry.replicas:
        return None
    for replica in ordered_replicas(vd, entry):
        if replica.state != OK:
            continue
        try:
            signed = vd.backend(replica.backend).presign_get(replica.key, expires)
        except VDirError as exc:
            log.debug("%s: cannot sign a URL on %s: %s", norm, replica.backend, exc)
            continue
        if signed is not None:
            return {"url": signed.url, "method": signed.method, "headers": dict(signed.headers),
                    "expires": signed.expires, "hash": wire_hash(entry.hash), "size": entry.size,
                    "backend": replica.backend}
    return None


# -- uploads --------------------------------------------------------------------------------------
@dataclass
class DirectUpload:
    """What the server keeps between the start and the finish of a direct upload (JSON-able:
    :meth:`as_dict` / :meth:`from_dict`); the client gets ``url``, ``method`` and ``headers``."""

    path: str
    backend: str
    key: str
    size: int
    intent: str
    url: str
    method: str
    headers: dict[str, str]
    expires: float
    force: bool = False
    mode: int | None = None
    mtime: float | None = None
    created: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DirectUpload:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def for_client(self) -> dict[str, Any]:
        return {"url": self.url, "method": self.method, "headers": dict(self.headers), "expires": self.expires}


def start_direct_upload(vd: VDir, path: str, size: int, *, backend: str | None = None, force: bool | None = None,
                        mode: int | None = None, mtime: float | None = None,
                        expires: float = UPLOAD_EXPIRES) -> dict[str, Any] | None:
    """Check that ``size`` bytes may be written at ``path`` and hand out a pre-signed PUT for
    them: the upload's record (:class:`DirectUpload` as a dict, JSON-able: the server keeps it
    and gives it back to :func:`finish_direct_upload`; ``url``, ``method`` and ``headers`` are
    for the client), or None when the backend cannot pre-sign (or one PUT cannot carry ``size``
    bytes): the caller then uploads through the server.  Raises what a put would raise before
    moving a byte: ``IsADirectory``, ``AlreadyExists`` when ``force`` is False (None: not
    checked now, only at the finish), ``PermissionDenied``, ``NoSpace`` (quota)."""
    norm = paths.normalize(path)
    if norm == "/":
        raise IsADirectory("/: is the root directory")
    if size < 0:
        raise InvalidArgument(f"{norm}: negative size {size}")
    _allow(vd, norm, "write")
    _check_target(vd, norm, True if force is None else force)
    _check_quota(vd, norm, size)
    bname = vd.choose_backend(backend)
    store = vd.backend(bname)
    if store.presign_put_max and size > store.presign_put_max:
        return None
    key = objects.unique_key(objects.path_key(norm))  # fresh: no create-only race, no copy later
    signed = store.presign_put(key, expires)
    if signed is None:
        return None
    token = objects.begin_intent(vd.catalog, [(bname, key)], "direct-put")
    return DirectUpload(path=norm, backend=bname, key=key, size=size, intent=token, url=signed.url,
                        method=signed.method, headers=dict(signed.headers), expires=signed.expires, force=bool(force),
                        mode=mode, mtime=mtime, created=time.time()).as_dict()


def _ticket(upload: DirectUpload | dict[str, Any]) -> DirectUpload:
    return upload if isinstance(upload, DirectUpload) else DirectUpload.from_dict(upload)


def abort_direct_upload(vd: VDir, upload: DirectUpload | dict[str, Any]) -> None:
    """Drop an unfinished direct upload: its object (if the client sent one) and its intent."""
    _discard(vd, _ticket(upload))


def finish_direct_upload(vd: VDir, upload: DirectUpload | dict[str, Any], hash: str | None = None, *,
                         force: bool | None = None, mode: int | None = None) -> Entry:
    """Commit what the client PUT to the upload's URL as the file ``upload["path"]``
    (``force`` and ``mode``, when given, override what the start recorded).

    The object is read back through the backend and hashed; its size must be the announced one
    and its hash ``hash`` (``xxh128:<hex>``) when the client claims one, else the staged
    object is deleted and ``IntegrityError`` raised.  ``NotFound`` (nothing changed, the upload
    stays open) when the object has not arrived yet."""
    upload = _ticket(upload)
    if force is not None:
        upload.force = force
    if mode is not None:
        upload.mode = mode
    claimed = bare_hash(hash)
    store = vd.backend(upload.backend)
    try:
        meta = store.head(upload.key)
    except NotFound:
        raise NotFound(f"{upload.path}: the direct upload has not arrived on {upload.backend} (PUT it to the URL "
                       "first)", path=upload.path) from None
    try:
        with store.get(upload.key) as stream, HashingReader(stream) as reader:  # type: ignore[arg-type]
            while reader.read(8 * 1024 * 1024):
                pass
    except VDirError:
        raise  # unreadable now: the upload stays open, the client may try again
    problem = None
    if reader.size != upload.size:
        problem = f"holds {reader.size} bytes, {upload.size} were announced"
    elif claimed is not None and reader.hexdigest != claimed:
        problem = f"has hash xxh128:{reader.hexdigest}, the client claimed xxh128:{claimed}"
    if problem is not None:
        _discard(vd, upload)
        raise IntegrityError(f"{upload.path}: the uploaded object {problem}; it was deleted and nothing was "
                             "written", path=upload.path)
    norm = upload.path
    try:
        _allow(vd, norm, "write")
        parent_id, existing = vd._locate_for_write(norm, True)
        if existing is not None:
            if existing.type == DIR:
                raise IsADirectory(f"{norm}: is a directory", path=norm)
            if not upload.force:
                raise AlreadyExists(f"{norm}: exists (use --force to overwrite)", path=norm)
        _check_quota(vd, norm, upload.size, existing)
    except BaseException:
        _discard(vd, upload)
        raise
    old = objects.owned(existing)
    token = upload.intent
    if old:  # the intent must name the objects the commit replaces before they can be deleted
        token = objects.begin_intent(vd.catalog, [(upload.backend, upload.key)] + [(r.backend, r.key) for r in old],
                                     "put")
        objects.end_intent(vd.catalog, upload.intent)
    replica = Replica(backend=upload.backend, key=upload.key, size=reader.size, hash=reader.hexdigest, etag=meta.etag,
                      state=OK, verified_at=time.time())
    return vd._commit(norm, parent_id, existing, replica, token, old, mode=upload.mode, mtime=upload.mtime,
                      blocks=reader.block_hashes, what="uploading directly")


def _discard(vd: VDir, upload: DirectUpload) -> None:
    try:
        vd.backend(upload.backend).delete(upload.key)
    except VDirError as exc:  # the intent stays: fsck deletes the object later
        log.warning("%s: could not delete the staged upload %s:%s: %s", upload.path, upload.backend, upload.key, exc)
        return
    with contextlib.suppress(VDirError):
        objects.end_intent(vd.catalog, upload.intent)


def _check_target(vd: VDir, norm: str, force: bool) -> None:
    """A put's early refusals: a directory there, or a file without ``force``."""
    try:
        existing = vd.entry(norm)
    except NotFound:
        return
    if existing.type == DIR:
        raise IsADirectory(f"{norm}: is a directory", path=norm)
    if not force:
        raise AlreadyExists(f"{norm}: exists (use --force to overwrite)", path=norm)


def _check_quota(vd: VDir, norm: str, size: int, existing: Entry | None = None) -> None:
    """The core's quota check for ``size`` more bytes at ``norm`` (none on a VDir without quotas)."""
    check = getattr(vd, "_check_quota", None)
    if check is not None:
        check(norm, size, replaced=existing)
