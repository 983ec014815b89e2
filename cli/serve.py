"""``vdir serve``: run the REST API (:mod:`vdir.server`) over this machine's vdir (registered
by :func:`cli.main._register_plugins`)."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import typer

from vdir.errors import VDirError


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
        workers: int = typer.Option(1, "--workers", "-w", min=1, max=64, metavar="N",
                                    help="Server processes sharing the port, each with its own catalog "
                                         "connection (more use more cores; 1: this process serves)."),
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

        def server() -> uvicorn.Server:
            vd = VDir(open_catalog(conf.catalog, create=False), conf)
            state._vd = vd  # closed by cli.main on the way out (a worker closes its own)
            api = create_app(vd, state_dir=state_dir, job_workers=job_workers)
            return uvicorn.Server(uvicorn.Config(api, host=host, port=port, log_level=log_level, proxy_headers=True,
                                                 timeout_graceful_shutdown=10))

        # the catalog is checked before the port is taken; forked workers open their own
        ready = server() if workers == 1 else None
        if ready is None:
            VDir(open_catalog(conf.catalog, create=False), conf).close()
        sock = _listen(host, port)
        bound = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        processes = f" with {workers} worker processes" if workers > 1 else ""
        out.say(f"vdir: serving {conf.catalog} on http://{shown}:{bound}{processes} (API docs at /docs)")
        sys.stdout.flush()
        if ready is not None:
            ready.run(sockets=[sock])
        else:
            _supervise(workers, sock, server, state)


RESTART_AFTER = 5.0
"""A worker that fails (exits non-zero, not killed) sooner than this after its start stops the
server rather than being started again: it would only fail the same way."""


def _supervise(n: int, sock: socket.socket, make: Callable[[], Any], state: Any) -> None:
    """Fork ``n`` workers that serve ``sock`` (the kernel spreads the connections), start a new
    one when one dies, and stop them all on SIGTERM or SIGINT.  Exits 1 when a worker fails
    right after its start."""
    children: dict[int, float] = {}
    stopping = False
    parent = os.getpid()

    def spawn() -> None:
        pid = os.fork()
        if pid == 0:  # the worker: its own catalog connection, threads and event loop
            code = 0
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                _die_with(parent)
                make().run(sockets=[sock])
            except VDirError as exc:
                print(f"vdir: error: {exc}", file=sys.stderr)
                code = 1
            except BaseException:  # noqa: BLE001 - a worker must never return into the CLI
                traceback.print_exc()
                code = 1
            finally:
                if state._vd is not None:
                    state._vd.close()
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)
        children[pid] = time.monotonic()

    def stop(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for _ in range(n):
        spawn()
    failed = False
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        started = children.pop(pid, None)
        if started is None or stopping:
            continue
        code = os.waitstatus_to_exitcode(status)  # negative: killed by that signal
        if code > 0 and time.monotonic() - started < RESTART_AFTER:
            print(f"vdir: a server worker exited ({code}) right after its start; stopping", file=sys.stderr)
            failed = True
            stop(signal.SIGTERM, None)
            continue
        print(f"vdir: server worker {pid} exited ({code}); starting another", file=sys.stderr)
        spawn()
    if failed:
        raise SystemExit(1)


def _die_with(parent: int) -> None:
    """Have the kernel send this worker SIGTERM when its parent ends, however it ends (even
    SIGKILL): no worker keeps serving the port with no one watching (Linux; elsewhere a no-op)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent ended before the request took hold
        os._exit(0)


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (so port 0 can say which port it got)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock
