"""Remote mode against a live server (issue 14 items 4 and 6): ``vdir login``, the CLI,
``vdir.connect()`` and fsspec/pandas with no catalog and no cloud credentials on the client;
direct transfers through pre-signed URLs (moto S3) verified by hash; resumed uploads and retries
through a fault-injecting proxy; permissions as a client sees them."""

from __future__ import annotations

import errno
import io
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import httpx
import pandas as pd
import pytest

import vdir
from tests.faultproxy import FaultProxy
from tests.remote_server import LiveServer, live_server
from tests.servers.azure import make_azure_backend
from tests.servers.s3 import S3Server, make_s3_backend
from tests.servers.vdirs import CLI, fails, ok
from vdir.errors import (
    AlreadyExists,
    AuthenticationError,
    Conflict,
    IntegrityError,
    IsADirectory,
    NoSpace,
    NotFound,
    NotSupported,
    PermissionDenied,
    TransientError,
    VDirError,
)
from vdir.hashing import hash_bytes
from vdir.remote import RemoteVDir
from vdir.remote.http import error_from

MiB = 1024 * 1024


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    with live_server(tmp_path / "server") as live:
        live.user("alice")
        yield live


@pytest.fixture
def remote(server: LiveServer) -> Iterator[RemoteVDir]:
    with RemoteVDir(server.url, server.tokens["admin"], direct_min=MiB, chunked_min=MiB) as vd:
        yield vd


# -- the one error mapping ---------------------------------------------------------------------
def answer(status: int, body: object | None = None) -> httpx.Response:
    content = json.dumps(body).encode() if body is not None else b"<html>proxy says no</html>"
    return httpx.Response(status, content=content, request=httpx.Request("GET", "http://x/v1/stat"))


def test_errors_come_back_as_the_core_raised_them() -> None:
    cases = [
        (answer(404, {"error": "/a: no such file or directory", "errno": "ENOENT"}), NotFound),
        (answer(409, {"error": "/a: exists", "errno": "EEXIST"}), AlreadyExists),
        (answer(409, {"error": "/a: changed", "errno": "ESTALE"}), Conflict),
        (answer(400, {"error": "/a: is a directory", "errno": "EISDIR"}), IsADirectory),
        (answer(403, {"error": "/a: permission denied", "errno": "EACCES"}), PermissionDenied),
        (answer(401, {"error": "token expired", "errno": "EACCES"}), AuthenticationError),
        (answer(507, {"error": "quota of project p exceeded", "errno": "ENOSPC"}), NoSpace),
        (answer(502, {"error": "/a: no replica matches", "errno": "EIO"}), IntegrityError),
        (answer(503, {"error": "busy", "errno": "EAGAIN"}), TransientError),
        (answer(404), NotFound),  # no JSON body: the status decides
        (answer(503), TransientError),
    ]
    for response, cls in cases:
        err = error_from(response)
        assert type(err) is cls, (response.status_code, response.content, err)
        if response.content.startswith(b"{"):  # the core's own line
            assert str(err) == json.loads(response.content)["error"]
    assert error_from(answer(404, {"error": "x", "errno": "ENOENT"})).errno == errno.ENOENT


# -- the API ----------------------------------------------------------------------------------
def test_connect_returns_a_remote_vdir_from_the_environment(server: LiveServer, monkeypatch: pytest.MonkeyPatch,
                                                            tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "nowhere"))
    monkeypatch.setenv("VDIR_REMOTE", server.url)
    monkeypatch.setenv("VDIR_TOKEN", server.tokens["admin"])
    with vdir.connect() as vd:
        assert isinstance(vd, RemoteVDir)
        vd.put(b"over the wire", "/api/a.txt")
        assert vd.cat("/api/a.txt") == b"over the wire"
        assert server.vd.cat("/api/a.txt") == b"over the wire"  # the server's catalog has it
        with vd.open("/api/b.bin", "wb") as f:
            f.write(b"x" * 100_000)
        with vd.open("/api/b.bin") as f:
            f.seek(99_990)
            assert f.read() == b"x" * 10
        with pytest.raises(AlreadyExists):
            vd.open("/api/a.txt", "xb")
        with vd.open("/api/a.txt", "ab") as f:
            f.write(b"!")
        assert vd.cat("/api/a.txt") == b"over the wire!"
        assert [i.name for i in vd.ls("/api")] == ["a.txt", "b.bin"]
        assert vd.exists("/api/b.bin") and not vd.exists("/api/none")
        assert vd.rm("/api", recursive=True) == 3
        assert not server.vd.exists("/api")
    monkeypatch.setenv("VDIR_TOKEN", "vdir_nope_nope")
    with vdir.connect() as vd, pytest.raises(AuthenticationError):
        vd.stat("/")


