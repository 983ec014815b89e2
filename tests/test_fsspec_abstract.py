"""``vdir://`` against fsspec's own abstract test suite, plus the behaviours pandas, dask and
fsspec's wrappers rely on (append, exclusive create, copy, transactions, read_block, blockcache),
and the core operations behind them (``VDir.open`` "ab"/"xb", ``VDir.copy``).

The suite is wired the way fsspec wires its memory filesystem
(``fsspec/implementations/tests/memory/``): a fixtures class giving ``fs``, ``fs_join`` and
``fs_path``, mixed into each abstract test class."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import fsspec.utils
import pandas as pd
import pytest
from fsspec.tests.abstract import AbstractFixtures
from fsspec.tests.abstract.copy import AbstractCopyTests
from fsspec.tests.abstract.get import AbstractGetTests
from fsspec.tests.abstract.open import AbstractOpenTests
from fsspec.tests.abstract.pipe import AbstractPipeTests
from fsspec.tests.abstract.put import AbstractPutTests

from tests.servers.s3 import S3Server
from vdir.admin import add_backend
from vdir.catalog.base import open_catalog
from vdir.core import VDir
from vdir.errors import AlreadyExists, Conflict, IntegrityError, IsADirectory

_prefixes = itertools.count(1)


def vdir_fs(vd: VDir) -> Any:
    return fsspec.filesystem("vdir", vd=vd, skip_instance_cache=True)


class VDirFixtures(AbstractFixtures):  # type: ignore[misc]
    @pytest.fixture
    def fs(self, vd: VDir) -> Any:
        return vdir_fs(vd)

    @pytest.fixture
    def fs_join(self) -> Any:
        return lambda *parts: "/".join(parts)

    @pytest.fixture
    def fs_path(self) -> str:
        return ""


class TestVDirCopy(AbstractCopyTests, VDirFixtures):  # type: ignore[misc]
    pass


@pytest.fixture
def vd_s3(tmp_path: Path, moto_s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[VDir]:
    """A VDir whose one backend is an S3 prefix on the moto server (copies are server-side)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", moto_s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", moto_s3.secret_key)
    vd = VDir(open_catalog(f"sqlite:///{tmp_path / 'catalog.db'}"), default_backend="aws")
    add_backend(vd, "aws", f"s3://{moto_s3.bucket}/fsspec-{os.getpid()}-{next(_prefixes)}",
                endpoint=moto_s3.endpoint, region="us-east-1", check=False)
    try:
        yield vd
    finally:
        vd.close()


class TestVDirCopyOnS3(AbstractCopyTests, VDirFixtures):  # type: ignore[misc]
    """The copy suite again with an S3 backend, where ``cp`` is a server-side copy."""

    @pytest.fixture
    def fs(self, vd_s3: VDir) -> Any:
        return vdir_fs(vd_s3)


class TestVDirGet(AbstractGetTests, VDirFixtures):  # type: ignore[misc]
    pass


class TestVDirPut(AbstractPutTests, VDirFixtures):  # type: ignore[misc]
    pass


class TestVDirOpen(AbstractOpenTests, VDirFixtures):  # type: ignore[misc]
    pass


class TestVDirPipe(AbstractPipeTests, VDirFixtures):  # type: ignore[misc]
    pass


# -- open modes ------------------------------------------------------------------------------

def test_append_mode_appends(vd: VDir) -> None:
    fs = vdir_fs(vd)
    fs.pipe("/log.txt", b"first\n")
    with fs.open("/log.txt", "ab") as f:
        f.write(b"second\n")
        assert f.tell() == len(b"first\nsecond\n")
    assert fs.cat("/log.txt") == b"first\nsecond\n"
    assert vd.stat("/log.txt").hash is not None
    with fs.open("/log.txt", "a") as t:  # text append too
        t.write("third\n")
    assert vd.cat("/log.txt") == b"first\nsecond\nthird\n"
    with fs.open("/new.txt", "ab") as f:  # appending to a missing file creates it
        f.write(b"only")
    assert vd.cat("/new.txt") == b"only"


