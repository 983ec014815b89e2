"""Every byte handed out is verified (issue 10 item 4): ranged reads through ``VDir.open``,
fsspec, pandas/pyarrow and the FUSE mount check each block they return against the entry's
per-block hashes, fail over to a good replica, or raise ``IntegrityError`` (EIO in the mount).
A replica is damaged the way a disk does it: one flipped bit in its object file."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pandas as pd
import pytest

import vdir
from tests.mounts import fuse_usable, mounted
from tests.servers.s3 import S3Server
from tests.servers.vdirs import CLI
from vdir.admin import add_backend
from vdir.catalog.base import Replica
from vdir.core import VDir
from vdir.errors import IntegrityError
from vdir.hashing import BlockHashes, hash_bytes

MiB = 1024 * 1024


def object_file(vd: VDir, path: str, backend: str | None = None) -> Path:
    """The local file holding ``path``'s replica on ``backend`` (its first replica by default)."""
    entry = vd.entry(path)
    replica = next(r for r in entry.replicas if backend in (None, r.backend))
    return Path(vd.backend(replica.backend).url[len("file://"):]) / replica.key


def flip_bit(file: Path, offset: int) -> None:
    with open(file, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 0x10]))


def add_replica(vd: VDir, path: str, backend: str, data: bytes) -> None:
    """A second good copy on ``backend``, as placement would make it."""
    entry = vd.entry(path)
    key = path.lstrip("/")
    meta = vd.backend(backend).put_bytes(key, data)
    changed = entry.copy()
    changed.replicas.append(Replica(backend, key, len(data), hash_bytes(data), meta.etag))
    vd.catalog.update(changed, entry.version)


def ranged(vd: VDir, path: str, start: int, length: int) -> bytes:
    with vd.open(path) as f:
        f.seek(start)
        return f.read(length)


@pytest.fixture
def data() -> bytes:
    return os.urandom(5 * MiB + 123)  # six 1 MiB blocks, the last one short


BAD = 2 * MiB + 500_000
"""Offset of the flipped bit: inside block 2."""


def test_writes_record_block_hashes(vd: VDir, data: bytes) -> None:
    vd.put(data, "/f.bin")
    blocks = BlockHashes.parse(vd.entry("/f.bin").blocks, len(data))
    assert blocks is not None and blocks.block_size == MiB and blocks.count == 6
    assert all(blocks.verify(i, data[i * MiB : (i + 1) * MiB]) for i in range(6))


def test_ranged_read_of_a_flipped_bit_raises(vd: VDir, data: bytes) -> None:
    vd.put(data, "/f.bin")
    flip_bit(object_file(vd, "/f.bin"), BAD)
    with pytest.raises(IntegrityError, match="/f.bin"):
        ranged(vd, "/f.bin", BAD - 10, 100)
    with pytest.raises(IntegrityError, match="/f.bin"), vd.open("/f.bin") as f:
        f.read()  # a sequential read stops before handing out the bad block
    with vd.open("/f.bin") as f:  # reading up to the bad block is fine: those blocks verify
        assert f.read(2 * MiB) == data[: 2 * MiB]
        with pytest.raises(IntegrityError):
            f.read(1)
    # the good blocks of a partly damaged replica still read: each block is checked on its own
    assert ranged(vd, "/f.bin", 4 * MiB - 7, 3000) == data[4 * MiB - 7 : 4 * MiB + 2993]
    assert ranged(vd, "/f.bin", 5 * MiB, 123) == data[5 * MiB :]


def test_ranged_read_fails_over_to_a_good_replica(vd: VDir, data: bytes) -> None:
    vd.put(data, "/f.bin")
    add_replica(vd, "/f.bin", "spare", data)
    flip_bit(object_file(vd, "/f.bin", "local"), BAD)
    assert ranged(vd, "/f.bin", BAD - 10, 100) == data[BAD - 10 : BAD + 90]
    with vd.open("/f.bin") as f:
        assert f.read() == data
    # both copies damaged, in different blocks: each block still comes from a copy where it is good
    flip_bit(object_file(vd, "/f.bin", "spare"), 4 * MiB + 1)
    with vd.open("/f.bin") as f:
        assert f.read() == data
    flip_bit(object_file(vd, "/f.bin", "spare"), BAD + 1)  # now block 2 is bad everywhere
    with pytest.raises(IntegrityError, match=r"/f.bin.*local:f.bin.*spare:f.bin"):
        ranged(vd, "/f.bin", BAD, 1)


def test_fsspec_cat_file_range_is_verified(vd: VDir, data: bytes) -> None:
    vd.put(data, "/f.bin")
    flip_bit(object_file(vd, "/f.bin"), BAD)
    fs = fsspec.filesystem("vdir", vd=vd, skip_instance_cache=True)
    assert fs.cat_file("/f.bin", start=10, end=1000) == data[10:1000]
    with pytest.raises(IntegrityError, match="/f.bin"):
        fs.cat_file("/f.bin", start=BAD - 1, end=BAD + 1)


