"""The FUSE mount, mounted for real (``vdir mount --foreground`` in a subprocess): POSIX file and
directory operations, renames, permissions, xattrs, large files, concurrency, a kill -9 with
writes pending, and real tools (cp, rsync, tar, git, SQLite) compared by content."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.mounts import Mount, World, force_unmount, fuse_usable, mounted, wait_for
from vdir.fuse.mount import is_mounted
from vdir.hashing import hash_bytes, new_hasher

pytestmark = [pytest.mark.fuse]


@pytest.fixture(autouse=True)
def _fuse_required() -> None:
    # A machine without FUSE fails these tests loudly rather than skipping them: CI has FUSE,
    # and a skipped mount test must never pass for a tested mount.
    reason = fuse_usable()
    if reason is not None:
        pytest.fail(f"real FUSE mounts are not possible here: {reason}")

BOUND = 2 * 1.0 + 1.0
"""Seconds a change made elsewhere may take to show in the mount: 2 x attr_timeout, plus slack."""


def errno_of(fn: object, *args: object) -> int:
    try:
        fn(*args)  # type: ignore[operator]
    except OSError as exc:
        return exc.errno or 0
    raise AssertionError(f"{fn} did not fail")


def tree(root: Path) -> dict[str, tuple[str, bytes | str, int]]:
    """rel path -> (kind, content or link target, permission bits), for comparing copies."""
    found: dict[str, tuple[str, bytes | str, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                found[rel] = ("link", os.readlink(p), 0)
            elif stat.S_ISDIR(st.st_mode):
                found[rel] = ("dir", b"", stat.S_IMODE(st.st_mode))
            else:
                found[rel] = ("file", p.read_bytes(), stat.S_IMODE(st.st_mode))
    return found


def make_source(root: Path) -> Path:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "empty-dir").mkdir()
    (root / "a.txt").write_text("alpha\n")
    (root / "empty").write_bytes(b"")
    (root / "sub" / "b.bin").write_bytes(os.urandom(300_000))
    (root / "sub" / "deeper" / "c.bin").write_bytes(os.urandom(5 * 1024 * 1024 + 17))
    (root / "name with spaces & ünïcode.txt").write_text("spaces\n")
    run = root / "run.sh"
    run.write_text("#!/bin/sh\necho hi\n")
    run.chmod(0o755)
    os.symlink("sub/b.bin", root / "link")
    return root


# -- files and directories -------------------------------------------------------------------------
def test_files_read_write_truncate(mnt: Path, world: World) -> None:
    f = mnt / "a.txt"
    f.write_bytes(b"hello world")
    assert f.read_bytes() == b"hello world"
    with open(f, "r+b") as fh:  # write in the middle and past the end
        fh.seek(6)
        fh.write(b"WORLD")
        fh.seek(20)
        fh.write(b"!")
    assert f.read_bytes() == b"hello WORLD" + b"\0" * 9 + b"!"
    with open(f, "ab") as fh:
        fh.write(b"+tail")
    expected = b"hello WORLD" + b"\0" * 9 + b"!+tail"
    assert f.read_bytes() == expected and f.stat().st_size == len(expected)
    info = world.vd.stat("/a.txt")  # committed on close: hash and replica recorded
    assert info.size == len(expected) and info.hash == hash_bytes(expected) and info.replicas
    os.truncate(f, 5)
    assert f.read_bytes() == b"hello" and world.vd.cat("/a.txt") == b"hello"
    with open(f, "r+b") as fh:
        os.ftruncate(fh.fileno(), 2)
        fh.write(b"XY")  # at offset 0
    assert world.vd.cat("/a.txt") == b"XY"
    with open(f, "wb") as fh:  # O_TRUNC
        fh.write(b"new")
    assert world.vd.cat("/a.txt") == b"new"
    (mnt / "empty").touch()
    assert world.vd.stat("/empty").size == 0 and (mnt / "empty").read_bytes() == b""
    with open(f, "r+b") as fh:  # fsync commits before it returns
        fh.write(b"N")
        fh.flush()
        os.fsync(fh.fileno())
        assert world.vd.cat("/a.txt") == b"New"
    os.unlink(f)
    assert not f.exists() and not world.vd.exists("/a.txt")
    assert errno_of(open, mnt / "missing") == errno.ENOENT
    assert errno_of(os.unlink, mnt / "missing") == errno.ENOENT
    with open(mnt / "x", "xb") as fh:
        fh.write(b"1")
    assert errno_of(open, mnt / "x", "xb") == errno.EEXIST


def test_directories(mnt: Path, world: World) -> None:
    (mnt / "d" / "e").mkdir(parents=True)
    assert world.vd.stat("/d/e").type == "dir"
    assert errno_of(os.mkdir, mnt / "d") == errno.EEXIST
    (mnt / "d" / "f.txt").write_text("x")
    assert errno_of(os.rmdir, mnt / "d") == errno.ENOTEMPTY
    assert errno_of(os.rmdir, mnt / "d" / "f.txt") == errno.ENOTDIR
    assert errno_of(os.unlink, mnt / "d" / "e") == errno.EISDIR
    assert errno_of(os.mkdir, mnt / "d" / "f.txt" / "z") == errno.ENOTDIR
    os.rmdir(mnt / "d" / "e")
    assert sorted(os.listdir(mnt / "d")) == ["f.txt"]
    # a directory larger than one catalog page lists completely, in order
    names = [f"n{i:05}" for i in range(2100)]
    for n in names:
        world.vd.mkdir(f"/big/{n}", parents=True)
    assert sorted(os.listdir(mnt / "big")) == names
    out = subprocess.run(["ls", "-l", str(mnt / "big")], capture_output=True, text=True, check=True).stdout
    assert len(out.splitlines()) == 2101


def test_rename_every_case(mnt: Path, world: World) -> None:
    (mnt / "a").write_text("A")
    os.rename(mnt / "a", mnt / "b")  # plain rename
    assert not (mnt / "a").exists() and (mnt / "b").read_text() == "A" and world.vd.cat("/b") == b"A"
    (mnt / "c").write_text("C")
    os.rename(mnt / "b", mnt / "c")  # over an existing file: replaced atomically
    assert (mnt / "c").read_text() == "A" and not world.vd.exists("/b") and world.vd.cat("/c") == b"A"
    (mnt / "d1" / "inner").mkdir(parents=True)
    (mnt / "d1" / "inner" / "f").write_text("F")
    os.rename(mnt / "d1", mnt / "d2")  # directory with contents
    assert (mnt / "d2" / "inner" / "f").read_text() == "F" and not (mnt / "d1").exists()
    (mnt / "empty").mkdir()
    os.rename(mnt / "d2", mnt / "empty")  # over an empty directory
    assert (mnt / "empty" / "inner" / "f").read_text() == "F"
    (mnt / "full").mkdir()
    (mnt / "full" / "x").write_text("x")
    assert errno_of(os.rename, mnt / "empty", mnt / "full") == errno.ENOTEMPTY
    assert errno_of(os.rename, mnt / "c", mnt / "full") == errno.EISDIR
    assert errno_of(os.rename, mnt / "full", mnt / "c") == errno.ENOTDIR
    assert errno_of(os.rename, mnt / "empty", mnt / "empty" / "inner" / "sub") == errno.EINVAL
    assert errno_of(os.rename, mnt / "nothing", mnt / "z") == errno.ENOENT
    os.rename(mnt / "c", mnt / "full" / "moved")  # across directories
    assert (mnt / "full" / "moved").read_text() == "A" and world.vd.cat("/full/moved") == b"A"
    os.rename(mnt / "full" / "moved", mnt / "full" / "moved")  # onto itself: nothing happens
    assert (mnt / "full" / "moved").read_text() == "A"
    with open(mnt / "open", "wb") as fh:  # renamed while open and written: lands at the new name
        fh.write(b"one")
        os.rename(mnt / "open", mnt / "renamed")
        fh.write(b"two")
    assert world.vd.cat("/renamed") == b"onetwo" and not world.vd.exists("/open")
    (mnt / "keep").write_text("k")
    proc = subprocess.run(["mv", "-n", str(mnt / "renamed"), str(mnt / "keep")], capture_output=True)
    assert (mnt / "keep").read_text() == "k"  # no-clobber honoured (RENAME_NOREPLACE or a check)
    assert proc.returncode in (0, 1)


def test_permissions_and_times(mnt: Path, world: World) -> None:
    f = mnt / "p.txt"
    f.write_text("p")
    os.chmod(f, 0o600)
    os.chown(f, 1234, 5678)
    os.utime(f, (1_000_000_000, 1_000_000_000))
    st = f.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600 and (st.st_uid, st.st_gid) == (1234, 5678)
    assert int(st.st_mtime) == 1_000_000_000
    entry = world.vd.entry("/p.txt")
    assert entry.mode & 0o7777 == 0o600 and (entry.uid, entry.gid) == (1234, 5678) and int(entry.mtime) == 1_000_000_000
    out = world.cli.run("stat", "/p.txt", check=True).stdout.decode()
    assert "0o600" in out and "rw-------" in out
    (mnt / "dd").mkdir(mode=0o700)
    assert stat.S_IMODE((mnt / "dd").stat().st_mode) == 0o700
    os.chmod(mnt / "dd", 0o751)
    assert world.vd.stat("/dd").mode & 0o7777 == 0o751
    world.vd.update_entry("/p.txt", mode=0o640)  # changed elsewhere: visible within the bound
    wait_for(lambda: stat.S_IMODE(f.stat().st_mode) == 0o640, BOUND, "chmod via the API")


def test_symlinks_xattrs_statfs_and_link_errors(mnt: Path, world: World) -> None:
    (mnt / "target.txt").write_text("T")
    os.symlink("target.txt", mnt / "ln")
    assert os.readlink(mnt / "ln") == "target.txt" and (mnt / "ln").read_text() == "T"
    assert world.vd.readlink("/ln") == "target.txt" and (mnt / "ln").is_symlink()
    os.setxattr(mnt / "target.txt", "user.color", b"blue")
    assert os.getxattr(mnt / "target.txt", "user.color") == b"blue"
    assert os.listxattr(mnt / "target.txt") == ["user.color"]
    assert world.vd.entry("/target.txt").xattrs["user.color"] == b"blue"
    assert os.getxattr(mnt / "target.txt", "user.vdir.hash").decode() == world.vd.stat("/target.txt").hash
    assert b'"backend": "local"' in os.getxattr(mnt / "target.txt", "user.vdir.replicas")
    assert errno_of(os.setxattr, mnt / "target.txt", "user.vdir.hash", b"x") == errno.EPERM
    assert errno_of(os.setxattr, mnt / "target.txt", "trusted.x", b"x") in (errno.ENOTSUP, errno.EPERM)
    assert errno_of(os.setxattr, mnt / "target.txt", "user.color", b"red", os.XATTR_CREATE) == errno.EEXIST
    os.removexattr(mnt / "target.txt", "user.color")
    assert errno_of(os.getxattr, mnt / "target.txt", "user.color") == errno.ENODATA
    assert errno_of(os.link, mnt / "target.txt", mnt / "ln") == errno.EEXIST  # hard links: tests/test_hardlinks.py
    assert errno_of(os.link, mnt, mnt / "dirlink") == errno.EPERM
    sv = os.statvfs(mnt)
    assert sv.f_bavail > 0 and sv.f_namemax == 255
    assert subprocess.run(["df", str(mnt)], capture_output=True).returncode == 0


def test_changes_elsewhere_show_in_the_mount(mnt: Path, world: World) -> None:
    world.vd.put(b"from the api", "/api.txt")
    wait_for(lambda: (mnt / "api.txt").exists(), BOUND, "file put via the API")
    assert (mnt / "api.txt").read_bytes() == b"from the api"
    world.vd.put(b"changed!", "/api.txt", force=True)
    wait_for(lambda: (mnt / "api.txt").read_bytes() == b"changed!", BOUND, "overwrite via the API")
    world.cli.run("mv", "/api.txt", "/moved.txt", check=True)
    wait_for(lambda: not (mnt / "api.txt").exists() and (mnt / "moved.txt").exists(), BOUND, "mv via the CLI")
    world.vd.rm("/moved.txt")
    wait_for(lambda: not (mnt / "moved.txt").exists(), BOUND, "rm via the API")
    # a second mount of the same catalog sees what the first wrote
    with mounted(world.cli, world.tmp / "mnt2") as other:
        (mnt / "shared.txt").write_text("one")
        wait_for(lambda: (other.path / "shared.txt").exists(), BOUND, "file from the other mount")
        assert (other.path / "shared.txt").read_text() == "one"


def test_conflicting_writer_loses_nothing(mnt: Path, world: World) -> None:
    world.vd.put(b"v1", "/c.txt")
    fh = open(mnt / "c.txt", "r+b")  # noqa: SIM115 - closed below, where the conflict shows
    fh.write(b"mine")
    fh.flush()
    world.vd.put(b"theirs", "/c.txt", force=True)
    with pytest.raises(OSError) as err:
        fh.close()
    assert err.value.errno == errno.ESTALE
    assert world.vd.cat("/c.txt") == b"theirs"
    copies = [i.path for i in world.vd.ls("/") if i.name.startswith("c.txt.conflict-")]
    assert len(copies) == 1 and world.vd.cat(copies[0]) == b"mine"


def test_read_only_mount(world: World) -> None:
    world.vd.put(b"data", "/r.txt")
    with mounted(world.cli, world.tmp / "ro", "--read-only") as m:
        assert (m.path / "r.txt").read_bytes() == b"data"
        assert errno_of((m.path / "w.txt").write_text, "x") == errno.EROFS
        assert errno_of(os.mkdir, m.path / "d") == errno.EROFS
        assert errno_of(os.unlink, m.path / "r.txt") == errno.EROFS


def test_no_xattrs_mount(world: World) -> None:
    """--no-xattrs: every xattr call fails as unsupported (the kernel stops asking after the
    first), and everything else works as usual."""
    world.vd.put(b"data", "/x.txt")
    with mounted(world.cli, world.tmp / "nox", "--no-xattrs") as m:
        for call in (lambda: os.getxattr(m.path / "x.txt", "user.vdir.hash"), lambda: os.listxattr(m.path / "x.txt"),
                     lambda: os.setxattr(m.path / "x.txt", "user.a", b"1"), lambda: os.getxattr(m.path / "x.txt", "user.a")):
            assert errno_of(call) == errno.EOPNOTSUPP
        listing = subprocess.run(["ls", "-l", str(m.path)], capture_output=True, check=True).stdout
        assert b"x.txt" in listing and b"-rw-r--r--" in listing
        (m.path / "y.txt").write_bytes(b"new")
        assert (m.path / "x.txt").read_bytes() == b"data" and world.vd.cat("/y.txt") == b"new"
    assert "user.a" not in world.vd.entry("/x.txt").xattrs


def test_cli_mount_umount_and_errors(world: World) -> None:
    cli, mp = world.cli, world.tmp / "bg"
    proc = cli.run("mount", str(mp))
    assert proc.returncode == 1 and b"does not exist" in proc.stderr and len(proc.stderr.splitlines()) == 1
    (world.tmp / "file").write_text("x")
    proc = cli.run("mount", str(world.tmp / "file"))
    assert proc.returncode == 1 and b"not a directory" in proc.stderr
    mp.mkdir()
    try:
        proc = cli.run("mount", str(mp), "--cache-size", "64M")  # background: returns once ready
        assert proc.returncode == 0, proc.stderr
        assert is_mounted(mp)
        (mp / "bg.txt").write_text("background")
        assert world.vd.cat("/bg.txt") == b"background"
        proc = cli.run("mount", str(mp))
        assert proc.returncode == 1 and b"already mounted" in proc.stderr
        with open(mp / "bg.txt") as busy:
            proc = cli.run("umount", str(mp))
            assert proc.returncode == 1 and b"busy" in proc.stderr and is_mounted(mp)
            busy.read()
        assert cli.run("umount", str(mp)).returncode == 0
        assert not is_mounted(mp)
        proc = cli.run("umount", str(mp))
        assert proc.returncode == 1 and b"not mounted" in proc.stderr
        proc = cli.run("mount", str(mp), "--cache-size", "lots")
        assert proc.returncode == 1 and b"not a size" in proc.stderr
    finally:
        force_unmount(mp, None)


# -- heavy ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_one_gib_file(mnt: Path, world: World) -> None:
    block = os.urandom(16 * 1024 * 1024)
    size = 1024**3
    written = new_hasher()
    with open(mnt / "big.bin", "wb", buffering=0) as fh:
        for i in range(size // (1024 * 1024)):
            start = (i * 7919) % (len(block) - 1024 * 1024)
            chunk = block[start : start + 1024 * 1024]
            written.update(chunk)
            fh.write(chunk)
    info = world.vd.stat("/big.bin")
    assert info.size == size and info.hash == written.hexdigest() and info.replicas
    read = new_hasher()
    with open(mnt / "big.bin", "rb", buffering=0) as fh:
        while chunk := fh.read(1024 * 1024):
            read.update(chunk)
    assert read.hexdigest() == written.hexdigest()
    with open(mnt / "big.bin", "rb") as fh:  # random access far into the file
        fh.seek(size - 1024 * 1024 - 5)
        i = size // (1024 * 1024) - 2
        start = (i * 7919) % (len(block) - 1024 * 1024) + 1024 * 1024 - 5
        assert fh.read(5) == block[start : start + 5]


@pytest.mark.slow
def test_concurrent_readers_and_writers(mnt: Path, world: World) -> None:
    shared = os.urandom(24 * 1024 * 1024)
    world.vd.put(shared, "/shared.bin")
    failures: list[str] = []
    payloads = {i: os.urandom(6 * 1024 * 1024 + i) for i in range(4)}

    def writer(i: int) -> None:
        with open(mnt / f"w{i}.bin", "wb") as fh:
            for off in range(0, len(payloads[i]), 256 * 1024):
                fh.write(payloads[i][off : off + 256 * 1024])

    def reader(i: int) -> None:
        with open(mnt / "shared.bin", "rb") as fh:
            fh.seek(i * 1024 * 1024)
            if fh.read() != shared[i * 1024 * 1024 :]:
                failures.append(f"reader {i}")

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    threads += [threading.Thread(target=reader, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not failures
    for i, data in payloads.items():
        assert world.vd.cat(f"/w{i}.bin") == data and (mnt / f"w{i}.bin").read_bytes() == data


@pytest.mark.slow
def test_kill_9_with_pending_writes_loses_nothing(world: World) -> None:
    world.vd.put(b"0" * 1000, "/old.txt")
    new_data = os.urandom(3 * 1024 * 1024)
    cache = world.tmp / "cache"
    with mounted(world.cli, world.tmp / "k", cache_dir=cache) as m:
        script = (
            "import os, sys\n"
            f"a = os.open({str(m.path / 'new.bin')!r}, os.O_WRONLY | os.O_CREAT, 0o640)\n"
            "data = sys.stdin.buffer.read(int(sys.argv[1]))\n"
            "for i in range(0, len(data), 65536): os.write(a, data[i:i + 65536])\n"
            f"b = os.open({str(m.path / 'old.txt')!r}, os.O_WRONLY)\n"
            "os.pwrite(b, b'XYZ', 10)\n"
            "print('ready', flush=True)\n"
            "sys.stdin.read()\n"
        )
        writer = subprocess.Popen([sys.executable, "-c", script, str(len(new_data))], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert writer.stdin is not None and writer.stdout is not None
        writer.stdin.write(new_data)
        writer.stdin.flush()
        assert writer.stdout.readline().strip() == b"ready"
        assert not world.vd.exists("/new.bin")  # not closed: only in the write-back journal
        os.killpg(m.proc.pid, signal.SIGKILL)
        m.proc.wait(30)
        writer.kill()
        writer.wait(30)
    assert world.vd.cat("/old.txt") == b"0" * 1000
    with mounted(world.cli, world.tmp / "k", cache_dir=cache) as m:  # the journal is resumed in the background
        assert (m.path / "new.bin").read_bytes() == new_data  # served from the journal meanwhile
        wait_for(lambda: not list((cache / "pending").glob("*.json")), 30, "journal replayed")
        assert world.vd.cat("/new.bin") == new_data
        assert world.vd.stat("/new.bin").mode & 0o777 == 0o640
        assert world.vd.cat("/old.txt") == b"0" * 10 + b"XYZ" + b"0" * 987
        assert (m.path / "new.bin").read_bytes() == new_data
    assert not list((cache / "pending").iterdir())


def _run(*cmd: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, cwd=cwd, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)}: {proc.stderr}"
    return proc.stdout


@pytest.mark.slow
def test_real_tools_round_trip(mnt: Path, world: World) -> None:
    src = make_source(world.tmp / "src")
    expected = tree(src)
    _run("cp", "-r", str(src), str(mnt / "cp"))
    assert tree(mnt / "cp") == expected
    _run("rsync", "-a", f"{src}/", f"{mnt / 'rs'}/")
    assert tree(mnt / "rs") == expected
    assert int((mnt / "rs" / "a.txt").stat().st_mtime) == int((src / "a.txt").stat().st_mtime)
    _run("rsync", "-a", f"{mnt / 'rs'}/", f"{world.tmp / 'back'}/")
    assert tree(world.tmp / "back") == expected
    _run("tar", "-cf", str(mnt / "a.tar"), "-C", str(src), ".")
    (mnt / "untar").mkdir()
    _run("tar", "-xf", str(mnt / "a.tar"), "-C", str(mnt / "untar"))
    assert tree(mnt / "untar") == expected
    (world.tmp / "out").mkdir()
    _run("tar", "-cf", str(world.tmp / "out.tar"), "-C", str(mnt / "untar"), ".")
    _run("tar", "-xf", str(world.tmp / "out.tar"), "-C", str(world.tmp / "out"))
    assert tree(world.tmp / "out") == expected
    info = world.vd.stat("/rs/sub/deeper/c.bin")
    assert info.hash == hash_bytes((src / "sub" / "deeper" / "c.bin").read_bytes()) and info.replicas


@pytest.mark.slow
def test_git_on_the_mount(mnt: Path, world: World) -> None:
    repo = mnt / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.name=T", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main"]
    _run(*git, "init", "-q", cwd=repo)
    make_source(repo / "tree")
    _run(*git, "add", ".", cwd=repo)
    _run(*git, "commit", "-q", "-m", "first", cwd=repo)
    (repo / "tree" / "a.txt").write_text("changed\n")
    _run(*git, "commit", "-q", "-am", "second", cwd=repo)
    log = _run("git", "log", "--format=%s", cwd=repo)
    assert log.split() == ["second", "first"]
    assert _run("git", "status", "--porcelain", cwd=repo) == ""
    _run("git", "fsck", "--strict", cwd=repo)
    clone = world.tmp / "clone"
    _run("git", "clone", "-q", str(repo), str(clone))
    assert (clone / "tree" / "a.txt").read_text() == "changed\n"
    # git tracks no empty directories: compare everything else
    tracked = {k: v for k, v in tree(repo / "tree").items() if not k.startswith("empty-dir")}
    assert tree(clone / "tree") == tracked


@pytest.mark.slow
def test_sqlite_database_on_the_mount(mnt: Path, world: World) -> None:
    db = sqlite3.connect(mnt / "data.db")
    db.execute("create table t (id integer primary key, name text, blob blob)")
    with db:
        db.executemany("insert into t (name, blob) values (?, ?)", [(f"row{i}", os.urandom(200)) for i in range(5000)])
    with db:
        db.execute("delete from t where id % 2 = 0")
    assert db.execute("select count(*), min(name) from t").fetchone() == (2500, "row0")
    db.close()
    assert not [p for p in os.listdir(mnt) if p.startswith("data.db-")]
    db = sqlite3.connect(mnt / "data.db")
    assert db.execute("pragma integrity_check").fetchone() == ("ok",)
    assert db.execute("select count(*) from t").fetchone() == (2500,)
    db.close()
    copy = world.tmp / "copy.db"
    copy.write_bytes(world.vd.cat("/data.db"))  # what the catalog holds is the same database
    local = sqlite3.connect(copy)
    assert local.execute("select count(*) from t where name = 'row0'").fetchone() == (1,)  # id 1 kept
    assert local.execute("select count(*) from t where name = 'row1'").fetchone() == (0,)  # id 2 deleted
    local.close()
    if shutil.which("sqlite3"):
        assert _run("sqlite3", str(mnt / "data.db"), "select count(*) from t;").strip() == "2500"


def test_mount_helper_unmounts_even_after_a_failure(world: World) -> None:
    mp = world.tmp / "h"
    with pytest.raises(RuntimeError, match="boom"), mounted(world.cli, mp) as m:
        assert isinstance(m, Mount) and is_mounted(mp)
        raise RuntimeError("boom")
    assert not is_mounted(mp)
    wait_for(lambda: m.proc.poll() is not None, 30, "mount process exit")


def test_read_cache_is_bounded_and_never_stale(world: World) -> None:
    remote = world.tmp / "remote"
    remote.mkdir()
    world.cli.run("backend", "add", "remote", f"file://{remote}", "--cloud", "sim", "--no-check", check=True)
    world.vd.forget_backend("remote")
    files = {f"/r{i}.bin": os.urandom(6 * 1024 * 1024 + i) for i in range(3)}
    for path, data in files.items():
        world.vd.put(data, path, backend="remote")
    with mounted(world.cli, world.tmp / "rc", "--cache-size", "16M") as m:
        for _ in range(2):
            for path, data in files.items():
                assert (m.path / path[1:]).read_bytes() == data
        blocks = [p for p in (m.cache_dir / "blocks").rglob("*") if p.is_file()]
        assert blocks and sum(p.stat().st_size for p in blocks) <= 16 * 1024 * 1024
        new = os.urandom(6 * 1024 * 1024)
        world.vd.put(new, "/r0.bin", backend="remote", force=True)
        wait_for(lambda: (m.path / "r0.bin").read_bytes() == new, BOUND, "new content after an overwrite elsewhere")


def test_block_cache_and_journal_units(tmp_path: Path) -> None:
    from vdir.errors import AlreadyExists
    from vdir.units import parse_size
    from vdir.vfs.cache import BlockCache, CacheDir, Journal

    assert parse_size("10G") == 10 * 1024**3 and parse_size("512MiB") == 512 * 1024**2 and parse_size("4096") == 4096
    cache = BlockCache(tmp_path / "b", max_bytes=10, block=4)
    for n in range(4):
        cache.put("k" * 32, n, b"abcd")
    assert cache.used <= 10 and cache.get("k" * 32, 0) is None and cache.get("k" * 32, 3) == b"abcd"
    again = BlockCache(tmp_path / "b", max_bytes=10, block=4)  # survives a restart
    assert again.get("k" * 32, 3) == b"abcd"
    again.discard("k" * 32)
    assert again.get("k" * 32, 3) is None and again.used == 0
    journal = Journal(tmp_path / "j")
    rec = journal.new("/a/b.txt", base_version=3, base_hash="h")
    journal.data_path(rec.id).write_bytes(b"data")
    journal.save(rec)
    (tmp_path / "j" / "stray.data").write_bytes(b"x")
    assert [r.path for r in journal.records()] == ["/a/b.txt"] and not (tmp_path / "j" / "stray.data").exists()
    journal.drop(rec)
    assert journal.records() == []
    held = CacheDir(tmp_path / "c", 1 << 20)
    with pytest.raises(AlreadyExists, match="in use by another vdir mount"):
        CacheDir(tmp_path / "c", 1 << 20)
    held.close()


# -- caches of the mount (issue 13, item 5) ---------------------------------------------------------
def test_name_caches_are_invalidated(mnt: Path, world: World) -> None:
    """Names found absent are cached (kernel and mount) for the timeout: a name made elsewhere
    shows within the bound, one made through this mount at once; removal and rename likewise."""
    assert not (mnt / "later.txt").exists()  # now cached as absent
    world.vd.put(b"by the api", "/later.txt")
    wait_for(lambda: (mnt / "later.txt").exists(), BOUND, "name created by the API")
    assert (mnt / "later.txt").read_bytes() == b"by the api"
    assert not (mnt / "here.txt").exists()  # cached as absent, then created through this mount
    (mnt / "here.txt").write_bytes(b"mine")
    assert (mnt / "here.txt").read_bytes() == b"mine" and "here.txt" in os.listdir(mnt)
    assert not (mnt / "d").exists()
    (mnt / "d").mkdir()
    (mnt / "d" / "x").write_bytes(b"x")
    assert sorted(os.listdir(mnt / "d")) == ["x"]
    (mnt / "here.txt").rename(mnt / "d" / "moved.txt")  # at once, both names
    assert not (mnt / "here.txt").exists() and (mnt / "d" / "moved.txt").read_bytes() == b"mine"
    os.unlink(mnt / "d" / "x")
    assert not (mnt / "d" / "x").exists()
    world.cli.run("mv", "/later.txt", "/renamed.txt", check=True)
    wait_for(lambda: not (mnt / "later.txt").exists() and (mnt / "renamed.txt").exists(), BOUND, "mv via the CLI")
    with mounted(world.cli, world.tmp / "mnt2") as other:
        assert not (mnt / "from-other").exists()
        (other.path / "from-other").write_bytes(b"2")
        wait_for(lambda: (mnt / "from-other").exists(), BOUND, "name created by a second mount")
        os.unlink(other.path / "from-other")
        wait_for(lambda: not (mnt / "from-other").exists(), BOUND, "name removed by a second mount")
    # the probes of other xattr namespaces are refused (not "no such attribute"), so tools stop asking
    assert errno_of(os.getxattr, mnt / "renamed.txt", "security.selinux") == errno.ENOTSUP
    assert errno_of(os.getxattr, mnt / "renamed.txt", "system.posix_acl_access") == errno.ENOTSUP


def test_write_back_close(world: World) -> None:
    """--write-back: close returns once the file is journaled; fsync waits for the commit; a
    kill -9 right after close loses nothing."""
    cache = world.tmp / "wb.cache"
    with mounted(world.cli, world.tmp / "wb", "--write-back", cache_dir=cache) as m:
        fd = os.open(m.path / "synced.txt", os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"synced")
        os.fsync(fd)
        assert world.vd.cat("/synced.txt") == b"synced"  # fsync: stored and committed
        os.close(fd)
        for i in range(20):
            (m.path / f"f{i}.txt").write_bytes(b"%d" % i)
        assert (m.path / "f3.txt").read_bytes() == b"3"  # served here at once, whether committed or not
        wait_for(lambda: all(world.vd.exists(f"/f{i}.txt") for i in range(20)), 30, "background commits")
        assert world.vd.cat("/f7.txt") == b"7"
        data = os.urandom(200_000)
        (m.path / "last.bin").write_bytes(data)
        os.killpg(m.proc.pid, signal.SIGKILL)  # right after close
        m.proc.wait(30)
    with mounted(world.cli, world.tmp / "wb", cache_dir=cache) as m:
        assert (m.path / "last.bin").read_bytes() == data
        wait_for(lambda: world.vd.exists("/last.bin"), 30, "journal replayed")
        assert world.vd.cat("/last.bin") == data
        assert world.vd.stat("/synced.txt").mode & 0o777 == 0o600
