"""``RemoteVDir``: the :class:`~vdir.core.VDir` API over a vdir server's REST API (``vdir serve``).

It *is* a ``VDir`` (a subclass), so the CLI, ``vdir.fsspec`` and the mount use it unchanged:
the methods they call go to the server's endpoints, and the read-only catalog calls that the
core's helpers make (``get -r``, ``find``, ``glob``, planning a put or an ``rm``) go through
:class:`RemoteCatalog`, which answers them from the same endpoints.  The client holds no
catalog and no cloud credentials; what the server refuses (another project's file, an admin
call) comes back as the same :class:`~vdir.errors.VDirError` the core raised there.

Reading: a file's content comes from ``GET /v1/files`` with ``Range`` requests (one stream
kept open while reads are sequential), or, for files of ``direct_min`` bytes and more when
the server offers one, straight from the cloud through a pre-signed URL.  Either way the bytes
are verified here against the content and block hashes the server's catalog records (the
core's :class:`~vdir.streams.RangedReader` and :func:`~vdir.streams.read_verified` do it,
reading through :class:`ServerFiles`, the one "backend" a client sees).

Writing: small files in one ``PUT /v1/files``; files of ``direct_min`` bytes and more straight
to the cloud through a pre-signed PUT when the server's backend can sign one (the server reads
the object back and checks the xxh128 sent with the commit), else in an upload session of
``chunk_size`` pieces that survives a dropped connection (the client asks the server where it
stopped and goes on from there).
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import io
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO, Any, BinaryIO

import httpx

from vdir import paths
from vdir.backends.base import Backend, ListResult, Location, ObjectMeta, PutMode
from vdir.catalog.base import DIR, FILE, OK, ROOT_ID, BackendRecord, Entry, Replica
from vdir.core import Info, Progress, Usage, VDir
from vdir.errors import (
    AlreadyExists,
    BackendUnavailable,
    Conflict,
    DirectoryNotEmpty,
    InvalidArgument,
    InvalidMode,
    IsADirectory,
    NotADirectory,
    NotFound,
    NotSupported,
    TransientError,
    VDirError,
)
from vdir.filters import Filter
from vdir.hashing import new_hasher
from vdir.remote.http import HTTP, ResponseReader, error_from
from vdir.streams import SpoolWriter

log = logging.getLogger("vdir.remote")

SERVER = "vdir-server"
"""The name of the one backend a client reads through (:class:`ServerFiles`)."""
MiB = 1024 * 1024
DIRECT_MIN = 8 * MiB
"""Files this big or bigger move straight between client and cloud when the server can sign a URL."""
CHUNKED_MIN = 8 * MiB
"""Files this big or bigger (and not sent directly) go up in a resumable upload session."""
BACKENDS_ARE_THE_SERVERS = ("backends and their credentials live on the vdir server (remote mode): an administrator "
                            "adds and removes them there")
REMOTE_REFUSAL = ("not available in remote mode: this needs the server's catalog, so it runs on the server "
                  "(by an administrator there, or through the server's API)")
FULL_ENTRY_MIN = MiB
"""Files bigger than this are looked up with their block hashes (one more request)."""
FIND_LIMIT = 100_000
"""Most results the server's find gives in one answer."""
RESUMES = 20
"""How often one upload session may be resumed after a broken connection."""
_INFO_FIELDS = set(Info.__dataclass_fields__)


def _env_size(name: str, default: int) -> int:
    value = os.environ.get(name)
    if not value:
        return default
    from vdir.units import parse_size

    return parse_size(value, what=name)


