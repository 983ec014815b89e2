"""Users' catalogs outlive releases: a catalog written by the previous release's code opens with
this code and is upgraded in place (both engines).

The old catalog is made by the old code itself: the ``vdir`` package of :data:`OLD_MAIN`, taken
from this repository's history with ``git archive`` and run in a child process.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from vdir.catalog import ROOT_ID, open_catalog
from vdir.catalog.base import SCHEMA_VERSION

ROOT = Path(__file__).resolve().parents[1]
OLD_MAIN = "d14101b"
"""The last main whose catalogs have schema 1 (before Entry.blocks and the replica key index)."""

WRITE_OLD = r"""
import json, sys, vdir
from vdir.catalog.base import BackendRecord, Entry, Replica, Task, open_catalog
assert vdir.__file__.startswith(sys.argv[2]), vdir.__file__
cat = open_catalog(sys.argv[1])
cat.put_backend(BackendRecord("local", "file:///srv/objects"))
d = cat.create(Entry(name="d", type="dir"))
f = cat.create(Entry(name="f.txt", parent_id=d.id, size=5, hash="abc",
                     replicas=[Replica("local", "d/f.txt", 5, "abc"), Replica("spare", "d/f.txt", 5, "abc")]))
cat.create(Entry(name="link", type="symlink", parent_id=d.id, target="f.txt"))
cat.add_task(Task(kind="replicate", entry_id=f.id, destination="spare", dedupe_key="r1"))
cat.put_record("settings", "k", {"v": 1})
cat.close()
print(json.dumps({"dir": d.id, "file": f.id}))
"""


@pytest.fixture(scope="module")
def old_code(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return extract(tmp_path_factory, OLD_MAIN)


def extract(tmp_path_factory: pytest.TempPathFactory, commit: str) -> Path:
    """The ``vdir`` package of ``commit``, unpacked into a fresh directory."""
    dest = tmp_path_factory.mktemp(f"old-vdir-{commit}")
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "vdir"], capture_output=True)
    assert archive.returncode == 0, f"git archive {commit} failed (a full clone is needed): {archive.stderr.decode()}"
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest


def old_url(engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """Where the old code writes its catalog: a SQLite file in ``tmp_path``, or a fresh MongoDB database."""
    return f"sqlite:///{tmp_path}/old.db" if engine == "sqlite" else str(request.getfixturevalue("mongo_catalog_url"))


def sqlite_schema(tmp_path: Path) -> int:
    """The schema version the SQLite catalog ``old.db`` records, read without vdir."""
    with sqlite3.connect(tmp_path / "old.db") as raw:
        return int(raw.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0])


def stored_schema(engine: str, tmp_path: Path, cat: object) -> int:
    """The schema version the catalog records now (SQLite: read without vdir; MongoDB: its meta document)."""
    if engine == "sqlite":
        return sqlite_schema(tmp_path)
    from vdir.catalog.mongo import MongoCatalog

    assert isinstance(cat, MongoCatalog)
    return int(cat._db["meta"].find_one({"_id": "schema"})["version"])


def run_old(code: Path, script: str, url: str) -> dict[str, int]:
    """Run ``script`` with the old ``vdir`` in ``code`` against the catalog ``url``; its JSON output."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", script, url, str(code)], cwd=code, env=env,
                          capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    return dict(json.loads(proc.stdout))


def write_with_old_code(old_code: Path, url: str) -> dict[str, int]:
    return run_old(old_code, WRITE_OLD, url)


