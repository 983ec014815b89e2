"""The mount's write-back journal loses nothing and brings nothing back (issue 10, items 6, 14
and the mount side of 15), on real FUSE mounts:

* a file removed (or renamed) in the mount while its upload is pending is never brought back
  by a later mount; a replay never writes where the catalog moved on (removed, replaced, its
  directory gone), parks such a record once and says so;
* after a ``kill -9`` with an upload pending on a slow or failing backend (S3 on moto behind the
  fault proxy), ``vdir mount`` on the same (dead) mount point works at once, lists and serves the
  pending file from the cache, accepts a further write, and stores the file in the background;
* a full backend reaches the application as ``ENOSPC``.
"""

from __future__ import annotations

import errno
import itertools
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import vdir
from tests.faultproxy import FaultProxy
from tests.helpers import tmpfs
from tests.mounts import World, force_unmount, fuse_usable, mounted, wait_for
from tests.servers.s3 import S3Server
from vdir.core import VDir
from vdir.fuse.mount import FSTYPE, is_mounted
from vdir.hashing import hash_bytes

pytestmark = [pytest.mark.fuse]
_prefixes = itertools.count(1)
UPLOADS = "PUT "
"""Request lines of S3 uploads (PutObject, UploadPart)."""


@pytest.fixture(autouse=True)
def _fuse_required() -> None:
    reason = fuse_usable()
    if reason is not None:
        pytest.fail(f"real FUSE mounts are not possible here: {reason}")


def _connect(w: World) -> VDir:
    return vdir.connect(str(w.cli.home / ".config" / "vdir" / "config.yaml"))


@pytest.fixture
def proxy(moto_s3: S3Server) -> Iterator[FaultProxy]:
    with FaultProxy(("127.0.0.1", int(moto_s3.endpoint.rsplit(":", 1)[1]))) as p:
        yield p


