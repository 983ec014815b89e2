"""The web interface of ``vdir serve``: static pages (HTML, CSS, plain JavaScript shipped in the
package, nothing fetched from elsewhere) that call the REST API with the same bearer tokens, and
the few extra endpoints they need (:mod:`vdir.web.api`).

:func:`mount` adds both to an app made by :func:`vdir.server.app.create_app`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

STATIC = Path(__file__).parent / "static"


def mount(app: Any) -> None:
    """Serve the interface at ``/`` (``/ui/*`` its assets) and its endpoints under ``/v1/web``."""
    from fastapi.responses import FileResponse, RedirectResponse
    from fastapi.staticfiles import StaticFiles

    from vdir.web.api import router

    app.include_router(router)
    app.mount("/ui", StaticFiles(directory=STATIC), name="ui")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> RedirectResponse:
        return RedirectResponse("/ui/favicon.svg")


__all__ = ["STATIC", "mount"]
