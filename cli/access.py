"""``vdir user``, ``vdir token``, ``vdir project`` and ``vdir trash`` (registered by
:func:`cli.main._register_plugins`).  Thin front ends over :mod:`vdir.access` and the core's trash.

Standalone, whoever can open the catalog is its admin: these commands manage the users, tokens
and projects that ``vdir serve`` checks requests against."""

from __future__ import annotations

import re
import time
from typing import Any

import typer

from cli.output import fmt_size, fmt_time

_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", re.IGNORECASE)
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float | None:
    """``90d``, ``12h``, ``30m``, ``45s``, ``3600`` (seconds) -> seconds; ``never`` -> None."""
    from vdir.errors import InvalidArgument

    if text.strip().lower() in ("never", "none"):
        return None
    m = _DURATION.fullmatch(text)
    if m is None:
        raise InvalidArgument(f"{text!r} is not a duration (like 90d, 12h, 30m, 45s or never)")
    return float(m.group(1)) * _UNIT[m.group(2).lower()]


def _limit(text: str | None, parse: Any) -> int | None:
    if text is None or text.strip().lower() in ("none", "unlimited"):
        return None
    return int(parse(text))


def _when(t: float | None) -> str:
    return "never" if t is None else fmt_time(t)


def register(app: typer.Typer, state: Any, out: Any) -> None:
    user_app = typer.Typer(help="Users of a hosted vdir (vdir serve): add, list, rm.", no_args_is_help=True)
    token_app = typer.Typer(help="API tokens: create, list, revoke (only a hash is stored).", no_args_is_help=True)
    project_app = typer.Typer(help="Projects own path prefixes; members have roles (viewer, editor, owner).",
                              no_args_is_help=True)
    trash_app = typer.Typer(help="The trash: list, restore, empty; keep sets how long removed entries stay.",
                            no_args_is_help=True)
    app.add_typer(user_app, name="user")
    app.add_typer(token_app, name="token")
    app.add_typer(project_app, name="project")
    app.add_typer(trash_app, name="trash")

    def accounts() -> Any:
        from vdir.access import Accounts

        vd = state.vd()
        vd.require_admin()
        return Accounts(vd.catalog)

    # -- users ------------------------------------------------------------------------------
    @user_app.command("add")
    def user_add(name: str = typer.Argument(..., help="User name."),
                 admin: bool = typer.Option(False, "--admin", help="May manage backends, policies, users, all paths.")) -> None:
        """Add a user (then give them a token: vdir token create NAME)."""
        accounts().add_user(name, admin=admin)
        out.say(f"added user {name}" + (" (admin)" if admin else ""))

    @user_app.command("list")
    def user_list(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
        """List the users."""
        users = accounts().list_users()
        if as_json:
            out.json(users)
            return
        for u in users:
            out.line(f"{u['name']}{'  admin' if u.get('admin') else ''}")

    @user_app.command("rm")
    def user_rm(name: str = typer.Argument(..., help="User name.")) -> None:
        """Remove a user: their tokens are revoked and their project roles dropped."""
        accounts().remove_user(name)
        out.say(f"removed user {name}")

    # -- tokens -----------------------------------------------------------------------------
    @token_app.command("create")
    def token_create(
        user: str = typer.Argument(..., help="Whose token."),
        scope: list[str] = typer.Option(["read", "write"], "--scope", "-s", help="read, write, admin (repeat)."),
        expires: str = typer.Option("90d", "--expires", help="Lifetime: 90d, 12h, 30m, 3600 (seconds) or never."),
        name: str = typer.Option("", "--name", help="A label (e.g. the laptop it is for)."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    ) -> None:
        """Create a token and print its secret (shown only now; only its hash is kept)."""
        secret, info = accounts().create_token(user, scopes=scope, expires_in=parse_duration(expires), name=name)
        if as_json:
            out.json(dict(info, secret=secret))
            return
        out.say(secret)

    @token_app.command("list")
    def token_list(user: str | None = typer.Argument(None, help="Only this user's tokens."),
                   as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
        """List tokens (never their secrets)."""
        tokens = accounts().list_tokens(user)
        if as_json:
            out.json(tokens)
            return
        for t in tokens:
            state_ = "revoked" if t["revoked"] else ("expired" if t["expires"] is not None and t["expires"] <= time.time()
                                                     else "active")
            out.line(f"{t['id']}  {t['user']}  {','.join(t['scopes'])}  expires {_when(t['expires'])}  {state_}"
                     + (f"  {t['name']}" if t["name"] else ""))

    @token_app.command("revoke")
    def token_revoke(token_id: str = typer.Argument(..., metavar="ID", help="The token's id (vdir token list).")) -> None:
        """Revoke a token: it stops working at once."""
        accounts().revoke_token(token_id)
        out.say(f"revoked token {token_id}")

    # -- projects ---------------------------------------------------------------------------
    @project_app.command("create")
    def project_create(
        name: str = typer.Argument(..., help="Project name."),
        prefixes: list[str] = typer.Argument(..., metavar="PREFIX...", help="Path prefixes it owns (made if missing)."),
        quota_bytes: str | None = typer.Option(None, "--quota-bytes", help="Byte quota (512G, 1T...), every copy counted."),
        quota_files: int | None = typer.Option(None, "--quota-files", help="File quota."),
    ) -> None:
        """Create a project owning path prefixes (they may not overlap another project's)."""
        from vdir.units import parse_size

        accounts().create_project(name, prefixes, quota_bytes=_limit(quota_bytes, parse_size), quota_files=quota_files)
        out.say(f"created project {name}: {', '.join(prefixes)}")

    @project_app.command("list")
    def project_list(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
        """List projects, their prefixes and members."""
        projects = accounts().list_projects()
        if as_json:
            out.json(projects)
            return
        for p in projects:
            out.line(f"{p['name']}  {' '.join(p['prefixes'])}  {len(p.get('members', {}))} member(s)")

    @project_app.command("show")
    def project_show(name: str = typer.Argument(..., help="Project name."),
                     as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
        """A project's prefixes, members, quota and usage."""
        acc = accounts()
        doc = dict(acc.get_project(name), usage=acc.usage(name))
        if as_json:
            out.json(doc)
            return
        out.line(f"project   {name}")
        out.line(f"prefixes  {' '.join(doc['prefixes'])}")
        for user, role in sorted(doc.get("members", {}).items()):
            out.line(f"member    {user} ({role})")
        out.line(_usage_line(doc["usage"]))

    @project_app.command("rm")
    def project_rm(name: str = typer.Argument(..., help="Project name.")) -> None:
        """Forget a project (its files stay; only admins see them)."""
        accounts().delete_project(name)
        out.say(f"removed project {name}")

    @project_app.command("grant")
    def project_grant(name: str = typer.Argument(..., help="Project name."),
                      user: str = typer.Argument(..., help="User name."),
                      role: str = typer.Argument(..., help="viewer, editor or owner.")) -> None:
        """Give a user a role in a project (replacing the one they had)."""
        accounts().grant(name, user, role)
        out.say(f"{user} is {role} in project {name}")

    @project_app.command("revoke")
    def project_revoke(name: str = typer.Argument(..., help="Project name."),
                       user: str = typer.Argument(..., help="User name.")) -> None:
        """Take a user's role in a project away."""
        accounts().revoke(name, user)
        out.say(f"{user} has no role in project {name}")

    @project_app.command("quota")
    def project_quota(name: str = typer.Argument(..., help="Project name."),
                      nbytes: str | None = typer.Option(None, "--bytes", help="Byte quota (512G...; none: no limit)."),
                      files: str | None = typer.Option(None, "--files", help="File quota (none: no limit).")) -> None:
        """Set a project's quotas (an option left out clears that limit)."""
        from vdir.units import parse_size

        accounts().set_quota(name, bytes=_limit(nbytes, parse_size), files=_limit(files, int))
        out.say(f"quota of project {name}: {nbytes or 'no limit'} bytes, {files or 'no limit'} files")

    @project_app.command("usage")
    def project_usage(name: str = typer.Argument(..., help="Project name."),
                      as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
        """Bytes (every copy the policy asks for) and files a project uses, against its quota."""
        usage = accounts().usage(name)
        if as_json:
            out.json(usage)
            return
        out.line(_usage_line(usage))

    # -- trash ------------------------------------------------------------------------------
    @trash_app.command("list")
    def trash_list(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
        """What rm put in the trash, oldest first: id, original path, size, expiry."""
        items = state.vd().trash_list()
        if as_json:
            out.json(items)
            return
        for t in items:
            out.line(f"{t['id']}  {t['path']}  {fmt_size(t['size'])}  deleted {fmt_time(t['deleted_at'])} by "
                     f"{t['deleted_by']}  expires {fmt_time(t['expires_at'])}")

    @trash_app.command("restore")
    def trash_restore(trash_id: str = typer.Argument(..., metavar="ID", help="The item's id (vdir trash list)."),
                      to: str | None = typer.Option(None, "--to", help="Restore to this path instead.")) -> None:
        """Put an item back, exactly as it was removed (fails if the path is taken)."""
        vd = state.vd()
        doc = next((t for t in vd.trash_list() if t["id"] == trash_id), None)
        vd.trash_restore(trash_id, to)
        out.say(f"restored {to or (doc['path'] if doc else trash_id)}")

    @trash_app.command("empty")
    def trash_empty(all_items: bool = typer.Option(False, "--all", help="Every item, not only expired ones.")) -> None:
        """Delete expired items for good (with --all, every item)."""
        n = state.vd().trash_empty(all=all_items)
        out.say(f"purged {n} item(s)")

    @trash_app.command("keep")
    def trash_keep(duration: str | None = typer.Argument(None, help="How long rm keeps entries: 30d, 12h... (0: off).")) -> None:
        """Show or set how long removed entries stay in the trash (0 turns the trash off)."""
        vd = state.vd()
        if duration is not None:
            seconds = parse_duration(duration)
            vd.set_trash_keep(seconds or 0.0)
        keep = vd.trash_keep
        out.say(f"trash keeps removed entries for {_human_duration(keep)}" if keep else "trash is off: rm deletes")


def _usage_line(usage: dict[str, Any]) -> str:
    qb, qf = usage.get("quota_bytes"), usage.get("quota_files")
    return (f"usage     {fmt_size(usage['bytes'])} of {fmt_size(qb) if qb is not None else 'no limit'}, "
            f"{usage['files']} file(s) of {qf if qf is not None else 'no limit'}")


def _human_duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