def test_the_api_covers_what_the_cli_fsspec_and_mount_call(remote: RemoteVDir, tmp_path: Path) -> None:
    vd = remote
    vd.mkdir("/w/sub", parents=True)
    assert vd.mkdir("/w/sub", exist_ok=True).type == "dir"
    vd.put(b"hello", "/w/sub/x.txt")
    big = os.urandom(3 * MiB + 7)  # above chunked_min: an upload session (the local backend cannot pre-sign)
    vd.put(big, "/w/big.bin")
    assert vd.cat("/w/big.bin") == big
    assert vd.stat("/w/big.bin").hash == hash_bytes(big)
    with vd.open("/w/big.bin") as f:
        f.seek(MiB + 3)
        assert f.read(100) == big[MiB + 3 : MiB + 103]
    assert [i.path for i in vd.ls("/w", recursive=True)] == ["/w/big.bin", "/w/sub", "/w/sub/x.txt"]
    assert [i.path for i in vd.find("/w", name="*.txt")] == ["/w/sub/x.txt"]
    assert [i.path for i in vd.find("/w", type="f", maxdepth=1)] == ["/w/big.bin"]
    assert vd.glob("/w/*") == ["/w/big.bin", "/w/sub"]
    assert vd.du("/w").files == 2 and vd.du("/w").bytes == len(big) + 5
    vd.mv("/w/sub/x.txt", "/w/y.txt")
    vd.symlink("y.txt", "/w/link")
    assert vd.readlink("/w/link") == "y.txt"
    vd.hardlink("/w/y.txt", "/w/hard")
    assert vd.stat("/w/hard").nlink == 2
    vd.update_entry("/w/y.txt", mode=0o600, mtime=1000.0)
    assert (vd.stat("/w/y.txt").mode, vd.stat("/w/y.txt").mtime) == (0o600, 1000.0)
    with pytest.raises(NotSupported):
        vd.update_entry("/w/y.txt", xattrs={"user.a": b"1"})
    seen: list[tuple[int, int]] = []
    vd.copy("/w", "/copy", recursive=True, progress=lambda done, total: seen.append((done, total)))
    assert sorted(i.name for i in vd.ls("/copy")) == ["big.bin", "hard", "link", "sub", "y.txt"]
    files = len([i for i in vd.find("/copy") if i.type != "dir"])
    assert seen and seen[-1] == (files, files)  # the server job's progress, as polled
    vd.mknod("/w/fifo", "fifo")
    assert vd.stat("/w/fifo").type == "fifo"
    # by id, as the mount walks
    root = vd.entry("/")
    w = vd.child(root.id, "w")
    assert w is not None and w.type == "dir"
    assert [e.name for e in vd.children(w.id)] == ["big.bin", "fifo", "hard", "link", "sub", "y.txt"]
    assert [e.name for e in vd.children(w.id, after="fifo", limit=2)] == ["hard", "link"]
    assert vd.child(w.id, "nothing") is None
    assert vd.entry_by_id(w.id).name == "w"
    # rename(2) semantics
    vd.put(b"1", "/r/a")
    vd.put(b"2", "/r/b")
    with pytest.raises(AlreadyExists):
        vd.rename("/r/a", "/r/b", replace=False)
    vd.rename("/r/a", "/r/b")
    assert vd.cat("/r/b") == b"1" and not vd.exists("/r/a")
    vd.mkdir("/r/d1")
    vd.mkdir("/r/d2")
    vd.rename("/r/d1", "/r/d2")
    assert not vd.exists("/r/d1") and vd.stat("/r/d2").type == "dir"
    # get -r to local files, through the core's own helper
    got = vd.get("/w", tmp_path / "out", recursive=True)
    assert (tmp_path / "out" / "big.bin").read_bytes() == big and len(got) >= 3
    assert (tmp_path / "out" / "link").is_symlink()
    with pytest.raises(NotFound, match="/w/missing: no such file or directory"):
        vd.stat("/w/missing")
    vd.rmdir("/r/d2")
    assert vd.rm("/w", recursive=True) >= 6


