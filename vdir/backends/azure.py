"""Azure Blob Storage backend (``az://<container>[/<prefix>]``), via ``azure-storage-blob``.

Keys are blob names below the prefix, unchanged, so other tools see the same names.  Azure
(and Azurite) rewrite ``\\`` to ``/``, cannot list names with control characters, and Azure
documents that no path segment should end with ``.``: such keys are refused with
``InvalidPath`` rather than silently stored under another name.

* Writes: up to ``block_size`` (8 MiB) one Put Blob; larger (or of unknown size) a block blob
  staged one block at a time (``stage_block``: one block in memory) and made visible by
  ``commit_block_list``.  Uncommitted blocks are never visible and expire on their own, so a
  failed write leaves nothing.  Block ids carry a random per-write prefix, so concurrent writers
  of one name cannot mix blocks.
* Conditions: ``CREATE`` is ``If-None-Match: *`` and ``update(etag)`` is ``If-Match: etag`` on
  the request that makes the blob visible (Put Blob or Put Block List); a large conditional
  write checks the condition first too, to fail before uploading.
* Reads: ``download_blob(offset, length)`` streamed chunk by chunk (``block_size`` each); the SDK
  pins later chunks to the first chunk's etag, so a blob replaced mid-read raises ``Conflict``
  instead of returning a mix.
* Listing: Azure sorts names by UTF-16 code units, Python by code points; they differ only for
  characters beyond U+FFFF, which are held back (in memory, only those) until their turn.
* Copy: ``start_copy_from_url`` within the account, polled until done (``ServerSideCopy``).
* Errors are translated in :meth:`AzureBackend._translate`; the SDK retries, bounded: at most
  ``max_attempts`` tries (3) of a request, each waiting at most ``connect_timeout`` (5 s) to
  connect and ``read_timeout`` (8 s) for an answer, with short backoffs and a warning before
  each retry; a server that accepts connections but never answers fails a call in about 25 s.
  (``retries`` and ``connection_timeout``, the older names, still work.)
* Create-only is atomic (``create_only_atomic``): ``If-None-Match: *`` on Put Blob and Put Block
  List, checked by the service.
* Temporaries: a blob with only uncommitted blocks (an interrupted large write) is listed by
  ``list_temporaries`` (kind ``uncommitted-blocks``) and deleted by ``remove_temporary``; Azure
  would drop them after a week anyway.  (Uncommitted blocks beside a committed blob — an
  interrupted overwrite — are not visible in listings; they expire the same way.)
* A full account (HTTP 507, ``InsufficientAccountResources``...) raises ``NoSpace``.

Credentials (never in the catalog): option ``connection_string`` or the env var named by
``connection_string_env`` (default ``AZURE_STORAGE_CONNECTION_STRING``); or ``account_url``
(or ``account_name``) with ``DefaultAzureCredential`` (environment, managed identity, az login),
or ``anonymous=True`` for a public container.  Other options: ``region`` (for placement; Azure
does not tell a data-plane client), ``block_size``, ``retries``, ``retry_backoff``,
``connect_timeout``, ``read_timeout``, ``max_attempts``, ``copy_timeout``, ``list_page_size``.  The container
must exist.
"""

from __future__ import annotations

import base64
import builtins
import heapq
import io
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import IO, Any, NoReturn, TypeVar
from urllib.parse import urlsplit

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    DecodeError,
    HttpResponseError,
    IncompleteReadError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceRequestTimeoutError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)
from azure.storage.blob import BlobBlock, BlobPrefix, BlobServiceClient, ContainerClient, ExponentialRetry

from vdir.backends.base import Backend, ListResult, Location, ObjectMeta, Presigned, PutMode, TempObject
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
    PermissionDenied,
    Timeout,
    TransientError,
    VDirError,
)
from vdir.retry import backoff_delay

T = TypeVar("T")
log = logging.getLogger("vdir.backends.azure")
MiB = 1024 * 1024
MAX_BLOCKS = 50_000
MAX_BLOCK_SIZE = 4000 * MiB


