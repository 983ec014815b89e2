"""Fixtures for ``vdir serve``: the REST API running for real (uvicorn on 127.0.0.1, a free
port), over a VDir on the embedded default, with tokens made through the core's accounts.

- ``vdir_server`` → :class:`LiveServer` (app in a thread of the test process): ``.url``,
  ``.vd`` (the server's own unrestricted VDir, to seed data), ``.admin_token``,
  ``.client(token)`` (an ``httpx.Client``), ``.token(user, admin=..., scopes=...)``.
- :func:`serve_in_thread` (any app) and :func:`serve_process` (``vdir serve`` as a process of a
  ``cli`` environment, for restarts) for tests that need their own.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.servers.process import CACHE, free_port, wait_port
from vdir.access import Accounts
from vdir.core import VDir


def make_token(vd: VDir, user: str, *, admin: bool = False, scopes: tuple[str, ...] = ("read", "write"),
               expires_in: float | None = 3600.0) -> str:
    """A token for ``user`` (created with the user when missing) through the core's accounts."""
    accounts = Accounts(vd.catalog)
    if user not in {u["name"] for u in accounts.list_users()}:
        accounts.add_user(user, admin=admin)
    secret, _ = accounts.create_token(user, scopes=scopes, expires_in=expires_in)
    return str(secret)


def admin_token(vd: VDir) -> str:
    """A token of the administrator ``admin`` (scopes read, write, admin)."""
    return make_token(vd, "admin", admin=True, scopes=("read", "write", "admin"))


@contextlib.contextmanager
def serve_in_thread(app: Any, timeout: float = 30.0) -> Iterator[str]:
    """Run ``app`` with uvicorn on 127.0.0.1 (a free port) in a thread; yields its base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="vdir-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the server thread ended before it listened")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server did not start in {timeout}s")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


@dataclass
class LiveServer:
    url: str
    vd: VDir
    state_dir: Path
    admin_token: str
    clients: list[Any] = field(default_factory=list)

    def client(self, token: str | None = None, **options: Any) -> Any:
        """An ``httpx.Client`` on the server (``token``: default the administrator's; ``""`` none)."""
        import httpx

        secret = self.admin_token if token is None else token
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        headers.update(options.pop("headers", {}))
        options.setdefault("timeout", 60.0)
        c = httpx.Client(base_url=self.url, headers=headers, **options)
        self.clients.append(c)
        return c

    def token(self, user: str, *, admin: bool = False, scopes: tuple[str, ...] = ("read", "write"),
              expires_in: float | None = 3600.0) -> str:
        return make_token(self.vd, user, admin=admin, scopes=scopes, expires_in=expires_in)


@contextlib.contextmanager
def live_server(vd: VDir, state_dir: Path, **options: Any) -> Iterator[LiveServer]:
    """``create_app(vd)`` served in a thread (see :func:`serve_in_thread`)."""
    from vdir.server.app import create_app

    token = admin_token(vd)
    app = create_app(vd, state_dir=state_dir, **options)
    with serve_in_thread(app) as url:
        live = LiveServer(url=url, vd=vd, state_dir=state_dir, admin_token=token)
        try:
            yield live
        finally:
            for c in live.clients:
                c.close()


@pytest.fixture
def vdir_server(vd: VDir, tmp_path: Path) -> Iterator[LiveServer]:
    """The REST API over the ``vd`` fixture (SQLite catalog, backends ``local`` and ``spare``)."""
    with live_server(vd, tmp_path / "server-state") as live:
        yield live


@contextlib.contextmanager
def serve_process(env: dict[str, str], cwd: Path, port: int | None = None,
                  args: tuple[str, ...] = ()) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``vdir serve`` as a process in the environment ``env`` (e.g. the ``cli`` fixture's, after
    ``vdir init``; make tokens with :func:`make_token` on its catalog); yields (base URL,
    process); killed at the end."""
    port = port or free_port()
    logdir = CACHE / "test-logs"
    logdir.mkdir(parents=True, exist_ok=True)
    log = logdir / f"vdir-serve-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "cli", "serve", "--host", "127.0.0.1", "--port", str(port), *args],
                                env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_port(port, proc=proc, log=log)
        yield f"http://127.0.0.1:{port}", proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