def test_bytes_are_verified_on_the_client(server: LiveServer, remote: RemoteVDir) -> None:
    """The server streams what it verified; the client checks again, block by block."""
    data = os.urandom(2 * MiB)
    remote.put(data, "/v.bin")
    entry = remote.entry("/v.bin")
    assert entry.blocks is not None  # the block hashes came with the entry: ranged reads are checked
    assert remote.open("/v.bin").read() == data


def test_retries_on_503_and_a_dropped_connection(server: LiveServer) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    with FaultProxy(("127.0.0.1", port)) as proxy, RemoteVDir(proxy.url, server.tokens["admin"]) as vd:
        vd.put(b"abc", "/f")
        proxy.respond(503, b'{"error": "busy", "errno": "EAGAIN"}', count=2, match="GET /v1/stat")
        assert vd.stat("/f").size == 3
        assert proxy.faults == 2
        proxy.drop(count=1, match="GET /v1/ls")
        assert [i.name for i in vd.ls("/")] == ["f"]
        proxy.respond(503, b'{"error": "busy", "errno": "EAGAIN"}', count=1, match="POST /v1/mkdir")
        with pytest.raises(TransientError):  # not idempotent: not repeated behind the caller's back
            vd.mkdir("/d")


def test_a_cut_upload_resumes_where_the_server_stopped(server: LiveServer, tmp_path: Path) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    data = os.urandom(20 * MiB + 11)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    with FaultProxy(("127.0.0.1", port)) as proxy, \
            RemoteVDir(proxy.url, server.tokens["admin"], chunked_min=MiB, attempts=2) as vd:
        proxy.cut_request(after=300_000, count=3, match="PUT /v1/uploads/")
        vd.put(str(src), "/resumed.bin")
        assert proxy.faults == 3
    assert server.vd.cat("/resumed.bin") == data
    assert server.vd.stat("/resumed.bin").hash == hash_bytes(data)


# -- direct transfers: the bytes go between the client and the cloud ------------------------------
@pytest.fixture
def s3_server(tmp_path: Path, moto_s3: S3Server) -> Iterator[LiveServer]:
    with live_server(tmp_path / "server", backend=make_s3_backend(moto_s3)) as live:
        yield live


@pytest.fixture(params=["s3", "azure"])
def signing_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LiveServer]:
    """A server whose default backend signs URLs: S3 (moto) or Azure (Azurite, SAS with the account key)."""
    if request.param == "s3":
        backend: Any = make_s3_backend(request.getfixturevalue("moto_s3"))
    else:
        backend = make_azure_backend(request.getfixturevalue("azurite"))
    with live_server(tmp_path / "server", backend=backend) as live:
        yield live


