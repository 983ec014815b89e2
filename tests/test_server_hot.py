"""The hot path of ``GET``/``PUT /v1/files`` (:mod:`vdir.server.hot`) answers exactly as the
framework's route does: every request below is sent plainly (taking the hot path, counted) and
again with its ``path`` repeated (which sends it the framework's way), and the two answers
must match in status, body and headers."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers.vdir_server import admin_token, make_token, serve_in_thread
from vdir.core import VDir
from vdir.server.app import create_app
from vdir.server.hot import HotRoute

HEADERS = ("content-type", "content-length", "etag", "content-range", "accept-ranges", "www-authenticate")


@dataclasses.dataclass
class Hot:
    client: httpx.Client
    url: str
    vd: VDir
    calls: dict[str, int]


@pytest.fixture
def hot(vd: VDir, tmp_path: Path) -> Iterator[Hot]:
    app = create_app(vd, state_dir=tmp_path / "state")
    calls = {"GET": 0, "PUT": 0}
    for method in calls:
        route: HotRoute = app.hot[(method, "/v1/files")]

        def counted(*a: Any, _h: Any = route.handler, _m: str = method, **k: Any) -> Any:
            calls[_m] += 1
            return _h(*a, **k)

        app.hot[(method, "/v1/files")] = dataclasses.replace(route, handler=counted)
    token = admin_token(vd)
    with serve_in_thread(app) as url, httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as c:
        yield Hot(c, url, vd, calls)


def both(h: Hot, method: str, params: dict[str, Any], slow_path: str | None = None,
         **kw: Any) -> tuple[httpx.Response, httpx.Response]:
    """(the hot path's answer, the framework's answer) to the same request (the framework's on
    ``slow_path`` if given: it reads the last of a repeated parameter)."""
    before = h.calls[method]
    fast = h.client.request(method, "/v1/files", params=params, **kw)
    assert h.calls[method] == before + 1, "the plain request did not take the hot path"
    repeated = [(k, v) for k, v in params.items()] + [("path", slow_path or params["path"])]
    slow = h.client.request(method, "/v1/files", params=repeated, **kw)
    assert h.calls[method] == before + 1, "the request with a repeated parameter took the hot path"
    return fast, slow


def same(fast: httpx.Response, slow: httpx.Response) -> None:
    assert (fast.status_code, fast.content) == (slow.status_code, slow.content)
    for name in HEADERS:
        assert fast.headers.get(name) == slow.headers.get(name), name


def test_reads_answer_as_the_framework_does(hot: Hot) -> None:
    hot.vd.put(b"0123456789" * 100, "/d/f.bin")
    etag = hot.vd.stat("/d/f.bin").hash
    cases: list[tuple[dict[str, Any], dict[str, str]]] = [
        ({"path": "/d/f.bin"}, {}),
        ({"path": "/d/f.bin"}, {"Range": "bytes=10-19"}),
        ({"path": "/d/f.bin"}, {"Range": "bytes=5000-"}),  # 416
        ({"path": "/d/f.bin"}, {"If-None-Match": f'"{etag}"'}),  # 304
        ({"path": "/d/missing"}, {}),  # 404
        ({"path": "/d"}, {}),  # a directory
        ({"path": "/d/../../etc/passwd"}, {}),
        ({"path": ""}, {}),
        ({"path": "/d/f.bin", "force": "yes-please"}, {}),  # not the route's parameter: ignored
    ]
    for params, headers in cases:
        fast, slow = both(hot, "GET", params, headers=headers)
        same(fast, slow)
    assert fast.status_code == 200 and fast.content == b"0123456789" * 100


def test_writes_answer_as_the_framework_does(hot: Hot) -> None:
    n = iter(range(100))

    def put(params: dict[str, Any], body: bytes = b"data") -> None:
        fresh = "{}" in params["path"]
        # a new name each time where there is a {}: the answers then differ only where the
        # entries do (id, times, path)
        fast, slow = both(hot, "PUT", dict(params, path=params["path"].format(next(n))),
                          slow_path=params["path"].format(next(n)), content=body)
        assert fast.status_code == slow.status_code, (fast.text, slow.text)
        if fast.status_code == 201:
            a, b = fast.json(), slow.json()
            assert a.keys() == b.keys() and a["size"] == b["size"] and a["hash"] == b["hash"] and a["mode"] == b["mode"]
            if not fresh:
                assert a["path"] == b["path"]
        else:
            same(fast, slow)

    hot.vd.put(b"old", "/w/exists")
    put({"path": "/w/new-{}"})
    put({"path": "/w/mode-{}", "mode": "384"})
    put({"path": "/w/exists", "force": "true"})
    put({"path": "/w/exists"})  # 409: exists, no force
    put({"path": "/w/exists", "force": "0"})
    put({"path": "/nodir/x", "parents": "false"})  # 404: no parent (and none made)
    put({"path": "/w/empty-{}"}, body=b"")
    put({"path": "/w"})  # a directory
    assert hot.vd.cat("/w/exists") == b"data"


def test_what_is_not_plain_goes_the_framework_way(hot: Hot, vd: VDir) -> None:
    """No token, another scheme, a value to validate: the framework answers (and its errors
    keep their shape)."""
    hot.vd.put(b"x", "/f")
    before = dict(hot.calls)
    anon = httpx.get(f"{hot.url}/v1/files", params={"path": "/f"})
    assert anon.status_code == 401 and anon.json()["errno"] == "EACCES" and anon.headers["www-authenticate"] == "Bearer"
    basic = httpx.get(f"{hot.url}/v1/files", params={"path": "/f"}, headers={"Authorization": "Basic YTpi"})
    assert basic.status_code == 401
    r = hot.client.put("/v1/files", params={"path": "/g", "mode": "99999"}, content=b"x")
    assert r.status_code == 422 and r.json()["errno"] == "EINVAL"
    r = hot.client.put("/v1/files", params={"path": "/g", "force": "maybe"}, content=b"x")
    assert r.status_code == 422
    assert hot.client.get("/v1/files").status_code == 422  # no path
    assert hot.calls == before
    viewer = make_token(vd, "viewer")  # a user in no project: the file is not there for them
    r = httpx.get(f"{hot.url}/v1/files", params={"path": "/f"}, headers={"Authorization": f"Bearer {viewer}"})
    assert r.status_code == 404 and hot.calls["GET"] == before["GET"] + 1
