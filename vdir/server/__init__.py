"""``vdir serve``: the REST API over the core (:class:`vdir.core.VDir`), for a team's hosted vdir.

One app factory, :func:`vdir.server.app.create_app`; every handler calls the core only, so
permissions, quotas and trash (enforced in the core) hold here as in every other front end.

- :mod:`vdir.server.app` — the FastAPI app and its routes
- :mod:`vdir.server.auth` — bearer token → the caller's view of the VDir
- :mod:`vdir.server.errors` — the one VDirError → HTTP status mapping
- :mod:`vdir.server.models` — response models (the OpenAPI spec's schemas)
- :mod:`vdir.server.bodies` — streaming request bodies into the core's writers
- :mod:`vdir.server.uploads` — resumable upload sessions kept on the server's disk
- :mod:`vdir.server.jobs` — long operations as jobs, their state in the catalog
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

    from vdir.core import VDir


def create_app(vd: VDir, **options: Any) -> FastAPI:
    """See :func:`vdir.server.app.create_app` (imported lazily: FastAPI is an optional extra)."""
    from vdir.server.app import create_app as make

    return make(vd, **options)


__all__ = ["create_app"]