def test_core_append_is_compare_and_set(vd: VDir) -> None:
    vd.put(b"old", "/f")
    appender = vd.open("/f", "ab")
    appender.write(b"+tail")
    vd.put(b"replaced meanwhile", "/f", force=True)
    with pytest.raises(Conflict):
        appender.close()
    assert vd.cat("/f") == b"replaced meanwhile"
    with vd.open("/f", "ab") as f:
        f.write(b"!")
    assert vd.cat("/f") == b"replaced meanwhile!"
    appender = vd.open("/f", "ab")
    appender.write(b"never")
    vd.rm("/f")
    with pytest.raises(Conflict):
        appender.close()
    assert not vd.exists("/f")  # a removed file is not brought back


def test_core_append_of_a_corrupt_file_fails_and_keeps_it(vd: VDir, tmp_path: Path) -> None:
    vd.put(b"0123456789", "/f")
    obj = tmp_path / "objects" / vd.stat("/f").replicas[0]["key"]
    obj.write_bytes(b"0123456780")
    with pytest.raises(IntegrityError):
        with vd.open("/f", "ab") as f:
            f.write(b"x")
    assert vd.stat("/f").size == 10 and obj.read_bytes() == b"0123456780"


def test_pandas_to_csv_append_keeps_earlier_rows(vd: VDir) -> None:
    opts = {"vd": vd, "skip_instance_cache": True}
    pd.DataFrame({"x": [1, 2]}).to_csv("vdir:///t.csv", index=False, storage_options=opts)
    pd.DataFrame({"x": [3]}).to_csv("vdir:///t.csv", mode="a", header=False, index=False, storage_options=opts)
    assert pd.read_csv("vdir:///t.csv", storage_options=opts)["x"].tolist() == [1, 2, 3]


def test_pandas_parquet_round_trip(vd: VDir) -> None:
    pytest.importorskip("pyarrow")
    opts = {"vd": vd, "skip_instance_cache": True}
    df = pd.DataFrame({"x": list(range(1000)), "name": [f"n{i}" for i in range(1000)]})
    df.to_parquet("vdir:///p/df.parquet", storage_options=opts)
    assert pd.read_parquet("vdir:///p/df.parquet", storage_options=opts).equals(df)


def test_exclusive_create_refuses_existing_files(vd: VDir) -> None:
    fs = vdir_fs(vd)
    fs.pipe("/f", b"keep")
    with pytest.raises(FileExistsError):
        fs.open("/f", "xb")
    with pytest.raises(FileExistsError):
        fs.pipe_file("/f", b"other", mode="create")
    assert vd.cat("/f") == b"keep"


