"""Fault injection for the MongoDB catalog through a wire-level proxy (tests/mongoproxy.py) in
front of the test server: connections dropped after the server applied a command (the reply is
lost), ``NotWritablePrimary`` answers, an election-like outage and a standalone server.

After every fault no entry is lost or duplicated, every call reports what really happened, and
an outage shorter than the operation deadline is a pause, not an error.  pymongo's own single
retry is switched off (``retryWrites=false``) in most cases, so the catalog's retry loop and its
operation tokens do all of the work; one case keeps pymongo's defaults.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers.mongo import with_database
from vdir.catalog import DIR, ROOT_ID, Catalog, Entry, open_catalog
from vdir.errors import ConfigError

pytest.importorskip("pymongo", reason="the mongo extra is not installed")

from tests.mongoproxy import MongoProxy  # noqa: E402 - needs bson, from the mongo extra


def url_through(proxy: MongoProxy, mongodb_uri: str, options: str) -> str:
    return proxy.proxied(with_database(mongodb_uri, f"vdir_fault_{uuid.uuid4().hex[:12]}")) + options


@pytest.fixture(params=["retryWrites=false", "retryWrites=true"])
def faulty(request: pytest.FixtureRequest, mongo_proxy: MongoProxy, mongodb_uri: str) -> Iterator[tuple[Catalog, MongoProxy]]:
    cat = open_catalog(url_through(mongo_proxy, mongodb_uri, f"?{request.param}"))
    try:
        yield cat, mongo_proxy
    finally:
        mongo_proxy.reset()
        cat.close()


def tree(cat: Catalog) -> list[tuple[str, int]]:
    return sorted((path, e.version) for path, e in cat.walk(ROOT_ID))


# each fault: (what the proxy does, to which commands); the commands are those of the catalog's
# writes: a transaction's statements (update/delete/find) and its commitTransaction, and the
# single-document update of Catalog.update
FAULTS = [
    ("drop_after", "commitTransaction"),  # committed, reply lost
    ("drop_after", "update"),  # a statement (or update's CAS) applied, reply lost
    ("drop_before", "commitTransaction"),  # never reached the server
    ("error", "update"),  # NotWritablePrimary
    ("error", "commitTransaction"),
    ("error", "delete"),
    ("drop_after", "delete"),
]


def inject(proxy: MongoProxy, kind: str, command: str, count: int = 1) -> None:
    getattr(proxy, kind)(match=command, count=count)


@pytest.mark.parametrize(("kind", "command"), FAULTS)
def test_entry_writes_apply_exactly_once(faulty: tuple[Catalog, MongoProxy], kind: str, command: str) -> None:
    cat, proxy = faulty
    d = cat.create(Entry(name="d", type=DIR))
    src = cat.create(Entry(name="src", parent_id=d.id, size=1))
    cat.create(Entry(name="dst", parent_id=d.id, size=2))

    inject(proxy, kind, command)
    f = cat.create(Entry(name="f", parent_id=d.id, size=3))
    assert cat.get(f.id).name == "f" and [e.name for e in cat.list(d.id)] == ["dst", "f", "src"]

    inject(proxy, kind, command)
    moved, replaced = cat.rename(src.id, d.id, "dst", replace_existing=True)
    assert replaced is not None and replaced.name == "dst" and replaced.size == 2
    assert (moved.id, moved.version) == (src.id, 2)
    assert cat.lookup(d.id, "dst").id == src.id  # type: ignore[union-attr]

    inject(proxy, kind, command)
    updated = cat.update(f.copy(size=30), f.version)
    assert updated.version == 2 and cat.get(f.id).version == 2 and cat.get(f.id).size == 30

    inject(proxy, kind, command)
    gone = cat.delete(f.id, expected_version=2)
    assert gone.id == f.id

    inject(proxy, kind, command)
    e = cat.create(Entry(name="e", type=DIR, parent_id=d.id))
    inject(proxy, kind, command)
    cat.delete(e.id)

    proxy.reset()
    assert tree(cat) == [("d", 1), ("d/dst", 2)]
    assert proxy.faults >= 1


@pytest.mark.parametrize(("kind", "command"), FAULTS + [("drop_after", "insert"), ("error", "insert"),
                                                   ("drop_after", "findAndModify")])
def test_hard_link_writes_apply_exactly_once(faulty: tuple[Catalog, MongoProxy], kind: str, command: str) -> None:
    """link, update of a linked inode, rename and unlink of a linked name (each a transaction or
    one filtered write, with its token): a lost reply or a refused command is neither applied
    twice nor misreported."""
    cat, proxy = faulty
    d = cat.create(Entry(name="d", type=DIR))
    f = cat.create(Entry(name="f", parent_id=d.id, size=1))

    inject(proxy, kind, command)
    g = cat.link(f.id, ROOT_ID, "g")  # the first link moves the inode out of its name
    assert (g.id, g.nlink, g.version) == (f.id, 2, 2)
    inject(proxy, kind, command)
    assert cat.link(f.id, d.id, "h").nlink == 3
    inject(proxy, kind, command)
    assert cat.update(cat.resolve("/g").copy(size=5), 3).version == 4
    inject(proxy, kind, command)
    moved, replaced = cat.rename(f.id, ROOT_ID, "g2", source=(ROOT_ID, "g"))
    assert replaced is None and (moved.name, moved.version) == ("g2", 5)
    inject(proxy, kind, command)
    assert cat.delete(f.id, source=(d.id, "f")).nlink == 2
    inject(proxy, kind, command)
    assert cat.delete(f.id, source=(ROOT_ID, "g2")).nlink == 1  # the last name takes the inode inline

    proxy.reset()
    assert tree(cat) == [("d", 1), ("d/h", 7)]
    last = cat.resolve("/d/h")
    assert (last.id, last.nlink, last.size) == (f.id, 1, 5)
    assert proxy.faults >= 1


def test_records_apply_exactly_once(faulty: tuple[Catalog, MongoProxy]) -> None:
    cat, proxy = faulty
    proxy.drop_after(match="insert", count=1)
    assert cat.put_record("nodes", "n1", {"a": 1}, expected_version=0) == 1
    proxy.drop_after(match="findAndModify", count=1)
    assert cat.put_record("nodes", "n1", {"a": 2}) == 2
    proxy.drop_after(match="findAndModify", count=1)
    assert cat.put_record("nodes", "n1", {"a": 3}, expected_version=2) == 3
    proxy.drop_after(match="delete", count=1)
    assert cat.delete_record("nodes", "n1") is True
    proxy.reset()
    assert cat.list_records("nodes") == []


def test_outage_shorter_than_the_deadline_is_a_pause(faulty: tuple[Catalog, MongoProxy]) -> None:
    cat, proxy = faulty
    d = cat.create(Entry(name="d", type=DIR))
    proxy.outage(1.5)  # an election: no primary, every command refused with NotWritablePrimary
    f = cat.create(Entry(name="f", parent_id=d.id))
    proxy.outage(1.5)
    cat.rename(f.id, ROOT_ID, "g")
    proxy.outage(1.5, down=True)  # the server unreachable
    cat.delete(f.id)
    proxy.reset()
    assert tree(cat) == [("d", 1)]


def test_put_of_a_file_survives_faults(faulty: tuple[Catalog, MongoProxy], tmp_path: Path) -> None:
    from vdir.admin import add_backend
    from vdir.core import VDir

    cat, proxy = faulty
    vd = VDir(cat)
    add_backend(vd, "local", f"file://{tmp_path / 'objects'}", check=False)
    for i, (kind, command) in enumerate([("drop_after", "commitTransaction"), ("error", "update"),
                                         ("drop_after", "update"), ("error", "commitTransaction")]):
        inject(proxy, kind, command)
        vd.put(b"x" * (i + 1), "/f.txt", backend="local", force=True)
    proxy.reset()
    assert [(p, e.size) for p, e in cat.walk(ROOT_ID)] == [("f.txt", 4)]
    assert vd.cat("/f.txt") == b"xxxx"


def test_standalone_server_is_refused_in_one_line(mongo_proxy: MongoProxy, mongodb_uri: str) -> None:
    mongo_proxy.standalone()
    with pytest.raises(ConfigError) as info:
        open_catalog(url_through(mongo_proxy, mongodb_uri, "?serverSelectionTimeoutMS=5000"))
    message = str(info.value)
    assert "\n" not in message and "standalone" in message
    assert "--replSet" in message and "rs.initiate()" in message


def test_reads_wait_out_faults_too(faulty: tuple[Catalog, MongoProxy]) -> None:
    """A read that meets a not-primary answer or a dropped connection more often than pymongo's
    one retry covers is run again until the deadline, like a write: a path lookup, a listing,
    an entry by id and a record read during an election are a pause, not an error."""
    cat, proxy = faulty
    d = cat.create(Entry(name="d", type=DIR))
    f = cat.create(Entry(name="f", parent_id=d.id))
    cat.put_record("nodes", "n1", {"up": True})
    for kind in ("error", "drop_before", "drop_after"):
        inject(proxy, kind, "find", count=3)
        assert cat.lookup(d.id, "f") is not None
        inject(proxy, kind, "find", count=3)
        assert [e.name for e in cat.list(d.id)] == ["f"]
        inject(proxy, kind, "find", count=3)
        assert cat.get(f.id).name == "f"
        inject(proxy, kind, "find", count=3)
        assert cat.get_record("nodes", "n1")[0] == {"up": True}
        inject(proxy, kind, "find", count=3)
        assert cat.resolve("/d/f").id == f.id
    proxy.outage(1.5)
    assert cat.lookup(ROOT_ID, "d") is not None
    proxy.reset()
