"""Long operations (recursive copy, fsck, placement run) as jobs: an id the client polls,
state and progress kept in the catalog's records (collection ``jobs``), so a job's outcome
survives the request, the client and the server process.

States: ``queued`` → ``running`` → ``done`` | ``failed``.  A job whose server stopped before
it ended is marked ``failed`` when a server starts on the same host.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from vdir.catalog.base import Catalog
from vdir.errors import NotFound, VDirError
from vdir.procs import alive

log = logging.getLogger("vdir.server")

COLLECTION = "jobs"
Report = Callable[[int, int | None], None]
"""``report(done, total)``: a job's progress."""
WRITE_EVERY = 0.5
"""Seconds between two progress writes of one job."""
KEEP_SECONDS = 7 * 86400.0
"""A finished job's record is kept this long after it ended."""


class Jobs:
    """Runs jobs in a small thread pool and records them in ``catalog``."""

    def __init__(self, catalog: Catalog, workers: int = 2, keep_seconds: float = KEEP_SECONDS) -> None:
        self.catalog = catalog
        self.keep_seconds = keep_seconds
        self._pruned = 0.0
        self.host = socket.gethostname()
        self.node = f"{self.host}-{os.getpid()}"
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vdir-job")
        self._lock = threading.Lock()
        self.reap()

    def _save(self, doc: dict[str, Any]) -> None:
        doc["updated"] = time.time()
        self.catalog.put_record(COLLECTION, doc["id"], doc)

    def reap(self) -> int:
        """Mark failed the unfinished jobs of servers on this host that are gone, and forget the
        jobs that ended more than ``keep_seconds`` ago; return how many were marked."""
        n = 0
        cutoff = time.time() - self.keep_seconds
        self._pruned = time.monotonic()
        for key, doc, _ in self.catalog.list_records(COLLECTION):
            if doc.get("state") not in ("queued", "running"):
                if float(doc.get("updated", 0.0)) < cutoff:
                    self.catalog.delete_record(COLLECTION, key)
                continue
            host, _, pid = str(doc.get("node", "")).rpartition("-")
            if host != self.host or not pid.isdigit() or int(pid) == os.getpid() or alive(int(pid)):
                continue
            doc.update(state="failed", error="interrupted: the server running it stopped")
            self._save(doc)
            n += 1
        return n

    def submit(self, kind: str, user: str, work: Callable[[Report], Any]) -> dict[str, Any]:
        """Queue ``work(report)``; its return value (JSON-able) becomes the job's result."""
        if time.monotonic() - self._pruned > 3600:
            self.reap()
        now = time.time()
        doc: dict[str, Any] = {"id": secrets.token_hex(8), "kind": kind, "state": "queued", "user": user,
                               "progress": {"done": 0, "total": None}, "result": None, "error": None,
                               "created": now, "updated": now, "node": self.node}
        self._save(doc)
        self.pool.submit(self._run, dict(doc), work)
        return doc

    def _run(self, doc: dict[str, Any], work: Callable[[Report], Any]) -> None:
        doc["state"] = "running"
        self._save(doc)
        last = [0.0]

        def report(done: int, total: int | None) -> None:
            doc["progress"] = {"done": done, "total": total}
            now = time.monotonic()
            if now - last[0] >= WRITE_EVERY:
                last[0] = now
                with contextlib.suppress(VDirError):
                    self._save(dict(doc))

        try:
            doc["result"] = work(report)
            doc["state"] = "done"
        except VDirError as exc:
            doc.update(state="failed", error=str(exc), errno=exc.errno_code)
        except Exception as exc:  # noqa: BLE001 - a job's failure is its result, reported to the client
            log.exception("job %s (%s) failed", doc["id"], doc["kind"])
            doc.update(state="failed", error=f"{type(exc).__name__}: {exc}")
        try:
            self._save(doc)
        except VDirError:
            log.exception("could not record the end of job %s", doc["id"])

    def get(self, job_id: str, user: str, admin: bool) -> dict[str, Any]:
        """Job ``job_id`` if ``user`` started it (an administrator sees every job)."""
        try:
            doc, _ = self.catalog.get_record(COLLECTION, job_id)
        except NotFound:
            doc = {}
        if not doc or not (admin or doc.get("user") == user):
            raise NotFound(f"no job {job_id!r}")
        return doc

    def list(self, user: str, admin: bool) -> list[dict[str, Any]]:
        docs = [doc for _, doc, _ in self.catalog.list_records(COLLECTION) if admin or doc.get("user") == user]
        return sorted(docs, key=lambda d: d.get("created", 0.0))

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
