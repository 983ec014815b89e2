"""A live vdir server for the remote-mode tests: ``create_app`` on a fresh SQLite catalog, served
by uvicorn on a free port of 127.0.0.1 from a thread of the test process
(:func:`tests.servers.vdir_server.serve_in_thread`), with users, tokens and projects made
through the core's :class:`vdir.access.Accounts`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.servers.vdir_server import serve_in_thread
from tests.servers.vdirs import CLI
from vdir.admin import add_backend
from vdir.catalog.base import BackendRecord, open_catalog
from vdir.core import VDir


@dataclass
class LiveServer:
    url: str
    vd: VDir
    """The server's own VDir (standalone, no principal): for setting up and looking behind the API."""
    tmp: Path
    tokens: dict[str, str] = field(default_factory=dict)
    """user → token secret."""

    def accounts(self) -> Any:
        from vdir.access import Accounts

        return Accounts(self.vd.catalog)

    def user(self, name: str, *, admin: bool = False, scopes: tuple[str, ...] = ("read", "write")) -> str:
        """Create ``name`` and a token for them; the token's secret."""
        accounts = self.accounts()
        accounts.add_user(name, admin=admin)
        secret, _ = accounts.create_token(name, scopes=scopes + (("admin",) if admin else ()), name="tests")
        self.tokens[name] = secret
        return secret

    def project(self, name: str, prefixes: list[str], **members: str) -> None:
        accounts = self.accounts()
        accounts.create_project(name, prefixes)
        for user, role in members.items():
            accounts.grant(name, user, role)
        for prefix in prefixes:
            self.vd.mkdir(prefix, parents=True, exist_ok=True)

    def env(self, cli: CLI, user: str) -> dict[str, str]:
        """``cli``'s environment in remote mode as ``user`` (VDIR_REMOTE + VDIR_TOKEN)."""
        return {**cli.env, "VDIR_REMOTE": self.url, "VDIR_TOKEN": self.tokens[user]}


@contextmanager
def live_server(tmp: Path, *, backend: Any = None) -> Iterator[LiveServer]:
    """Serve a new virtual directory; its default backend is a local folder, or ``backend`` (an
    opened cloud backend of the test servers, whose credentials only the server holds)."""
    from vdir.server.app import create_app

    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "objects").mkdir(exist_ok=True)
    vd = VDir(open_catalog(f"sqlite:///{tmp / 'server-catalog.db'}"), default_backend=backend.name if backend else "local")
    add_backend(vd, "local", f"file://{tmp / 'objects'}", check=False)
    if backend is not None:
        vd.catalog.put_backend(BackendRecord(backend.name, backend.url, cloud="aws"))
        vd._backends[backend.name] = backend
    try:
        with serve_in_thread(create_app(vd, state_dir=tmp / "server-state")) as url:
            live = LiveServer(url, vd, tmp)
            live.user("admin", admin=True)
            yield live
    finally:
        vd.close()
