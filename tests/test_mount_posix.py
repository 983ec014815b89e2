"""The mount behaves like a local disk (issue 13, items 1, 3 and 4), on a real mount: special
files (FIFOs, device nodes, unix sockets), directory times and link counts, ctime and atime,
an open file that outlives its unlink, and paths longer than PATH_MAX."""

from __future__ import annotations

import os
import re
import socket
import stat
import threading
from pathlib import Path

import pytest

from tests.mounts import World, fuse_usable, mounted, wait_for
from vdir.core import VDir

pytestmark = [pytest.mark.fuse]

BOUND = 2 * 1.0 + 1.0
"""Seconds a change made elsewhere may take to show in the mount: 2 x attr_timeout, plus slack."""


@pytest.fixture(autouse=True)
def _fuse_required() -> None:
    reason = fuse_usable()
    if reason is not None:
        pytest.fail(f"real FUSE mounts are not possible here: {reason}")


def objects(vd: VDir) -> list[str]:
    """Every object key on the world's one backend."""
    return sorted(o.key for o in vd.backend("local").list(""))


# -- special files -------------------------------------------------------------------------------


def test_fifo_passes_data_through_the_mount(mnt: Path, world: World) -> None:
    fifo = mnt / "pipe"
    os.mkfifo(fifo, 0o640)
    st = os.stat(fifo)
    assert stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o640
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    with open(fifo, "wb") as w:
        w.write(b"through the pipe\n" * 1000)
    reader.join(30)
    assert got == [b"through the pipe\n" * 1000]
    entry = world.vd.entry("/pipe")
    assert entry.type == "fifo" and entry.replicas == [] and entry.size == 0
    assert objects(world.vd) == []  # no bytes on any backend


