"""``vdir fsck --repair``: mark what fsck found, then copy good replicas over the bad ones.

For every missing or corrupt replica: the catalog records its state, a good replica (if any)
is copied to the same backend when that backend answers, else to another backend the file is
not on yet; once the new copy is verified and committed, the bad replica's record is dropped
(and its object, if any, deleted).  A file with no good replica left is reported as lost:
nothing can bring it back, and the catalog says so (its replicas stay marked).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vdir.catalog.base import CORRUPT, MISSING, OK
from vdir.errors import NotFound, VDirError
from vdir.placement import worker

if TYPE_CHECKING:
    from vdir.core import VDir
    from vdir.fsck import FsckReport


@dataclass
class RepairResult:
    repaired: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 2 if self.lost or self.failed else 0


def repair(vd: VDir, report: FsckReport) -> RepairResult:
    result = RepairResult()
    damaged: dict[str, list[tuple[str, str]]] = {}
    for p in report.problems:
        if p.kind not in ("missing", "corrupt") or not p.path.startswith("/"):
            continue
        damaged.setdefault(p.path, []).append((p.backend, p.key))
        try:
            entry = vd.entry(p.path)
        except NotFound:
            continue
        worker.set_replica_state(vd, entry.id, p.backend, p.key, MISSING if p.kind == "missing" else CORRUPT)
    for path, bad in sorted(damaged.items()):
        try:
            entry = vd.entry(path)
        except NotFound:
            continue
        if not any(r.state == OK for r in entry.replicas):
            result.lost.append(f"{path}: no good copy left ({', '.join(b for b, _ in bad)} damaged)")
            continue
        for backend, key in bad:
            try:
                _replace(vd, entry.id, backend, key)
                result.repaired.append(f"{path}: copy on {backend} restored")
            except VDirError as exc:
                result.failed.append(f"{path}: copy on {backend} not restored: {exc}")
    return result


def _replace(vd: VDir, entry_id: int, backend: str, key: str) -> None:
    """Put a verified good copy where the bad one was (or elsewhere), then drop the bad one."""
    entry = vd.catalog.get(entry_id)
    candidates = [backend] + sorted(
        b.name for b in vd.catalog.list_backends() if b.name != backend and all(r.backend != b.name for r in entry.replicas)
    )
    last: VDirError | None = None
    for dest in candidates:
        try:
            vd.backend(dest).list_with_delimiter("")
            worker.replicate(vd, entry_id, dest)
            break
        except VDirError as exc:
            last = exc
    else:
        raise last or VDirError("no backend can take a new copy")

    # The new copy may have taken the bad one's key (a missing object frees it): then the commit
    # already replaced the record.  Otherwise drop the bad record and its object.
    current = vd.catalog.get(entry_id)
    if any(r.backend == backend and r.key == key and r.state != OK for r in current.replicas):
        worker.trim(vd, entry_id, backend, key, lambda e: any(r.state == OK for r in e.replicas))
