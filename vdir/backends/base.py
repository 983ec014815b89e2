"""The backend interface: a small object store, in the style of Arrow's ``object_store``.

A backend stores opaque objects under string keys (``/``-separated, never starting with ``/``).
Six methods are required — :meth:`Backend.put`, :meth:`Backend.get`, :meth:`Backend.head`,
:meth:`Backend.delete`, :meth:`Backend.list`, :meth:`Backend.list_with_delimiter` — and
everything else is derived.  Optional capabilities are small protocols detected once
(:class:`ServerSideCopy`), with a streaming fallback in :func:`copy_object`.

Contracts every implementation keeps (the conformance suite in ``tests/`` checks them):

* ``put`` is atomic: a reader sees the old object or the whole new one, never a part; a failed
  ``put`` leaves no visible object at the key (for ``CREATE``/``UPDATE``, the old one stays).
* ``put`` streams: it reads ``src`` in chunks and never holds a whole large object in memory.
* Conditions are data (:class:`PutMode`): ``CREATE`` fails with ``AlreadyExists`` when the key
  exists; ``update(etag)`` fails with ``Conflict`` unless the current object has that etag.
* ``get(key, start, end)`` returns bytes ``[start, end)`` clipped to the object; ``start`` at or
  past the end gives an empty stream.  Missing keys raise ``NotFound``.
* ``delete`` of a missing key is not an error.
* ``list(prefix)`` yields every object whose key starts with ``prefix`` (plain string prefix),
  in ascending key order.  ``list_with_delimiter(prefix)`` treats ``prefix`` as a folder
  (``""`` or ending in ``/``) and returns its direct objects and sub-prefixes, both sorted.
* Errors are from :mod:`vdir.errors`; SDK exceptions are translated in one function per backend.
"""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any, Protocol, runtime_checkable

CHUNK = 8 * 1024 * 1024
"""Read/write granularity for streaming transfers (bytes)."""


@dataclass(frozen=True)
class ObjectMeta:
    """What a backend knows about one stored object."""

    key: str
    size: int
    etag: str | None = None
    """Opaque version token for conditional writes (ETag, generation, blob sha...)."""
    mtime: float | None = None
    same_as_source: bool = False
    """Set by ``server_copy_from`` when the store itself vouches that the copy holds exactly the
    bytes of the source version the caller named (an S3 copy whose MD5 ETag equals it)."""


@dataclass(frozen=True)
class PutMode:
    """Write condition, as data: ``PutMode.OVERWRITE``, ``PutMode.CREATE``, ``PutMode.update(etag)``."""

    kind: str = "overwrite"  # "overwrite" | "create" | "update"
    etag: str | None = None

    @staticmethod
    def update(etag: str) -> PutMode:
        return PutMode("update", etag)


PutMode.OVERWRITE = PutMode("overwrite")  # type: ignore[attr-defined]
PutMode.CREATE = PutMode("create")  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Presigned:
    """A short-lived URL that lets a client without credentials read or write one object directly
    (see :meth:`Backend.presign_get`): send ``method`` to ``url`` with ``headers``."""

    url: str
    method: str
    expires: float
    """Seconds since the epoch after which the store refuses the URL."""
    headers: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"url": self.url, "method": self.method, "expires": self.expires, "headers": dict(self.headers)}


@dataclass(frozen=True)
class ListResult:
    objects: list[ObjectMeta]
    prefixes: list[str]


@dataclass(frozen=True)
class Location:
    """Where a backend's bytes physically are; read by placement and the compute sidecar."""

    cloud: str = "local"
    region: str = "local"
    tier: str = "standard"
    cost: float = 0.0
    extra: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"cloud": self.cloud, "region": self.region, "tier": self.tier, "cost": self.cost, **self.extra}