def test_exclusive_create_is_atomic_at_commit(vd: VDir, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two "xb" writers of one new path: the second's check at open passes, the first commits
    while the second uploads; the second's commit is refused with FileExistsError."""
    first = vd.open("/race", "xb")
    second = vd.open("/race", "xb")
    first.write(b"first")
    second.write(b"second")
    store = vd.backend("local")
    real_put = store.put

    def put_racing_first(*args: Any, **kwargs: Any) -> Any:
        monkeypatch.setattr(store, "put", real_put)
        first.close()  # the other writer commits while this upload is under way
        return real_put(*args, **kwargs)

    monkeypatch.setattr(store, "put", put_racing_first)
    with pytest.raises(FileExistsError):
        second.close()
    assert vd.cat("/race") == b"first"
    assert [i.path for i in vd.ls("/")] == ["/race"]


@pytest.mark.parametrize("mode", ["r+b", "zb", "wab", "rw", "+"])
def test_unknown_open_modes_raise_value_error(vd: VDir, mode: str) -> None:
    fs = vdir_fs(vd)
    fs.pipe("/f", b"data")
    with pytest.raises(ValueError):
        fs.open("/f", mode)
    with pytest.raises(ValueError):
        vd.open("/f", mode)
    assert vd.cat("/f") == b"data"


# -- namespace ---------------------------------------------------------------------------------

def test_recursive_cp(vd: VDir) -> None:
    fs = vdir_fs(vd)
    fs.pipe({"/src/a": b"A", "/src/sub/b": b"B"})
    fs.cp("/src", "/dst", recursive=True)
    assert fs.cat("/dst/a") == b"A" and fs.cat("/dst/sub/b") == b"B"
    assert vd.stat("/dst/sub/b").hash == vd.stat("/src/sub/b").hash
    fs.copy(["/src/a", "/dst/a"], "/list/")
    assert fs.cat("/list/a") == b"A"
    keys = {r["key"] for p in ("/src/a", "/dst/a") for r in vd.stat(p).replicas}
    assert len(keys) == 2  # each copy has its own object


def test_rmdir_refuses_files_and_non_empty_dirs(vd: VDir) -> None:
    fs = vdir_fs(vd)
    fs.pipe("/d/f", b"x")
    with pytest.raises(NotADirectoryError):
        fs.rmdir("/d/f")
    with pytest.raises(OSError):
        fs.rmdir("/d")
    assert fs.cat("/d/f") == b"x"
    fs.rm("/d/f")
    fs.rmdir("/d")
    assert not fs.exists("/d")


def test_rm_and_mv_take_globs_and_lists(vd: VDir) -> None:
    fs = vdir_fs(vd)
    fs.pipe({"/d/a.csv": b"1", "/d/b.csv": b"2", "/d/c.txt": b"3", "/d/e.txt": b"4", "/x": b"5", "/y": b"6"})
    fs.rm("/d/*.csv")
    assert fs.ls("/d", detail=False) == ["/d/c.txt", "/d/e.txt"]
    fs.mv("/d/*.txt", "/t/")
    assert fs.ls("/t", detail=False) == ["/t/c.txt", "/t/e.txt"] and fs.ls("/d", detail=False) == []
    fs.mv(["/x", "/y"], "/t/")
    assert fs.cat("/t/x") == b"5" and fs.cat("/t/y") == b"6" and not fs.exists("/x")
    fs.rm(["/t/x", "/t/y"])
    assert fs.ls("/t", detail=False) == ["/t/c.txt", "/t/e.txt"]
    with pytest.raises(FileNotFoundError):
        fs.rm("/d/*.nothing")
    fs.rm("/t", recursive=True)
    assert not fs.exists("/t")


def test_pipe_refuses_str(vd: VDir) -> None:
    fs = vdir_fs(vd)
    with pytest.raises(TypeError):
        fs.pipe_file("/s", "not bytes")
    with pytest.raises(TypeError):
        fs.pipe("/s", "not bytes")
    assert not fs.exists("/s")


def test_transaction_commits_or_discards(vd: VDir) -> None:
    fs = vdir_fs(vd)
    with fs.transaction:
        with fs.open("/tx/a", "wb") as f:
            f.write(b"A")
        fs.pipe_file("/tx/b", b"B")
        assert not vd.exists("/tx/a") and not vd.exists("/tx/b")
    assert vd.cat("/tx/a") == b"A" and vd.cat("/tx/b") == b"B"
    with pytest.raises(RuntimeError):
        with fs.transaction:
            with fs.open("/tx/a", "wb") as f:
                f.write(b"changed")
            with fs.open("/tx/c", "wb") as f:
                f.write(b"C")
            raise RuntimeError("abandon")
    assert vd.cat("/tx/a") == b"A" and not vd.exists("/tx/c")
    fs.pipe_file("/tx/d", b"after")  # the filesystem is out of the transaction again
    assert vd.cat("/tx/d") == b"after"


# -- reading -----------------------------------------------------------------------------------

def test_file_objects_have_size_and_tell(vd: VDir) -> None:
    fs = vdir_fs(vd)
    fs.pipe("/f", b"0123456789")
    with fs.open("/f", "rb") as f:
        assert f.size == 10
        assert f.read(3) == b"012" and f.tell() == 3
        f.seek(-2, os.SEEK_END)
        assert f.tell() == 8 and f.read() == b"89"
    with fs.open("/g", "wb") as w:
        w.write(b"abc")
        assert w.tell() == 3


def test_read_block(vd: VDir) -> None:
    fs = vdir_fs(vd)
    fs.pipe("/rows.csv", b"Alice, 100\nBob, 200\nCharlie, 300")
    assert fs.read_block("/rows.csv", 0, 13, delimiter=b"\n") == b"Alice, 100\nBob, 200\n"
    assert fs.read_block("/rows.csv", 10, 10, delimiter=b"\n") == b"Bob, 200\nCharlie, 300"
    assert fs.read_block("/rows.csv", 4, 6) == b"e, 100"
    with fs.open("/rows.csv", "rb") as f:
        assert fsspec.utils.read_block(f, 11, None, delimiter=b"\n") == b"Charlie, 300"


def test_blockcache_wrapper(vd: VDir, tmp_path: Path) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    vd.put(data, "/big.bin")
    cached = fsspec.filesystem("blockcache", target_protocol="vdir", target_options={"vd": vd},
                               cache_storage=str(tmp_path / "blocks"), skip_instance_cache=True)
    with cached.open("/big.bin", "rb") as f:
        assert f.size == len(data)
        f.seek(300_000)
        assert f.read(1000) == data[300_000:301_000]
        f.seek(5)
        assert f.read(10) == data[5:15]
    assert cached.cat("/big.bin") == data
    assert any((tmp_path / "blocks").iterdir())
    with cached.open("/big.bin", "rb") as f:  # second open: from the cache files
        f.seek(300_500)
        assert f.read(100) == data[300_500:300_600]


# -- VDir.copy ---------------------------------------------------------------------------------

def test_core_copy_file_and_tree(vd: VDir) -> None:
    vd.put(b"one", "/src/a")
    vd.put(b"two", "/src/sub/b")
    vd.symlink("a", "/src/link")
    copied = vd.copy("/src/a", "/c")
    assert vd.cat("/c") == b"one" and copied[0].hash == vd.stat("/src/a").hash
    assert vd.stat("/c").replicas[0]["key"] != vd.stat("/src/a").replicas[0]["key"]
    with pytest.raises(AlreadyExists):
        vd.copy("/src/sub/b", "/c")
    vd.copy("/src/sub/b", "/c", force=True)
    assert vd.cat("/c") == b"two"
    with pytest.raises(IsADirectory):
        vd.copy("/src", "/tree")
    vd.copy("/src", "/tree", recursive=True)
    assert vd.cat("/tree/a") == b"one" and vd.cat("/tree/sub/b") == b"two" and vd.readlink("/tree/link") == "a"
    vd.mkdir("/into")
    vd.copy("/src", "/into", recursive=True)  # an existing directory: copied inside it, as cp -r does
    assert vd.cat("/into/src/sub/b") == b"two"
    vd.rm("/src", recursive=True)  # the copies own their objects
    assert vd.cat("/tree/a") == b"one" and vd.cat("/c") == b"two"


def test_core_copy_across_backends_is_verified(vd: VDir, tmp_path: Path) -> None:
    vd.put(b"0123456789", "/a")
    vd.copy("/a", "/b", backend="spare")
    b = vd.stat("/b")
    assert [r["backend"] for r in b.replicas] == ["spare"] and b.hash == vd.stat("/a").hash
    assert vd.cat("/b") == b"0123456789"
    (tmp_path / "objects" / vd.stat("/a").replicas[0]["key"]).write_bytes(b"0123456780")
    with pytest.raises(IntegrityError):
        vd.copy("/a", "/c", backend="spare")
    assert not vd.exists("/c")
    assert sorted(p.name for p in (tmp_path / "spare").rglob("*") if p.is_file()) == \
        sorted([Path(b.replicas[0]["key"]).name])


def test_core_copy_is_server_side_on_s3(vd_s3: VDir, monkeypatch: pytest.MonkeyPatch) -> None:
    vd = vd_s3
    data = os.urandom(3 * 1024 * 1024)
    vd.put(data, "/big")
    store = vd.backend("aws")

    def no_reads(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("copy read the bytes through vdir")

    monkeypatch.setattr(store, "get", no_reads)
    vd.copy("/big", "/dir/copy")
    monkeypatch.undo()
    assert vd.cat("/dir/copy") == data and vd.stat("/dir/copy").hash == vd.stat("/big").hash
    assert vd.stat("/dir/copy").replicas[0]["key"] != vd.stat("/big").replicas[0]["key"]
    with vdir_fs(vd).open("/big", "ab") as f:  # append on S3: old object streamed back, new one committed
        f.write(b"tail")
    assert vd.cat("/big") == data + b"tail" and vd.cat("/dir/copy") == data