@pytest.mark.parametrize("engine", ["sqlite", "mongo"])
def test_catalog_of_the_previous_release_is_upgraded_in_place(engine: str, old_code: Path, tmp_path: Path,
                                                               request: pytest.FixtureRequest) -> None:
    url = old_url(engine, tmp_path, request)
    ids = write_with_old_code(old_code, url)
    if engine == "sqlite":
        assert sqlite_schema(tmp_path) == 1

    cat = open_catalog(url)
    try:
        d = cat.lookup(ROOT_ID, "d")
        assert d is not None and d.id == ids["dir"]
        f = cat.lookup(d.id, "f.txt")
        assert f is not None and f.hash == "abc" and f.blocks is None
        assert [(r.backend, r.key) for r in f.replicas] == [("local", "d/f.txt"), ("spare", "d/f.txt")]
        assert cat.resolve("/d/link").target == "f.txt"
        # schema 4 facts of old entries: subdirectory counts, atime from mtime, no device number
        assert cat.root().subdirs == 1 and d.subdirs == 0
        assert f.atime == f.mtime and f.rdev == 0
        # the new index knows the old entries' objects
        assert cat.replica_users("local", "d/f.txt") == [f.id]
        assert cat.replica_users("spare", "d/f.txt") == [f.id]
        assert cat.get_backend("local").url == "file:///srv/objects"
        assert [t.dedupe_key for t in cat.list_tasks()] == ["r1"]
        assert cat.get_record("settings", "k")[0] == {"v": 1}
        # and the upgraded catalog takes new writes
        cat.update(f.copy(blocks="20:00"), f.version)
    finally:
        cat.close()
    if engine == "sqlite":
        assert sqlite_schema(tmp_path) == SCHEMA_VERSION
    again = open_catalog(url)  # a second open finds nothing left to do
    try:
        assert again.resolve("/d/f.txt").blocks == "20:00"
        assert again.replica_users("local", "d/f.txt") == [ids["file"]]
    finally:
        again.close()


def test_a_newer_catalog_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/new.db"
    open_catalog(url).close()
    with sqlite3.connect(tmp_path / "new.db") as raw:
        raw.execute("UPDATE meta SET value='99' WHERE key='schema'")
    from vdir.errors import CatalogError

    with pytest.raises(CatalogError, match="newer than this vdir"):
        open_catalog(url)


OLD_MAIN_2 = "b31fa89"
"""The last main whose catalogs have schema 2 (task ids from a counter, no due/expiry on tasks)."""

WRITE_OLD_TASKS = r"""
import json, sys, vdir
from vdir.catalog.base import Task, open_catalog
assert vdir.__file__.startswith(sys.argv[2]), vdir.__file__
cat = open_catalog(sys.argv[1])
done = cat.add_task(Task(kind="verify", entry_id=1))
assert cat.claim_task("old", 60).id == done.id and cat.finish_task(done.id, "old", "done")
pending = cat.add_task(Task(kind="replicate", entry_id=2, destination="b", dedupe_key="replicate:2"))
later = cat.add_task(Task(kind="replicate", entry_id=3, dedupe_key="replicate:3"))
running = cat.add_task(Task(kind="trim", entry_id=4))
assert cat.claim_task("old", 3600, kinds=["trim"]).id == running.id
cat.close()
print(json.dumps({"done": done.id, "pending": pending.id, "later": later.id, "running": running.id}))
"""


@pytest.fixture(scope="module")
def old_code_2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return extract(tmp_path_factory, OLD_MAIN_2)


