"""Remote mode: the vdir API, CLI, fsspec and mount against a vdir server (``vdir serve``),
with no catalog and no cloud credentials on the client.  See docs/remote.md."""

from __future__ import annotations

from vdir.remote.client import RemoteCatalog, RemoteVDir, ServerFiles
from vdir.remote.http import error_from
from vdir.remote.login import Login, current, login_path


def connect_remote(login: Login | None = None) -> RemoteVDir:
    """A :class:`RemoteVDir` for ``login`` (default: the stored login or the environment's)."""
    from vdir.errors import ConfigError

    login = login or current()
    if login is None:
        raise ConfigError("not logged in to a vdir server (run 'vdir login URL')")
    return RemoteVDir(login.url, login.token, user=login.user)


__all__ = ["Login", "RemoteCatalog", "RemoteVDir", "ServerFiles", "connect_remote", "current", "error_from", "login_path"]
