"""The one error tree of vdir.

Every error vdir raises is a :class:`VDirError`, and every ``VDirError`` is an :class:`OSError`
with a real ``errno``, so the FUSE layer (and anything else that speaks errno) maps errors in one
function, :func:`to_errno`.  Whether an operation may be retried is a property of the error
(``exc.retryable``), so the placement daemon needs no knowledge of backends.

::

    OSError
     └── VDirError (EIO)                         base; .retryable False
          ├── NotFound (ENOENT)                 also FileNotFoundError
          ├── AlreadyExists (EEXIST)            also FileExistsError
          ├── NotADirectory (ENOTDIR)           also NotADirectoryError
          ├── IsADirectory (EISDIR)             also IsADirectoryError
          ├── DirectoryNotEmpty (ENOTEMPTY)
          ├── InvalidPath (EINVAL)
          │    └── NameTooLong (ENAMETOOLONG)
          ├── InvalidArgument (EINVAL)
          │    └── InvalidMode (EINVAL)         unsupported open mode; also ValueError
          ├── Conflict (ESTALE)                 compare-and-set lost, or a write condition failed
          ├── PermissionDenied (EACCES)         also PermissionError
          │    └── AuthenticationError (EACCES) wrong or missing credentials
          ├── NotPermitted (EPERM)              never allowed, whoever asks (a hard link to a
          │                                     directory); also PermissionError
          ├── ReadOnly (EROFS)
          ├── NotSupported (EOPNOTSUPP)
          ├── IntegrityError (EIO)              bytes do not match the recorded hash
          ├── CatalogError (EIO)                catalog unreadable or corrupt
          ├── ConfigError (EINVAL)              bad or missing configuration
          ├── MissingDependency (ENOSYS)        an optional package is not installed
          ├── NoSpace (ENOSPC)                  the backend (disk, bucket quota) is full
          └── TransientError (EAGAIN)           .retryable True
               ├── BackendUnavailable (EHOSTDOWN)  connection refused, 5xx
               └── Timeout (ETIMEDOUT)

SDK and database exceptions are translated into this tree in exactly one place per backend or
catalog engine, always with ``raise ... from exc`` so the cause stays visible with ``-v``.
"""

from __future__ import annotations

import errno as _errno
import logging

log = logging.getLogger("vdir")


class VDirError(OSError):
    """Base of every vdir error.  ``str(exc)`` is one line meant for a user."""

    errno_code: int = _errno.EIO
    retryable: bool = False

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(self.errno_code, message)
        self.message = message
        self.path = path

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):  # type: ignore[no-untyped-def]
        # OSError's default pickling passes (errno, strerror) to __init__; keep ours.
        return (self.__class__, (self.message,), {"path": self.path})


class NotFound(VDirError, FileNotFoundError):
    errno_code = _errno.ENOENT


class AlreadyExists(VDirError, FileExistsError):
    errno_code = _errno.EEXIST


class NotADirectory(VDirError, NotADirectoryError):
    errno_code = _errno.ENOTDIR


class IsADirectory(VDirError, IsADirectoryError):
    errno_code = _errno.EISDIR


class DirectoryNotEmpty(VDirError):
    errno_code = _errno.ENOTEMPTY


class InvalidPath(VDirError):
    errno_code = _errno.EINVAL


class NameTooLong(InvalidPath):
    errno_code = _errno.ENAMETOOLONG


class InvalidArgument(VDirError):
    errno_code = _errno.EINVAL


class InvalidMode(InvalidArgument, ValueError):
    """An ``open`` mode vdir does not support; also a ``ValueError``, as ``open()`` raises."""


class Conflict(VDirError):
    """Someone else changed the thing first (compare-and-set lost, if-match failed)."""

    errno_code = _errno.ESTALE


class PermissionDenied(VDirError, PermissionError):
    errno_code = _errno.EACCES


class NotPermitted(VDirError, PermissionError):
    """The operation is never allowed on this kind of thing, whatever the permissions (POSIX
    ``EPERM``): e.g. a hard link to a directory."""

    errno_code = _errno.EPERM


class AuthenticationError(PermissionDenied):
    """The backend refused our credentials."""


class ReadOnly(VDirError):
    errno_code = _errno.EROFS


class NotSupported(VDirError):
    errno_code = _errno.EOPNOTSUPP


class IntegrityError(VDirError):
    """The bytes read do not match the hash the catalog recorded."""

    errno_code = _errno.EIO


class CatalogError(VDirError):
    errno_code = _errno.EIO


class ConfigError(VDirError):
    errno_code = _errno.EINVAL


class MissingDependency(VDirError):
    errno_code = _errno.ENOSYS


class NoSpace(VDirError):
    """The store is full: a local disk (ENOSPC, EDQUOT) or a cloud account over its quota
    (HTTP 507, ``InsufficientStorage``, quota exceeded)."""

    errno_code = _errno.ENOSPC


class TransientError(VDirError):
    """Worth trying again later: timeouts, throttling, 5xx, connection refused."""

    errno_code = _errno.EAGAIN
    retryable = True


class BackendUnavailable(TransientError):
    errno_code = _errno.EHOSTDOWN


class Timeout(TransientError):
    errno_code = _errno.ETIMEDOUT


def to_errno(exc: BaseException) -> int:
    """The one mapping from any exception to an errno (used by the FUSE adapter).

    A :class:`VDirError` or any ``OSError`` carrying an errno keeps it; anything unexpected is
    logged with its traceback and becomes ``EIO`` so a caller never hangs on a surprise.
    """
    if isinstance(exc, VDirError):
        return exc.errno_code
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    if isinstance(exc, (ValueError, TypeError)):
        log.debug("invalid argument", exc_info=exc)
        return _errno.EINVAL
    log.error("unexpected error, reported as EIO", exc_info=exc)
    return _errno.EIO


def is_retryable(exc: BaseException) -> bool:
    """True when trying the same operation again later may succeed."""
    if isinstance(exc, VDirError):
        return exc.retryable
    return isinstance(exc, (TimeoutError, ConnectionError))
