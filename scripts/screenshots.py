#!/usr/bin/env python3
"""Regenerate the screenshots of docs/web.md (docs/img/web-*.png): a demo world served by
``create_app`` on 127.0.0.1, photographed by headless Chromium (Debian's ``chromium`` and
``chromium-driver``, through Selenium; nothing is downloaded).

    .venv/bin/python scripts/screenshots.py [--out docs/img]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from selenium.webdriver.common.by import By  # noqa: E402

from tests.servers.vdir_server import live_server  # noqa: E402
from tests.web_helpers import browser, go, login, make_world, token, wait_for  # noqa: E402
from vdir.placement.daemon import Daemon, DaemonOptions  # noqa: E402
from vdir.placement.policy import apply_policy  # noqa: E402

POLICY = """rules:
  - name: projects
    match: /projects/**
    copies: 2
    where: cloud=aws | cloud=azure
    spread: cloud
  - name: archive
    match: /archive/**
    copies: 1
    where: tier=cold
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "img"))
    out = Path(parser.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        vd = make_world(Path(tmp) / "world")
        for n in range(12):
            vd.put(f"run {n}\n".encode() * (n + 1) * 900, f"/projects/alpha/runs/run-{n:02d}.log")
        vd.put(b"old" * 40_000, "/archive/2025/results.tar")
        apply_policy(vd.catalog, POLICY, "policy.yaml")
        Daemon(vd, DaemonOptions(workers=2, once=True)).run()
        vd.put(b"fresh" * 20_000, "/projects/alpha/data/new-batch.parquet")  # not placed yet: 1 of 2 copies
        vd.rm("/projects/alpha/runs/run-00.log")
        with live_server(vd, Path(tmp) / "state") as live:
            admin = token(vd, "root", admin=True, scopes=("read", "write", "admin"))
            ann = token(vd, "ann", project="alpha")

            def shot(driver: object, name: str) -> None:
                path = out / f"web-{name}.png"
                driver.save_screenshot(str(path))  # type: ignore[attr-defined]
                print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)

            with browser() as d:
                d.get(live.url + "/")
                wait_for(lambda: d.find_element(By.ID, "token"))
                shot(d, "login")
                login(d, live.url, admin)
                go(d, "#/files?path=/projects/alpha/runs", "files")
                shot(d, "files")
                go(d, "#/files?path=/projects/alpha/data/new-batch.parquet", "files")
                shot(d, "details")
                go(d, "#/where?path=/projects/alpha", "where")
                shot(d, "where")
                go(d, "#/placement", "placement")
                shot(d, "placement")
                go(d, "#/policy", "policy")
                area = d.find_element(By.ID, "policy-text")
                area.send_keys("  - name: scratch\n    match: scratch/**\n")
                d.find_element(By.ID, "policy-check").click()
                wait_for(lambda: d.find_element(By.ID, "policy-error"))
                shot(d, "policy")
                go(d, "#/trash", "trash")
                shot(d, "trash")
                go(d, "#/compute?near=/projects/alpha", "compute")
                d.find_element(By.ID, "vm-provider").send_keys("local")
                d.find_element(By.ID, "vm-region").send_keys("lab")
                d.find_element(By.ID, "vm-plan").click()
                wait_for(lambda: d.find_element(By.ID, "vm-reason"))
                shot(d, "compute")
                go(d, "#/admin", "admin")
                shot(d, "admin")
            with browser(width=390, height=844) as d:
                login(d, live.url, ann)
                go(d, "#/files?path=/projects/alpha", "files")
                shot(d, "phone")
        vd.close()


if __name__ == "__main__":
    main()
