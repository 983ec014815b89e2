"""The browser for the web interface's tests and screenshots: Debian's Chromium, headless, driven
by Selenium through the system chromedriver (Selenium Manager never runs: nothing is downloaded),
and a small demo world (projects, users, files on backends in two clouds) to look at."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from vdir.access import Accounts
from vdir.admin import add_backend
from vdir.catalog.base import open_catalog
from vdir.core import VDir

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def make_world(root: Path) -> VDir:
    """A VDir (SQLite catalog) with three local-folder backends standing for three clouds and
    regions, the trash on, and two projects with files."""
    root.mkdir(parents=True, exist_ok=True)
    v = VDir(open_catalog(f"sqlite:///{root / 'catalog.db'}"), default_backend="aws-east")
    for name, cloud, region, tier in (("aws-east", "aws", "us-east-1", "standard"),
                                      ("azure-eu", "azure", "westeurope", "standard"),
                                      ("gcs-cold", "gcp", "europe-west1", "cold")):
        (root / name).mkdir(parents=True, exist_ok=True)
        add_backend(v, name, f"file://{root / name}", check=False, cloud=cloud, region=region, tier=tier)
    v.set_trash_keep(7 * 86400)
    accounts = Accounts(v.catalog)
    accounts.create_project("alpha", ["/projects/alpha"], quota_bytes=10 << 30)
    accounts.create_project("beta", ["/projects/beta"])
    v.put(b"id,label\n1,cat\n2,dog\n" * 50, "/projects/alpha/data/labels.csv")
    v.put(b"x" * 300_000, "/projects/alpha/data/images.tar")
    v.put(b"# alpha\nNotes of project alpha.\n", "/projects/alpha/README.md")
    v.put(b"secret of beta", "/projects/beta/plans.txt")
    return v


def token(vd: VDir, user: str, *, admin: bool = False, project: str | None = None, role: str = "editor",
          scopes: tuple[str, ...] = ("read", "write")) -> str:
    accounts = Accounts(vd.catalog)
    if user not in {u["name"] for u in accounts.list_users()}:
        accounts.add_user(user, admin=admin)
    if project:
        accounts.grant(project, user, role)
    secret, _ = accounts.create_token(user, scopes=scopes, expires_in=3600)
    return str(secret)


@contextlib.contextmanager
def browser(download_dir: Path | None = None, width: int = 1280, height: int = 800) -> Iterator[Any]:
    """A headless Chromium (as root: no sandbox) through /usr/bin/chromedriver."""
    os.environ["SE_OFFLINE"] = "true"  # belt and braces: Selenium Manager must not fetch anything
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--no-first-run", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--metrics-recording-only", "--disable-default-apps", "--lang=en-US"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    if download_dir is not None:
        opts.add_experimental_option("prefs", {"download.default_directory": str(download_dir),
                                               "download.prompt_for_download": False})
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=CHROMEDRIVER))
    driver.set_window_size(width, height)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(check: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy (no fixed sleeps); its value."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # the page is still changing (stale or missing element)
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}" + (f" ({last})" if last else ""))
        time.sleep(0.05)


def ready(driver: Any, view: str, timeout: float = 20.0) -> None:
    """Wait until the interface has rendered ``view`` completely, for the address the browser
    shows now (a click on a link changes the address at once but renders on the next
    ``hashchange``: until then the previous page would pass for ready)."""
    wait_for(lambda: driver.execute_script(
        "const m = document.getElementById('main');"
        " return m.dataset.view === arguments[0] && m.dataset.hash === location.hash && !m.hasAttribute('aria-busy');",
        view), timeout, f"the {view} view")


def login(driver: Any, url: str, secret: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url + "/")
    box = wait_for(lambda: driver.find_element(By.ID, "token"), what="the login form")
    box.send_keys(secret)
    driver.find_element(By.ID, "login").click()
    ready(driver, "files")


def go(driver: Any, fragment: str, view: str) -> None:
    driver.execute_script("location.hash = arguments[0];", fragment)
    ready(driver, view)


def console_errors(driver: Any, allow: tuple[str, ...] = ()) -> list[str]:
    """Severe entries of the browser's console since the last call (except those containing a
    string of ``allow``)."""
    return [e["message"] for e in driver.get_log("browser")
            if e.get("level") == "SEVERE" and not any(a in e["message"] for a in allow)]