def test_big_files_move_through_pre_signed_urls(signing_server: LiveServer) -> None:
    s3_server = signing_server
    data = os.urandom(3 * MiB + 1)
    with RemoteVDir(s3_server.url, s3_server.tokens["admin"], direct_min=MiB, chunked_min=MiB) as vd:
        vd.put(data, "/d/big.bin")
        assert vd._cloud is not None  # the PUT went to the pre-signed URL, not to the server
        entry = s3_server.vd.entry("/d/big.bin")
        assert entry.replicas[0].backend != "local" and entry.hash == hash_bytes(data)
        assert vd.cat("/d/big.bin") == data
        assert vd.download_url("/d/big.bin") is not None  # read from the cloud, checked here
        with vd.open("/d/big.bin") as f:
            f.seek(2 * MiB)
            assert f.read(5) == data[2 * MiB : 2 * MiB + 5]
        # the cloud's bytes changed behind the server's back: the client's check catches it
        replica = entry.replicas[0]
        bad = bytearray(data)
        bad[10] ^= 1
        s3_server.vd.backend(replica.backend).put_bytes(replica.key, bytes(bad))
        with pytest.raises(IntegrityError):
            vd.cat("/d/big.bin")
        small = b"small files go through the server"
        vd.put(small, "/d/small.txt")
        assert vd.cat("/d/small.txt") == small


def test_an_unreachable_cloud_falls_back_to_the_server(s3_server: LiveServer) -> None:
    """A client that cannot connect to the cloud's endpoint (a firewall, an internal name) uploads
    and downloads through the server instead."""

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    data = os.urandom(2 * MiB)
    with RemoteVDir(s3_server.url, s3_server.tokens["admin"], direct_min=MiB, chunked_min=MiB) as vd:
        vd._cloud = httpx.Client(transport=httpx.MockTransport(refuse))
        vd.put(data, "/fallback.bin")
        assert vd.cat("/fallback.bin") == data
        vd.put(data, "/second.bin")  # no second attempt at the cloud
    assert s3_server.vd.cat("/fallback.bin") == data


def test_a_direct_upload_whose_hash_is_wrong_leaves_nothing(signing_server: LiveServer) -> None:
    s3_server = signing_server
    with RemoteVDir(s3_server.url, s3_server.tokens["admin"]) as vd:
        session = vd.http.json("POST", "/v1/uploads", json={"path": "/evil.bin", "size": 4, "direct": True})
        assert session["url"]
        assert httpx.put(session["url"], content=b"evil", headers=session.get("headers") or {}).status_code in (200, 201)
        with pytest.raises(IntegrityError):
            vd.http.json("POST", f"/v1/uploads/{session['id']}/commit", json={"hash": "xxh128:" + hash_bytes(b"good")})
        assert not vd.exists("/evil.bin")


# -- fsspec and pandas --------------------------------------------------------------------------
def test_fsspec_and_pandas_in_remote_mode(server: LiveServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "nowhere"))
    monkeypatch.setenv("VDIR_REMOTE", server.url)
    monkeypatch.setenv("VDIR_TOKEN", server.tokens["admin"])
    df = pd.DataFrame({"x": range(1000), "name": [f"n{i}ü" for i in range(1000)]})
    opts = {"skip_instance_cache": True}
    df.to_csv("vdir:///frames/df.csv", index=False, storage_options=opts)
    df.to_parquet("vdir:///frames/df.parquet", storage_options=opts)
    assert server.vd.stat("/frames/df.csv").hash is not None
    assert pd.read_csv("vdir:///frames/df.csv", storage_options=opts).equals(df)
    assert pd.read_parquet("vdir:///frames/df.parquet", storage_options=opts).equals(df)
    fs = fsspec.filesystem("vdir", skip_instance_cache=True)
    assert isinstance(fs.vd, RemoteVDir)
    assert sorted(fs.ls("/frames", detail=False)) == ["/frames/df.csv", "/frames/df.parquet"]
    assert fs.cat_file("/frames/df.csv", start=0, end=6) == b"x,name"
    fs.mv("/frames/df.csv", "/frames/moved.csv")
    fs.rm("/frames", recursive=True)
    assert not server.vd.exists("/frames")


