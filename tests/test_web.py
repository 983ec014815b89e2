"""The web interface in a real browser (Debian's Chromium, headless, through Selenium and the
system chromedriver): log in, browse, upload, download, see a replica appear after a placement
run, delete and restore from the trash, edit a policy with an error, another project's files
refused, compute and admin pages, keyboard only and a phone's width; the browser's console stays
free of errors throughout."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from tests.servers.vdir_server import LiveServer, live_server
from tests.web_helpers import browser, console_errors, go, login, make_world, ready, token, wait_for
from vdir.core import VDir


@dataclass
class Site:
    live: LiveServer
    vd: VDir
    ann: str      # editor in project alpha
    admin: str
    downloads: Path


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    vd = make_world(tmp_path / "world")
    try:
        with live_server(vd, tmp_path / "server-state") as live:
            ann = token(vd, "ann", project="alpha")
            admin = token(vd, "root", admin=True, scopes=("read", "write", "admin"))
            downloads = tmp_path / "downloads"
            downloads.mkdir()
            yield Site(live=live, vd=vd, ann=ann, admin=admin, downloads=downloads)
    finally:
        vd.close()


@pytest.fixture
def driver(site: Site) -> Iterator[Any]:
    with browser(site.downloads) as d:
        yield d


def text(driver: Any, css: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def rows(driver: Any, table_id: str) -> list[str]:
    return [r.get_attribute("data-name") or r.text for r in driver.find_elements(By.CSS_SELECTOR, f"#{table_id} tbody tr")]


def dialog_ok(driver: Any, values: dict[str, str] | None = None) -> None:
    """Fill the modal dialog's fields and press its OK button."""
    wait_for(lambda: driver.find_element(By.ID, "dialog").get_attribute("open") is not None, what="the dialog")
    for name, value in (values or {}).items():
        box = driver.find_element(By.ID, f"dlg-{name}")
        box.clear()
        box.send_keys(value)
    driver.find_element(By.ID, "dialog-ok").click()


def test_the_login_refuses_a_bad_token_and_then_browses_with_breadcrumbs_and_details(site: Site, driver: Any) -> None:
    driver.get(site.live.url + "/")
    wait_for(lambda: driver.find_element(By.ID, "token")).send_keys("vdir_nope_nope")
    driver.find_element(By.ID, "login").click()
    wait_for(lambda: "Login refused" in text(driver, "#status"), what="the refusal")
    assert console_errors(driver, allow=("401",)) == []  # the refused whoami only

    login(driver, site.live.url, site.ann)
    assert "ann" in text(driver, "#who")
    assert rows(driver, "listing") == ["projects"]
    go(driver, "#/files?path=/projects", "files")
    assert rows(driver, "listing") == ["alpha"]  # beta is not ann's: not even listed
    driver.find_element(By.LINK_TEXT, "alpha/").click()
    ready(driver, "files")
    assert rows(driver, "listing") == ["README.md", "data"]
    driver.find_element(By.LINK_TEXT, "data/").click()
    ready(driver, "files")
    assert [c.text for c in driver.find_elements(By.CSS_SELECTOR, "#crumbs li")] == ["root", "projects", "alpha", "data"]
    driver.find_element(By.LINK_TEXT, "labels.csv").click()
    ready(driver, "files")
    details = text(driver, "#details")
    entry = site.vd.stat("/projects/alpha/data/labels.csv")
    assert entry.hash and entry.hash in details and "alpha" in details
    replica = text(driver, "#replicas tbody tr")
    assert "aws-east" in replica and "aws" in replica and "us-east-1" in replica and "standard" in replica and "ok" in replica
    # back up through the breadcrumbs
    driver.find_element(By.CSS_SELECTOR, "#crumbs li:nth-child(3) a").click()
    ready(driver, "files")
    assert rows(driver, "listing") == ["README.md", "data"]
    assert console_errors(driver) == []


