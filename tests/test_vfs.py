"""The layer between the core and FUSE (issue 13, item 6), driven without a mount.

* The core's node-level operations (:meth:`~vdir.core.VDir.child`, ``children``, ``entry_by_id``,
  ``touch_atime``, ``catalog_url``) on both catalog engines.
* The write-back: open files (:class:`~vdir.vfs.files.Node`), the journal
  (:mod:`vdir.vfs.cache`) and the background committer (:class:`~vdir.vfs.writeback.WriteBack`)
  as plain objects: a pending file committed, the journal replayed after a simulated crash
  (the process dies with files pending, a new one takes the same cache directory), conflicts
  with changes made elsewhere, records parked when their directory is gone.  Both engines: the
  generation checks and compare-and-set commits are catalog operations.
* The layering itself: ``vdir/fuse/`` and ``vdir/vfs/`` never reach into the catalog, and
  ``vdir/vfs/`` never imports FUSE.
"""

from __future__ import annotations

import ast
import errno
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.mounts import wait_for
from vdir.admin import add_backend
from vdir.catalog.base import open_catalog
from vdir.core import VDir
from vdir.errors import Conflict, NotFound, to_errno
from vdir.vfs.cache import CacheDir
from vdir.vfs.files import Node
from vdir.vfs.writeback import WriteBack

ENGINES = ["sqlite", "mongo"]
PACKAGE = Path(__file__).resolve().parents[1] / "vdir"


@pytest.fixture(params=ENGINES)
def vd(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VDir]:
    """A VDir on each catalog engine with one local-folder backend (the default)."""
    url = f"sqlite:///{tmp_path}/c.db" if request.param == "sqlite" else str(request.getfixturevalue("mongo_catalog_url"))
    (tmp_path / "objects").mkdir()
    v = VDir(open_catalog(url), default_backend="local")
    add_backend(v, "local", f"file://{tmp_path / 'objects'}", check=False)
    try:
        yield v
    finally:
        v.close()


class Mount:
    """What a mount holds of the write-back, without FUSE: a cache directory, the open-file
    table (path -> Node) and its lock, a read-ahead pool and the background committer."""

    def __init__(self, vd: VDir, root: Path) -> None:
        self.vd = vd
        self.cache = CacheDir(root, 1 << 24)
        self.pool = ThreadPoolExecutor(max_workers=2)
        self.lock = threading.RLock()
        self.nodes: dict[str, Node] = {}
        self.writeback = WriteBack(vd, self.cache, self.pool, self.lock, self.nodes)

    def new_file(self, path: str, data: bytes) -> Node:
        """A file created and written through the mount, not committed (as after ``write``)."""
        parent = self.vd.entry(path.rsplit("/", 1)[0] or "/")
        node = Node(self.vd, self.cache, self.pool, path, None, 0o640, parent_id=parent.id)
        node.make_local()
        node.mark_dirty(save=False)
        node.write(data, 0)
        self.nodes[path] = node
        return node

    def open_file(self, path: str) -> Node:
        node = Node(self.vd, self.cache, self.pool, path, self.vd.entry(path))
        self.nodes[path] = node
        return node

    def crash(self) -> None:
        """The process dies: nothing is committed or cleaned up; only its open files and the
        cache directory's lock go (the kernel closes them)."""
        for node in self.nodes.values():
            if node.fd is not None:
                os.close(node.fd)
                node.fd = None
        self.pool.shutdown(wait=False)
        self.cache.close()

    def stop(self) -> None:
        self.writeback.stop()
        for node in self.nodes.values():
            node.close()
        self.pool.shutdown(wait=False)
        self.cache.close()

    def drain(self) -> None:
        """Run the write-back until nothing is pending (polled, with a deadline)."""
        self.writeback.start(workers=1)
        wait_for(lambda: self.writeback.pending() == 0, 30, "the write-back to finish")


def records(m: Mount) -> list[str]:
    return [r.path for r in m.cache.journal.records()]


def conflict_copies(vd: VDir, directory: str, name: str) -> list[str]:
    return [e.name for e in vd.children(vd.entry(directory).id) if e.name.startswith(name + ".conflict-")]


