"""Conformance cases of hard links (names and inodes separate), run against every catalog engine
like the rest of the suite (``tests/test_catalog_conformance.py``): the contract is in the model
docstring of :mod:`vdir.catalog.base` and in :meth:`~vdir.catalog.base.Catalog.link`,
:meth:`~vdir.catalog.base.Catalog.rename` and :meth:`~vdir.catalog.base.Catalog.delete`.
"""

from __future__ import annotations

import time

import pytest

from tests.catalogs import mkdir, mkfile, names, run_threads
from vdir.catalog import DIR, ROOT_ID, SYMLINK, Catalog, Entry, Replica
from vdir.catalog.base import FIFO
from vdir.errors import AlreadyExists, Conflict, InvalidArgument, IsADirectory, NotADirectory, NotFound, NotPermitted

REPLICAS = [Replica("b1", "data/f", 5, "h5"), Replica("b2", "f", 5, "h5")]


def linked(catalog: Catalog) -> tuple[Entry, Entry, Entry, Entry]:
    """Directories a and b, a/f (5 bytes on b1 and b2) and its second name b/g."""
    a = mkdir(catalog, "a")
    b = mkdir(catalog, "b")
    f = mkfile(catalog, "f", a.id, size=5, hash="h5", replicas=REPLICAS)
    g = catalog.link(f.id, b.id, "g")
    return a, b, f, g


def test_link_across_directories_shares_the_inode(catalog: Catalog) -> None:
    a, b, f, g = linked(catalog)
    assert f.nlink == 1
    assert (g.id, g.parent_id, g.name, g.nlink, g.version) == (f.id, b.id, "g", 2, f.version + 1)
    assert (g.size, g.hash, g.replicas) == (5, "h5", REPLICAS)
    for path, parent, name in (("/a/f", a.id, "f"), ("/b/g", b.id, "g")):
        seen = catalog.resolve(path)
        assert (seen.id, seen.parent_id, seen.name, seen.nlink, seen.version) == (f.id, parent, name, 2, g.version)
        assert seen.replicas == REPLICAS
        assert catalog.lookup(parent, name) == seen
        assert catalog.lookup_id(parent, name) == (f.id, "file")
    assert [(e.name, e.id, e.nlink) for e in catalog.list(b.id)] == [("g", f.id, 2)]
    # reads by id see it through one of its names: the first while it lives
    got = catalog.get(f.id)
    assert (got.parent_id, got.name, got.nlink) == (a.id, "f", 2)
    assert catalog.path_of(f.id) == "/a/f"
    # an update through one name is seen through the other
    seen = catalog.resolve("/b/g")
    changed = catalog.update(seen.copy(size=9, hash="h9", replicas=[Replica("b1", "new", 9)]), seen.version)
    assert (changed.version, changed.nlink, changed.parent_id, changed.name) == (seen.version + 1, 2, b.id, "g")
    other = catalog.resolve("/a/f")
    assert (other.size, other.hash, other.version, other.nlink) == (9, "h9", changed.version, 2)
    assert catalog.replica_users("b1", "new") == [f.id] and catalog.replica_users("b1", "data/f") == []
    with pytest.raises(Conflict):  # the version is the inode's, whichever name the writer read
        catalog.update(other.copy(size=1), seen.version)


def test_link_of_symlinks_and_special_files(catalog: Catalog) -> None:
    s = catalog.create(Entry(name="s", type=SYMLINK, target="x/y"))
    p = catalog.create(Entry(name="p", type=FIFO, mode=0o600))
    assert catalog.link(s.id, ROOT_ID, "s2").target == "x/y"
    assert catalog.resolve("/s2").type == SYMLINK and catalog.resolve("/s").nlink == 2
    assert catalog.link(p.id, ROOT_ID, "p2").type == FIFO
    assert catalog.lookup_id(ROOT_ID, "p2") == (p.id, FIFO)


def test_link_errors(catalog: Catalog) -> None:
    d = mkdir(catalog, "d")
    f = mkfile(catalog, "f", size=1)
    taken = mkfile(catalog, "taken", d.id)
    with pytest.raises(NotPermitted):
        catalog.link(d.id, ROOT_ID, "d2")
    with pytest.raises(AlreadyExists):
        catalog.link(f.id, d.id, "taken")
    with pytest.raises(AlreadyExists):
        catalog.link(f.id, ROOT_ID, "f")
    with pytest.raises(NotFound):
        catalog.link(f.id, 424242, "x")
    with pytest.raises(NotADirectory):
        catalog.link(f.id, taken.id, "x")
    with pytest.raises(NotFound):
        catalog.link(987654, ROOT_ID, "x")
    # nothing changed
    assert catalog.get(f.id) == f and catalog.resolve("/d/taken") == taken
    assert names(catalog.list(ROOT_ID)) == ["d", "f"] and names(catalog.list(d.id)) == ["taken"]
    assert catalog.stats()["entries"] == 4
    g = catalog.link(f.id, d.id, "g")  # a linked file is no directory either
    with pytest.raises(NotADirectory):
        mkfile(catalog, "below", g.id)
    with pytest.raises(NotADirectory):
        catalog.link(taken.id, g.id, "x")
    catalog.delete(f.id, source=(d.id, "g"))


