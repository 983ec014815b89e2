"""One conformance suite for every catalog engine (SQLite and MongoDB), asserting the contract
written in :mod:`vdir.catalog.base`.

The Mongo cases run against the session's SecantusDB server, or a real MongoDB when
``VDIR_TEST_MONGODB_URI`` is set; each test gets a database of its own.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.catalogs import AWKWARD_NAMES, byte_order, mkdir, mkfile, names, run_threads
from vdir.catalog import DIR, ROOT_ID, SYMLINK, BackendRecord, Catalog, Entry, Replica, open_catalog
from vdir.errors import (
    AlreadyExists,
    BackendUnavailable,
    Conflict,
    DirectoryNotEmpty,
    InvalidArgument,
    IsADirectory,
    NotADirectory,
    NotFound,
)

# -- entries -----------------------------------------------------------------------------------


def test_root_exists_once(catalog: Catalog, second: Catalog) -> None:
    root = catalog.root()
    assert (root.id, root.name, root.type, root.parent_id, root.version) == (ROOT_ID, "", DIR, None, 1)
    assert catalog.resolve("/").id == ROOT_ID
    assert catalog.path_of(ROOT_ID) == "/"
    # opening the same catalog again does not create a second root
    assert second.root().id == ROOT_ID
    assert second.stats()["entries"] == 1
    assert catalog.list(ROOT_ID) == []


def test_create_lookup_get(catalog: Catalog) -> None:
    d = mkdir(catalog, "docs")
    f = catalog.create(
        Entry(name="a.txt", parent_id=d.id, mode=0o600, uid=12, gid=34, size=5, mtime=1000.5, ctime=2000.25, hash="ab" * 16)
    )
    link = catalog.create(Entry(name="ln", type=SYMLINK, parent_id=d.id, target="../x/y"))
    assert f.id not in (0, ROOT_ID, d.id) and link.id not in (0, f.id, d.id)
    assert f.version == 1 and d.version == 1
    got = catalog.get(f.id)
    assert got == f
    assert (got.mode, got.uid, got.gid, got.size, got.mtime, got.ctime, got.hash) == (0o600, 12, 34, 5, 1000.5, 2000.25, "ab" * 16)
    assert catalog.lookup(d.id, "a.txt") == f
    assert catalog.lookup(d.id, "nope") is None
    assert catalog.lookup(ROOT_ID, "a.txt") is None
    assert catalog.get(link.id).target == "../x/y"
    assert catalog.resolve("/docs/a.txt").id == f.id
    assert catalog.path_of(f.id) == "/docs/a.txt"
    with pytest.raises(NotFound):
        catalog.get(987654)
    with pytest.raises(NotFound):
        catalog.resolve("/docs/missing")
    with pytest.raises(NotADirectory):
        catalog.resolve("/docs/a.txt/below")


def test_create_name_taken(catalog: Catalog) -> None:
    first = mkfile(catalog, "x", size=1)
    with pytest.raises(AlreadyExists):
        mkfile(catalog, "x", size=2)
    with pytest.raises(AlreadyExists):
        mkdir(catalog, "x")
    assert catalog.lookup(ROOT_ID, "x") == first
    assert catalog.stats()["entries"] == 2
    # the same name is fine in another directory
    d = mkdir(catalog, "d")
    assert mkfile(catalog, "x", parent=d.id).parent_id == d.id


def test_create_bad_parent(catalog: Catalog) -> None:
    f = mkfile(catalog, "file")
    with pytest.raises(NotFound):
        mkfile(catalog, "orphan", parent=424242)
    with pytest.raises(NotADirectory):
        mkfile(catalog, "child", parent=f.id)
    assert catalog.list(f.id) == []
    assert catalog.list(424242) == []
    assert catalog.stats()["entries"] == 2


def test_list_byte_order_and_paging(catalog: Catalog) -> None:
    d = mkdir(catalog, "awkward")
    for i, name in enumerate(AWKWARD_NAMES):
        (mkdir if i % 3 == 0 else mkfile)(catalog, name, d.id)
    expected = byte_order(AWKWARD_NAMES)
    assert expected[:4] == [" leading space", "10", "9", "@ < > & ? +"]  # the test's own premise
    assert names(catalog.list(d.id)) == expected
    for name in AWKWARD_NAMES:
        assert catalog.lookup(d.id, name) is not None, name
        assert catalog.resolve(f"/awkward/{name}").name == name
    # paging: after is exclusive, limit bounds the page
    paged: list[str] = []
    after: str | None = None
    while True:
        page = catalog.list(d.id, after=after, limit=3)
        assert len(page) <= 3
        paged.extend(names(page))
        if len(page) < 3:
            break
        after = page[-1].name
    assert paged == expected
    assert names(catalog.list(d.id, after="Hello, 世界", limit=2)) == ["Z", "a"]
    assert names(catalog.list(d.id, after="é")) == expected[expected.index("é") + 1 :]
    assert catalog.list(d.id, after=expected[-1]) == []
    assert names(catalog.iter_children(d.id, page=4)) == expected  # type: ignore[arg-type]
    assert names(catalog.list(ROOT_ID)) == ["awkward"]


def test_update_compare_and_set(catalog: Catalog) -> None:
    f = mkfile(catalog, "f", size=1)
    changed = catalog.update(f.copy(size=10, hash="h1", mode=0o640), expected_version=1)
    assert changed.version == 2 and changed.size == 10
    stored = catalog.get(f.id)
    assert (stored.version, stored.size, stored.hash, stored.mode) == (2, 10, "h1", 0o640)
    # a stale version changes nothing
    with pytest.raises(Conflict):
        catalog.update(f.copy(size=99, hash="stale"), expected_version=1)
    assert catalog.get(f.id) == stored
    # parent and name are not changed by update
    other = mkdir(catalog, "other")
    again = catalog.update(stored.copy(name="renamed", parent_id=other.id, size=11), expected_version=2)
    assert (again.version, again.name, again.parent_id, again.size) == (3, "f", ROOT_ID, 11)
    assert catalog.lookup(ROOT_ID, "f") is not None and catalog.lookup(other.id, "renamed") is None
    catalog.delete(f.id)
    with pytest.raises(NotFound):
        catalog.update(again, expected_version=3)


def test_replicas_and_xattrs_round_trip(catalog: Catalog) -> None:
    replicas = [
        Replica(backend="s3-east", key="data/a.bin", size=3, hash="0" * 32, etag='"abc"', state="ok", verified_at=1234.5),
        Replica(backend="azure-we", key="a.bin", size=3, hash=None, etag=None, state="missing", verified_at=None),
    ]
    xattrs = {"user.comment": b"hello \x00\xff world", "user.empty": b"", "vdir.linked": "世界".encode()}
    f = mkfile(catalog, "a.bin", size=3, replicas=replicas, xattrs=xattrs)
    got = catalog.get(f.id)
    assert got.replicas == replicas
    assert got.xattrs == xattrs and all(type(v) is bytes for v in got.xattrs.values())
    updated = catalog.update(got.copy(replicas=replicas[:1], xattrs={"user.new": b"\x01"}), expected_version=1)
    again = catalog.get(f.id)
    assert again == updated
    assert again.replicas == replicas[:1] and again.xattrs == {"user.new": b"\x01"}


def test_rename_file(catalog: Catalog) -> None:
    a = mkdir(catalog, "a")
    b = mkdir(catalog, "b")
    f = mkfile(catalog, "f.txt", a.id, size=7)
    moved, replaced = catalog.rename(f.id, a.id, "g.txt")
    assert replaced is None
    assert (moved.id, moved.parent_id, moved.name, moved.version, moved.size) == (f.id, a.id, "g.txt", 2, 7)
    assert catalog.lookup(a.id, "f.txt") is None
    assert catalog.get(f.id) == moved
    moved, _ = catalog.rename(f.id, b.id, "Hello, 世界")
    assert (moved.parent_id, moved.version) == (b.id, 3)
    assert catalog.resolve("/b/Hello, 世界").id == f.id
    assert catalog.list(a.id) == []


def test_rename_dir_is_one_write(catalog: Catalog) -> None:
    top = mkdir(catalog, "top")
    sub = mkdir(catalog, "sub", top.id)
    deep = mkdir(catalog, "deep", sub.id)
    leaf = mkfile(catalog, "leaf.txt", deep.id, size=3)
    dest = mkdir(catalog, "dest")
    before = {e.id: e for _, e in catalog.walk(top.id)}
    moved, replaced = catalog.rename(top.id, dest.id, "renamed")
    assert replaced is None and moved.version == 2
    assert catalog.resolve("/dest/renamed/sub/deep/leaf.txt").id == leaf.id
    assert catalog.path_of(leaf.id) == "/dest/renamed/sub/deep/leaf.txt"
    with pytest.raises(NotFound):
        catalog.resolve("/top/sub")
    # nothing below the moved directory was written
    after = {e.id: e for _, e in catalog.walk(top.id)}
    assert after == before


def test_rename_replace_existing_file(catalog: Catalog) -> None:
    src = mkfile(catalog, "src", size=1)
    dst = mkfile(catalog, "dst", size=2)
    with pytest.raises(AlreadyExists):
        catalog.rename(src.id, ROOT_ID, "dst")
    assert catalog.get(src.id) == src and catalog.get(dst.id) == dst
    moved, replaced = catalog.rename(src.id, ROOT_ID, "dst", replace_existing=True)
    assert replaced is not None and replaced.id == dst.id and replaced.size == 2
    assert (moved.id, moved.name, moved.version) == (src.id, "dst", 2)
    with pytest.raises(NotFound):
        catalog.get(dst.id)
    assert names(catalog.list(ROOT_ID)) == ["dst"]
    assert catalog.lookup(ROOT_ID, "dst") == moved


def test_rename_replace_directories_and_type_mismatch(catalog: Catalog) -> None:
    src = mkdir(catalog, "src")
    mkfile(catalog, "inside", src.id)
    empty = mkdir(catalog, "empty")
    full = mkdir(catalog, "full")
    mkfile(catalog, "x", full.id)
    f = mkfile(catalog, "f")
    with pytest.raises(DirectoryNotEmpty):
        catalog.rename(src.id, ROOT_ID, "full", replace_existing=True)
    with pytest.raises(IsADirectory):
        catalog.rename(f.id, ROOT_ID, "empty", replace_existing=True)
    with pytest.raises(NotADirectory):
        catalog.rename(src.id, ROOT_ID, "f", replace_existing=True)
    assert names(catalog.list(ROOT_ID)) == ["empty", "f", "full", "src"]
    assert catalog.get(src.id).version == 1 and catalog.get(f.id).version == 1
    moved, replaced = catalog.rename(src.id, ROOT_ID, "empty", replace_existing=True)
    assert replaced is not None and replaced.id == empty.id
    assert catalog.resolve("/empty/inside").parent_id == src.id
    with pytest.raises(NotFound):
        catalog.get(empty.id)


def test_rename_into_itself_or_descendant(catalog: Catalog) -> None:
    a = mkdir(catalog, "a")
    b = mkdir(catalog, "b", a.id)
    c = mkdir(catalog, "c", b.id)
    for target in (a, b, c):
        with pytest.raises(InvalidArgument):
            catalog.rename(a.id, target.id, "loop")
    with pytest.raises(InvalidArgument):
        catalog.rename(ROOT_ID, a.id, "root")
    assert catalog.get(a.id).parent_id == ROOT_ID and catalog.get(a.id).version == 1
    assert catalog.path_of(c.id) == "/a/b/c"
    # a sibling subtree is fine
    moved, _ = catalog.rename(c.id, ROOT_ID, "c")
    assert moved.parent_id == ROOT_ID


def test_rename_bad_destination_and_cas(catalog: Catalog) -> None:
    f = mkfile(catalog, "f")
    g = mkfile(catalog, "g")
    with pytest.raises(NotFound):
        catalog.rename(f.id, 555555, "x")
    with pytest.raises(NotADirectory):
        catalog.rename(f.id, g.id, "x")
    with pytest.raises(NotFound):
        catalog.rename(777777, ROOT_ID, "x")
    catalog.update(f.copy(size=5), expected_version=1)  # now version 2
    with pytest.raises(Conflict):
        catalog.rename(f.id, ROOT_ID, "h", expected_version=1)
    assert catalog.lookup(ROOT_ID, "h") is None and catalog.get(f.id).version == 2
    moved, _ = catalog.rename(f.id, ROOT_ID, "h", expected_version=2)
    assert (moved.name, moved.version, moved.size) == ("h", 3, 5)


def test_delete(catalog: Catalog) -> None:
    d = mkdir(catalog, "d")
    f = mkfile(catalog, "f", d.id, size=4, replicas=[Replica("b1", "k", 4)])
    with pytest.raises(DirectoryNotEmpty):
        catalog.delete(d.id)
    with pytest.raises(InvalidArgument):
        catalog.delete(ROOT_ID)
    with pytest.raises(Conflict):
        catalog.delete(f.id, expected_version=7)
    assert catalog.get(f.id) == f
    removed = catalog.delete(f.id, expected_version=1)
    assert removed == f.copy(nlink=0)  # what was removed, with the names it has left
    with pytest.raises(NotFound):
        catalog.get(f.id)
    with pytest.raises(NotFound):
        catalog.delete(f.id)
    assert catalog.count_replicas("b1") == 0
    assert catalog.delete(d.id).id == d.id
    assert catalog.list(ROOT_ID) == []
    assert catalog.stats()["entries"] == 1


def test_walk_depth_first(catalog: Catalog) -> None:
    top = mkdir(catalog, "top")
    a = mkdir(catalog, "a", top.id)
    mkfile(catalog, "x", a.id)
    y = mkdir(catalog, "y", a.id)
    mkfile(catalog, "z", y.id)
    mkdir(catalog, "b", top.id)
    mkfile(catalog, "c.txt", top.id)
    mkfile(catalog, "outside")
    walked = [(rel, e.name) for rel, e in catalog.walk(top.id)]
    assert walked == [("a", "a"), ("a/x", "x"), ("a/y", "y"), ("a/y/z", "z"), ("b", "b"), ("c.txt", "c.txt")]
    assert [rel for rel, _ in catalog.walk(a.id)] == ["x", "y", "y/z"]
    assert list(catalog.walk(y.id))[0][1].name == "z"
    assert len(list(catalog.walk(ROOT_ID))) == 8


def test_replicas_by_backend(catalog: Catalog) -> None:
    d = mkdir(catalog, "d")
    both = mkfile(catalog, "both", d.id, replicas=[Replica("b1", "k1", 1), Replica("b2", "k1", 1)])
    only1 = mkfile(catalog, "only1", d.id, replicas=[Replica("b1", "k2", 1)])
    mkfile(catalog, "none", d.id)
    assert catalog.count_replicas("b1") == 2
    assert catalog.count_replicas("b2") == 1
    assert catalog.count_replicas("b3") == 0
    on_b1 = sorted((e.id, r.key) for e, r in catalog.iter_replicas("b1"))
    assert on_b1 == sorted([(both.id, "k1"), (only1.id, "k2")])
    assert all(r.backend == "b2" and e.id == both.id for e, r in catalog.iter_replicas("b2"))
    everything = sorted((e.name, r.backend) for e, r in catalog.iter_replicas())
    assert everything == [("both", "b1"), ("both", "b2"), ("only1", "b1")]
    catalog.update(both.copy(replicas=[Replica("b2", "k1", 1)]), expected_version=1)
    assert catalog.count_replicas("b1") == 1
    assert [e.id for e, _ in catalog.iter_replicas("b1")] == [only1.id]


def test_replicas_stream_past_a_page(catalog: Catalog) -> None:
    d = mkdir(catalog, "many")
    ids = {mkfile(catalog, f"f{i:04d}", d.id, replicas=[Replica("bulk", f"k{i}", i)]).id for i in range(1100)}
    mkfile(catalog, "elsewhere", d.id, replicas=[Replica("other", "k", 1)])
    assert catalog.count_replicas("bulk") == 1100
    seen = [e.id for e, r in catalog.iter_replicas("bulk")]
    assert len(seen) == 1100 and set(seen) == ids
    assert len(list(catalog.iter_replicas())) == 1101


def test_stats(catalog: Catalog) -> None:
    assert catalog.stats() == {"entries": 1, "files": 0, "dirs": 1, "bytes": 0}
    d = mkdir(catalog, "d")
    mkfile(catalog, "a", d.id, size=10)
    mkfile(catalog, "b", size=20)
    catalog.create(Entry(name="l", type=SYMLINK, target="a", size=1))
    assert catalog.stats() == {"entries": 5, "files": 2, "dirs": 2, "bytes": 30}


# -- backends ----------------------------------------------------------------------------------


def test_backends_crud(catalog: Catalog) -> None:
    s3 = BackendRecord(name="s3-east", url="s3://bucket/prefix", options={"endpoint_url": "http://x", "n": [1, 2]},
                       cloud="aws", region="us-east-1", tier="standard", cost=0.023, created=1000.0)
    local = BackendRecord(name="a-local", url="file:///srv/data")
    catalog.put_backend(s3)
    catalog.put_backend(local)
    assert catalog.get_backend("s3-east") == s3
    assert [b.name for b in catalog.list_backends()] == ["a-local", "s3-east"]
    changed = BackendRecord(name="s3-east", url="s3://bucket/other", region="us-west-2", created=1000.0)
    catalog.put_backend(changed)
    assert catalog.get_backend("s3-east") == changed
    assert len(catalog.list_backends()) == 2
    catalog.delete_backend("a-local")
    assert [b.name for b in catalog.list_backends()] == ["s3-east"]
    with pytest.raises(NotFound):
        catalog.get_backend("a-local")
    with pytest.raises(NotFound):
        catalog.delete_backend("a-local")


# -- records -----------------------------------------------------------------------------------


def test_records(catalog: Catalog) -> None:
    doc = {"host": "n1", "seen": 1.5, "tags": ["a", "b"], "nested": {"x": 1, "y": None}, "ok": True}
    assert catalog.put_record("nodes", "n1", doc) == 1
    assert catalog.get_record("nodes", "n1") == (doc, 1)
    assert catalog.put_record("nodes", "n1", {**doc, "seen": 2.5}) == 2
    with pytest.raises(Conflict):
        catalog.put_record("nodes", "n1", {"stale": True}, expected_version=1)
    assert catalog.get_record("nodes", "n1") == ({**doc, "seen": 2.5}, 2)
    assert catalog.put_record("nodes", "n1", {"v": 3}, expected_version=2) == 3
    with pytest.raises(AlreadyExists):
        catalog.put_record("nodes", "n1", {"new": True}, expected_version=0)
    assert catalog.get_record("nodes", "n1") == ({"v": 3}, 3)
    assert catalog.put_record("nodes", "n0", {"first": True}, expected_version=0) == 1
    with pytest.raises(NotFound):
        catalog.put_record("nodes", "absent", {"x": 1}, expected_version=4)
    catalog.put_record("vms", "n1", {"other": "collection"})
    assert catalog.list_records("nodes") == [("n0", {"first": True}, 1), ("n1", {"v": 3}, 3)]
    assert catalog.list_records("vms") == [("n1", {"other": "collection"}, 1)]
    assert catalog.list_records("empty") == []
    assert catalog.delete_record("nodes", "n1") is True
    assert catalog.delete_record("nodes", "n1") is False
    with pytest.raises(NotFound):
        catalog.get_record("nodes", "n1")
    assert catalog.get_record("vms", "n1")[1] == 1


# -- concurrency -------------------------------------------------------------------------------


def test_concurrent_cas_exactly_one_wins(catalog: Catalog, second: Catalog) -> None:
    f = mkfile(catalog, "contended")
    rounds = 25
    barrier = threading.Barrier(2)
    wins: list[list[int]] = [[], []]

    def worker(n: int, cat: Catalog) -> Callable[[], None]:
        def run() -> None:
            for r in range(rounds):
                seen = cat.get(f.id)
                barrier.wait(30)
                try:
                    cat.update(seen.copy(size=n * 1000 + r), expected_version=seen.version)
                    wins[n].append(r)
                except Conflict:
                    pass
                barrier.wait(30)

        return run

    run_threads([worker(0, catalog), worker(1, second)])
    assert sorted(wins[0] + wins[1]) == list(range(rounds))  # exactly one winner per round
    final = catalog.get(f.id)
    assert final.version == 1 + rounds
    last_winner = 0 if rounds - 1 in wins[0] else 1
    assert final.size == last_winner * 1000 + rounds - 1


def test_concurrent_creates_of_one_name(catalog: Catalog, second: Catalog) -> None:
    d = mkdir(catalog, "race")
    results: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(4)

    def worker(cat: Catalog) -> Callable[[], None]:
        def run() -> None:
            for i in range(10):
                barrier.wait(30)
                try:
                    mkfile(cat, f"n{i}", d.id)
                    outcome = "ok"
                except AlreadyExists:
                    outcome = "exists"
                with lock:
                    results.append(f"{i}:{outcome}")

        return run

    run_threads([worker(catalog), worker(catalog), worker(second), worker(second)])
    for i in range(10):
        assert sorted(r for r in results if r.startswith(f"{i}:")) == [f"{i}:exists"] * 3 + [f"{i}:ok"]
    assert names(catalog.list(d.id)) == byte_order([f"n{i}" for i in range(10)])


def _rmdir_race_round(catalog: Catalog, second: Catalog, d: Entry) -> None:
    barrier = threading.Barrier(2)
    outcome: dict[str, str] = {}

    def creator() -> None:
        barrier.wait(30)
        try:
            mkfile(catalog, "child", d.id)
            outcome["create"] = "ok"
        except NotFound:
            outcome["create"] = "gone"

    def remover() -> None:
        barrier.wait(30)
        try:
            second.delete(d.id)
            outcome["delete"] = "ok"
        except DirectoryNotEmpty:
            outcome["delete"] = "not-empty"

    run_threads([creator, remover])
    child = catalog.lookup(d.id, "child")
    exists = catalog.lookup(ROOT_ID, d.name) is not None
    if child is not None:
        assert exists and outcome == {"create": "ok", "delete": "not-empty"}, outcome
    else:
        assert outcome["create"] == "gone", outcome
        assert exists == (outcome["delete"] == "not-empty"), outcome


def test_rmdir_racing_create_leaves_no_orphan(catalog: Catalog, second: Catalog) -> None:
    for round_ in range(15):
        _rmdir_race_round(catalog, second, mkdir(catalog, f"d{round_}"))


def _crossed_moves_round(catalog: Catalog, second: Catalog, a: Entry, b: Entry) -> None:
    barrier = threading.Barrier(2)
    results: list[str] = []

    def move(cat: Catalog, src: Entry, dst: Entry) -> Callable[[], None]:
        def run() -> None:
            barrier.wait(30)
            try:
                cat.rename(src.id, dst.id, src.name)
                results.append("ok")
            except (InvalidArgument, Conflict):
                results.append("refused")

        return run

    run_threads([move(catalog, a, b), move(second, b, a)])
    assert results.count("ok") <= 1
    for entry in (a, b):  # both still reachable from the root
        assert catalog.resolve(catalog.path_of(entry.id)).id == entry.id
    assert {a.name, b.name} <= {e.name for _, e in catalog.walk(ROOT_ID)}


def test_crossed_directory_moves_make_no_cycle(catalog: Catalog, second: Catalog) -> None:
    for round_ in range(15):
        _crossed_moves_round(catalog, second, mkdir(catalog, f"a{round_}"), mkdir(catalog, f"b{round_}"))


def test_directory_times_follow_create_remove_rename(catalog: Catalog) -> None:
    """A directory's mtime/ctime move forward when an entry is created, removed or renamed in it;
    its version does not change (a compare-and-set on the directory itself still holds)."""
    old = time.time() - 1000
    a = catalog.create(Entry(name="a", type=DIR, parent_id=ROOT_ID, mtime=old, ctime=old))
    b = catalog.create(Entry(name="b", type=DIR, parent_id=ROOT_ID, mtime=old, ctime=old))

    def times(d: Entry) -> tuple[float, float, int]:
        e = catalog.get(d.id)
        return e.mtime, e.ctime, e.version

    f = mkfile(catalog, "f", a.id)
    assert times(a)[0] > old and times(a)[1] > old and times(a)[2] == 1
    for what, step, dirs in [
        ("rename within", lambda: catalog.rename(f.id, a.id, "g"), [a]),
        ("move across", lambda: catalog.rename(f.id, b.id, "g"), [a, b]),
        ("delete", lambda: catalog.delete(f.id), [b]),
    ]:
        for d in dirs:
            catalog.update(catalog.get(d.id).copy(mtime=old, ctime=old), catalog.get(d.id).version)
        before = {d.id: times(d) for d in dirs}
        step()
        for d in dirs:
            mtime, ctime, version = times(d)
            assert mtime > old and ctime > old, what
            assert version == before[d.id][2], what
    assert catalog.update(catalog.get(a.id), catalog.get(a.id).version).version == catalog.get(a.id).version


def test_reader_never_misses_a_name_replaced_by_rename(catalog: Catalog, second: Catalog) -> None:
    """rename over an existing entry is one atomic step: a reader polling the destination name
    sees the old entry or the new one, never nothing."""
    d = mkdir(catalog, "d")
    mkfile(catalog, "current", d.id, size=0)
    rounds = 40
    done = threading.Event()
    reading = threading.Event()
    missing: list[int] = []
    seen: set[int] = set()

    def writer() -> None:
        try:
            assert reading.wait(30)
            for i in range(1, rounds + 1):
                tmp = mkfile(catalog, f"tmp{i}", d.id, size=i)
                catalog.rename(tmp.id, d.id, "current", replace_existing=True)
        finally:
            done.set()

    def reader() -> None:
        while not done.is_set():
            found = second.lookup(d.id, "current")
            if found is None:
                missing.append(1)
            else:
                seen.add(found.size)
            reading.set()

    run_threads([writer, reader])
    assert missing == [] and seen  # the reader looked while the writer replaced, and always found it
    assert catalog.lookup(d.id, "current").size == rounds  # type: ignore[union-attr]
    assert names(catalog.list(d.id)) == ["current"]


# -- engine specific ---------------------------------------------------------------------------


def test_mongo_unreachable_is_one_line_without_password() -> None:
    pytest.importorskip("pymongo")
    from tests.servers.process import free_port

    url = f"mongodb://vdir:s3cret@127.0.0.1:{free_port()}/vdir?serverSelectionTimeoutMS=300"
    with pytest.raises(BackendUnavailable) as info:
        open_catalog(url)
    message = str(info.value)
    assert "s3cret" not in message and "\n" not in message
    assert "127.0.0.1" in message


def test_mongo_listing_keeps_no_cursor_open_between_pages(mongo_catalog_url: str) -> None:
    """A slow consumer of a listing never meets a server-side cursor timeout (CursorNotFound):
    each page is one query whose cursor is finished before the page is yielded, and the next
    page starts after the last name yielded."""
    with open_catalog(mongo_catalog_url) as cat:
        d = mkdir(cat, "d")
        expected = [f"n{i:02d}" for i in range(25)]
        for name in expected:
            mkfile(cat, name, d.id)
        real = cat._entries  # type: ignore[attr-defined]
        finds: list[dict[str, object]] = []
        cursors: list[Any] = []

        class Recording:
            def __getattr__(self, name: str) -> object:
                return getattr(real, name)

            def find(self, query: dict[str, object], *args: object, **kwargs: object) -> object:
                finds.append(query)
                cursors.append(real.find(query, *args, **kwargs))
                return cursors[-1]

        cat._entries = Recording()  # type: ignore[attr-defined]
        got = []
        for entry in cat.iter_children(d.id, page=4):
            assert not any(c.alive for c in cursors)
            got.append(entry.name)
        assert got == expected
        assert len(finds) == 25 // 4 + 1 and finds[1] == {"parent_id": d.id, "name": {"$gt": "n03"}}


def test_mongo_database_from_url(mongo_catalog_url: str, mongodb_uri: str) -> None:
    pymongo = pytest.importorskip("pymongo")
    database = mongo_catalog_url.rstrip("/").rsplit("/", 1)[1]
    with open_catalog(mongo_catalog_url) as cat:
        mkfile(cat, "x")
    client = pymongo.MongoClient(mongodb_uri, serverSelectionTimeoutMS=5000)
    try:
        assert {"entries", "tasks", "records", "meta"} <= set(client[database].list_collection_names())
        assert client[database]["entries"].count_documents({}) == 2
    finally:
        client.close()


# -- schema 2: block hashes, who uses an object, durability ----------------------------------


def test_blocks_round_trip(catalog: Catalog) -> None:
    e = catalog.create(Entry(name="f", size=3, hash="h", blocks="20:00ff", replicas=[Replica("b1", "k", 3)]))
    assert catalog.get(e.id).blocks == "20:00ff"
    assert catalog.lookup(ROOT_ID, "f").blocks == "20:00ff"  # type: ignore[union-attr]
    updated = catalog.update(e.copy(blocks=None), e.version)
    assert catalog.get(updated.id).blocks is None


def test_replica_users_follow_every_write(catalog: Catalog) -> None:
    a = catalog.create(Entry(name="a", size=1, replicas=[Replica("b1", "obj", 1), Replica("b2", "obj", 1)]))
    b = catalog.create(Entry(name="b", size=1, replicas=[Replica("b1", "obj", 1)]))
    assert sorted(catalog.replica_users("b1", "obj")) == sorted([a.id, b.id])
    assert catalog.replica_users("b2", "obj") == [a.id]
    assert catalog.replica_users("b1", "other") == []
    catalog.update(b.copy(replicas=[Replica("b1", "new", 1)]), b.version)
    assert catalog.replica_users("b1", "obj") == [a.id]
    assert catalog.replica_users("b1", "new") == [b.id]
    c = catalog.create(Entry(name="c", size=1, replicas=[Replica("b1", "c", 1)]))
    catalog.rename(c.id, ROOT_ID, "a", replace_existing=True)  # replaces a
    assert catalog.replica_users("b1", "obj") == []
    catalog.delete(c.id)
    assert catalog.replica_users("b1", "c") == []


def test_make_durable_returns_after_writes(catalog: Catalog) -> None:
    catalog.create(Entry(name="d", size=0))
    catalog.make_durable()  # must not fail on a catalog in use
    assert catalog.lookup(ROOT_ID, "d") is not None


# -- bulk operations: each engine's one-round-trip override, and the base class's default -------

BULK = ["engine", "default"]


def _bulk(cat: Catalog, how: str) -> Catalog:
    """``cat`` itself, or a view that runs the Catalog base class's (slow, reference) bulk
    methods on it, so both are held to one contract."""
    if how == "engine":
        return cat

    class Default:
        def __getattr__(self, name: str) -> object:
            method = getattr(Catalog, name, None)
            if name in ("delete_entries", "replica_users_many", "put_records", "delete_records") and method:
                return lambda *a, **k: method(cat, *a, **k)
            return getattr(cat, name)

    return Default()  # type: ignore[return-value]


@pytest.mark.parametrize("how", BULK)
def test_delete_entries_is_compare_and_set_per_entry(catalog: Catalog, how: str) -> None:
    bulk = _bulk(catalog, how)
    d = mkdir(catalog, "d")
    files = [mkfile(catalog, f"f{i}", d.id, replicas=[Replica("b", f"k{i}", 1)]) for i in range(5)]
    link = catalog.create(Entry(name="l", type=SYMLINK, parent_id=d.id, target="f0"))
    changed = catalog.update(files[1].copy(size=9), files[1].version)  # now at version 2
    catalog.delete(files[2].id)  # already gone: counts as deleted
    d = catalog.update(catalog.get(d.id).copy(mtime=1.0, ctime=1.0), catalog.get(d.id).version)
    kept = bulk.delete_entries([*files, link])
    after = catalog.get(d.id)
    assert after.mtime > 1.0 and after.ctime > 1.0 and after.version == d.version  # the directory's times moved
    assert [e.id for e in kept] == [files[1].id]
    assert names(catalog.list(d.id)) == ["f1"] and catalog.get(files[1].id).version == changed.version
    assert catalog.replica_users("b", "k0") == [] and catalog.replica_users("b", "k1") == [files[1].id]
    assert bulk.delete_entries([]) == []
    with pytest.raises(InvalidArgument):
        bulk.delete_entries([catalog.get(files[1].id), d])  # a directory: nothing deleted
    assert names(catalog.list(d.id)) == ["f1"]


@pytest.mark.parametrize("how", BULK)
def test_replica_users_many(catalog: Catalog, how: str) -> None:
    bulk = _bulk(catalog, how)
    a = mkfile(catalog, "a", replicas=[Replica("b1", "shared", 1), Replica("b2", "x", 1)])
    c = mkfile(catalog, "c", replicas=[Replica("b1", "shared", 1)])
    got = bulk.replica_users_many([("b1", "shared"), ("b2", "x"), ("b2", "shared"), ("b1", "none"), ("b1", "shared")])
    assert {k: sorted(v) for k, v in got.items()} == {
        ("b1", "shared"): sorted([a.id, c.id]), ("b2", "x"): [a.id], ("b2", "shared"): [], ("b1", "none"): []}
    assert bulk.replica_users_many([]) == {}


@pytest.mark.parametrize("how", BULK)
def test_put_and_delete_records_in_bulk(catalog: Catalog, how: str) -> None:
    bulk = _bulk(catalog, how)
    catalog.put_record("c", "old", {"v": 0})
    bulk.put_records("c", {"old": {"v": 1}, "new": {"v": 2, "é": ["x"]}})
    assert catalog.get_record("c", "old") == ({"v": 1}, 2)
    assert catalog.get_record("c", "new") == ({"v": 2, "é": ["x"]}, 1)
    bulk.put_records("c", {})
    assert bulk.delete_records("c", ["old", "missing", "new"]) == 2
    assert catalog.list_records("c") == [] and bulk.delete_records("c", []) == 0


def test_special_files_round_trip(catalog: Catalog) -> None:
    """FIFOs, device nodes (with their number) and sockets are entries like any other, with no
    replicas; ``rdev`` survives create, update, listing and rename."""
    from vdir.catalog.base import BLK, CHR, FIFO, SOCK

    made = {
        "pipe": catalog.create(Entry(name="pipe", type=FIFO, mode=0o644)),
        "null": catalog.create(Entry(name="null", type=CHR, mode=0o666, rdev=os.makedev(1, 3))),
        "disk": catalog.create(Entry(name="disk", type=BLK, mode=0o660, rdev=os.makedev(8, 17))),
        "sock": catalog.create(Entry(name="sock", type=SOCK, mode=0o755)),
    }
    listed = {e.name: (e.type, e.rdev, e.mode, e.replicas) for e in catalog.list(ROOT_ID)}
    assert listed == {
        "pipe": (FIFO, 0, 0o644, []), "null": (CHR, os.makedev(1, 3), 0o666, []),
        "disk": (BLK, os.makedev(8, 17), 0o660, []), "sock": (SOCK, 0, 0o755, []),
    }
    null = catalog.update(catalog.get(made["null"].id).copy(mode=0o600), made["null"].version)
    assert (catalog.get(null.id).rdev, catalog.get(null.id).mode) == (os.makedev(1, 3), 0o600)
    moved, _ = catalog.rename(made["disk"].id, ROOT_ID, "sda1")
    assert catalog.resolve("/sda1").rdev == os.makedev(8, 17) and moved.type == BLK
    assert [e.id for e, _ in catalog.iter_replicas()] == []
    assert catalog.stats()["files"] == 0


def test_atime_moves_forward_without_a_new_version(catalog: Catalog) -> None:
    f = catalog.create(Entry(name="f", mtime=100.0, ctime=100.0, atime=100.0))
    assert catalog.get(f.id).atime == 100.0
    catalog.touch_atime(f, 500.0)
    got = catalog.get(f.id)
    assert (got.atime, got.version) == (500.0, 1)
    catalog.touch_atime(f, 200.0)  # never backward
    assert catalog.get(f.id).atime == 500.0
    # an update writes what the caller sets (utimens may set an older atime)
    assert catalog.update(got.copy(atime=300.0), got.version).atime == 300.0
    assert catalog.get(f.id).atime == 300.0
    catalog.delete(f.id)
    catalog.touch_atime(f, 900.0)  # a vanished entry: nothing happens
    with pytest.raises(NotFound):
        catalog.get(f.id)


def test_subdirectory_count_follows_every_change(catalog: Catalog) -> None:
    """``subdirs`` (st_nlink - 2) counts child directories through create, delete, moves across
    directories, renames within one, a directory replacing another, and files (never counted);
    ``update`` cannot change it."""
    def count(d: Entry) -> int:
        return catalog.get(d.id).subdirs

    a = catalog.create(Entry(name="a", type=DIR))
    b = catalog.create(Entry(name="b", type=DIR))
    assert a.subdirs == 0 and catalog.root().subdirs == 2
    x = catalog.create(Entry(name="x", type=DIR, parent_id=a.id))
    y = catalog.create(Entry(name="y", type=DIR, parent_id=a.id))
    mkfile(catalog, "f", a.id)
    assert count(a) == 2
    assert {e.name: e.subdirs for e in catalog.list(ROOT_ID)} == {"a": 2, "b": 0}
    catalog.rename(x.id, a.id, "x2")  # within a directory
    assert count(a) == 2
    catalog.rename(x.id, b.id, "x")  # across
    assert (count(a), count(b)) == (1, 1)
    empty = catalog.create(Entry(name="e", type=DIR, parent_id=b.id))
    assert count(b) == 2
    catalog.rename(y.id, b.id, "e", replace_existing=True)  # replaces an empty directory
    assert (count(a), count(b)) == (0, 2)
    with pytest.raises(NotFound):
        catalog.get(empty.id)
    catalog.delete(x.id)
    assert count(b) == 1
    stale = catalog.get(b.id).copy(subdirs=99)
    assert catalog.update(stale, stale.version) is not None and count(b) == 1
    assert count(catalog.root()) == 2
