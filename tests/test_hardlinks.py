"""Hard links (issue 13, item 2) above the catalog: the core, the CLI and a real mount on both
catalog engines.  One inode, several names: content stored once on the backends, a change seen
through every name, the content kept until the last name goes; ``du`` counts it once, ``get -r``
makes the names hard links again, placement and fsck treat the inode as one file.  (The
catalog's own part is in the conformance suite.)"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import vdir
from tests.mounts import World, fuse_usable, mounted
from tests.servers.vdirs import CLI
from vdir.admin import add_backend
from vdir.catalog import open_catalog
from vdir.core import VDir
from vdir.errors import AlreadyExists, NotFound, NotPermitted
from vdir.fsck import fsck
from vdir.placement import planner
from vdir.placement.policy import apply_policy, load_policy

ENGINES = ["sqlite", "mongo"]


@pytest.fixture(params=ENGINES)
def vd(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VDir]:
    """A VDir on each catalog engine with two local-folder backends, ``local`` the default."""
    url = f"sqlite:///{tmp_path}/c.db" if request.param == "sqlite" else str(request.getfixturevalue("mongo_catalog_url"))
    v = VDir(open_catalog(url), default_backend="local")
    for name in ("local", "spare"):
        (tmp_path / name).mkdir()
        add_backend(v, name, f"file://{tmp_path / name}", check=False)
    try:
        yield v
    finally:
        v.close()


def objects(vd: VDir, backend: str = "local") -> list[str]:
    return sorted(o.key for o in vd.backend(backend).list(""))


# -- the core ------------------------------------------------------------------------------------


def test_a_hard_link_is_a_second_name_of_one_file_stored_once(vd: VDir) -> None:
    vd.put(b"shared bytes", "/a/one.txt")
    vd.mkdir("/b")
    linked = vd.hardlink("/a/one.txt", "/b/two.txt")
    one, two = vd.entry("/a/one.txt"), vd.entry("/b/two.txt")
    assert linked.id == one.id == two.id and one.nlink == two.nlink == 2
    assert vd.stat("/b/two.txt").nlink == 2 and vd.stat("/b/two.txt").inode == one.id
    assert vd.cat("/b/two.txt") == b"shared bytes"
    assert len(objects(vd)) == 1  # no bytes moved or copied
    # a new version written through one name is the file's: every name reads it
    vd.put(b"second version", "/b/two.txt", force=True)
    assert vd.cat("/a/one.txt") == b"second version"
    assert len(objects(vd)) == 1  # the old version's object went, the new one is shared
    vd.update_entry("/a/one.txt", mode=0o600)
    assert vd.entry("/b/two.txt").mode == 0o600


def test_removing_one_name_keeps_the_content_until_the_last_goes(vd: VDir) -> None:
    vd.put(b"keep me", "/x.txt")
    vd.hardlink("/x.txt", "/y.txt")
    vd.rm("/x.txt")
    assert vd.cat("/y.txt") == b"keep me" and vd.entry("/y.txt").nlink == 1
    assert len(objects(vd)) == 1
    assert fsck(vd).problems == []  # nothing orphaned, nothing lost
    vd.rm("/y.txt")
    assert objects(vd) == []  # the last name took the bytes with it


def test_rm_r_of_a_tree_holding_both_names_and_a_name_outside(vd: VDir) -> None:
    vd.put(b"in and out", "/t/a")
    vd.mkdir("/t/sub")
    vd.hardlink("/t/a", "/t/sub/b")
    vd.hardlink("/t/a", "/outside")
    assert vd.entry("/outside").nlink == 3
    vd.rm("/t", recursive=True)
    assert vd.cat("/outside") == b"in and out" and vd.entry("/outside").nlink == 1
    vd.put(b"both inside", "/u/a")
    vd.hardlink("/u/a", "/u/b")
    vd.rm("/u", recursive=True)
    assert len(objects(vd)) == 1  # only /outside's object is left


def test_renaming_a_linked_name_moves_only_that_name(vd: VDir) -> None:
    vd.put(b"data", "/p")
    vd.hardlink("/p", "/q")
    vd.mkdir("/d")
    vd.mv("/q", "/d/r")
    assert vd.cat("/p") == b"data" and vd.cat("/d/r") == b"data"
    assert vd.entry("/d/r").id == vd.entry("/p").id
    with pytest.raises(NotFound):
        vd.entry("/q")
    # rename(2) of a name onto another name of the same file changes nothing
    vd.rename("/p", "/d/r")
    assert vd.entry("/p").nlink == 2 and vd.cat("/d/r") == b"data"
    # replacing a linked name removes that name only
    vd.put(b"other", "/o")
    vd.mv("/o", "/d/r", force=True)
    assert vd.cat("/p") == b"data" and vd.entry("/p").nlink == 1 and vd.cat("/d/r") == b"other"


def test_bad_hard_links_are_refused_and_change_nothing(vd: VDir) -> None:
    vd.put(b"1", "/f")
    vd.put(b"2", "/g")
    vd.mkdir("/dir")
    with pytest.raises(NotPermitted) as exc:
        vd.hardlink("/dir", "/dir2")
    assert exc.value.errno == errno.EPERM and "/dir" in str(exc.value)
    with pytest.raises(AlreadyExists):
        vd.hardlink("/f", "/g")
    with pytest.raises(NotFound):
        vd.hardlink("/missing", "/h")
    with pytest.raises(NotFound):
        vd.hardlink("/f", "/nowhere/h")
    assert vd.cat("/g") == b"2" and vd.entry("/f").nlink == 1
    assert sorted(i.name for i in vd.ls("/")) == ["dir", "f", "g"]


def test_du_counts_a_linked_file_once_and_get_r_links_again(vd: VDir, tmp_path: Path) -> None:
    blob = os.urandom(100_000)
    vd.put(blob, "/tree/a.bin")
    vd.mkdir("/tree/sub")
    vd.hardlink("/tree/a.bin", "/tree/sub/b.bin")
    vd.put(b"alone", "/tree/c.txt")
    usage = vd.du("/tree")
    assert usage.files == 2 and usage.bytes == len(blob) + 5
    out = tmp_path / "out"
    written = vd.get("/tree", out, recursive=True)
    a, b = out / "a.bin", out / "sub" / "b.bin"
    assert a.read_bytes() == blob and b.read_bytes() == blob and sorted(written) == sorted([a, b, out / "c.txt"])
    assert os.stat(a).st_ino == os.stat(b).st_ino and os.stat(a).st_nlink == 2  # as cp -a / tar make them
    assert os.stat(out / "c.txt").st_nlink == 1
    # again with --force over what is there: the names are replaced, still one inode
    vd.get("/tree", out, recursive=True, force=True)
    assert os.stat(a).st_ino == os.stat(b).st_ino


def test_placement_and_fsck_see_one_file(vd: VDir) -> None:
    vd.put(os.urandom(10_000), "/data/x.bin")
    vd.hardlink("/data/x.bin", "/data/y.bin")
    apply_policy(vd.catalog, "rules:\n  - name: two\n    match: /data/**\n    copies: 2\n    where: name=local | name=spare\n")
    policy = load_policy(vd.catalog)
    assert policy is not None
    actions = list(planner.plan(vd, policy))
    assert len(actions) == 1  # one inode, one copy to make: not one per name
    planner.queue(vd, iter(actions))
    from tests.placement_helpers import run_once

    assert run_once(vd)["failed"] == 0
    assert sorted(r.backend for r in vd.entry("/data/y.bin").replicas) == ["local", "spare"]
    assert len(objects(vd, "spare")) == 1
    assert list(planner.plan(vd, policy)) == []
    report = fsck(vd, deep=True)
    assert report.problems == [] and report.files == 1


# -- the CLI -------------------------------------------------------------------------------------


def test_cli_ln_ls_stat_du(cli: CLI, tmp_path: Path) -> None:
    cli.run("init", check=True)
    src = tmp_path / "f.txt"
    src.write_bytes(b"hello\n")
    cli.run("put", str(src), "/d/f.txt", check=True)
    cli.run("ln", "/d/f.txt", "/d/g.txt", check=True)
    cli.run("mkdir", "/e", check=True)
    cli.run("ln", "/d/f.txt", "/e", check=True)  # into a directory, as ln(1)
    cli.run("ln", "-s", "../d/f.txt", "/e/s", check=True)
    listing = {ln.split()[-1]: ln.split() for ln in cli.run("ls", "-l", "/d", check=True).stdout.decode().splitlines()}
    assert listing["f.txt"][1] == "3" and listing["g.txt"][1] == "3"
    stat = cli.run("stat", "/e/f.txt", check=True).stdout.decode()
    assert "links: 3" in stat
    assert json.loads(cli.run("stat", "--json", "/d/g.txt", check=True).stdout)["nlink"] == 3
    assert cli.run("cat", "/e/f.txt", check=True).stdout == b"hello\n"
    assert json.loads(cli.run("stat", "--json", "/e/s", check=True).stdout)["target"] == "../d/f.txt"
    du = json.loads(cli.run("du", "--json", "/", check=True).stdout)
    assert du["files"] == 2 and du["bytes"] == 6 + len("../d/f.txt")  # the linked file once, and the symlink
    bad = cli.run("ln", "/d", "/d2")
    assert bad.returncode != 0 and bad.stderr.decode().count("\n") == 1 and "directory" in bad.stderr.decode()
    assert b"Traceback" not in bad.stderr
    exists = cli.run("ln", "/d/f.txt", "/d/g.txt")
    assert exists.returncode != 0 and "exists" in exists.stderr.decode()


# -- a real mount, both engines --------------------------------------------------------------------


@pytest.fixture(params=ENGINES)
def lworld(request: pytest.FixtureRequest, cli: CLI, tmp_path: Path) -> Iterator[World]:
    reason = fuse_usable()
    if reason is not None:
        pytest.fail(f"real FUSE mounts are not possible here: {reason}")
    if request.param == "sqlite":
        cli.run("init", check=True)
    else:
        cli.run("init", "--catalog", str(request.getfixturevalue("mongo_catalog_url")), check=True)
    v = vdir.connect(str(cli.home / ".config" / "vdir" / "config.yaml"))
    try:
        yield World(cli, v, tmp_path)
    finally:
        v.close()


@pytest.mark.fuse
def test_link_on_the_mount_like_a_disk(lworld: World) -> None:
    with mounted(lworld.cli, lworld.tmp / "mnt") as m:
        mnt = m.path
        (mnt / "a").mkdir()
        (mnt / "b").mkdir()
        (mnt / "a" / "f").write_bytes(b"linked content\n")
        os.link(mnt / "a" / "f", mnt / "b" / "g")  # across directories
        fa, fb = os.stat(mnt / "a" / "f"), os.stat(mnt / "b" / "g")
        assert fa.st_ino == fb.st_ino and fa.st_nlink == fb.st_nlink == 2
        assert subprocess.run(["find", str(mnt), "-samefile", str(mnt / "a" / "f")], capture_output=True,
                              text=True, check=True).stdout.split() == sorted([str(mnt / "a" / "f"), str(mnt / "b" / "g")])
        # GNU du counts the inode once
        du = subprocess.run(["du", "-b", "-s", str(mnt)], capture_output=True, text=True, check=True).stdout
        assert int(du.split()[0]) < 2 * len(b"linked content\n") + 4 * 4096
        # a change through one name is seen through the other once committed (closed)
        with open(mnt / "b" / "g", "ab") as f:
            f.write(b"more\n")
        assert (mnt / "a" / "f").read_bytes() == b"linked content\nmore\n"
        # unlink of one name keeps the content; rename of the other moves that name only
        os.unlink(mnt / "a" / "f")
        assert os.stat(mnt / "b" / "g").st_nlink == 1 and (mnt / "b" / "g").read_bytes() == b"linked content\nmore\n"
        os.link(mnt / "b" / "g", mnt / "b" / "h")
        os.rename(mnt / "b" / "g", mnt / "a" / "moved")
        assert os.stat(mnt / "a" / "moved").st_ino == os.stat(mnt / "b" / "h").st_ino
        with pytest.raises(PermissionError):
            os.link(mnt / "a", mnt / "a-dir-link")
        with pytest.raises(FileExistsError):
            os.link(mnt / "b" / "h", mnt / "a" / "moved")
        # the classic git/maildir pattern: write a temp file, link it into place, unlink the temp
        with open(mnt / "tmp_obj", "wb") as f:
            f.write(b"object\n")
            os.link(mnt / "tmp_obj", mnt / "b" / "final")  # while still open and not committed
        os.unlink(mnt / "tmp_obj")
        assert (mnt / "b" / "final").read_bytes() == b"object\n"
    vd = lworld.vd
    assert vd.entry("/a/moved").nlink == 2 and vd.cat("/b/h") == b"linked content\nmore\n"
    assert vd.cat("/b/final") == b"object\n" and vd.entry("/b/final").nlink == 1
    keys = sorted(o.key for o in vd.backend("local").list(""))
    assert len(keys) == 2  # each inode's content stored once


@pytest.mark.fuse
def test_tar_and_rsync_keep_hard_links_from_the_mount(lworld: World) -> None:
    blob = os.urandom(200_000)
    lworld.vd.put(blob, "/src/a.bin")
    lworld.vd.mkdir("/src/sub")
    lworld.vd.hardlink("/src/a.bin", "/src/sub/b.bin")
    with mounted(lworld.cli, lworld.tmp / "mnt") as m:
        archive = lworld.tmp / "src.tar"
        subprocess.run(["tar", "-C", str(m.path), "-cf", str(archive), "src"], check=True)
        with tarfile.open(archive) as tf:
            kinds = {i.name: i.islnk() for i in tf.getmembers() if not i.isdir()}
        assert sorted(kinds.values()) == [False, True]  # the second name is stored as a link
        copy = lworld.tmp / "rsynced"
        subprocess.run(["rsync", "-aH", f"{m.path}/src/", str(copy)], check=True)
        assert os.stat(copy / "a.bin").st_ino == os.stat(copy / "sub" / "b.bin").st_ino
        assert (copy / "sub" / "b.bin").read_bytes() == blob
        # and into the mount: rsync -aH makes the link there
        subprocess.run(["rsync", "-aH", f"{copy}/", f"{m.path}/back"], check=True)
        assert os.stat(m.path / "back" / "a.bin").st_ino == os.stat(m.path / "back" / "sub" / "b.bin").st_ino
    assert lworld.vd.entry("/back/a.bin").nlink == 2



def test_put_r_stores_local_hard_links_once(cli: CLI, tmp_path: Path) -> None:
    cli.run("init", check=True)
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    blob = os.urandom(300_000)
    (src / "a.bin").write_bytes(blob)
    os.link(src / "a.bin", src / "sub" / "b.bin")
    (src / "c.txt").write_bytes(b"single")
    dry = cli.run("put", "-r", "-n", str(src), "/in", check=True).stdout.decode()
    assert "would hard-link /in/sub/b.bin to /in/a.bin" in dry
    said = cli.run("put", "-r", str(src), "/in", check=True).stdout.decode()
    assert "stored 2 file(s), 1 hard link(s)" in said
    v = vdir.connect(str(cli.home / ".config" / "vdir" / "config.yaml"))
    try:
        assert v.entry("/in/a.bin").id == v.entry("/in/sub/b.bin").id and v.entry("/in/a.bin").nlink == 2
        assert v.cat("/in/sub/b.bin") == blob
        assert len([o for o in v.backend("local").list("")]) == 2  # a.bin once, c.txt
    finally:
        v.close()
    # again with --force: the names are replaced and still share one inode
    cli.run("put", "-r", "-f", str(src), "/in", check=True)
    v = vdir.connect(str(cli.home / ".config" / "vdir" / "config.yaml"))
    try:
        assert v.entry("/in/a.bin").id == v.entry("/in/sub/b.bin").id
    finally:
        v.close()