def test_unlink_one_name_keeps_the_other(catalog: Catalog) -> None:
    a, b, f, g = linked(catalog)
    with pytest.raises(InvalidArgument):  # two names: which one?
        catalog.delete(f.id)
    with pytest.raises(NotFound):
        catalog.delete(f.id, source=(a.id, "nope"))
    other = mkfile(catalog, "other", a.id)
    with pytest.raises(NotFound):  # a name, but of another entry
        catalog.delete(f.id, source=(a.id, "other"))
    with pytest.raises(Conflict):
        catalog.delete(f.id, expected_version=f.version, source=(a.id, "f"))
    before = time.time()
    removed = catalog.delete(f.id, expected_version=g.version, source=(a.id, "f"))
    assert (removed.id, removed.parent_id, removed.name, removed.nlink) == (f.id, a.id, "f", 1)
    assert catalog.lookup(a.id, "f") is None
    left = catalog.resolve("/b/g")
    assert (left.id, left.nlink, left.size, left.replicas) == (f.id, 1, 5, REPLICAS)
    assert left.version == g.version + 1 and left.ctime >= before  # removing a name changes the inode
    assert catalog.get(f.id) == left and catalog.path_of(f.id) == "/b/g"
    assert catalog.replica_users("b1", "data/f") == [f.id]
    assert sorted((e.id, r.backend) for e, r in catalog.iter_replicas()) == [(f.id, "b1"), (f.id, "b2")]
    assert catalog.count_replicas("b1") == 1
    # one name again: it behaves as an entry never linked (delete without source, CAS on update)
    assert catalog.update(left.copy(size=6), left.version).size == 6
    gone = catalog.delete(f.id)
    assert (gone.nlink, gone.name) == (0, "g")
    with pytest.raises(NotFound):
        catalog.get(f.id)
    assert catalog.replica_users("b1", "data/f") == [] and catalog.count_replicas("b2") == 0
    assert list(catalog.iter_replicas()) == []
    assert catalog.resolve("/a/other") == other


def test_last_unlink_of_the_second_name_removes_the_inode(catalog: Catalog) -> None:
    a, b, f, g = linked(catalog)
    catalog.delete(f.id, source=(b.id, "g"))  # the new name goes first this time
    seen = catalog.resolve("/a/f")
    assert (seen.id, seen.nlink) == (f.id, 1)
    removed = catalog.delete(f.id, expected_version=seen.version, source=(a.id, "f"))
    assert removed.nlink == 0
    assert catalog.replica_users("b1", "data/f") == [] and catalog.replica_users("b2", "f") == []
    assert catalog.list(a.id) == [] and catalog.list(b.id) == []
    assert catalog.stats() == {"entries": 3, "files": 0, "dirs": 3, "bytes": 0}


def test_three_names_and_ids_never_collide(catalog: Catalog) -> None:
    a, b, f, g = linked(catalog)
    h = catalog.link(f.id, ROOT_ID, "h")
    assert h.nlink == 3 and catalog.resolve("/a/f").nlink == 3
    catalog.delete(f.id, source=(a.id, "f"))  # the first name goes; the inode lives on under b/g and h
    assert catalog.resolve("/h").nlink == 2 and catalog.get(f.id).nlink == 2
    # new entries never take the inode's id (nor each other's), though its first name is gone
    fresh = [mkfile(catalog, f"n{i}", a.id) for i in range(5)]
    ids = {e.id for e in fresh}
    assert len(ids) == 5 and f.id not in ids and not ids & {a.id, b.id, ROOT_ID}
    assert catalog.get(f.id).size == 5
    catalog.delete(f.id, source=(ROOT_ID, "h"))
    last = catalog.resolve("/b/g")
    assert (last.id, last.nlink, last.size) == (f.id, 1, 5) and catalog.get(f.id) == last


