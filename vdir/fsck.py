"""Catalog <-> backends consistency check.

For every backend: list its objects once, then compare with the replicas the catalog records.

* **missing**: the catalog lists a replica whose object is not there;
* **corrupt**: the object's size differs, or (``deep``) its bytes do not hash to the record;
* **lost**: a file with content whose catalog entry lists no replica at all;
* **orphan**: an object no entry uses that vdir itself wrote: a write intent names it (see
  :mod:`vdir.objects`), left by an interrupted write or a delete that failed;
* **temporary**: an unfinished upload vdir started (a local ``.vdir-tmp-*`` file, an incomplete
  S3 multipart upload, uncommitted Azure blocks...), from a backend's ``Temporaries``
  capability;
* **foreign**: an object no entry uses and no intent names: another tool's file, the rest of an
  imported bucket, anything vdir did not write.  Listed, **never deleted**.

With ``gc`` (``vdir fsck --delete-orphans``) orphans and temporaries older than ``min_age``
seconds are deleted — an orphan only after checking once more that no entry uses it.  Nothing
else is ever deleted by fsck.

Exit status for the CLI: 0 clean (foreign objects are information, not a fault), 1 orphans or
temporaries only, 2 missing, corrupt or lost files (or a backend that could not be listed).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from vdir import objects as objs
from vdir.backends.base import ObjectMeta, Temporaries
from vdir.catalog.base import FILE, ROOT_ID
from vdir.errors import VDirError
from vdir.hashing import hash_stream
from vdir.objects import LINKED_XATTR

if TYPE_CHECKING:
    from vdir.core import VDir

log = logging.getLogger("vdir.fsck")

INFO_KINDS = ("foreign",)
"""Problems that do not change the exit status."""
CLEANABLE_KINDS = ("orphan", "temporary")


@dataclass
class Problem:
    kind: str  # missing | corrupt | lost | orphan | temporary | foreign | unreachable
    backend: str
    key: str = ""
    path: str = ""
    detail: str = ""
    size: int = 0


@dataclass
class FsckReport:
    files: int = 0
    replicas: int = 0
    objects: int = 0
    problems: list[Problem] = field(default_factory=list)
    deleted_orphans: int = 0

    def of_kind(self, kind: str) -> list[Problem]:
        return [p for p in self.problems if p.kind == kind]

    @property
    def exit_code(self) -> int:
        if any(p.kind not in INFO_KINDS + CLEANABLE_KINDS for p in self.problems):
            return 2
        return 1 if any(p.kind in CLEANABLE_KINDS for p in self.problems) else 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "files": self.files, "replicas": self.replicas, "objects": self.objects,
            "deleted_orphans": self.deleted_orphans, "exit_code": self.exit_code,
            "problems": [asdict(p) for p in self.problems],
        }


def fsck(vdir: VDir, *, deep: bool = False, backends: list[str] | None = None, gc: bool = False, min_age: float = 3600.0) -> FsckReport:
    """Check every replica against its backend's listing; see the module docstring.  Trashed
    files (:mod:`vdir.trash`) are files like any other here: their objects are in use."""
    vdir.require_admin()
    report = FsckReport()
    names = backends or [b.name for b in vdir.catalog.list_backends()]
    intents = objs.load_intents(vdir.catalog)
    intended: dict[tuple[str, str], float] = {}
    for intent in intents:
        for obj in intent.objects:
            intended[obj] = min(intent.created, intended.get(obj, intent.created))
    settled: set[tuple[str, str]] = set()  # objects whose state the catalog and the store agree on
    referenced: set[tuple[str, str]] = set()
    listed: set[str] = set()
    seen_files: set[int] = set()
    now = time.time()
    for name in names:
        try:
            store = vdir.backend(name)
            objects: dict[str, ObjectMeta] = {m.key: m for m in store.list("")}
        except VDirError as exc:
            report.problems.append(Problem("unreachable", name, detail=str(exc)))
            continue
        listed.add(name)
        report.objects += len(objects)
        for entry, replica in vdir.catalog.iter_replicas(name):
            seen_files.add(entry.id)
            report.replicas += 1
            if LINKED_XATTR not in entry.xattrs:
                # used by a file vdir stored; an object vdir wrote that only a link uses keeps
                # its intent, so fsck can delete it once the link goes too
                settled.add((name, replica.key))
            referenced.add((name, replica.key))
            meta = objects.pop(replica.key, None)
            path = _path(vdir, entry.id)
            if meta is None:
                report.problems.append(Problem("missing", name, replica.key, path, "object not found"))
                continue
            if meta.size != replica.size:
                report.problems.append(Problem("corrupt", name, replica.key, path, f"size {meta.size}, catalog says {replica.size}"))
                continue
            expected = entry.hash or replica.hash
            if deep and expected:
                try:
                    with store.get(replica.key) as stream:
                        digest, _ = hash_stream(stream)
                except VDirError as exc:
                    report.problems.append(Problem("missing", name, replica.key, path, f"unreadable: {exc}"))
                    continue
                if digest != expected:
                    report.problems.append(Problem("corrupt", name, replica.key, path, f"hash {digest}, catalog says {expected}"))
        for key, meta in sorted(objects.items()):
            since = intended.get((name, key))
            if since is None:
                report.problems.append(Problem("foreign", name, key, detail="not written by vdir; never deleted", size=meta.size))
                continue
            report.problems.append(Problem("orphan", name, key, detail="written by vdir, used by no entry", size=meta.size))
            if gc and now - since >= min_age and _delete_orphan(vdir, name, key):
                report.deleted_orphans += 1
                settled.add((name, key))
        for obj in intended.keys() - {(name, k) for k in objects} - referenced:
            if obj[0] == name:
                settled.add(obj)  # absent from the store
        _temporaries(vdir, store, name, intended, report, gc=gc, min_age=min_age, now=now)
    _lost(vdir, report, seen_files)
    if gc:
        for intent in intents:
            if now - intent.created >= min_age and all(o in settled and o[0] in listed for o in intent.objects):
                objs.end_intent(vdir.catalog, intent.token)
    report.files = len(seen_files)
    return report


def _delete_orphan(vdir: VDir, backend: str, key: str) -> bool:
    try:
        if vdir.catalog.replica_users(backend, key):
            return False  # committed since the listing
        vdir.backend(backend).delete(key)
        return True
    except VDirError as exc:
        log.warning("could not delete orphan %s on %s: %s", key, backend, exc)
        return False


def _temporaries(vdir: VDir, store: Any, name: str, intended: dict[tuple[str, str], float], report: FsckReport, *,
                 gc: bool, min_age: float, now: float) -> None:
    """Unfinished uploads on backends that can list them (the ``Temporaries`` capability)."""
    if not isinstance(store, Temporaries):
        return
    try:
        temps = list(store.list_temporaries())
    except VDirError as exc:
        report.problems.append(Problem("unreachable", name, detail=f"cannot list unfinished uploads: {exc}"))
        return
    for t in temps:
        # a vdir-named temp file is vdir's by its name; an unfinished upload of another kind
        # (a multipart upload in a shared bucket) only when an intent names its key
        ours = t.kind == "tempfile" or (name, t.key) in intended
        if not ours:
            report.problems.append(Problem("foreign", name, t.key, detail=f"unfinished {t.kind} not started by vdir", size=t.size))
            continue
        report.problems.append(Problem("temporary", name, t.key, detail=f"unfinished {t.kind}", size=t.size))
        if gc and (t.mtime is None or now - t.mtime >= min_age):
            try:
                store.remove_temporary(t)
                report.deleted_orphans += 1
            except VDirError as exc:
                log.warning("could not remove unfinished upload %s on %s: %s", t.key, name, exc)


def _lost(vdir: VDir, report: FsckReport, seen: set[int]) -> None:
    """Files with content and no replica at all: nothing any backend listing would show."""
    for rel, entry in vdir.catalog.walk(ROOT_ID):
        if entry.type == FILE and entry.size > 0 and not entry.replicas and entry.id not in seen:
            seen.add(entry.id)
            report.problems.append(Problem("lost", "", path="/" + rel, detail="the catalog lists no replica for this file"))


def _path(vdir: VDir, entry_id: int) -> str:
    try:
        return vdir.catalog.path_of(entry_id)
    except VDirError:
        return f"<entry {entry_id}>"
