"""The REST API: :func:`create_app` builds the FastAPI app over one :class:`~vdir.core.VDir`.

Every handler authenticates the bearer token (:mod:`vdir.server.auth`), then calls the core on
the caller's view of the VDir, which checks every path against the caller's projects and roles:
a path the caller may not see is ``404`` with the message a missing path gets, a visible path
they may not change is ``403``.  Errors map to HTTP in one function (:mod:`vdir.server.errors`).
Paths travel as query parameters (``?path=``), so any name works.

Threads: plain ``def`` handlers run in the server's thread pool (the core is thread-safe);
bodies stream through :mod:`vdir.server.bodies`; long operations are jobs (:mod:`vdir.server.jobs`).
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO, Annotated, Any, Literal

import anyio.to_thread
from fastapi import Body, Depends, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

import vdir
from vdir import paths, presign
from vdir.access import Accounts
from vdir.catalog.base import DIR, FILE
from vdir.core import VDir
from vdir.errors import (
    AuthenticationError,
    Conflict,
    IntegrityError,
    InvalidArgument,
    IsADirectory,
    NotFound,
    PermissionDenied,
    VDirError,
)
from vdir.server import models as m
from vdir.server.auth import Authenticator, Caller, check_write
from vdir.server.bodies import BodyReader, receive_body, run_with_body
from vdir.server.errors import error_body, status_of
from vdir.server.hot import HotRoute, VDirAPI, flag, mode_bits, text
from vdir.server.jobs import Jobs, Report
from vdir.server.uploads import CHUNK_SIZE, Uploads

READ_CHUNK = 1024 * 1024
"""Bytes per read when streaming a file out."""
SMALL_BODY = 1024 * 1024
"""A PUT body up to this size is received whole before it is stored; a bigger one streams."""

ERROR_STATUSES = (400, 401, 403, 404, 409, 422, 500, 502, 503, 507)
ERRORS: dict[int | str, dict[str, Any]] = {s: {"model": m.ErrorBody} for s in ERROR_STATUSES}
BINARY = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
BINARY_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": BINARY}}


bearer = HTTPBearer(auto_error=False, description="An API token (`vdir token create`).")


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def caller_from(request: Request, cred: HTTPAuthorizationCredentials | None) -> Caller:
    """The authenticated caller (401 with ``WWW-Authenticate: Bearer`` otherwise); blocking
    (catalog reads): call it from a worker thread."""
    if cred is None or cred.scheme.lower() != "bearer":
        raise AuthenticationError("missing bearer token (Authorization: Bearer <token>)")
    authenticate: Authenticator = request.app.state.auth
    return authenticate(cred.credentials)


def get_caller(request: Request, cred: Credentials) -> Caller:
    return caller_from(request, cred)


CallerDep = Annotated[Caller, Depends(get_caller)]
PathQ = Annotated[str, Query(description="A virtual path, e.g. /projects/a/data.csv.")]
UploadId = Annotated[str, PathParam(pattern="^[0-9a-f]{1,64}$")]
EntryId = Annotated[int, PathParam(ge=0, le=2**63 - 1)]


def default_state_dir() -> Path:
    """Where the server keeps upload sessions: ``$XDG_STATE_HOME/vdir/server``."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "vdir" / "server"


