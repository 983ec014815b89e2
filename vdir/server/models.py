"""Request and response models: the schemas of the OpenAPI spec (``/openapi.json``)."""

from __future__ import annotations

import base64
from typing import Any, Literal

from pydantic import BaseModel, Field

from vdir.catalog.base import Entry
from vdir.core import Info


class ErrorBody(BaseModel):
    error: str = Field(description="One line for a person.")
    errno: str = Field(description="The POSIX errno name (ENOENT, EACCES, ...), as the core raises it.")


class WhoAmI(BaseModel):
    user: str
    admin: bool
    scopes: list[str]


class ReplicaModel(BaseModel):
    backend: str
    key: str
    size: int
    hash: str | None = None
    etag: str | None = None
    state: str
    verified_at: float | None = None


class InfoModel(BaseModel):
    """What ``stat`` says about one path (:class:`vdir.core.Info`), plus its entry ``id``."""

    id: int
    path: str
    name: str
    type: str
    size: int
    mtime: float
    mode: int
    hash: str | None = None
    version: int = 0
    target: str | None = None
    replicas: list[ReplicaModel] = Field(default_factory=list)
    rdev: int = 0
    atime: float = 0.0
    ctime: float = 0.0
    uid: int = 0
    gid: int = 0
    nlink: int = 1
    inode: int = 0

    @classmethod
    def of(cls, info: Info) -> InfoModel:
        return cls(id=info.inode, **info.as_dict())

    @classmethod
    def entry(cls, path: str, entry: Entry) -> InfoModel:
        return cls.of(Info.of(path, entry))


class Listing(BaseModel):
    items: list[InfoModel]
    next: str | None = Field(None, description="Pass as `after` for the next page; null on the last page.")


class EntryModel(BaseModel):
    """A catalog entry (inode style), for front ends that walk by id (the mount)."""

    id: int
    parent_id: int | None
    name: str
    type: str
    mode: int
    uid: int
    gid: int
    size: int
    mtime: float
    ctime: float
    atime: float
    hash: str | None = None
    version: int
    target: str | None = None
    xattrs: dict[str, str] = Field(default_factory=dict, description="Values base64-encoded.")
    replicas: list[ReplicaModel] = Field(default_factory=list)
    blocks: str | None = None
    rdev: int = 0
    subdirs: int = 0
    nlink: int = 1

    @classmethod
    def of(cls, e: Entry) -> EntryModel:
        return cls(
            id=e.id, parent_id=e.parent_id, name=e.name, type=e.type, mode=e.mode, uid=e.uid, gid=e.gid, size=e.size,
            mtime=e.mtime, ctime=e.ctime, atime=e.atime, hash=e.hash, version=e.version, target=e.target,
            xattrs={k: base64.b64encode(v).decode() for k, v in e.xattrs.items()},
            replicas=[ReplicaModel(**r.__dict__) for r in e.replicas], blocks=e.blocks, rdev=e.rdev,
            subdirs=e.subdirs, nlink=e.nlink,
        )


class EntryPage(BaseModel):
    items: list[EntryModel]
    next: str | None = None


class UsageModel(BaseModel):
    files: int
    dirs: int
    bytes: int
    per_backend: dict[str, int]


class FoundModel(BaseModel):
    items: list[InfoModel]


class Readlink(BaseModel):
    target: str


class Removed(BaseModel):
    removed: int
    trashed: bool = Field(description="True when the entries went to the trash (restorable), not deleted.")


class Progress(BaseModel):
    done: int = 0
    total: int | None = None


class JobModel(BaseModel):
    id: str
    kind: str
    state: Literal["queued", "running", "done", "failed"]
    progress: Progress
    result: Any = None
    error: str | None = None
    user: str
    created: float
    updated: float


class JobList(BaseModel):
    items: list[JobModel]


class CopyResult(BaseModel):
    copied: int | None = Field(default=None, description="Entries copied (when the copy ran in the request).")
    job: JobModel | None = Field(default=None, description="The job doing a recursive copy.")


# -- requests -------------------------------------------------------------------------------------
MODE = Field(None, ge=0, le=0o7777)


class MkdirRequest(BaseModel):
    path: str
    parents: bool = False
    exist_ok: bool = False
    mode: int = Field(0o755, ge=0, le=0o7777)


class MoveRequest(BaseModel):
    src: str
    dst: str
    force: bool = False


class CopyRequest(BaseModel):
    src: str
    dst: str
    recursive: bool = False
    force: bool = False
    backend: str | None = None


class LinkRequest(BaseModel):
    existing: str = Field(description="The file linked to; for a symbolic link, its target (any string).")
    new: str
    symbolic: bool = False


