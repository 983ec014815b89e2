"""The core API (vdir.VDir) on the embedded default: what a Python user relies on."""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import pytest
import xxhash

from vdir.core import VDir
from vdir.errors import (
    AlreadyExists,
    Conflict,
    DirectoryNotEmpty,
    IntegrityError,
    InvalidArgument,
    InvalidPath,
    IsADirectory,
    NameTooLong,
    NotADirectory,
    NotFound,
)
from vdir.fsck import fsck

AWKWARD = "hello? sausage/êé/Hello, 世界/ \" ' @ < > & ? + ≠/z.txt"


def h(data: bytes) -> str:
    return xxhash.xxh3_128_hexdigest(data)


def objects_of(vd: VDir, backend: str = "local") -> list[str]:
    return [m.key for m in vd.backend(backend).list("")]


def test_put_bytes_then_read_back_with_hash_and_replica(vd: VDir) -> None:
    data = os.urandom(100_000)
    vd.put(data, "/a/b/data.bin")
    info = vd.stat("/a/b/data.bin")
    assert info.size == len(data) and info.hash == h(data) and info.type == "file"
    assert [r["backend"] for r in info.replicas] == ["local"]
    assert info.replicas[0]["key"] == "a/b/data.bin"  # recognisable name on the backend
    assert vd.cat("/a/b/data.bin") == data
    assert Path(vd.backend("local").url[len("file://"):], "a/b/data.bin").read_bytes() == data


def test_awkward_names_round_trip(vd: VDir) -> None:
    vd.put(b"awkward", "/" + AWKWARD)
    assert vd.cat("/" + AWKWARD) == b"awkward"
    names = [i.name for i in vd.ls("/hello? sausage")]
    assert names == ["êé"]


def test_empty_file(vd: VDir) -> None:
    vd.put(b"", "/empty")
    assert vd.stat("/empty").size == 0
    assert vd.cat("/empty") == b""


def test_put_directory_like_cp_r(vd: VDir, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "one.txt").write_bytes(b"one")
    (src / "sub" / "two.bin").write_bytes(os.urandom(70_000))
    with pytest.raises(IsADirectory):
        vd.put(src, "/x")
    vd.mkdir("/dest")
    vd.put(src, "/dest", recursive=True)  # existing directory: goes inside under its own name
    assert sorted(i.path for i in vd.ls("/dest", recursive=True)) == [
        "/dest/src", "/dest/src/one.txt", "/dest/src/sub", "/dest/src/sub/two.bin",
    ]
    out = tmp_path / "out"
    vd.get("/dest/src", out, recursive=True)
    assert (out / "one.txt").read_bytes() == b"one"
    assert (out / "sub" / "two.bin").read_bytes() == (src / "sub" / "two.bin").read_bytes()


def test_open_reads_ranges_and_writes(vd: VDir) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    with vd.open("/w.bin", "wb") as f:
        f.write(data[:1000])
        f.write(data[1000:])
    assert vd.stat("/w.bin").hash == h(data)
    with vd.open("/w.bin") as f:
        f.seek(len(data) - 10)
        assert f.read() == data[-10:]
        f.seek(123_456)
        assert f.read(1000) == data[123_456:124_456]
        f.seek(0)
        assert f.read() == data
    with pytest.raises(AlreadyExists):
        vd.open("/w.bin", "xb")


def test_destination_exists_refused_unless_force(vd: VDir) -> None:
    vd.put(b"first", "/f")
    with pytest.raises(AlreadyExists, match="--force"):
        vd.put(b"second", "/f")
    assert vd.cat("/f") == b"first"
    vd.put(b"second", "/f", force=True)
    assert vd.cat("/f") == b"second"
    assert objects_of(vd) == ["f"] or len(objects_of(vd)) == 1  # the old object is gone


def test_put_into_a_file_path_is_refused(vd: VDir) -> None:
    vd.put(b"x", "/file")
    with pytest.raises(NotADirectory):
        vd.put(b"y", "/file/inner")
    assert objects_of(vd) == ["file"]


