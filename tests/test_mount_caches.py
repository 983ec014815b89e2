"""The mount's metadata caches and write-back delay, in process (no FUSE needed): what this
mount does shows at once, what others do shows within the cache time, a name found absent is
forgotten when it is created, and a directory's id survives changes made in it (a look-up of
a name under it is one catalog probe)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vdir.admin import add_backend
from vdir.catalog.base import open_catalog
from vdir.core import VDir
from vdir.fuse.dirs import MetaCache
from vdir.fuse.ops import VDirOperations
from vdir.vfs.cache import CacheDir, Journal

TTL = 0.3


@contextlib.contextmanager
def write_back_mount(tmp_path: Path, delay: float) -> Iterator[tuple[VDir, VDir, VDirOperations]]:
    """(the mount's VDir, another client's VDir on the same catalog, the operations of a
    write-back mount with ``delay``), without FUSE."""
    (tmp_path / "objects").mkdir()
    url = f"sqlite:///{tmp_path}/c.db"
    vd = VDir(open_catalog(url), default_backend="local")
    add_backend(vd, "local", f"file://{tmp_path / 'objects'}", check=False)
    other = VDir(open_catalog(url), default_backend="local")
    ops = VDirOperations(vd, CacheDir(tmp_path / "cache", 1 << 24), attr_timeout=TTL, sync_close=False, write_back_delay=delay)
    try:
        yield vd, other, ops
    finally:
        ops.destroy("/")
        other.close()
        vd.close()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[VDir, VDir, VDirOperations]]:
    with write_back_mount(tmp_path, 0.5) as w:
        yield w


class Counting:
    """Counts the catalog look-ups a VDir makes (child, children, entry)."""

    def __init__(self, vd: VDir, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        for name in ("child", "children", "entry"):
            original = getattr(vd, name)

            def counted(*args: object, _name: str = name, _original: object = original, **kwargs: object) -> object:
                self.calls.append(_name)
                return _original(*args, **kwargs)  # type: ignore[operator]

            monkeypatch.setattr(vd, name, counted)


def create(ops: VDirOperations, path: str, data: bytes) -> int:
    """What the kernel sends for ``open(O_CREAT|O_EXCL); write; close``: lookup, create, write,
    flush, release."""
    with pytest.raises(OSError):
        ops.getattr(path)
    fh = ops.create(path, 0o100644, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    ops.write(path, data, 0, fh)
    ops.flush(path, fh)
    ops.release(path, fh)
    return fh


def test_meta_cache_stale_keeps_a_directory_by_id() -> None:
    from vdir.catalog.base import DIR, FILE, Entry

    cache = MetaCache(10.0)
    d, f = Entry(id=7, name="d", type=DIR), Entry(id=8, name="f", type=FILE)
    cache.put("/d", d)
    cache.put("/d/f", f)
    cache.put_absent("/d/g")
    cache.stale("/d")
    assert cache.get("/d") is None and cache.get_dir("/d") is d  # attributes stale, id kept
    cache.stale("/d/f")
    cache.stale("/d/g")
    assert cache.get("/d/f") is None and cache.get_dir("/d/f") is None and not cache.absent("/d/g")
    cache.put("/d", d)
    assert cache.get("/d") is d
    cache.forget("/d", tree=True)
    assert cache.get_dir("/d") is None
    assert MetaCache(0.0).get_dir("/d") is None


def test_creates_cost_one_probe_each_and_show_at_once(world: tuple[VDir, VDir, VDirOperations],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    vd, _, ops = world
    vd.mkdir("/d")
    ops.getattr("/d")
    counting = Counting(vd, monkeypatch)
    for i in range(50):
        create(ops, f"/d/f{i:03}", b"x" * i)
    # one probe per new name (the lookup before create; create itself trusts the absent entry):
    # one page of names read ahead at the second miss finds none of them, single probes after
    # it; no walk of the directory's path again after each create
    assert counting.calls == ["child", "children"] + ["child"] * 48
    assert ops.getattr("/d/f007")["st_size"] == 7  # our own writes: at once
    assert {n for n, _, _ in ops.readdir_with_offset("/d", 0, ops.opendir("/d"))} >= {f"f{i:03}" for i in range(50)}
    before = ops.getattr("/d")["st_mtime"]
    ops.mkdir("/d/sub", 0o755)
    after = ops.getattr("/d")
    assert after["st_nlink"] == 3 and after["st_mtime"] >= before  # the directory's own attributes: fresh


def test_negative_entries(world: tuple[VDir, VDir, VDirOperations]) -> None:
    vd, other, ops = world
    with pytest.raises(OSError):
        ops.getattr("/late.txt")  # remembered as absent
    other.put(b"elsewhere", "/late.txt")
    with pytest.raises(OSError):
        ops.getattr("/late.txt")  # within the cache time the absent entry stands
    time.sleep(TTL + 0.05)
    assert ops.getattr("/late.txt")["st_size"] == 9  # made elsewhere: seen after the cache time
    with pytest.raises(OSError):
        ops.getattr("/mine.txt")
    create(ops, "/mine.txt", b"mine")  # the absent entry is dropped by the create: at once
    assert ops.getattr("/mine.txt")["st_size"] == 4
    ops.unlink("/mine.txt")
    with pytest.raises(OSError):
        ops.getattr("/mine.txt")


def test_changes_elsewhere_show_after_the_cache_time(world: tuple[VDir, VDir, VDirOperations]) -> None:
    vd, other, ops = world
    vd.mkdir("/d")
    vd.put(b"one", "/d/a.txt")
    assert ops.getattr("/d/a.txt")["st_size"] == 3
    create(ops, "/d/b.txt", b"b")  # makes /d's attributes stale, keeps its id
    other.put(b"three", "/d/a.txt", force=True)
    other.rm("/d", recursive=True)  # the directory itself replaced elsewhere
    other.mkdir("/d")
    other.put(b"fresh", "/d/c.txt")
    time.sleep(TTL + 0.05)
    assert ops.getattr("/d/c.txt")["st_size"] == 5  # a name under the new directory: found
    with pytest.raises(OSError):
        ops.getattr("/d/a.txt")


def test_write_back_delay_and_fsync(world: tuple[VDir, VDir, VDirOperations]) -> None:
    vd, other, ops = world
    ops.writeback.start(1)
    create(ops, "/later.txt", b"later")
    assert ops.getattr("/later.txt")["st_size"] == 5  # here at once
    assert not other.exists("/later.txt")  # others: once uploaded, after the delay
    fh = ops.create("/now.txt", 0o100644, os.O_WRONLY | os.O_CREAT)
    ops.write("/now.txt", b"now", 0, fh)
    ops.fsync("/now.txt", 0, fh)
    assert other.cat("/now.txt") == b"now"  # fsync: stored and committed before it returns
    ops.release("/now.txt", fh)
    deadline = time.monotonic() + 10
    while not other.exists("/later.txt"):
        assert time.monotonic() < deadline, "not uploaded after the delay"
        time.sleep(0.05)
    assert other.cat("/later.txt") == b"later"


def test_journal_first_save_and_an_empty_record(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j")
    rec, fd = journal.create("/a.txt", mode=0o600)
    os.write(fd, b"data")
    os.close(fd)
    journal.save(rec)  # first save: the record file is written at once
    rec.mode = 0o644
    journal.save(rec)  # later saves replace it whole
    assert [(r.path, r.mode) for r in Journal(tmp_path / "j").records()] == [("/a.txt", 0o644)]
    assert not list((tmp_path / "j").glob(".*.tmp"))
    empty, fd = journal.create("/b.txt")
    os.close(fd)
    (tmp_path / "j" / f"{empty.id}.json").write_bytes(b"")  # a mount killed inside its first save
    assert [r.path for r in Journal(tmp_path / "j").records()] == ["/a.txt"]
    assert not (tmp_path / "j" / f"{empty.id}.json").exists() and not journal.data_path(empty.id).exists()


@pytest.fixture
def burst_ops(tmp_path: Path) -> Iterator[tuple[VDir, VDirOperations]]:
    """A write-back mount's operations with a 1 s delay (started), and another client."""
    with write_back_mount(tmp_path, 1.0) as (_, other, ops):
        ops.writeback.start(1)
        yield other, ops