@pytest.mark.parametrize("engine", ["sqlite", "mongo"])
def test_task_queue_of_schema_2_is_upgraded_in_place(engine: str, old_code_2: Path, tmp_path: Path,
                                                      request: pytest.FixtureRequest) -> None:
    from vdir.catalog.base import DONE, PENDING, RUNNING, Task

    url = old_url(engine, tmp_path, request)
    ids = run_old(old_code_2, WRITE_OLD_TASKS, url)
    if engine == "sqlite":
        assert sqlite_schema(tmp_path) == 2

    cat = open_catalog(url)
    try:
        states = {t.id: t.state for t in cat.list_tasks()}
        assert states == {ids["done"]: DONE, ids["pending"]: PENDING, ids["later"]: PENDING, ids["running"]: RUNNING}
        # the old unfinished tasks still dedupe, and the queue still hands them out oldest first
        assert cat.add_task(Task(kind="replicate", entry_id=2, dedupe_key="replicate:2")).id == ids["pending"]
        first = cat.claim_task("new", 60)
        second = cat.claim_task("new", 60)
        assert first is not None and second is not None and (first.id, second.id) == (ids["pending"], ids["later"])
        assert first.destination == "b" and first.attempts == 1
        assert cat.claim_task("new", 60) is None  # the old lease on the trim task still holds
        assert cat.finish_task(first.id, "new", DONE)
        fresh = cat.add_task(Task(kind="replicate", entry_id=2, dedupe_key="replicate:2"))
        assert fresh.id not in ids.values()
        # the old finished task now expires like a new one
        if engine == "sqlite":
            with sqlite3.connect(tmp_path / "old.db") as raw:
                expire_at = raw.execute("SELECT expire_at FROM tasks WHERE id=?", (ids["done"],)).fetchone()[0]
                assert expire_at is not None
        else:
            from vdir.catalog.mongo import MongoCatalog

            assert isinstance(cat, MongoCatalog)
            assert cat._tasks.find_one({"_id": ids["done"]})["expire_at"] is not None
            indexes = set(cat._tasks.index_information())
            assert {"open_key", "due", "expire_at"} <= indexes and not {"claim", "lease", "dedupe_open"} & indexes
        assert stored_schema(engine, tmp_path, cat) == SCHEMA_VERSION
    finally:
        cat.close()
    again = open_catalog(url)  # a second open finds nothing left to do
    try:
        assert {t.id for t in again.list_tasks(PENDING)} == {fresh.id}
    finally:
        again.close()


OLD_MAIN_3 = "e4d6c91"
"""The last main whose catalogs have schema 3 (no special files, no atime, no subdirectory counts)."""

WRITE_OLD_TREE = r"""
import json, sys, vdir
from vdir.catalog.base import Entry, Replica, open_catalog
assert vdir.__file__.startswith(sys.argv[2]), vdir.__file__
cat = open_catalog(sys.argv[1])
top = cat.create(Entry(name="top", type="dir", mtime=1000.0, ctime=1000.0))
subs = [cat.create(Entry(name=f"sub{i}", type="dir", parent_id=top.id)) for i in range(3)]
inner = cat.create(Entry(name="inner", type="dir", parent_id=subs[0].id))
f = cat.create(Entry(name="f.txt", parent_id=top.id, size=5, hash="abc", mtime=1234.5,
                     replicas=[Replica("local", "top/f.txt", 5, "abc")]))
cat.close()
print(json.dumps({"top": top.id, "sub0": subs[0].id, "inner": inner.id, "file": f.id}))
"""


@pytest.fixture(scope="module")
def old_code_3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return extract(tmp_path_factory, OLD_MAIN_3)


@pytest.mark.parametrize("engine", ["sqlite", "mongo"])
def test_tree_of_schema_3_gets_atime_and_subdirectory_counts(engine: str, old_code_3: Path, tmp_path: Path,
                                                              request: pytest.FixtureRequest) -> None:
    from vdir.catalog.base import DIR, FIFO, Entry

    url = old_url(engine, tmp_path, request)
    ids = run_old(old_code_3, WRITE_OLD_TREE, url)
    if engine == "sqlite":
        assert sqlite_schema(tmp_path) == 3

    cat = open_catalog(url)
    try:
        top = cat.resolve("/top")
        assert top.id == ids["top"] and top.type == DIR
        # counted on upgrade: three subdirectories below /top, one below /top/sub0, none elsewhere
        assert top.subdirs == 3
        assert cat.get(ids["sub0"]).subdirs == 1 and cat.get(ids["inner"]).subdirs == 0
        assert cat.root().subdirs == 1
        f = cat.get(ids["file"])
        assert (f.hash, f.size, f.rdev) == ("abc", 5, 0)
        assert f.atime == f.mtime == 1234.5  # filled from mtime
        assert cat.replica_users("local", "top/f.txt") == [f.id]
        # the upgraded catalog takes the new kinds of entries, and keeps counting
        fifo = cat.create(Entry(name="pipe", type=FIFO, parent_id=top.id, mode=0o600))
        assert cat.get(fifo.id).type == FIFO
        cat.create(Entry(name="sub3", type=DIR, parent_id=top.id))
        assert cat.get(top.id).subdirs == 4
        assert stored_schema(engine, tmp_path, cat) == SCHEMA_VERSION
    finally:
        cat.close()
    again = open_catalog(url)  # a second open finds nothing left to do, and the counts stand
    try:
        assert again.resolve("/top").subdirs == 4
    finally:
        again.close()