def test_sorting_filtering_paging_and_search_in_a_big_directory(site: Site, driver: Any) -> None:
    for n in range(230):
        site.vd.put(b"y" * n, f"/projects/alpha/many/f{n:03d}.txt")
    login(driver, site.live.url, site.ann)
    go(driver, "#/files?path=/projects/alpha/many", "files")
    first = rows(driver, "listing")
    assert first == [f"f{n:03d}.txt" for n in range(100)]
    driver.find_element(By.ID, "next-page").click()
    ready(driver, "files")
    assert rows(driver, "listing") == [f"f{n:03d}.txt" for n in range(100, 200)]
    driver.find_element(By.ID, "next-page").click()
    ready(driver, "files")
    assert rows(driver, "listing") == [f"f{n:03d}.txt" for n in range(200, 230)]
    assert not driver.find_elements(By.ID, "next-page")
    driver.find_element(By.ID, "prev-page").click()
    ready(driver, "files")
    assert rows(driver, "listing")[0] == "f100.txt"
    driver.find_element(By.ID, "prev-page").click()
    ready(driver, "files")
    assert rows(driver, "listing")[0] == "f000.txt"
    # sort the page by size, largest first
    driver.find_element(By.CSS_SELECTOR, "#order option[value=desc]").click()
    ready(driver, "files")
    driver.find_element(By.CSS_SELECTOR, "#sort option[value=size]").click()
    ready(driver, "files")
    assert rows(driver, "listing")[:2] == ["f099.txt", "f098.txt"]
    # filter this page as one types
    driver.find_element(By.ID, "filter").send_keys("f05")
    shown = [r.get_attribute("data-name") for r in driver.find_elements(By.CSS_SELECTOR, "#listing tbody tr") if r.is_displayed()]
    assert shown == [f"f05{n}.txt" for n in range(9, -1, -1)]
    # search names below a folder (every page)
    go(driver, "#/files?path=/projects/alpha", "files")
    box = driver.find_element(By.ID, "search")
    box.send_keys("f22", Keys.ENTER)
    wait_for(lambda: "search=" in driver.current_url)
    ready(driver, "files")
    assert rows(driver, "listing") == [f"f22{n}.txt" for n in range(10)]
    assert console_errors(driver) == []


def test_upload_by_input_and_drop_resumable_download_rename_delete_and_restore(site: Site, driver: Any, tmp_path: Path) -> None:
    small = tmp_path / "hello.txt"
    small.write_bytes(b"hello from the browser\n")
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * (40 * 1024 + 3))  # 10 MiB and a bit: a resumable session, two chunks
    login(driver, site.live.url, site.ann)
    go(driver, "#/files?path=/projects/alpha", "files")
    driver.find_element(By.ID, "upload-input").send_keys(f"{small}\n{big}")
    wait_for(lambda: "Uploaded 2 of 2" in text(driver, "#status"), timeout=60, what="the uploads")
    ready(driver, "files")
    assert {"hello.txt", "big.bin"} <= set(rows(driver, "listing"))
    assert site.vd.cat("/projects/alpha/hello.txt") == small.read_bytes()
    assert site.vd.cat("/projects/alpha/big.bin") == big.read_bytes()

    # drag and drop: a file dropped on the zone
    driver.execute_script("""
        const dt = new DataTransfer();
        dt.items.add(new File(["dropped bytes"], "dropped.txt", {type: "text/plain"}));
        document.getElementById("drop").dispatchEvent(new DragEvent("drop", {dataTransfer: dt, bubbles: true, cancelable: true}));
    """)
    wait_for(lambda: "Uploaded 1 of 1" in text(driver, "#status"), what="the dropped upload")
    assert site.vd.cat("/projects/alpha/dropped.txt") == b"dropped bytes"

    # the same name again: the page asks before replacing
    small.write_bytes(b"hello again\n")
    driver.find_element(By.ID, "upload-input").send_keys(str(small))
    dialog_ok(driver)
    wait_for(lambda: site.vd.cat("/projects/alpha/hello.txt") == b"hello again\n", what="the replacing upload")
    wait_for(lambda: "Uploaded 1 of 1 file(s) to /projects/alpha: hello.txt" in text(driver, "#status"), what="its message")

    # download
    ready(driver, "files")
    driver.find_element(By.CSS_SELECTOR, "button[aria-label='Download hello.txt']").click()
    got = wait_for(lambda: [p for p in site.downloads.glob("hello*.txt")], what="the download")
    assert got[0].read_bytes() == small.read_bytes()

    # rename (a move into another folder)
    driver.find_element(By.CSS_SELECTOR, "button[aria-label='Rename or move hello.txt']").click()
    dialog_ok(driver, {"dst": "/projects/alpha/data/greeting.txt"})
    wait_for(lambda: "Moved" in text(driver, "#status"), what="the move")
    assert site.vd.cat("/projects/alpha/data/greeting.txt") == small.read_bytes()
    assert not site.vd.exists("/projects/alpha/hello.txt")

    # delete to the trash, then restore the exact version
    before = site.vd.stat("/projects/alpha/big.bin")
    ready(driver, "files")
    driver.find_element(By.CSS_SELECTOR, "button[aria-label='Delete big.bin']").click()
    dialog_ok(driver)
    wait_for(lambda: "in the trash" in text(driver, "#status"), what="the removal")
    assert not site.vd.exists("/projects/alpha/big.bin")
    go(driver, "#/trash", "trash")
    assert "/projects/alpha/big.bin" in text(driver, "#trash")
    driver.find_element(By.CSS_SELECTOR, "button[aria-label='Restore /projects/alpha/big.bin']").click()
    wait_for(lambda: "Restored /projects/alpha/big.bin" in text(driver, "#status"), what="the restore")
    after = site.vd.stat("/projects/alpha/big.bin")
    assert (after.hash, after.inode, after.size) == (before.hash, before.inode, before.size)
    assert hashlib.sha256(site.vd.cat("/projects/alpha/big.bin")).digest() == hashlib.sha256(big.read_bytes()).digest()
    # the one refusal the journey provoked (the upload onto an existing name) is the browser's
    # note of a 409 answer, not an error of the page
    assert console_errors(driver, allow=("status of 409",)) == []


