"""Background write-back: files left pending in the journal are committed by one thread while
the mount serves.

A file is *pending* when its content is in the journal (see :mod:`vdir.vfs.cache`) but not in
the catalog: an earlier mount was killed or lost its backend before committing it, or its commit
on ``close`` failed here.  A mount takes every record of its journal as a pending
:class:`~vdir.vfs.files.Node` *before* it starts serving (catalog look-ups only, no upload), so
the file is listed, with its pending size, and readable from the cache at once; the uploads then
run in the background and never hold up the mount.  A write to a pending file cancels its
background upload; the file is committed when that handle closes, like any other.

Generation check: a record is committed only where it still belongs.  A change to an existing
file needs that same entry (same id) at its path; a new file needs the directory it was created
in.  A record whose entry was removed or replaced, whose directory is gone, or whose path was
taken by another file is *parked*: moved aside to ``parked/`` in the cache directory, reported
once (a warning in the mount's log, and a line of ``vdir mount``), never retried.  A record whose
content is already the catalog's (the mount died between its commit and removing the record) is
dropped.  One whose file changed elsewhere meanwhile is saved beside it as a ``.conflict-`` copy.
A record that fails with an error that cannot go away by waiting (an invalid name, a path
through a file) is parked too; other failures (backend down, full, slow) are retried, 1 s after
the first failure and at most every :data:`RETRY_MAX` seconds after later ones, each distinct
error logged once.
"""

from __future__ import annotations

import errno
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vdir.catalog.base import FILE
from vdir.errors import Conflict, VDirError, is_retryable
from vdir.vfs.cache import CacheDir, PendingRecord
from vdir.vfs.files import Node, Unreplayable, _current, check_generation

if TYPE_CHECKING:
    from vdir.core import VDir

log = logging.getLogger("vdir.vfs")

WORKERS = 4
"""Files committed in the background at once (uploads wait on the network or the disk, not on Python)."""
RETRY_FIRST = 1.0
RETRY_MAX = 30.0
"""Seconds between two attempts to commit a pending file, at most."""
NEVER_ERRNOS = frozenset({errno.EINVAL, errno.ENAMETOOLONG, errno.ENOTDIR, errno.EISDIR})
"""Errors of a commit that waiting cannot cure: the record is parked."""


@dataclass
class AdoptReport:
    """What a mount found in its journal when it started."""

    pending: int = 0
    dropped: int = 0
    parked: list[str] = field(default_factory=list)


HOLD_FACTOR = 6
"""A file closed in write-back mode waits for a quiet mount at most this many write-back delays."""

