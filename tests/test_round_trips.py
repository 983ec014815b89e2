"""How many times the catalog is asked, per operation, on both engines.

MongoDB: commands seen by a ``pymongo.monitoring.CommandListener`` (registered for every
client this module creates), i.e. network round trips.  SQLite: statements reported by
``sqlite3``'s ``set_trace_callback`` (``BEGIN``/``COMMIT`` and ``PRAGMA`` included).  Both are
deterministic, so they are asserted exactly.

============================================  ===================  =============================
operation                                     MongoDB commands     SQLite statements
============================================  ===================  =============================
open an up-to-date catalog                    2 (hello, schema)    2 (synchronous, schema)
resolve a path of depth *d* (``/`` is 1)      *d*                  *d*
  intermediate directories read               ``_id``, ``type``    ``id, type``
list *n* children, ``page`` at a time         max(1, ⌈n/page⌉)     max(1, ⌈n/page⌉)
``ls`` of a directory at depth *d*            d + max(1, ⌈n/1000⌉) d + max(1, ⌈n/1000⌉)
``VDir.put`` of one small new file, depth *d*  d + 2 + C           d + 2 + C
  (C: one ``Catalog.create`` there)
``rm -r`` of a directory of N files           d + 1 + 5·⌈N/B⌉ + R  d + 1 + 9·⌈N/B⌉ + R
  (B: ``RM_BATCH``; R: one directory delete)
``Catalog.link`` (first / further names)      6 / 6                10 / 8
lookup of a linked name (``lookup_id``)       2 (1)                1 (1)
a page of a listing that holds linked names   +1                   +0
============================================  ===================  =============================

``put``: *d* to locate the destination (its parent's id and whether it exists), one to record
the write intent, the create, one to drop the intent.  In the root directory that is 3 + C:
4 on MongoDB, whose create is one command.  ``rm -r`` per batch: the intent, one bulk delete of the
files with a touch of the directories they leave (MongoDB: pymongo sends the bulk's deletes and
its updates as two commands; SQLite: a transaction of four statements), one query for who else uses the objects,
dropping the intent.

Before (commit b31fa89, the same counting on the same operations): open 13 commands / 23
statements, resolve *d* + 1 commands, ``VDir.put`` of one local file in the root 10 commands /
20 statements, ``ls`` one empty query too many on Mongo, ``rm -r`` of 1,000 files 3,012
commands (7 s on the test server) / 7,024 statements; after: 14 commands / 25 statements.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from vdir import core
from vdir.catalog import DIR, FILE, ROOT_ID, Catalog, Entry, Replica, open_catalog
from vdir.core import VDir

ENGINES = ["sqlite", "mongo"]
RM_BATCH_PER = {"mongo": 5, "sqlite": 9}
"""Catalog round trips per batch of ``rm -r`` (see the module docstring)."""


@dataclass
class Counter:
    """Counts what the catalog is asked while ``active``; ``log`` keeps what it was."""

    active: bool = False
    log: list[Any] = field(default_factory=list)

    def __call__(self, fn: Callable[[], Any]) -> int:
        self.log.clear()
        self.active = True
        try:
            fn()
        finally:
            self.active = False
        return len(self.log)


_mongo_counter = Counter()


def _register_listener() -> None:
    monitoring = pytest.importorskip("pymongo.monitoring", reason="the mongo extra is not installed")

    class Listener(monitoring.CommandListener):  # type: ignore[misc]
        def started(self, event: Any) -> None:
            # endSessions is sent when a client closes, never during an operation
            if _mongo_counter.active and event.command_name != "endSessions":
                _mongo_counter.log.append((event.command_name, event.command))

        def succeeded(self, event: Any) -> None:
            pass

        def failed(self, event: Any) -> None:
            pass

    monitoring.register(Listener())


_register_listener()


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str, Counter]]:
    """(engine name, catalog URL, counter) with the catalog already created."""
    if request.param == "mongo":
        url = str(request.getfixturevalue("mongo_catalog_url"))
        counter = _mongo_counter
    else:
        url = f"sqlite:///{tmp_path}/c.db"
        counter = Counter()
        real = sqlite3.connect

        def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
            conn = real(*args, **kwargs)
            conn.set_trace_callback(lambda sql: counter.log.append(sql) if counter.active else None)
            return conn

        monkeypatch.setattr(sqlite3, "connect", connect)
    open_catalog(url).close()
    yield request.param, url, counter


@pytest.fixture
def catalog(engine: tuple[str, str, Counter]) -> Iterator[Catalog]:
    cat = open_catalog(engine[1])
    # the Mongo engine hands out entry ids in blocks of 64 from a counter document: fetch this
    # process's first block now, so the counts below (under 64 creates) never include it
    cat.delete(cat.create(Entry(name="warm-up", parent_id=ROOT_ID)).id)
    try:
        yield cat
    finally:
        cat.close()


@pytest.fixture
def vd(engine: tuple[str, str, Counter], catalog: Catalog, tmp_path: Path) -> VDir:
    from vdir.admin import add_backend

    (tmp_path / "objects").mkdir()
    v = VDir(catalog, default_backend="local")
    add_backend(v, "local", f"file://{tmp_path / 'objects'}", check=False)
    v.backend("local")  # opened once per process: its record is read once, not per put
    return v


def mkdirs(cat: Catalog, *names: str) -> int:
    parent = ROOT_ID
    for name in names:
        found = cat.lookup(parent, name)
        parent = found.id if found is not None else cat.create(Entry(name=name, type=DIR, parent_id=parent)).id
    return parent


def test_open_reads_one_schema_document(engine: tuple[str, str, Counter]) -> None:
    _, url, count = engine
    opened: list[Catalog] = []
    assert count(lambda: opened.append(open_catalog(url))) == 2
    opened[0].close()


def test_resolve_costs_one_lookup_per_component_and_never_reads_the_root(
        engine: tuple[str, str, Counter], catalog: Catalog) -> None:
    name, _, count = engine
    parent = mkdirs(catalog, "a", "b", "c", "d", "e")
    catalog.create(Entry(name="f.txt", parent_id=parent))
    path = "/a/b/c/d/e/f.txt"
    for depth in range(1, 7):
        prefix = "/" + "/".join(path[1:].split("/")[:depth])
        assert count(lambda p=prefix: catalog.resolve(p)) == depth, prefix
    assert count(lambda: catalog.resolve("/")) == 1
    # the intermediate directories are read as id and type only, the last entry in full
    count(lambda: catalog.resolve(path))
    if name == "mongo":
        projections = [cmd.get("projection") for _, cmd in _mongo_counter.log]
        assert projections[:5] == [{"_id": 1, "type": 1}] * 5 and projections[5] is None
    else:
        assert all(sql.startswith("SELECT id, type FROM") for sql in count.log[:5])
        assert not count.log[5].startswith("SELECT id, type FROM")


@pytest.mark.parametrize("n", [0, 3, 4, 5, 8, 9])
def test_listing_streams_pages_without_an_empty_last_query(
        engine: tuple[str, str, Counter], catalog: Catalog, n: int) -> None:
    _, _, count = engine
    d = mkdirs(catalog, "d")
    for i in range(n):
        catalog.create(Entry(name=f"f{i}", parent_id=d))
    got: list[str] = []
    assert count(lambda: got.extend(e.name for e in catalog.iter_children(d, page=4))) == max(1, -(-n // 4))
    assert got == sorted(f"f{i}" for i in range(n))


def test_ls_costs_the_resolve_and_one_query_per_page(engine: tuple[str, str, Counter], vd: VDir) -> None:
    _, _, count = engine
    d = mkdirs(vd.catalog, "a", "b")
    for i in range(5):
        vd.catalog.create(Entry(name=f"f{i}", parent_id=d))
    assert count(lambda: vd.ls("/a/b")) == 2 + 1
    mkdirs(vd.catalog, "empty")
    assert count(lambda: vd.ls("/empty")) == 1 + 1


def _create_cost(count: Counter, cat: Catalog, parent_id: int) -> int:
    """Commands/statements of one Catalog.create of a file with one replica under ``parent_id``."""
    replica = Replica(backend="local", key="probe-key", size=1, hash="00")
    probe: list[Entry] = []
    cost = count(lambda: probe.append(cat.create(Entry(name="probe", type=FILE, parent_id=parent_id, replicas=[replica]))))
    cat.delete(probe[0].id)
    return cost


def test_put_of_one_small_file(engine: tuple[str, str, Counter], vd: VDir, tmp_path: Path) -> None:
    _, _, count = engine
    create_in_root = _create_cost(count, vd.catalog, ROOT_ID)
    # in the root: locate (1), intent (1), create, drop the intent (1)
    assert count(lambda: vd.put(b"hello", "/small")) == 3 + create_in_root
    if engine[0] == "mongo":  # the budget: create is one command, put four
        assert create_in_root == 1
    local = tmp_path / "local.txt"
    local.write_bytes(b"hello, local")
    assert count(lambda: vd.put(local, "/from-disk")) == 3 + create_in_root  # the plan's look is the write's look
    # deeper: one more lookup per directory on the way
    parent = mkdirs(vd.catalog, "a", "b")
    create_deeper = _create_cost(count, vd.catalog, parent)
    assert count(lambda: vd.put(b"hello", "/a/b/small")) == 3 + 2 + create_deeper
    assert vd.cat("/small") == b"hello" and vd.cat("/from-disk") == b"hello, local" and vd.cat("/a/b/small") == b"hello"


def _rm_tree(vd: VDir, count: Counter, files: int, store: Path) -> int:
    mkdirs(vd.catalog, "a", f"big{files}")
    for i in range(files):
        vd.put(b"x%d" % i, f"/a/big{files}/f{i:03d}")
    assert len([p for p in (store / "a" / f"big{files}").iterdir()]) == files
    cost = count(lambda: vd.rm(f"/a/big{files}", recursive=True))
    assert vd.ls("/a") == []
    assert not (store / "a" / f"big{files}").exists() or not any((store / "a" / f"big{files}").iterdir())
    return cost


def test_rm_r_costs_a_few_round_trips_per_batch(engine: tuple[str, str, Counter], vd: VDir, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    name, _, count = engine
    monkeypatch.setattr(core, "RM_BATCH", 10)
    empty = mkdirs(vd.catalog, "probe")
    dir_delete = count(lambda: vd.catalog.delete(empty))
    # 20 files + their directory = 3 batches: two of files, the directory alone
    small = _rm_tree(vd, count, 20, tmp_path / "objects")
    assert small == 2 + 1 + 2 * RM_BATCH_PER[name] + dir_delete
    # twice the files, two batches more, nothing else
    assert _rm_tree(vd, count, 40, tmp_path / "objects") == small + 2 * RM_BATCH_PER[name]


def test_linked_names_cost_one_more_find_on_mongo_and_nothing_more_on_sqlite(
        engine: tuple[str, str, Counter], catalog: Catalog) -> None:
    """An entry with two names keeps its inode apart (see vdir.catalog.base): reading a name of
    it joins the inode in the same statement on SQLite, and costs one more ``find`` on MongoDB
    (per page of a listing, only for a page that holds such names)."""
    name, _, count = engine
    mongo = name == "mongo"
    d = mkdirs(catalog, "a")
    f = catalog.create(Entry(name="f", parent_id=d))
    assert count(lambda: catalog.link(f.id, ROOT_ID, "g")) == (6 if mongo else 10)  # the inode moves out
    assert count(lambda: catalog.link(f.id, ROOT_ID, "h")) == (6 if mongo else 8)
    assert count(lambda: catalog.lookup(ROOT_ID, "g")) == (2 if mongo else 1)
    assert count(lambda: catalog.lookup_id(ROOT_ID, "g")) == 1
    assert count(lambda: catalog.resolve("/a/f")) == (3 if mongo else 2)
    for i in range(5):
        catalog.create(Entry(name=f"p{i}", parent_id=d))
    # f, p0..p2 on the first page (f linked), p3, p4 on the second
    assert count(lambda: list(catalog.iter_children(d, page=4))) == (3 if mongo else 2)
