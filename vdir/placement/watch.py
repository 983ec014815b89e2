"""``vdir watch LOCALDIR VPATH``: keep a virtual directory in step with a local folder.

New and changed files are ingested once they have stopped changing for ``settle`` seconds
(debounce: an editor's save burst or a file still being written is not ingested half-way; a
file whose size or mtime changed while it was read is retried).  With ``delete``, files removed
locally are removed from the virtual directory too.  Events come from watchdog (inotify); a
first pass brings over what is already there.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vdir import paths
from vdir.errors import Conflict, NotFound, VDirError

if TYPE_CHECKING:
    from vdir.core import VDir

log = logging.getLogger("vdir.watch")


class Watcher:
    def __init__(self, vd: VDir, local: str | os.PathLike[str], vpath: str, *, delete: bool = False, settle: float = 1.0,
                 backend: str | None = None) -> None:
        self.vd = vd
        self.root = Path(local).resolve()
        if not self.root.is_dir():
            raise NotFound(f"{local}: not a local directory")
        self.vroot = paths.normalize(vpath)
        self.delete = delete
        self.settle = settle
        self.backend = backend
        self._pending: dict[Path, float] = {}  # path -> time of the last event
        self._deleted: set[Path] = set()
        self._lock = threading.Lock()
        self.stop_event = threading.Event()
        self.ingested = 0
        self.removed = 0

    def vpath_of(self, local: Path) -> str:
        rel = local.relative_to(self.root)
        return paths.join(self.vroot, "/".join(rel.parts)) if rel.parts else self.vroot

    def _up_to_date(self, local: Path, st: os.stat_result) -> bool:
        try:
            entry = self.vd.entry(self.vpath_of(local))
        except (NotFound, NotADirectoryError):
            return False
        return entry.size == st.st_size and abs(entry.mtime - st.st_mtime) < 1e-3

    def ingest(self, local: Path) -> bool:
        """Store one settled file; False when it changed while read (it stays pending)."""
        try:
            before = local.stat()
        except FileNotFoundError:
            return True
        if not local.is_file() or self._up_to_date(local, before):
            return True
        vpath = self.vpath_of(local)
        try:
            with open(local, "rb") as fh:
                self.vd.write_stream(vpath, fh, backend=self.backend, overwrite=True, size=before.st_size,
                                     mode=before.st_mode & 0o7777, mtime=before.st_mtime)
        except (Conflict, FileNotFoundError):
            return False
        after = local.stat()
        if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
            return False  # written to while we read it: take it again once it settles
        self.ingested += 1
        log.info("ingested %s -> %s", local, vpath)
        return True

    def initial_sync(self) -> None:
        for dirpath, _, filenames in os.walk(self.root):
            for name in sorted(filenames):
                self.note(Path(dirpath) / name)

    def note(self, local: Path, deleted: bool = False) -> None:
        with self._lock:
            if deleted:
                self._pending.pop(local, None)
                self._deleted.add(local)
            else:
                self._deleted.discard(local)
                self._pending[local] = time.monotonic()

    def flush(self, force: bool = False) -> None:
        """Ingest every file quiet for ``settle`` seconds (all of them with ``force``)."""
        now = time.monotonic()
        with self._lock:
            ready = [p for p, t in self._pending.items() if force or now - t >= self.settle]
            for p in ready:
                del self._pending[p]
            gone, self._deleted = self._deleted, set()
        for p in ready:
            try:
                if not self.ingest(p):
                    self.note(p)
            except VDirError as exc:
                log.error("%s: not ingested: %s", p, exc)
        if self.delete:
            for p in gone:
                if p.exists():
                    continue
                try:
                    self.vd.rm(self.vpath_of(p), recursive=True)
                    self.removed += 1
                    log.info("removed %s", self.vpath_of(p))
                except NotFound:
                    pass
                except VDirError as exc:
                    log.error("%s: not removed: %s", p, exc)

    def run(self, duration: float | None = None) -> None:
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer

        watcher = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.is_directory and event.event_type != "deleted":
                    return
                src = Path(os.fsdecode(event.src_path))
                if event.event_type == "deleted":
                    watcher.note(src, deleted=True)
                elif event.event_type == "moved":
                    watcher.note(src, deleted=True)
                    watcher.note(Path(os.fsdecode(event.dest_path)))
                elif event.event_type in ("created", "modified", "closed"):
                    watcher.note(src)

        observer: Any = Observer()
        observer.schedule(Handler(), str(self.root), recursive=True)
        observer.start()
        self.vd.mkdir(self.vroot, parents=True, exist_ok=True)
        self.initial_sync()
        deadline = None if duration is None else time.monotonic() + duration
        try:
            while not self.stop_event.is_set() and (deadline is None or time.monotonic() < deadline):
                self.flush()
                self.stop_event.wait(min(0.2, self.settle / 2) if self.settle else 0.1)
            self.flush(force=deadline is not None)
        finally:
            observer.stop()
            observer.join(timeout=5)
