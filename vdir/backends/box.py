"""Box backend (``box://<folder path>`` or ``box://id:<folder_id>[/<sub path>]``), via ``box_sdk_gen``.

Keys are paths below the root folder: each ``/``-separated part is a Box folder, the last part a
file.  Folder ids are resolved from paths and cached (a lock guards the cache; a stale id — the
folder was removed — is dropped and resolved again); missing folders are created on ``put`` and
folders left empty by ``delete`` are removed, so prefixes exist only while objects do.

* Names: Box refuses ``\\``, trailing spaces, ``.``/``..`` and control characters, so those (and
  ``%``) are written percent-escaped (``%5C``, ``%20``...); every other name is stored as is.
  Box compares names case-insensitively: keys differing only in case name the same file.
* Writes: below ``chunked_threshold`` (20 MiB, Box's minimum for chunked uploads) one multipart
  upload; above it an upload session, streamed part by part (one part in memory, each with the
  SHA-1 ``Digest`` Box requires, whole-file digest on commit).  A source of unknown size is
  spooled to a temporary file first (Box needs the size up front).  The file appears only at
  the end of the upload or commit, so writes are atomic.  A failed chunked upload deletes its
  session; one cut short by a crash cannot be found again (Box has no call that lists upload
  sessions) and Box drops it after 7 days, so there is no ``Temporaries`` capability here.
* Create-only is atomic (``create_only_atomic``): Box refuses a second file of one name in a
  folder (409), on single uploads and on the commit of an upload session alike.
* A full account (HTTP 507, or ``storage_limit_exceeded``) raises ``NoSpace``.
* Conditions: ``CREATE`` uploads a new file and a name conflict (409) is ``AlreadyExists``;
  ``update(etag)`` uploads a new version with ``If-Match`` (412 → ``Conflict``).  The etag is
  ``"<file id>:<Box etag>"``, so a file deleted and recreated does not match an old etag.
* Errors are translated in :meth:`BoxBackend._translate`; the SDK's own retry (which sleeps
  up to tens of seconds) is replaced by one that only re-authenticates, and 429/5xx/network
  errors are retried with :func:`vdir.retry.retrying`.

Auth (secrets never in the catalog): option ``token_file`` or env ``BOX_DEVELOPER_TOKEN``
(developer token); option ``jwt_config`` (Box JWT app config file); or client credentials:
``client_id``, ``client_secret_env`` (name of the env var holding the secret), ``enterprise_id``.
Options ``base_url``, ``upload_url``, ``oauth_url`` point the client at another server (tests).
"""

from __future__ import annotations

import base64
import builtins
import hashlib
import io
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, NoReturn, TypeVar, cast
from urllib.parse import quote, unquote, urlsplit

from box_sdk_gen import (
    BaseUrls,
    BoxAPIError,
    BoxCCGAuth,
    BoxClient,
    BoxDeveloperTokenAuth,
    BoxJWTAuth,
    BoxSDKError,
    CCGConfig,
    JWTConfig,
    NetworkSession,
    TimeoutConfig,
)
from box_sdk_gen.managers.folders import CreateFolderParent
from box_sdk_gen.managers.uploads import (
    UploadFileAttributes,
    UploadFileAttributesParentField,
    UploadFileVersionAttributes,
)
from box_sdk_gen.networking.retries import RetryStrategy
from box_sdk_gen.schemas.upload_part import UploadPart

from vdir.backends.base import CHUNK, Backend, ListResult, Location, ObjectMeta, PutMode
from vdir.errors import (
    AlreadyExists,
    AuthenticationError,
    BackendUnavailable,
    ConfigError,
    Conflict,
    InvalidArgument,
    InvalidPath,
    IsADirectory,
    NoSpace,
    NotADirectory,
    NotFound,
    PermissionDenied,
    TransientError,
    VDirError,
)
from vdir.retry import retrying

T = TypeVar("T")
MiB = 1024 * 1024
FIELDS = ["type", "id", "name", "size", "etag", "modified_at"]
PAGE = 1000