def test_device_nodes_show_their_numbers(mnt: Path, world: World) -> None:
    os.mknod(mnt / "null", 0o644 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(mnt / "disk", 0o640 | stat.S_IFBLK, os.makedev(8, 17))
    null, disk = os.stat(mnt / "null"), os.stat(mnt / "disk")
    assert stat.S_ISCHR(null.st_mode) and (os.major(null.st_rdev), os.minor(null.st_rdev)) == (1, 3)
    assert stat.S_ISBLK(disk.st_mode) and disk.st_rdev == os.makedev(8, 17)
    # FUSE mounts are nodev (as the kernel and fusermount make them): the node is kept and
    # shown, opening it is refused (documented in docs/mount.md)
    with pytest.raises(PermissionError):
        open(mnt / "null", "rb").close()
    assert world.vd.entry("/null").rdev == os.makedev(1, 3) and objects(world.vd) == []
    listing = world.cli.run("ls", "-l", "/", check=True).stdout.decode().splitlines()
    line = {ln.split()[-1]: ln for ln in listing}
    assert line["null"].startswith("crw-r--r--") and " 1, 3 " in line["null"]
    assert line["disk"].startswith("brw-r-----") and " 8, 17 " in line["disk"]
    out = world.cli.run("stat", "/disk", check=True).stdout.decode()
    assert "block special file" in out and "8, 17" in out
    # and as ls -l on the mount shows them
    ls = os.popen(f"ls -l {mnt}").read()
    assert re.search(r"^crw-r--r-- .* 1, +3 .*null$", ls, re.M) and re.search(r"^brw-r----- .* 8, 17 .*disk$", ls, re.M)


def test_unix_socket_bound_in_the_mount_accepts_connections(mnt: Path, world: World) -> None:
    os.chdir(mnt)  # the socket path must be short (sun_path is 108 bytes)
    try:
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind("app.sock")
        server.listen(1)
        try:
            assert stat.S_ISSOCK(os.stat(mnt / "app.sock").st_mode)
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.connect(str(mnt / "app.sock"))
            conn, _ = server.accept()
            client.sendall(b"ping")
            assert conn.recv(4) == b"ping"
            conn.sendall(b"pong")
            assert client.recv(4) == b"pong"
            conn.close()
            client.close()
        finally:
            server.close()
    finally:
        os.chdir("/")
    assert world.vd.entry("/app.sock").type == "sock"
    listing = world.cli.run("ls", "-l", "/", check=True).stdout.decode()
    assert any(ln.startswith("s") and ln.endswith("app.sock") for ln in listing.splitlines())
    os.unlink(mnt / "app.sock")
    assert not world.vd.exists("/app.sock")


def test_get_recreates_special_files(mnt: Path, world: World) -> None:
    (mnt / "d").mkdir()
    os.mkfifo(mnt / "d" / "pipe", 0o600)
    os.mknod(mnt / "d" / "zero", 0o644 | stat.S_IFCHR, os.makedev(1, 5))
    os.mknod(mnt / "d" / "sock", 0o755 | stat.S_IFSOCK)
    (mnt / "d" / "f.txt").write_text("file")
    dest = world.tmp / "out"
    proc = world.cli.run("get", "-r", "/d", str(dest), check=True)
    assert "socket not copied" in proc.stderr.decode()
    assert stat.S_ISFIFO(os.lstat(dest / "pipe").st_mode) and stat.S_IMODE(os.lstat(dest / "pipe").st_mode) == 0o600
    zero = os.lstat(dest / "zero")
    assert stat.S_ISCHR(zero.st_mode) and zero.st_rdev == os.makedev(1, 5)  # the tests run as root
    assert not os.path.lexists(dest / "sock")
    assert (dest / "f.txt").read_text() == "file"
    # and a special file copied inside the catalog stays one
    world.cli.run("cp", "/d/zero", "/zero2", check=True)
    assert world.vd.entry("/zero2").rdev == os.makedev(1, 5)


# -- times and counts --------------------------------------------------------------------------


def test_directory_times_and_link_counts(mnt: Path, world: World) -> None:
    d = mnt / "d"
    d.mkdir()
    old = 1_000_000_000
    steps = [
        ("create", lambda: (d / "f").write_text("x")),
        ("mkdir", lambda: (d / "sub").mkdir()),
        ("mkfifo", lambda: os.mkfifo(d / "p")),
        ("symlink", lambda: os.symlink("f", d / "ln")),
        ("rename within", lambda: os.rename(d / "f", d / "g")),
        ("unlink", lambda: os.unlink(d / "g")),
        ("rmdir", lambda: (d / "sub").rmdir()),
    ]
    for what, step in steps:
        os.utime(d, (old, old))
        assert os.stat(d).st_mtime == old, what
        step()
        st = os.stat(d)
        assert st.st_mtime > old and st.st_ctime > old, what
    # st_nlink of a directory: 2 + its subdirectories (files do not count)
    (d / "a").mkdir()
    (d / "b").mkdir()
    (d / "b" / "c").mkdir()
    (d / "file").write_text("f")
    assert os.stat(d).st_nlink == 4 and os.stat(d / "b").st_nlink == 3 and os.stat(d / "a").st_nlink == 2
    os.rename(d / "b" / "c", d / "c")  # a move across directories moves the counts
    assert os.stat(d).st_nlink == 5 and os.stat(d / "b").st_nlink == 2
    (d / "a").rmdir()
    assert os.stat(d).st_nlink == 4
    # find uses st_nlink to skip stat calls (-noleaf is not needed): it still sees everything
    found = sorted(os.popen(f"find {d} -type d").read().split())
    assert found == sorted(str(p) for p in (d, d / "b", d / "c"))


def test_ctime_moves_on_every_metadata_change(mnt: Path, world: World) -> None:
    f = mnt / "f.txt"
    f.write_text("content")
    changes = [
        ("chmod", lambda: os.chmod(f, 0o600)),
        ("chown", lambda: os.chown(f, 1234, 5678)),
        ("utimens", lambda: os.utime(f, (5, 5))),
        ("setxattr", lambda: os.setxattr(f, "user.k", b"v")),
        ("removexattr", lambda: os.removexattr(f, "user.k")),
        ("rename", lambda: os.rename(f, mnt / "g.txt") or os.rename(mnt / "g.txt", f)),
        ("truncate", lambda: os.truncate(f, 3)),
    ]
    for what, change in changes:
        entry = world.vd.entry("/f.txt")
        world.vd.catalog.update(entry.copy(ctime=1000.0), entry.version)  # an old ctime, set behind the mount's back
        wait_for(lambda: os.stat(f).st_ctime == 1000.0, BOUND, f"old ctime seen before {what}")
        change()
        assert os.stat(f).st_ctime > 1000.0, what
        assert world.vd.entry("/f.txt").ctime > 1000.0, what


def test_atime_follows_relatime(mnt: Path, world: World) -> None:
    f = mnt / "f.txt"
    f.write_text("content")
    os.utime(f, (1000, 2000))  # atime before mtime: the next read moves it
    assert os.stat(f).st_atime == 1000
    assert f.read_text() == "content"
    wait_for(lambda: os.stat(f).st_atime > 2000, BOUND, "atime moved by a read")
    first = os.stat(f).st_atime
    assert world.vd.entry("/f.txt").atime == first
    version = world.vd.entry("/f.txt").version
    assert f.read_text() == "content"  # atime is now later than mtime and ctime, and recent: kept
    assert os.stat(f).st_atime == first and world.vd.entry("/f.txt").atime == first
    assert world.vd.entry("/f.txt").version == version  # an access is not a change


def test_noatime_never_moves_access_times(world: World) -> None:
    world.vd.put(b"content", "/f.txt")
    e = world.vd.entry("/f.txt")
    world.vd.catalog.update(e.copy(atime=1000.0, mtime=2000.0), e.version)  # relatime would move it
    with mounted(world.cli, world.tmp / "mnt", "--noatime") as m:
        assert (m.path / "f.txt").read_bytes() == b"content"
        assert (m.path / "f.txt").read_bytes() == b"content"
    assert world.vd.entry("/f.txt").atime == 1000.0


def test_fstat_and_read_after_unlink(mnt: Path, world: World) -> None:
    data = os.urandom(3 * 1024 * 1024 + 5)
    world.vd.put(data, "/committed.bin")
    wait_for(lambda: (mnt / "committed.bin").exists(), BOUND, "file put via the API")
    fd = os.open(mnt / "committed.bin", os.O_RDONLY)
    try:
        assert os.read(fd, 10) == data[:10]
        os.unlink(mnt / "committed.bin")
        assert not (mnt / "committed.bin").exists() and not world.vd.exists("/committed.bin")
        assert not [n for n in os.listdir(mnt) if not n.startswith(".fuse_hidden")]
        st = os.fstat(fd)
        assert st.st_size == len(data) and stat.S_ISREG(st.st_mode)
        os.lseek(fd, 0, os.SEEK_SET)
        got = b""
        while chunk := os.read(fd, 1 << 20):
            got += chunk
        assert got == data
        assert len(objects(world.vd)) == 1  # kept while open
    finally:
        os.close(fd)
    wait_for(lambda: objects(world.vd) == [] and os.listdir(mnt) == [], BOUND, "removed at the last close")
    # a file written through the mount, still open for writing
    fd = os.open(mnt / "new.bin", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.write(fd, b"local bytes")
        os.unlink(mnt / "new.bin")
        assert os.fstat(fd).st_size == 11
        assert os.pread(fd, 11, 0) == b"local bytes"
    finally:
        os.close(fd)
    wait_for(lambda: os.listdir(mnt) == [], BOUND, "removed at the last close")
    assert world.vd.ls("/") == [] and objects(world.vd) == []  # never uploaded


# -- limits --------------------------------------------------------------------------------------


def test_paths_longer_than_path_max(mnt: Path, world: World) -> None:
    """Linux limits each syscall's path argument to 4,096 bytes, not where a file may be: walking
    with directory descriptors goes deeper, and the mount follows."""
    name = "d" * 200
    depth = 25  # 25 x 201 bytes: a whole path of more than 5,000 bytes
    fd = os.open(mnt, os.O_RDONLY)
    try:
        for _ in range(depth):
            os.mkdir(name, dir_fd=fd)
            nxt = os.open(name, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nxt
        w = os.open("deep.txt", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd)
        os.write(w, b"deep down")
        os.close(w)
        r = os.open("deep.txt", os.O_RDONLY, dir_fd=fd)
        assert os.read(r, 100) == b"deep down"
        os.close(r)
    finally:
        os.close(fd)
    vpath = "/" + "/".join([name] * depth) + "/deep.txt"
    assert len(vpath.encode()) > 4096
    assert world.vd.cat(vpath) == b"deep down"
    # the Python API takes such paths too
    world.vd.put(b"via the api", vpath[:-len("deep.txt")] + "api.txt")
    assert world.vd.cat(vpath[:-len("deep.txt")] + "api.txt") == b"via the api"
    cwd = os.getcwd()
    try:
        os.chdir(mnt)
        for _ in range(depth):
            os.chdir(name)
        assert Path("api.txt").read_bytes() == b"via the api"
    finally:
        os.chdir(cwd)


def test_names_of_255_bytes(mnt: Path, world: World) -> None:
    name = "é" * 127 + "x"  # 255 bytes
    assert len(name.encode()) == 255
    f = mnt / name
    f.write_bytes(b"one")
    f.write_bytes(b"two, longer")  # an overwrite
    assert f.read_bytes() == b"two, longer"
    assert world.vd.cat("/" + name) == b"two, longer"
    assert f.name in os.listdir(mnt)
