"""The HTTP side of remote mode: one pooled ``httpx.Client`` per :class:`~vdir.remote.RemoteVDir`,
retries, and the one function that turns a server's error answer back into the
:class:`~vdir.errors.VDirError` the core raised on the server (:func:`error_from`).

Retries: a request that never reached the server (connection refused, DNS, connect timeout)
is retried whatever its method; a 503 (``TransientError`` on the server) or a connection that
broke after the request was sent is retried only for idempotent calls (GET, HEAD, and the
calls the client marks idempotent: an upload chunk at a given offset, a session's status).
Backoff doubles from 0.2 s, at most ``attempts`` tries in all.
"""

from __future__ import annotations

import errno as errno_mod
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from vdir import __version__
from vdir.errors import (
    AlreadyExists,
    AuthenticationError,
    BackendUnavailable,
    Conflict,
    DirectoryNotEmpty,
    IntegrityError,
    InvalidArgument,
    IsADirectory,
    MissingDependency,
    NameTooLong,
    NoSpace,
    NotADirectory,
    NotFound,
    NotPermitted,
    NotSupported,
    PermissionDenied,
    ReadOnly,
    Timeout,
    TransientError,
    VDirError,
)

log = logging.getLogger("vdir.remote")

BY_ERRNO: dict[str, type[VDirError]] = {
    "ENOENT": NotFound,
    "EEXIST": AlreadyExists,
    "ENOTDIR": NotADirectory,
    "EISDIR": IsADirectory,
    "ENOTEMPTY": DirectoryNotEmpty,
    "ENAMETOOLONG": NameTooLong,
    "EINVAL": InvalidArgument,
    "ESTALE": Conflict,
    "EACCES": PermissionDenied,
    "EPERM": NotPermitted,
    "EROFS": ReadOnly,
    "EOPNOTSUPP": NotSupported,
    "ENOTSUP": NotSupported,
    "ENOSPC": NoSpace,
    "EDQUOT": NoSpace,
    "EAGAIN": TransientError,
    "EHOSTDOWN": BackendUnavailable,
    "ETIMEDOUT": Timeout,
    "ENOSYS": MissingDependency,
}
"""errno name in the error body → the class the core raises with that errno."""
BY_STATUS: dict[int, type[VDirError]] = {
    401: AuthenticationError, 403: PermissionDenied, 404: NotFound, 409: Conflict, 400: InvalidArgument,
    416: InvalidArgument, 502: IntegrityError, 503: TransientError, 504: Timeout, 507: NoSpace,
}
"""Status → class, for an answer without an errno (a proxy's page) and where the status says more."""
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})


def error_from(response: httpx.Response) -> VDirError:
    """The :class:`VDirError` a server's error answer stands for: its class from the ``errno``
    of the JSON body (the status where the body has none, or where the status is more precise:
    401 is an authentication failure, 502 a content that failed its hash check), its message the
    body's ``error`` line — the same line the core gives locally."""
    status = response.status_code
    code, message = "", ""
    try:
        body = response.json()
        if isinstance(body, dict):
            code = str(body.get("errno") or "")
            detail = body.get("error") if "error" in body else body.get("detail")
            message = detail if isinstance(detail, str) else ""
    except (ValueError, UnicodeDecodeError, httpx.ResponseNotRead):
        pass
    if not message:
        reason = response.reason_phrase or "error"
        message = f"server answered {status} {reason}"
    message = message.splitlines()[0] if message else message
    if status == 401:
        return AuthenticationError(message)
    if status == 502:
        return IntegrityError(message)
    cls = BY_ERRNO.get(code) or BY_STATUS.get(status)
    if cls is None:
        cls = TransientError if status >= 500 and status != 500 else VDirError
    err = cls(message)
    if cls is VDirError and code in errno_mod.__dict__:
        err.errno = getattr(errno_mod, code)
    return err


