"""Resumable upload sessions, kept on the server's disk so they survive a dropped connection
and a server restart.

A session is a directory ``STATE/uploads/ID/`` holding ``meta.json`` (path, size, owner,
options) and ``data`` (the bytes received so far).  The session's offset *is* the size of
``data``: a chunk cut mid-way keeps the bytes that reached the server's handler (the last few
KiB still in its buffers may be lost), and the client asks for the offset and goes on from
there; a ``PUT`` at any other offset is refused (409), so a client that raced asks again.  The commit hands ``data`` to the core's ordinary write
(``VDir.write_stream``: fresh key, hash, compare-and-set commit), then removes the session.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vdir import paths
from vdir.errors import Conflict, IntegrityError, NotFound
from vdir.hashing import hash_stream
from vdir.server.bodies import BodyReader

CHUNK_SIZE = 8 * 1024 * 1024
"""The chunk size the server suggests (any size is accepted)."""
KEEP_SECONDS = 7 * 86400.0
"""A session untouched this long is removed."""
LOCK_WAIT = 30.0
"""How long a chunk waits for a previous request on the same session to finish (a client that
resumes right after a cut may arrive before the server has noticed the cut)."""


@dataclass
class Session:
    id: str
    user: str
    path: str
    size: int
    force: bool = False
    backend: str | None = None
    mode: int | None = None
    created: float = field(default_factory=time.time)
    direct: dict[str, Any] | None = None
    """Direct uploads: what :func:`vdir.presign.start_direct_upload` returned."""


def _strip_hash(value: str) -> str:
    for prefix in ("xxh128:", "xxh3-128:", "xxh3_128:"):
        if value.startswith(prefix):
            return value[len(prefix):]
    return value


class Uploads:
    """The sessions under ``root``; safe for several threads and several server processes
    (``vdir serve --workers``) at once: a session's chunks and commit take its lock file."""

    def __init__(self, root: Path, *, keep_seconds: float = KEEP_SECONDS) -> None:
        self.root = root
        self.keep_seconds = keep_seconds
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        self._expired = 0.0
        self.expire()

    # -- sessions ----------------------------------------------------------------------------------
    def _dir(self, sid: str) -> Path:
        if not sid or not all(c.isalnum() for c in sid):
            raise NotFound(f"no upload session {sid!r}")
        return self.root / sid

    @contextlib.contextmanager
    def _hold(self, sid: str, timeout: float = LOCK_WAIT) -> Iterator[bool]:
        """Hold the session's lock (``flock`` of its ``lock`` file: it excludes other threads
        and other processes alike), waiting up to ``timeout``; yields whether it was got."""
        try:
            fd = os.open(self._dir(sid) / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        except FileNotFoundError:
            raise NotFound(f"no upload session {sid!r} (committed, cancelled or expired)") from None
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    got = True
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        got = False
                        break
                    time.sleep(0.01)
            yield got
        finally:
            os.close(fd)  # releases the lock

    def create(self, user: str, path: str, size: int, *, force: bool = False, backend: str | None = None,
               mode: int | None = None, direct: dict[str, Any] | None = None, sid: str | None = None) -> Session:
        if time.monotonic() - self._expired > 3600:
            self.expire()
        session = Session(id=sid or secrets.token_hex(16), user=user, path=paths.normalize(path), size=size,
                          force=force, backend=backend, mode=mode, direct=direct)
        d = self._dir(session.id)
        d.mkdir(mode=0o700)
        (d / "data").touch(mode=0o600)
        tmp = d / "meta.json.tmp"
        tmp.write_text(json.dumps(asdict(session)))
        tmp.replace(d / "meta.json")
        return session

    def get(self, sid: str, user: str) -> Session:
        """The session ``sid`` of ``user`` (another user's session is ``NotFound`` too)."""
        try:
            doc = json.loads((self._dir(sid) / "meta.json").read_text())
        except (OSError, ValueError):
            raise NotFound(f"no upload session {sid!r} (committed, cancelled or expired)") from None
        session = Session(**doc)
        if session.user != user:
            raise NotFound(f"no upload session {sid!r} (committed, cancelled or expired)")
        return session

    def settled_offset(self, session: Session) -> int:
        """The offset once no chunk is being received (after waiting up to ``LOCK_WAIT`` for one
        in flight, e.g. a cut one the server has not noticed yet, to end)."""
        with self._hold(session.id):
            return self.offset(session)

    def offset(self, session: Session) -> int:
        try:
            return (self._dir(session.id) / "data").stat().st_size
        except FileNotFoundError:
            raise NotFound(f"no upload session {session.id!r} (committed, cancelled or expired)") from None

    def delete(self, session: Session) -> None:
        shutil.rmtree(self._dir(session.id), ignore_errors=True)

    def expire(self) -> int:
        """Remove sessions untouched for ``keep_seconds``; return how many went."""
        gone = 0
        self._expired = time.monotonic()
        cutoff = time.time() - self.keep_seconds
        for d in self.root.iterdir():
            try:
                touched = max((d / "data").stat().st_mtime, (d / "meta.json").stat().st_mtime)
            except OSError:
                touched = d.stat().st_mtime
            if touched < cutoff:
                shutil.rmtree(d, ignore_errors=True)
                gone += 1
        return gone

    # -- chunks ------------------------------------------------------------------------------------
    def write(self, session: Session, offset: int, body: BodyReader) -> int:
        """Append the body at ``offset``, which must be the session's offset (``Conflict``
        otherwise: ask for the offset and resume there).  Bytes are kept as they arrive, so a
        cut keeps what came.  Blocking: run in a worker thread.  Returns the new offset."""
        with self._hold(session.id) as got:
            if not got:
                raise Conflict(f"upload {session.id}: another chunk is still being received; try again")
            current = self.offset(session)
            if offset != current:
                raise Conflict(f"upload {session.id}: offset {offset} does not match the session's offset {current}")
            body.limit = session.size - current
            with open(self._dir(session.id) / "data", "ab") as fh:
                try:
                    while True:
                        chunk = body.read(1024 * 1024)
                        if not chunk:
                            break
                        fh.write(chunk)
                finally:
                    fh.flush()
                    with contextlib.suppress(OSError):
                        os.fsync(fh.fileno())
            return self.offset(session)

    def commit(self, session: Session, vd: Any, expected_hash: str | None) -> Any:
        """Store the complete upload through the core; return the new entry.  The session stays
        when the commit fails (so it can be tried again), and goes once it succeeded."""
        with self._hold(session.id) as got:
            if not got:
                raise Conflict(f"upload {session.id}: a chunk is still being received; try again")
            size = self.offset(session)
            if size != session.size:
                raise Conflict(f"upload {session.id}: {size} of {session.size} bytes received; send the rest first")
            data = self._dir(session.id) / "data"
            if expected_hash:
                with open(data, "rb") as fh:
                    digest, _ = hash_stream(fh)
                if digest != _strip_hash(expected_hash):
                    raise IntegrityError(f"{session.path}: the uploaded bytes hash to {digest}, "
                                         f"not {expected_hash}; nothing was stored (upload the file again)")
            with open(data, "rb") as fh:
                entry = vd.write_stream(session.path, fh, backend=session.backend, overwrite=session.force,
                                        size=size, mode=session.mode)
            self.delete(session)  # still holding the lock: a second commit finds no session
        return entry