class PatchRequest(BaseModel):
    mode: int | None = MODE
    mtime: float | None = None
    atime: float | None = None
    uid: int | None = Field(None, ge=0, le=2**32 - 1)
    gid: int | None = Field(None, ge=0, le=2**32 - 1)


class MknodRequest(BaseModel):
    path: str
    kind: Literal["fifo", "chr", "blk", "sock"]
    mode: int = Field(0o644, ge=0, le=0o7777)
    rdev: int = Field(0, ge=0, le=2**63 - 1)


class UploadRequest(BaseModel):
    path: str
    size: int = Field(ge=0, le=2**62)
    force: bool = False
    backend: str | None = None
    mode: int | None = MODE
    direct: bool = Field(False, description="Upload straight to the backend through a pre-signed URL.")


class UploadSession(BaseModel):
    id: str
    offset: int
    size: int
    chunk_size: int
    url: str | None = Field(default=None, description="Direct uploads: send the whole file here, then commit.")
    method: str | None = Field(default=None, description="Direct uploads: the HTTP method for `url` (PUT).")
    headers: dict[str, str] | None = Field(default=None, description="Direct uploads: headers the request must carry.")
    expires: float | None = Field(default=None, description="Direct uploads: when `url` stops working (epoch seconds).")


class UploadOffset(BaseModel):
    offset: int
    size: int


class CommitRequest(BaseModel):
    hash: str | None = Field(None, description="The content hash the client computed (xxh128:...); checked before the commit.")


class Done(BaseModel):
    ok: bool = True


class RestoreRequest(BaseModel):
    to: str | None = None


class TrashItem(BaseModel):
    model_config = {"extra": "allow"}

    id: str
    path: str
    type: str | None = None
    size: int | None = None
    deleted_at: float | None = None
    deleted_by: str | None = None
    expires_at: float | None = None


class TrashList(BaseModel):
    items: list[TrashItem]


class TrashKeep(BaseModel):
    keep_seconds: float = Field(ge=0, le=100 * 365 * 86400.0)


class Emptied(BaseModel):
    removed: int


class FsckRequest(BaseModel):
    deep: bool = False
    gc: bool = False
    backends: list[str] | None = None


class PlacementRunRequest(BaseModel):
    workers: int = Field(2, ge=1, le=64)


class PolicyModel(BaseModel):
    text: str | None
    version: int


class PolicyPut(BaseModel):
    text: str


class BackendModel(BaseModel):
    model_config = {"extra": "allow"}

    name: str
    url: str
    cloud: str | None = None
    region: str | None = None
    tier: str | None = None
    cost: float | None = None
    replicas: int | None = None
    default: bool | None = None


class BackendList(BaseModel):
    items: list[BackendModel]


class BackendAdd(BaseModel):
    name: str
    url: str
    region: str | None = None
    endpoint: str | None = None
    cloud: str | None = None
    tier: str | None = None
    cost: float | None = None
    options: dict[str, Any] | None = None
    check: bool = True


class Record(BaseModel):
    """A record of the account registry (user, token, project), as the core returns it."""

    model_config = {"extra": "allow"}


class RecordList(BaseModel):
    items: list[dict[str, Any]]


class UserAdd(BaseModel):
    name: str
    admin: bool = False


Scope = Literal["read", "write", "admin"]


def _default_scopes() -> list[Scope]:
    return ["read", "write"]


class TokenCreate(BaseModel):
    user: str | None = Field(None, description="Whose token (administrators only; default: yours).")
    name: str = ""
    scopes: list[Scope] = Field(default_factory=_default_scopes)
    expires_in: float | None = Field(90 * 86400.0, gt=0, description="Seconds; null: never expires.")


class TokenCreated(BaseModel):
    secret: str = Field(description="Shown once: only its hash is stored.")
    token: dict[str, Any]


class ProjectCreate(BaseModel):
    name: str
    prefixes: list[str]
    quota_bytes: int | None = Field(None, ge=0)
    quota_files: int | None = Field(None, ge=0)


class Grant(BaseModel):
    role: Literal["viewer", "editor", "owner"]


class QuotaSet(BaseModel):
    bytes: int | None = Field(None, ge=0)
    files: int | None = Field(None, ge=0)


class VMBoot(BaseModel):
    near: list[str]
    name: str | None = None
    provider: str | None = None
    region: str | None = None
    flavor: str | None = None
    image: str | None = None
    key: str | None = None
    count: int = Field(1, ge=1, le=100)
    command: list[str] | None = None


class DirectUrl(BaseModel):
    """A pre-signed URL reading a file straight from its backend; check what it gives against
    ``hash`` (``xxh128:<hex>``) and ``size``."""

    url: str
    method: str = "GET"
    headers: dict[str, str] = Field(default_factory=dict, description="Headers the request must carry.")
    expires: float
    hash: str | None = None
    size: int
    backend: str | None = None