def create_app(vd: VDir, *, state_dir: str | os.PathLike[str] | None = None, job_workers: int = 2,
               threads: int = 128) -> FastAPI:
    """The REST API over ``vd`` (the server's own, unrestricted VDir; each request gets the
    caller's view of it).  ``state_dir`` holds upload sessions (default
    :func:`default_state_dir`); ``job_workers`` threads run jobs; ``threads``: how many
    requests may be in the core at once (a streamed upload holds one while its body arrives,
    so a few slow clients must not starve the rest)."""
    state = Path(state_dir) if state_dir is not None else default_state_dir()
    auth = Authenticator(vd)
    uploads = Uploads(state / "uploads")
    jobs = Jobs(vd.catalog, workers=job_workers)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = threads
        yield
        jobs.close()

    app = VDirAPI(
        title="vdir",
        version=vdir.__version__,
        summary="One virtual directory over many clouds: the REST API of `vdir serve`.",
        description="Paths are query parameters (`?path=/a/b`). Authenticate with `Authorization: Bearer <token>` "
                    "(`vdir token create`). Errors are `{\"error\": \"...\", \"errno\": \"ENOENT\"}`.",
        lifespan=lifespan,
        responses=ERRORS,  # type: ignore[arg-type]
    )
    app.state.vd = vd
    app.state.uploads = uploads
    app.state.jobs = jobs
    app.state.auth = auth

    # -- errors ------------------------------------------------------------------------------
    def error_response(exc: BaseException) -> JSONResponse:
        status = status_of(exc)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse(error_body(exc), status_code=status, headers=headers)

    @app.exception_handler(VDirError)
    async def vdir_error(_: Request, exc: VDirError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        message = f"invalid request: {where}: {first.get('msg', 'invalid')}" if where else "invalid request"
        return JSONResponse({"error": message, "errno": "EINVAL"}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # the framework's own refusals (unparsable body, unknown route, wrong method), in our shape
        names = {401: "EACCES", 403: "EACCES", 404: "ENOENT", 405: "EOPNOTSUPP"}
        return JSONResponse({"error": str(exc.detail), "errno": names.get(exc.status_code, "EINVAL")},
                            status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        return error_response(exc)

    def info_of(path: str, entry: Any) -> m.InfoModel:
        return m.InfoModel.entry(paths.normalize(path), entry)

    def accounts() -> Accounts:
        return auth.accounts

    # -- who -----------------------------------------------------------------------------------
    @app.get("/v1/whoami", response_model=m.WhoAmI, tags=["account"])
    def whoami(caller: CallerDep) -> m.WhoAmI:
        """The caller: user name, administrator or not, the token's scopes."""
        return m.WhoAmI(user=caller.user, admin=caller.admin, scopes=list(caller.scopes))

    # -- reading the tree ----------------------------------------------------------------------
    @app.get("/v1/stat", response_model=m.InfoModel, tags=["files"])
    def stat(caller: CallerDep, path: PathQ) -> m.InfoModel:
        """What `stat` says about one path (not following a final symbolic link)."""
        return m.InfoModel.of(caller.vd.stat(path))

    @app.get("/v1/ls", response_model=m.Listing, tags=["files"])
    def ls(caller: CallerDep, path: PathQ = "/", recursive: bool = False,
           after: Annotated[str | None, Query(description="The `next` of the previous page.")] = None,
           limit: Annotated[int, Query(ge=1, le=10000)] = 1000) -> m.Listing:
        """A directory's entries in name order (UTF-8 byte order), one page at a time; a file
        lists itself.  `recursive` lists the whole tree below, ordered by path."""
        vd = caller.vd
        norm = paths.normalize(path)
        if not recursive:
            entry = vd.entry(norm)
            if entry.type != DIR:
                return m.Listing(items=[] if after else [info_of(norm, entry)], next=None)
            kids = vd.children(entry.id, after=after, limit=limit + 1)
            more = len(kids) > limit
            kids = kids[:limit]
            return m.Listing(items=[info_of(paths.join(norm, k.name), k) for k in kids],
                             next=kids[-1].name if more and kids else None)
        infos = sorted(vd.iter_ls(norm, recursive=True), key=lambda i: _path_key(i.path))
        if after is not None:
            cut = _path_key(after)
            infos = [i for i in infos if _path_key(i.path) > cut]
        page = infos[:limit]
        return m.Listing(items=[m.InfoModel.of(i) for i in page],
                         next=page[-1].path if len(infos) > limit and page else None)

    @app.get("/v1/entries/{entry_id}", response_model=m.EntryModel, tags=["entries"])
    def entry_by_id(caller: CallerDep, entry_id: EntryId) -> m.EntryModel:
        """One catalog entry by id (for front ends that walk by id, like the mount); checked
        through its path, a hidden entry answers as a missing one."""
        return m.EntryModel.of(caller.vd.entry_by_id(entry_id))

    @app.get("/v1/entries/{entry_id}/children", response_model=m.EntryPage, tags=["entries"])
    def entry_children(caller: CallerDep, entry_id: EntryId, after: str | None = None,
                       limit: Annotated[int, Query(ge=1, le=10000)] = 1000) -> m.EntryPage:
        """A directory's entries by its id, in name order, one page at a time (only those the
        caller may see)."""
        parent = caller.vd.entry_by_id(entry_id)
        if parent.type != DIR:
            return m.EntryPage(items=[], next=None)
        kids = caller.vd.children(parent.id, after=after, limit=limit + 1)
        more = len(kids) > limit
        kids = kids[:limit]
        return m.EntryPage(items=[m.EntryModel.of(k) for k in kids], next=kids[-1].name if more and kids else None)

    @app.get("/v1/entries/{entry_id}/child", response_model=m.EntryModel, tags=["entries"])
    def entry_child(caller: CallerDep, entry_id: EntryId, name: str) -> m.EntryModel:
        """The entry called `name` in the directory `entry_id` (one index probe)."""
        caller.vd.entry_by_id(entry_id)
        found = caller.vd.child(entry_id, name) if name and "/" not in name else None
        if found is None:
            raise NotFound(f"{name!r} in directory {entry_id}: no such file or directory")
        return m.EntryModel.of(found)

    @app.get("/v1/readlink", response_model=m.Readlink, tags=["files"])
    def readlink(caller: CallerDep, path: PathQ) -> m.Readlink:
        return m.Readlink(target=caller.vd.readlink(path))

    @app.get("/v1/du", response_model=m.UsageModel, tags=["files"])
    def du(caller: CallerDep, path: PathQ = "/") -> m.UsageModel:
        """Files, directories and bytes below a path, and bytes per backend."""
        return m.UsageModel(**caller.vd.du(path).as_dict())

    @app.get("/v1/find", response_model=m.FoundModel, tags=["files"])
    def find(caller: CallerDep, path: PathQ = "/", name: str | None = None,
             size: Annotated[str | None, Query(description="+100M: more than; -1k: less than; 4k: exactly.")] = None,
             type: Literal["f", "d", "l", "p", "c", "b", "s", "file", "dir", "symlink"] | None = None,
             newer: float | None = None, maxdepth: Annotated[int | None, Query(ge=0, le=10000)] = None,
             limit: Annotated[int, Query(ge=1, le=100000)] = 10000) -> m.FoundModel:
        """Like find(1): `path` itself, then below it, depth first, by name; at most `limit`."""
        found: list[m.InfoModel] = []
        for info in caller.vd.find(path, name=name, size=size, type=type, newer=newer, maxdepth=maxdepth):
            found.append(m.InfoModel.of(info))
            if len(found) >= limit:
                break
        return m.FoundModel(items=found)

    # -- file content --------------------------------------------------------------------------
    @app.get("/v1/files", response_class=Response, tags=["files"], responses={
        200: {"content": BINARY, "description": "The file's verified bytes."},
        206: {"content": BINARY, "description": "The requested range (`Range: bytes=a-b`)."},
        304: {"description": "`If-None-Match` matched the ETag (the content hash)."},
        416: {"model": m.ErrorBody, "description": "The range lies outside the file."},
    })
    async def get_file(cred: Credentials, path: PathQ, request: Request) -> Response:
        """A file's bytes, streamed; every byte verified against the catalog's hashes as the
        core reads it (a mismatch on every replica aborts the response).  `ETag` is the
        content hash; `Range` (one range) answers 206."""
        # authenticating, opening and reading the first chunk in one worker thread: the hot path
        return await anyio.to_thread.run_sync(lambda: send_file(caller_from(request, cred), path, request))

    def send_file(caller: Caller, path: str, request: Request) -> Response:
        fh = caller.vd.open(path, "rb")
        try:
            entry = fh.raw.entry  # type: ignore[attr-defined]
            norm = paths.normalize(path)
            if entry.type != FILE:
                raise InvalidArgument(f"{norm}: not a regular file ({entry.type})", path=norm)
            headers = {"Accept-Ranges": "bytes"}
            if entry.hash:
                headers["ETag"] = f'"{entry.hash}"'
                if _etag_matches(request.headers.get("if-none-match"), entry.hash):
                    fh.close()
                    return Response(status_code=304, headers=headers)
            size = entry.size
            start, end, status = 0, size, 200
            wanted = _parse_range(request.headers.get("range"), size)
            if wanted == "unsatisfiable":
                fh.close()
                return JSONResponse({"error": f"{norm}: range not satisfiable (size {size})", "errno": "EINVAL"},
                                    status_code=416, headers={"Content-Range": f"bytes */{size}"})
            if wanted is not None:
                start, end = wanted
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
            headers["Content-Length"] = str(end - start)
            fh.seek(start)
            first = fh.read(min(READ_CHUNK, end - start)) if end > start else b""  # errors before the status line
        except BaseException:
            fh.close()
            raise
        if len(first) == end - start:  # all of it already: no streaming (two thread hops fewer)
            fh.close()
            return Response(first, status_code=status, headers=headers, media_type="application/octet-stream")
        return StreamingResponse(_stream(fh, first, end - start), status_code=status, headers=headers,
                                 media_type="application/octet-stream")

    @app.put("/v1/files", status_code=201, response_model=m.InfoModel, tags=["files"], openapi_extra=BINARY_BODY)
    async def put_file(cred: Credentials, path: PathQ, request: Request, force: bool = False,
                       backend: str | None = None, mode: Annotated[int | None, Query(ge=0, le=0o7777)] = None,
                       parents: bool = True) -> m.InfoModel:
        """Store the request body as the file `path` (streamed through; committed only once
        complete and hashed).  `force` replaces an existing file."""
        size = _content_length(request)
        if size is not None and size <= SMALL_BODY:
            # a small body is received whole: one thread hop, and a seekable source keeps the
            # object's key the path's own (no unique suffix)
            data = await receive_body(request)

            def small() -> m.InfoModel:
                caller = caller_from(request, cred)
                entry = caller.vd.write_stream(path, io.BytesIO(data), backend=backend, overwrite=force,
                                               size=len(data), mode=mode, parents=parents)
                return info_of(path, entry)

            return await anyio.to_thread.run_sync(small)

        def work(body: BodyReader) -> m.InfoModel:
            caller = caller_from(request, cred)  # in the worker thread, before a byte is read
            entry = caller.vd.write_stream(path, body, backend=backend, overwrite=force,  # type: ignore[arg-type]
                                           size=size, mode=mode, parents=parents)
            return info_of(path, entry)

        return await run_with_body(request.stream(), work, limit=size)

    # the same two functions, reached without the framework's routing when called plainly
    async def put_plain(cred: HTTPAuthorizationCredentials, request: Request, **args: Any) -> Response:
        return JSONResponse((await put_file(cred, request=request, **args)).model_dump(mode="json"), status_code=201)

    app.hot[("GET", "/v1/files")] = HotRoute(get_file, {"path": text}, frozenset({"path"}), error_response)
    app.hot[("PUT", "/v1/files")] = HotRoute(put_plain, {"path": text, "force": flag, "backend": text,
                                                         "mode": mode_bits, "parents": flag},
                                             frozenset({"path"}), error_response)

    @app.get("/v1/files/url", response_model=m.DirectUrl, tags=["files"])
    def file_url(caller: CallerDep, path: PathQ,
                 expires: Annotated[int, Query(ge=1, le=7 * 86400)] = 900) -> m.DirectUrl:
        """A short-lived pre-signed URL to read the file straight from its backend (S3, GCS,
        Azure); 409 when the file's replicas are on backends that cannot pre-sign."""
        caller.vd.stat(path)  # the caller's access, before anything else is said about the path
        found = presign.download_url(caller.vd, path, expires=expires)
        if found is None:
            raise Conflict(f"{paths.normalize(path)}: its backend cannot pre-sign URLs; read it through /v1/files")
        return m.DirectUrl(**found)

    # -- resumable uploads -----------------------------------------------------------------------
    @app.post("/v1/uploads", status_code=201, response_model=m.UploadSession, tags=["uploads"])
    def upload_start(caller: CallerDep, req: m.UploadRequest) -> m.UploadSession:
        """Open an upload session: send chunks with `PUT /v1/uploads/{id}?offset=N`, ask for the
        offset after a cut, then commit.  With `direct`, PUT the file to the returned URL."""
        vd = caller.vd
        norm = paths.normalize(req.path)
        if norm == "/":
            raise IsADirectory("/: is the root directory")
        existing = None
        with contextlib.suppress(NotFound):  # fail early on what the commit would refuse
            existing = vd.entry(norm)
        check_write(vd, norm, req.size, replaced=existing)
        if existing is not None:
            if existing.type == DIR:
                raise IsADirectory(f"{norm}: is a directory", path=norm)
            if not req.force:
                raise vdir.errors.AlreadyExists(f"{norm}: exists (use force to overwrite)", path=norm)
        direct = None
        if req.direct:  # None back: the backend cannot sign, the session takes chunks instead
            direct = presign.start_direct_upload(vd, norm, req.size, backend=req.backend, force=req.force,
                                                    mode=req.mode)
        session = uploads.create(caller.user, norm, req.size, force=req.force, backend=req.backend, mode=req.mode,
                                 direct=direct)
        if direct is None:
            return m.UploadSession(id=session.id, offset=0, size=session.size, chunk_size=CHUNK_SIZE)
        return m.UploadSession(id=session.id, offset=0, size=session.size, chunk_size=session.size,
                               url=direct["url"], method=direct.get("method", "PUT"),
                               headers=dict(direct.get("headers") or {}), expires=direct.get("expires"))

    @app.get("/v1/uploads/{upload_id}", response_model=m.UploadOffset, tags=["uploads"])
    def upload_offset(caller: CallerDep, upload_id: UploadId) -> m.UploadOffset:
        """How many bytes the session holds: where the next chunk starts (once a chunk still
        being received, e.g. one whose connection was cut, has ended)."""
        session = uploads.get(upload_id, caller.user)
        return m.UploadOffset(offset=uploads.settled_offset(session), size=session.size)

    @app.put("/v1/uploads/{upload_id}", response_model=m.UploadOffset, tags=["uploads"], openapi_extra=BINARY_BODY)
    async def upload_chunk(caller: CallerDep, upload_id: UploadId, request: Request,
                           offset: Annotated[int, Query(ge=0, le=2**62)]) -> m.UploadOffset:
        """Append the body at `offset` (must be the session's offset: 409 otherwise).  The bytes
        are kept as they arrive: after a cut, ask for the offset and go on from there."""
        session = uploads.get(upload_id, caller.user)
        if session.direct is not None:
            raise Conflict(f"upload {upload_id} is direct: send the file to its URL, then commit")
        new = await run_with_body(request.stream(), lambda body: uploads.write(session, offset, body))  # type: ignore[arg-type]
        return m.UploadOffset(offset=new, size=session.size)

    @app.post("/v1/uploads/{upload_id}/commit", status_code=201, response_model=m.InfoModel, tags=["uploads"])
    def upload_commit(caller: CallerDep, upload_id: UploadId,
                      req: Annotated[m.CommitRequest | None, Body()] = None) -> m.InfoModel:
        """Store the complete upload as the file (checked against `hash` first when given)."""
        session = uploads.get(upload_id, caller.user)
        expected = req.hash if req else None
        if session.direct is not None:
            try:
                entry = presign.finish_direct_upload(caller.vd, session.direct, hash=expected)
            except IntegrityError:
                uploads.delete(session)  # the staged object was deleted: nothing left to commit
                raise
            uploads.delete(session)
        else:
            entry = uploads.commit(session, caller.vd, expected)
        return info_of(session.path, entry)

    @app.delete("/v1/uploads/{upload_id}", response_model=m.Done, tags=["uploads"])
    def upload_cancel(caller: CallerDep, upload_id: UploadId) -> m.Done:
        """Drop the session and the bytes it holds (for a direct upload, the staged object)."""
        session = uploads.get(upload_id, caller.user)
        if session.direct is not None:
            presign.abort_direct_upload(caller.vd, session.direct)
        uploads.delete(session)
        return m.Done()

    # -- changing the tree ---------------------------------------------------------------------
    @app.post("/v1/mkdir", status_code=201, response_model=m.InfoModel, tags=["files"])
    def mkdir(caller: CallerDep, req: m.MkdirRequest) -> m.InfoModel:
        entry = caller.vd.mkdir(req.path, parents=req.parents, exist_ok=req.exist_ok, mode=req.mode)
        return info_of(req.path, entry)

    @app.delete("/v1/files", response_model=m.Removed, tags=["files"])
    def rm(caller: CallerDep, path: PathQ, recursive: bool = False) -> m.Removed:
        """Remove a file, link or (with `recursive`) a tree; into the trash when it is on."""
        removed = caller.vd.rm(path, recursive=recursive)
        return m.Removed(removed=removed, trashed=_trash_on(caller.vd))

    @app.post("/v1/mv", response_model=m.InfoModel, tags=["files"])
    def mv(caller: CallerDep, req: m.MoveRequest) -> m.InfoModel:
        """Rename or move (into `dst` when it is a directory); `force` replaces a file there."""
        vd = caller.vd
        dst = paths.normalize(req.dst)
        src = paths.normalize(req.src)
        with contextlib.suppress(NotFound):
            there = vd.stat(dst)
            if there.type == DIR and there.inode != vd.stat(src).inode:
                dst = paths.join(dst, paths.split(src)[1])
        return info_of(dst, vd.mv(src, req.dst, force=req.force))

    @app.post("/v1/cp", response_model=m.CopyResult, tags=["files"],
              responses={202: {"model": m.CopyResult, "description": "A recursive copy: the job doing it."}})
    def cp(caller: CallerDep, req: m.CopyRequest) -> Any:
        """Copy a file, or with `recursive` a tree (as a job: poll `GET /v1/jobs/{id}`)."""
        vd = caller.vd
        if not req.recursive:
            return m.CopyResult(copied=len(vd.copy(req.src, req.dst, force=req.force, backend=req.backend)))
        total = len(vd.plan_copy(req.src, req.dst, recursive=True, force=req.force))  # bad arguments fail here

        def work(report: Report) -> dict[str, Any]:
            report(0, total)
            n = len(vd.copy(req.src, req.dst, recursive=True, force=req.force, backend=req.backend, progress=report))
            return {"copied": n}

        job = jobs.submit("cp", caller.user, work)
        return JSONResponse(m.CopyResult(job=m.JobModel(**job)).model_dump(mode="json"), status_code=202)

    @app.post("/v1/link", status_code=201, response_model=m.InfoModel, tags=["files"])
    def link(caller: CallerDep, req: m.LinkRequest) -> m.InfoModel:
        """A hard link `new` to `existing`, or with `symbolic` a symbolic link whose target is `existing`."""
        if req.symbolic:
            return info_of(req.new, caller.vd.symlink(req.existing, req.new))
        return info_of(req.new, caller.vd.hardlink(req.existing, req.new))

    @app.patch("/v1/files", response_model=m.InfoModel, tags=["files"])
    def patch(caller: CallerDep, path: PathQ, req: m.PatchRequest) -> m.InfoModel:
        """Set mode, times or owner (compare-and-set in the core)."""
        changes = req.model_dump(exclude_none=True)
        if not changes:
            return m.InfoModel.of(caller.vd.stat(path))
        return info_of(path, caller.vd.update_entry(path, **changes))

    @app.post("/v1/mknod", status_code=201, response_model=m.InfoModel, tags=["files"])
    def mknod(caller: CallerDep, req: m.MknodRequest) -> m.InfoModel:
        """A special file (fifo, device, socket): a catalog entry only."""
        return info_of(req.path, caller.vd.mknod(req.path, req.kind, req.mode, req.rdev))

    # -- trash ----------------------------------------------------------------------------------
    @app.get("/v1/trash", response_model=m.TrashList, tags=["trash"])
    def trash_list(caller: CallerDep) -> m.TrashList:
        """Removed entries the caller could read at their original path."""
        return m.TrashList(items=[m.TrashItem(**item) for item in caller.vd.trash_list()])

    @app.post("/v1/trash/{trash_id}/restore", response_model=m.InfoModel, tags=["trash"])
    def trash_restore(caller: CallerDep, trash_id: str,
                      req: Annotated[m.RestoreRequest | None, Body()] = None) -> m.InfoModel:
        """Put a removed entry back, the exact version (at `to`, or where it was)."""
        vd = caller.vd
        items = {item["id"]: item for item in vd.trash_list()}
        to = req.to if req else None
        entry = vd.trash_restore(trash_id, to)
        where = to or (items[trash_id]["path"] if trash_id in items else vd.catalog.path_of(entry.id))
        return info_of(where, entry)

    @app.get("/v1/trash/keep", response_model=m.TrashKeep, tags=["trash"])
    def trash_keep(caller: CallerDep) -> m.TrashKeep:
        """How long removed entries stay in the trash (0: the trash is off, `rm` deletes)."""
        return m.TrashKeep(keep_seconds=caller.vd.trash_keep)

    @app.put("/v1/trash/keep", response_model=m.TrashKeep, tags=["trash"])
    def trash_keep_set(caller: CallerDep, req: m.TrashKeep) -> m.TrashKeep:
        """Set how long removed entries stay in the trash (administrators)."""
        caller.vd.set_trash_keep(req.keep_seconds)
        return m.TrashKeep(keep_seconds=caller.vd.trash_keep)

    @app.delete("/v1/trash", response_model=m.Emptied, tags=["trash"])
    def trash_empty(caller: CallerDep, all: bool = False) -> m.Emptied:
        """Delete the expired trash items (with `all`, every item the caller can see)."""
        return m.Emptied(removed=caller.vd.trash_empty(all=all))

    # -- jobs -------------------------------------------------------------------------------------
    @app.get("/v1/jobs", response_model=m.JobList, tags=["jobs"])
    def job_list(caller: CallerDep) -> m.JobList:
        """The caller's jobs (an administrator's: every job), oldest first."""
        return m.JobList(items=[m.JobModel(**d) for d in jobs.list(caller.user, caller.admin)])

    @app.get("/v1/jobs/{job_id}", response_model=m.JobModel, tags=["jobs"])
    def job_get(caller: CallerDep, job_id: str) -> m.JobModel:
        return m.JobModel(**jobs.get(job_id, caller.user, caller.admin))

    # -- accounts: users, tokens, projects -----------------------------------------------------------
    @app.get("/v1/users", response_model=m.RecordList, tags=["account"])
    def users(caller: CallerDep) -> m.RecordList:
        caller.require_admin()
        return m.RecordList(items=accounts().list_users())

    @app.post("/v1/users", status_code=201, response_model=dict[str, Any], tags=["account"])
    def user_add(caller: CallerDep, req: m.UserAdd) -> dict[str, Any]:
        caller.require_admin()
        return dict(accounts().add_user(req.name, admin=req.admin))

    @app.delete("/v1/users/{name}", response_model=m.Done, tags=["account"])
    def user_rm(caller: CallerDep, name: str) -> m.Done:
        """Remove a user: their tokens are revoked and their memberships dropped."""
        caller.require_admin()
        accounts().remove_user(name)
        return m.Done()

    @app.get("/v1/tokens", response_model=m.RecordList, tags=["account"])
    def tokens(caller: CallerDep, user: str | None = None) -> m.RecordList:
        """The caller's tokens (an administrator: anyone's, or every token)."""
        if caller.admin:
            return m.RecordList(items=accounts().list_tokens(user))
        if user not in (None, caller.user):
            raise PermissionDenied("only an administrator lists other users' tokens")
        return m.RecordList(items=accounts().list_tokens(caller.user))

    @app.post("/v1/tokens", status_code=201, response_model=m.TokenCreated, tags=["account"])
    def token_create(caller: CallerDep, req: m.TokenCreate) -> m.TokenCreated:
        """A new token (its secret is shown once).  A user's own tokens cannot have more
        scopes than the one making them; `admin` scope needs an administrator."""
        user = req.user or caller.user
        if user != caller.user or ("admin" in req.scopes and not caller.admin):
            caller.require_admin()
        if not caller.admin and not set(req.scopes) <= set(caller.scopes):
            raise PermissionDenied(f"a token cannot have scopes its maker's token lacks ({', '.join(caller.scopes)})")
        secret, info = accounts().create_token(user, scopes=tuple(req.scopes), expires_in=req.expires_in, name=req.name)
        return m.TokenCreated(secret=secret, token=dict(info))

    @app.delete("/v1/tokens/{token_id}", response_model=m.Done, tags=["account"])
    def token_revoke(caller: CallerDep, token_id: str) -> m.Done:
        """Revoke a token (your own, or as an administrator anyone's)."""
        acc = accounts()
        if not caller.admin:
            own = {t["id"] for t in acc.list_tokens(caller.user)}
            if token_id not in own:
                raise NotFound(f"no token {token_id!r}")
        acc.revoke_token(token_id)
        return m.Done()

    def project_of(caller: Caller, name: str) -> dict[str, Any]:
        """Project ``name`` if the caller is an administrator or one of its members."""
        try:
            project = dict(accounts().get_project(name))
        except NotFound:
            raise NotFound(f"no project {name!r}") from None
        if not caller.admin and caller.user not in _members(project):
            raise NotFound(f"no project {name!r}")
        return project

    def shown(caller: Caller, project: dict[str, Any]) -> dict[str, Any]:
        """What the caller sees of a project: its members only when an owner or administrator
        (a viewer or editor sees their own role)."""
        members = _members(project)
        if caller.admin or members.get(caller.user) == "owner":
            return project
        return {**project, "members": {caller.user: members[caller.user]}}

    @app.get("/v1/projects", response_model=m.RecordList, tags=["projects"])
    def projects(caller: CallerDep) -> m.RecordList:
        """Every project (administrators) or the caller's own."""
        found = [dict(p) for p in accounts().list_projects()]
        return m.RecordList(items=[shown(caller, p) for p in found if caller.admin or caller.user in _members(p)])

    @app.get("/v1/projects/{name}", response_model=dict[str, Any], tags=["projects"])
    def project(caller: CallerDep, name: str) -> dict[str, Any]:
        """A project the caller is a member of (its members: to owners and administrators)."""
        return shown(caller, project_of(caller, name))

    @app.post("/v1/projects", status_code=201, response_model=dict[str, Any], tags=["projects"])
    def project_create(caller: CallerDep, req: m.ProjectCreate) -> dict[str, Any]:
        caller.require_admin()
        return dict(accounts().create_project(req.name, req.prefixes, quota_bytes=req.quota_bytes,
                                              quota_files=req.quota_files))

    @app.delete("/v1/projects/{name}", response_model=m.Done, tags=["projects"])
    def project_rm(caller: CallerDep, name: str) -> m.Done:
        caller.require_admin()
        accounts().delete_project(name)
        return m.Done()

    def require_owner(caller: Caller, name: str) -> None:
        project = project_of(caller, name)
        if not caller.admin and _members(project).get(caller.user) != "owner":
            raise PermissionDenied(f"project {name}: only its owners and administrators manage members")

    @app.put("/v1/projects/{name}/members/{user}", response_model=m.Done, tags=["projects"])
    def grant(caller: CallerDep, name: str, user: str, req: m.Grant) -> m.Done:
        """Give `user` a role in the project (owners and administrators)."""
        require_owner(caller, name)
        accounts().grant(name, user, req.role)
        return m.Done()

    @app.delete("/v1/projects/{name}/members/{user}", response_model=m.Done, tags=["projects"])
    def revoke(caller: CallerDep, name: str, user: str) -> m.Done:
        require_owner(caller, name)
        accounts().revoke(name, user)
        return m.Done()

    @app.put("/v1/projects/{name}/quota", response_model=m.Done, tags=["projects"])
    def quota(caller: CallerDep, name: str, req: m.QuotaSet) -> m.Done:
        caller.require_admin()
        accounts().set_quota(name, bytes=req.bytes, files=req.files)
        return m.Done()

    @app.get("/v1/projects/{name}/usage", response_model=dict[str, Any], tags=["projects"])
    def usage(caller: CallerDep, name: str) -> dict[str, Any]:
        """Bytes (× the copies the policy asks for) and files, beside the quotas."""
        project_of(caller, name)
        return dict(accounts().usage(name))

    # -- administration: backends, policy, placement, fsck, VMs ---------------------------------------
    @app.get("/v1/backends", response_model=m.BackendList, tags=["admin"])
    def backends(caller: CallerDep) -> m.BackendList:
        caller.require_admin()
        vd = caller.vd
        return m.BackendList(items=[m.BackendModel(**r.__dict__, replicas=vd.catalog.count_replicas(r.name),
                                                   default=r.name == vd.default_backend)
                                    for r in vd.catalog.list_backends()])

    @app.post("/v1/backends", status_code=201, response_model=m.BackendModel, tags=["admin"])
    def backend_add(caller: CallerDep, req: m.BackendAdd) -> m.BackendModel:
        """Register a backend (secret options go to the server's config file, never the catalog)."""
        from vdir.admin import add_backend

        caller.require_admin()
        record = add_backend(caller.vd, req.name, req.url, region=req.region, endpoint=req.endpoint,
                             options=req.options, cloud=req.cloud, tier=req.tier, cost=req.cost, check=req.check)
        return m.BackendModel(**record.__dict__)

    @app.delete("/v1/backends/{name}", response_model=m.Done, tags=["admin"])
    def backend_rm(caller: CallerDep, name: str, force: bool = False) -> m.Done:
        from vdir.admin import remove_backend

        caller.require_admin()
        remove_backend(caller.vd, name, force=force)
        return m.Done()

    @app.get("/v1/policy", response_model=m.PolicyModel, tags=["admin"])
    def policy(caller: CallerDep) -> m.PolicyModel:
        """The placement policy (YAML text) and its version (0: none)."""
        caller.require_admin()
        try:
            doc, version = caller.vd.catalog.get_record("policies", "current")
        except NotFound:
            return m.PolicyModel(text=None, version=0)
        return m.PolicyModel(text=doc.get("text"), version=version)

    @app.put("/v1/policy", response_model=m.PolicyModel, tags=["admin"])
    def policy_put(caller: CallerDep, req: m.PolicyPut) -> m.PolicyModel:
        """Check and apply a placement policy; the placement daemons pick it up."""
        from vdir.placement.policy import apply_policy

        caller.require_admin()
        version = apply_policy(caller.vd.catalog, req.text, "<api>")
        return m.PolicyModel(text=req.text, version=version)

    @app.get("/v1/placement/status", response_model=dict[str, Any], tags=["admin"])
    def placement_status(caller: CallerDep) -> dict[str, Any]:
        """Backlog, running and failed tasks, nodes, bytes per backend."""
        from vdir.placement.status import status

        caller.require_admin()
        return dict(status(caller.vd))

    @app.post("/v1/placement/run", status_code=202, response_model=m.JobModel, tags=["admin"])
    def placement_run(caller: CallerDep, req: Annotated[m.PlacementRunRequest | None, Body()] = None) -> m.JobModel:
        """Plan and do every claimable placement task once, as a job."""
        from vdir.placement.daemon import Daemon, DaemonOptions

        caller.require_admin()
        workers = req.workers if req else 2
        vd = caller.vd

        def work(report: Report) -> dict[str, Any]:
            return dict(Daemon(vd, DaemonOptions(workers=workers, once=True)).run())

        return m.JobModel(**jobs.submit("placement", caller.user, work))

    @app.post("/v1/fsck", status_code=202, response_model=m.JobModel, tags=["admin"])
    def fsck(caller: CallerDep, req: Annotated[m.FsckRequest | None, Body()] = None) -> m.JobModel:
        """Check every replica against its backend (`deep`: re-hash them), as a job."""
        from vdir.fsck import fsck as run_fsck

        caller.require_admin()
        opts = req or m.FsckRequest()
        vd = caller.vd
        if opts.backends:
            for name in opts.backends:
                vd.backend_record(name)

        def work(report: Report) -> dict[str, Any]:
            return run_fsck(vd, deep=opts.deep, backends=opts.backends, gc=opts.gc).as_dict()

        return m.JobModel(**jobs.submit("fsck", caller.user, work))

    @app.get("/v1/vms", response_model=m.RecordList, tags=["admin"])
    def vms(caller: CallerDep, refresh: bool = False) -> m.RecordList:
        """VMs the compute sidecar started."""
        from vdir.compute import Compute

        caller.require_admin()
        return m.RecordList(items=[_vm_row(vm) for vm in Compute(caller.vd).list(refresh=refresh)])

    @app.post("/v1/vms", status_code=201, response_model=m.RecordList, tags=["admin"])
    def vm_boot(caller: CallerDep, req: m.VMBoot) -> m.RecordList:
        """Boot VM(s) where the data under `near` is (as `vdir vm boot`)."""
        from vdir.compute import Compute

        caller.require_admin()
        compute = Compute(caller.vd)
        plan = compute.plan(req.near, provider=req.provider, region=req.region, name=req.name, count=req.count,
                            flavor=req.flavor, image=req.image, key=req.key, command=list(req.command or []))
        if plan.blocker is not None:
            raise plan.blocker
        return m.RecordList(items=[_vm_row(vm) for vm in compute.boot(plan)])

    @app.delete("/v1/vms/{name}", response_model=dict[str, Any], tags=["admin"])
    def vm_delete(caller: CallerDep, name: str) -> dict[str, Any]:
        from vdir.compute import Compute

        caller.require_admin()
        return _vm_row(Compute(caller.vd).delete(name))

    from vdir.web import mount as mount_web  # the web interface at / and its extra endpoints (/v1/web)

    mount_web(app)
    return app


# -- helpers -------------------------------------------------------------------------------------------
def _path_key(path: str) -> tuple[bytes, ...]:
    """Order of a recursive listing: by path components, each in UTF-8 byte order."""
    return tuple(c.encode() for c in path.split("/") if c)


def _etag_matches(header: str | None, digest: str) -> bool:
    if not header:
        return False
    for tag in header.split(","):
        tag = tag.strip()
        if tag == "*":
            return True
        tag = tag.removeprefix("W/").strip('"')
        if tag == digest:
            return True
    return False


def _parse_range(header: str | None, size: int) -> tuple[int, int] | Literal["unsatisfiable"] | None:
    """``(start, end)`` (end exclusive) of a single-range ``Range: bytes=...`` header; ``None``
    to send the whole file (no header, a malformed or a multi-range one, an empty file)."""
    if not header or size == 0:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if first == "":
            n = int(last)
            if n <= 0:
                return "unsatisfiable"
            return max(0, size - n), size
        start = int(first)
        end = int(last) + 1 if last else size
    except ValueError:
        return None
    if start < 0:
        return None
    if start >= size:
        return "unsatisfiable"
    if end <= start:
        return None
    return start, min(end, size)


def _stream(fh: IO[bytes], first: bytes, length: int) -> Iterator[bytes]:
    """The rest of a response body: ``first`` (already read), then up to ``length`` bytes."""
    try:
        left = length
        chunk = first
        while left > 0:
            if not chunk:
                raise vdir.errors.IntegrityError("the file ended before its recorded size")
            yield chunk
            left -= len(chunk)
            if left > 0:
                chunk = fh.read(min(READ_CHUNK, left))
    finally:
        fh.close()


def _content_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    if value is None or request.headers.get("transfer-encoding"):
        return None
    try:
        n = int(value)
    except ValueError:
        raise InvalidArgument("Content-Length is not a number") from None
    if n < 0:
        raise InvalidArgument("Content-Length is negative")
    return n


def _trash_on(vd: VDir) -> bool:
    """Whether removals go to the trash (as this view of the VDir read the setting)."""
    return vd.trash_keep > 0


def _members(project: dict[str, Any]) -> dict[str, str]:
    """user → role of a project record (``members`` as a mapping or a list of {user, role})."""
    members = project.get("members") or {}
    if isinstance(members, dict):
        return {str(k): str(v) for k, v in members.items()}
    return {str(x.get("user")): str(x.get("role")) for x in members if isinstance(x, dict)}


def _vm_row(vm: Any) -> dict[str, Any]:
    row = vm.as_doc() if hasattr(vm, "as_doc") else dict(vm.__dict__)
    return dict(row)
