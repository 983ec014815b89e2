"""Users, tokens, projects and roles (vdir/access.py), enforced in the core: what a member of a
team relies on, on both catalog engines.  Nothing of another project leaks: an invisible path
raises exactly what a missing one raises, and listings, find, du and glob never show it."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers.vdirs import CLI, fails, ok
from vdir.access import Accounts, Principal
from vdir.admin import add_backend, remove_backend
from vdir.catalog import ROOT_ID, open_catalog
from vdir.core import VDir
from vdir.errors import AlreadyExists, AuthenticationError, InvalidArgument, NotFound, PermissionDenied
from vdir.fsck import fsck
from vdir.placement.daemon import Daemon, DaemonOptions

SECRET = "/projects/alpha/secret.txt"


@pytest.fixture
def team(catalog_url: str, tmp_path: Path) -> Iterator[tuple[VDir, Accounts]]:
    """Projects alpha (/projects/alpha: alice editor, bob viewer) and beta (/projects/beta and
    /shared/beta: carol owner); root is an admin."""
    (tmp_path / "objects").mkdir()
    vd = VDir(open_catalog(catalog_url), default_backend="local")
    add_backend(vd, "local", f"file://{tmp_path / 'objects'}", check=False)
    acc = Accounts(vd.catalog)
    for user in ("alice", "bob", "carol"):
        acc.add_user(user)
    acc.add_user("root", admin=True)
    acc.create_project("alpha", ["/projects/alpha"])
    acc.create_project("beta", ["/projects/beta", "/shared/beta"])
    acc.grant("alpha", "alice", "editor")
    acc.grant("alpha", "bob", "viewer")
    acc.grant("beta", "carol", "owner")
    vd.put(b"alpha's secret", SECRET)
    vd.put(b"beta data", "/projects/beta/data.bin")
    vd.mkdir("/private")
    vd.put(b"admin only", "/private/keys")
    try:
        yield vd, acc
    finally:
        vd.close()


def login(vd: VDir, acc: Accounts, user: str, scopes: tuple[str, ...] = ("read", "write")) -> VDir:
    secret, _ = acc.create_token(user, scopes=scopes)
    return vd.as_user(acc.authenticate(secret))


def err(fn, *args, **kwargs) -> OSError:  # type: ignore[no-untyped-def]
    with pytest.raises(OSError) as info:
        fn(*args, **kwargs)
    return info.value


def test_viewer_reads_but_cannot_write(team: tuple[VDir, Accounts]) -> None:
    vd, acc = team
    bob = login(vd, acc, "bob")
    assert bob.cat(SECRET) == b"alpha's secret"
    assert [i.name for i in bob.ls("/projects/alpha")] == ["secret.txt"]
    for attempt in (lambda: bob.put(b"x", "/projects/alpha/new.txt"),
                    lambda: bob.put(b"x", SECRET, force=True),
                    lambda: bob.rm(SECRET),
                    lambda: bob.mkdir("/projects/alpha/d"),
                    lambda: bob.mv(SECRET, "/projects/alpha/moved"),
                    lambda: bob.update_entry(SECRET, mode=0o600),
                    lambda: bob.open("/projects/alpha/w", "wb"),
                    lambda: bob.symlink("x", "/projects/alpha/l")):
        e = err(attempt)
        assert isinstance(e, PermissionDenied), e
        assert "permission denied (viewer in project alpha)" in str(e)
    assert vd.cat(SECRET) == b"alpha's secret" and [i.name for i in vd.ls("/projects/alpha")] == ["secret.txt"]


def test_editor_writes_in_own_project_only(team: tuple[VDir, Accounts]) -> None:
    vd, acc = team
    alice = login(vd, acc, "alice")
    alice.put(b"new", "/projects/alpha/sub/new.txt")
    alice.mv("/projects/alpha/sub/new.txt", "/projects/alpha/renamed.txt")
    alice.copy(SECRET, "/projects/alpha/copy.txt")
    assert alice.cat("/projects/alpha/copy.txt") == b"alpha's secret"
    alice.rm("/projects/alpha/sub")
    assert sorted(i.name for i in alice.ls("/projects/alpha")) == ["copy.txt", "renamed.txt", "secret.txt"]
    # out of the project: a copy or a move to beta is the NotFound of a missing path
    assert isinstance(err(alice.copy, SECRET, "/projects/beta/stolen"), NotFound)
    assert isinstance(err(alice.mv, SECRET, "/projects/beta/stolen"), NotFound)
    # an ancestor is listed, never written
    e = err(alice.update_entry, "/projects", mode=0o777)
    assert isinstance(e, PermissionDenied) and str(e) == "/projects: permission denied"
    assert isinstance(err(alice.mkdir, "/projects/new"), NotFound)  # beside the prefixes: invisible
    assert isinstance(err(alice.rm, "/projects", recursive=True), PermissionDenied)


def _missing_message(vd: VDir, path: str, call) -> str:  # type: ignore[no-untyped-def]
    """What ``call`` raises for ``path`` once it truly does not exist (standalone)."""
    return str(err(call, path))


def test_no_leak_invisible_is_exactly_missing(team: tuple[VDir, Accounts]) -> None:
    vd, acc = team
    carol = login(vd, acc, "carol")
    hidden = {name: str(err(getattr(carol, name), SECRET)) for name in ("stat", "cat", "ls", "entry", "readlink", "du")}
    hidden["find"] = str(err(lambda p: list(carol.find(p)), SECRET))
    hidden["dir"] = str(err(carol.ls, "/projects/alpha"))
    assert all(isinstance(err(getattr(carol, n), SECRET), NotFound) for n in ("stat", "cat", "ls"))
    assert carol.exists(SECRET) is False and carol.glob("/projects/alpha/*") == [] and carol.glob(SECRET) == []
    assert carol.glob("/projects/*") == ["/projects/beta"]
    # now make them truly missing and ask again (the admin sees everything; standalone too)
    vd.rm("/projects/alpha", recursive=True)
    missing = {name: str(err(getattr(vd, name), SECRET)) for name in ("stat", "cat", "ls", "entry", "readlink", "du")}
    missing["find"] = str(err(lambda p: list(vd.find(p)), SECRET))
    missing["dir"] = str(err(vd.ls, "/projects/alpha"))
    assert hidden == missing


def test_listings_show_only_visible_children(team: tuple[VDir, Accounts]) -> None:
    vd, acc = team
    carol = login(vd, acc, "carol")
    assert [i.name for i in carol.ls("/")] == ["projects", "shared"]
    assert [i.name for i in carol.ls("/projects")] == ["beta"]
    assert carol.stat("/projects").type == "dir"
    everything = [i.path for i in carol.ls("/", recursive=True)]
    assert everything == ["/projects", "/projects/beta", "/projects/beta/data.bin", "/shared", "/shared/beta"]
    found = [i.path for i in carol.find("/")]
    assert found == ["/", "/projects", "/projects/beta", "/projects/beta/data.bin", "/shared", "/shared/beta"]
    assert [i.path for i in carol.find("/", name="secret*")] == []
    usage = carol.du("/")
    assert usage.files == 1 and usage.bytes == len(b"beta data")
    assert carol.glob("/**") == ["/projects", "/projects/beta", "/projects/beta/data.bin", "/shared", "/shared/beta"]
    # the mount's by-id calls filter the same way
    projects = carol.child(ROOT_ID, "projects")
    assert projects is not None and carol.child(ROOT_ID, "private") is None
    assert [e.name for e in carol.children(projects.id)] == ["beta"]
    assert carol.child(projects.id, "alpha") is None
    alpha_id = vd.entry("/projects/alpha").id
    assert carol.children(alpha_id) == []
    secret_id = vd.entry(SECRET).id
    hidden = err(carol.entry_by_id, secret_id)
    vd.rm(SECRET)
    assert isinstance(hidden, NotFound) and str(hidden) == str(err(vd.entry_by_id, secret_id))
    # recursive reads from an ancestor take only what is visible
    copied = carol.plan_copy("/projects", "/shared/beta/all", recursive=True)
    assert [s for s, _ in copied] == ["/projects/beta/data.bin"]


def test_get_recursive_from_the_root_takes_only_visible_files(team: tuple[VDir, Accounts], tmp_path: Path) -> None:
    vd, acc = team
    carol = login(vd, acc, "carol")
    carol.get("/", tmp_path / "out", recursive=True)
    got = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert got == ["projects/beta/data.bin"]


def test_admin_sees_everything_and_admin_only_ops_are_refused_to_others(team: tuple[VDir, Accounts]) -> None:
    vd, acc = team
    root = login(vd, acc, "root", ("read", "write", "admin"))
    assert root.principal is not None and root.principal.admin
    assert [i.name for i in root.ls("/")] == ["private", "projects", "shared"]
    assert root.cat("/private/keys") == b"admin only"
    root.require_admin()
    assert fsck(root).exit_code == 0
    alice = login(vd, acc, "alice")
    for attempt in (alice.require_admin, lambda: fsck(alice), lambda: Daemon(alice, DaemonOptions(once=True)),
                    lambda: alice.set_trash_keep(60), lambda: alice.link("file:///etc/passwd", "/projects/alpha/p"),
                    lambda: add_backend(alice, "mine", "file:///tmp", check=False),
                    lambda: remove_backend(alice, "local")):
        assert isinstance(err(attempt), PermissionDenied)
    # an admin user whose token lacks the admin scope is an ordinary user
    plain = login(vd, acc, "root", ("read", "write"))
    assert plain.principal is not None and not plain.principal.admin
    assert isinstance(err(plain.require_admin), PermissionDenied)
    assert isinstance(err(plain.stat, "/private/keys"), NotFound)


def test_scopes_limit_roles(team: tuple[VDir, Accounts]) -> None:
    vd, acc = team
    reader = login(vd, acc, "alice", ("read",))
    assert reader.cat(SECRET) == b"alpha's secret"
    e = err(reader.put, b"x", "/projects/alpha/x")
    assert isinstance(e, PermissionDenied) and "scope write" in str(e)
    writer = login(vd, acc, "alice", ("write",))
    writer.put(b"x", "/projects/alpha/x")
    assert isinstance(err(writer.cat, SECRET), PermissionDenied)


def test_tokens_expired_revoked_unknown_and_only_a_hash_stored(team: tuple[VDir, Accounts]) -> None:
    vd, acc = team
    secret, info = acc.create_token("alice", name="laptop")
    assert secret.startswith(f"vdir_{info['id']}_") and "hash" not in info
    assert acc.authenticate(secret) == Principal("alice", False, frozenset({"read", "write"}), info["id"], info["expires"])
    stored, _ = vd.catalog.get_record("tokens", info["id"])
    text = json.dumps(stored)
    assert secret not in text and secret.rsplit("_", 1)[1] not in text and len(stored["hash"]) == 64
    assert [t["name"] for t in acc.list_tokens("alice")] == ["laptop"]
    assert all("hash" not in t for t in acc.list_tokens())

    for bad in ("", "nonsense", f"vdir_{info['id']}_wrong", "vdir_000000000000_x"):
        e = err(acc.authenticate, bad)
        assert isinstance(e, AuthenticationError) and str(e) == "unknown token"
    acc.revoke_token(info["id"])
    e = err(acc.authenticate, secret)
    assert isinstance(e, AuthenticationError) and str(e) == "token revoked"
    assert acc.list_tokens("alice")[0]["revoked"] is True

    old, old_info = acc.create_token("bob", expires_in=3600)
    doc, version = vd.catalog.get_record("tokens", old_info["id"])
    vd.catalog.put_record("tokens", old_info["id"], dict(doc, expires=doc["created"] - 1), expected_version=version)
    e = err(acc.authenticate, old)
    assert isinstance(e, AuthenticationError) and str(e) == "token expired"
    forever, _ = acc.create_token("bob", expires_in=None)
    assert acc.authenticate(forever).user == "bob"
    assert isinstance(err(acc.create_token, "bob", scopes=("sudo",)), InvalidArgument)
    assert isinstance(err(acc.create_token, "nobody"), NotFound)


def test_removing_a_user_revokes_tokens_and_memberships(team: tuple[VDir, Accounts]) -> None:
    vd, acc = team
    secret, _ = acc.create_token("bob")
    acc.remove_user("bob")
    assert isinstance(err(acc.authenticate, secret), AuthenticationError)
    assert "bob" not in acc.get_project("alpha")["members"]
    assert [u["name"] for u in acc.list_users()] == ["alice", "carol", "root"]


def test_projects_prefixes_never_overlap_and_roles_are_checked(team: tuple[VDir, Accounts]) -> None:
    vd, acc = team
    assert isinstance(err(acc.create_project, "inner", ["/projects/alpha/inner"]), AlreadyExists)
    assert isinstance(err(acc.create_project, "outer", ["/projects"]), AlreadyExists)
    assert isinstance(err(acc.create_project, "alpha", ["/elsewhere"]), AlreadyExists)
    assert isinstance(err(acc.create_project, "all", ["/"]), InvalidArgument)
    assert isinstance(err(acc.grant, "alpha", "carol", "god"), InvalidArgument)
    assert isinstance(err(acc.grant, "alpha", "nobody", "viewer"), NotFound)
    acc.create_project("gamma", ["/gamma"])
    assert vd.stat("/gamma").type == "dir"  # the prefix directories are made
    acc.grant("gamma", "carol", "viewer")
    acc.revoke("gamma", "carol")
    carol = login(vd, acc, "carol")
    assert isinstance(err(carol.stat, "/gamma"), NotFound)
    acc.delete_project("gamma")
    assert [p["name"] for p in acc.list_projects()] == ["alpha", "beta"]


def test_standalone_is_unchanged(team: tuple[VDir, Accounts]) -> None:
    vd, _ = team
    assert vd.principal is None
    vd.require_admin()
    assert [i.name for i in vd.ls("/")] == ["private", "projects", "shared"]
    vd.write_stream("/private/stream", io.BytesIO(b"s" * 10))
    assert vd.cat("/private/stream") == b"s" * 10


def test_a_view_shares_the_catalog_and_closing_it_closes_nothing(team: tuple[VDir, Accounts]) -> None:
    vd, acc = team
    alice = login(vd, acc, "alice")
    assert alice.catalog is vd.catalog and alice.backend("local") is vd.backend("local")
    alice.close()
    assert vd.cat(SECRET) == b"alpha's secret"


def test_cli_users_tokens_projects(cli: CLI) -> None:
    ok(cli, "init")
    assert "added user alice" in ok(cli, "user", "add", "alice")
    ok(cli, "user", "add", "root", "--admin")
    ok(cli, "project", "create", "alpha", "/projects/alpha", "--quota-bytes", "1M", "--quota-files", "10")
    assert "alice is editor in project alpha" in ok(cli, "project", "grant", "alpha", "alice", "editor")
    secret = ok(cli, "token", "create", "alice", "--name", "laptop", "--expires", "30d").strip()
    assert secret.startswith("vdir_")
    listed = ok(cli, "token", "list", "alice")
    assert "laptop" in listed and "active" in listed and secret.split("_", 2)[2] not in listed
    [token] = json.loads(ok(cli, "token", "list", "--json"))
    assert token["user"] == "alice" and "hash" not in token and token["expires"] - token["created"] == 30 * 86400
    assert ok(cli, "user", "list").split() == ["alice", "root", "admin"]
    assert json.loads(ok(cli, "project", "list", "--json"))[0]["members"] == {"alice": "editor"}
    show = ok(cli, "project", "show", "alpha")
    assert "member    alice (editor)" in show and "0 B of 1.0 MiB, 0 file(s) of 10" in show
    (cli.home / "f").write_bytes(b"12345")
    ok(cli, "put", str(cli.home / "f"), "/projects/alpha/f")
    usage = json.loads(ok(cli, "project", "usage", "alpha", "--json"))
    assert usage == {"project": "alpha", "bytes": 5, "files": 1, "quota_bytes": 1024 * 1024, "quota_files": 10}
    ok(cli, "project", "quota", "alpha", "--bytes", "none", "--files", "none")
    assert json.loads(ok(cli, "project", "usage", "alpha", "--json"))["quota_bytes"] is None
    assert "revoked" in ok(cli, "token", "revoke", token["id"])
    assert "revoked" in ok(cli, "token", "list")
    # user errors: one line, no traceback
    assert "role 'god' is not one of viewer, editor, owner" in fails(cli, "project", "grant", "alpha", "alice", "god")
    assert "unknown token" in fails(cli, "token", "revoke", "nope")
    assert "overlaps" in fails(cli, "project", "create", "inner", "/projects/alpha/inner")
    assert "not a duration" in fails(cli, "token", "create", "alice", "--expires", "soon")
    assert "unknown project" in fails(cli, "project", "show", "nope")
    ok(cli, "project", "revoke", "alpha", "alice")
    ok(cli, "user", "rm", "alice")
    ok(cli, "project", "rm", "alpha")
    assert ok(cli, "project", "list") == "" and ok(cli, "user", "list").split() == ["root", "admin"]