def _burst(ops: VDirOperations, seconds: float, check: Callable[[], None]) -> None:
    """Files created and closed every 0.1 s for ``seconds`` (shorter than the 1 s delay apart)."""
    end, i = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        create(ops, f"/burst{i}.txt", b"b")
        i += 1
        check()
        time.sleep(0.1)


def test_uploads_wait_for_a_burst_of_closes_to_end(burst_ops: tuple[VDir, VDirOperations]) -> None:
    other, ops = burst_ops
    create(ops, "/first.txt", b"1")
    # 2.5 s of closes: without the quiet period /first.txt would be uploaded 1 s after its close
    _burst(ops, 2.5, lambda: assert_absent(other, "/first.txt"))
    deadline = time.monotonic() + 10
    while not other.exists("/first.txt"):  # the burst is over: uploaded a delay later
        assert time.monotonic() < deadline, "not uploaded after the burst"
        time.sleep(0.05)
    assert other.cat("/first.txt") == b"1"


def test_a_long_burst_holds_an_upload_at_most_a_few_delays(burst_ops: tuple[VDir, VDirOperations],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import vdir.vfs.writeback as wb

    monkeypatch.setattr(wb, "HOLD_FACTOR", 2)  # at most 2 s after its close
    other, ops = burst_ops
    create(ops, "/first.txt", b"1")
    seen: list[bool] = []
    _burst(ops, 5.0, lambda: seen.append(other.exists("/first.txt")))
    assert any(seen), "held for the whole burst"
    assert not seen[0]


def assert_absent(vd: VDir, path: str) -> None:
    assert not vd.exists(path), f"{path} uploaded during the burst"