class _ReauthOnly(RetryStrategy):
    """Retry only a 401 once, after refreshing a refreshable token; vdir.retry does the rest."""

    def should_retry(self, fetch_options: Any, fetch_response: Any, attempt_number: int) -> bool:
        auth = fetch_options.auth
        if fetch_response.status == 401 and attempt_number == 1 and auth is not None \
                and not isinstance(auth, BoxDeveloperTokenAuth):
            auth.refresh_token(network_session=fetch_options.network_session)
            return True
        return False

    def retry_after(self, fetch_options: Any, fetch_response: Any, attempt_number: int) -> float:
        return 0.0


class _Reader(io.RawIOBase):
    """A download stream read in small pieces (the SDK's stream is slow with big reads)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._stream.read(min(len(buffer), 64 * 1024))
        buffer[: len(data)] = data
        return len(data)


def encode_name(name: str) -> str:
    """A key part as a valid Box name (reversible; only what Box refuses, and ``%``, is escaped)."""
    out = "".join(quote(c, safe="") if c in "%\\" or ord(c) < 32 or ord(c) == 127 else c for c in name)
    if out in (".", ".."):
        return out.replace(".", "%2E")
    stripped = out.rstrip(" ")
    return stripped + "%20" * (len(out) - len(stripped))


def decode_name(name: str) -> str:
    return unquote(name)


class BoxBackend(Backend):
    """A Box folder as an object store."""

    scheme = "box"
    create_only_atomic = True

    def __init__(self, name: str, url: str, location: Location | None = None, *, token_file: str | None = None,
                 jwt_config: str | None = None, client_id: str | None = None, client_secret_env: str | None = None,
                 enterprise_id: str | None = None, user_id: str | None = None, base_url: str | None = None,
                 upload_url: str | None = None, oauth_url: str | None = None, chunked_threshold: int = 20 * MiB,
                 timeout: float = 60.0) -> None:
        super().__init__(name, url, location or Location(cloud="box", region="box"))
        parts = urlsplit(url)
        if parts.scheme != "box":
            raise ConfigError(f"bad Box URL {url!r}; expected box://<folder path> or box://id:<folder id>")
        segments = [s for s in (parts.netloc + parts.path).split("/") if s]
        self.root_id = "0"
        if segments and segments[0].startswith("id:"):
            self.root_id = segments.pop(0)[3:]
            if not self.root_id.isdigit():
                raise ConfigError(f"bad Box folder id in {url!r}")
        self._root_path = [encode_name(unquote(s)) for s in segments]
        self.chunked_threshold = chunked_threshold
        auth = self._auth(token_file, jwt_config, client_id, client_secret_env, enterprise_id, user_id)
        urls: dict[str, str] = {}
        if base_url:
            urls["base_url"] = base_url.rstrip("/")
            urls["upload_url"] = (upload_url or base_url.rstrip("/") + "/api").rstrip("/")
            urls["oauth_2_url"] = (oauth_url or base_url.rstrip("/") + "/oauth2").rstrip("/")
        session = NetworkSession(retry_strategy=_ReauthOnly(), base_urls=BaseUrls(**urls),
                                 timeout_config=TimeoutConfig(connection_timeout_ms=int(timeout * 1000),
                                                              read_timeout_ms=int(timeout * 1000)))
        self.client = BoxClient(auth=auth, network_session=session)
        self._folders: dict[str, str] = {}
        self._lock = threading.Lock()

    def _auth(self, token_file: str | None, jwt_config: str | None, client_id: str | None, client_secret_env: str | None,
              enterprise_id: str | None, user_id: str | None) -> Any:
        if token_file:
            return BoxDeveloperTokenAuth(token=Path(token_file).expanduser().read_text().strip())
        if jwt_config:
            return BoxJWTAuth(config=JWTConfig.from_config_file(str(Path(jwt_config).expanduser())))
        if client_id:
            secret = os.environ.get(client_secret_env or "BOX_CLIENT_SECRET")
            if not secret:
                raise ConfigError(f"box backend {self.name!r}: set ${client_secret_env or 'BOX_CLIENT_SECRET'} to the client secret")
            return BoxCCGAuth(config=CCGConfig(client_id, secret, enterprise_id=enterprise_id, user_id=user_id))
        if os.environ.get("BOX_DEVELOPER_TOKEN"):
            return BoxDeveloperTokenAuth(token=os.environ["BOX_DEVELOPER_TOKEN"])
        raise ConfigError(f"box backend {self.name!r}: no credentials; give token_file, jwt_config or client_id "
                          "(with client_secret_env), or set BOX_DEVELOPER_TOKEN")

    # -- errors and retries -------------------------------------------------------------------
    def _translate(self, exc: Exception, what: str, key: str | None = None) -> NoReturn:
        """The one place Box SDK errors become vdir errors."""
        where = f"box backend {self.name!r}: {what}" + (f" {key!r}" if key else "")
        if isinstance(exc, VDirError):
            raise exc
        if isinstance(exc, BoxAPIError):
            info = exc.response_info
            status, code = info.status_code, info.code or ""
            text = f"{status} {code}".strip()
            if status == 507 or code in ("storage_limit_exceeded", "file_size_limit_exceeded_for_account"):
                raise NoSpace(f"{where}: the Box account is full ({text})", path=key) from exc
            if status == 401:
                raise AuthenticationError(f"{where}: Box refused the credentials ({text}); check the token "
                                          "(developer tokens expire after 60 minutes)", path=key) from exc
            if status == 403:
                raise PermissionDenied(f"{where}: forbidden ({text})", path=key) from exc
            if status == 404:
                raise NotFound(f"{where}: not found", path=key) from exc
            if status == 409:
                raise AlreadyExists(f"{where}: an item with that name already exists", path=key) from exc
            if status == 412:
                raise Conflict(f"{where}: changed by someone else (etag mismatch)", path=key) from exc
            if status == 429:
                raise TransientError(f"{where}: Box is throttling requests (429)", path=key) from exc
            if status >= 500:
                raise BackendUnavailable(f"{where}: Box error {text}", path=key) from exc
            if code.startswith("item_name"):
                raise InvalidPath(f"{where}: Box refuses the name ({code})", path=key) from exc
            raise InvalidArgument(f"{where}: Box refused the request ({text})", path=key) from exc
        if isinstance(exc, BoxSDKError):
            if "token" in exc.message.lower():
                raise AuthenticationError(f"{where}: {exc.message}", path=key) from exc
            raise BackendUnavailable(f"{where}: cannot reach Box ({exc.message})", path=key) from exc
        if isinstance(exc, OSError):
            raise BackendUnavailable(f"{where}: cannot reach Box ({exc})", path=key) from exc
        raise exc

    def _call(self, fn: Callable[[], T], what: str, key: str | None = None) -> T:
        def attempt() -> T:
            try:
                return fn()
            except Exception as exc:
                self._translate(exc, what, key)

        return retrying(attempt, what=f"box {what}")

    # -- folders --------------------------------------------------------------------------------
    def _split(self, key: str) -> tuple[builtins.list[str], str]:
        parts = key.split("/")
        if not key or key.startswith("/") or "" in parts:
            raise InvalidArgument(f"box backend {self.name!r}: bad key {key!r}", path=key)
        return self._root_path + [encode_name(p) for p in parts[:-1]], encode_name(parts[-1])

    def _items(self, folder_id: str) -> Iterator[Any]:
        offset = 0
        while True:
            page = self._call(lambda o=offset: self.client.folders.get_folder_items(  # type: ignore[misc]
                folder_id, fields=FIELDS, offset=o, limit=PAGE), "list folder")
            entries = page.entries or []
            yield from entries
            offset += len(entries)
            if not entries or offset >= (page.total_count or 0):
                return

    def _find(self, folder_id: str, name: str, kind: str) -> Any | None:
        return next((e for e in self._items(folder_id) if e.name == name and e.type == kind), None)

    def _folder_id(self, path: builtins.list[str], create: bool) -> str | None:
        """Id of the folder at ``path`` (encoded names below the root id), creating it if asked."""
        cache_key = "/".join(path)
        with self._lock:
            if cache_key in self._folders:
                return self._folders[cache_key]
        parent = self.root_id if not path else self._folder_id(path[:-1], create)
        if parent is None or not path:
            return parent
        found = self._find(parent, path[-1], "folder")
        if found is not None:
            folder_id = str(found.id)
        elif not create:
            return None
        else:
            try:
                made = self._call(lambda: self.client.folders.create_folder(path[-1], CreateFolderParent(id=parent)),
                                  "create folder", "/".join(path))
                folder_id = str(made.id)
            except AlreadyExists as exc:  # created meanwhile by someone else, or a file is in the way
                conflict = self._conflict(exc)
                if conflict.get("type") != "folder":
                    raise NotADirectory(f"box backend {self.name!r}: {decode_name(path[-1])!r} is an object, so nothing "
                                        "can be stored below it (Box has one namespace for files and folders)") from exc
                folder_id = str(conflict["id"])
        with self._lock:
            self._folders[cache_key] = folder_id
        return folder_id

    def _forget(self, path: builtins.list[str]) -> None:
        prefix = "/".join(path)
        with self._lock:
            for cached in [k for k in self._folders if k == prefix or k.startswith(prefix + "/") or not prefix]:
                del self._folders[cached]

    @staticmethod
    def _conflict(exc: BaseException) -> dict[str, Any]:
        """The item a 409 ``item_name_in_use`` names (``context_info.conflicts``), or ``{}``."""
        cause = exc.__cause__
        context = getattr(getattr(cause, "response_info", None), "context_info", None) or {}
        conflicts = context.get("conflicts") if isinstance(context, dict) else None
        if isinstance(conflicts, list):
            conflicts = conflicts[0] if conflicts else None
        return conflicts if isinstance(conflicts, dict) and "id" in conflicts else {}

    def _locate(self, key: str) -> Any | None:
        """The file entry at ``key`` or None; a stale cached folder id is dropped and resolved again."""
        folders, leaf = self._split(key)
        for attempt in (1, 2):
            folder_id = self._folder_id(folders, create=False)
            if folder_id is None:
                return None
            try:
                return self._find(folder_id, leaf, "file")
            except NotFound:
                if attempt == 2:
                    return None
                self._forget(folders)
        return None

    def _meta(self, key: str, entry: Any) -> ObjectMeta:
        stamp = getattr(getattr(entry, "modified_at", None), "timestamp", None)
        return ObjectMeta(key=key, size=int(entry.size or 0), etag=f"{entry.id}:{entry.etag}",
                          mtime=stamp() if callable(stamp) else None)

    # -- reads ----------------------------------------------------------------------------------
    def head(self, key: str) -> ObjectMeta:
        entry = self._locate(key)
        if entry is None:
            raise NotFound(f"box backend {self.name!r}: {key!r} not found", path=key)
        return self._meta(key, entry)

    def get(self, key: str, start: int = 0, end: int | None = None) -> IO[bytes]:
        meta = self.head(key)
        end = meta.size if end is None else min(end, meta.size)
        if start >= end:
            return io.BytesIO(b"")
        file_id = (meta.etag or "").split(":")[0]
        ranged = None if (start, end) == (0, meta.size) else f"bytes={start}-{end - 1}"
        stream = self._call(lambda: self.client.downloads.download_file(file_id, range=ranged), "read", key)
        return io.BufferedReader(_Reader(stream), CHUNK)

    def list(self, prefix: str = "") -> Iterator[ObjectMeta]:
        base = prefix.rsplit("/", 1)[0] + "/" if "/" in prefix else ""
        folder_id = self._folder_id(self._root_path + [encode_name(p) for p in base.split("/") if p], create=False)
        if folder_id is not None:
            yield from self._walk(folder_id, base, prefix)

    def _walk(self, folder_id: str, base: str, prefix: str) -> Iterator[ObjectMeta]:
        children = []
        for entry in self._items(folder_id):
            name = decode_name(entry.name)
            children.append((name + "/" if entry.type == "folder" else name, entry))
        for sort_name, entry in sorted(children, key=lambda c: c[0]):
            path = base + sort_name
            if entry.type == "file" and path.startswith(prefix):
                yield self._meta(path, entry)
            elif entry.type == "folder" and (path.startswith(prefix) or prefix.startswith(path)):
                with self._lock:
                    self._folders["/".join(self._root_path + [encode_name(p) for p in path.split("/") if p])] = str(entry.id)
                yield from self._walk(str(entry.id), path, prefix)

    def list_with_delimiter(self, prefix: str = "") -> ListResult:
        if prefix and not prefix.endswith("/"):
            raise InvalidArgument(f"box backend {self.name!r}: folder prefix must end with '/': {prefix!r}")
        folder_id = self._folder_id(self._root_path + [encode_name(p) for p in prefix.split("/") if p], create=False)
        objects: builtins.list[ObjectMeta] = []
        prefixes: builtins.list[str] = []
        for entry in self._items(folder_id) if folder_id is not None else ():
            name = prefix + decode_name(entry.name)
            if entry.type == "file":
                objects.append(self._meta(name, entry))
            elif entry.type == "folder":
                prefixes.append(name + "/")
        return ListResult(sorted(objects, key=lambda m: m.key), sorted(prefixes))

    # -- writes ---------------------------------------------------------------------------------
    def put(self, key: str, src: IO[bytes], mode: PutMode = PutMode("overwrite"), size: int | None = None) -> ObjectMeta:
        folders, leaf = self._split(key)
        spool: IO[bytes] | None = None
        try:
            if size is None or size < self.chunked_threshold:
                spool = tempfile.SpooledTemporaryFile(max_size=CHUNK)
                shutil.copyfileobj(src, spool, CHUNK)
                size = spool.tell()
                spool.seek(0)
                src = spool
            origin = src.tell() if src.seekable() else 0
            entry = self._locate(key)
            if mode.kind == "create" and entry is not None:
                raise AlreadyExists(f"box backend {self.name!r}: {key!r} already exists", path=key)
            if mode.kind == "update":
                file_id, _, etag = (mode.etag or "").partition(":")
                if entry is None or str(entry.id) != file_id:
                    raise Conflict(f"box backend {self.name!r}: {key!r} is not at etag {mode.etag}", path=key)
                try:
                    return self._upload(key, src, size, None, leaf, file_id, etag)
                except NotFound as exc:
                    raise Conflict(f"box backend {self.name!r}: {key!r} was deleted meanwhile", path=key) from exc
            if entry is not None:  # overwrite an existing file: a new version
                try:
                    return self._upload(key, src, size, None, leaf, str(entry.id), None)
                except NotFound:
                    self._rewind(src, origin)  # deleted meanwhile: create it below
            return self._create(key, src, size, folders, leaf, mode, origin)
        finally:
            if spool is not None:
                spool.close()

    def _create(self, key: str, src: IO[bytes], size: int, folders: builtins.list[str], leaf: str, mode: PutMode,
                origin: int) -> ObjectMeta:
        for attempt in (1, 2):
            folder_id = self._folder_id(folders, create=True) or ""
            try:
                return self._upload(key, src, size, folder_id, leaf, None, None)
            except NotFound:  # the folder went away (emptied and removed): resolve it again
                if attempt == 2:
                    raise
                self._forget(folders)
                self._rewind(src, origin)
            except AlreadyExists as exc:
                conflict = self._conflict(exc)
                if conflict.get("type") == "folder":
                    raise IsADirectory(f"box backend {self.name!r}: {key!r} is a folder of other objects", path=key) from exc
                if mode.kind == "create" or not conflict:
                    raise AlreadyExists(f"box backend {self.name!r}: {key!r} already exists", path=key) from exc
                self._rewind(src, origin)
                return self._upload(key, src, size, None, leaf, str(conflict["id"]), None)
        raise AssertionError("unreachable")

    @staticmethod
    def _rewind(src: IO[bytes], origin: int) -> None:
        if not src.seekable():
            raise TransientError("cannot retry the upload: the source stream is not seekable")
        src.seek(origin)

    def _upload(self, key: str, src: IO[bytes], size: int, folder_id: str | None, name: str,
                file_id: str | None, if_match: str | None) -> ObjectMeta:
        """One upload: a new file in ``folder_id`` or a new version of ``file_id``."""
        if size >= self.chunked_threshold:
            entry = self._upload_chunked(key, src, size, folder_id, name, file_id, if_match)
        else:
            start = src.tell()

            def send() -> Any:
                src.seek(start)
                if file_id is None:
                    attrs = UploadFileAttributes(name, UploadFileAttributesParentField(id=folder_id or ""))
                    return self.client.uploads.upload_file(attrs, cast(Any, src), file_file_name=name)
                return self.client.uploads.upload_file_version(file_id, UploadFileVersionAttributes(name), cast(Any, src),
                                                               file_file_name=name, if_match=if_match)

            entry = self._call(send, "write", key).entries[0]
        return self._meta(key, entry)

    def _upload_chunked(self, key: str, src: IO[bytes], size: int, folder_id: str | None, name: str,
                        file_id: str | None, if_match: str | None) -> Any:
        """Upload session: parts of ``part_size`` streamed from ``src``, each with its SHA-1 digest."""
        uploads = self.client.chunked_uploads
        if file_id is None:
            session = self._call(lambda: uploads.create_file_upload_session(folder_id or "", size, name), "start upload", key)
        else:
            session = self._call(lambda: uploads.create_file_upload_session_for_existing_file(file_id, size),
                                 "start upload", key)
        session_id, part_size = str(session.id), int(session.part_size or 0)
        if part_size <= 0:
            raise BackendUnavailable(f"box backend {self.name!r}: Box returned an upload session without a part size")
        whole = hashlib.sha1()
        parts: builtins.list[UploadPart] = []
        try:
            offset = 0
            while offset < size:
                chunk = src.read(min(part_size, size - offset))
                while len(chunk) < min(part_size, size - offset):
                    more = src.read(min(part_size, size - offset) - len(chunk))
                    if not more:
                        raise InvalidArgument(f"box backend {self.name!r}: {key!r}: source ended before {size} bytes")
                    chunk += more
                whole.update(chunk)
                digest = "sha=" + base64.b64encode(hashlib.sha1(chunk).digest()).decode()
                content_range = f"bytes {offset}-{offset + len(chunk) - 1}/{size}"
                uploaded = self._call(lambda c=chunk, r=content_range, d=digest: uploads.upload_file_part(  # type: ignore[misc]
                    session_id, io.BytesIO(c), d, r), "upload part", key)
                if uploaded.part is None:
                    raise BackendUnavailable(f"box backend {self.name!r}: Box did not acknowledge a part of {key!r}")
                parts.append(uploaded.part)
                offset += len(chunk)
            digest = "sha=" + base64.b64encode(whole.digest()).decode()
            files = self._call(lambda: uploads.create_file_upload_session_commit(session_id, parts, digest, if_match=if_match),
                               "commit upload", key)
            if files is None or not files.entries:
                raise TransientError(f"box backend {self.name!r}: {key!r}: Box is still processing the upload")
            return files.entries[0]
        except BaseException:
            try:
                uploads.delete_file_upload_session_by_id(session_id)
            except Exception:  # noqa: S110 - best effort; the session expires anyway
                pass
            raise

    def delete(self, key: str) -> None:
        entry = self._locate(key)
        if entry is None:
            return
        try:
            self._call(lambda: self.client.files.delete_file_by_id(str(entry.id)), "delete", key)
        except NotFound:
            return
        self._prune(self._split(key)[0])

    def _prune(self, folders: builtins.list[str]) -> None:
        """Remove folders emptied by a delete, deepest first (Box refuses non-empty ones)."""
        while len(folders) > len(self._root_path):
            folder_id = self._folder_id(folders, create=False)
            if folder_id is None:
                return
            try:
                self._call(lambda f=folder_id: self.client.folders.delete_folder_by_id(f, recursive=False),  # type: ignore[misc]
                           "remove empty folder")
            except VDirError:
                return  # not empty (or gone): stop
            self._forget(folders)
            folders = folders[:-1]

    def close(self) -> None:
        session = getattr(self.client.network_session.network_client, "requests_session", None)
        if session is not None:
            session.close()
