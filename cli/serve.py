"""``vdir serve``: run the REST API (:mod:`vdir.server`) over this machine's vdir (registered
by :func:`cli.main._register_plugins`)."""

from __future__ import annotations

import socket
import sys
from typing import Any

import typer


def register(app: typer.Typer, state: Any, out: Any) -> None:
    """Add the ``serve`` command to ``app``."""

    @app.command()
    def serve(
        host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (the default: this machine only; "
                                 "put a TLS reverse proxy in front for anything else)."),
        port: int = typer.Option(8080, "--port", "-p", min=0, max=65535, help="TCP port (0: any free port)."),
        state_dir: str | None = typer.Option(None, "--state-dir", metavar="DIR",
                                             help="Upload sessions (default: $XDG_STATE_HOME/vdir/server)."),
        job_workers: int = typer.Option(2, "--job-workers", min=1, max=64, metavar="N",
                                        help="Jobs (copies, fsck, placement) run at once."),
        log_level: str = typer.Option("warning", "--log-level", metavar="LEVEL",
                                      help="uvicorn's log level: info logs every request."),
    ) -> None:
        """Serve the REST API (OpenAPI at /openapi.json, interactive docs at /docs) until stopped.

        Clients authenticate with a token ('vdir token create'); each sees and changes only
        what their projects and roles allow."""
        try:
            import uvicorn

            from vdir.server.app import create_app
        except ImportError as exc:
            from vdir.errors import MissingDependency

            raise MissingDependency(f"'vdir serve' needs {exc.name}; install it with: pip install 'vdir[server]'") from exc
        from vdir import config as cfg
        from vdir.catalog.base import open_catalog
        from vdir.core import VDir

        conf = cfg.load(state.config)  # always this machine's catalog, never a remote login
        vd = VDir(open_catalog(conf.catalog, create=False), conf)
        state._vd = vd  # closed by cli.main on the way out
        api = create_app(vd, state_dir=state_dir, job_workers=job_workers)
        config = uvicorn.Config(api, host=host, port=port, log_level=log_level, proxy_headers=True,
                                timeout_graceful_shutdown=10)
        server = uvicorn.Server(config)
        sock = _listen(host, port)
        bound = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        out.say(f"vdir: serving {conf.catalog} on http://{shown}:{bound} (API docs at /docs)")
        sys.stdout.flush()
        server.run(sockets=[sock])


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (so port 0 can say which port it got)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock
