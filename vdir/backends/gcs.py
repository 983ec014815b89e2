"""Google Cloud Storage backend (``gs://<bucket>[/<prefix>]``), via ``google-cloud-storage``.

Keys are object names below the prefix, unchanged.  GCS refuses names with CR or LF, so such
keys are ``InvalidPath`` here, before any request.

* Writes: up to ``min(chunk_size, 8 MiB)`` one multipart request; larger (or of unknown size) a
  resumable upload sent ``chunk_size`` (8 MiB, a multiple of 256 KiB) at a time: the object
  appears only when the last chunk is accepted, so a failed write leaves nothing (GCS drops an
  unfinished upload session after a week).  Memory: about two chunks.
* Conditions: the etag is the object's *generation*; ``CREATE`` is ``ifGenerationMatch=0`` and
  ``update(etag)`` is ``ifGenerationMatch=<generation>``, checked by GCS on the write itself.  A
  resumable (large) conditional write also checks first, to fail before uploading (and because
  fake-gcs-server ignores conditions on resumable uploads and rewrites).
* Reads: ranged requests of ``chunk_size`` each, all pinned to the generation seen first, so an
  object replaced mid-read raises ``Conflict`` instead of returning a mix of two versions.
* Listing: GCS lists in UTF-8 byte order, which is code-point order: streamed as it comes.
* Copy: ``rewrite`` (looping on the rewrite token) within GCS (``ServerSideCopy``).
* Errors are translated in :meth:`GCSBackend._translate`; the client retries 429/5xx/network
  errors with short backoffs, at most ``max_attempts`` tries (3) of a request, each waiting at
  most ``connect_timeout`` (5 s) to connect and ``read_timeout`` (8 s) for an answer, with a
  warning before each retry; a server that accepts connections but never answers fails a call
  in about 25 s.  ``retry_timeout`` (seconds) caps the retrying too; ``timeout``, the older
  option, sets both timeouts.
* Create-only (``create_only_atomic``): GCS checks ``ifGenerationMatch=0`` on every upload,
  resumable ones included, so it is True on Google's endpoint.  fake-gcs-server ignores
  conditions on resumable uploads, so with an emulator (``endpoint_url`` or
  ``STORAGE_EMULATOR_HOST``) it is False unless option ``create_only=true`` says otherwise.
* Temporaries: resumable upload sessions cannot be listed through the JSON API; an interrupted
  large write leaves a session that holds no object and that GCS drops after a week, so there
  is nothing for ``fsck`` to find (no ``Temporaries`` capability).
* A project over its quota (HTTP 507, or 429/403 naming a quota) raises ``NoSpace``.

Credentials (never in the catalog): option ``credentials_file`` (service account or user JSON),
else Application Default Credentials (``GOOGLE_APPLICATION_CREDENTIALS``, gcloud, metadata
server); ``anonymous=True`` for public buckets.  ``endpoint_url`` (or ``STORAGE_EMULATOR_HOST``)
points at an emulator, which is used anonymously.  The region is the option ``region``, else the
bucket's location, looked up the first time ``location`` is read.  Other options: ``project``,
``chunk_size``, ``connect_timeout``, ``read_timeout``, ``max_attempts``, ``retry_timeout``,
``create_only``, ``list_page_size``.  The bucket must exist.
"""

from __future__ import annotations

import builtins
import io
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO, Any, NoReturn, TypeVar
from urllib.parse import urlsplit

import requests
from google.api_core import exceptions as gexc
from google.api_core.retry import Retry
from google.auth import exceptions as auth_exc
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage  # type: ignore[attr-defined]  # untyped; google-cloud-compute makes google.cloud partly typed
from google.cloud.storage.exceptions import DataCorruption, InvalidResponse
from google.cloud.storage.retry import DEFAULT_RETRY

from vdir.backends.base import Backend, ListResult, Location, ObjectMeta, Presigned, PutMode
from vdir.errors import (
    AlreadyExists,
    AuthenticationError,
    BackendUnavailable,
    ConfigError,
    Conflict,
    InvalidArgument,
    InvalidPath,
    NoSpace,
    NotFound,
    Timeout,
    TransientError,
    VDirError,
)