def test_mkdir_rm_mv(vd: VDir) -> None:
    vd.mkdir("/p/q/r", parents=True)
    with pytest.raises(NotFound):
        vd.mkdir("/nope/x")
    vd.put(b"1", "/p/q/r/f")
    with pytest.raises(DirectoryNotEmpty):
        vd.rm("/p")
    vd.mv("/p/q", "/moved")
    assert vd.cat("/moved/r/f") == b"1"
    with pytest.raises(InvalidArgument):
        vd.mv("/moved", "/moved/r/inside")
    vd.put(b"2", "/other")
    with pytest.raises(AlreadyExists):
        vd.mv("/other", "/moved/r/f")
    vd.mv("/other", "/moved/r/f", force=True)
    assert vd.cat("/moved/r/f") == b"2"
    assert len(objects_of(vd)) == 1  # the replaced file's object was deleted
    assert vd.rm("/moved", recursive=True) == 3
    assert objects_of(vd) == []
    with pytest.raises(InvalidArgument):
        vd.rm("/", recursive=True)


@pytest.mark.parametrize(
    "bad, exc",
    [
        ("/a/../etc/passwd", InvalidPath),
        ("../../etc", InvalidPath),
        ("/a//b", InvalidPath),
        ("/a/./b", InvalidPath),
        ("/a\x00b", InvalidPath),
        ("/" + "x" * 256, NameTooLong),
        ("", InvalidPath),
        ("/bad\udcff", InvalidPath),
    ],
)
def test_bad_paths_are_refused_and_nothing_written(vd: VDir, bad: str, exc: type[Exception]) -> None:
    with pytest.raises(exc):
        vd.put(b"data", bad)
    assert objects_of(vd) == []
    assert vd.ls("/") == []


def test_non_utf8_local_name_refused_before_any_upload(vd: VDir, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "aaa-good.txt").write_bytes(b"fine")
    with open(os.path.join(os.fsencode(src), b"bad-\xff.txt"), "wb") as f:
        f.write(b"latin-1 name")
    with pytest.raises(InvalidPath, match="UTF-8"):
        vd.put(src, "/in", recursive=True)
    assert objects_of(vd) == [] and vd.ls("/") == []