class WriteBack:
    """The background committer of pending files (see the module docstring).  Thread-safe.

    ``lock`` and ``nodes`` are the mount's (:class:`~vdir.fuse.ops.VDirOperations`): a pending
    file is in ``nodes`` under its path while it is visible."""

    def __init__(self, vd: VDir, cache: CacheDir, pool: ThreadPoolExecutor, lock: threading.RLock, nodes: dict[str, Node]) -> None:
        self.vd = vd
        self.cache = cache
        self.pool = pool
        self._lock = lock
        self._nodes = nodes
        self._cond = threading.Condition()
        self._due: dict[Node, float] = {}
        self._heap: list[tuple[float, int, Node]] = []
        """``_due`` ordered by time (entries no longer in ``_due`` at that time are skipped), so a
        worker finds the next file in O(log n): thousands of files may wait for their delay."""
        self._seq = itertools.count()
        self._quiet_until = 0.0
        """Monotonic time until which files closed in write-back mode wait (see :meth:`enqueue`)."""
        self._hold_until: dict[Node, float] = {}
        """Of a node enqueued with ``quiet``: the latest time its upload waits for a quiet mount."""
        self._delay: dict[Node, float] = {}
        self._reported: dict[Node, str] = {}
        self._verify: set[Node] = set()
        self._announce: set[Node] = set()
        """Taken up from the journal at start: its commit is logged."""
        self._busy: set[Node] = set()
        """Nodes a worker is committing now."""
        self._stop = False
        self._threads: list[threading.Thread] = []
        self.on_commit: Callable[[str], None] | None = None
        """Called with the path of each file committed here (the mount forgets cached metadata)."""
        self.parked: list[str] = []
        """One line per record parked by this mount."""

    # -- start ----------------------------------------------------------------------------------
    def adopt(self, records: Iterable[PendingRecord]) -> AdoptReport:
        """Take the journal's records as pending files (oldest first; catalog look-ups only)."""
        report = AdoptReport()
        for record in records:
            try:
                self._adopt(record)
                report.pending += 1
            except Unreplayable as exc:
                report.parked.append(self._park_record(record, str(exc)))
            except FileNotFoundError:
                self.cache.journal.drop(record)
                report.dropped += 1
            except OSError as exc:
                log.warning("%s: pending upload not taken up now (kept for the next mount): %s", record.path, exc)
        return report

    def _adopt(self, record: PendingRecord) -> None:
        current = _current(self.vd, record.path)
        if record.base_version is not None:
            entry = check_generation(self.vd, record)
            assert entry is not None
            visible = entry.version == record.base_version or (record.base_hash is not None and entry.hash == record.base_hash)
        else:
            entry = None
            visible = current is None
            if visible:
                check_generation(self.vd, record)
        node = Node.adopt(self.vd, self.cache, self.pool, record, entry)
        self._announce.add(node)
        if visible:
            with self._lock:
                older = self._nodes.get(record.path)
                self._nodes[record.path] = node
            if older is not None:
                self._park(older, "superseded by a later change to the same path")
        else:  # the catalog moved on: ours already (committed, record not yet removed) or a conflict
            self._verify.add(node)
        self.enqueue(node)

    def start(self, workers: int = WORKERS) -> None:
        for i in range(workers):
            thread = threading.Thread(target=self._run, daemon=True, name=f"vdir-write-back-{i}")
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop (what is pending stays in the journal for the next mount)."""
        with self._cond:
            self._stop = True
            busy = list(self._busy)
            self._cond.notify_all()
        for node in busy:
            node.interrupt()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    # -- queue ----------------------------------------------------------------------------------
    def enqueue(self, node: Node, delay: float = 0.0, *, quiet: bool = False) -> None:
        """Commit ``node`` in the background, after ``delay`` seconds.

        With ``quiet`` (a file closed in write-back mode) the delay is a quiet period of the
        whole mount: the upload waits until no file was closed this way for ``delay`` seconds,
        at most :data:`HOLD_FACTOR` times ``delay`` after its own close.  A burst of writes (an
        untar, a build) is then not slowed by the uploads of its first files, which would take
        the interpreter from the requests still coming in."""
        with self._cond:
            now = time.monotonic()
            due = self._due[node] = now + delay
            if quiet and delay > 0:
                self._quiet_until = max(self._quiet_until, due)
                self._hold_until[node] = now + HOLD_FACTOR * delay
            else:
                self._hold_until.pop(node, None)
            heapq.heappush(self._heap, (due, next(self._seq), node))
            self._cond.notify()

    def pending(self) -> int:
        with self._cond:
            return len(self._due) + len(self._busy)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stop:
                    now = time.monotonic()
                    found = self._next_due(now)
                    if isinstance(found, Node):
                        node = found
                        del self._due[node]
                        self._busy.add(node)
                        break
                    self._cond.wait(found)
                if self._stop:
                    return
            try:
                self._process(node)
            except Exception:  # noqa: BLE001 - the thread must live on; the record stays in the journal
                log.exception("%s: background upload failed unexpectedly (kept pending)", node.path)
            finally:
                with self._cond:
                    self._busy.discard(node)
                    self._cond.notify()

    def _next_due(self, now: float) -> Node | float | None:
        """The earliest due node not being committed now (taken off the heap), else the seconds
        until the next one is due (``None``: nothing queued).  Called with ``_cond`` held."""
        held: list[tuple[float, int, Node]] = []
        try:
            while self._heap:
                due, _, node = item = self._heap[0]
                if self._due.get(node) != due:
                    heapq.heappop(self._heap)  # re-queued for another time, or taken
                    continue
                if due > now:
                    return due - now
                heapq.heappop(self._heap)
                hold = self._hold_until.get(node)
                if hold is not None and now < self._quiet_until and now < hold:
                    later = self._due[node] = min(self._quiet_until, hold)  # still a burst: wait for its end
                    heapq.heappush(self._heap, (later, next(self._seq), node))
                    continue
                self._hold_until.pop(node, None)
                if node in self._busy:  # its commit is running: after it, as before
                    held.append(item)
                    continue
                return node
            return 0.05 if held else None
        finally:
            for item in held:
                heapq.heappush(self._heap, item)

    def _process(self, node: Node) -> None:
        if node.unlinked or not node.dirty or not node.background or node.record is None:
            return  # removed, or a handle wrote since: its close commits
        record = node.record
        if node in self._verify:
            self._verify.discard(node)
            if self._already_committed(node, record):
                log.warning("%s: pending upload found already committed", record.path)
                with node.lock:
                    node.dirty = node.background = False
                self._settle(node)
                return
        try:
            entry = node.commit(background=True)
        except Conflict as exc:
            log.warning("%s", exc)
            self._settle(node)
            return
        except Unreplayable as exc:
            self._park(node, str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - sorted below: parked or retried
            code = exc.errno_code if isinstance(exc, VDirError) else getattr(exc, "errno", None)
            if code in NEVER_ERRNOS and not is_retryable(exc):
                self._park(node, f"it cannot be stored: {exc}")
                return
            delay = min(RETRY_MAX, self._delay.get(node, RETRY_FIRST / 2) * 2)
            self._delay[node] = delay
            message = str(exc) or type(exc).__name__
            if self._reported.get(node) != message:
                self._reported[node] = message
                log.warning("%s: background upload failed, retrying (at most every %.0fs): %s", record.path, RETRY_MAX, message)
            self.enqueue(node, delay)
            return
        if entry is None:  # gave way to a rename or a change; still ours if still pending
            if node.dirty and node.background and not node.unlinked:
                self.enqueue(node)
            return
        if node in self._announce or node in self._delay:
            log.warning("%s: pending upload committed (%d bytes)", node.path, entry.size)
        if self.on_commit is not None:
            self.on_commit(node.path)
        self._settle(node)

    def _already_committed(self, node: Node, record: PendingRecord) -> bool:
        from vdir.hashing import hash_stream

        current = _current(self.vd, record.path)
        if current is None or current.type != FILE or current.hash is None:
            return False
        with open(self.cache.journal.data_path(record.id), "rb") as fh:
            digest, size = hash_stream(fh)
        return digest == current.hash and size == current.size

    # -- outcomes -------------------------------------------------------------------------------
    def _forget(self, node: Node) -> None:
        self._delay.pop(node, None)
        self._reported.pop(node, None)
        self._verify.discard(node)
        self._announce.discard(node)

    def _settle(self, node: Node) -> None:
        """Committed (or handled as a conflict): no longer pending."""
        self._forget(node)
        with self._lock:
            if self._nodes.get(node.path) is node:
                if node.refs:
                    return  # open: its last release closes it
                del self._nodes[node.path]
            close = node.refs == 0
        if close:
            node.close()

    def _park(self, node: Node, reason: str) -> None:
        where = node.park(reason)
        self._report(node.path, reason, where)
        self._settle(node)

    def _park_record(self, record: PendingRecord, reason: str) -> str:
        where = self.cache.journal.park(record, reason)
        return self._report(record.path, reason, str(where))

    def _report(self, path: str, reason: str, where: str) -> str:
        line = f"{path}: pending change not stored and parked ({reason}); its content is kept in {where}"
        log.warning("%s", line)
        self.parked.append(line)
        return line