@pytest.fixture
def s3(world: World, moto_s3: S3Server, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:  # noqa: F811
    """``world`` whose default backend is S3 (moto) behind the fault proxy."""
    keys = {"AWS_ACCESS_KEY_ID": moto_s3.access_key, "AWS_SECRET_ACCESS_KEY": moto_s3.secret_key}
    for k, v in keys.items():
        monkeypatch.setenv(k, v)
    world.cli.env.update(keys)
    world.cli.run("backend", "add", "aws", f"s3://{moto_s3.bucket}/noloss-{os.getpid()}-{next(_prefixes)}",
                  "--endpoint", proxy.url, "--region", "us-east-1", "--option", "max_attempts=1",
                  "--option", "connect_timeout=2", "--option", "read_timeout=5", check=True)
    config = world.cli.home / ".config" / "vdir" / "config.yaml"
    config.write_text(config.read_text().replace("default_backend: local", "default_backend: aws"))
    vd = _connect(world)
    try:
        yield World(world.cli, vd, world.tmp)
    finally:
        vd.close()


def _write_pending(path: Path, data: bytes, append: bool = False) -> None:
    """Write ``data`` through the mount while uploads fail: the close reports the failure, the
    content stays pending in the mount."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC), 0o644)
    try:
        os.write(fd, data)
    finally:
        try:
            os.close(fd)
        except OSError as exc:
            assert exc.errno != errno.ENOENT
        else:
            raise AssertionError(f"{path}: closing did not report the failed upload")


def _kill(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)


def _umount(w: World, mnt: Path) -> None:
    """``vdir umount`` (waits for the mount process, so its cache directory is free again)."""
    if is_mounted(mnt) and w.cli.run("umount", str(mnt)).returncode != 0:
        force_unmount(mnt, None)


def _dead(path: Path) -> bool:
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno == errno.ENOTCONN
    return False


# -- item 6: the mount never brings deleted files back ----------------------------------------------
def test_removed_file_never_comes_back(world: World) -> None:  # noqa: F811
    """The issue's reproduction: touch a 250-byte name, truncate -s 123, rm, umount, mount."""
    name = "n" * 246 + ".txt"
    cache = world.tmp / "cache"
    with mounted(world.cli, world.tmp / "mnt", cache_dir=cache) as m:
        f = m.path / name
        subprocess.run(["touch", str(f)], check=True)
        truncated = subprocess.run(["truncate", "-s", "123", str(f)], capture_output=True, text=True)
        subprocess.run(["rm", str(f)], check=True)
        assert not f.exists()
    with mounted(world.cli, world.tmp / "mnt", cache_dir=cache) as m:
        assert name not in os.listdir(m.path)
        assert not world.vd.exists(f"/{name}")
        wait_for(lambda: not list((cache / "pending").glob("*.json")), 30, "journal settled")
        assert name not in os.listdir(m.path) and not world.vd.exists(f"/{name}")
    # names near 255 bytes store (object key naming, fixed in the core)
    assert truncated.returncode == 0, truncated.stderr


def test_unlink_and_rename_settle_pending_uploads(s3: World, proxy: FaultProxy) -> None:
    s3.vd.put(b"old e", "/e.txt")
    cache = s3.tmp / "cache"
    with mounted(s3.cli, s3.tmp / "mnt", cache_dir=cache) as m:
        proxy.respond(503, match=UPLOADS)  # the backend refuses uploads: every change stays pending
        _write_pending(m.path / "a.txt", b"removed while pending")
        _write_pending(m.path / "b.txt", b"renamed while pending")
        _write_pending(m.path / "e.txt", b"new e")
        assert (m.path / "a.txt").read_bytes() == b"removed while pending"  # served from the cache
        assert sorted(os.listdir(m.path)) == ["a.txt", "b.txt", "e.txt"]
        os.unlink(m.path / "a.txt")
        os.rename(m.path / "b.txt", m.path / "b2.txt")
        os.rename(m.path / "e.txt", m.path / "e2.txt")
        assert sorted(os.listdir(m.path)) == ["b2.txt", "e2.txt"]
        assert (m.path / "b2.txt").read_bytes() == b"renamed while pending"
        assert (m.path / "e2.txt").read_bytes() == b"new e"
        _kill(m.proc)  # the journal is all that is left
    proxy.reset()
    with mounted(s3.cli, s3.tmp / "mnt", cache_dir=cache) as m:
        wait_for(lambda: s3.vd.exists("/b2.txt") and s3.vd.cat("/e2.txt") == b"new e", 60, "pending uploads stored")
        assert s3.vd.cat("/b2.txt") == b"renamed while pending"
        assert sorted(os.listdir(m.path)) == ["b2.txt", "e2.txt"]
        assert [i.path for i in s3.vd.ls("/")] == ["/b2.txt", "/e2.txt"]
        wait_for(lambda: not list((cache / "pending").glob("*.json")), 30, "journal settled")
    assert not (cache / "parked").exists() or not list((cache / "parked").iterdir())


def test_replay_never_recreates_what_changed_elsewhere(s3: World, proxy: FaultProxy) -> None:
    for p in ("/removed.txt", "/changed.txt"):
        s3.vd.put(b"base", p)
    s3.vd.mkdir("/gone")
    cache = s3.tmp / "cache"
    mnt = s3.tmp / "mnt"
    with mounted(s3.cli, mnt, cache_dir=cache) as m:
        proxy.respond(503, match=UPLOADS)
        _write_pending(m.path / "removed.txt", b"mine 1")
        _write_pending(m.path / "changed.txt", b"mine 2")
        _write_pending(m.path / "gone" / "new.txt", b"mine 3")
        _write_pending(m.path / "taken.txt", b"mine 4")
        _kill(m.proc)
        proxy.reset()
        # meanwhile, elsewhere:
        s3.vd.rm("/removed.txt")
        s3.vd.put(b"theirs 2", "/changed.txt", force=True)
        s3.vd.rm("/gone")
        s3.vd.put(b"theirs 4", "/taken.txt")
        assert _dead(mnt)
        answer = s3.cli.run("mount", str(mnt), "--cache-dir", str(cache))  # the dead mount is cleared first
        try:
            assert answer.returncode == 0, answer.stderr
            out = answer.stdout.decode()
            assert out.count("parked:") == 2, out  # what the catalog alone shows, before serving
            for p in ("/removed.txt", "/gone/new.txt"):
                assert f"parked: {p}:" in out
            assert is_mounted(mnt, FSTYPE)
            conflicts = lambda: [i for i in s3.vd.ls("/") if i.path.startswith("/changed.txt.conflict-")]  # noqa: E731
            wait_for(conflicts, 60, "conflict copy of changed.txt")
            assert s3.vd.cat(conflicts()[0].path) == b"mine 2"
            assert s3.vd.cat("/changed.txt") == b"theirs 2"
            assert s3.vd.cat("/taken.txt") == b"theirs 4"
            assert not s3.vd.exists("/removed.txt") and not s3.vd.exists("/gone")
            assert sorted(os.listdir(mnt)) == sorted(["changed.txt", "taken.txt", conflicts()[0].name])
            parked = sorted(p.read_bytes() for p in (cache / "parked").glob("*.data"))
            assert parked == [b"mine 1", b"mine 3", b"mine 4"]  # nothing lost: moved aside
            wait_for(lambda: not list((cache / "pending").glob("*.json")), 30, "journal settled")
            log = (cache / "mount.log").read_text()
            assert log.count("/removed.txt: pending change not stored and parked") == 1  # reported once
            assert log.count("/taken.txt: pending change not stored and parked") == 1  # after comparing content
        finally:
            _umount(s3, mnt)
    with mounted(s3.cli, mnt, cache_dir=cache) as m:  # parked records are never tried again
        assert sorted(os.listdir(m.path)) == sorted(["changed.txt", "taken.txt", conflicts()[0].name])


# -- item 14: the mount always comes back -----------------------------------------------------------
def test_mount_comes_back_at_once_after_kill_with_upload_pending(s3: World, proxy: FaultProxy) -> None:
    data = os.urandom(12 * 1024 * 1024 + 5)
    cache = s3.tmp / "cache"
    mnt = s3.tmp / "mnt"
    with mounted(s3.cli, mnt, cache_dir=cache) as m:
        proxy.delay(600, match=UPLOADS)  # a backend slow enough that the upload is still going
        script = (
            "import os, sys\n"
            f"fd = os.open({str(m.path / 'big.bin')!r}, os.O_WRONLY | os.O_CREAT, 0o644)\n"
            "data = sys.stdin.buffer.read()\n"
            "for i in range(0, len(data), 1 << 20): os.write(fd, data[i:i + (1 << 20)])\n"
            "print('written', flush=True)\n"
            "os.close(fd)\n"  # commits: the upload hangs on the backend
        )
        writer = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert writer.stdin is not None and writer.stdout is not None
        writer.stdin.write(data)
        writer.stdin.close()
        assert writer.stdout.readline().strip() == b"written"
        wait_for(lambda: any(r.startswith(UPLOADS) for r in proxy.requests), 30, "upload started")
        _kill(m.proc)
        writer.kill()
        writer.wait(30)
        assert not s3.vd.exists("/big.bin")
        proxy.respond(503, match=UPLOADS)  # and now the backend refuses uploads outright
        assert _dead(mnt)
        answer = s3.cli.run("mount", str(mnt), "--cache-dir", str(cache))
        try:
            assert answer.returncode == 0, answer.stderr
            assert b"1 upload(s) left pending by an earlier mount continue in the background" in answer.stdout
            # ready while the upload cannot even happen: listed with its pending size, readable
            assert os.listdir(mnt) == ["big.bin"] and (mnt / "big.bin").stat().st_size == len(data)
            assert (mnt / "big.bin").read_bytes() == data
            assert not s3.vd.exists("/big.bin")
            _write_pending(mnt / "big.bin", b"+tail", append=True)  # a later write works
            assert (mnt / "big.bin").read_bytes() == data + b"+tail"
            proxy.reset()
            wait_for(lambda: s3.vd.exists("/big.bin") and s3.vd.stat("/big.bin").hash == hash_bytes(data + b"+tail"),
                     120, "pending file stored")
            assert s3.vd.cat("/big.bin") == data + b"+tail"
        finally:
            _umount(s3, mnt)
    assert not list((cache / "pending").glob("*.json"))


# -- item 15 (mount side): a full backend is ENOSPC, not EIO ----------------------------------------
@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "tiny") as where:
        yield where


def test_full_backend_is_enospc_through_the_mount(world: World, tiny_disk: Path) -> None:  # noqa: F811
    world.cli.run("backend", "add", "tiny", f"file://{tiny_disk}", check=True)
    config = world.cli.home / ".config" / "vdir" / "config.yaml"
    config.write_text(config.read_text().replace("default_backend: local", "default_backend: tiny"))
    with mounted(world.cli, world.tmp / "mnt") as m:
        fd = os.open(m.path / "big.bin", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.write(fd, os.urandom(3 * 1024 * 1024))  # local until committed: the write itself succeeds
            with pytest.raises(OSError) as info:
                os.fsync(fd)
            assert info.value.errno == errno.ENOSPC
        finally:
            try:
                os.close(fd)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