class _Backoff(ExponentialRetry):
    """The SDK's retry policy (5xx, 408, timeouts, connection errors) with vdir's delays: full
    jitter over ``base * 2**(n-1)``, capped at 5 s (the SDK's own waits 15 s, 18 s, 24 s)."""

    def __init__(self, base: float, retry_total: int, label: str = "azure", connect: float = 0, read: float = 0) -> None:
        super().__init__(retry_total=retry_total)
        self.base = base
        self.label, self.connect, self.read = label, connect, read

    def get_backoff_time(self, settings: dict[str, Any]) -> float:
        return backoff_delay(max(1, int(settings["count"])), self.base, 5.0)

    def increment(self, settings: dict[str, Any], request: Any, response: Any = None, error: Any = None) -> bool:
        again = bool(super().increment(settings, request, response=response, error=error))
        if again:  # a warning before each retry, so a silent server is not a silent hang
            host = f"{request.url.split('?', 1)[0].rsplit('/', 2)[0]}" if getattr(request, "url", None) else "Azure"
            if isinstance(error, (ServiceResponseTimeoutError, ServiceResponseError)):
                why = f"no answer from {host} within {self.read:g}s"
            elif isinstance(error, ServiceRequestError):
                why = f"cannot connect to {host} within {self.connect:g}s"
            else:
                why = f"{host} answered {getattr(response, 'status_code', '?')}"
            log.warning("%s: %s, retrying (%d/%d)", self.label, why, int(settings["count"]) + 1, self.total_retries + 1)
        return again