# -- the CLI -------------------------------------------------------------------------------------
def test_login_stores_the_token_0600_and_the_cli_works_remotely(server: LiveServer, cli: CLI, tmp_path: Path) -> None:
    assert "standalone" in ok(cli, "--version")
    err = fails(cli, "login", server.url, "--token", "vdir_bad_token")
    assert "token" in err
    login_file = cli.home / ".config" / "vdir" / "remote.yaml"
    assert not login_file.exists()
    out = ok(cli, "login", server.url, "--token", server.tokens["alice"])
    assert "logged in" in out and "alice" in out
    assert stat.S_IMODE(login_file.stat().st_mode) == 0o600
    assert server.tokens["alice"] in login_file.read_text()
    version = ok(cli, "--version")
    assert "remote mode" in version and server.url in version and "alice" in version
    info = json.loads(ok(cli, "info", "--json"))
    assert info["mode"] == "remote" and info["url"] == server.url and info["user"] == "alice"
    # alice works in a project of hers
    server.project("team", ["/projects/team"], alice="editor")
    src = tmp_path / "local"
    (src / "deep").mkdir(parents=True)
    (src / "a.txt").write_text("alpha")
    (src / "deep" / "b.bin").write_bytes(os.urandom(100_000))
    ok(cli, "put", "-r", str(src), "/projects/team/")
    assert server.vd.cat("/projects/team/local/a.txt") == b"alpha"
    listing = ok(cli, "ls", "-R", "/projects/team")
    assert "a.txt" in listing and "b.bin" in listing
    assert ok(cli, "cat", "/projects/team/local/a.txt") == "alpha"
    ok(cli, "mv", "/projects/team/local/a.txt", "/projects/team/a2.txt")
    ok(cli, "get", "-r", "/projects/team/local", str(tmp_path / "back"))
    assert (tmp_path / "back" / "deep" / "b.bin").read_bytes() == (src / "deep" / "b.bin").read_bytes()
    assert "a2.txt" in ok(cli, "find", "/projects/team", "--name", "*.txt")
    ok(cli, "rm", "-r", "/projects/team/local")
    assert not server.vd.exists("/projects/team/local")
    ok(cli, "stat", "/projects/team/a2.txt")
    ok(cli, "du", "/projects/team")
    # what a client cannot do: one line, no traceback
    assert "live on the vdir server" in fails(cli, "backend", "add", "x", "file:///tmp")
    assert "run it on the server" in fails(cli, "link", "file:///tmp/x", "/projects/team/x")
    fails(cli, "fsck")
    assert "permission denied" in fails(cli, "backend", "list").lower()  # admin only, on the server
    assert "logged out" in ok(cli, "logout")
    assert not login_file.exists()
    assert "as alice" in ok(cli, "login", server.url, input=server.tokens["alice"].encode() + b"\n")  # from a pipe
    assert "logged out" in ok(cli, "logout")
    assert "standalone" in ok(cli, "--version")
    assert "not logged in" in ok(cli, "logout")


def test_login_to_nothing_is_one_line(cli: CLI) -> None:
    from tests.servers.process import free_port

    err = fails(cli, "login", f"http://127.0.0.1:{free_port()}", "--token", "vdir_x_y")
    assert "cannot reach" in err
    assert "not a server URL" in fails(cli, "login", "ftp://example.org", "--token", "t")


def test_remote_env_drives_the_cli(server: LiveServer, cli: CLI) -> None:
    env = server.env(cli, "admin")
    proc = cli.run("put", "-", "/env.txt", input=b"from stdin")  # standalone: no config here
    assert proc.returncode != 0
    cli.env = env
    ok(cli, "put", "-", "/env.txt", input=b"from stdin")
    assert server.vd.cat("/env.txt") == b"from stdin"
    assert "VDIR_REMOTE" in ok(cli, "--version")


