"""The one mapping from a vdir error to an HTTP response: status, and the JSON body
``{"error": "<one line>", "errno": "ENOENT"}``.

The remote client (:mod:`vdir.remote`) maps the errno back to the same :class:`VDirError`
class, so a caller sees one error tree whether it talks to the core or to a server."""

from __future__ import annotations

import errno as errno_mod
import logging

from vdir.errors import (
    AlreadyExists,
    AuthenticationError,
    BackendUnavailable,
    CatalogError,
    ConfigError,
    Conflict,
    DirectoryNotEmpty,
    IntegrityError,
    InvalidArgument,
    InvalidPath,
    IsADirectory,
    MissingDependency,
    NoSpace,
    NotADirectory,
    NotFound,
    NotPermitted,
    NotSupported,
    PermissionDenied,
    ReadOnly,
    TransientError,
    VDirError,
)

log = logging.getLogger("vdir.server")

# most specific first: the first class an error is an instance of decides
STATUS: list[tuple[type[VDirError], int]] = [
    (AuthenticationError, 401),
    (NotFound, 404),
    (AlreadyExists, 409),
    (DirectoryNotEmpty, 409),
    (Conflict, 409),
    (NotADirectory, 409),
    (IsADirectory, 400),
    (InvalidPath, 400),
    (InvalidArgument, 400),
    (PermissionDenied, 403),
    (NotPermitted, 403),
    (ReadOnly, 403),
    (NotSupported, 409),
    (NoSpace, 507),
    (IntegrityError, 502),
    (BackendUnavailable, 503),
    (TransientError, 503),
    (MissingDependency, 501),
    (ConfigError, 500),
    (CatalogError, 500),
]


def status_of(exc: BaseException) -> int:
    """The HTTP status for ``exc`` (500 for anything that is not a known vdir error)."""
    for cls, status in STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def errno_name(exc: BaseException) -> str:
    code = exc.errno_code if isinstance(exc, VDirError) else getattr(exc, "errno", None) or errno_mod.EIO
    return errno_mod.errorcode.get(code, "EIO")


def error_body(exc: BaseException) -> dict[str, str]:
    """The JSON body: a vdir error's own one-line message; anything else is reported without
    its details (they stay in the server's log)."""
    if isinstance(exc, VDirError):
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    else:
        log.error("unexpected error in a request", exc_info=exc)
        message = f"internal error ({type(exc).__name__}); see the server's log"
    return {"error": message, "errno": errno_name(exc)}
