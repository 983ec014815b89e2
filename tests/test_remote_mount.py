"""``vdir mount`` in remote mode (issue 14 item 6): the mount process reaches a live server with
a token only (``VDIR_REMOTE`` + ``VDIR_TOKEN``; no catalog, no cloud credentials); files written
through the mount land in the server's catalog, files the server holds read back verified, and
what the user may not see stays invisible."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mounts import fuse_usable, mounted, wait_for
from tests.remote_server import LiveServer, live_server
from tests.servers.vdirs import CLI
from vdir.hashing import hash_bytes

pytestmark = [pytest.mark.fuse]
MiB = 1024 * 1024


@pytest.fixture(autouse=True)
def _fuse_required() -> None:
    reason = fuse_usable()
    if reason is not None:
        pytest.fail(f"real FUSE mounts are not possible here: {reason}")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    with live_server(tmp_path / "server") as live:
        live.user("alice")
        live.project("team", ["/projects/team"], alice="editor")
        live.project("other", ["/projects/other"])
        yield live


def test_mount_against_a_live_server(server: LiveServer, cli: CLI, tmp_path: Path) -> None:
    server.vd.put(b"from the server", "/projects/team/hello.txt")
    server.vd.put(b"not for alice", "/projects/other/secret.txt")
    big = os.urandom(5 * MiB + 3)
    server.vd.put(big, "/projects/team/big.bin")
    cli.env = {**server.env(cli, "alice"), "VDIR_CHUNKED_MIN": "1M"}
    mnt = tmp_path / "mnt"
    with mounted(cli, mnt):
        team = mnt / "projects" / "team"
        assert sorted(os.listdir(mnt / "projects")) == ["team"]  # the other project is invisible
        with pytest.raises(FileNotFoundError):
            os.stat(mnt / "projects" / "other" / "secret.txt")
        assert (team / "hello.txt").read_bytes() == b"from the server"
        with open(team / "big.bin", "rb") as f:
            f.seek(3 * MiB)
            assert f.read(10) == big[3 * MiB : 3 * MiB + 10]
        assert (team / "big.bin").read_bytes() == big
        # writes go to the server's catalog
        (team / "new.txt").write_bytes(b"written on the mount")
        wait_for(lambda: server.vd.exists("/projects/team/new.txt"), what="new.txt on the server")
        assert server.vd.cat("/projects/team/new.txt") == b"written on the mount"
        data = os.urandom(3 * MiB)
        (team / "sub").mkdir()
        (team / "sub" / "data.bin").write_bytes(data)
        wait_for(lambda: server.vd.exists("/projects/team/sub/data.bin"), what="data.bin on the server")
        assert server.vd.stat("/projects/team/sub/data.bin").hash == hash_bytes(data)
        os.rename(team / "new.txt", team / "sub" / "renamed.txt")
        assert server.vd.cat("/projects/team/sub/renamed.txt") == b"written on the mount"
        os.symlink("renamed.txt", team / "sub" / "link")
        assert server.vd.readlink("/projects/team/sub/link") == "renamed.txt"
        os.chmod(team / "hello.txt", 0o600)
        assert server.vd.stat("/projects/team/hello.txt").mode & 0o777 == 0o600
        # real tools
        out = tmp_path / "copy"
        shutil.copytree(team, out, symlinks=True)
        assert (out / "sub" / "data.bin").read_bytes() == data
        assert subprocess.run(["ls", "-lR", str(team)], capture_output=True, check=True).stdout
        os.remove(team / "sub" / "renamed.txt")
        assert not server.vd.exists("/projects/team/sub/renamed.txt")
        shutil.rmtree(team / "sub")
        assert not server.vd.exists("/projects/team/sub")
        # outside her project nothing exists for alice, not even a name she would create
        with pytest.raises(OSError) as caught:
            (mnt / "projects" / "mine.txt").write_bytes(b"x")
        assert caught.value.errno == errno.ENOENT
        assert not server.vd.exists("/projects/mine.txt")
        with pytest.raises(OSError) as caught:
            os.rmdir(mnt / "projects")
        assert caught.value.errno in (errno.EACCES, errno.EPERM, errno.ENOTEMPTY)
        # a change made on the server shows in the mount
        server.vd.put(b"later", "/projects/team/later.txt")
        wait_for(lambda: (team / "later.txt").exists(), what="later.txt in the mount")
        assert (team / "later.txt").read_bytes() == b"later"


def test_write_back_mount_uploads_to_the_server(server: LiveServer, cli: CLI, tmp_path: Path) -> None:
    """With --write-back, close returns at once and the uploads reach the server in the background;
    unmounting waits for them."""
    cli.env = server.env(cli, "alice")
    mnt = tmp_path / "mnt"
    files = {f"f{i}.bin": os.urandom(1000 + i) for i in range(20)}
    with mounted(cli, mnt, "--write-back", "--write-back-delay", "0.2"):
        team = mnt / "projects" / "team"
        for name, data in files.items():
            (team / name).write_bytes(data)
        for name, data in files.items():
            assert (team / name).read_bytes() == data  # from the local cache, before or after the upload
        wait_for(lambda: all(server.vd.exists(f"/projects/team/{n}") for n in files), timeout=60,
                 what="write-back uploads on the server")
    for name, data in files.items():
        assert server.vd.cat(f"/projects/team/{name}") == data


def test_read_only_mount(server: LiveServer, cli: CLI, tmp_path: Path) -> None:
    server.vd.put(b"read me", "/projects/team/r.txt")
    cli.env = server.env(cli, "alice")
    mnt = tmp_path / "mnt"
    with mounted(cli, mnt, "--read-only"):
        assert (mnt / "projects" / "team" / "r.txt").read_bytes() == b"read me"
        with pytest.raises(OSError) as caught:
            (mnt / "projects" / "team" / "w.txt").write_bytes(b"x")
        assert caught.value.errno == errno.EROFS
