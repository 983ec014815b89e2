"""GitHub repository backend (``github://owner/repo[@branch]/prefix``), via PyGithub.

Keys are paths under ``prefix`` on ``branch`` (default: the repository's default branch).
Every write is one commit (``vdir: put <key>`` / ``vdir: delete <key>``); the etag is the git
blob sha, so identical bytes have identical etags.

* Small objects (≤ ``contents_limit``, 1 MiB by default) go through the contents API, whose
  ``sha`` argument is the compare-and-set: ``update(etag)`` sends the etag and a mismatch is a
  :class:`~vdir.errors.Conflict`; ``CREATE`` sends none and "exists" is ``AlreadyExists``.
* Larger objects go through the git data API (blob, tree on top of the branch head, commit,
  ref update without ``force``): a ref that moved meanwhile makes the update fail as not a
  fast-forward, and the write is re-planned on the new head, so nobody's commit is clobbered.
  Reads of them use the blobs API (the contents API only returns bodies up to 1 MB).
* GitHub caps files at 100 MB (``max_size``) and its APIs take whole base64 bodies, so an object
  is held in memory while it is sent or fetched; ranged reads fetch the object and slice it.
  That is acceptable only because of that cap: use another backend for big data.
* ``list`` reads the branch's recursive git tree (one request), sorted by key.
* Writes from one process are serialised by a lock (commits on one branch are sequential);
  other writers are handled by the server-side checks above, retried a bounded number of times.
* PyGithub's connection object is not thread-safe (PyGithub PR #2052), so each thread gets its
  own client.  PyGithub's own retry (which can sleep until a rate limit resets) is turned off;
  transient errors are retried with :func:`vdir.retry.retrying`, and an exhausted rate limit is
  reported with the time it resets.

Options: ``token_file`` (else env ``GITHUB_TOKEN``; none means anonymous, read-only),
``base_url`` (API root, for tests), ``contents_limit``, ``max_size``, ``seconds_between_writes``
(PyGithub's write spacing, default 1 s as GitHub recommends; tests set 0), ``timeout``.
"""

from __future__ import annotations

import base64
import builtins
import hashlib
import io
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, NoReturn, TypeVar
from urllib.parse import urlsplit

import github
from github import Auth, Github, GithubException, InputGitTreeElement

from vdir.backends.base import Backend, ListResult, Location, ObjectMeta, PutMode
from vdir.errors import (
    AlreadyExists,
    AuthenticationError,
    BackendUnavailable,
    ConfigError,
    Conflict,
    InvalidArgument,
    IsADirectory,
    NotADirectory,
    NotFound,
    NotSupported,
    PermissionDenied,
    TransientError,
    VDirError,
)
from vdir.retry import retrying

log = logging.getLogger("vdir.backends.github")
T = TypeVar("T")

MiB = 1024 * 1024
CAS_ATTEMPTS = 8
"""How often a write is re-planned after another writer moved the branch."""