T = TypeVar("T")
log = logging.getLogger("vdir.backends.gcs")
KiB = 1024
MiB = 1024 * KiB
MULTIPART_LIMIT = 8 * MiB  # the client sends larger objects as resumable uploads anyway
_ERRORS = (gexc.GoogleAPIError, auth_exc.GoogleAuthError, requests.RequestException, InvalidResponse, DataCorruption)
SCOPES = ["https://www.googleapis.com/auth/devstorage.read_write"]


class _UploadStream(io.RawIOBase):
    """What the resumable upload reads: ``head`` then the rest of ``src``, with ``tell()`` and
    ``seek()`` back within the last ``window`` bytes (GCS may persist less than a whole chunk).
    ``read(n)`` returns ``n`` bytes unless the source is exhausted (a short read ends the upload)."""

    def __init__(self, head: bytes, src: IO[bytes], window: int) -> None:
        self._head = memoryview(head)
        self._src = src
        self._window = window
        self._kept = b""  # the last bytes read (up to `window`), for seeking back
        self._kept_start = 0
        self._pos = 0  # position of the reader
        self._read_to = 0  # how far the source (head + src) has been consumed
        self.total = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = offset if whence == io.SEEK_SET else self._pos + offset if whence == io.SEEK_CUR else -1
        if whence == io.SEEK_END or target < self._kept_start or target > self._read_to:
            raise io.UnsupportedOperation(f"cannot seek to {offset} (whence {whence}) in an upload stream")
        self._pos = target
        return target

    def _pull(self, n: int) -> bytes:
        parts: builtins.list[bytes] = []
        have = 0
        while have < n:
            if self._head:
                piece = bytes(self._head[: n - have])
                self._head = self._head[len(piece):]
            else:
                piece = self._src.read(n - have) or b""
                if not piece:
                    break
            parts.append(piece)
            have += len(piece)
        return b"".join(parts)

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            raise io.UnsupportedOperation("upload streams are read in chunks")
        out = b""
        if self._pos < self._read_to:  # replay after a seek back
            start = self._pos - self._kept_start
            out = self._kept[start: start + size]
            self._pos += len(out)
            size -= len(out)
        if size > 0:
            fresh = self._pull(size)
            self._kept = (self._kept + fresh)[-self._window:] if len(fresh) < self._window else fresh[-self._window:]
            self._read_to += len(fresh)
            self._kept_start = self._read_to - len(self._kept)
            self._pos += len(fresh)
            self.total = self._read_to
            out += fresh
        return out

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class _RangeReader(io.RawIOBase):
    """Bytes ``[start, end)`` fetched ``chunk`` at a time by ``fetch(a, b)``; ``first`` already fetched."""

    def __init__(self, fetch: Callable[[int, int], bytes], start: int, end: int, chunk: int, first: bytes) -> None:
        self._fetch = fetch
        self._next = start + len(first)
        self._end = end
        self._chunk = chunk
        self._buf = memoryview(first)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._buf:
            if self._next >= self._end:
                return 0
            want = min(self._end, self._next + self._chunk) - self._next
            data = self._fetch(self._next, self._next + want)
            if len(data) != want:  # the generation is pinned: anything else is a broken answer
                raise TransientError(f"short read: {len(data)} of {want} bytes at offset {self._next}")
            self._next += len(data)
            self._buf = memoryview(data)
        n = min(len(buffer), len(self._buf))
        buffer[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def close(self) -> None:
        self._buf = memoryview(b"")
        self._next = self._end
        super().close()


def _read_full(src: IO[bytes], n: int) -> bytes:
    """Up to ``n`` bytes from ``src``: fewer only at the end of the stream."""
    parts: builtins.list[bytes] = []
    have = 0
    while have < n:
        more = src.read(n - have)
        if not more:
            break
        parts.append(bytes(more))
        have += len(more)
    return b"".join(parts)


class GCSBackend(Backend):
    """A bucket (or a prefix in it) of Google Cloud Storage as an object store."""

    scheme = "gs"

    def __init__(self, name: str, url: str, location: Location | None = None, *, project: str | None = None,
                 credentials_file: str | None = None, endpoint_url: str | None = None, anonymous: bool = False,
                 chunk_size: int = 8 * MiB, region: str | None = None, retry_timeout: float | None = None,
                 timeout: float | None = None, list_page_size: int | None = None, connect_timeout: float = 5.0,
                 read_timeout: float = 8.0, max_attempts: int = 3, create_only: bool | None = None) -> None:
        super().__init__(name, url, location or Location(cloud="gcp", region=region or "unknown"))
        self._location: Location | None = location or (Location(cloud="gcp", region=region) if region else None)
        self._location_lock = threading.Lock()
        parts = urlsplit(url)
        if parts.scheme != "gs" or not parts.netloc:
            raise ConfigError(f"bad GCS URL {url!r}; expected gs://<bucket>[/<prefix>]")
        self.bucket_name = parts.netloc
        root = parts.path.strip("/")
        self.root = root + "/" if root else ""
        if chunk_size <= 0 or chunk_size % (256 * KiB):
            raise ConfigError(f"gcs backend {name!r}: chunk_size must be a positive multiple of 256 KiB")
        self.chunk_size = int(chunk_size)
        if timeout is not None:  # the older option: one timeout for both
            connect_timeout = read_timeout = float(timeout)
        self.connect_timeout, self.read_timeout = float(connect_timeout), float(read_timeout)
        self.max_attempts = max(1, int(max_attempts))
        self.timeout: tuple[float, float] = (self.connect_timeout, self.read_timeout)
        self.list_page_size = list_page_size
        self.retry_timeout = float(retry_timeout) if retry_timeout is not None else \
            self.max_attempts * (self.connect_timeout + self.read_timeout) + 10.0
        endpoint = endpoint_url or os.environ.get("STORAGE_EMULATOR_HOST") or None
        if endpoint and "://" not in endpoint:
            endpoint = "http://" + endpoint
        self.endpoint_url = endpoint
        self.create_only_atomic = (endpoint is None) if create_only is None else bool(create_only)
        options: dict[str, Any] = {"client_options": {"api_endpoint": endpoint}} if endpoint else {}
        credentials: Any = None
        try:
            if credentials_file:
                credentials, file_project = _load_credentials(name, credentials_file)
                project = project or file_project
            elif anonymous or endpoint:
                credentials = AnonymousCredentials()
                project = project or "vdir"
            self.client = storage.Client(project=project, credentials=credentials, **options)
        except ConfigError:
            raise
        except auth_exc.DefaultCredentialsError as exc:
            raise AuthenticationError(f"gcs backend {name!r}: no Google credentials found ({_first_line(exc)}); set the "
                                      "credentials_file option or GOOGLE_APPLICATION_CREDENTIALS, or run "
                                      "'gcloud auth application-default login'") from exc
        except (OSError, ValueError, auth_exc.GoogleAuthError) as exc:
            raise ConfigError(f"gcs backend {name!r}: cannot load credentials: {_first_line(exc)}") from exc
        self.bucket = self.client.bucket(self.bucket_name)

    @property
    def _retry(self) -> Retry:
        """A fresh retry policy per call: at most ``max_attempts`` tries within ``retry_timeout``,
        with a warning before each retry."""
        tries = [1]

        def on_error(exc: Exception) -> None:
            if tries[0] >= self.max_attempts:
                raise exc  # attempts used up: give up with this error
            tries[0] += 1
            target = self.endpoint_url or "storage.googleapis.com"
            if isinstance(exc, (requests.Timeout, gexc.DeadlineExceeded)) or "timed out" in str(exc).lower():
                why = f"no answer from {target} within {self.read_timeout:g}s"
            elif isinstance(exc, requests.ConnectionError):
                why = f"cannot reach {target} ({_first_line(exc)})"
            else:
                why = f"{target}: {_first_line(exc)}"
            log.warning("gcs backend %r: %s, retrying (%d/%d)", self.name, why, tries[0], self.max_attempts)

        return Retry(predicate=DEFAULT_RETRY._predicate, initial=0.1, maximum=4.0, multiplier=2.0,
                     timeout=self.retry_timeout, on_error=on_error)

    # -- location (the bucket's region, looked up on first use) -------------------------------------
    @property  # type: ignore[override]
    def location(self) -> Location:
        with self._location_lock:
            if self._location is None:
                region = "unknown"
                try:
                    bucket = self.client.get_bucket(self.bucket_name, timeout=self.timeout, retry=self._retry)
                    region = (bucket.location or "unknown").lower()
                except Exception:  # noqa: S110 - placement works with an unknown region; don't fail here
                    pass
                self._location = Location(cloud="gcp", region=region)
            return self._location

    @location.setter
    def location(self, value: Location) -> None:
        self._location = value

    # -- helpers --------------------------------------------------------------------------------
    def _object_name(self, key: str) -> str:
        if not key or key.startswith("/") or key.endswith("/"):
            raise InvalidPath(f"gcs backend {self.name!r}: bad key {key!r}", path=key)
        if "\r" in key or "\n" in key:
            raise InvalidPath(f"gcs backend {self.name!r}: object names cannot contain CR or LF: {key!r}", path=key)
        name = self.root + key
        if len(name.encode("utf-8")) > 1024:
            raise InvalidPath(f"gcs backend {self.name!r}: object names are limited to 1024 bytes: {key[:60]!r}...",
                              path=key)
        return name

    def _meta(self, key: str, blob: Any) -> ObjectMeta:
        updated = blob.updated
        return ObjectMeta(key=key, size=int(blob.size or 0), etag=str(blob.generation) if blob.generation else None,
                          mtime=updated.timestamp() if updated is not None else None)

    def _conditions(self, mode: PutMode, key: str) -> dict[str, Any]:
        if mode.kind == "create":
            return {"if_generation_match": 0}
        if mode.kind == "update":
            if not mode.etag:
                raise InvalidArgument("PutMode.update needs an etag")
            if not str(mode.etag).isdigit():
                raise Conflict(f"gcs backend {self.name!r}: {key!r} is not at etag {mode.etag!r} "
                               "(GCS etags are generation numbers)", path=key)
            return {"if_generation_match": int(mode.etag)}
        if mode.kind != "overwrite":
            raise InvalidArgument(f"unknown put mode {mode.kind!r}")
        return {}

    def _call(self, fn: Callable[[], T], action: str, key: str | None = None, mode: PutMode | None = None) -> T:
        try:
            return fn()
        except _ERRORS as exc:
            self._translate(exc, action, key, mode)

    def _translate(self, exc: BaseException, action: str, key: str | None = None, mode: PutMode | None = None) -> NoReturn:
        """The one place Google client exceptions become vdir errors (always ``raise ... from``)."""
        what = f"gcs backend {self.name!r}"
        where = f" {key!r}" if key is not None else ""
        kind = mode.kind if mode is not None else None
        if isinstance(exc, gexc.RetryError) and exc.cause is not None:  # gave up retrying: judge by the last error
            cause = exc.cause
            try:
                self._translate(cause, action, key, mode)
            except TransientError as inner:
                raise type(inner)(f"{inner.message} (gave up after retrying)", path=key) from exc
        code = getattr(exc, "code", None)
        if code is None:  # the upload/download layer raises InvalidResponse with the HTTP response
            code = getattr(getattr(exc, "response", None), "status_code", None)
        message = _first_line(getattr(exc, "message", None) or exc)
        if isinstance(exc, DataCorruption):
            raise TransientError(f"{what}: checksum mismatch during {action}{where} ({message})", path=key) from exc
        if code == 507 or (code in (403, 429) and "quota" in message.lower() and "rate" not in message.lower()):
            raise NoSpace(f"{what}: the storage is full or over its quota during {action}{where} ({message})",
                          path=key) from exc
        if isinstance(exc, (auth_exc.RefreshError, auth_exc.DefaultCredentialsError)) or \
                isinstance(exc, (gexc.Unauthorized, gexc.Forbidden)) or code in (401, 403):
            raise AuthenticationError(f"{what}: access denied during {action}{where} ({message}); check the "
                                      "credentials and the bucket's permissions", path=key) from exc
        if isinstance(exc, gexc.PreconditionFailed) or code == 412:
            if kind == "create":
                raise AlreadyExists(f"{what}:{where} already exists", path=key) from exc
            raise Conflict(f"{what}:{where} changed meanwhile (generation mismatch during {action})", path=key) from exc
        if isinstance(exc, gexc.Conflict) or code == 409:
            if kind == "create":
                raise AlreadyExists(f"{what}:{where} already exists", path=key) from exc
            raise Conflict(f"{what}: conflict during {action}{where} ({message})", path=key) from exc
        if isinstance(exc, gexc.NotFound) or code == 404:
            # a write that needs no existing object, or a listing, finds no bucket (GCS also says so)
            if (action in ("write", "list") and kind != "update") or "specified bucket does not exist" in message:
                raise ConfigError(f"{what}: bucket {self.bucket_name!r} does not exist ({action}{where})") from exc
            if kind == "update":
                raise Conflict(f"{what}:{where} was deleted or replaced meanwhile", path=key) from exc
            raise NotFound(f"{what}:{where} not found", path=key) from exc
        if isinstance(exc, (requests.Timeout, gexc.DeadlineExceeded, gexc.GatewayTimeout)) or \
                "timed out" in message.lower():
            raise Timeout(f"{what}: timed out during {action}{where} after {self.max_attempts} attempt(s) "
                          f"(connect_timeout {self.connect_timeout:g}s, read_timeout {self.read_timeout:g}s)",
                          path=key) from exc
        if isinstance(exc, (requests.ConnectionError, auth_exc.TransportError)):
            raise BackendUnavailable(f"{what}: cannot reach GCS during {action}{where} ({message})", path=key) from exc
        if isinstance(exc, (gexc.TooManyRequests, gexc.ServerError)) or (isinstance(code, int) and code >= 500):
            raise BackendUnavailable(f"{what}: GCS answered {code} during {action}{where} ({message})", path=key) from exc
        if isinstance(exc, requests.RequestException):
            raise TransientError(f"{what}: {action}{where} failed ({message})", path=key) from exc
        if isinstance(exc, gexc.BadRequest) or code == 400:
            raise InvalidArgument(f"{what}: GCS refused {action}{where} ({message})", path=key) from exc
        if isinstance(exc, auth_exc.GoogleAuthError):
            raise AuthenticationError(f"{what}: {message}", path=key) from exc
        raise VDirError(f"{what}: {action}{where} failed ({message})", path=key) from exc

    # -- reads ----------------------------------------------------------------------------------
    def head(self, key: str) -> ObjectMeta:
        name = self._object_name(key)
        blob = self._call(lambda: self.bucket.get_blob(name, timeout=self.timeout, retry=self._retry), "read metadata of", key)
        if blob is None:
            raise NotFound(f"gcs backend {self.name!r}: {key!r} not found", path=key)
        return self._meta(key, blob)

    def get(self, key: str, start: int = 0, end: int | None = None) -> IO[bytes]:
        if start < 0 or (end is not None and end < 0):
            raise InvalidArgument(f"gcs backend {self.name!r}: negative range [{start}, {end})")
        name = self._object_name(key)
        for attempt in (1, 2):
            meta = self.head(key)
            stop = meta.size if end is None else min(end, meta.size)
            if start >= stop:
                return io.BytesIO(b"")
            pinned = self.bucket.blob(name, generation=int(meta.etag or 0) or None)

            def fetch(a: int, b: int, blob: Any = pinned) -> bytes:
                data: bytes = blob.download_as_bytes(start=a, end=b - 1, raw_download=True, checksum=None,
                                                     timeout=self.timeout, retry=self._retry)
                return data

            try:
                first = fetch(start, min(stop, start + self.chunk_size))
            except gexc.NotFound as exc:
                if attempt == 1:
                    continue  # replaced between head and read: look again
                self._translate(exc, "read", key)
            except _ERRORS as exc:
                self._translate(exc, "read", key)
            if len(first) != min(stop, start + self.chunk_size) - start:
                raise TransientError(f"gcs backend {self.name!r}: short read of {key!r} ({len(first)} bytes)", path=key)

            def fetch_more(a: int, b: int, fetch: Callable[[int, int], bytes] = fetch,
                           pinned_mode: PutMode = PutMode.update(meta.etag or "0")) -> bytes:
                # later chunks of the pinned generation: 404 means it was replaced or deleted mid-read
                return self._call(lambda: fetch(a, b), "read", key, pinned_mode)

            return io.BufferedReader(_RangeReader(fetch_more, start, stop, self.chunk_size, first), 256 * KiB)
        raise AssertionError("unreachable")

    def list(self, prefix: str = "") -> Iterator[ObjectMeta]:
        if "\r" in prefix or "\n" in prefix:
            return
        blobs = iter(self.client.list_blobs(self.bucket, prefix=self.root + prefix, timeout=self.timeout,
                                            retry=self._retry, page_size=self.list_page_size))
        while True:
            try:
                blob = next(blobs)
            except StopIteration:
                return
            except _ERRORS as exc:
                self._translate(exc, "list", prefix)
            key = blob.name[len(self.root):]
            yield self._meta(key, blob)

    def list_with_delimiter(self, prefix: str = "") -> ListResult:
        if prefix and not prefix.endswith("/"):
            raise InvalidArgument(f"gcs backend {self.name!r}: folder prefix must end with '/': {prefix!r}")
        if "\r" in prefix or "\n" in prefix:
            return ListResult([], [])

        def walk() -> tuple[builtins.list[ObjectMeta], builtins.list[str]]:
            iterator = self.client.list_blobs(self.bucket, prefix=self.root + prefix, delimiter="/", timeout=self.timeout,
                                              retry=self._retry, page_size=self.list_page_size)
            objects = [self._meta(b.name[len(self.root):], b) for b in iterator]
            return objects, [p[len(self.root):] for p in iterator.prefixes]

        objects, prefixes = self._call(walk, "list", prefix)
        return ListResult(sorted(objects, key=lambda m: m.key), sorted(prefixes))

    # -- writes ---------------------------------------------------------------------------------
    def put(self, key: str, src: IO[bytes], mode: PutMode = PutMode("overwrite"), size: int | None = None) -> ObjectMeta:
        name = self._object_name(key)
        conditions = self._conditions(mode, key)
        limit = min(self.chunk_size, MULTIPART_LIMIT)
        first = _read_full(src, limit)
        blob = self.bucket.blob(name, chunk_size=self.chunk_size)
        common = {"content_type": "application/octet-stream", "timeout": self.timeout, "retry": self._retry, **conditions}
        if len(first) < limit or size == len(first):
            self._call(lambda: blob.upload_from_string(first, **common), "write", key, mode)
            return self._meta(key, blob)
        self._precheck(key, mode)
        stream = _UploadStream(first, src, self.chunk_size)
        # with a size of at most 8 MiB the client would send one request holding it all: let it
        # find the end itself, chunk by chunk
        declared = size if size is not None and size > MULTIPART_LIMIT else None
        self._call(lambda: blob.upload_from_file(stream, size=declared, **common), "write", key, mode)
        if size is not None and stream.total != size:
            raise InvalidArgument(f"gcs backend {self.name!r}: {key!r}: source gave {stream.total} bytes, expected {size}")
        return self._meta(key, blob)

    def _precheck(self, key: str, mode: PutMode) -> None:
        """Fail a conditional write early, before moving any bytes.  GCS checks the condition again
        on the write itself; fake-gcs-server checks it only on single-request uploads."""
        if mode.kind == "overwrite":
            return
        try:
            current = self.head(key)
        except NotFound:
            if mode.kind == "update":
                raise Conflict(f"gcs backend {self.name!r}: {key!r} does not exist (expected generation {mode.etag})",
                               path=key) from None
            return
        if mode.kind == "create":
            raise AlreadyExists(f"gcs backend {self.name!r}: {key!r} already exists", path=key)
        if current.etag != mode.etag:
            raise Conflict(f"gcs backend {self.name!r}: {key!r} is at generation {current.etag}, not {mode.etag}", path=key)

    def delete(self, key: str) -> None:
        name = self._object_name(key)
        try:
            self._call(lambda: self.bucket.delete_blob(name, timeout=self.timeout, retry=self._retry), "delete", key)
        except NotFound:
            return

    def server_copy(self, src_key: str, dst_key: str, mode: PutMode = PutMode("overwrite")) -> ObjectMeta:
        """Copy inside GCS without moving bytes through us (``ServerSideCopy``), via ``rewrite``."""
        meta = self.server_copy_from(self, src_key, dst_key, mode)
        assert meta is not None  # the same backend is always the same service
        return meta

    def server_copy_from(self, source_backend: Backend, src_key: str, dst_key: str, mode: PutMode = PutMode("overwrite"),
                         source_etag: str | None = None) -> ObjectMeta | None:
        """``rewrite`` from another bucket or prefix on the same GCS endpoint (None for any other
        backend); the source is read with this backend's credentials."""
        if not isinstance(source_backend, GCSBackend) or source_backend.endpoint_url != self.endpoint_url:
            return None
        source = source_backend.bucket.blob(source_backend._object_name(src_key))
        target = self.bucket.blob(self._object_name(dst_key))
        conditions = self._conditions(mode, dst_key)
        current = source_backend.head(src_key)  # a missing source is NotFound, not a failed condition
        if source_etag is not None and current.etag != source_etag:  # the caller re-hashes the copy anyway
            raise Conflict(f"gcs backend {source_backend.name!r}: copy source {src_key!r} changed (not at etag {source_etag})", path=src_key)
        self._precheck(dst_key, mode)
        token: str | None = None
        while True:
            token, _, _ = self._call(lambda t=token: target.rewrite(source, token=t, timeout=self.timeout,  # type: ignore[misc]
                                                                    retry=self._retry, **conditions),
                                     "copy to", dst_key, mode)
            if token is None:
                return self._meta(dst_key, target)

    # -- direct transfers: V4 signed URLs --------------------------------------------------------
    presign_put_max = 5 * 1024 * 1024 * MiB  # one upload request (5 TiB, GCS's object limit)

    def _signed(self, key: str, method: str, expires: float, headers: dict[str, str] | None = None) -> Presigned | None:
        """A V4 signed URL, made locally when the credentials can sign (a service account key);
        None otherwise: anonymous credentials (the emulators) and user credentials cannot, and
        signing through the IAM API would need a service account email this backend does not know."""
        from google.auth.credentials import Signing

        if not isinstance(self.client._credentials, Signing):  # noqa: SLF001 - the client's own credentials
            return None
        import datetime

        seconds = max(1, int(expires))
        args: dict[str, Any] = {}
        if self.endpoint_url:
            args["api_access_endpoint"] = self.endpoint_url
        try:
            url = self.bucket.blob(self._object_name(key)).generate_signed_url(
                version="v4", expiration=datetime.timedelta(seconds=seconds), method=method, headers=headers, **args)
        except (AttributeError, TypeError, ValueError, auth_exc.GoogleAuthError):
            return None
        return Presigned(url=url, method=method, expires=time.time() + seconds, headers=dict(headers or {}))

    def presign_get(self, key: str, expires: float) -> Presigned | None:
        return self._signed(key, "GET", expires)

    def presign_put(self, key: str, expires: float) -> Presigned | None:
        return self._signed(key, "PUT", expires)

    def close(self) -> None:
        self.client.close()


def _load_credentials(name: str, path: str) -> tuple[Any, str | None]:
    """Credentials from a service-account or authorized-user JSON file (nothing else is accepted)."""
    with open(os.path.expanduser(path), encoding="utf-8") as f:
        info = json.load(f)
    kind = info.get("type") if isinstance(info, dict) else None
    if kind == "service_account":
        from google.oauth2 import service_account

        return service_account.Credentials.from_service_account_info(info, scopes=SCOPES), info.get("project_id")
    if kind == "authorized_user":
        from google.oauth2 import credentials as user_credentials

        return user_credentials.Credentials.from_authorized_user_info(info, scopes=SCOPES), info.get("quota_project_id")
    raise ConfigError(f"gcs backend {name!r}: {path} is not a service_account or authorized_user credentials file "
                      f"(type {kind!r})")


def _first_line(value: object) -> str:
    text = str(value).strip()
    return text.splitlines()[0][:300] if text else type(value).__name__