# -- permissions, as a client sees them ---------------------------------------------------------
def test_another_projects_files_are_not_found(server: LiveServer) -> None:
    server.user("bob")
    server.project("p1", ["/projects/p1"], alice="editor", bob="viewer")
    server.project("p2", ["/projects/p2"])
    server.vd.put(b"secret", "/projects/p2/secret.txt")
    server.vd.put(b"shared", "/projects/p1/shared.txt")
    with RemoteVDir(server.url, server.tokens["alice"]) as alice, RemoteVDir(server.url, server.tokens["bob"]) as bob:
        missing = str(pytest.raises(NotFound, alice.stat, "/projects/p2/nothing-here.txt").value)
        hidden = str(pytest.raises(NotFound, alice.stat, "/projects/p2/secret.txt").value)
        assert hidden == missing.replace("nothing-here.txt", "secret.txt")  # no leak in the message
        with pytest.raises(NotFound):
            alice.cat("/projects/p2/secret.txt")
        with pytest.raises(NotFound):
            alice.put(b"x", "/projects/p2/new.txt")
        assert [i.name for i in alice.ls("/projects")] == ["p1"]
        assert alice.cat("/projects/p1/shared.txt") == b"shared"
        alice.put(b"mine", "/projects/p1/mine.txt")
        assert bob.cat("/projects/p1/mine.txt") == b"mine"
        with pytest.raises(PermissionDenied):
            bob.put(b"no", "/projects/p1/bob.txt")
        with pytest.raises(PermissionDenied):
            bob.rm("/projects/p1/mine.txt")
        assert [i.path for i in alice.find("/", name="*.txt")] == ["/projects/p1/mine.txt", "/projects/p1/shared.txt"]
        with pytest.raises(PermissionDenied):
            alice.catalog.list_backends()


class Pipe(io.RawIOBase):
    """A source that can be read once only (stdin from a pipe)."""

    def __init__(self, data: bytes) -> None:
        self.data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buf: bytearray | memoryview) -> int:  # type: ignore[override]
        return self.data.readinto(buf)


def test_stdin_and_errors_keep_their_classes(remote: RemoteVDir) -> None:
    remote.write_stream("/s.bin", Pipe(b"streamed" * 100_000), overwrite=False)  # type: ignore[arg-type]
    assert remote.cat("/s.bin") == b"streamed" * 100_000
    with pytest.raises(AlreadyExists):
        remote.put(b"again", "/s.bin")
    with pytest.raises(IsADirectory):
        remote.put(b"x", "/")
    with pytest.raises(VDirError):
        remote.rmdir("/s.bin")


def test_sync_both_ways(remote: RemoteVDir, server: LiveServer, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "a.txt").write_text("a")
    (src / "d" / "b.txt").write_text("b")
    assert remote.sync(str(src), "vdir:/synced").copied == ["a.txt", "d/b.txt"]
    (src / "a.txt").write_text("changed")
    assert remote.sync(str(src), "vdir:/synced").updated == ["a.txt"]
    assert server.vd.cat("/synced/a.txt") == b"changed"
    out = tmp_path / "out"
    remote.sync("vdir:/synced", str(out))
    assert (out / "d" / "b.txt").read_text() == "b"


def test_quota_refuses_a_direct_upload_before_any_byte(s3_server: LiveServer) -> None:
    s3_server.user("carol")
    s3_server.project("small", ["/projects/small"], carol="editor")
    s3_server.accounts().set_quota("small", bytes=2 * MiB, files=None)
    with RemoteVDir(s3_server.url, s3_server.tokens["carol"], direct_min=MiB, chunked_min=MiB) as vd:
        vd.put(b"fits", "/projects/small/ok.txt")
        with pytest.raises(NoSpace, match="quota"):
            vd.put(os.urandom(3 * MiB), "/projects/small/big.bin")
        assert not vd.exists("/projects/small/big.bin")
        assert vd._cloud is None  # refused before a URL was handed out
    assert [i.name for i in s3_server.vd.ls("/projects/small")] == ["ok.txt"]


def test_trash_through_the_client(server: LiveServer) -> None:
    server.vd.set_trash_keep(3600)
    server.project("team", ["/projects/team"], alice="editor")
    with RemoteVDir(server.url, server.tokens["alice"]) as vd:
        vd.put(b"keep me", "/projects/team/doc.txt")
        vd.rm("/projects/team/doc.txt")
        assert not vd.exists("/projects/team/doc.txt")
        items = vd.trash_list()
        assert [i["path"] for i in items] == ["/projects/team/doc.txt"]
        vd.trash_restore(items[0]["id"])
        assert vd.cat("/projects/team/doc.txt") == b"keep me"
        assert vd.trash_list() == []