class GitHubBackend(Backend):
    """One branch of one repository (or a folder in it) as an object store."""

    scheme = "github"
    create_only_atomic = True
    """``CREATE`` is decided by GitHub: the contents API refuses to create a file that exists, and
    a git-data write updates the branch only as a fast-forward of the head it checked."""

    def __init__(self, name: str, url: str, location: Location | None = None, *, token_file: str | None = None,
                 base_url: str | None = None, contents_limit: int = MiB, max_size: int = 100 * MiB,
                 seconds_between_writes: float | None = 1.0, timeout: int = 60) -> None:
        super().__init__(name, url, location or Location(cloud="github", region="github"))
        parts = urlsplit(url)
        path = [p for p in parts.path.split("/") if p]
        if parts.scheme != "github" or not parts.netloc or not path:
            raise ConfigError(f"bad GitHub URL {url!r}; expected github://owner/repo[@branch]/prefix")
        repo, _, branch = path[0].partition("@")
        self.full_name = f"{parts.netloc}/{repo}"
        self._branch = branch or None
        self.prefix = "".join(p + "/" for p in path[1:])
        self.contents_limit = contents_limit
        self.max_size = max_size
        token = Path(token_file).expanduser().read_text().strip() if token_file else os.environ.get("GITHUB_TOKEN")
        self._auth = Auth.Token(token) if token else None
        self._client_args: dict[str, Any] = {"timeout": timeout, "retry": None, "seconds_between_writes": seconds_between_writes,
                                             "seconds_between_requests": None}
        if base_url:
            self._client_args["base_url"] = base_url.rstrip("/")
        self._local = threading.local()
        self._write_lock = threading.Lock()

    # -- plumbing ---------------------------------------------------------------------------
    def _repo(self) -> Any:
        repo = getattr(self._local, "repo", None)
        if repo is None:
            client = Github(auth=self._auth, lazy=True, **self._client_args)
            repo = client.get_repo(self.full_name)
            self._local.client, self._local.repo = client, repo
        return repo

    @property
    def branch(self) -> str:
        if self._branch is None:
            self._branch = str(self._call(lambda: self._repo().default_branch, "read repository"))
        return self._branch

    def _translate(self, exc: Exception, what: str, key: str | None = None) -> NoReturn:
        """The one place PyGithub/HTTP errors become vdir errors."""
        where = f"github backend {self.name!r} ({self.full_name}): {what}" + (f" {key!r}" if key else "")
        if isinstance(exc, VDirError):
            raise exc
        if isinstance(exc, GithubException):
            status, data, headers = exc.status, exc.data, {k.lower(): v for k, v in (exc.headers or {}).items()}
            message = data.get("message", "") if isinstance(data, dict) else str(data or "")
            if status in (403, 429) and (headers.get("x-ratelimit-remaining") == "0" or "rate limit" in message.lower()):
                reset = headers.get("x-ratelimit-reset")
                when = ""
                if reset and reset.isdigit():
                    stamp = time.strftime("%H:%M:%S UTC", time.gmtime(int(reset)))
                    when = f"; it resets at {stamp} (in {max(0, int(reset) - int(time.time()))} s)"
                elif headers.get("retry-after"):
                    when = f"; retry after {headers['retry-after']} s"
                raise TransientError(f"{where}: GitHub API rate limit exceeded{when}", path=key) from exc
            if status == 401:
                raise AuthenticationError(f"{where}: GitHub refused the token ({message or 'Bad credentials'}); "
                                          "check GITHUB_TOKEN or the token_file option", path=key) from exc
            if status == 403:
                raise PermissionDenied(f"{where}: forbidden ({message})", path=key) from exc
            if status == 404:
                raise NotFound(f"{where}: not found", path=key) from exc
            if status == 409 or (status == 422 and "fast forward" in message.lower()):
                raise Conflict(f"{where}: changed by someone else ({message})", path=key) from exc
            if status == 422 and "sha" in message.lower() and "supplied" in message.lower():
                raise AlreadyExists(f"{where}: already exists", path=key) from exc
            if status == 422:
                raise InvalidArgument(f"{where}: rejected by GitHub ({message})", path=key) from exc
            if status >= 500:
                raise BackendUnavailable(f"{where}: GitHub error {status} ({message})", path=key) from exc
            raise VDirError(f"{where}: GitHub error {status} ({message})", path=key) from exc
        if isinstance(exc, (ConnectionError, TimeoutError, OSError)) or type(exc).__module__.startswith(("requests", "urllib3")):
            raise BackendUnavailable(f"{where}: cannot reach GitHub ({exc})", path=key) from exc
        raise exc

    def _call(self, fn: Callable[[], T], what: str, key: str | None = None) -> T:
        def attempt() -> T:
            try:
                return fn()
            except Exception as exc:
                self._translate(exc, what, key)

        return retrying(attempt, what=f"github {what}")

    def _path(self, key: str) -> str:
        if not key or key.startswith("/") or key.endswith("/"):
            raise InvalidArgument(f"github backend {self.name!r}: bad key {key!r}", path=key)
        return self.prefix + key

    # -- reads ------------------------------------------------------------------------------
    def _content(self, key: str) -> Any:
        found = self._call(lambda: self._repo().get_contents(self._path(key), ref=self.branch), "read", key)
        if isinstance(found, list) or getattr(found, "type", "file") != "file":
            raise NotFound(f"github backend {self.name!r}: {key!r} is a folder, not an object", path=key)
        return found

    def head(self, key: str) -> ObjectMeta:
        found = self._content(key)
        return ObjectMeta(key=key, size=int(found.size), etag=str(found.sha))

    def get(self, key: str, start: int = 0, end: int | None = None) -> IO[bytes]:
        """Fetches the whole object (at most ``max_size``) and returns the slice ``[start, end)``."""
        found = self._content(key)
        if found.encoding == "base64":
            data = found.decoded_content
        else:  # over the contents API's 1 MB body limit: the blobs API has it
            blob = self._call(lambda: self._repo().get_git_blob(found.sha), "read blob", key)
            data = base64.b64decode(blob.content)
        return io.BytesIO(data[start:end])

    def list(self, prefix: str = "") -> Iterator[ObjectMeta]:
        tree = self._tree()
        for path, size, sha in tree:
            if path.startswith(self.prefix) and path[len(self.prefix):].startswith(prefix):
                yield ObjectMeta(key=path[len(self.prefix):], size=size, etag=sha)

    def _tree(self) -> builtins.list[tuple[str, int, str]]:
        def fetch() -> builtins.list[tuple[str, int, str]]:
            try:
                tree = self._repo().get_git_tree(self.branch, recursive=True)
            except GithubException as exc:
                if exc.status in (404, 409):  # no such branch yet / empty repository
                    return []
                raise
            if tree.raw_data.get("truncated"):
                raise NotSupported(f"github backend {self.name!r}: the repository tree is too big for one listing")
            return sorted((e.path, int(e.size or 0), e.sha) for e in tree.tree if e.type == "blob")

        return self._call(fetch, "list")

    def list_with_delimiter(self, prefix: str = "") -> ListResult:
        if prefix and not prefix.endswith("/"):
            raise InvalidArgument(f"github backend {self.name!r}: folder prefix must end with '/': {prefix!r}")
        objects: builtins.list[ObjectMeta] = []
        prefixes: builtins.list[str] = []
        for meta in self.list(prefix):
            rest = meta.key[len(prefix):]
            if "/" in rest:
                sub = prefix + rest.split("/", 1)[0] + "/"
                if not prefixes or prefixes[-1] != sub:
                    prefixes.append(sub)
            else:
                objects.append(meta)
        return ListResult(objects, sorted(set(prefixes)))

    # -- writes -----------------------------------------------------------------------------
    def _current_sha(self, key: str) -> str | None:
        try:
            return self.head(key).etag
        except NotFound:
            return None

    def put(self, key: str, src: IO[bytes], mode: PutMode = PutMode("overwrite"), size: int | None = None) -> ObjectMeta:
        path = self._path(key)
        if size is not None and size > self.max_size:
            raise NotSupported(f"github backend {self.name!r}: {key!r} is {size} bytes; GitHub files are limited to {self.max_size}")
        data = _read_up_to(src, self.max_size + 1)
        if len(data) > self.max_size:
            raise NotSupported(f"github backend {self.name!r}: {key!r} is over {self.max_size} bytes, GitHub's file size limit")
        sha = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        message = f"vdir: put {key}"
        with self._write_lock:
            for _ in range(CAS_ATTEMPTS):
                current = self._current_sha(key)
                if mode.kind == "create" and current is not None:
                    raise AlreadyExists(f"github backend {self.name!r}: {key!r} already exists", path=key)
                if mode.kind == "update" and current != mode.etag:
                    raise Conflict(f"github backend {self.name!r}: {key!r} is not at etag {mode.etag}", path=key)
                try:
                    if len(data) <= self.contents_limit:
                        self._put_contents(path, key, data, message, current)
                    else:
                        if current is None:
                            self._check_place(key)
                        self._put_git(path, key, data, message, current)
                except InvalidArgument:
                    self._check_place(key)
                    raise
                except (Conflict, AlreadyExists):
                    continue  # someone else moved the file or the branch: re-check and re-plan on the new head
                return ObjectMeta(key=key, size=len(data), etag=sha)
        raise Conflict(f"github backend {self.name!r}: {key!r}: the branch kept moving; gave up after {CAS_ATTEMPTS} tries", path=key)

    def _check_place(self, key: str) -> None:
        """Git keeps files and folders in one namespace: 'a' and 'a/b' cannot both be objects."""
        paths = {path for path, _, _ in self._tree()}
        parts = self._path(key).split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in paths:
                raise NotADirectory(f"github backend {self.name!r}: {'/'.join(parts[:i])[len(self.prefix):]!r} is an object, "
                                    f"so {key!r} cannot be stored below it", path=key)
        if any(path.startswith(self._path(key) + "/") for path in paths):
            raise IsADirectory(f"github backend {self.name!r}: {key!r} is a folder of other objects", path=key)

    def _put_contents(self, path: str, key: str, data: bytes, message: str, current: str | None) -> None:
        repo = self._repo()
        if current is None:
            self._call(lambda: repo.create_file(path, message, data, branch=self.branch), "put", key)
        else:
            self._call(lambda: repo.update_file(path, message, data, current, branch=self.branch), "put", key)

    def _put_git(self, path: str, key: str, data: bytes, message: str, current: str | None) -> None:
        """Blob, tree, commit, then a non-forced ref update: fails (Conflict) if the branch moved."""
        repo = self._repo()
        blob = self._call(lambda: repo.create_git_blob(base64.b64encode(data).decode(), "base64"), "upload blob", key)
        self._commit_tree(key, [InputGitTreeElement(path, "100644", "blob", sha=blob.sha)], message, current)

    def _commit_tree(self, key: str, elements: builtins.list[Any], message: str, expected: str | None) -> None:
        repo = self._repo()
        ref = self._call(lambda: repo.get_git_ref(f"heads/{self.branch}"), "read branch", key)
        head = self._call(lambda: repo.get_git_commit(ref.object.sha), "read branch", key)
        # the condition was checked on an earlier head; if the branch moved since, re-plan
        if self._current_sha_at(key, head.sha) != expected:
            raise Conflict(f"github backend {self.name!r}: {key!r} changed meanwhile", path=key)
        tree = self._call(lambda: repo.create_git_tree(elements, base_tree=head.tree), "write tree", key)
        commit = self._call(lambda: repo.create_git_commit(message, tree, [head]), "commit", key)
        self._call(lambda: ref.edit(commit.sha, force=False), "update branch", key)

    def _current_sha_at(self, key: str, commit: str) -> str | None:
        try:
            found = self._call(lambda: self._repo().get_contents(self._path(key), ref=commit), "read", key)
        except NotFound:
            return None
        return None if isinstance(found, list) else str(found.sha)

    def delete(self, key: str) -> None:
        path = self._path(key)
        with self._write_lock:
            for _ in range(CAS_ATTEMPTS):
                current = self._current_sha(key)
                if current is None:
                    return
                try:
                    self._call(lambda sha=current: self._repo().delete_file(  # type: ignore[misc]
                        path, f"vdir: delete {key}", sha, branch=self.branch), "delete", key)
                    return
                except NotFound:
                    return
                except Conflict:
                    continue
        raise Conflict(f"github backend {self.name!r}: {key!r}: the branch kept moving; gave up deleting", path=key)

    def close(self) -> None:
        client = getattr(self._local, "client", None)
        if client is not None:
            client.close()
            self._local.client = self._local.repo = None


__all__ = ["GitHubBackend", "github"]


def _read_up_to(src: IO[bytes], limit: int) -> bytes:
    """Up to ``limit`` bytes of ``src``, reading until it ends (a raw stream's ``read(n)`` may
    return fewer bytes than are left: one short read must not store a truncated file)."""
    parts: list[bytes] = []
    got = 0
    while got < limit:
        chunk = src.read(min(limit - got, 8 * 1024 * 1024))
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)
