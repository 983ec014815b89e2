"""``vdir login``, ``vdir logout`` and ``vdir info`` (registered by :func:`cli.main._register_plugins`).

After ``vdir login URL`` every command talks to that server (remote mode) until ``vdir logout``;
``VDIR_REMOTE`` + ``VDIR_TOKEN`` in the environment do the same without a stored login."""

from __future__ import annotations

import os
import sys
from typing import Any

import typer

from vdir.paths import printable as shown


def mode_line() -> str:
    """One line saying which vdir the commands act on (for ``--version``); contacts nothing."""
    from vdir.remote.login import current

    try:
        login = current()
    except Exception as exc:  # noqa: BLE001 - --version must answer whatever the login file holds
        return f"remote mode: unusable login ({exc})"
    if login is None:
        return "standalone mode (local catalog)"
    who = f" as {login.user}" if login.user else ""
    where = "VDIR_REMOTE" if login.source == "environment" else "vdir login"
    return f"remote mode: {login.url}{who} (from {where})"


def register(app: typer.Typer, state: Any, out: Any) -> None:
    @app.command()
    def login(
        url: str = typer.Argument(..., metavar="URL", help="The vdir server, e.g. https://vdir.example.org or http://127.0.0.1:8080."),
        token: str | None = typer.Option(None, "--token", "-t", metavar="TOKEN", envvar="VDIR_LOGIN_TOKEN",
                                         help="An API token (vdir_...); asked for when not given."),
    ) -> None:
        """Use a vdir server from now on: check the token, store it (mode 0600) in the XDG config."""
        from vdir.errors import InvalidArgument
        from vdir.remote import RemoteVDir
        from vdir.remote.login import normalize_url, save

        base = normalize_url(url)
        if token is None:  # asked for, not echoed; from a pipe (echo $T | vdir login URL) read as it comes
            token = typer.prompt("token", hide_input=True) if sys.stdin.isatty() else sys.stdin.readline()
        token = token.strip()
        if not token:
            raise InvalidArgument("an empty token: create one on the server with 'vdir token create'")
        with RemoteVDir(base, token, attempts=1) as vd:
            me = vd.whoami()
        path = save(base, token, str(me.get("user") or ""))
        role = " (admin)" if me.get("admin") else ""
        out.say(f"logged in to {shown(base)} as {shown(str(me.get('user')))}{role}; token stored in {shown(str(path))}")

    @app.command()
    def logout() -> None:
        """Forget the stored server login (the token stays valid until revoked on the server)."""
        from vdir.remote.login import current, remove

        try:
            login = current() if not os.environ.get("VDIR_REMOTE") else None
        except Exception:  # noqa: BLE001 - a damaged file is removed all the same
            login = None
        if remove():
            out.say(f"logged out{' of ' + shown(login.url) if login else ''}")
        else:
            out.say("not logged in")
        if os.environ.get("VDIR_REMOTE"):
            out.say("VDIR_REMOTE is still set in the environment: unset it to work standalone")

    @app.command()
    def info(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
        """Say which vdir the commands act on: a server (remote mode, with your user) or the local catalog."""
        vd = state.vd()
        if getattr(vd, "remote", False):
            me = vd.whoami()
            row = {"mode": "remote", "url": vd.url, "user": me.get("user"), "admin": bool(me.get("admin")),
                   "scopes": list(me.get("scopes") or [])}
            if as_json:
                out.json(row)
                return
            out.line(f"remote: {shown(vd.url)}")
            out.line(f"user: {shown(str(row['user']))}{' (admin)' if row['admin'] else ''}")
            out.line(f"scopes: {', '.join(row['scopes']) or '-'}")
            return
        conf = vd.config
        row = {"mode": "standalone", "config": str(conf.path) if conf else None, "catalog": vd.catalog.url,
               "default_backend": vd.default_backend}
        if as_json:
            out.json(row)
            return
        out.line("standalone")
        out.line(f"config: {shown(row['config'] or '-')}")
        out.line(f"catalog: {shown(row['catalog'] or '-')}")
        out.line(f"default backend: {shown(row['default_backend'] or '-')}")
