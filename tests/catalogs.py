"""The catalog fixtures and helpers shared by the catalog test modules (a pytest plugin,
registered in conftest): ``catalog`` runs a test once per engine, ``second`` is another
instance on the same catalog, as a second process would open it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vdir.catalog import DIR, FILE, ROOT_ID, Catalog, Entry, open_catalog

ENGINES = ["sqlite", "mongo"]

AWKWARD_NAMES = [
    "b",
    "a",
    "B",
    "Z",
    "10",
    "9",
    "e",
    "é",
    "ê",
    "êé",
    "Hello, 世界",
    "with space",
    " leading space",
    'quote"d',
    "apo'strophe",
    "hello? sausage",
    "@ < > & ? +",
    "≠",
    "😀 emoji",
    "~tilde",
]


@pytest.fixture(params=ENGINES)
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/c.db"
    return str(request.getfixturevalue("mongo_catalog_url"))


@pytest.fixture
def catalog(catalog_url: str) -> Iterator[Catalog]:
    cat = open_catalog(catalog_url)
    try:
        yield cat
    finally:
        cat.close()


@pytest.fixture
def second(catalog_url: str, catalog: Catalog) -> Iterator[Catalog]:
    """Another engine instance on the same catalog (as a second process would open it)."""
    cat = open_catalog(catalog_url)
    try:
        yield cat
    finally:
        cat.close()


def mkdir(cat: Catalog, name: str, parent: int = ROOT_ID) -> Entry:
    return cat.create(Entry(name=name, type=DIR, parent_id=parent, mode=0o755))


def mkfile(cat: Catalog, name: str, parent: int = ROOT_ID, size: int = 0, **fields: object) -> Entry:
    return cat.create(Entry(name=name, type=FILE, parent_id=parent, size=size, **fields))  # type: ignore[arg-type]


def names(entries: list[Entry]) -> list[str]:
    return [e.name for e in entries]


def byte_order(items: list[str]) -> list[str]:
    return sorted(items, key=lambda s: s.encode("utf-8"))


def poll(check: Callable[[], object], timeout: float = 10.0) -> object:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met after {timeout}s")
        time.sleep(0.02)


def run_threads(targets: list[Callable[[], None]]) -> None:
    errors: list[BaseException] = []

    def wrap(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 - reported in the main thread
                errors.append(exc)

        return run

    threads = [threading.Thread(target=wrap(t)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
        assert not t.is_alive(), "a worker thread hung"
    if errors:
        raise errors[0]


