"""``vdir serve``: the REST API against a live server (uvicorn on 127.0.0.1), through HTTP only;
what is stored is checked through the core."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.catalogs import AWKWARD_NAMES, byte_order
from tests.servers.vdir_server import LiveServer, live_server, make_token, serve_process
from tests.servers.vdirs import CLI
from vdir.catalog.base import open_catalog
from vdir.core import VDir
from vdir.hashing import hash_bytes


def poll_job(c: httpx.Client, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = c.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in ("done", "failed"):
            return dict(job)
        assert time.monotonic() < deadline, f"job {job_id} still {job['state']} after {timeout}s"
        time.sleep(0.05)


@pytest.fixture
def c(vdir_server: LiveServer) -> Iterator[httpx.Client]:
    yield vdir_server.client()


def test_openapi_31_and_docs_are_served(vdir_server: LiveServer) -> None:
    anon = vdir_server.client("")
    spec = anon.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.1")
    for p in ("/v1/files", "/v1/ls", "/v1/stat", "/v1/uploads/{upload_id}", "/v1/jobs/{job_id}", "/v1/whoami"):
        assert p in spec["paths"], p
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert anon.get("/docs").status_code == 200


def test_no_or_bad_token_is_401_with_a_bearer_challenge(vdir_server: LiveServer) -> None:
    for token in ("", "vdir_nope_nope"):
        r = vdir_server.client(token).get("/v1/ls", params={"path": "/"})
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == "Bearer"
        assert r.json()["errno"] == "EACCES"
    assert vdir_server.client("", headers={"Authorization": "Basic YTpi"}).get("/v1/whoami").status_code == 401


def test_put_then_get_round_trip_with_etag_and_ranges(c: httpx.Client, vdir_server: LiveServer) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    r = c.put("/v1/files", params={"path": "/d/blob.bin"}, content=data)
    assert r.status_code == 201, r.text
    info = r.json()
    assert info["size"] == len(data) and info["hash"] == hash_bytes(data) and info["path"] == "/d/blob.bin"
    assert vdir_server.vd.cat("/d/blob.bin") == data

    r = c.get("/v1/files", params={"path": "/d/blob.bin"})
    assert r.status_code == 200 and r.content == data
    assert r.headers["etag"] == f'"{hash_bytes(data)}"'
    assert r.headers["content-length"] == str(len(data))
    assert r.headers["accept-ranges"] == "bytes"

    r = c.get("/v1/files", params={"path": "/d/blob.bin"}, headers={"If-None-Match": f'"{hash_bytes(data)}"'})
    assert r.status_code == 304 and r.content == b""
    r = c.get("/v1/files", params={"path": "/d/blob.bin"}, headers={"If-None-Match": '"other"'})
    assert r.status_code == 200

    r = c.get("/v1/files", params={"path": "/d/blob.bin"}, headers={"Range": "bytes=1048570-2097160"})
    assert r.status_code == 206 and r.content == data[1048570:2097161]
    assert r.headers["content-range"] == f"bytes 1048570-2097160/{len(data)}"
    r = c.get("/v1/files", params={"path": "/d/blob.bin"}, headers={"Range": "bytes=-10"})
    assert r.status_code == 206 and r.content == data[-10:]
    r = c.get("/v1/files", params={"path": "/d/blob.bin"}, headers={"Range": f"bytes={len(data) - 5}-"})
    assert r.status_code == 206 and r.content == data[-5:]
    r = c.get("/v1/files", params={"path": "/d/blob.bin"}, headers={"Range": f"bytes={len(data)}-"})
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{len(data)}"


def test_streamed_put_of_unknown_length(c: httpx.Client, vdir_server: LiveServer) -> None:
    parts = [os.urandom(700_000) for _ in range(9)]

    def body() -> Iterator[bytes]:
        yield from parts

    r = c.put("/v1/files", params={"path": "/chunked"}, content=body())
    assert r.status_code == 201, r.text
    assert vdir_server.vd.cat("/chunked") == b"".join(parts)


def test_put_refuses_to_overwrite_without_force(c: httpx.Client, vdir_server: LiveServer) -> None:
    assert c.put("/v1/files", params={"path": "/x"}, content=b"one").status_code == 201
    r = c.put("/v1/files", params={"path": "/x"}, content=b"two")
    assert r.status_code == 409 and r.json()["errno"] == "EEXIST"
    assert c.put("/v1/files", params={"path": "/x", "force": True}, content=b"two").status_code == 201
    assert vdir_server.vd.cat("/x") == b"two"
    r = c.put("/v1/files", params={"path": "/x/under"}, content=b"")
    assert r.status_code in (404, 409) and r.json()["errno"] in ("ENOENT", "ENOTDIR")


def test_a_corrupt_object_is_never_served(c: httpx.Client, vdir_server: LiveServer, tmp_path: Path) -> None:
    data = os.urandom(200_000)
    c.put("/v1/files", params={"path": "/bad"}, content=data)
    key = vdir_server.vd.stat("/bad").replicas[0]["key"]
    obj = tmp_path / "objects" / key
    obj.write_bytes(b"X" + data[1:])
    r = c.get("/v1/files", params={"path": "/bad"})
    assert r.status_code == 502 and r.json()["errno"] == "EIO"


def test_errors_map_to_status_and_errno(c: httpx.Client) -> None:
    r = c.get("/v1/stat", params={"path": "/missing"})
    assert r.status_code == 404 and r.json() == {"error": "/missing: no such file or directory", "errno": "ENOENT"}
    assert c.get("/v1/stat", params={"path": "a//b"}).json()["errno"] == "EINVAL"
    assert c.get("/v1/stat", params={"path": "a//b"}).status_code == 400
    c.post("/v1/mkdir", json={"path": "/dir"})
    r = c.post("/v1/mkdir", json={"path": "/dir"})
    assert r.status_code == 409 and r.json()["errno"] == "EEXIST"
    c.put("/v1/files", params={"path": "/dir/f"}, content=b"1")
    r = c.delete("/v1/files", params={"path": "/dir"})
    assert r.status_code == 409 and r.json()["errno"] == "ENOTEMPTY"
    r = c.get("/v1/files", params={"path": "/dir"})
    assert r.status_code == 400 and r.json()["errno"] == "EISDIR"
    r = c.get("/v1/ls", params={"path": "/", "limit": 0})
    assert r.status_code == 422 and r.json()["errno"] == "EINVAL"


def test_ls_pages_in_byte_order_with_awkward_names(c: httpx.Client, vdir_server: LiveServer) -> None:
    for name in AWKWARD_NAMES:
        vdir_server.vd.put(name.encode(), f"/awk/{name}")
    seen: list[str] = []
    after = None
    while True:
        params: dict[str, Any] = {"path": "/awk", "limit": 3}
        if after is not None:
            params["after"] = after
        page = c.get("/v1/ls", params=params).json()
        assert len(page["items"]) <= 3
        seen += [i["name"] for i in page["items"]]
        after = page["next"]
        if after is None:
            break
    assert seen == byte_order(AWKWARD_NAMES)
    whole = c.get("/v1/ls", params={"path": "/awk"}).json()
    assert [i["name"] for i in whole["items"]] == seen and whole["next"] is None
    one = c.get("/v1/ls", params={"path": f"/awk/{AWKWARD_NAMES[-5]}"}).json()["items"]
    assert [i["path"] for i in one] == [f"/awk/{AWKWARD_NAMES[-5]}"]


def test_recursive_ls_pages_by_path(c: httpx.Client, vdir_server: LiveServer) -> None:
    vd = vdir_server.vd
    for p in ("/t/a/1", "/t/a/2", "/t/b", "/t/a b/3", "/t/c/d/e"):
        vd.put(b"x", p)
    expected = sorted((i.path for i in vd.ls("/t", recursive=True)), key=lambda p: [c.encode() for c in p.split("/")])
    got: list[str] = []
    after = None
    while True:
        params: dict[str, Any] = {"path": "/t", "recursive": True, "limit": 2}
        if after:
            params["after"] = after
        page = c.get("/v1/ls", params=params).json()
        got += [i["path"] for i in page["items"]]
        after = page["next"]
        if not after:
            break
    assert got == expected and len(got) == 9


def test_namespace_operations(c: httpx.Client, vdir_server: LiveServer) -> None:
    vd = vdir_server.vd
    assert c.post("/v1/mkdir", json={"path": "/p/q", "parents": True, "mode": 0o700}).json()["mode"] == 0o700
    c.put("/v1/files", params={"path": "/p/q/f"}, content=b"hello")
    assert c.get("/v1/stat", params={"path": "/p/q/f"}).json()["size"] == 5

    r = c.post("/v1/mv", json={"src": "/p/q/f", "dst": "/p"})
    assert r.status_code == 200 and r.json()["path"] == "/p/f"
    assert c.post("/v1/mv", json={"src": "/p/f", "dst": "/p/g"}).json()["path"] == "/p/g"

    r = c.post("/v1/cp", json={"src": "/p/g", "dst": "/p/h"})
    assert r.status_code == 200 and r.json()["copied"] == 1
    assert vd.cat("/p/h") == b"hello"

    r = c.post("/v1/link", json={"existing": "/p/g", "new": "/p/hard"})
    assert r.status_code == 201 and r.json()["nlink"] == 2
    r = c.post("/v1/link", json={"existing": "g", "new": "/p/soft", "symbolic": True})
    assert r.status_code == 201 and r.json()["type"] == "symlink"
    assert c.get("/v1/readlink", params={"path": "/p/soft"}).json() == {"target": "g"}
    assert c.get("/v1/readlink", params={"path": "/p/g"}).status_code == 400

    r = c.patch("/v1/files", params={"path": "/p/g"}, json={"mode": 0o600, "mtime": 1000.5})
    assert r.status_code == 200 and r.json()["mode"] == 0o600 and r.json()["mtime"] == 1000.5
    assert vd.stat("/p/hard").mode == 0o600

    r = c.post("/v1/mknod", json={"path": "/p/fifo", "kind": "fifo", "mode": 0o640})
    assert r.status_code == 201 and r.json()["type"] == "fifo"

    du = c.get("/v1/du", params={"path": "/p"}).json()
    assert du["bytes"] == 11 and du["files"] >= 2
    found = c.get("/v1/find", params={"path": "/p", "type": "f"}).json()["items"]
    assert sorted(i["path"] for i in found) == ["/p/g", "/p/h", "/p/hard"]
    assert [i["path"] for i in c.get("/v1/find", params={"path": "/p", "name": "h*"}).json()["items"]] == ["/p/h", "/p/hard"]

    r = c.delete("/v1/files", params={"path": "/p", "recursive": True})
    assert r.status_code == 200 and r.json() == {"removed": 7, "trashed": False}
    assert not vd.exists("/p")


def test_entries_by_id(c: httpx.Client, vdir_server: LiveServer) -> None:
    vd = vdir_server.vd
    for n in ("b", "a", "c"):
        vd.put(n.encode(), f"/e/{n}")
    eid = c.get("/v1/stat", params={"path": "/e"}).json()["id"]
    entry = c.get(f"/v1/entries/{eid}").json()
    assert entry["name"] == "e" and entry["type"] == "dir"
    kids = c.get(f"/v1/entries/{eid}/children", params={"limit": 2}).json()
    assert [k["name"] for k in kids["items"]] == ["a", "b"] and kids["next"] == "b"
    rest = c.get(f"/v1/entries/{eid}/children", params={"after": "b"}).json()
    assert [k["name"] for k in rest["items"]] == ["c"] and rest["next"] is None
    child = c.get(f"/v1/entries/{eid}/child", params={"name": "c"}).json()
    assert child["hash"] == hash_bytes(b"c")
    assert c.get(f"/v1/entries/{eid}/child", params={"name": "zz"}).status_code == 404
    assert c.get("/v1/entries/999999").status_code == 404


def test_recursive_copy_is_a_job_recorded_in_the_catalog(vdir_server: LiveServer, tmp_path: Path) -> None:
    c = vdir_server.client()
    vd = vdir_server.vd
    for i in range(5):
        vd.put(f"file {i}".encode(), f"/src/sub/{i}.txt")
    r = c.post("/v1/cp", json={"src": "/src", "dst": "/dst", "recursive": True})
    assert r.status_code == 202, r.text
    job = r.json()["job"]
    assert job["kind"] == "cp" and job["state"] in ("queued", "running", "done")
    done = poll_job(c, job["id"])
    assert done["state"] == "done", done
    assert done["progress"]["done"] == done["progress"]["total"] == 5  # files
    assert done["result"] == {"copied": 7}  # files and directories
    assert vd.cat("/dst/sub/3.txt") == b"file 3"
    assert job["id"] in [j["id"] for j in c.get("/v1/jobs").json()["items"]]
    # the record outlives this server: another server on the same catalog reports it
    with live_server(vd, tmp_path / "other-state") as other:
        assert other.client().get(f"/v1/jobs/{job['id']}").json()["state"] == "done"
    r = c.post("/v1/cp", json={"src": "/nosuch", "dst": "/dst", "recursive": True})
    assert r.status_code == 404  # checked before a job is made
    assert c.get("/v1/jobs/nosuchjob").status_code == 404


def test_admin_endpoints(c: httpx.Client, vdir_server: LiveServer) -> None:
    vd = vdir_server.vd
    vd.put(b"data", "/adm/f")
    names = [b["name"] for b in c.get("/v1/backends").json()["items"]]
    assert names == ["local", "spare"]
    assert c.get("/v1/policy").json() == {"text": None, "version": 0}
    policy = "rules:\n  - match: /adm/**\n    copies: 2\n"
    r = c.put("/v1/policy", json={"text": policy})
    assert r.status_code == 200, r.text
    assert c.get("/v1/policy").json()["version"] == r.json()["version"] >= 1
    assert c.put("/v1/policy", json={"text": "rules: [nonsense"}).status_code == 400
    assert "tasks" in c.get("/v1/placement/status").json()
    job = poll_job(c, c.post("/v1/placement/run", json={"workers": 1}).json()["id"])
    assert job["state"] == "done", job
    assert sorted(r["backend"] for r in vd.stat("/adm/f").replicas) == ["local", "spare"]
    job = poll_job(c, c.post("/v1/fsck", json={"deep": True}).json()["id"])
    assert job["state"] == "done" and job["result"]["exit_code"] == 0, job
    assert c.get("/v1/vms").json() == {"items": []}
    assert c.get("/v1/whoami").json()["admin"] is True


def test_a_job_whose_server_died_is_marked_failed(vd: VDir, tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    now = time.time()
    vd.catalog.put_record("jobs", "orphan", {
        "id": "orphan", "kind": "fsck", "state": "running", "user": "admin", "progress": {"done": 0, "total": None},
        "result": None, "error": None, "created": now, "updated": now, "node": f"{socket.gethostname()}-{dead.pid}"})
    with live_server(vd, tmp_path / "state") as live:
        job = live.client().get("/v1/jobs/orphan").json()
    assert job["state"] == "failed" and "stopped" in job["error"]


def test_vms_boot_list_and_delete_through_the_api(cli: CLI) -> None:
    cli.run("init", check=True)
    (cli.home / "f").write_text("data\n")
    cli.run("put", str(cli.home / "f"), "/data/f", check=True)
    with VDir(open_catalog(f"sqlite:///{cli.home / '.local/share/vdir/catalog.db'}")) as vd:
        token = make_token(vd, "root", admin=True, scopes=("read", "write", "admin"))
        member = make_token(vd, "member")
    with serve_process(cli.env, cli.home) as (url, _):
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
            r = c.post("/v1/vms", json={"near": ["/data"], "name": "job1", "command": ["cat vdir/data/f"]})
            assert r.status_code == 201, r.text
            [vm] = r.json()["items"]
            assert vm["name"] == "job1" and vm["provider"] == "local"
            assert [v["name"] for v in c.get("/v1/vms").json()["items"]] == ["job1"]
            assert httpx.get(f"{url}/v1/vms", headers={"Authorization": f"Bearer {member}"}).status_code == 403
            assert c.delete("/v1/vms/job1").json()["name"] == "job1"
            assert c.get("/v1/vms").json()["items"] == []
            assert c.delete("/v1/vms/job1").status_code == 404


def test_old_finished_jobs_and_stale_upload_sessions_are_forgotten(vd: VDir, tmp_path: Path) -> None:
    from vdir.server.jobs import Jobs
    from vdir.server.uploads import Uploads

    old = time.time() - 30 * 86400
    vd.catalog.put_record("jobs", "ancient", {"id": "ancient", "kind": "cp", "state": "done", "user": "u",
                                              "progress": {"done": 1, "total": 1}, "result": None, "error": None,
                                              "created": old, "updated": old, "node": "elsewhere-1"})
    jobs = Jobs(vd.catalog)
    jobs.close()
    assert [k for k, _, _ in vd.catalog.list_records("jobs")] == []
    uploads = Uploads(tmp_path / "uploads")
    stale = uploads.create("u", "/f", 10)
    fresh = uploads.create("u", "/g", 10)
    for f in (tmp_path / "uploads" / stale.id).iterdir():
        os.utime(f, (old, old))
    assert uploads.expire() == 1
    assert [p.name for p in (tmp_path / "uploads").iterdir()] == [fresh.id]


def test_slow_uploads_do_not_starve_other_requests(vdir_server: LiveServer) -> None:
    """Each streamed upload holds a worker thread while its body trickles in; 60 of them
    (more than the 40 threads a FastAPI app gets by default) leave room for everyone else."""
    host, port = vdir_server.url.removeprefix("http://").split(":")
    held = []
    try:
        for i in range(60):
            s = socket.create_connection((host, int(port)))
            s.sendall((f"PUT /v1/files?path=/slow/{i} HTTP/1.1\r\nHost: {host}\r\n"
                       f"Authorization: Bearer {vdir_server.admin_token}\r\nContent-Length: 4000000\r\n\r\n").encode()
                      + b"x" * 1000)
            held.append(s)
        c = vdir_server.client(timeout=30)
        assert c.get("/v1/whoami").status_code == 200
        assert c.put("/v1/files", params={"path": "/fast"}, content=b"quick").status_code == 201
    finally:
        for s in held:
            s.close()


def test_a_body_that_stops_arriving_is_given_up(vdir_server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    import vdir.server.bodies

    monkeypatch.setattr(vdir.server.bodies, "IDLE_SECONDS", 0.5)
    host, port = vdir_server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as s:
        s.sendall((f"PUT /v1/files?path=/stalled HTTP/1.1\r\nHost: {host}\r\n"
                   f"Authorization: Bearer {vdir_server.admin_token}\r\nContent-Length: 4000000\r\n\r\n").encode()
                  + b"x" * 1000)
        answer = s.recv(65536).decode(errors="replace")
    assert answer.startswith("HTTP/1.1 503"), answer
    assert "no byte of the body arrived" in answer
    assert not vdir_server.vd.exists("/stalled")


def test_the_api_on_a_mongo_catalog(mongo_catalog_url: str, tmp_path: Path) -> None:
    """Users, tokens, jobs and entries on the other catalog engine, through the API."""
    from vdir.access import Accounts
    from vdir.admin import add_backend

    (tmp_path / "objects").mkdir()
    vd = VDir(open_catalog(mongo_catalog_url), default_backend="local")
    try:
        add_backend(vd, "local", f"file://{tmp_path / 'objects'}", check=False)
        accounts = Accounts(vd.catalog)
        accounts.create_project("p", ["/p"])
        with live_server(vd, tmp_path / "state") as live:
            admin = live.client()
            member = live.client(live.token("m"))
            accounts.grant("p", "m", "editor")
            assert member.put("/v1/files", params={"path": "/p/a/f"}, content=b"hello").status_code == 201
            assert member.get("/v1/files", params={"path": "/p/a/f"}).content == b"hello"
            assert member.put("/v1/files", params={"path": "/elsewhere"}, content=b"x").status_code == 404
            job = member.post("/v1/cp", json={"src": "/p/a", "dst": "/p/b", "recursive": True}).json()["job"]
            assert poll_job(member, job["id"])["state"] == "done"
            assert [i["name"] for i in member.get("/v1/ls", params={"path": "/p"}).json()["items"]] == ["a", "b"]
            sid = member.post("/v1/uploads", json={"path": "/p/up", "size": 4}).json()["id"]
            member.put(f"/v1/uploads/{sid}", params={"offset": 0}, content=b"data")
            assert member.post(f"/v1/uploads/{sid}/commit").status_code == 201
            assert admin.get("/v1/stat", params={"path": "/p/up"}).json()["size"] == 4
    finally:
        vd.close()


def _workers(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return sorted(int(c) for c in children)


def test_several_worker_processes_serve_one_port_and_share_everything(cli: CLI) -> None:
    """``vdir serve --workers 2``: two processes answer on one port; what one stores the other
    reads, an upload session goes on in whichever process gets the next chunk, access changes
    apply in both at once; a worker that dies is replaced; SIGTERM stops them all."""
    cli.run("init", check=True)
    with VDir(open_catalog(f"sqlite:///{cli.home / '.local/share/vdir/catalog.db'}")) as vd:
        token = make_token(vd, "root", admin=True, scopes=("read", "write", "admin"))
        spare = make_token(vd, "root", admin=True, scopes=("read",))
    with serve_process(cli.env, cli.home, args=("--workers", "2")) as (url, proc):
        deadline = time.monotonic() + 30
        while len(_workers(proc.pid)) < 2:
            assert time.monotonic() < deadline, "two workers did not start"
            time.sleep(0.1)
        first = _workers(proc.pid)
        auth = {"Authorization": f"Bearer {token}"}
        for i in range(20):  # a new connection each time: the kernel spreads them over both
            assert httpx.put(f"{url}/v1/files", params={"path": f"/w/f{i}"}, content=b"%d" % i, headers=auth).status_code == 201
            assert httpx.get(f"{url}/v1/files", params={"path": f"/w/f{i}"}, headers=auth).content == b"%d" % i
        data = os.urandom(300_000)
        s = httpx.post(f"{url}/v1/uploads", json={"path": "/w/big", "size": len(data)}, headers=auth).json()
        for off in range(0, len(data), 100_000):
            r = httpx.put(f"{url}/v1/uploads/{s['id']}", params={"offset": off}, content=data[off:off + 100_000],
                          headers=auth)
            assert r.status_code == 200, r.text
        assert httpx.post(f"{url}/v1/uploads/{s['id']}/commit", headers=auth).status_code == 201
        assert httpx.get(f"{url}/v1/files", params={"path": "/w/big"}, headers=auth).content == data
        assert all(httpx.get(f"{url}/v1/whoami", headers={"Authorization": f"Bearer {spare}"}).status_code == 200
                   for _ in range(6))
        spare_id = spare.split("_")[1]
        assert httpx.delete(f"{url}/v1/tokens/{spare_id}", headers=auth).status_code == 200
        assert all(httpx.get(f"{url}/v1/whoami", headers={"Authorization": f"Bearer {spare}"}).status_code == 401
                   for _ in range(6))  # whichever worker answers

        os.kill(first[0], signal.SIGKILL)
        while len(_workers(proc.pid)) < 2 or first[0] in _workers(proc.pid):
            assert time.monotonic() < deadline + 30, "the killed worker was not replaced"
            time.sleep(0.1)
        assert httpx.get(f"{url}/v1/files", params={"path": "/w/f3"}, headers=auth).content == b"3"
        workers = _workers(proc.pid)
        proc.terminate()
        assert proc.wait(30) == 0
        for pid in workers:
            assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