class Backend(ABC):
    """One object store.  Instances are thread-safe: the core calls them from many threads."""

    scheme: str = ""
    """URL scheme this class is registered under (``file``, ``s3``, ``az``...)."""

    create_only_atomic: bool = False
    """True when ``put(key, src, PutMode.CREATE)`` is atomic against a concurrent creator of the
    same key on this endpoint, for every object size: exactly one of two racing creators wins,
    the other gets ``AlreadyExists``.  False means the store (or this server) may let both
    through, so the core must write to a fresh unique key instead of relying on ``CREATE``.
    A per-instance fact where it depends on the endpoint (S3, GCS: option ``create_only``)."""

    def __init__(self, name: str, url: str, location: Location | None = None) -> None:
        self.name = name
        self.url = url
        self.location = location or Location()

    # -- required -------------------------------------------------------------------------
    @abstractmethod
    def put(self, key: str, src: IO[bytes], mode: PutMode = PutMode("overwrite"), size: int | None = None) -> ObjectMeta:
        """Store everything ``src.read()`` yields under ``key``, atomically.

        ``size``, when given, is the exact number of bytes ``src`` will produce (lets a cloud
        choose single-shot vs multipart); backends must also work without it.
        """

    @abstractmethod
    def get(self, key: str, start: int = 0, end: int | None = None) -> IO[bytes]:
        """Open a readable stream of bytes ``[start, end)``; the caller closes it."""

    @abstractmethod
    def head(self, key: str) -> ObjectMeta:
        """Metadata of ``key``; ``NotFound`` if absent."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; a missing key is not an error."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectMeta]:
        """Every object whose key starts with ``prefix``, ascending by key."""

    @abstractmethod
    def list_with_delimiter(self, prefix: str = "") -> ListResult:
        """Direct children of the folder ``prefix`` (``""`` or ending in ``/``)."""

    # -- derived ----------------------------------------------------------------------------
    def exists(self, key: str) -> bool:
        from vdir.errors import NotFound

        try:
            self.head(key)
            return True
        except NotFound:
            return False

    def get_bytes(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        with self.get(key, start, end) as stream:
            return stream.read()

    def put_bytes(self, key: str, data: bytes, mode: PutMode = PutMode("overwrite")) -> ObjectMeta:
        return self.put(key, io.BytesIO(data), mode, size=len(data))

    # -- optional: direct transfers ----------------------------------------------------------
    presign_put_max: int = 0
    """Largest object one pre-signed PUT can write (the store's single-request limit); 0 = none."""

    def presign_get(self, key: str, expires: float) -> Presigned | None:
        """A URL that reads ``key`` for ``expires`` seconds (``Range`` requests allowed), or None
        when this store (or these credentials) cannot sign one.  Nothing is contacted."""
        return None

    def presign_put(self, key: str, expires: float) -> Presigned | None:
        """A URL that writes ``key`` (one PUT of the whole body, replacing what is there) for
        ``expires`` seconds, or None when this store (or these credentials) cannot sign one."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook, deliberately not abstract
        """Release connections; the default has nothing to release."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.url}>"


@runtime_checkable
class ServerSideCopy(Protocol):
    """Optional capability: copy within the store without moving bytes through us.

    ``server_copy_from`` copies from another backend of the same service (another bucket,
    container or prefix the service itself can copy from), and returns None when ``source``
    is not one: the caller then streams.  With ``source_etag`` the copy is made only from that
    version of the source (else ``Conflict``)."""

    def server_copy(self, src_key: str, dst_key: str, mode: PutMode = PutMode("overwrite")) -> ObjectMeta: ...

    def server_copy_from(self, source: Backend, src_key: str, dst_key: str, mode: PutMode = PutMode("overwrite"),
                         source_etag: str | None = None) -> ObjectMeta | None: ...


@dataclass(frozen=True)
class TempObject:
    """Something a ``put`` left in the store that is not (yet) an object: a ``.vdir-tmp-*`` file,
    an unfinished S3 multipart upload, a blob with only uncommitted blocks, an upload session."""

    key: str
    """The object key (or the final key of an incomplete upload), relative to the backend."""
    size: int
    """Bytes it holds (0 where the store does not say)."""
    mtime: float | None
    """When it was started or last written (seconds since the epoch), where known."""
    kind: str
    """``"tempfile"`` | ``"multipart"`` | ``"uncommitted-blocks"`` | ``"upload-session"``."""
    handle: str | None = None
    """What the store needs to remove it besides the key (an S3 UploadId, a temp file's name)."""


@runtime_checkable
class Temporaries(Protocol):
    """Optional capability: list and remove what interrupted writes left behind.

    ``list_temporaries`` also shows uploads still in progress (the caller decides by ``mtime``
    which are old enough to be abandoned); ``remove_temporary`` of one already gone is not an
    error.  Removing one never touches a completed object of the same key."""

    def list_temporaries(self) -> Iterator[TempObject]: ...

    def remove_temporary(self, t: TempObject) -> None: ...


def copy_object(backend: Backend, src_key: str, dst_key: str, mode: PutMode = PutMode("overwrite")) -> ObjectMeta:
    """Copy within one backend: server-side when the backend can, else streamed."""
    if isinstance(backend, ServerSideCopy):
        return backend.server_copy(src_key, dst_key, mode)
    size = backend.head(src_key).size
    with backend.get(src_key) as stream:
        return backend.put(dst_key, stream, mode, size=size)


class BoundedReader(io.RawIOBase):
    """Read at most ``length`` bytes of ``inner`` (``None``: all of it); closes ``inner`` with itself.

    Backends whose SDK hands out a stream of the whole object use it to honour ``end``."""

    def __init__(self, inner: IO[bytes], length: int | None) -> None:
        self._inner = inner
        self._left = length

    def readable(self) -> bool:
        return True

    def readinto(self, buf: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buf).cast("B")
        want = len(view) if self._left is None else min(len(view), self._left)
        if want == 0:
            return 0
        data = self._inner.read(want)
        n = len(data)
        view[:n] = data
        if self._left is not None:
            self._left -= n
        return n

    def close(self) -> None:
        if not self.closed:
            self._inner.close()
        super().close()


def reader(raw: io.RawIOBase, buffer_size: int = 1024 * 1024) -> IO[bytes]:
    """Wrap a raw stream in a buffered reader (the type every ``get`` returns)."""
    return io.BufferedReader(raw, buffer_size)
