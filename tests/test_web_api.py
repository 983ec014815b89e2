"""The endpoints the web interface adds (``/v1/web``), over HTTP: what they answer, and that they
leak nothing a caller may not see (a member weighs only their projects' files; hidden paths are
404 with the message a missing path gets; policy checks and boot plans are for administrators)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers.vdir_server import LiveServer, live_server
from tests.web_helpers import make_world, token
from vdir.core import VDir
from vdir.placement.daemon import Daemon, DaemonOptions
from vdir.placement.policy import apply_policy


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[LiveServer, VDir]]:
    vd = make_world(tmp_path / "world")
    try:
        with live_server(vd, tmp_path / "state") as live:
            yield live, vd
    finally:
        vd.close()


def test_where_counts_bytes_per_cloud_region_backend_and_the_policy_met_or_not(world: tuple[LiveServer, VDir]) -> None:
    live, vd = world
    admin = live.client()
    apply_policy(vd.catalog, "rules:\n  - name: two\n    match: /projects/**\n    copies: 2\n    where: cloud=aws | cloud=azure\n"
                 "    spread: cloud\n", "p.yaml")
    alpha = sum(vd.stat(p).size for p in ("/projects/alpha/data/labels.csv", "/projects/alpha/data/images.tar",
                                          "/projects/alpha/README.md"))
    w = admin.get("/v1/web/where", params={"path": "/projects/alpha"}).json()
    assert (w["files"], w["bytes"], w["policy_version"]) == (3, alpha, 1)
    assert w["per_cloud"] == {"aws": alpha} and w["per_region"] == {"aws/us-east-1": alpha} and w["per_backend"] == {"aws-east": alpha}
    assert w["backends"]["aws-east"] == {"cloud": "aws", "region": "us-east-1", "tier": "standard"}
    [rule] = w["rules"]
    assert (rule["rule"], rule["line"], rule["copies"], rule["files"], rule["wanted"], rule["verified"], rule["met"], rule["short"]) == \
        ("two", 2, 2, 3, 6, 3, 0, 3)
    Daemon(vd, DaemonOptions(workers=2, once=True)).run()
    w = admin.get("/v1/web/where", params={"path": "/projects/alpha"}).json()
    assert w["per_cloud"] == {"aws": alpha, "azure": alpha} and w["rules"][0]["met"] == 3 and w["rules"][0]["short"] == 0
    # outside every rule
    vd.put(b"loose", "/elsewhere/loose.txt")
    w = admin.get("/v1/web/where", params={"path": "/elsewhere"}).json()
    assert w["rules"] == [{"rule": None, "line": 0, "match": None, "where": None, "copies": 0, "files": 1, "bytes": 5,
                           "met": 1, "short": 0, "verified": 1, "wanted": 0}]


def test_where_shows_a_member_only_their_projects(world: tuple[LiveServer, VDir]) -> None:
    live, vd = world
    ann = live.client(token(vd, "ann", project="alpha", role="viewer"))
    everything = live.client().get("/v1/web/where", params={"path": "/"}).json()
    mine = ann.get("/v1/web/where", params={"path": "/"}).json()
    assert everything["files"] == 4 and mine["files"] == 3
    assert mine["bytes"] == ann.get("/v1/web/where", params={"path": "/projects/alpha"}).json()["bytes"]
    hidden = ann.get("/v1/web/where", params={"path": "/projects/beta"})
    missing = ann.get("/v1/web/where", params={"path": "/projects/gamma"})
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["error"].replace("beta", "X") == missing.json()["error"].replace("gamma", "X")
    assert httpx.get(f"{live.url}/v1/web/where").status_code == 401


def test_policy_check_names_the_line_and_warns_like_the_cli_and_applies_nothing(world: tuple[LiveServer, VDir]) -> None:
    live, vd = world
    admin = live.client()
    bad = admin.post("/v1/web/policy/check", json={"text": "rules:\n  - name: a\n    match: /x/**\n    spread: sideways\n"}).json()
    assert bad["valid"] is False and bad["line"] == 4 and bad["error"].startswith("policy:4: 'spread' must be one of")
    yaml_error = admin.post("/v1/web/policy/check", json={"text": "rules:\n  - [unclosed\n"}).json()
    assert yaml_error["valid"] is False and "not valid YAML" in yaml_error["error"] and yaml_error["line"]
    ok = admin.post("/v1/web/policy/check", json={"text": "rules:\n  - name: many\n    match: /**\n    copies: 5\n"}).json()
    assert ok["valid"] is True and ok["rules"] == 1
    assert ok["warnings"] == ["line 2: rule 'many' wants 5 copies but where '*' selects 3 backend(s)"]
    assert admin.get("/v1/policy").json()["version"] == 0
    member = live.client(token(vd, "ann", project="alpha"))
    assert member.post("/v1/web/policy/check", json={"text": "rules: []"}).status_code == 403


def test_the_boot_plan_is_a_dry_run_for_administrators(world: tuple[LiveServer, VDir]) -> None:
    live, vd = world
    plan = live.client().post("/v1/web/vms/plan", json={"near": ["/projects/alpha"], "provider": "local", "region": "lab"}).json()
    assert plan["provider"] == "local" and plan["region"] == "lab" and plan["names"]
    assert plan["decision"]["sites"][0]["cloud"] == "aws" and plan["decision"]["total_files"] == 3
    assert live.client().get("/v1/vms").json()["items"] == []  # nothing booted
    member = live.client(token(vd, "ann", project="alpha"))
    assert member.post("/v1/web/vms/plan", json={"near": ["/projects/alpha"]}).status_code == 403
    assert live.client().post("/v1/web/vms/plan", json={"near": ["/nowhere"]}).status_code == 404


def test_the_page_and_its_assets_are_served_without_a_token_and_only_the_api_needs_one(world: tuple[LiveServer, VDir]) -> None:
    live, _ = world
    page = httpx.get(f"{live.url}/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"] and "/ui/app.js" in page.text
    for asset, kind in (("app.js", "javascript"), ("app.css", "text/css"), ("favicon.svg", "image/svg+xml")):
        r = httpx.get(f"{live.url}/ui/{asset}")
        assert r.status_code == 200 and kind in r.headers["content-type"], asset
    assert "http://" not in httpx.get(f"{live.url}/ui/app.js").text.replace("http://www.w3.org/2000/svg", "")
    assert httpx.get(f"{live.url}/ui/../pyproject.toml").status_code == 404
    spec = httpx.get(f"{live.url}/openapi.json").json()
    assert {"/v1/web/where", "/v1/web/policy/check", "/v1/web/vms/plan"} <= set(spec["paths"]) and "/" not in spec["paths"]
