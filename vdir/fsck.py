"""Catalog <-> backends consistency check.

For every backend: list its objects once, then compare with the replicas the catalog records.

* **missing**: the catalog lists a replica whose object is not there;
* **corrupt**: the object's size differs, or (``deep``) its bytes do not hash to the record;
* **orphan**: an object no replica points at (an interrupted write leaves these; ``gc`` with a
  minimum age removes them, so an upload still in flight is never taken for one).

Exit status for the CLI: 0 clean, 1 orphans only, 2 missing or corrupt replicas (or a backend
that could not be listed).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from vdir.backends.base import ObjectMeta
from vdir.errors import VDirError
from vdir.hashing import hash_stream

if TYPE_CHECKING:
    from vdir.core import VDir

log = logging.getLogger("vdir.fsck")

TMP_PREFIX = ".vdir-tmp/"


@dataclass
class Problem:
    kind: str  # missing | corrupt | orphan | unreachable
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
        if any(p.kind != "orphan" for p in self.problems):
            return 2
        return 1 if self.problems else 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "files": self.files, "replicas": self.replicas, "objects": self.objects,
            "deleted_orphans": self.deleted_orphans, "exit_code": self.exit_code,
            "problems": [asdict(p) for p in self.problems],
        }


def fsck(vdir: VDir, *, deep: bool = False, backends: list[str] | None = None, gc: bool = False, min_age: float = 3600.0) -> FsckReport:
    """Check every replica against its backend's listing; see the module docstring."""
    report = FsckReport()
    names = backends or [b.name for b in vdir.catalog.list_backends()]
    seen_files: set[int] = set()
    for name in names:
        try:
            store = vdir.backend(name)
            objects: dict[str, ObjectMeta] = {m.key: m for m in store.list("") if not m.key.startswith(TMP_PREFIX)}
        except VDirError as exc:
            report.problems.append(Problem("unreachable", name, detail=str(exc)))
            continue
        report.objects += len(objects)
        for entry, replica in vdir.catalog.iter_replicas(name):
            seen_files.add(entry.id)
            report.replicas += 1
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
        now = time.time()
        for key, meta in sorted(objects.items()):
            report.problems.append(Problem("orphan", name, key, detail="no catalog entry points here", size=meta.size))
            if gc and (meta.mtime is None or now - meta.mtime >= min_age):
                try:
                    store.delete(key)
                    report.deleted_orphans += 1
                except VDirError as exc:
                    log.warning("could not delete orphan %s on %s: %s", key, name, exc)
    report.files = len(seen_files)
    return report


def _path(vdir: VDir, entry_id: int) -> str:
    try:
        return vdir.catalog.path_of(entry_id)
    except VDirError:
        return f"<entry {entry_id}>"
