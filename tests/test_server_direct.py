"""Direct transfers through ``vdir serve``, over HTTP only: the server hands out pre-signed URLs
(moto's S3), the client moves the bytes straight to or from the store, the commit reads the
object back and checks its hash before the catalog names it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers.s3 import S3Server, make_s3_backend
from tests.servers.vdir_server import LiveServer, live_server
from vdir.admin import add_backend
from vdir.catalog.base import BackendRecord, open_catalog
from vdir.core import VDir
from vdir.hashing import hash_bytes


@pytest.fixture
def s3_live(tmp_path: Path, moto_s3: S3Server) -> Iterator[LiveServer]:
    backend = make_s3_backend(moto_s3)
    (tmp_path / "objects").mkdir()
    vd = VDir(open_catalog(f"sqlite:///{tmp_path / 'catalog.db'}"), default_backend=backend.name)
    add_backend(vd, "local", f"file://{tmp_path / 'objects'}", check=False)
    vd.catalog.put_backend(BackendRecord(backend.name, backend.url, cloud="aws"))
    vd._backends[backend.name] = backend  # opened with the test server's credentials, which only the server holds
    try:
        with live_server(vd, tmp_path / "state") as live:
            yield live
    finally:
        vd.close()


def test_download_url_reads_the_file_from_the_store(s3_live: LiveServer) -> None:
    c = s3_live.client()
    data = os.urandom(300_000)
    assert c.put("/v1/files", params={"path": "/d/f.bin"}, content=data).status_code == 201
    got = c.get("/v1/files/url", params={"path": "/d/f.bin", "expires": 60})
    assert got.status_code == 200, got.text
    signed = got.json()
    assert signed["size"] == len(data) and signed["hash"] == f"xxh128:{hash_bytes(data)}"
    body = httpx.request(signed["method"], signed["url"], headers=signed["headers"]).content  # no vdir token
    assert body == data
    c.put("/v1/files", params={"path": "/d/local.bin", "backend": "local"}, content=b"x")
    r = c.get("/v1/files/url", params={"path": "/d/local.bin"})
    assert r.status_code == 409 and "pre-sign" in r.json()["error"]
    assert c.get("/v1/files/url", params={"path": "/d/missing"}).status_code == 404


def test_direct_upload_is_checked_before_the_commit(s3_live: LiveServer) -> None:
    c = s3_live.client()
    data = os.urandom(1_500_000)
    session = c.post("/v1/uploads", json={"path": "/up/direct.bin", "size": len(data), "direct": True}).json()
    assert session["url"] and session["method"] == "PUT"
    assert c.put(f"/v1/uploads/{session['id']}", params={"offset": 0}, content=b"x").status_code == 409
    r = c.post(f"/v1/uploads/{session['id']}/commit", json={"hash": hash_bytes(data)})
    assert r.status_code == 404  # nothing arrived yet: the session stays open
    put = httpx.request(session["method"], session["url"], headers=session["headers"], content=data)
    assert put.is_success, put.text
    r = c.post(f"/v1/uploads/{session['id']}/commit", json={"hash": f"xxh128:{hash_bytes(data)}"})
    assert r.status_code == 201, r.text
    assert r.json()["hash"] == hash_bytes(data)
    assert c.get("/v1/files", params={"path": "/up/direct.bin"}).content == data

    bad = c.post("/v1/uploads", json={"path": "/up/bad.bin", "size": 5, "direct": True}).json()
    httpx.request(bad["method"], bad["url"], headers=bad["headers"], content=b"12345")
    r = c.post(f"/v1/uploads/{bad['id']}/commit", json={"hash": hash_bytes(b"other")})
    assert r.status_code == 502 and r.json()["errno"] == "EIO"
    assert c.get("/v1/stat", params={"path": "/up/bad.bin"}).status_code == 404
    assert c.get(f"/v1/uploads/{bad['id']}").status_code == 404  # the staged object went with the session

    gone = c.post("/v1/uploads", json={"path": "/up/cancelled.bin", "size": 3, "direct": True}).json()
    httpx.request(gone["method"], gone["url"], headers=gone["headers"], content=b"abc")
    assert c.delete(f"/v1/uploads/{gone['id']}").status_code == 200
    assert c.get("/v1/stat", params={"path": "/up/cancelled.bin"}).status_code == 404


def test_direct_requested_where_the_backend_cannot_sign_falls_back_to_chunks(s3_live: LiveServer) -> None:
    c = s3_live.client()
    session = c.post("/v1/uploads", json={"path": "/up/l", "size": 3, "direct": True, "backend": "local"}).json()
    assert session["url"] is None and session["chunk_size"] > 0
    assert c.put(f"/v1/uploads/{session['id']}", params={"offset": 0}, content=b"abc").json()["offset"] == 3
    assert c.post(f"/v1/uploads/{session['id']}/commit").status_code == 201
    assert s3_live.vd.cat("/up/l") == b"abc"
