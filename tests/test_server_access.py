"""Authorisation over HTTP: every endpoint × every role (viewer, editor, owner, no role, admin) ×
own/other project — allowed, or 403 (visible, not permitted) / 404 (invisible) — and never a
leak: listings, stat, find, du, trash and error bodies show nothing of what a caller may not
see.  Tokens expired, revoked, of a removed user, and short of a scope, over HTTP."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers.vdir_server import LiveServer, make_token, serve_in_thread
from vdir.access import Accounts
from vdir.core import VDir
from vdir.server.app import create_app

ROOT = Path(__file__).resolve().parents[1]

ROLES = ("viewer", "editor", "owner", "norole", "admin")
OWN, OTHER = "/projects/alpha", "/projects/beta"


@dataclass
class World:
    live: LiveServer
    clients: dict[str, httpx.Client]
    ids: dict[str, int]


@pytest.fixture
def world(vdir_server: LiveServer) -> World:
    vd = vdir_server.vd
    accounts = Accounts(vd.catalog)
    accounts.create_project("alpha", [OWN])
    accounts.create_project("beta", [OTHER])
    for base in (OWN, OTHER):
        vd.put(b"content of " + base.encode(), f"{base}/file.txt")
        vd.put(b"x", f"{base}/dir/x")
        vd.symlink("file.txt", f"{base}/link")
    vd.put(b"outside every project", "/top-secret.txt")
    clients = {}
    for role in ROLES:
        token = vdir_server.token(role, admin=role == "admin",
                                  scopes=("read", "write", "admin") if role == "admin" else ("read", "write"))
        if role in ("viewer", "editor", "owner"):
            accounts.grant("alpha", role, role)
        clients[role] = vdir_server.client(token)
    ids = {f"{b}{p}": vd.stat(f"{b}{p}").inode for b in (OWN, OTHER) for p in ("", "/file.txt")}
    return World(live=vdir_server, clients=clients, ids=ids)


Op = Callable[[httpx.Client, World, str, str], httpx.Response]
"""(client, world, project base path, a tag unique to this call) → response."""


def seeded(name: str) -> Callable[[World, str, str], None]:
    def seed(w: World, base: str, tag: str) -> None:
        w.live.vd.put(b"to be changed", f"{base}/{name}-{tag}")

    return seed


READ: dict[str, Op] = {
    "stat": lambda c, w, b, t: c.get("/v1/stat", params={"path": f"{b}/file.txt"}),
    "ls": lambda c, w, b, t: c.get("/v1/ls", params={"path": b}),
    "ls -R": lambda c, w, b, t: c.get("/v1/ls", params={"path": b, "recursive": True}),
    "get": lambda c, w, b, t: c.get("/v1/files", params={"path": f"{b}/file.txt"}),
    "get range": lambda c, w, b, t: c.get("/v1/files", params={"path": f"{b}/file.txt"}, headers={"Range": "bytes=0-3"}),
    "du": lambda c, w, b, t: c.get("/v1/du", params={"path": b}),
    "find": lambda c, w, b, t: c.get("/v1/find", params={"path": b, "name": "*.txt"}),
    "readlink": lambda c, w, b, t: c.get("/v1/readlink", params={"path": f"{b}/link"}),
    "entry": lambda c, w, b, t: c.get(f"/v1/entries/{w.ids[b + '/file.txt']}"),
    "children": lambda c, w, b, t: c.get(f"/v1/entries/{w.ids[b]}/children"),
    "child": lambda c, w, b, t: c.get(f"/v1/entries/{w.ids[b]}/child", params={"name": "file.txt"}),
}
URL_OK = 409  # the local backend cannot pre-sign: a reader is told so, anyone else gets 404
WRITE: dict[str, Op] = {
    "put": lambda c, w, b, t: c.put("/v1/files", params={"path": f"{b}/new-{t}"}, content=b"new"),
    "put force": lambda c, w, b, t: c.put("/v1/files", params={"path": f"{b}/file.txt", "force": True},
                                         content=b"content of " + b.encode()),
    "mkdir": lambda c, w, b, t: c.post("/v1/mkdir", json={"path": f"{b}/d-{t}"}),
    "rm": lambda c, w, b, t: c.delete("/v1/files", params={"path": f"{b}/rm-{t}"}),
    "mv": lambda c, w, b, t: c.post("/v1/mv", json={"src": f"{b}/mv-{t}", "dst": f"{b}/moved-{t}"}),
    "cp": lambda c, w, b, t: c.post("/v1/cp", json={"src": f"{b}/file.txt", "dst": f"{b}/cp-{t}"}),
    "cp -r": lambda c, w, b, t: c.post("/v1/cp", json={"src": f"{b}/dir", "dst": f"{b}/cpr-{t}", "recursive": True}),
    "hardlink": lambda c, w, b, t: c.post("/v1/link", json={"existing": f"{b}/file.txt", "new": f"{b}/hl-{t}"}),
    "symlink": lambda c, w, b, t: c.post("/v1/link", json={"existing": "file.txt", "new": f"{b}/sl-{t}", "symbolic": True}),
    "patch": lambda c, w, b, t: c.patch("/v1/files", params={"path": f"{b}/file.txt"}, json={"mode": 0o644}),
    "mknod": lambda c, w, b, t: c.post("/v1/mknod", json={"path": f"{b}/fifo-{t}", "kind": "fifo"}),
    "upload": lambda c, w, b, t: c.post("/v1/uploads", json={"path": f"{b}/up-{t}", "size": 3}),
}
SEED = {"rm": seeded("rm"), "mv": seeded("mv")}
ADMIN: dict[str, Callable[[httpx.Client], httpx.Response]] = {
    "backends": lambda c: c.get("/v1/backends"),
    "backend rm": lambda c: c.delete("/v1/backends/nosuch"),
    "policy": lambda c: c.get("/v1/policy"),
    "policy put": lambda c: c.put("/v1/policy", json={"text": "rules:\n  - match: /projects/**\n    copies: 1\n"}),
    "placement status": lambda c: c.get("/v1/placement/status"),
    "placement run": lambda c: c.post("/v1/placement/run", json={"workers": 1}),
    "fsck": lambda c: c.post("/v1/fsck", json={}),
    "vms": lambda c: c.get("/v1/vms"),
    "users": lambda c: c.get("/v1/users"),
    "user add": lambda c: c.post("/v1/users", json={"name": f"u-{time.monotonic_ns()}"}),
    "project create": lambda c: c.post("/v1/projects", json={"name": f"p{time.monotonic_ns()}",
                                                             "prefixes": [f"/q/{time.monotonic_ns()}"]}),
    "quota": lambda c: c.put("/v1/projects/alpha/quota", json={"bytes": 10**9, "files": None}),
    "others' tokens": lambda c: c.get("/v1/tokens", params={"user": "admin"}),
    "trash keep": lambda c: c.put("/v1/trash/keep", json={"keep_seconds": 0}),
}
ADMIN_OK = {"backend rm": 404}  # an administrator is told the backend does not exist


def expected(kind: str, role: str, where: str) -> str:
    """``ok``, ``403`` or ``404``."""
    if role == "admin":
        return "ok"
    if kind == "admin":
        return "403"
    if where == "other" or role == "norole":
        return "404"
    if kind == "write" and role == "viewer":
        return "403"
    return "ok"


def outcome(r: httpx.Response, ok: int | None = None) -> str:
    if ok is not None and r.status_code == ok:
        return "ok"
    if r.status_code in (403, 404):
        body = r.json()
        assert set(body) == {"error", "errno"}, body
        assert body["errno"] == ("EACCES" if r.status_code == 403 else "ENOENT"), body
        return str(r.status_code)
    assert ok is None and r.is_success, (r.status_code, r.text)
    return "ok"


def test_every_endpoint_by_role_and_project(world: World) -> None:
    got: dict[tuple[str, str, str], str] = {}
    want: dict[tuple[str, str, str], str] = {}
    for role in ROLES:
        c = world.clients[role]
        for where, base in (("own", OWN), ("other", OTHER)):
            for kind, ops in (("read", READ), ("write", WRITE)):
                for name, op in ops.items():
                    tag = f"{role}-{name.replace(' ', '')}"
                    if name in SEED:
                        SEED[name](world, base, tag)
                    got[(name, role, where)] = outcome(op(c, world, base, tag))
                    want[(name, role, where)] = expected(kind, role, where)
            got[("url", role, where)] = outcome(c.get("/v1/files/url", params={"path": f"{base}/file.txt"}), URL_OK)
            want[("url", role, where)] = expected("read", role, where)
        for name, admin_op in ADMIN.items():
            got[(name, role, "-")] = outcome(admin_op(c), ADMIN_OK.get(name))
            want[(name, role, "-")] = expected("admin", role, "-")
    wrong = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
    assert not wrong, "\n".join(f"{op} as {role} in {where}: got {g}, want {w}" for (op, role, where), (g, w) in wrong.items())
    assert len(got) == len(ROLES) * (2 * (len(READ) + len(WRITE) + 1) + len(ADMIN))


def test_hidden_paths_answer_exactly_as_missing_ones(world: World) -> None:
    """A path of the other project and a path that does not exist get the same status and the
    same message (with their own path in it), for every kind of request."""
    c = world.clients["editor"]
    for name, op in {**READ, **WRITE}.items():
        if name in ("entry", "children", "child"):
            continue
        hidden = op(c, world, OTHER, "leak")
        missing = op(c, world, "/projects/gamma", "leak")
        assert hidden.status_code == missing.status_code == 404, (name, hidden.text, missing.text)
        assert hidden.json()["error"].replace("beta", "gamma") == missing.json()["error"], name
    hidden_id = c.get(f"/v1/entries/{world.ids[OTHER + '/file.txt']}").json()["error"]
    missing_id = c.get("/v1/entries/987654").json()["error"]
    assert hidden_id.replace(str(world.ids[OTHER + "/file.txt"]), "987654") == missing_id
    top = c.get("/v1/stat", params={"path": "/top-secret.txt"})
    assert top.status_code == 404 and top.json()["error"] == "/top-secret.txt: no such file or directory"


def test_listings_search_and_usage_show_only_what_is_visible(world: World) -> None:
    c = world.clients["viewer"]
    assert [i["path"] for i in c.get("/v1/ls", params={"path": "/"}).json()["items"]] == ["/projects"]
    assert [i["path"] for i in c.get("/v1/ls", params={"path": "/projects"}).json()["items"]] == [OWN]
    every = [i["path"] for i in c.get("/v1/ls", params={"path": "/", "recursive": True}).json()["items"]]
    assert every and all(p == "/projects" or p.startswith(OWN) for p in every), every
    found = [i["path"] for i in c.get("/v1/find", params={"path": "/"}).json()["items"]]
    assert found and all(p in ("/", "/projects") or p.startswith(OWN) for p in found), found
    du = c.get("/v1/du", params={"path": "/"}).json()
    assert du["bytes"] == len(b"content of " + OWN.encode()) + 1 + len("file.txt")
    root = world.ids  # the root's children by id: only the visible ones
    kids = c.get("/v1/entries/1/children").json()["items"]
    assert [k["name"] for k in kids] == ["projects"], root
    projects = c.get("/v1/projects").json()["items"]
    assert [p["name"] for p in projects] == ["alpha"]
    assert projects[0]["members"] == {"viewer": "viewer"}  # the others' names: for owners and admins
    assert len(world.clients["owner"].get("/v1/projects/alpha").json()["members"]) == 3
    assert c.get("/v1/projects/beta").status_code == 404
    assert c.get("/v1/projects/beta/usage").status_code == 404
    assert c.get("/v1/projects/alpha/usage").json()["files"] == 2
    r = c.patch("/v1/files", params={"path": "/projects"}, json={"mode": 0o777})
    assert r.status_code == 403  # an ancestor of the user's prefix: visible, never writable
    r = c.put("/v1/files", params={"path": "/projects/new"}, content=b"x")
    assert r.status_code == 404  # beside the user's prefix: invisible
    assert world.clients["norole"].get("/v1/projects").json()["items"] == []
    assert all(b"beta" not in r.content for r in (c.get("/v1/ls", params={"path": "/", "recursive": True}),
                                                   c.get("/v1/find", params={"path": "/"})))


def test_members_are_managed_by_owners_and_admins(world: World) -> None:
    for role, status in (("viewer", 403), ("editor", 403), ("norole", 404)):
        r = world.clients[role].put("/v1/projects/alpha/members/norole", json={"role": "viewer"})
        assert r.status_code == status, (role, r.text)
    assert world.clients["owner"].put("/v1/projects/alpha/members/norole", json={"role": "viewer"}).status_code == 200
    assert world.clients["norole"].get("/v1/stat", params={"path": f"{OWN}/file.txt"}).status_code == 200
    assert world.clients["owner"].delete("/v1/projects/alpha/members/norole").status_code == 200
    assert world.clients["norole"].get("/v1/stat", params={"path": f"{OWN}/file.txt"}).status_code == 404


def test_jobs_and_upload_sessions_belong_to_their_user(world: World) -> None:
    editor, owner = world.clients["editor"], world.clients["owner"]
    job = editor.post("/v1/cp", json={"src": f"{OWN}/dir", "dst": f"{OWN}/copy", "recursive": True}).json()["job"]
    assert editor.get(f"/v1/jobs/{job['id']}").status_code == 200
    assert owner.get(f"/v1/jobs/{job['id']}").status_code == 404
    assert job["id"] not in [j["id"] for j in owner.get("/v1/jobs").json()["items"]]
    assert job["id"] in [j["id"] for j in world.clients["admin"].get("/v1/jobs").json()["items"]]
    sid = editor.post("/v1/uploads", json={"path": f"{OWN}/up", "size": 2}).json()["id"]
    for call in (lambda c: c.get(f"/v1/uploads/{sid}"), lambda c: c.put(f"/v1/uploads/{sid}?offset=0", content=b"ab"),
                 lambda c: c.post(f"/v1/uploads/{sid}/commit"), lambda c: c.delete(f"/v1/uploads/{sid}")):
        assert call(owner).status_code == 404
    assert editor.put(f"/v1/uploads/{sid}?offset=0", content=b"ab").json()["offset"] == 2
    assert editor.post(f"/v1/uploads/{sid}/commit").status_code == 201


def test_trash_over_http_shows_each_user_their_own_projects(world: World) -> None:
    assert world.clients["viewer"].get("/v1/trash/keep").json() == {"keep_seconds": 0}
    assert world.clients["admin"].put("/v1/trash/keep", json={"keep_seconds": 3600}).json() == {"keep_seconds": 3600}
    assert world.clients["viewer"].get("/v1/trash/keep").json() == {"keep_seconds": 3600}
    for base in (OWN, OTHER):
        world.live.vd.put(b"doomed", f"{base}/doomed")
    editor, viewer, norole = world.clients["editor"], world.clients["viewer"], world.clients["norole"]
    r = editor.delete("/v1/files", params={"path": f"{OWN}/doomed"})
    assert r.json() == {"removed": 1, "trashed": True}
    assert world.clients["admin"].delete("/v1/files", params={"path": f"{OTHER}/doomed"}).json()["trashed"] is True
    items = viewer.get("/v1/trash").json()["items"]
    assert [i["path"] for i in items] == [f"{OWN}/doomed"]
    assert norole.get("/v1/trash").json()["items"] == []
    assert sorted(i["path"] for i in world.clients["admin"].get("/v1/trash").json()["items"]) == [f"{OWN}/doomed", f"{OTHER}/doomed"]
    tid = items[0]["id"]
    assert viewer.post(f"/v1/trash/{tid}/restore").status_code == 403
    hidden = [i["id"] for i in world.clients["admin"].get("/v1/trash").json()["items"] if i["path"].startswith(OTHER)][0]
    assert editor.post(f"/v1/trash/{hidden}/restore").status_code == 404
    r = editor.post(f"/v1/trash/{tid}/restore")
    assert r.status_code == 200 and r.json()["path"] == f"{OWN}/doomed"
    assert editor.get("/v1/files", params={"path": f"{OWN}/doomed"}).content == b"doomed"


def test_quota_refusal_over_http_leaves_nothing(world: World) -> None:
    world.clients["admin"].put("/v1/projects/alpha/quota", json={"bytes": 100, "files": None})
    editor = world.clients["editor"]
    r = editor.put("/v1/files", params={"path": f"{OWN}/big"}, content=b"x" * 500)
    assert r.status_code == 507 and r.json()["errno"] == "ENOSPC", r.text
    assert editor.get("/v1/stat", params={"path": f"{OWN}/big"}).status_code == 404

    def chunks() -> Any:
        yield b"y" * 300
        yield b"y" * 300

    r = editor.put("/v1/files", params={"path": f"{OWN}/streamed"}, content=chunks())  # size unknown until the end
    assert r.status_code == 507, r.text
    assert editor.get("/v1/stat", params={"path": f"{OWN}/streamed"}).status_code == 404
    r = editor.post("/v1/uploads", json={"path": f"{OWN}/session", "size": 500})
    assert r.status_code == 507  # refused before any byte reaches the server
    assert not any((world.live.state_dir / "uploads").iterdir())


def wait_until_401(c: httpx.Client, timeout: float = 30.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        r = c.get("/v1/whoami")
        if r.status_code == 401:
            return r
        assert time.monotonic() < deadline, "the token still works"
        time.sleep(0.05)


def test_expired_revoked_and_orphaned_tokens_are_refused(world: World) -> None:
    live = world.live
    short = live.client(live.token("editor", expires_in=0.5))
    r = wait_until_401(short)
    assert r.json() == {"error": "token expired", "errno": "EACCES"} and r.headers["www-authenticate"] == "Bearer"

    editor = world.clients["editor"]
    made = editor.post("/v1/tokens", json={"name": "laptop", "scopes": ["read"]})
    assert made.status_code == 201 and made.json()["secret"].startswith("vdir_")
    spare = live.client(made.json()["secret"])
    assert spare.get("/v1/whoami").json() == {"user": "editor", "admin": False, "scopes": ["read"]}
    assert spare.put("/v1/files", params={"path": f"{OWN}/by-read-token"}, content=b"x").status_code == 403
    assert editor.post("/v1/tokens", json={"scopes": ["admin"]}).status_code == 403
    listed = editor.get("/v1/tokens").json()["items"]
    assert all(t["user"] == "editor" and "hash" not in t for t in listed)
    token_id = made.json()["token"]["id"]
    assert world.clients["owner"].delete(f"/v1/tokens/{token_id}").status_code == 404  # not theirs
    assert editor.delete(f"/v1/tokens/{token_id}").status_code == 200
    r = spare.get("/v1/whoami")
    assert r.status_code == 401 and r.json()["error"] == "token revoked"

    gone = live.client(live.token("leaver"))
    assert gone.get("/v1/whoami").status_code == 200
    assert world.clients["admin"].delete("/v1/users/leaver").status_code == 200
    assert gone.get("/v1/whoami").status_code == 401
    assert live.client("vdir_forged_secret").get("/v1/whoami").json()["error"] == "unknown token"


def test_access_changed_by_another_process_applies_at_the_next_request(world: World) -> None:
    """The server keeps what a token stands for between requests; a change made by another
    process sharing the catalog (here: a script, as the CLI would) must still apply at once."""
    live = world.live
    viewer = world.clients["viewer"]
    other = live.token("other")
    assert viewer.get("/v1/stat", params={"path": f"{OWN}/file.txt"}).status_code == 200
    assert live.client(other).get("/v1/whoami").status_code == 200

    def elsewhere(code: str) -> None:
        script = ("import sys\nfrom vdir.access import Accounts\nfrom vdir.catalog.base import open_catalog\n"
                  "acc = Accounts(open_catalog('sqlite:///' + sys.argv[1]))\n" + code)
        subprocess.run([sys.executable, "-c", script, live.vd.catalog.path], check=True, cwd=ROOT)

    elsewhere("acc.revoke('alpha', 'viewer')")
    r = viewer.get("/v1/stat", params={"path": f"{OWN}/file.txt"})
    assert r.status_code == 404 and "file.txt" in r.json()["error"]
    elsewhere("acc.grant('alpha', 'viewer', 'viewer')")
    assert viewer.get("/v1/stat", params={"path": f"{OWN}/file.txt"}).status_code == 200
    elsewhere(f"acc.revoke_token({other.split('_')[1]!r})")
    r = live.client(other).get("/v1/whoami")
    assert r.status_code == 401 and r.json()["error"] == "token revoked"


def test_a_change_that_does_not_replace_the_generation_is_seen_after_the_recheck(vd: VDir, tmp_path: Path) -> None:
    """A writer that does not replace the access generation (an older vdir revoking a token by
    writing its record) is seen once what the server keeps is read afresh."""
    app = create_app(vd, state_dir=tmp_path / "state")
    app.state.auth.RECHECK = 0.5
    secret = make_token(vd, "old")
    with serve_in_thread(app) as url:
        headers = {"Authorization": f"Bearer {secret}"}
        assert httpx.get(f"{url}/v1/whoami", headers=headers).status_code == 200
        token_id = secret.split("_")[1]
        doc, version = vd.catalog.get_record("tokens", token_id)
        vd.catalog.put_record("tokens", token_id, dict(doc, revoked=True), expected_version=version)
        deadline = time.monotonic() + 10
        while (r := httpx.get(f"{url}/v1/whoami", headers=headers)).status_code == 200:
            assert time.monotonic() < deadline, "the revoked token still works"
            time.sleep(0.1)
        assert r.status_code == 401 and r.json()["error"] == "token revoked"