def test_pandas_read_parquet_is_verified(vd: VDir) -> None:
    marker = 0x1122334455667788
    df = pd.DataFrame({"x": list(range(300_000)) + [marker]})
    opts = {"vd": vd, "skip_instance_cache": True}
    df.to_parquet("vdir:///frames/df.parquet", storage_options=opts, compression=None,
                  use_dictionary=False, write_statistics=False, index=False)
    file = object_file(vd, "/frames/df.parquet")
    offset = file.read_bytes().index(marker.to_bytes(8, "little"))
    flip_bit(file, offset)
    with pytest.raises(IntegrityError, match="/frames/df.parquet"):
        pd.read_parquet("vdir:///frames/df.parquet", storage_options=opts)
    # with a good copy elsewhere, it reads back exactly
    clean = bytearray(file.read_bytes())
    clean[offset] ^= 0x10
    assert hash_bytes(bytes(clean)) == vd.entry("/frames/df.parquet").hash
    add_replica(vd, "/frames/df.parquet", "spare", bytes(clean))
    assert pd.read_parquet("vdir:///frames/df.parquet", storage_options=opts).equals(df)


def test_entry_without_block_hashes_is_verified_and_upgraded(vd: VDir, data: bytes) -> None:
    vd.put(data, "/old.bin")
    written = vd.entry("/old.bin")
    recorded = written.blocks
    vd.catalog.update(written.copy(blocks=None), written.version)  # as an older vdir wrote it
    assert vd.entry("/old.bin").blocks is None
    assert ranged(vd, "/old.bin", 3 * MiB + 5, 1000) == data[3 * MiB + 5 : 3 * MiB + 1005]
    assert vd.entry("/old.bin").blocks == recorded  # learned by that first ranged read

    # damaged and without block hashes: even a range far from the damage is refused, since
    # only the whole-content hash can vouch for it
    vd.put(data, "/old2.bin")
    e = vd.entry("/old2.bin")
    vd.catalog.update(e.copy(blocks=None), e.version)
    flip_bit(object_file(vd, "/old2.bin"), BAD)
    with pytest.raises(IntegrityError, match="/old2.bin"):
        ranged(vd, "/old2.bin", 10, 10)
    assert vd.entry("/old2.bin").blocks is None


def test_linked_object_gets_hash_and_blocks_on_first_ranged_read(vd: VDir, data: bytes) -> None:
    store = vd.backend("local")
    store.put_bytes("existing/big.bin", data)
    vd.link(store.url.rstrip("/") + "/existing/big.bin", "/linked.bin")
    assert vd.entry("/linked.bin").hash is None and vd.entry("/linked.bin").blocks is None
    assert ranged(vd, "/linked.bin", 4 * MiB, 10) == data[4 * MiB : 4 * MiB + 10]
    entry = vd.entry("/linked.bin")
    assert entry.hash == hash_bytes(data)
    assert BlockHashes.parse(entry.blocks, len(data)) is not None
    flip_bit(object_file(vd, "/linked.bin"), BAD)
    with pytest.raises(IntegrityError):
        ranged(vd, "/linked.bin", BAD, 1)


def test_s3_ranged_reads_are_verified(vd: VDir, data: bytes, moto_s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", moto_s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", moto_s3.secret_key)
    add_backend(vd, "aws", f"s3://{moto_s3.bucket}/verified-{os.getpid()}", endpoint=moto_s3.endpoint,
                region="us-east-1", cost=0.001, check=False)
    vd.put(data, "/s.bin", backend="aws")
    key = vd.entry("/s.bin").replicas[0].key
    bad = bytearray(data)
    bad[BAD] ^= 0x10
    vd.backend("aws").put_bytes(key, bytes(bad))  # the object's bytes rot in the bucket
    assert ranged(vd, "/s.bin", 3, MiB) == data[3 : MiB + 3]  # blocks 0 and 1 are intact
    with pytest.raises(IntegrityError, match="/s.bin"):
        ranged(vd, "/s.bin", BAD, 10)
    with pytest.raises(IntegrityError, match="/s.bin"), vd.open("/s.bin") as f:
        f.read()


# -- the mount -------------------------------------------------------------------------------

@pytest.fixture
def world(cli: CLI, tmp_path: Path) -> Iterator[tuple[CLI, VDir, Path]]:
    reason = fuse_usable()
    if reason is not None:
        pytest.fail(f"real FUSE mounts are not possible here: {reason}")
    cli.run("init", check=True)
    remote = tmp_path / "remote"
    remote.mkdir()
    # a folder posing as a cloud, so the mount keeps its blocks in the on-disk read cache
    cli.run("backend", "add", "remote", f"file://{remote}", "--cloud", "sim", "--no-check", check=True)
    vd = vdir.connect(str(cli.home / ".config" / "vdir" / "config.yaml"))
    try:
        yield cli, vd, tmp_path
    finally:
        vd.close()


@pytest.mark.fuse
def test_mount_pread_of_a_flipped_bit_is_eio_and_never_cached(world: tuple[CLI, VDir, Path]) -> None:
    cli, vd, tmp = world
    data = os.urandom(9 * MiB)
    vd.put(data, "/m.bin", backend="remote")
    file = object_file(vd, "/m.bin")
    bad = 8 * MiB + 300_000  # in the mount's third 4 MiB block
    flip_bit(file, bad)
    with mounted(cli, tmp / "mnt") as m:
        fd = os.open(m.path / "m.bin", os.O_RDONLY)
        try:
            assert os.pread(fd, 4096, MiB) == data[MiB : MiB + 4096]  # a good block
            with pytest.raises(OSError) as err:
                os.pread(fd, 100, bad - 50)
            assert err.value.errno == errno.EIO
        finally:
            os.close(fd)
        flip_bit(file, bad)  # repaired: the next read fetches the block again, nothing bad was cached
        fd = os.open(m.path / "m.bin", os.O_RDONLY)
        try:
            assert os.pread(fd, 100, bad - 50) == data[bad - 50 : bad + 50]
        finally:
            os.close(fd)