# -- the core's node-level operations -------------------------------------------------------------
def test_node_level_operations(vd: VDir) -> None:
    names = [f"f{i:03d}" for i in range(25)] + ["Hello, 世界", "é"]
    vd.mkdir("/d")
    for name in names:
        vd.put(name.encode(), f"/d/{name}")
    d = vd.entry("/d")
    assert vd.entry_by_id(d.id).name == "d" and vd.entry_by_id(d.id).type == "dir"
    found = vd.child(d.id, "Hello, 世界")
    assert found is not None and found.id == vd.entry("/d/Hello, 世界").id and found.size == len("Hello, 世界".encode())
    assert vd.child(d.id, "absent") is None
    assert vd.child(found.id, "x") is None  # under a file: nothing, not an error
    # paged listing: name (byte) order, resumed after the last name of a page
    pages, after = [], None
    while True:
        page = vd.children(d.id, after=after, limit=10)
        pages.append(page)
        if len(page) < 10:
            break
        after = page[-1].name
    assert [len(p) for p in pages] == [10, 10, 7]
    assert [e.name for p in pages for e in p] == sorted(names, key=lambda n: n.encode())
    assert vd.children(d.id, after="f020") == [e for e in vd.children(d.id) if e.name.encode() > b"f020"]
    assert vd.children(found.id) == [] and vd.children(10**9) == []
    # atime: forward only, no new version
    f = vd.entry("/d/f000")
    vd.touch_atime(f, f.mtime + 100)
    vd.touch_atime(f, f.mtime + 50)
    after_touch = vd.entry("/d/f000")
    assert after_touch.atime == pytest.approx(f.mtime + 100) and after_touch.version == f.version
    gone = vd.entry("/d/f001")
    vd.rm("/d/f001")
    vd.touch_atime(gone, gone.mtime + 1)  # a vanished entry: no effect, no error
    assert vd.child(d.id, "f001") is None
    # errors are the core's own, mapped by the one function
    with pytest.raises(NotFound) as err:
        vd.entry_by_id(10**9)
    assert to_errno(err.value) == errno.ENOENT
    assert vd.catalog_url.startswith(("sqlite:", "mongodb:"))


# -- write-back, without a mount --------------------------------------------------------------------
def test_pending_file_is_committed_on_close_and_in_background(vd: VDir, tmp_path: Path) -> None:
    vd.mkdir("/d")
    m = Mount(vd, tmp_path / "cache")
    try:
        # close with sync_close: the node commits at once and its record goes
        node = m.new_file("/d/sync.txt", b"synced")
        assert records(m) == ["/d/sync.txt"] and vd.child(vd.entry("/d").id, "sync.txt") is None
        entry = node.commit()
        assert entry is not None and vd.cat("/d/sync.txt") == b"synced" and vd.stat("/d/sync.txt").mode == 0o640
        assert records(m) == [] and not node.dirty
        # close with --write-back: journaled (checkpoint), then committed by the background write-back
        node = m.new_file("/d/later.txt", b"later")
        node.checkpoint()
        node.background = True
        assert records(m) == ["/d/later.txt"] and not vd.exists("/d/later.txt")
        committed: list[str] = []
        m.writeback.on_commit = committed.append
        m.writeback.enqueue(node)
        m.drain()
        assert vd.cat("/d/later.txt") == b"later" and committed == ["/d/later.txt"]
        assert records(m) == [] and "/d/later.txt" not in m.nodes
    finally:
        m.stop()


def test_journal_replayed_after_crash(vd: VDir, tmp_path: Path) -> None:
    """A process dies with files pending: the next one over the same cache directory serves them
    from the journal at once (before any upload) and commits them in the background; a record
    whose content was committed just before the crash is dropped, not copied."""
    vd.mkdir("/d")
    vd.put(b"old content", "/d/changed.txt")
    first = Mount(vd, tmp_path / "cache")
    first.new_file("/d/new.txt", b"new file, never committed")
    changed = first.open_file("/d/changed.txt")
    changed.write(b"NEW", 0)
    first.new_file("/d/done.txt", b"committed, record left")
    vd.put(b"committed, record left", "/d/done.txt")  # the commit happened; the crash came before the record went
    first.crash()

    second = Mount(vd, tmp_path / "cache")
    try:
        assert sorted(records(second)) == ["/d/changed.txt", "/d/done.txt", "/d/new.txt"]
        report = second.writeback.adopt(second.cache.journal.records())
        assert report.pending == 3 and not report.parked
        # visible and readable before anything is uploaded
        assert second.nodes["/d/new.txt"].read(100, 0) == b"new file, never committed"
        assert second.nodes["/d/changed.txt"].read(100, 0) == b"NEW content"
        assert not vd.exists("/d/new.txt") and vd.cat("/d/changed.txt") == b"old content"
        second.drain()
        assert vd.cat("/d/new.txt") == b"new file, never committed"
        assert vd.cat("/d/changed.txt") == b"NEW content"
        assert vd.cat("/d/done.txt") == b"committed, record left"
        assert conflict_copies(vd, "/d", "done.txt") == [] and records(second) == []
        assert sorted(e.name for e in vd.children(vd.entry("/d").id)) == ["changed.txt", "done.txt", "new.txt"]
    finally:
        second.stop()


