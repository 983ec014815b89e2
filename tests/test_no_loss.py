"""Nothing lost, nothing wrong: the reproductions of the "Nothing lost" issue, run as a user would
(the CLI in a fresh home, or the Python API), each asserting the promise that used to break.

Items covered elsewhere: verified ranged reads (tests/test_verified_reads.py), the mount's
write-back journal (tests/test_mount_noloss.py), fsspec (tests/test_fsspec_abstract.py), the
CLI's wrong states, printing and get -r (tests/test_cli_safety.py), backend overlap, timeouts,
unfinished uploads and ENOSPC (tests/test_backend_safety.py).
"""

from __future__ import annotations

import io
import os
import signal
import threading
import time
from pathlib import Path

import pytest

import vdir
from tests.helpers import race, tmpfs
from tests.servers.vdirs import CLI, ok
from vdir import objects
from vdir.backends import Backend
from vdir.catalog.base import BackendRecord, Entry, Replica, open_catalog
from vdir.core import VDir
from vdir.errors import Conflict
from vdir.fsck import fsck


def data_dir(cli: CLI) -> Path:
    return cli.home / ".local" / "share" / "vdir"


# -- 1. fsck deletes only what vdir wrote and nothing uses ---------------------------------------


def test_fsck_never_deletes_a_users_own_files(cli: CLI, tmp_path: Path) -> None:
    u = tmp_path / "u"
    u.mkdir()
    (u / "a").write_text("x\n")
    os.utime(u / "a", (1577836800, 1577836800))  # touch -d 2020-01-01
    ok(cli, "init")
    ok(cli, "backend", "add", "mine", f"file://{u}")
    proc = cli.run("fsck", "--delete-orphans")
    assert (u / "a").read_text() == "x\n"
    assert b"foreign" in proc.stdout and b"mine:a" in proc.stdout
    proc = cli.run("fsck", "--delete-orphans", "--min-age", "0")
    assert (u / "a").read_text() == "x\n"
    assert proc.returncode == 0, proc.stdout  # foreign objects are information, not a fault


def test_importing_one_prefix_never_deletes_the_rest_of_the_bucket(cli: CLI, tmp_path: Path) -> None:
    bucket = tmp_path / "bucket"
    (bucket / "raw").mkdir(parents=True)
    (bucket / "other").mkdir()
    (bucket / "raw" / "a.csv").write_text("x,y\n")
    (bucket / "other" / "b.csv").write_text("keep me\n")
    ok(cli, "init")
    ok(cli, "backend", "add", "b", f"file://{bucket}")
    ok(cli, "import", f"file://{bucket}/raw", "/raw")
    cli.run("fsck", "--delete-orphans", "--min-age", "0")
    assert (bucket / "other" / "b.csv").read_text() == "keep me\n"
    assert (bucket / "raw" / "a.csv").read_text() == "x,y\n"
    ok(cli, "rm", "/raw/a.csv")  # removing a linked name never deletes the object
    assert (bucket / "raw" / "a.csv").exists()


def test_fsck_never_deletes_the_catalog_even_under_a_backend_root(cli: CLI) -> None:
    ok(cli, "init")
    home_data = data_dir(cli)
    # registered behind the CLI's back (backend add refuses such a root): fsck must still not delete
    with open_catalog(f"sqlite:///{home_data / 'catalog.db'}") as cat:
        cat.put_backend(BackendRecord("covers", f"file://{home_data}"))
    cli.run("fsck", "--delete-orphans", "--min-age", "0")
    assert (home_data / "catalog.db").exists()
    assert ok(cli, "ls", "/") is not None  # and the catalog still opens


