"""The placement daemon: plans, claims tasks under leases, does them, and keeps doing so.

Several daemons (threads, processes, hosts sharing a MongoDB catalog) cooperate with no leader:
the task queue's atomic claim hands each task to one worker, a lease that is not renewed
expires (a killed daemon's task goes back to the queue), and every commit is a
compare-and-set, so work done twice by a worker that lost its lease is discarded.

Each daemon records itself as a node (``nodes`` records: host, pid, heartbeat, counters), so
``vdir placement status`` shows who is working.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vdir.catalog.base import DONE, FAILED, Task
from vdir.errors import NotFound, VDirError
from vdir.placement import planner, worker
from vdir.placement.policy import Policy, apply_policy, load_policy
from vdir.retry import backoff_delay
from vdir.trash import is_hidden

if TYPE_CHECKING:
    from vdir.core import VDir

log = logging.getLogger("vdir.placement")

NODES = "nodes"
KINDS = [planner.REPLICATE, planner.VERIFY, planner.TRIM]


@dataclass
class DaemonOptions:
    workers: int = 2
    lease: float = 60.0
    """Seconds a claimed task stays ours without renewal; renewed every lease/3 while working."""
    plan_interval: float = 60.0
    scrub_interval: float = 0.0
    """Seconds between scrubs (re-hash replicas last verified more than ``scrub_age`` ago); 0: off."""
    scrub_age: float = 7 * 86400.0
    scrub_batch: int = 1000
    poll: float = 1.0
    max_attempts: int = 5
    retry_base: float = 5.0
    retry_cap: float = 600.0
    task_retention: float | None = None
    """Seconds a finished task stays in the queue before it expires (None: the catalog's default,
    :data:`vdir.catalog.base.TASK_RETENTION`)."""
    policy_file: str | None = None
    once: bool = False
    node_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    journal: str | None = None
    """Test aid: append ``task-id kind`` of every completed task to this file."""


class Daemon:
    def __init__(self, vd: VDir, options: DaemonOptions | None = None) -> None:
        vd.require_admin()
        self.vd = vd
        self.opts = options or DaemonOptions()
        self.stop_event = threading.Event()
        self.counters = {"done": 0, "failed": 0, "retried": 0, "bytes": 0}
        self._lock = threading.Lock()
        self._policy: Policy | None = None
        self._policy_version = -1
        self._observer: Any = None
        self._policy_file_sig: tuple[int, int, int] | None = None
        self._policy_file_lock = threading.Lock()  # the watchdog thread and the loop both load it
        self.started = time.time()
        self.plan_now = threading.Event()
        if self.opts.task_retention is not None:
            vd.catalog.task_retention = self.opts.task_retention

    # -- policy ---------------------------------------------------------------------------------
    def policy(self) -> Policy | None:
        """The stored policy, re-read when its version changed."""
        try:
            _, version = self.vd.catalog.get_record("policies", "current")
        except NotFound:
            return None
        if version != self._policy_version:
            self._policy = load_policy(self.vd.catalog)
            self._policy_version = version
            log.info("policy v%s loaded", version)
        return self._policy

    def load_policy_file(self) -> None:
        path = self.opts.policy_file
        if not path:
            return
        with self._policy_file_lock:
            self._load_policy_file(path)

    def _load_policy_file(self, path: str) -> None:
        st = os.stat(path)
        self._policy_file_sig = (st.st_mtime_ns, st.st_size, st.st_ino)
        text = Path(path).read_text(encoding="utf-8")
        current = None
        try:
            doc, _ = self.vd.catalog.get_record("policies", "current")
            current = doc.get("text")
        except NotFound:
            pass
        if text != current:
            try:
                version = apply_policy(self.vd.catalog, text, str(path))
                log.warning("policy file %s applied as v%d", path, version)
            except VDirError as exc:
                log.error("policy file %s not applied (the previous policy stays): %s", path, exc)

    def _policy_file_changed(self) -> bool:
        """A stat-based safety net under the watchdog events (an event can be missed, e.g. on NFS)."""
        if not self.opts.policy_file:
            return False
        try:
            st = os.stat(self.opts.policy_file)
        except OSError:
            return False
        return (st.st_mtime_ns, st.st_size, st.st_ino) != self._policy_file_sig

    def _watch_policy_file(self) -> None:
        if not self.opts.policy_file:
            return
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer

        target = os.path.abspath(self.opts.policy_file)
        daemon = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                paths = {os.path.abspath(os.fsdecode(event.src_path))}
                if getattr(event, "dest_path", None):
                    paths.add(os.path.abspath(os.fsdecode(event.dest_path)))
                if target in paths and not event.is_directory:
                    try:
                        daemon.load_policy_file()
                        daemon.plan_now.set()
                    except OSError as exc:
                        log.error("policy file %s: %s", target, exc)

        self._observer = Observer()
        self._observer.schedule(Handler(), os.path.dirname(target) or ".", recursive=False)
        self._observer.daemon = True
        self._observer.start()

    # -- planning and scrubbing -------------------------------------------------------------------
    def plan(self) -> tuple[int, int]:
        self.purge_trash()
        policy = self.policy()
        if policy is None:
            return 0, 0
        return planner.queue(self.vd, planner.plan(self.vd, policy))

    def purge_trash(self) -> int:
        """Purge the trashed items that have expired (their objects are deleted as ``rm`` does)."""
        from vdir import trash

        try:
            return trash.empty(self.vd)
        except VDirError as exc:
            log.error("purging the trash failed: %s", exc)
            return 0

    def scrub(self) -> int:
        """Queue verify tasks for replicas not verified within ``scrub_age`` (a batch at a time)."""
        cutoff = time.time() - self.opts.scrub_age
        queued = 0
        for entry, replica in self.vd.catalog.iter_replicas():
            if replica.verified_at is not None and replica.verified_at >= cutoff:
                continue
            action = planner.Action(planner.VERIFY, "", entry.id, entry.version, replica.backend, None, "scrub", key=replica.key)
            self.vd.catalog.add_task(action.task())
            queued += 1
            if queued >= self.opts.scrub_batch:
                break
        return queued

    # -- tasks ------------------------------------------------------------------------------------
    def execute(self, task: Task, check_lease: Callable[[], None]) -> worker.Outcome:
        if task.kind == planner.REPLICATE:
            assert task.destination is not None
            return worker.replicate(self.vd, task.entry_id, task.destination, task.source, check_lease)
        if task.kind == planner.VERIFY:
            assert task.destination is not None
            return worker.verify(self.vd, task.entry_id, task.destination, task.payload.get("key"))
        if task.kind == planner.TRIM:
            assert task.destination is not None
            return worker.trim(self.vd, task.entry_id, task.destination, task.payload.get("key"), self._trim_wanted(task))
        raise VDirError(f"unknown task kind {task.kind!r}")

    def _trim_wanted(self, task: Task) -> Callable[[Any], bool]:
        """Re-check a trim against the entry and policy as they are at commit time."""

        def wanted(entry: Any) -> bool:
            policy = self.policy()
            if policy is None:
                return False
            backends = {b.name: b for b in self.vd.catalog.list_backends()}
            path = self.vd.catalog.path_of(entry.id)
            if is_hidden(path):
                return False  # trashed since the task was queued: its replicas stay until it is purged
            return any(
                a.kind == planner.TRIM and a.backend == task.destination and a.key == task.payload.get("key")
                for a in planner.file_actions(path, entry, policy, backends)
            )

        return wanted

    def run_task(self, task: Task) -> None:
        lost = threading.Event()
        stop_renew = threading.Event()

        def renew() -> None:
            while not stop_renew.wait(self.opts.lease / 3):
                if not self.vd.catalog.renew_lease(task.id, self.opts.node_id, self.opts.lease):
                    lost.set()
                    return

        def check_lease() -> None:
            if lost.is_set() or not self.vd.catalog.renew_lease(task.id, self.opts.node_id, self.opts.lease):
                raise worker.LeaseLost(f"task {task.id}: lease lost to another worker")

        renewer = threading.Thread(target=renew, daemon=True, name=f"lease-{task.id}")
        renewer.start()
        try:
            outcome = self.execute(task, check_lease)
        except worker.LeaseLost as exc:
            log.warning("%s", exc)
            return
        except Exception as exc:  # noqa: BLE001 - every failure is recorded on the task
            message = f"{type(exc).__name__}: {exc}" if not isinstance(exc, VDirError) else str(exc)
            log.debug("task %s failed: %s", task.id, traceback.format_exc())
            if task.attempts >= self.opts.max_attempts:
                self.vd.catalog.finish_task(task.id, self.opts.node_id, FAILED, message)
                self._count("failed")
                log.error("task %s (%s) failed for good after %d attempts: %s", task.id, task.kind, task.attempts, message)
            else:
                delay = backoff_delay(task.attempts, self.opts.retry_base, self.opts.retry_cap)
                # from the catalog's clock (the server's), not this host's
                self.vd.catalog.finish_task(task.id, self.opts.node_id, FAILED, message, retry_in=delay)
                self._count("retried")
                log.warning("task %s (%s) failed, will retry: %s", task.id, task.kind, message)
            return
        finally:
            stop_renew.set()
        if self.vd.catalog.finish_task(task.id, self.opts.node_id, DONE, outcome.detail):
            self._count("done", outcome.bytes)
            if self.opts.journal:
                with open(self.opts.journal, "a", encoding="utf-8") as fh:
                    fh.write(f"{task.id} {task.kind} {self.opts.node_id}\n")
            log.info("task %s %s: %s", task.id, task.kind, outcome.detail)

    def _count(self, what: str, nbytes: int = 0) -> None:
        with self._lock:
            self.counters[what] += 1
            self.counters["bytes"] += nbytes

    def work(self) -> None:
        """One worker: claim, do, repeat.  With ``once``, stop when nothing is claimable."""
        while not self.stop_event.is_set():
            try:
                task = self.vd.catalog.claim_task(self.opts.node_id, self.opts.lease, KINDS)
            except VDirError as exc:
                log.error("cannot claim tasks: %s", exc)
                task = None
            if task is None:
                if self.opts.once:
                    return
                self.stop_event.wait(self.opts.poll)
                continue
            self.run_task(task)

    # -- node heartbeat ---------------------------------------------------------------------------
    def heartbeat(self, state: str = "running") -> None:
        """Record this node; ``heartbeat`` is stamped with the catalog's clock (the server's), so
        status compares it with the same clock whatever this host's clock says."""
        doc = {
            "host": socket.gethostname(), "pid": os.getpid(), "started": self.started,
            "state": state, "workers": self.opts.workers, "lease": self.opts.lease, **self.counters,
        }
        try:
            self.vd.catalog.put_record(NODES, self.opts.node_id, doc, stamp="heartbeat")
        except VDirError as exc:
            log.warning("heartbeat failed: %s", exc)

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> dict[str, int]:
        """Run until stopped (or, with ``once``, until the queue has nothing claimable)."""
        self._watch_policy_file()  # watch first, so a change made while the file loads is not missed
        self.load_policy_file()
        self.heartbeat()
        try:
            if self.opts.once:
                queued, _ = self.plan()
                if self.opts.scrub_interval:
                    self.scrub()
                threads = [threading.Thread(target=self.work, name=f"worker-{i}") for i in range(self.opts.workers)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                return dict(self.counters, queued=queued)
            threads = [threading.Thread(target=self.work, name=f"worker-{i}", daemon=True) for i in range(self.opts.workers)]
            for t in threads:
                t.start()
            next_plan = next_scrub = next_beat = 0.0
            while not self.stop_event.is_set():
                now = time.monotonic()
                if self._policy_file_changed():
                    try:
                        self.load_policy_file()
                        self.plan_now.set()
                    except OSError as exc:
                        log.error("policy file %s: %s", self.opts.policy_file, exc)
                if now >= next_plan or self.plan_now.is_set():
                    self.plan_now.clear()
                    try:
                        self.plan()
                    except VDirError as exc:
                        log.error("planning failed: %s", exc)
                    next_plan = now + self.opts.plan_interval
                if self.opts.scrub_interval and now >= next_scrub:
                    try:
                        self.scrub()
                    except VDirError as exc:
                        log.error("scrub failed: %s", exc)
                    next_scrub = now + self.opts.scrub_interval
                if now >= next_beat:
                    self.heartbeat()
                    next_beat = now + max(1.0, min(10.0, self.opts.lease / 3))
                self.stop_event.wait(min(self.opts.poll, 1.0))
            for t in threads:
                t.join(timeout=self.opts.lease)
            return dict(self.counters)
        finally:
            if self._observer is not None:
                self._observer.stop()
            self.heartbeat("stopped")

    def stop(self) -> None:
        self.stop_event.set()

