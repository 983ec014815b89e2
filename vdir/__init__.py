"""vdir: one virtual directory over many clouds.

    import vdir
    vd = vdir.connect()                 # reads ~/.config/vdir/config.yaml (or $VDIR_CONFIG);
                                        # after 'vdir login URL': a RemoteVDir talking to that server
    vd.put("results.csv", "/projects/a/results.csv")
    df = pandas.read_csv("vdir:///projects/a/results.csv")
"""

from __future__ import annotations

import os

from vdir.core import Info, Usage, VDir
from vdir.errors import VDirError

__version__ = "0.1.0"


def connect(config: str | os.PathLike[str] | None = None, *, catalog: str | None = None, default_backend: str | None = None) -> VDir:
    """Open the virtual directory described by the config file (or by an explicit catalog URL).

    Remote mode: with ``VDIR_REMOTE=URL`` and ``VDIR_TOKEN`` set, or a login stored by
    ``vdir login`` (and no explicit ``config`` or ``catalog``), the result is a
    :class:`vdir.remote.RemoteVDir` that talks to that server: the same API, no catalog or
    cloud credentials here."""
    from vdir import config as cfg
    from vdir.catalog.base import open_catalog

    if catalog is None and (os.environ.get("VDIR_REMOTE") or config is None):
        from vdir.remote.login import current

        login = current()
        if login is not None:
            from vdir.remote import RemoteVDir

            return RemoteVDir(login.url, login.token, user=login.user)
    if catalog is not None:
        return VDir(open_catalog(catalog), None, default_backend)
    conf = cfg.load(config)
    # the configured catalog must exist: a mistyped path is an error, not a new empty namespace
    return VDir(open_catalog(conf.catalog, create=False), conf, default_backend)


def init(config: str | os.PathLike[str] | None = None, *, catalog: str | None = None) -> tuple[VDir, bool]:
    """Create the embedded default (SQLite catalog + a local-folder backend) if it is not there.

    Idempotent: an existing configuration is kept as it is.  Returns (vdir, created)."""
    from vdir.admin import ensure_default

    return ensure_default(config, catalog)


__all__ = ["Info", "Usage", "VDir", "VDirError", "connect", "init", "__version__"]