def test_rename_of_a_linked_name(catalog: Catalog) -> None:
    a, b, f, g = linked(catalog)
    c = mkdir(catalog, "c")
    with pytest.raises(InvalidArgument):
        catalog.rename(f.id, c.id, "moved")
    with pytest.raises(NotFound):
        catalog.rename(f.id, c.id, "moved", source=(c.id, "f"))
    with pytest.raises(Conflict):  # compare-and-set on the inode's version
        catalog.rename(f.id, c.id, "moved", source=(b.id, "g"), expected_version=f.version)
    moved, replaced = catalog.rename(f.id, c.id, "moved", source=(b.id, "g"), expected_version=g.version)
    assert replaced is None
    assert (moved.id, moved.parent_id, moved.name, moved.nlink, moved.version) == (f.id, c.id, "moved", 2, g.version + 1)
    assert catalog.lookup(b.id, "g") is None
    assert catalog.resolve("/c/moved").id == f.id and catalog.resolve("/a/f").version == moved.version
    # an entry with one name may still say which (it must be right)
    single = mkfile(catalog, "single", a.id)
    with pytest.raises(NotFound):
        catalog.rename(single.id, a.id, "x", source=(b.id, "single"))
    assert catalog.rename(single.id, a.id, "x", source=(a.id, "single"))[0].name == "x"


def test_rename_onto_another_name_of_the_same_inode_changes_nothing(catalog: Catalog) -> None:
    a, b, f, g = linked(catalog)
    for replace in (False, True):
        moved, replaced = catalog.rename(f.id, b.id, "g", source=(a.id, "f"), replace_existing=replace)
        assert replaced is None and (moved.id, moved.parent_id, moved.name) == (f.id, a.id, "f")
        assert moved.version == g.version
    assert catalog.resolve("/a/f").nlink == 2 and catalog.resolve("/b/g").version == g.version


def test_rename_over_a_linked_name_removes_only_that_name(catalog: Catalog) -> None:
    a, b, f, g = linked(catalog)
    src = mkfile(catalog, "src", ROOT_ID, size=1, replicas=[Replica("b1", "src", 1)])
    with pytest.raises(AlreadyExists):
        catalog.rename(src.id, b.id, "g")
    moved, replaced = catalog.rename(src.id, b.id, "g", replace_existing=True)
    assert replaced is not None and (replaced.id, replaced.nlink, replaced.name) == (f.id, 1, "g")
    assert catalog.resolve("/b/g").id == src.id
    left = catalog.resolve("/a/f")
    assert (left.id, left.nlink, left.size) == (f.id, 1, 5)
    assert catalog.replica_users("b1", "data/f") == [f.id]
    # over the last name: the inode goes, and the replaced entry says so
    moved, replaced = catalog.rename(src.id, a.id, "f", replace_existing=True)
    assert replaced is not None and (replaced.id, replaced.nlink) == (f.id, 0)
    assert catalog.replica_users("b1", "data/f") == []
    with pytest.raises(NotFound):
        catalog.get(f.id)
    # a linked name moved over another linked inode's name
    x = mkfile(catalog, "x", size=2)
    catalog.link(x.id, a.id, "x2")
    y = mkfile(catalog, "y", size=3)
    y2 = catalog.link(y.id, b.id, "y2")
    moved, replaced = catalog.rename(x.id, b.id, "y2", source=(ROOT_ID, "x"), replace_existing=True)
    assert replaced is not None and (replaced.id, replaced.nlink) == (y.id, 1)
    assert (moved.id, moved.nlink, moved.name) == (x.id, 2, "y2")
    assert catalog.resolve("/b/y2").id == x.id and catalog.resolve("/a/x2").id == x.id
    assert catalog.resolve("/y").nlink == 1 and catalog.resolve("/y").version == y2.version + 1
    with pytest.raises(IsADirectory):
        catalog.rename(x.id, ROOT_ID, "a", source=(b.id, "y2"), replace_existing=True)


def test_delete_entries_of_linked_names(catalog: Catalog) -> None:
    a, b, f, g = linked(catalog)
    plain = mkfile(catalog, "plain", a.id, replicas=[Replica("b1", "plain", 0)])
    # both names of one inode in one batch (rm -r of a tree holding both), read before the batch
    seen = [e for _, e in catalog.walk(ROOT_ID) if e.type != DIR]
    assert sorted((e.name, e.id) for e in seen) == sorted([("f", f.id), ("g", f.id), ("plain", plain.id)])
    assert catalog.delete_entries(seen) == []
    assert catalog.list(a.id) == [] and catalog.list(b.id) == []
    assert catalog.replica_users("b1", "data/f") == [] and catalog.replica_users("b1", "plain") == []
    with pytest.raises(NotFound):
        catalog.get(f.id)
    # one name of a linked inode goes whatever its version; the last name only if unchanged
    h = mkfile(catalog, "h", a.id, size=1)
    h2 = catalog.link(h.id, b.id, "h2")
    stale = catalog.resolve("/a/h")
    catalog.update(stale.copy(size=2), stale.version)
    assert catalog.delete_entries([stale]) == []
    assert catalog.lookup(a.id, "h") is None and catalog.resolve("/b/h2").nlink == 1
    assert catalog.delete_entries([h2]) == [h2]  # changed since (an update, the unlink): kept
    assert catalog.resolve("/b/h2").size == 2