def test_a_policy_with_an_error_then_a_replica_appears_after_a_placement_run(site: Site, driver: Any) -> None:
    login(driver, site.live.url, site.admin)
    go(driver, "#/policy", "policy")
    area = driver.find_element(By.ID, "policy-text")
    area.clear()
    area.send_keys("rules:\n  - name: two\n    match: /projects/**\n    copies: two\n")
    driver.find_element(By.ID, "policy-check").click()
    error = wait_for(lambda: text(driver, "#policy-error"), what="the error")
    assert error.startswith("policy:4: 'copies' must be a whole number")
    assert driver.find_element(By.CSS_SELECTOR, "#gutter .err").text == "4"
    driver.find_element(By.ID, "policy-apply").click()  # refused too: nothing applied
    wait_for(lambda: text(driver, "#policy-error"))
    assert site.live.client(site.admin).get("/v1/policy").json()["version"] == 0

    area.clear()
    area.send_keys("rules:\n  - name: two\n    match: /projects/**\n    copies: 2\n    where: cloud=aws | cloud=azure\n    spread: cloud\n")
    driver.find_element(By.ID, "policy-apply").click()
    wait_for(lambda: "Applied: policy v1" in text(driver, "#policy-result"), what="the applied policy")

    go(driver, "#/where?path=/projects/alpha", "where")
    assert "2 file(s) short" in text(driver, "#rules") or "3 file(s) short" in text(driver, "#rules")
    go(driver, "#/placement", "placement")
    driver.find_element(By.ID, "run-placement").click()
    wait_for(lambda: driver.find_elements(By.ID, "job-done"), timeout=60, what="the placement run")
    assert "Placement run done" in text(driver, "#job-done")
    go(driver, "#/files?path=/projects/alpha/data/labels.csv", "files")
    replicas = [r.text for r in driver.find_elements(By.CSS_SELECTOR, "#replicas tbody tr")]
    assert len(replicas) == 2 and any("azure-eu" in r and "westeurope" in r for r in replicas)
    assert "met" in text(driver, "#policy-met")
    go(driver, "#/where?path=/projects/alpha", "where")
    assert "met" in text(driver, "#rules") and "short" not in text(driver, "#rules")
    assert "azure" in text(driver, "#chart-cloud") and "westeurope" in text(driver, "#chart-region")
    assert console_errors(driver) == []


def test_another_projects_files_are_refused_and_admin_pages_are_not_offered(site: Site, driver: Any) -> None:
    login(driver, site.live.url, site.ann)
    go(driver, "#/files?path=/projects/beta/plans.txt", "files")
    refused = wait_for(lambda: text(driver, "#refused"))
    assert "no such file" in refused and "secret" not in driver.page_source
    go(driver, "#/files?path=/projects/beta", "files")
    assert "no such file" in text(driver, "#refused")
    go(driver, "#/where?path=/projects/beta", "where")
    assert "no such file" in text(driver, "#status")
    go(driver, "#/files?path=/", "files")
    hidden = [a.text for a in driver.find_elements(By.CSS_SELECTOR, "#nav a") if a.is_displayed()]
    assert hidden == ["Files", "Trash", "Where", "Account"]
    go(driver, "#/policy", "policy")  # typed by hand: no page
    assert "Not found" in text(driver, "#main")
    # the server refuses too, whatever the page offers
    r = httpx.get(f"{site.live.url}/v1/files", params={"path": "/projects/beta/plans.txt"},
                  headers={"Authorization": f"Bearer {site.ann}"})
    assert r.status_code == 404
    assert console_errors(driver, allow=("404",)) == []


