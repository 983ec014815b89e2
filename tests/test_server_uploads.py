"""Resumable uploads of ``vdir serve``: a chunk cut mid-way keeps what arrived, the client asks
for the offset and resumes; sessions survive a server restart; the commit checks the hash."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import httpx

from tests.servers.vdir_server import LiveServer, make_token, serve_process
from tests.servers.vdirs import CLI
from vdir.catalog.base import open_catalog
from vdir.core import VDir
from vdir.hashing import hash_bytes


def send_cut(url: str, target: str, token: str, declared: int, data: bytes) -> None:
    """PUT ``target`` announcing ``declared`` bytes, send only ``data``, then hang up."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80)) as s:
        head = (f"PUT {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: Bearer {token}\r\n"
                f"Content-Type: application/octet-stream\r\nContent-Length: {declared}\r\n\r\n")
        s.sendall(head.encode() + data)


def wait_offset(c: httpx.Client, sid: str, beyond: int, timeout: float = 30.0) -> int:
    """The session's offset once the cut chunk has landed (some of its bytes kept)."""
    deadline = time.monotonic() + timeout
    while True:
        offset = int(c.get(f"/v1/uploads/{sid}").json()["offset"])
        if offset > beyond:
            return offset
        assert time.monotonic() < deadline, f"offset {offset}: nothing of the cut chunk was kept"
        time.sleep(0.05)


def resume(c: httpx.Client, sid: str, data: bytes) -> int:
    """Send the rest as a client does: ask for the offset, send from there (again on 409)."""
    for _ in range(20):
        offset = int(c.get(f"/v1/uploads/{sid}").json()["offset"])
        r = c.put(f"/v1/uploads/{sid}", params={"offset": offset}, content=data[offset:])
        if r.status_code == 200:
            assert r.json() == {"offset": len(data), "size": len(data)}
            return offset
        assert r.status_code == 409, r.text
    raise AssertionError("the offset kept moving")


def test_a_chunk_cut_mid_way_is_resumed_from_the_offset(vdir_server: LiveServer) -> None:
    c = vdir_server.client()
    data = os.urandom(5 * 1024 * 1024 + 123)
    r = c.post("/v1/uploads", json={"path": "/up/big.bin", "size": len(data)})
    assert r.status_code == 201, r.text
    session = r.json()
    assert session["offset"] == 0 and session["chunk_size"] > 0
    sid = session["id"]
    chunk = 2 * 1024 * 1024
    assert c.put(f"/v1/uploads/{sid}", params={"offset": 0}, content=data[:chunk]).json()["offset"] == chunk
    # the second chunk: half of it arrives, then the connection drops
    half = chunk // 2 + 7
    send_cut(vdir_server.url, f"/v1/uploads/{sid}?offset={chunk}", vdir_server.admin_token, chunk, data[chunk:chunk + half])
    offset = wait_offset(c, sid, chunk)
    assert offset <= chunk + half
    assert not vdir_server.vd.exists("/up/big.bin")
    r = c.put(f"/v1/uploads/{sid}", params={"offset": 0}, content=data[:10])
    assert r.status_code == 409 and r.json()["errno"] == "ESTALE"  # not where the session is
    assert chunk < resume(c, sid, data) <= chunk + half
    r = c.post(f"/v1/uploads/{sid}/commit", json={"hash": f"xxh128:{hash_bytes(data)}"})
    assert r.status_code == 201, r.text
    assert r.json()["hash"] == hash_bytes(data) and r.json()["path"] == "/up/big.bin"
    assert vdir_server.vd.cat("/up/big.bin") == data
    assert c.get(f"/v1/uploads/{sid}").status_code == 404  # committed: the session is gone
    assert not any((vdir_server.state_dir / "uploads").iterdir())


def test_session_checks(vdir_server: LiveServer) -> None:
    c = vdir_server.client()
    vdir_server.vd.put(b"old", "/taken")
    r = c.post("/v1/uploads", json={"path": "/taken", "size": 3})
    assert r.status_code == 409 and r.json()["errno"] == "EEXIST"
    sid = c.post("/v1/uploads", json={"path": "/taken", "size": 4, "force": True}).json()["id"]
    r = c.put(f"/v1/uploads/{sid}", params={"offset": 0}, content=b"12345")
    assert r.status_code == 400  # more than the declared size
    c.put(f"/v1/uploads/{sid}", params={"offset": 0}, content=b"12")
    r = c.post(f"/v1/uploads/{sid}/commit")
    assert r.status_code == 409 and "2 of 4 bytes" in r.json()["error"]
    c.put(f"/v1/uploads/{sid}", params={"offset": 2}, content=b"34")
    r = c.post(f"/v1/uploads/{sid}/commit", json={"hash": hash_bytes(b"nope")})
    assert r.status_code == 502 and r.json()["errno"] == "EIO"
    assert vdir_server.vd.cat("/taken") == b"old"  # nothing was stored, the session stays
    r = c.post(f"/v1/uploads/{sid}/commit", json={})
    assert r.status_code == 201 and vdir_server.vd.cat("/taken") == b"1234"
    sid = c.post("/v1/uploads", json={"path": "/cancelled", "size": 10}).json()["id"]
    assert c.delete(f"/v1/uploads/{sid}").json() == {"ok": True}
    assert c.get(f"/v1/uploads/{sid}").status_code == 404
    assert c.get("/v1/uploads/0123abcd").status_code == 404
    assert c.post("/v1/uploads", json={"path": "/", "size": 1}).status_code == 400


def test_a_session_survives_a_server_restart(cli: CLI) -> None:
    cli.run("init", check=True)
    catalog = cli.home / ".local" / "share" / "vdir" / "catalog.db"
    with VDir(open_catalog(f"sqlite:///{catalog}")) as vd:
        token = make_token(vd, "admin", admin=True, scopes=("read", "write", "admin"))
    data = os.urandom(3 * 1024 * 1024 + 5)
    headers = {"Authorization": f"Bearer {token}"}
    with serve_process(cli.env, cli.home) as (url, proc):
        with httpx.Client(base_url=url, headers=headers, timeout=60) as c:
            sid = c.post("/v1/uploads", json={"path": "/restart/f", "size": len(data)}).json()["id"]
            c.put(f"/v1/uploads/{sid}", params={"offset": 0}, content=data[:1_000_000])
            send_cut(url, f"/v1/uploads/{sid}?{urlencode({'offset': 1_000_000})}", token, 1_000_000,
                     data[1_000_000:1_400_000])
            kept = wait_offset(c, sid, 1_000_000)
            kept = int(c.get(f"/v1/uploads/{sid}").json()["offset"])
        proc.kill()  # no goodbye: the session must be on disk already
    with serve_process(cli.env, cli.home) as (url, _):
        with httpx.Client(base_url=url, headers=headers, timeout=60) as c:
            assert c.get(f"/v1/uploads/{sid}").json()["offset"] == kept
            assert resume(c, sid, data) == kept
            r = c.post(f"/v1/uploads/{sid}/commit", json={"hash": hash_bytes(data)})
            assert r.status_code == 201, r.text
            got = c.get("/v1/files", params={"path": "/restart/f"})
            assert got.content == data and got.headers["etag"] == f'"{hash_bytes(data)}"'
    assert not any((Path(cli.home) / ".local" / "state" / "vdir" / "server" / "uploads").iterdir())