def test_an_interrupted_write_leaves_an_orphan_that_fsck_removes(vd: VDir, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def unknown_outcome(entry: Entry) -> Entry:
        raise KeyboardInterrupt  # the catalog went away mid-commit: the outcome is unknown

    monkeypatch.setattr(vd.catalog, "create", unknown_outcome)
    with pytest.raises(KeyboardInterrupt):
        vd.put(b"half-done", "/x.bin")
    monkeypatch.undo()
    left = [p for p in (tmp_path / "objects").rglob("*") if p.is_file()]
    assert [p.read_bytes() for p in left] == [b"half-done"]
    report = fsck(vd)
    assert [p.kind for p in report.problems] == ["orphan"]
    assert report.exit_code == 1
    report = fsck(vd, gc=True, min_age=0)
    assert report.deleted_orphans == 1
    assert not [p for p in (tmp_path / "objects").rglob("*") if p.is_file()]
    assert fsck(vd).problems == []
    assert vd.catalog.list_records(objects.INTENTS) == []  # the intent went with its object


# -- 3. shared objects are safe --------------------------------------------------------------------


def test_a_linked_second_name_keeps_the_bytes_alive(cli: CLI, tmp_path: Path) -> None:
    src = tmp_path / "a"
    src.write_bytes(b"precious")
    ok(cli, "init")
    ok(cli, "put", str(src), "/a")
    obj = data_dir(cli) / "objects" / "a"
    assert obj.read_bytes() == b"precious"
    ok(cli, "link", f"file://{obj}", "/b")
    ok(cli, "rm", "/a")  # /b still uses the object: it stays
    assert ok(cli, "cat", "/b") == "precious"
    proc = cli.run("fsck")
    assert proc.returncode == 0, proc.stdout
    ok(cli, "rm", "/b")  # the last name goes: the object is vdir's, unused, and fsck may remove it
    proc = cli.run("fsck", "--delete-orphans", "--min-age", "0")
    assert b"orphan" in proc.stdout and not obj.exists()
    assert cli.run("fsck").returncode == 0


def test_no_delete_removes_bytes_another_entry_uses(vd: VDir, tmp_path: Path) -> None:
    vd.put(b"shared bytes", "/a")
    a = vd.entry("/a")
    # two entries on one object, as an older vdir's link could make: rm, overwrite and rename-over
    # of either name must leave the object for the other
    root = vd.catalog.root()
    for name in ("b", "c", "d"):
        vd.catalog.create(Entry(name=name, parent_id=root.id, size=a.size, hash=a.hash,
                                replicas=[Replica(r.backend, r.key, r.size, r.hash) for r in a.replicas]))
    vd.rm("/a")
    vd.put(b"new content", "/b", force=True)
    vd.put(b"other", "/e")
    vd.rename("/e", "/c")
    assert vd.cat("/d") == b"shared bytes"
    assert fsck(vd).problems == []


# -- 5. create-only is really atomic, or not claimed -----------------------------------------------


class _GatedBytes(io.BytesIO):
    """A seekable source whose first read waits until every racer has started."""

    def __init__(self, data: bytes, gate: threading.Barrier) -> None:
        super().__init__(data)
        self.gate, self.started = gate, False

    def read(self, n: int | None = -1) -> bytes:
        if not self.started:
            self.started = True
            self.gate.wait(timeout=30)
        return super().read(n)


def test_two_creators_of_one_new_path_never_lose_the_winners_bytes(any_backend: Backend, tmp_path: Path) -> None:
    vd = VDir(open_catalog(f"sqlite:///{tmp_path / 'race.db'}"), default_backend=any_backend.name)
    vd.catalog.put_backend(BackendRecord(any_backend.name, any_backend.url))
    vd._backends[any_backend.name] = any_backend  # the fixture's opened backend (emulator credentials)
    gate = threading.Barrier(2)
    payloads = {0: b"A" * 70_000, 1: b"B" * 90_000}
    results = race(2, lambda i: vd.write_stream("/race.bin", _GatedBytes(payloads[i], gate), size=len(payloads[i])))
    losers = [r for r in results if isinstance(r, Exception)]
    assert len(losers) == 1 and isinstance(losers[0], Conflict), results
    winner = next(i for i, r in enumerate(results) if not isinstance(r, Exception))
    assert vd.cat("/race.bin") == payloads[winner]
    entry = vd.entry("/race.bin")
    assert any_backend.get_bytes(entry.replicas[0].key) == payloads[winner]
    assert not [p for p in fsck(vd).problems if p.kind in ("missing", "corrupt")]


# -- 6. object keys never fail for long names ------------------------------------------------------


def test_names_near_255_bytes_and_long_paths_store_and_overwrite(vd: VDir) -> None:
    for n in (250, 255):
        path = "/d/" + "n" * n
        vd.put(b"one", path)
        vd.put(b"two", path, force=True)  # an overwrite needs a second key beside the name
        assert vd.cat(path) == b"two"
    deep = "/" + "/".join(["é" * 100] * 5) + "/file.txt"  # 1,000+ bytes of path: longer than a key may be
    vd.put(b"deep", deep)
    assert vd.cat(deep) == b"deep"
    assert all(len(r.key.encode()) <= objects.MAX_KEY_BYTES for r in vd.entry(deep).replicas)
    assert fsck(vd).problems == []


# -- 9. fsck counts files with no replica as lost --------------------------------------------------


def test_a_file_with_no_replica_is_lost_and_fsck_says_so(cli: CLI, tmp_path: Path) -> None:
    ok(cli, "init")
    f = tmp_path / "f"
    f.write_bytes(b"content")
    ok(cli, "put", str(f), "/f")
    with vdir.connect(str(cli.home / ".config" / "vdir" / "config.yaml")) as vd:
        e = vd.entry("/f")
        vd.catalog.update(e.copy(replicas=[]), e.version)
    proc = cli.run("fsck")
    assert proc.returncode == 2
    assert b"lost" in proc.stdout and b"/f" in proc.stdout


# -- 12. a crash leaves only what fsck sees --------------------------------------------------------


@pytest.mark.slow
def test_kill_9_during_a_big_put_leaves_nothing_fsck_cannot_clean(cli: CLI, tmp_path: Path) -> None:
    big = tmp_path / "big"
    with open(big, "wb") as fh:
        fh.truncate(600 * 1024 * 1024)  # sparse: fast to make, slow enough to store
    ok(cli, "init")
    objects_dir = data_dir(cli) / "objects"
    proc = cli.popen("put", str(big), "/big")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(p.is_file() and p.stat().st_size > 0 for p in objects_dir.rglob("*")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert any(p.is_file() for p in objects_dir.rglob("*")), "the put was killed before it wrote anything"
    listing = cli.run("fsck")
    assert listing.returncode == 1, listing.stdout  # found, and only cleanable things
    cli.run("fsck", "--delete-orphans", "--min-age", "0")
    left = [p for p in objects_dir.rglob("*") if p.is_file() and p.name != ".vdir-lock"]
    assert left == [], left
    assert cli.run("fsck").returncode == 0


# -- 13. durable commits before deletes ------------------------------------------------------------


def test_objects_are_deleted_only_after_a_durable_commit(vd: VDir, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    real_fsync = os.fsync
    wal = os.path.realpath(vd.catalog.path + "-wal")  # type: ignore[attr-defined]

    def fsync(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}") == wal:
            events.append("wal-fsync")
        real_fsync(fd)

    store = vd.backend("local")
    real_delete = store.delete

    def delete(key: str) -> None:
        events.append(f"delete {key}")
        real_delete(key)

    vd.put(b"v1", "/f")
    vd.put(b"x", "/g")
    vd.put(b"y", "/h")
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(store, "delete", delete)
    vd.put(b"v2", "/f", force=True)  # overwrite
    vd.rm("/g")  # remove
    vd.rename("/h", "/f")  # rename over
    deletes = [i for i, e in enumerate(events) if e.startswith("delete")]
    assert len(deletes) == 3, events
    for i in deletes:
        assert "wal-fsync" in events[:i], events


# -- 15. errors say what happened -------------------------------------------------------------------


def test_a_full_catalog_disk_says_so(cli: CLI, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", "2m") as small:
        catalog = small / "catalog.db"
        conf = cli.home / ".config" / "vdir" / "config.yaml"
        ok(cli, "init", "--catalog", f"sqlite:///{catalog}")
        assert conf.exists()
        fd = os.open(small / "filler", os.O_WRONLY | os.O_CREAT)  # leave the catalog almost no room
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        files = tmp_path / "many"
        files.mkdir()
        for i in range(300):
            (files / f"{i:04}-{'x' * 150}").write_bytes(b"z")
        proc = cli.run("put", "-r", str(files), "/many")
        assert proc.returncode != 0
        err = proc.stderr.decode()
        assert "full" in err and "rollback" not in err.lower(), err
        assert err.count("\n") == 1, err