OLD_MAIN_4 = "b6ffb36"
"""The last main whose catalogs have schema 4 (no hard links: no inodes table/collection)."""

WRITE_OLD_FILES = r"""
import json, sys, vdir
from vdir.catalog.base import Entry, Replica, open_catalog
assert vdir.__file__.startswith(sys.argv[2]), vdir.__file__
cat = open_catalog(sys.argv[1])
d = cat.create(Entry(name="d", type="dir"))
f = cat.create(Entry(name="f.txt", parent_id=d.id, size=5, hash="abc", replicas=[Replica("local", "d/f.txt", 5, "abc")]))
s = cat.create(Entry(name="s", type="symlink", parent_id=d.id, target="f.txt"))
gone = cat.create(Entry(name="gone", parent_id=d.id))
cat.delete(gone.id)
cat.close()
print(json.dumps({"dir": d.id, "file": f.id, "symlink": s.id}))
"""


@pytest.fixture(scope="module")
def old_code_4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return extract(tmp_path_factory, OLD_MAIN_4)


@pytest.mark.parametrize("engine", ["sqlite", "mongo"])
def test_entries_of_schema_4_become_inline_inodes_that_take_links(engine: str, old_code_4: Path, tmp_path: Path,
                                                                   request: pytest.FixtureRequest) -> None:
    from vdir.catalog.base import DIR, Entry

    url = old_url(engine, tmp_path, request)
    ids = run_old(old_code_4, WRITE_OLD_FILES, url)
    if engine == "sqlite":
        assert sqlite_schema(tmp_path) == 4

    cat = open_catalog(url)
    try:
        d = cat.resolve("/d")
        assert (d.id, d.type, d.nlink) == (ids["dir"], DIR, 1)
        f = cat.resolve("/d/f.txt")
        assert (f.id, f.size, f.hash, f.nlink) == (ids["file"], 5, "abc", 1)
        assert [(e.name, e.nlink) for e in cat.list(d.id)] == [("f.txt", 1), ("s", 1)]
        assert cat.get(ids["symlink"]).target == "f.txt"
        assert cat.stats() == {"entries": 4, "files": 1, "dirs": 2, "bytes": 5}
        # an old entry takes a second name, and keeps its id, replicas and their index
        g = cat.link(f.id, ROOT_ID, "g.txt")
        assert (g.id, g.nlink, g.version) == (f.id, 2, f.version + 1)
        assert cat.resolve("/d/f.txt").nlink == 2 and cat.resolve("/g.txt").hash == "abc"
        assert cat.replica_users("local", "d/f.txt") == [f.id]
        assert cat.stats()["files"] == 1
        # a new entry never takes an id an old one has
        fresh = cat.create(Entry(name="new", parent_id=d.id))
        assert fresh.id not in ids.values()
        assert stored_schema(engine, tmp_path, cat) == SCHEMA_VERSION
        if engine == "mongo":
            from vdir.catalog.mongo import MongoCatalog

            assert isinstance(cat, MongoCatalog)
            assert {"replica_backend", "replica_key"} <= set(cat._inodes.index_information())
            assert "inode" in cat._entries.index_information()
    finally:
        cat.close()
    assert SCHEMA_VERSION == 5
    again = open_catalog(url)  # a second open finds nothing left to do, and the link stands
    try:
        assert again.resolve("/g.txt").nlink == 2
        again.delete(ids["file"], source=(ids["dir"], "f.txt"))
        assert again.resolve("/g.txt").nlink == 1 and again.get(ids["file"]).name == "g.txt"
    finally:
        again.close()