def test_compute_dry_run_first_and_the_admin_pages(site: Site, driver: Any) -> None:
    login(driver, site.live.url, site.admin)
    go(driver, "#/compute?near=/projects/alpha", "compute")
    driver.find_element(By.ID, "vm-provider").send_keys("local")
    driver.find_element(By.ID, "vm-region").send_keys("lab")
    assert not driver.find_element(By.ID, "vm-boot").is_enabled()  # the decision comes first
    driver.find_element(By.ID, "vm-plan").click()
    reason = wait_for(lambda: text(driver, "#vm-reason"), what="the decision")
    assert reason.startswith("local in lab")
    assert "aws/us-east-1" in text(driver, "#vm-decision")
    go(driver, "#/admin", "admin")
    assert {"aws-east", "azure-eu", "gcs-cold"} <= {r.split()[0] for r in rows(driver, "backends")}
    assert "alpha" in text(driver, "#projects") and "ann (editor)" in text(driver, "#projects")
    form = driver.find_element(By.ID, "user-add")
    form.find_element(By.NAME, "name").send_keys("bob")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_for(lambda: "bob" in text(driver, "#users"), what="the new user")
    form = driver.find_element(By.ID, "grant")
    form.find_element(By.NAME, "project").send_keys("beta")
    form.find_element(By.NAME, "user").send_keys("bob")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_for(lambda: "bob (viewer)" in text(driver, "#projects"), what="the grant")
    form = driver.find_element(By.ID, "revoke")
    form.find_element(By.NAME, "project").send_keys("alpha")
    form.find_element(By.NAME, "user").send_keys("ann")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_for(lambda: "ann (editor)" not in text(driver, "#projects"), what="the revocation")
    form = driver.find_element(By.ID, "token-create")
    form.find_element(By.NAME, "name").send_keys("laptop")
    form.find_element(By.NAME, "user").send_keys("bob")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    secret = wait_for(lambda: text(driver, "#new-token .secret"), what="the new token")
    assert httpx.get(f"{site.live.url}/v1/whoami", headers={"Authorization": f"Bearer {secret}"}).json()["user"] == "bob"
    assert console_errors(driver) == []


def test_keyboard_only_and_a_phone_width(site: Site, tmp_path: Path) -> None:
    with browser(width=390, height=844) as driver:
        driver.get(site.live.url + "/")
        wait_for(lambda: driver.find_element(By.ID, "token"))
        # the token box has the focus; type, press Enter
        driver.switch_to.active_element.send_keys(site.ann, Keys.ENTER)
        ready(driver, "files")
        # tab to the first entry of the listing and open it with Enter
        for _ in range(60):
            driver.switch_to.active_element.send_keys(Keys.TAB)
            if driver.switch_to.active_element.text == "projects/":
                break
        assert driver.switch_to.active_element.text == "projects/"
        driver.switch_to.active_element.send_keys(Keys.ENTER)
        wait_for(lambda: "path=%2Fprojects" in driver.current_url)
        ready(driver, "files")
        assert rows(driver, "listing") == ["alpha"]
        # changing the order from the keyboard re-lists the page and leaves the focus where it was
        go(driver, "#/files?path=/projects/alpha", "files")
        driver.execute_script("document.getElementById('order').focus()")
        driver.switch_to.active_element.send_keys(Keys.ARROW_DOWN)
        wait_for(lambda: "order=desc" in driver.current_url, what="the new order")
        ready(driver, "files")
        assert rows(driver, "listing") == ["data", "README.md"]
        assert driver.switch_to.active_element.get_attribute("id") == "order"
        # nothing is wider than the phone's screen
        assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")
        go(driver, "#/files?path=/projects/alpha/data/labels.csv", "files")
        assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")
        assert console_errors(driver) == []


def test_a_big_upload_cut_mid_way_is_resumed_from_the_servers_offset(site: Site, driver: Any, tmp_path: Path) -> None:
    big = tmp_path / "resumed.bin"
    big.write_bytes(bytes(range(256)) * (36 * 1024 + 1))  # 9 MiB and a bit: two chunks of 8 MiB
    os.utime(big, (1_700_000_000, 1_700_000_000))
    path = "/projects/alpha/resumed.bin"
    size = big.stat().st_size
    api = site.live.client(site.ann)
    # a session that received its first chunk before the connection was lost
    session = api.post("/v1/uploads", json={"path": path, "size": size}).json()
    chunk = session["chunk_size"]
    assert api.put(f"/v1/uploads/{session['id']}", params={"offset": 0}, content=big.read_bytes()[:chunk]).json()["offset"] == chunk
    login(driver, site.live.url, site.ann)
    driver.execute_script("localStorage.setItem(arguments[0], arguments[1]);",
                          f"vdir.upload:{path}:{size}:1700000000000", session["id"])
    go(driver, "#/files?path=/projects/alpha", "files")
    driver.find_element(By.ID, "upload-input").send_keys(str(big))
    wait_for(lambda: "Uploaded 1 of 1" in text(driver, "#status"), timeout=60, what="the resumed upload")
    assert site.vd.cat(path) == big.read_bytes()
    # it was that session that was committed (and forgotten), not a new one
    assert api.get(f"/v1/uploads/{session['id']}").status_code == 404
    assert driver.execute_script("return Object.keys(localStorage).filter(k => k.startsWith('vdir.upload:'))") == []
    assert console_errors(driver) == []