def test_walk_stats_and_replicas_count_inodes(catalog: Catalog) -> None:
    a, b, f, g = linked(catalog)
    catalog.link(f.id, a.id, "f2")
    mkfile(catalog, "other", b.id, size=7, replicas=[Replica("b1", "other", 7)])
    walked = [(rel, e.id, e.nlink) for rel, e in catalog.walk(ROOT_ID) if e.type != DIR]
    assert [rel for rel, _, _ in walked] == ["a/f", "a/f2", "b/g", "b/other"]
    assert {i for rel, i, _ in walked if rel != "b/other"} == {f.id}
    assert all(n == 3 for rel, _, n in walked if rel != "b/other")
    assert catalog.stats() == {"entries": 5, "files": 2, "dirs": 3, "bytes": 12}
    per_backend = sorted((e.name, r.key) for e, r in catalog.iter_replicas("b1"))
    assert len(per_backend) == 2 and ("other", "other") in per_backend
    assert [e.id for e, _ in catalog.iter_replicas("b2")] == [f.id]
    assert len(list(catalog.iter_replicas())) == 3
    assert catalog.count_replicas("b1") == 2 and catalog.count_replicas("b2") == 1
    users = catalog.replica_users_many([("b1", "data/f"), ("b2", "f"), ("b1", "other"), ("b1", "none")])
    assert users[("b1", "data/f")] == [f.id] and users[("b2", "f")] == [f.id] and users[("b1", "none")] == []
    # access times are per inode too
    catalog.touch_atime(catalog.resolve("/b/g"), time.time() + 100)
    assert catalog.resolve("/a/f2").atime == catalog.resolve("/b/g").atime > time.time()


def test_directory_times_move_on_link_and_unlink(catalog: Catalog) -> None:
    old = time.time() - 1000
    a = catalog.create(Entry(name="a", type=DIR, mtime=old, ctime=old))
    b = catalog.create(Entry(name="b", type=DIR, mtime=old, ctime=old))
    f = mkfile(catalog, "f", a.id)
    catalog.update(catalog.get(a.id).copy(mtime=old, ctime=old), catalog.get(a.id).version)
    catalog.link(f.id, b.id, "g")
    got = catalog.get(b.id)
    assert got.mtime > old and got.ctime > old and got.version == b.version
    assert catalog.get(a.id).mtime == old  # only the directory the name is made in
    catalog.update(got.copy(mtime=old, ctime=old), got.version)
    catalog.delete(f.id, source=(b.id, "g"))
    again = catalog.get(b.id)
    assert again.mtime > old and again.ctime > old and again.version == got.version + 1


def test_update_of_an_entry_linked_since_it_was_read_is_a_conflict(catalog: Catalog, second: Catalog) -> None:
    f = mkfile(catalog, "f", size=1)
    second.link(f.id, ROOT_ID, "g")
    with pytest.raises(Conflict):
        catalog.update(f.copy(size=99), f.version)
    assert catalog.resolve("/f").size == 1 and catalog.resolve("/g").size == 1
    second.delete(f.id, source=(ROOT_ID, "g"))
    with pytest.raises(Conflict):  # inlined again, with a newer version
        catalog.update(f.copy(size=99), f.version + 1)
    current = catalog.resolve("/f")
    assert current.nlink == 1 and catalog.update(current.copy(size=3), current.version).size == 3


def test_concurrent_links_and_unlinks_keep_nlink_consistent(catalog: Catalog, second: Catalog) -> None:
    f = mkfile(catalog, "f", size=1, replicas=[Replica("b1", "f", 1)])
    rounds = 15

    def worker(n: int, cat: Catalog) -> None:
        for r in range(rounds):
            cat.link(f.id, ROOT_ID, f"w{n}-{r}")
            if r % 2:
                cat.delete(f.id, source=(ROOT_ID, f"w{n}-{r}"))

    run_threads([lambda: worker(0, catalog), lambda: worker(1, second)])
    listed = [e for e in catalog.list(ROOT_ID) if e.id == f.id]
    assert len(listed) == 1 + 2 * ((rounds + 1) // 2)
    assert {e.nlink for e in listed} == {len(listed)}
    assert catalog.get(f.id).version == 1 + 2 * rounds + 2 * (rounds // 2)
    assert catalog.replica_users("b1", "f") == [f.id]
    for e in listed[1:]:
        catalog.delete(f.id, source=(ROOT_ID, e.name))
    assert catalog.resolve("/" + listed[0].name).nlink == 1