class _ChunkReader(io.RawIOBase):
    """A raw stream over an iterator of byte chunks; errors go through ``translate``."""

    def __init__(self, chunks: Iterator[bytes], translate: Callable[[Exception], NoReturn]) -> None:
        self._chunks = chunks
        self._translate = translate
        self._buf = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._buf:
            try:
                chunk = next(self._chunks)
            except StopIteration:
                return 0
            except AzureError as exc:
                self._translate(exc)
            self._buf = memoryview(chunk)
        n = min(len(buffer), len(self._buf))
        buffer[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def close(self) -> None:
        self._chunks = iter(())
        self._buf = memoryview(b"")
        super().close()


def _read_full(src: IO[bytes], n: int) -> bytes:
    """Up to ``n`` bytes from ``src``: fewer only at the end of the stream."""
    data = src.read(n)
    if data is None:
        data = b""
    if len(data) >= n or not data:
        return bytes(data)
    parts = [data]
    have = len(data)
    while have < n:
        more = src.read(n - have)
        if not more:
            break
        parts.append(more)
        have += len(more)
    return b"".join(parts)


def _etag(value: str | None) -> str | None:
    """ETags in one form: quoted, as in HTTP (listings give them bare, properties quoted)."""
    if not value or value.startswith('"') or value.startswith('W/'):
        return value
    return f'"{value}"'


def _first_astral(name: str) -> int:
    """Index of the first character beyond U+FFFF (sorted differently by UTF-16), or -1."""
    for i, ch in enumerate(name):
        if ord(ch) > 0xFFFF:
            return i
    return -1


class AzureBackend(Backend):
    """A container (or a prefix in it) of an Azure storage account as an object store."""

    scheme = "az"
    create_only_atomic = True

    def __init__(self, name: str, url: str, location: Location | None = None, *, connection_string: str | None = None,
                 connection_string_env: str = "AZURE_STORAGE_CONNECTION_STRING", account_url: str | None = None,
                 account_name: str | None = None, anonymous: bool = False, region: str | None = None,
                 block_size: int = 8 * MiB, max_attempts: int = 3, retry_backoff: float = 0.5,
                 connect_timeout: float = 5.0, read_timeout: float = 8.0, copy_timeout: float = 3600.0,
                 list_page_size: int | None = None, retries: int | None = None,
                 connection_timeout: float | None = None) -> None:
        super().__init__(name, url, location or Location(cloud="azure", region=region or "unknown"))
        parts = urlsplit(url)
        if parts.scheme != "az" or not parts.netloc:
            raise ConfigError(f"bad Azure URL {url!r}; expected az://<container>[/<prefix>]")
        self.container_name = parts.netloc
        root = parts.path.strip("/")
        self.root = root + "/" if root else ""
        if not 0 < block_size <= MAX_BLOCK_SIZE:
            raise ConfigError(f"azure backend {name!r}: block_size must be between 1 and {MAX_BLOCK_SIZE} bytes")
        self.block_size = int(block_size)
        self.copy_timeout = copy_timeout
        self.list_page_size = list_page_size
        if retries is not None:  # the older option: retries after the first try
            max_attempts = int(retries) + 1
        if connection_timeout is not None:
            connect_timeout = connection_timeout
        self.max_attempts = max(1, int(max_attempts))
        self.connect_timeout, self.read_timeout = float(connect_timeout), float(read_timeout)
        retry = _Backoff(retry_backoff, retry_total=self.max_attempts - 1, label=f"azure backend {name!r}",
                         connect=self.connect_timeout, read=self.read_timeout)
        client_options: dict[str, Any] = {
            "retry_policy": retry,
            "connection_timeout": self.connect_timeout,
            "read_timeout": self.read_timeout,
            "max_single_put_size": self.block_size,
            "max_block_size": self.block_size,
            "max_single_get_size": self.block_size,
            "max_chunk_get_size": self.block_size,
        }
        self._credential: Any = None
        connection_string = connection_string or (os.environ.get(connection_string_env) if connection_string_env else None)
        if account_name and not account_url:
            account_url = f"https://{account_name}.blob.core.windows.net"
        try:
            if connection_string and not account_url:
                self.service = BlobServiceClient.from_connection_string(connection_string, **client_options)
            elif account_url:
                if not anonymous:
                    from azure.identity import DefaultAzureCredential

                    self._credential = DefaultAzureCredential()
                self.service = BlobServiceClient(account_url, credential=self._credential, **client_options)
            else:
                raise ConfigError(
                    f"azure backend {name!r}: no credentials; set ${connection_string_env or 'AZURE_STORAGE_CONNECTION_STRING'} "
                    "or give the account_url (or account_name) option to sign in with DefaultAzureCredential")
        except ValueError as exc:
            raise ConfigError(f"azure backend {name!r}: bad connection string or account URL: {exc}") from exc
        self.container: ContainerClient = self.service.get_container_client(self.container_name)

    # -- helpers --------------------------------------------------------------------------------
    def _blob_name(self, key: str) -> str:
        if not key or key.startswith("/") or key.endswith("/"):
            raise InvalidPath(f"azure backend {self.name!r}: bad key {key!r}", path=key)
        self._check(key, key)
        return self.root + key

    def _check(self, text: str, key: str, partial_last: bool = False) -> None:
        """Refuse what Azure would store under another name (or not list at all)."""
        if "\\" in text:
            raise InvalidPath(f"azure backend {self.name!r}: blob names cannot contain '\\' (Azure turns it into '/'): "
                              f"{key!r}", path=key)
        if any(ord(c) < 32 or ord(c) == 127 for c in text):
            raise InvalidPath(f"azure backend {self.name!r}: blob names cannot contain control characters: {key!r}", path=key)
        segments = text.split("/")
        if partial_last:
            segments = segments[:-1]
        if any(s.endswith(".") for s in segments):
            raise InvalidPath(f"azure backend {self.name!r}: no part of a blob name may end with '.': {key!r}", path=key)

    def _key(self, blob_name: str) -> str:
        return blob_name[len(self.root):]

    def _meta(self, key: str, props: Any) -> ObjectMeta:
        modified = getattr(props, "last_modified", None)
        return ObjectMeta(key=key, size=int(props.size or 0), etag=_etag(props.etag),
                          mtime=modified.timestamp() if modified is not None else None)

    @staticmethod
    def _conditions(mode: PutMode) -> dict[str, Any]:
        if mode.kind == "create":
            return {"match_condition": MatchConditions.IfMissing}
        if mode.kind == "update":
            if not mode.etag:
                raise InvalidArgument("PutMode.update needs an etag")
            return {"etag": _etag(mode.etag), "match_condition": MatchConditions.IfNotModified}
        if mode.kind != "overwrite":
            raise InvalidArgument(f"unknown put mode {mode.kind!r}")
        return {}

    def _call(self, fn: Callable[[], T], action: str, key: str | None = None, mode: PutMode | None = None) -> T:
        try:
            return fn()
        except AzureError as exc:
            self._translate(exc, action, key, mode)

    def _translate(self, exc: AzureError, action: str, key: str | None = None, mode: PutMode | None = None) -> NoReturn:
        """The one place Azure SDK exceptions become vdir errors (always ``raise ... from``)."""
        what = f"azure backend {self.name!r}"
        where = f" {key!r}" if key is not None else ""
        status = getattr(exc, "status_code", None)
        error_code = getattr(exc, "error_code", None)
        code = str(getattr(error_code, "value", error_code) or "")  # StorageErrorCode is a str enum
        first = (str(getattr(exc, "reason", "") or "") or (str(exc).splitlines() or [""])[0]).strip()
        detail = f"{code or first or type(exc).__name__}"
        kind = mode.kind if mode is not None else None
        # Azurite answers a bad signature with 403 AuthorizationFailure (Azure: AuthenticationFailed)
        refused = code in ("AuthenticationFailed", "InvalidAuthenticationInfo", "NoAuthenticationInformation") or \
            (status == 403 and "failed to authenticate" in first.lower())
        if isinstance(exc, ClientAuthenticationError) or status == 401 or refused:
            msg = first if first and len(first) < 200 else code or "credentials refused"
            raise AuthenticationError(f"{what}: authentication failed ({msg}); check the connection string, "
                                      "account key or Azure sign-in") from exc
        if status == 403:
            raise PermissionDenied(f"{what}: permission denied to {action}{where} ({detail})", path=key) from exc
        if code in ("ContainerNotFound", "ContainerBeingDeleted"):
            raise ConfigError(f"{what}: container {self.container_name!r} does not exist ({action}{where})") from exc
        if isinstance(exc, ResourceModifiedError) or status == 412:
            if kind == "create":
                raise AlreadyExists(f"{what}:{where} already exists", path=key) from exc
            raise Conflict(f"{what}:{where} changed meanwhile (etag mismatch during {action})", path=key) from exc
        if isinstance(exc, ResourceExistsError) or status == 409:
            if kind == "create" or code == "BlobAlreadyExists":
                raise AlreadyExists(f"{what}:{where} already exists", path=key) from exc
            raise Conflict(f"{what}: conflict during {action}{where} ({detail})", path=key) from exc
        if isinstance(exc, ResourceNotFoundError) or status == 404:
            if kind == "update":
                raise Conflict(f"{what}:{where} was deleted meanwhile", path=key) from exc
            raise NotFound(f"{what}:{where} not found", path=key) from exc
        if status == 507 or code in ("InsufficientAccountResources", "AccountQuotaExceeded", "InsufficientStorage"):
            raise NoSpace(f"{what}: the storage account is full or over its quota during {action}{where} ({detail})",
                          path=key) from exc
        if isinstance(exc, (ServiceRequestTimeoutError, ServiceResponseTimeoutError)) or "timed out" in first.lower():
            raise Timeout(f"{what}: timed out during {action}{where} after {self.max_attempts} attempt(s) "
                          f"(connect_timeout {self.connect_timeout:g}s, read_timeout {self.read_timeout:g}s)",
                          path=key) from exc
        if isinstance(exc, ServiceRequestError):
            raise BackendUnavailable(f"{what}: cannot reach Azure during {action}{where} ({first or type(exc).__name__})",
                                     path=key) from exc
        if isinstance(exc, ServiceResponseError):
            raise TransientError(f"{what}: connection failed during {action}{where} ({first or type(exc).__name__})",
                                 path=key) from exc
        if isinstance(exc, (DecodeError, IncompleteReadError)) or \
                (status is None and isinstance(exc.inner_exception or exc.__cause__, (DecodeError, ServiceResponseError))):
            # a body cut short (the SDK re-reads a chunk a few times before giving up)
            raise TransientError(f"{what}: connection broken during {action}{where} ({first or type(exc).__name__})",
                                 path=key) from exc
        if isinstance(exc, HttpResponseError) and status is not None and (status >= 500 or status in (408, 429)):
            raise BackendUnavailable(f"{what}: Azure answered {status} during {action}{where} ({detail})", path=key) from exc
        if status == 400 and code in ("InvalidUri", "OutOfRangeInput", "InvalidResourceName"):
            raise InvalidPath(f"{what}: Azure refused the name{where} ({detail})", path=key) from exc
        if status == 400:
            raise InvalidArgument(f"{what}: Azure refused {action}{where} ({detail})", path=key) from exc
        raise VDirError(f"{what}: {action}{where} failed ({detail})", path=key) from exc

    # -- reads ----------------------------------------------------------------------------------
    def head(self, key: str) -> ObjectMeta:
        blob = self.container.get_blob_client(self._blob_name(key))
        return self._meta(key, self._call(blob.get_blob_properties, "read metadata of", key))

    def get(self, key: str, start: int = 0, end: int | None = None) -> IO[bytes]:
        if start < 0 or (end is not None and end < 0):
            raise InvalidArgument(f"azure backend {self.name!r}: negative range [{start}, {end})")
        blob = self.container.get_blob_client(self._blob_name(key))
        if end is not None and start >= end:
            self.head(key)  # a missing key still raises NotFound
            return io.BytesIO(b"")
        length = None if end is None else end - start
        try:
            downloader = blob.download_blob(offset=start, length=length, max_concurrency=1)
        except HttpResponseError as exc:
            if exc.status_code == 416:  # start at or past the end of an existing blob
                return io.BytesIO(b"")
            self._translate(exc, "read", key)
        except AzureError as exc:
            self._translate(exc, "read", key)

        def translate(exc: Exception) -> NoReturn:
            if isinstance(exc, AzureError):
                self._translate(exc, "read", key, PutMode.update("read"))  # 412 mid-read: replaced meanwhile
            raise exc

        return io.BufferedReader(_ChunkReader(downloader.chunks(), translate), 256 * 1024)

    def list(self, prefix: str = "") -> Iterator[ObjectMeta]:
        try:
            self._check(prefix, prefix, partial_last=True)
        except InvalidPath:
            return  # no blob can have such a name
        pages = self.container.list_blobs(name_starts_with=self.root + prefix, results_per_page=self.list_page_size)
        # Azure orders by UTF-16 code units: a name with a character beyond U+FFFF may come before
        # names it follows in code-point order (those with U+E000..U+FFFF at the same place).  All
        # names still to come are >= the longest astral-free start of the last name seen, so
        # anything pending up to that bound is in its final place.
        pending: builtins.list[tuple[str, ObjectMeta]] = []
        iterator = iter(pages)
        while True:
            try:
                props = next(iterator)
            except StopIteration:
                break
            except AzureError as exc:
                self._translate(exc, "list", prefix)
            key = self._key(props.name)
            heapq.heappush(pending, (key, self._meta(key, props)))
            cut = _first_astral(key)
            bound = key if cut < 0 else key[:cut]
            while pending and pending[0][0] <= bound:
                yield heapq.heappop(pending)[1]
        while pending:
            yield heapq.heappop(pending)[1]

    def list_with_delimiter(self, prefix: str = "") -> ListResult:
        if prefix and not prefix.endswith("/"):
            raise InvalidArgument(f"azure backend {self.name!r}: folder prefix must end with '/': {prefix!r}")
        try:
            self._check(prefix, prefix)
        except InvalidPath:
            return ListResult([], [])  # no blob can have such a name
        objects: builtins.list[ObjectMeta] = []
        prefixes: builtins.list[str] = []

        def walk() -> None:
            for item in self.container.walk_blobs(name_starts_with=self.root + prefix, delimiter="/",
                                                  results_per_page=self.list_page_size):
                if isinstance(item, BlobPrefix):
                    prefixes.append(self._key(item.name))
                else:
                    key = self._key(item.name)
                    objects.append(self._meta(key, item))

        self._call(walk, "list", prefix)
        return ListResult(sorted(objects, key=lambda m: m.key), sorted(prefixes))

    # -- writes ---------------------------------------------------------------------------------
    def put(self, key: str, src: IO[bytes], mode: PutMode = PutMode("overwrite"), size: int | None = None) -> ObjectMeta:
        blob = self.container.get_blob_client(self._blob_name(key))
        conditions = self._conditions(mode)
        first = _read_full(src, self.block_size)
        if len(first) < self.block_size or size == len(first):
            result = self._call(lambda: blob.upload_blob(first, length=len(first), overwrite=True, max_concurrency=1,
                                                         **conditions), "write", key, mode)
            return self._written(key, len(first), result)
        if mode.kind != "overwrite":
            self._precheck(key, mode)
        block_size = self.block_size
        if size is not None:  # keep within Azure's 50,000 blocks per blob
            block_size = max(block_size, -(-size // MAX_BLOCKS))
        tag = uuid.uuid4().hex
        blocks: builtins.list[BlobBlock] = []
        total = 0
        chunk = first
        while chunk:
            block_id = base64.b64encode(f"{tag}-{len(blocks):06d}".encode()).decode()
            self._call(lambda c=chunk, b=block_id: blob.stage_block(b, c, length=len(c)),  # type: ignore[misc]
                       "upload a block of", key)
            blocks.append(BlobBlock(block_id=block_id))
            total += len(chunk)
            if len(blocks) >= MAX_BLOCKS:
                if src.read(1):
                    raise InvalidArgument(f"azure backend {self.name!r}: {key!r} needs more than {MAX_BLOCKS} blocks; "
                                          "pass its size or raise block_size")
                break
            if size is None and len(blocks) % 5000 == 0:  # unknown size: grow blocks to stay under the limit
                block_size = min(block_size * 2, MAX_BLOCK_SIZE)
            chunk = _read_full(src, block_size)
        if size is not None and total != size:
            raise InvalidArgument(f"azure backend {self.name!r}: {key!r}: source gave {total} bytes, expected {size}")
        result = self._call(lambda: blob.commit_block_list(blocks, **conditions), "commit", key, mode)
        return self._written(key, total, result)

    def _precheck(self, key: str, mode: PutMode) -> None:
        """Fail a conditional write before uploading when it would fail at the commit anyway."""
        try:
            current = self.head(key)
        except NotFound:
            if mode.kind == "update":
                raise Conflict(f"azure backend {self.name!r}: {key!r} does not exist (expected etag {mode.etag})",
                               path=key) from None
            return
        if mode.kind == "create":
            raise AlreadyExists(f"azure backend {self.name!r}: {key!r} already exists", path=key)
        if current.etag != _etag(mode.etag):
            raise Conflict(f"azure backend {self.name!r}: {key!r} is at etag {current.etag}, not {mode.etag}", path=key)

    @staticmethod
    def _written(key: str, size: int, result: dict[str, Any]) -> ObjectMeta:
        modified = result.get("last_modified")
        return ObjectMeta(key=key, size=size, etag=_etag(result.get("etag")),
                          mtime=modified.timestamp() if modified is not None else None)

    def delete(self, key: str) -> None:
        blob = self.container.get_blob_client(self._blob_name(key))
        try:
            self._call(lambda: blob.delete_blob(delete_snapshots="include"), "delete", key)
        except NotFound:
            return

    # -- temporaries ----------------------------------------------------------------------------
    def list_temporaries(self) -> Iterator[TempObject]:
        """Blobs below the prefix that hold only uncommitted blocks (listed with
        ``include=uncommittedblobs``, size 0, no properties); ``size`` sums their blocks."""
        blobs = self.container.list_blobs(name_starts_with=self.root or None, include=["uncommittedblobs"],
                                          results_per_page=self.list_page_size)
        iterator = iter(blobs)
        while True:
            try:
                props = next(iterator)
            except StopIteration:
                return
            except AzureError as exc:
                self._translate(exc, "list unfinished writes in")
            if int(props.size or 0) != 0:
                continue
            blob = self.container.get_blob_client(props.name)
            try:
                self._call(blob.get_blob_properties, "read metadata of", self._key(props.name))
                continue  # a committed (empty) blob
            except NotFound:
                pass
            try:
                _, uncommitted = self._call(lambda b=blob: b.get_block_list("uncommitted"),  # type: ignore[misc]
                                            "list blocks of", self._key(props.name))
            except NotFound:
                continue
            modified = getattr(props, "last_modified", None)
            yield TempObject(key=self._key(props.name), size=sum(int(b.size or 0) for b in uncommitted),
                             mtime=modified.timestamp() if modified is not None else None, kind="uncommitted-blocks")

    def remove_temporary(self, t: TempObject) -> None:
        """Drop the uncommitted blocks of a blob that has no committed version.  Never deletes a
        committed blob: where Delete Blob is refused for an uncommitted-only blob, an empty block
        list is committed create-only and that empty blob is deleted by its etag."""
        blob = self.container.get_blob_client(self._blob_name(t.key))
        try:
            self._call(blob.get_blob_properties, "read metadata of", t.key)
            return  # committed meanwhile: an object now, not a temporary
        except NotFound:
            pass
        try:
            self._call(lambda: blob.delete_blob(), "delete uncommitted blocks of", t.key)
            return
        except NotFound:
            pass
        try:
            made = self._call(lambda: blob.commit_block_list([], match_condition=MatchConditions.IfMissing),
                              "drop uncommitted blocks of", t.key, PutMode.CREATE)  # type: ignore[attr-defined]
        except AlreadyExists:
            return
        self._call(lambda: blob.delete_blob(etag=str(made.get("etag")), match_condition=MatchConditions.IfNotModified),
                   "delete", t.key)

    def server_copy(self, src_key: str, dst_key: str, mode: PutMode = PutMode("overwrite")) -> ObjectMeta:
        """Copy within the account without moving bytes through us (``ServerSideCopy``)."""
        meta = self.server_copy_from(self, src_key, dst_key, mode)
        assert meta is not None  # the same backend is always the same account
        return meta

    def server_copy_from(self, source_backend: Backend, src_key: str, dst_key: str, mode: PutMode = PutMode("overwrite"),
                         source_etag: str | None = None) -> ObjectMeta | None:
        """Copy from a container of the same storage account (None for any other backend): the
        account authorises its own blobs as copy sources."""
        if not isinstance(source_backend, AzureBackend) or source_backend.service.url != self.service.url:
            return None
        source = source_backend.container.get_blob_client(source_backend._blob_name(src_key))
        target = self.container.get_blob_client(self._blob_name(dst_key))
        conditions = self._conditions(mode)
        current = source_backend.head(src_key)  # a missing source is NotFound, not a failed condition
        if source_etag is not None and current.etag != source_etag:  # the caller re-hashes the copy anyway
            raise Conflict(f"azure backend {source_backend.name!r}: copy source {src_key!r} changed (not at etag {source_etag})", path=src_key)
        if mode.kind != "overwrite":
            self._precheck(dst_key, mode)
        self._call(lambda: target.start_copy_from_url(source.url, **conditions), "copy to", dst_key, mode)
        deadline = time.monotonic() + self.copy_timeout
        delay = 0.05
        while True:
            props = self._call(target.get_blob_properties, "check the copy to", dst_key)
            status = getattr(props.copy, "status", None) or "success"
            if status == "success":
                return self._meta(dst_key, props)
            if status != "pending":
                reason = getattr(props.copy, "status_description", None) or status
                raise BackendUnavailable(f"azure backend {self.name!r}: copy of {src_key!r} to {dst_key!r} {status}: {reason}",
                                         path=dst_key)
            if time.monotonic() > deadline:
                try:
                    target.abort_copy(props)
                except AzureError:  # noqa: S110 - best effort; it may have just finished
                    pass
                raise Timeout(f"azure backend {self.name!r}: copy of {src_key!r} to {dst_key!r} took over "
                              f"{self.copy_timeout:.0f}s and was aborted", path=dst_key)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    # -- direct transfers: SAS URLs --------------------------------------------------------------
    presign_put_max = 5000 * MiB  # one Put Blob (service version 2019-12-12 and later)

    def _sas(self, key: str, expires: float, **permission: bool) -> tuple[str, float] | None:
        """A blob SAS for ``key``: signed with the account key when the client has one (a
        connection string with AccountKey; Azurite's development account), else with a user
        delegation key when the client signs in with Azure AD; None for anonymous access."""
        import datetime

        from azure.storage.blob import BlobSasPermissions, generate_blob_sas

        blob = self._blob_name(key)
        seconds = max(1, int(expires))
        now = datetime.datetime.now(datetime.UTC)
        expiry = now + datetime.timedelta(seconds=seconds)
        args: dict[str, Any] = {}
        account_key = getattr(self.service.credential, "account_key", None)
        if account_key:
            args["account_key"] = account_key
        elif self._credential is not None:
            args["user_delegation_key"] = self._call(
                lambda: self.service.get_user_delegation_key(now - datetime.timedelta(minutes=5), expiry),
                "get a user delegation key for", key)
        else:
            return None
        sas = generate_blob_sas(str(self.service.account_name), self.container_name, blob, expiry=expiry,
                                permission=BlobSasPermissions(**permission), **args)
        return f"{self.container.get_blob_client(blob).url}?{sas}", time.time() + seconds

    def presign_get(self, key: str, expires: float) -> Presigned | None:
        signed = self._sas(key, expires, read=True)
        return Presigned(url=signed[0], method="GET", expires=signed[1]) if signed else None

    def presign_put(self, key: str, expires: float) -> Presigned | None:
        signed = self._sas(key, expires, create=True, write=True)
        return Presigned(url=signed[0], method="PUT", expires=signed[1],
                         headers={"x-ms-blob-type": "BlockBlob"}) if signed else None

    def close(self) -> None:
        self.service.close()
        if self._credential is not None:
            self._credential.close()