def test_conflicts_keep_both_versions(vd: VDir, tmp_path: Path) -> None:
    """Content changed elsewhere while a change was pending here: the other version stays, this
    one is saved beside it as a conflict copy (on close and on replay); a change of metadata
    only elsewhere is no conflict."""
    vd.mkdir("/d")
    for name in ("a.txt", "b.txt", "meta.txt"):
        vd.put(b"base", f"/d/{name}")
    m = Mount(vd, tmp_path / "cache")
    try:
        node = m.open_file("/d/a.txt")
        node.write(b"mine", 0)
        vd.put(b"theirs", "/d/a.txt", force=True)
        with pytest.raises(Conflict) as err:
            node.commit()
        assert to_errno(err.value) == errno.ESTALE
        assert vd.cat("/d/a.txt") == b"theirs"
        [copy] = conflict_copies(vd, "/d", "a.txt")
        assert vd.cat(f"/d/{copy}") == b"mine" and records(m) == []

        meta = m.open_file("/d/meta.txt")
        meta.write(b"MINE", 0)
        vd.update_entry("/d/meta.txt", mode=0o600)  # metadata only: the commit goes on top of it
        assert meta.commit() is not None and vd.cat("/d/meta.txt") == b"MINE"
        assert conflict_copies(vd, "/d", "meta.txt") == []

        pending = m.open_file("/d/b.txt")
        pending.write(b"mine", 0)
        pending.checkpoint()
        m.crash()
        vd.put(b"theirs", "/d/b.txt", force=True)
        again = Mount(vd, tmp_path / "cache")
        try:
            assert again.writeback.adopt(again.cache.journal.records()).pending == 1
            again.drain()
            assert vd.cat("/d/b.txt") == b"theirs"
            [copy] = conflict_copies(vd, "/d", "b.txt")
            assert vd.cat(f"/d/{copy}") == b"mine" and records(again) == []
        finally:
            again.stop()
    finally:
        m.writeback.stop()


def test_replay_parks_what_lost_its_place(vd: VDir, tmp_path: Path) -> None:
    """A pending new file whose directory was removed, and a pending change to a file removed
    elsewhere, are never re-created: parked with their content, reported, not retried."""
    vd.mkdir("/gone")
    vd.put(b"base", "/removed.txt")
    first = Mount(vd, tmp_path / "cache")
    first.new_file("/gone/new.txt", b"orphan")
    first.open_file("/removed.txt").write(b"change", 0)
    first.crash()
    vd.rm("/gone", recursive=True)
    vd.rm("/removed.txt")
    second = Mount(vd, tmp_path / "cache")
    try:
        report = second.writeback.adopt(second.cache.journal.records())
        assert report.pending == 0 and len(report.parked) == 2
        assert all("parked" in line for line in report.parked)
        assert records(second) == [] and not vd.exists("/gone") and not vd.exists("/removed.txt")
        parked = sorted(p.read_bytes() for p in (tmp_path / "cache" / "parked").glob("*.data"))
        assert parked == [b"change", b"orphan"]
    finally:
        second.stop()


# -- the layering ----------------------------------------------------------------------------------
DATA_MODEL = {"Entry", "DIR", "FILE", "SYMLINK", "SPECIAL", "FIFO", "CHR", "BLK", "SOCK", "DEVICES", "ROOT_ID"}
"""What vdir/fuse/ and vdir/vfs/ may import from vdir.catalog: the data model, not the engines."""


def _offences(source: Path, forbidden_modules: tuple[str, ...]) -> list[str]:
    found = []
    tree = ast.parse(source.read_text(encoding="utf-8"), str(source))
    for node in ast.walk(tree):
        where = f"{source.parent.name}/{source.name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Attribute) and node.attr == "catalog":
            found.append(f"{where}: .catalog")
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if module.startswith("vdir.catalog"):
                found += [f"{where}: imports {a.name} from {module}" for a in node.names if a.name not in DATA_MODEL]
            elif module.startswith(forbidden_modules):
                found.append(f"{where}: imports from {module}")
        elif isinstance(node, ast.Import):
            found += [f"{where}: imports {a.name}" for a in node.names if a.name.startswith(("vdir.catalog", *forbidden_modules))]
    return found


@pytest.mark.parametrize(("package", "forbidden"), [("fuse", ()), ("vfs", ("vdir.fuse", "mfusepy", "fuse"))])
def test_layers_do_not_touch_the_catalog(package: str, forbidden: tuple[str, ...]) -> None:
    """vdir/fuse/ (the FUSE adapter) and vdir/vfs/ (open files, write-back, journal) go through
    the core only: no ``.catalog`` attribute, no catalog engine or ``Catalog`` import; vdir/vfs/
    imports nothing of FUSE (so the layering of issue 13, item 6 stays)."""
    files = sorted((PACKAGE / package).glob("*.py"))
    assert len(files) >= 3
    assert [o for source in files for o in _offences(source, forbidden)] == []