class HTTP:
    """Requests to one vdir server with one token, through a pool of kept-alive connections."""

    def __init__(self, url: str, token: str | None, *, timeout: float = 60.0, attempts: int = 4,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self.attempts = max(1, attempts)
        headers = {"User-Agent": f"vdir/{__version__}"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.client = httpx.Client(
            base_url=self.url, headers=headers, timeout=httpx.Timeout(timeout, connect=10.0),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32), follow_redirects=False,
            transport=transport,
        )

    def close(self) -> None:
        self.client.close()

    def _retrying(self, method: str, idempotent: bool | None, send: Callable[[], httpx.Response]) -> httpx.Response:
        safe = method in IDEMPOTENT if idempotent is None else idempotent
        delay = 0.2
        for attempt in range(1, self.attempts + 1):
            last = attempt == self.attempts
            try:
                response = send()
            except httpx.ConnectError as exc:  # never reached the server: any method may go again
                if last:
                    raise BackendUnavailable(f"cannot reach the vdir server at {self.url}: {exc}") from exc
                log.warning("cannot reach %s (%s), retrying (%d/%d)", self.url, exc, attempt + 1, self.attempts)
            except httpx.TimeoutException as exc:
                if last or not safe:
                    raise Timeout(f"the vdir server at {self.url} did not answer in time ({type(exc).__name__})") from exc
                log.warning("no answer from %s, retrying (%d/%d)", self.url, attempt + 1, self.attempts)
            except httpx.TransportError as exc:
                if last or not safe:
                    raise BackendUnavailable(f"connection to the vdir server at {self.url} failed: {exc}") from exc
                log.warning("connection to %s failed (%s), retrying (%d/%d)", self.url, exc, attempt + 1, self.attempts)
            else:
                if response.status_code == 503 and safe and not last:
                    response.close()
                    log.warning("%s is busy (503), retrying (%d/%d)", self.url, attempt + 1, self.attempts)
                else:
                    return response
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
        raise AssertionError("unreachable")

    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None, json: Any = None,
                content: Any = None, headers: dict[str, str] | None = None, idempotent: bool | None = None,
                ok: tuple[int, ...] = ()) -> httpx.Response:
        """Send and read the whole answer; a status >= 400 not in ``ok`` raises its VDirError."""
        clean = _params(params)
        response = self._retrying(method, idempotent, lambda: self.client.request(
            method, path, params=clean, json=json, content=content, headers=headers))
        if response.status_code >= 400 and response.status_code not in ok:
            raise self._error(response)
        return response

    def _error(self, response: httpx.Response) -> VDirError:
        err = error_from(response)
        if isinstance(err, AuthenticationError):  # say what to do about it
            return AuthenticationError(f"{err} (the server {self.url} refused the token; log in again with "
                                       f"'vdir login {self.url}')")
        return err

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def stream(self, method: str, path: str, *, params: dict[str, Any] | None = None,
               headers: dict[str, str] | None = None, ok: tuple[int, ...] = ()) -> httpx.Response:
        """Send; the answer's body is left to read (``iter_bytes``), the caller closes it."""
        clean = _params(params)

        def send() -> httpx.Response:
            request = self.client.build_request(method, path, params=clean, headers=headers)
            return self.client.send(request, stream=True)

        response = self._retrying(method, None, send)
        if response.status_code >= 400 and response.status_code not in ok:
            response.read()
            response.close()
            raise self._error(response)
        return response


def _params(params: dict[str, Any] | None) -> dict[str, Any] | None:
    """Drop the None values; booleans as ``true``/``false``."""
    if params is None:
        return None
    return {k: ("true" if v else "false") if isinstance(v, bool) else v for k, v in params.items() if v is not None}


class ResponseReader:
    """A raw, readable stream over a streamed answer's body (``readinto`` for ``io.BufferedReader``)."""

    def __init__(self, response: httpx.Response, chunk: int = 1024 * 1024) -> None:
        self.response = response
        self._chunks: Iterator[bytes] = response.iter_bytes(chunk)
        self._buf = bytearray()
        self.closed = False

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            parts = [bytes(self._buf), *self._drain()]
            self._buf = bytearray()
            return b"".join(parts)
        if not self._buf:  # the common case: hand a whole chunk on without copying it
            more = self._next()
            if more is None or len(more) <= n:
                return more or b""
            self._buf += more
        while len(self._buf) < n:
            more = self._next()
            if more is None:
                break
            self._buf += more
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def _next(self) -> bytes | None:
        try:
            return next(self._chunks)
        except StopIteration:
            return None
        except httpx.TransportError as exc:
            raise BackendUnavailable(f"the download from the vdir server broke off: {exc}") from exc

    def _drain(self) -> Iterator[bytes]:
        try:
            yield from self._chunks
        except httpx.TransportError as exc:
            raise BackendUnavailable(f"the download from the vdir server broke off: {exc}") from exc

    def readinto(self, buf: bytearray | memoryview) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.response.close()

    def __enter__(self) -> ResponseReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