def test_missing_source_and_unknown_backend(vd: VDir, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no such local file"):
        vd.put(tmp_path / "nope", "/x")
    with pytest.raises(NotFound, match="unknown backend 'mars'"):
        vd.put(b"x", "/x", backend="mars")
    assert vd.ls("/") == []


@pytest.mark.parametrize("workers", [1, 8])
def test_recursive_get_is_all_or_nothing_per_batch(vd: VDir, tmp_path: Path, workers: int) -> None:
    """Many files come out verified with their modes and mtimes; when one of them cannot be
    verified, the get fails naming it and leaves neither it, nor any temp file, behind."""
    files = {f"d/f{i:03d}.bin": os.urandom(1000 + i) for i in range(40)}
    for rel, data in files.items():
        vd.put(data, f"/t/{rel}")
    out = tmp_path / "out"
    written = vd.get("/t", out, recursive=True, workers=workers)
    assert len(written) == 40 and all((out / rel).read_bytes() == data for rel, data in files.items())
    assert oct((out / "d/f000.bin").stat().st_mode & 0o777) == oct(vd.stat("/t/d/f000.bin").mode & 0o777)
    assert abs((out / "d/f000.bin").stat().st_mtime - vd.stat("/t/d/f000.bin").mtime) < 1e-3

    root = Path(vd.backend("local").url[len("file://"):])
    (root / "t/d/f017.bin").write_bytes(b"corrupt")  # the only replica of one file
    again = tmp_path / "again"
    with pytest.raises(IntegrityError, match="/t/d/f017.bin"):
        vd.get("/t", again, recursive=True, workers=workers)
    leftovers = [p.name for p in again.rglob("*") if p.is_file()]
    assert leftovers == []  # a batch is published whole or not at all; no .vdir-part files


def test_integrity_failover_and_clear_error(vd: VDir) -> None:
    data = b"precious " * 1000
    vd.put(data, "/p.txt")
    entry = vd.entry("/p.txt")
    # a second replica on another backend, as placement would make it
    meta = vd.backend("spare").put_bytes("p.txt", data)
    from vdir.catalog.base import Replica

    changed = entry.copy()
    changed.replicas.append(Replica("spare", "p.txt", len(data), h(data), meta.etag))
    vd.catalog.update(changed, entry.version)
    root = Path(vd.backend("local").url[len("file://"):])
    (root / "p.txt").write_bytes(b"X" + data[1:])  # a flipped byte in the first replica
    assert vd.cat("/p.txt") == data  # read fell over to the good copy
    (Path(vd.backend("spare").url[len("file://"):]) / "p.txt").write_bytes(data[:-1] + b"Y")
    with pytest.raises(IntegrityError, match="/p.txt.*local:p.txt.*spare:p.txt"):
        vd.cat("/p.txt")


def test_link_registers_without_copying_and_hashes_lazily(vd: VDir) -> None:
    store = vd.backend("local")
    store.put_bytes("existing/report.csv", b"a,b\n1,2\n")
    url = store.url.rstrip("/") + "/existing/report.csv"
    vd.link(url, "/linked/report.csv")
    assert vd.stat("/linked/report.csv").hash is None
    assert vd.cat("/linked/report.csv") == b"a,b\n1,2\n"
    assert vd.stat("/linked/report.csv").hash == h(b"a,b\n1,2\n")  # learned on first full read
    assert objects_of(vd) == ["existing/report.csv"]  # nothing was copied
    vd.rm("/linked/report.csv")
    assert objects_of(vd) == ["existing/report.csv"]  # a linked object is not ours to delete
    with pytest.raises(NotFound, match="no registered backend covers"):
        vd.link("s3://nobody/x", "/y")


def test_import_prefix(vd: VDir) -> None:
    store = vd.backend("spare")
    for i in range(5):
        store.put_bytes(f"raw/day{i}/log.txt", f"log {i}".encode())
    vd.import_prefix(store.url.rstrip("/") + "/raw", "/logs", compute_hash=True)
    assert sorted(i.path for i in vd.ls("/logs", recursive=True) if i.type == "file") == [f"/logs/day{i}/log.txt" for i in range(5)]
    assert vd.stat("/logs/day3/log.txt").hash == h(b"log 3")


def test_du(vd: VDir) -> None:
    vd.put(b"12345", "/d/a")
    vd.put(b"123", "/d/e/b")
    u = vd.du("/d")
    assert (u.files, u.dirs, u.bytes, u.per_backend) == (2, 1, 8, {"local": 8})


class _GatedReader(io.RawIOBase):
    """Yields its data only after every racer has looked the path up."""

    def __init__(self, data: bytes, gate: threading.Barrier) -> None:
        self.data, self.gate, self.started = data, gate, False

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        if not self.started:
            self.started = True
            self.gate.wait(timeout=30)
            return self.data
        return b""


@pytest.mark.parametrize("existing", [False, True])
def test_two_writers_racing_one_wins_nothing_mixed(vd: VDir, existing: bool) -> None:
    if existing:
        vd.put(b"original", "/race")
    gate = threading.Barrier(2)
    results: dict[int, object] = {}
    payloads = {0: b"A" * 50_000, 1: b"B" * 60_000}

    def writer(i: int) -> None:
        try:
            results[i] = vd.write_stream("/race", _GatedReader(payloads[i], gate), overwrite=True)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001
            results[i] = exc

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    losers = [r for r in results.values() if isinstance(r, Exception)]
    assert len(losers) == 1 and isinstance(losers[0], Conflict), results
    winner = next(i for i, r in results.items() if not isinstance(r, Exception))
    assert vd.cat("/race") == payloads[winner]
    report = fsck(vd)
    assert report.problems == []  # the loser's object was removed, the old one too