class RemoteVDir(VDir):
    """A virtual directory served by ``vdir serve`` at ``url``, reached with ``token``."""

    def __init__(self, url: str, token: str | None, *, user: str = "", direct: bool = True,
                 direct_min: int | None = None, chunked_min: int | None = None, timeout: float = 60.0,
                 attempts: int = 4, transport: httpx.BaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self.http = HTTP(self.url, token, timeout=timeout, attempts=attempts, transport=transport)
        super().__init__(RemoteCatalog(self), None, None)  # type: ignore[arg-type]
        self.user = user
        self.direct = direct and os.environ.get("VDIR_DIRECT", "1") not in ("0", "false", "no")
        self.direct_min = direct_min if direct_min is not None else _env_size("VDIR_DIRECT_MIN", DIRECT_MIN)
        self.chunked_min = chunked_min if chunked_min is not None else _env_size("VDIR_CHUNKED_MIN", CHUNKED_MIN)
        self.files = ServerFiles(self)
        self._paths: dict[int, str] = {ROOT_ID: "/"}
        self._sizes: dict[str, int] = {}
        self._urls: dict[str, dict[str, Any]] = {}
        self._urls_lock = threading.Lock()
        self._cloud: httpx.Client | None = None  # for pre-signed URLs: never carries our token
        self._cloud_reachable = True

    @property
    def remote(self) -> bool:
        return True

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        self.http.close()
        if self._cloud is not None:
            self._cloud.close()

    def __enter__(self) -> RemoteVDir:
        return self

    def cloud(self) -> httpx.Client:
        """The client for pre-signed URLs (no Authorization header: the URL is the credential)."""
        with self._urls_lock:
            if self._cloud is None:
                self._cloud = httpx.Client(timeout=httpx.Timeout(120.0, connect=10.0), follow_redirects=True,
                                           limits=httpx.Limits(max_connections=32, max_keepalive_connections=16))
            return self._cloud

    def whoami(self) -> dict[str, Any]:
        """``{user, admin, scopes}`` of the token."""
        answer: dict[str, Any] = self.http.json("GET", "/v1/whoami")
        self.user = str(answer.get("user") or self.user)
        return answer

    def __repr__(self) -> str:
        return f"<RemoteVDir {self.url} user={self.user or '?'}>"

    # -- what a client cannot do itself ------------------------------------------------------
    def backend(self, name: str) -> Backend:
        """Every replica a client sees is read through the server (:class:`ServerFiles`)."""
        return self.files

    def backend_record(self, name: str) -> BackendRecord:
        raise NotSupported(BACKENDS_ARE_THE_SERVERS)

    def location_of(self, name: str) -> Location:
        return Location(cloud="remote", region="server")

    def forget_backend(self, name: str) -> None:
        return None

    def choose_backend(self, name: str | None) -> str:
        return name or ""  # the server picks its default

    def link(self, url: str, vpath: str, *, compute_hash: bool = False, force: bool = False) -> Entry:
        raise NotSupported("'link' registers an object by its backend URL: run it on the server (remote mode)")

    def import_prefix(self, url: str, vpath: str, *, compute_hash: bool = False, force: bool = False) -> list[Entry]:
        raise NotSupported("'import' indexes a backend prefix: run it on the server (remote mode)")

    def _record_lazy_hash(self, entry: Entry, digest: str, blocks: str | None = None) -> None:
        return None  # the server records what it learns on its own reads

    def touch_atime(self, entry: Entry, atime: float) -> None:
        return None  # access times are not sent to the server (each would be a write)

    # -- conversions -------------------------------------------------------------------------
    def _remember(self, entry_id: int, path: str) -> None:
        if len(self._paths) > 200_000:
            self._paths = {ROOT_ID: "/"}
        self._paths[entry_id] = path

    def _info(self, data: dict[str, Any]) -> Info:
        info = Info(**{k: v for k, v in data.items() if k in _INFO_FIELDS})
        if info.inode:
            self._remember(info.inode, info.path)
        return info

    def _entry(self, data: dict[str, Any], path: str | None = None) -> Entry:
        """An Entry from the server's Entry or Info JSON; a file's replicas become one replica on
        :data:`SERVER` whose key is the file's path (the server picks the real replica)."""
        if "path" in data:
            path = data["path"]
        eid = int(data.get("id") or data.get("inode") or 0)
        if path is None:
            path = self._paths.get(eid)
        elif eid:
            self._remember(eid, path)
        etype = data.get("type", FILE)
        nlink = int(data.get("nlink", 1))
        replicas: list[Replica] = []
        if etype == FILE:
            key = path if path is not None else f"@{eid}"
            replicas = [Replica(SERVER, key, int(data.get("size", 0)), data.get("hash"), None, OK)]
            if path is not None:
                if len(self._sizes) > 200_000:
                    self._sizes = {}
                self._sizes[path] = int(data.get("size", 0))
        xattrs = {k: base64.b64decode(v) for k, v in (data.get("xattrs") or {}).items()}
        name = data.get("name", "")
        return Entry(
            name="" if path == "/" or name == "/" else name, type=etype,
            parent_id=data.get("parent_id") if "parent_id" in data else (None if path == "/" else 0),
            id=eid, mode=int(data.get("mode", 0o644)), uid=int(data.get("uid", 0)), gid=int(data.get("gid", 0)),
            size=int(data.get("size", 0)), mtime=float(data.get("mtime", 0.0)), ctime=float(data.get("ctime", 0.0)),
            hash=data.get("hash"), version=int(data.get("version", 0)), target=data.get("target"), xattrs=xattrs,
            replicas=replicas, blocks=data.get("blocks"), rdev=int(data.get("rdev", 0)),
            atime=float(data.get("atime", 0.0)),
            subdirs=int(data.get("subdirs", max(0, nlink - 2) if etype == DIR else 0)),
            nlink=1 if etype == DIR and "subdirs" not in data else nlink,
        )

    # -- lookups -----------------------------------------------------------------------------
    def _stat_json(self, path: str) -> dict[str, Any]:
        answer: dict[str, Any] = self.http.json("GET", "/v1/stat", params={"path": paths.normalize(path)})
        return answer

    def stat(self, path: str) -> Info:
        return self._info(self._stat_json(path))

    def exists(self, path: str) -> bool:
        try:
            self._stat_json(path)
            return True
        except NotFound:
            return False

    def _resolve(self, path: str, need: str = "read") -> tuple[str, Entry]:
        """The full entry (block hashes included, for verified ranged reads): stat, then the entry.
        (``need`` is the server's to check.)"""
        norm = paths.normalize(path)
        data = self._stat_json(norm)
        # block hashes matter for ranged reads of big files; a small one is read (and checked) whole
        if data.get("type") == FILE and data.get("id") and int(data.get("size", 0)) > FULL_ENTRY_MIN:
            with contextlib.suppress(NotFound):  # replaced meanwhile: the stat's view will do
                full = self.http.json("GET", f"/v1/entries/{int(data['id'])}")
                if full.get("version") == data.get("version") or full.get("hash") == data.get("hash"):
                    return norm, self._entry(full, norm)
        return norm, self._entry(data, norm)

    def entry(self, path: str) -> Entry:
        return self._resolve(path)[1]

    def entry_by_id(self, entry_id: int) -> Entry:
        return self._entry(self.http.json("GET", f"/v1/entries/{int(entry_id)}"))

    def child(self, parent_id: int, name: str) -> Entry | None:
        try:
            data = self.http.json("GET", f"/v1/entries/{int(parent_id)}/child", params={"name": name})
        except NotFound:
            return None
        parent = self._paths.get(parent_id)
        return self._entry(data, paths.join(parent, name) if parent is not None else None)

    def children(self, parent_id: int, *, after: str | None = None, limit: int | None = None) -> list[Entry]:
        parent = self._paths.get(parent_id)
        out: list[Entry] = []
        while limit is None or len(out) < limit:
            want = None if limit is None else limit - len(out)
            try:
                page = self.http.json("GET", f"/v1/entries/{int(parent_id)}/children",
                                      params={"after": after, "limit": want})
            except (NotFound, NotADirectory):
                return out
            items = page.get("items") or []
            out += [self._entry(d, paths.join(parent, d["name"]) if parent is not None else None) for d in items]
            after = page.get("next")
            if not after or not items:
                break
        return out

    def ls(self, path: str = "/", recursive: bool = False) -> list[Info]:
        return list(self.iter_ls(path, recursive))

    def iter_ls(self, path: str = "/", recursive: bool = False) -> Iterator[Info]:
        after: str | None = None
        norm = paths.normalize(path)
        while True:
            page = self.http.json("GET", "/v1/ls", params={"path": norm, "recursive": recursive, "after": after,
                                                           "limit": 1000})
            for item in page.get("items") or []:
                yield self._info(item)
            after = page.get("next")
            if not after:
                return

    def du(self, path: str = "/") -> Usage:
        data = self.http.json("GET", "/v1/du", params={"path": paths.normalize(path)})
        return Usage(**{k: v for k, v in data.items() if k in Usage.__dataclass_fields__})

    def find(self, path: str = "/", *, name: str | None = None, size: str | int | None = None,
             newer: float | str | None = None, type: str | None = None, maxdepth: int | None = None,
             ) -> Iterator[Info]:
        if isinstance(newer, str):  # a date or a path: the core's own parsing, walking from here
            yield from super().find(path, name=name, size=size, newer=newer, type=type, maxdepth=maxdepth)
            return
        data = self.http.json("GET", "/v1/find", params={
            "path": paths.normalize(path), "name": name, "size": None if size is None else str(size), "type": type,
            "newer": newer, "maxdepth": maxdepth, "limit": FIND_LIMIT})
        items = data.get("items") or []
        if len(items) >= FIND_LIMIT:  # the server stops there: walk here instead, without a limit
            yield from super().find(path, name=name, size=size, newer=newer, type=type, maxdepth=maxdepth)
            return
        for item in items:
            yield self._info(item)

    # -- directories -------------------------------------------------------------------------
    def mkdir(self, path: str, parents: bool = False, exist_ok: bool = False, mode: int = 0o755) -> Entry:
        norm = paths.normalize(path)
        data = self.http.json("POST", "/v1/mkdir", json={"path": norm, "parents": parents, "exist_ok": exist_ok,
                                                         "mode": mode})
        return self._entry(data, norm)

    def rmdir(self, path: str) -> None:
        norm = paths.normalize(path)
        info = self.stat(norm)
        if info.type != DIR:
            raise NotADirectory(f"{norm}: not a directory", path=norm)
        if norm == "/":
            raise InvalidArgument("refusing to remove the root directory")
        self.http.json("DELETE", "/v1/files", params={"path": norm, "recursive": False})

    # -- writing -----------------------------------------------------------------------------
    def write_stream(
        self,
        path: str,
        src: IO[bytes] | BinaryIO,
        *,
        backend: str | None = None,
        overwrite: bool = False,
        size: int | None = None,
        mode: int | None = None,
        mtime: float | None = None,
        progress: Progress | None = None,
        parents: bool = True,
        expected_version: int | None = None,
        _at: tuple[int, Entry | None] | None = None,
    ) -> Entry:
        """Store what ``src`` yields as ``path`` on the server (see the module's note for how)."""
        norm = paths.normalize(path)
        if norm == "/":
            raise IsADirectory("/: is the root directory")
        if expected_version is not None:  # the server's put has no version condition: check just before
            try:
                current = self._stat_json(norm)
                if int(current.get("version", 0)) != expected_version:
                    raise Conflict(f"{norm}: changed since it was read (version {current.get('version')})", path=norm)
            except NotFound:
                pass
        start = _tell(src)
        if size is None and start is not None:
            with contextlib.suppress(OSError, ValueError):
                size = os.fstat(src.fileno()).st_size - start
        args = {"path": norm, "force": overwrite, "backend": backend or None, "mode": mode}
        entry: Entry | None = None
        if size is not None and start is not None:
            direct = self.direct and size >= self.direct_min
            if direct or size >= self.chunked_min:
                entry = self._upload_session(norm, src, start, size, args, progress, parents, direct=direct)
        if entry is None:
            entry = self._put_simple(norm, src, size, start, args, progress, parents)
        if mtime is not None:
            entry = self._entry(self.http.json("PATCH", "/v1/files", params={"path": norm}, json={"mtime": mtime}), norm)
        return entry

    def _put_simple(self, norm: str, src: IO[bytes] | BinaryIO, size: int | None, start: int | None,
                    args: dict[str, Any], progress: Progress | None, parents: bool) -> Entry:
        """One PUT with the body streamed (from memory when small and re-readable, so it can be retried)."""
        params = {**args, "parents": parents}
        headers: dict[str, str] = {}
        content: Any
        if size is not None and size <= 8 * MiB and start is not None:
            data = src.read(size)
            if len(data) != size:
                raise Conflict(f"{norm}: source changed while it was read ({len(data)} bytes, expected {size})")
            content = data
            # sent again after a broken connection only when that cannot fail on its own first try
            answer = self.http.json("PUT", "/v1/files", params=params, content=content, idempotent=bool(args["force"]))
            if progress:
                progress(len(data))
        else:
            if size is not None:
                headers["Content-Length"] = str(size)
            content = _chunks(src, progress)
            answer = self.http.json("PUT", "/v1/files", params=params, content=content, headers=headers,
                                    idempotent=False)
        return self._entry(answer, norm)

    def _upload_session(self, norm: str, src: IO[bytes] | BinaryIO, start: int, size: int, args: dict[str, Any],
                        progress: Progress | None, parents: bool, *, direct: bool) -> Entry | None:
        """A direct upload (pre-signed PUT) when ``direct`` and the server offers one, else a
        resumable session.  A cloud this client cannot connect to is given up for the rest of
        the session: the file (and every later one) goes through the server."""
        if parents:
            self.mkdir(paths.split(norm)[0], parents=True, exist_ok=True)
        body = {**args, "size": size}
        direct = direct and self._cloud_reachable
        if direct:
            try:
                session = self.http.json("POST", "/v1/uploads", json={**body, "direct": True})
            except Conflict:  # "cannot pre-sign": the backend has no URLs to give
                session = self.http.json("POST", "/v1/uploads", json=body)
        else:
            session = self.http.json("POST", "/v1/uploads", json=body)
        sid = session["id"]
        try:
            if session.get("url"):
                digest = self._put_direct(norm, src, start, size, session, progress)
            else:
                digest = self._send_chunks(norm, src, start, size, session, progress)
            answer = self.http.json("POST", f"/v1/uploads/{sid}/commit", json={"hash": "xxh128:" + digest})
        except _CloudUnreachable as exc:
            with contextlib.suppress(Exception):
                self.http.request("DELETE", f"/v1/uploads/{sid}", ok=(404,))
            log.warning("%s: the cloud's pre-signed URL cannot be reached from here (%s); uploading through the "
                        "server instead (set VDIR_DIRECT=0 to skip the attempt)", norm, exc)
            self._cloud_reachable = False
            return self._upload_session(norm, src, start, size, args, progress, False, direct=False)
        except BaseException:
            with contextlib.suppress(Exception):
                self.http.request("DELETE", f"/v1/uploads/{sid}", ok=(404,))
            raise
        return self._entry(answer, norm)

    def _put_direct(self, norm: str, src: IO[bytes] | BinaryIO, start: int, size: int, session: dict[str, Any],
                    progress: Progress | None) -> str:
        """PUT the bytes to the pre-signed URL, hashing them on the way; the hash goes with the commit."""
        for attempt in range(3):
            src.seek(start)
            hasher = new_hasher()
            sent = [0]

            def body(hasher: Any = hasher, sent: list[int] = sent) -> Iterator[bytes]:
                while chunk := src.read(MiB):
                    hasher.update(chunk)
                    sent[0] += len(chunk)
                    if progress:
                        progress(len(chunk))
                    yield chunk

            headers = {**(session.get("headers") or {}), "Content-Length": str(size)}
            try:
                response = self.cloud().request(session.get("method") or "PUT", session["url"], content=body(),
                                                headers=headers)
            except httpx.ConnectError as exc:  # nothing was sent: the cloud is not reachable from here
                raise _CloudUnreachable(str(exc)) from exc
            except httpx.TransportError as exc:
                if attempt == 2:
                    raise BackendUnavailable(f"{norm}: the direct upload to the cloud failed: {exc}") from exc
                log.warning("%s: direct upload broke off (%s), sending again", norm, exc)
                continue
            if response.status_code >= 400:
                raise VDirError(f"{norm}: the cloud refused the direct upload ({response.status_code}: "
                                f"{response.text[:200].strip()})", path=norm)
            if sent[0] != size:
                raise Conflict(f"{norm}: source changed while it was read ({sent[0]} bytes, expected {size})", path=norm)
            return hasher.hexdigest()
        raise AssertionError("unreachable")

    def _send_chunks(self, norm: str, src: IO[bytes] | BinaryIO, start: int, size: int, session: dict[str, Any],
                     progress: Progress | None) -> str:
        """Send the session's chunks in order; after a broken connection ask the server where it
        stopped and go on from there.  Returns the xxh128 of everything sent."""
        sid = session["id"]
        chunk_size = int(session.get("chunk_size") or 8 * MiB)
        offset = int(session.get("offset") or 0)
        hasher, hashed = new_hasher(), 0
        resumes = 0
        while offset < size or size == 0:
            if hashed != offset:  # resumed somewhere else: hash again from the start up to there
                hasher, hashed = new_hasher(), 0
                src.seek(start)
                while hashed < offset:
                    piece = src.read(min(MiB, offset - hashed))
                    if not piece:
                        raise Conflict(f"{norm}: source changed while it was read", path=norm)
                    hasher.update(piece)
                    hashed += len(piece)
            src.seek(start + offset)
            data = src.read(min(chunk_size, size - offset))
            if len(data) != min(chunk_size, size - offset):
                raise Conflict(f"{norm}: source changed while it was read ({offset + len(data)} bytes, expected {size})",
                               path=norm)
            try:  # not repeated by the HTTP layer: the server keeps what arrived of a cut chunk
                answer = self.http.json("PUT", f"/v1/uploads/{sid}", params={"offset": offset}, content=data,
                                        idempotent=False)
            except (BackendUnavailable, TransientError, Conflict) as exc:
                if isinstance(exc, Conflict) and "offset" not in str(exc):
                    raise
                resumes += 1
                if resumes > RESUMES:
                    raise
                log.warning("%s: upload interrupted at %d bytes (%s); resuming", norm, offset, exc)
                offset = int(self.http.json("GET", f"/v1/uploads/{sid}").get("offset", 0))
                continue
            hasher.update(data)
            hashed += len(data)
            offset = int(answer.get("offset", offset + len(data))) if isinstance(answer, dict) else offset + len(data)
            if progress:
                progress(len(data))
            if size == 0:
                break
        if hashed != size:  # the server says it has more than we hashed (a resumed session): hash it all
            src.seek(start)
            hasher = new_hasher()
            for piece in _chunks(src, None, size):
                hasher.update(piece)
        return hasher.hexdigest()

    def open(self, path: str, mode: str = "rb", *, backend: str | None = None, buffering: int = 1024 * 1024) -> IO[bytes]:
        if mode in ("rb", "r"):
            return super().open(path, mode, backend=backend, buffering=buffering)
        norm = paths.normalize(path)
        if mode in ("wb", "w"):
            return super().open(norm, mode, backend=backend, buffering=buffering)
        if mode in ("xb", "x"):
            if self.exists(norm):
                raise AlreadyExists(f"{norm}: exists", path=norm)
            return io.BufferedWriter(  # type: ignore[type-var]
                SpoolWriter(lambda f, n: self.write_stream(norm, f, backend=backend, overwrite=False, size=n),
                            self.tmp_dir()), buffer_size=buffering)
        if mode in ("ab", "a"):
            version: int | None = None
            writer = SpoolWriter(lambda f, n: self.write_stream(norm, f, backend=backend, overwrite=True, size=n,
                                                                expected_version=version), self.tmp_dir())
            try:
                entry = self.read_to(norm, writer._file)  # noqa: SLF001 - the spool starts with the current content
                version = entry.version
            except NotFound:
                pass
            return io.BufferedWriter(writer, buffer_size=buffering)  # type: ignore[type-var]
        raise InvalidMode(f"unsupported open mode {mode!r} (use 'rb', 'wb', 'ab' or 'xb')")

    # -- namespace changes -------------------------------------------------------------------
    def rm(self, path: str, recursive: bool = False, *, filter: Filter | None = None, dry_run: bool = False) -> int:
        norm = paths.normalize(path)
        if dry_run or (filter is not None and not filter.empty):
            doomed = self.plan_rm(norm, recursive, filter=filter)
            if not dry_run:
                for vpath, entry in doomed:
                    self.http.json("DELETE", "/v1/files", params={"path": vpath, "recursive": entry.type == DIR})
            return len(doomed)
        if norm == "/":
            raise InvalidArgument("refusing to remove the root directory")
        answer = self.http.json("DELETE", "/v1/files", params={"path": norm, "recursive": recursive})
        return int(answer.get("removed", 1)) if isinstance(answer, dict) else 1

    def _remove_entries(self, batch: list[tuple[str, Entry]]) -> None:
        for vpath, entry in batch:
            self.http.json("DELETE", "/v1/files", params={"path": vpath, "recursive": entry.type == DIR})

    def mv(self, src: str, dst: str, *, force: bool = False) -> Entry:
        snorm, dnorm = paths.normalize(src), paths.normalize(dst)
        data = self.http.json("POST", "/v1/mv", json={"src": snorm, "dst": dnorm, "force": force})
        return self._entry(data)

    def rename(self, src: str, dst: str, *, replace: bool = True, _resolved: tuple[Entry, Entry, str] | None = None) -> Entry:
        """``rename(2)`` from the server's ``mv``: an existing destination is replaced only with
        ``replace`` (a file by a file, an empty directory by a directory)."""
        snorm, dnorm = paths.normalize(src), paths.normalize(dst)
        source = self._stat_json(snorm)
        try:
            there: dict[str, Any] | None = self._stat_json(dnorm)
        except NotFound:
            there = None
        if there is not None:
            if there.get("id") == source.get("id") and there.get("path") == source.get("path"):
                return self._entry(source)
            if not replace:
                raise AlreadyExists(f"{dnorm}: exists", path=dnorm)
            if there["type"] == DIR:
                if source["type"] != DIR:
                    raise IsADirectory(f"{dnorm}: is a directory", path=dnorm)
                if self.children(int(there["id"]), limit=1):
                    raise DirectoryNotEmpty(f"{dnorm}: directory not empty", path=dnorm)
                self.rmdir(dnorm)  # then the directory moves to its name (two requests: not atomic)
            elif source["type"] == DIR:
                raise NotADirectory(f"{dnorm}: not a directory", path=dnorm)
        return self.mv(snorm, dnorm, force=there is not None)

    def update_entry(self, path: str, **changes: Any) -> Entry:
        norm = paths.normalize(path)
        changes.pop("ctime", None)
        unknown = set(changes) - {"mode", "mtime", "atime", "uid", "gid"}
        if unknown:
            raise NotSupported(f"{norm}: {', '.join(sorted(unknown))} cannot be set through a vdir server", path=norm)
        data = self.http.json("PATCH", "/v1/files", params={"path": norm}, json=changes)
        return self._entry(data, norm)

    def mknod(self, path: str, kind: str, mode: int = 0o644, rdev: int = 0, *, uid: int | None = None,
              gid: int | None = None) -> Entry:
        norm = paths.normalize(path)
        data = self.http.json("POST", "/v1/mknod", json={"path": norm, "kind": kind, "mode": mode & 0o7777, "rdev": rdev})
        return self._entry(data, norm)

    def hardlink(self, existing: str, new: str) -> Entry:
        norm = paths.normalize(new)
        data = self.http.json("POST", "/v1/link", json={"existing": paths.normalize(existing), "new": norm,
                                                        "symbolic": False})
        return self._entry(data, norm)

    def symlink(self, target: str, path: str) -> Entry:
        norm = paths.normalize(path)
        data = self.http.json("POST", "/v1/link", json={"existing": target, "new": norm, "symbolic": True})
        return self._entry(data, norm)

    def readlink(self, path: str) -> str:
        data = self.http.json("GET", "/v1/readlink", params={"path": paths.normalize(path)})
        return str(data["target"])

    def copy(self, src: str, dst: str, *, recursive: bool = False, force: bool = False,
             backend: str | None = None, filter: Filter | None = None,
             progress: Callable[[int, int], None] | None = None) -> list[Entry]:
        """Copy on the server (no bytes through the client); a recursive copy is a server job,
        waited for here (``progress(done, total)`` with the job's progress as it is polled).
        Returns the entries it copied when the server names them (else [])."""
        if filter is not None and not filter.empty:
            raise NotSupported("cp with --include/--exclude/--filter is not available against a vdir server")
        answer = self.http.json("POST", "/v1/cp", json={"src": paths.normalize(src), "dst": paths.normalize(dst),
                                                        "recursive": recursive, "force": force, "backend": backend})
        job = answer.get("job") if isinstance(answer, dict) else None
        if job:
            self.wait_job(job["id"], progress=progress)
        elif progress is not None:
            progress(1, 1)
        return []

    def wait_job(self, job_id: str, poll: float = 0.05,
                 progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
        """Wait for a server job; its ``result``, or the job's error (raised as a VDirError).
        ``progress(done, total)`` gets the job's progress at each poll that has a total."""
        while True:
            job: dict[str, Any] = self.http.json("GET", f"/v1/jobs/{job_id}")
            seen = job.get("progress") or {}
            if progress is not None and seen.get("total") is not None:
                progress(int(seen.get("done") or 0), int(seen["total"]))
            if job.get("state") == "done":
                return job
            if job.get("state") == "failed":
                raise VDirError(str(job.get("error") or f"job {job_id} failed"))
            time.sleep(poll)
            poll = min(poll * 2, 1.0)

    # -- trash (the server's) ----------------------------------------------------------------
    def trash_list(self) -> list[dict[str, Any]]:
        """The trashed items the user could read at their original paths."""
        return list((self.http.json("GET", "/v1/trash") or {}).get("items") or [])

    def trash_restore(self, trash_id: str, to: str | None = None) -> Entry:
        data = self.http.json("POST", f"/v1/trash/{trash_id}/restore", json={"to": to})
        return self._entry(data)

    def trash_empty(self, *, all: bool = False) -> int:
        return int((self.http.json("DELETE", "/v1/trash", params={"all": all}) or {}).get("removed", 0))

    def set_trash_keep(self, seconds: float) -> None:
        raise NotSupported("how long the trash keeps items is set on the server (vdir trash keep, by an administrator)")

    # -- direct downloads --------------------------------------------------------------------
    def download_url(self, path: str) -> dict[str, Any] | None:
        """The server's pre-signed URL for ``path`` (cached until shortly before it expires), or None."""
        norm = paths.normalize(path)
        now = time.time()
        with self._urls_lock:
            cached = self._urls.get(norm)
        if cached is not None and cached.get("expires", 0) - 30 > now:
            return cached if cached.get("url") else None
        try:
            answer = self.http.json("GET", "/v1/files/url", params={"path": norm})
        except (Conflict, NotSupported):  # this file's backend cannot pre-sign: ask again in a while
            answer = {"url": None, "expires": now + 300}
        with self._urls_lock:
            if len(self._urls) > 10_000:
                self._urls.clear()
            self._urls[norm] = answer
        return answer if answer.get("url") else None

    def forget_url(self, path: str) -> None:
        with self._urls_lock:
            self._urls.pop(path, None)


class _CloudUnreachable(Exception):
    """A pre-signed URL's host refused or could not be connected to (nothing was sent)."""


class ServerFiles(Backend):
    """The one "backend" of a client: the key of a replica is the file's path; ``get`` reads it
    from the server (``GET /v1/files`` with ``Range``) or, for big files, from the cloud through a
    pre-signed URL.  Callers verify what they read (RangedReader, read_verified)."""

    scheme = "vdir+remote"

    def __init__(self, owner: RemoteVDir) -> None:
        super().__init__(SERVER, owner.url, Location(cloud="remote", region="server"))
        self.owner = owner

    def _path(self, key: str) -> str:
        if key.startswith("@"):
            found = self.owner._paths.get(int(key[1:]))
            if found is None:
                raise NotFound(f"entry {key[1:]}: its path is not known to this client; look it up by path first")
            return found
        return key

    def get(self, key: str, start: int = 0, end: int | None = None) -> IO[bytes]:
        path = self._path(key)
        if end is not None and end <= start:
            return io.BytesIO(b"")
        size = self.owner._sizes.get(path)
        if self.owner.direct and size is not None and size >= self.owner.direct_min:
            stream = self._get_direct(path, start, end)
            if stream is not None:
                return stream
        headers = {"Range": f"bytes={start}-{'' if end is None else end - 1}"} if start or end is not None else None
        response = self.owner.http.stream("GET", "/v1/files", params={"path": path}, headers=headers, ok=(416,))
        if response.status_code == 416:
            response.close()
            return io.BytesIO(b"")
        return ResponseReader(response)  # type: ignore[return-value]

    def _get_direct(self, path: str, start: int, end: int | None) -> IO[bytes] | None:
        if not self.owner._cloud_reachable:
            return None
        try:
            url = self.owner.download_url(path)
        except VDirError as exc:
            log.debug("%s: no pre-signed URL: %s", path, exc)
            return None
        if url is None:
            return None
        headers = dict(url.get("headers") or {})
        if start or end is not None:
            headers["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        client = self.owner.cloud()
        try:
            response = client.send(client.build_request(url.get("method") or "GET", url["url"], headers=headers),
                                   stream=True)
        except httpx.TransportError as exc:
            log.warning("%s: the cloud did not answer the pre-signed URL (%s); reading through the server", path, exc)
            if isinstance(exc, httpx.ConnectError):
                self.owner._cloud_reachable = False  # not again in this session
            return None
        if response.status_code == 416:
            response.close()
            return io.BytesIO(b"")
        if response.status_code >= 400:
            response.close()
            self.owner.forget_url(path)  # expired or revoked: through the server this time
            log.info("%s: pre-signed URL refused (%d); reading through the server", path, response.status_code)
            return None
        return ResponseReader(response)  # type: ignore[return-value]

    # a client never writes, lists or deletes objects itself
    def _refuse(self, what: str) -> VDirError:
        return NotSupported(f"{what}: a client reaches objects only through the vdir server")

    def put(self, key: str, src: IO[bytes], mode: PutMode = PutMode("overwrite"), size: int | None = None) -> ObjectMeta:
        raise self._refuse("put")

    def head(self, key: str) -> ObjectMeta:
        raise self._refuse("head")

    def delete(self, key: str) -> None:
        raise self._refuse("delete")

    def list(self, prefix: str = "") -> Iterator[ObjectMeta]:
        raise self._refuse("list")

    def list_with_delimiter(self, prefix: str = "") -> ListResult:
        raise self._refuse("list")


class RemoteCatalog:
    """The read-only part of the :class:`~vdir.catalog.base.Catalog` interface that the core's
    helpers use, answered by the server; anything else raises ``NotSupported`` (one line)."""

    def __init__(self, owner: RemoteVDir) -> None:
        self.owner = owner
        self._backends: dict[str, dict[str, Any]] = {}

    @property
    def url(self) -> str:
        return f"vdir+{self.owner.url}"

    def close(self) -> None:
        return None

    def root(self) -> Entry:
        return self.resolve("/")

    def resolve(self, path: str) -> Entry:
        norm = paths.normalize(path)
        return self.owner._entry(self.owner._stat_json(norm), norm)

    def get(self, entry_id: int) -> Entry:
        return self.owner.entry_by_id(entry_id)

    def path_of(self, entry_id: int) -> str:
        found = self.owner._paths.get(entry_id)
        if found is None:
            raise NotFound(f"entry {entry_id}: path not known to this client")
        return found

    def lookup(self, parent_id: int, name: str) -> Entry | None:
        return self.owner.child(parent_id, name)

    def lookup_id(self, parent_id: int, name: str) -> tuple[int, str] | None:
        entry = self.lookup(parent_id, name)
        return (entry.id, entry.type) if entry is not None else None

    def locate(self, path: str) -> tuple[int | None, Entry | None]:
        norm = paths.normalize(path)
        if norm == "/":
            return None, self.root()
        parent_path, name = paths.split(norm)
        parent = self.resolve(parent_path)
        if parent.type != DIR:
            raise NotADirectory(f"{parent_path}: not a directory", path=parent_path)
        return parent.id, self.lookup(parent.id, name)

    def list(self, parent_id: int, after: str | None = None, limit: int | None = None) -> list[Entry]:
        return self.owner.children(parent_id, after=after, limit=limit)

    def iter_children(self, parent_id: int, page: int = 1000) -> Iterator[Entry]:
        after: str | None = None
        while True:
            batch = self.owner.children(parent_id, after=after, limit=page)
            yield from batch
            if len(batch) < page:
                return
            after = batch[-1].name

    def walk(self, top_id: int) -> Iterator[tuple[str, Entry]]:
        """Depth first, as the core's walk: one recursive listing when the top's path is known."""
        top = self.owner._paths.get(top_id)
        if top is not None:
            cut = 1 if top == "/" else len(top) + 1
            for info in self.owner.iter_ls(top, recursive=True):
                if info.path == top:
                    continue
                yield info.path[cut:], self.owner._entry(_info_json(info), info.path)
            return
        for child in self.iter_children(top_id):
            yield child.name, child
            if child.type == DIR:
                for rel, e in self.walk(child.id):
                    yield f"{child.name}/{rel}", e

    def touch_atime(self, entry: Entry, atime: float) -> None:
        return None

    def get_record(self, collection: str, key: str) -> Any:
        if (collection, key) == ("settings", "trash"):  # read when a VDir opens: the server's trash, not ours
            raise NotFound("the trash setting is the server's")
        raise NotSupported(REMOTE_REFUSAL)

    def _backend_rows(self) -> dict[str, dict[str, Any]]:
        answer = self.owner.http.json("GET", "/v1/backends")
        items = answer.get("items", answer) if isinstance(answer, dict) else answer
        self._backends = {row["name"]: row for row in items or []}
        return self._backends

    def list_backends(self) -> builtins.list[BackendRecord]:
        fields = BackendRecord.__dataclass_fields__
        return [BackendRecord(**{k: v for k, v in row.items() if k in fields}) for row in self._backend_rows().values()]

    def get_backend(self, name: str) -> BackendRecord:
        raise NotSupported(BACKENDS_ARE_THE_SERVERS)

    def put_backend(self, record: BackendRecord) -> None:
        raise NotSupported(BACKENDS_ARE_THE_SERVERS)

    def count_replicas(self, name: str) -> int:
        return int((self._backends.get(name) or {}).get("replicas", 0))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)

        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise NotSupported(REMOTE_REFUSAL)

        return refuse


def _info_json(info: Info) -> dict[str, Any]:
    data = info.as_dict()
    data["id"] = info.inode
    return data


def _tell(src: Any) -> int | None:
    """Where a re-readable source is now (None when it cannot be read twice)."""
    try:
        if src.seekable():
            return int(src.tell())
    except (AttributeError, OSError, ValueError):
        pass
    return None


def _chunks(src: IO[bytes] | BinaryIO, progress: Progress | None, limit: int | None = None) -> Iterator[bytes]:
    left = limit
    while True:
        want = MiB if left is None else min(MiB, left)
        if want == 0:
            return
        chunk = src.read(want)
        if not chunk:
            return
        if left is not None:
            left -= len(chunk)
        if progress:
            progress(len(chunk))
        yield chunk


__all__ = ["RemoteCatalog", "RemoteVDir", "ServerFiles", "error_from"]
