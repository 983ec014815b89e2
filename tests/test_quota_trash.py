"""Quotas and the trash, in the core (every front end honours them), on both catalog engines:
a refused write leaves nothing behind, a restore brings back the exact content and replicas,
placement and fsck never delete a trashed file's objects, expiry does."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers.vdirs import CLI, fails, ok
from vdir.access import Accounts
from vdir.admin import add_backend
from vdir.catalog import open_catalog
from vdir.core import VDir
from vdir.errors import AlreadyExists, InvalidPath, NoSpace, NotFound
from vdir.fsck import fsck
from vdir.placement import planner
from vdir.placement.daemon import Daemon, DaemonOptions
from vdir.placement.policy import apply_policy, load_policy
from vdir.trash import TRASH_PATH


@pytest.fixture
def world(catalog_url: str, tmp_path: Path) -> Iterator[tuple[VDir, Accounts, Path]]:
    for d in ("objects", "spare"):
        (tmp_path / d).mkdir()
    vd = VDir(open_catalog(catalog_url), default_backend="local")
    add_backend(vd, "local", f"file://{tmp_path / 'objects'}", check=False)
    add_backend(vd, "spare", f"file://{tmp_path / 'spare'}", check=False, region="elsewhere")
    acc = Accounts(vd.catalog)
    acc.add_user("alice")
    acc.add_user("bob")
    acc.create_project("alpha", ["/alpha"], quota_bytes=100)
    acc.create_project("beta", ["/beta"])
    acc.grant("alpha", "alice", "editor")
    acc.grant("beta", "bob", "editor")
    try:
        yield vd, acc, tmp_path / "objects"
    finally:
        vd.close()


def login(vd: VDir, acc: Accounts, user: str) -> VDir:
    return vd.as_user(acc.authenticate(acc.create_token(user)[0]))


def stored(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


class OneWay(io.RawIOBase):
    """A stream of unknown size that cannot be rewound (a socket, a pipe)."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buf: bytearray | memoryview) -> int:  # type: ignore[override]
        chunk = self._data.read(len(buf))
        buf[: len(chunk)] = chunk
        return len(chunk)


def test_quota_refusal_leaves_no_entry_and_no_object(world: tuple[VDir, Accounts, Path], tmp_path: Path) -> None:
    vd, acc, folder = world
    alice = login(vd, acc, "alice")
    alice.put(b"a" * 60, "/alpha/first")
    before = stored(folder)
    local = tmp_path / "big.bin"
    local.write_bytes(b"b" * 60)
    for attempt in (lambda: alice.put(b"b" * 60, "/alpha/second"),            # size known: before any byte
                    lambda: alice.put(local, "/alpha/second"),                  # a local file
                    lambda: alice.write_stream("/alpha/second", OneWay(b"b" * 60)),  # unknown size: before the commit
                    lambda: alice.put(tmp_path, "/alpha/tree", recursive=True)):  # a whole tree, before any byte
        with pytest.raises(NoSpace) as info:
            attempt()
        assert "quota of project alpha exceeded (used 60 of 100 bytes)" in str(info.value)
        assert not alice.exists("/alpha/second") and not alice.exists("/alpha/tree/big.bin")
        assert stored(folder) == before
    assert acc.usage("alpha") == {"project": "alpha", "bytes": 60, "files": 1, "quota_bytes": 100, "quota_files": None}
    alice.put(b"c" * 90, "/alpha/first", force=True)  # a replacement is charged the difference
    with pytest.raises(NoSpace):
        alice.put(b"c" * 101, "/alpha/first", force=True)
    assert alice.cat("/alpha/first") == b"c" * 90
    # beta has no quota; alpha's quota is alpha's
    login(vd, acc, "bob").put(b"x" * 1000, "/beta/big")


def test_copies_and_moves_into_a_project_are_charged(world: tuple[VDir, Accounts, Path]) -> None:
    vd, acc, folder = world
    acc.grant("beta", "alice", "editor")
    alice = login(vd, acc, "alice")
    alice.put(b"a" * 60, "/alpha/first")
    alice.put(b"b" * 60, "/beta/big")
    alice.put(b"c" * 10, "/beta/small/f")
    before = stored(folder)
    with pytest.raises(NoSpace, match="quota of project alpha exceeded"):
        alice.copy("/alpha/first", "/alpha/second")  # server-side on a local folder: no upload to check
    with pytest.raises(NoSpace):
        alice.mv("/beta/big", "/alpha/big")
    with pytest.raises(NoSpace):
        alice.copy("/beta", "/alpha/all", recursive=True)
    assert stored(folder) == before and [i.name for i in alice.ls("/alpha")] == ["first"]
    alice.mv("/beta/small", "/alpha/small")  # 10 bytes fit
    assert acc.usage("alpha")["bytes"] == 70


def test_quota_counts_every_copy_the_policy_asks_for_and_files(world: tuple[VDir, Accounts, Path]) -> None:
    vd, acc, _ = world
    alice = login(vd, acc, "alice")
    alice.put(b"a" * 30, "/alpha/one")
    apply_policy(vd.catalog, "rules:\n  - match: /alpha/**\n    copies: 2\n    where: name=local | name=spare\n")
    assert acc.usage("alpha")["bytes"] == 60
    alice = login(vd, acc, "alice")
    with pytest.raises(NoSpace, match=r"used 60 of 100 bytes"):
        alice.put(b"b" * 30, "/alpha/two")  # 60 more with its two copies
    alice.put(b"b" * 20, "/alpha/two")
    acc.set_quota("alpha", bytes=None, files=2)
    alice = login(vd, acc, "alice")
    with pytest.raises(NoSpace, match=r"used 2 of 2 files"):
        alice.put(b"", "/alpha/three")
    assert acc.usage("alpha")["files"] == 2


@pytest.fixture
def trashy(world: tuple[VDir, Accounts, Path]) -> tuple[VDir, Accounts, Path]:
    vd = world[0]
    vd.set_trash_keep(3600)
    return world


def test_trash_round_trip_restores_the_exact_version_and_replicas(trashy: tuple[VDir, Accounts, Path]) -> None:
    vd, acc, folder = trashy
    alice = login(vd, acc, "alice")
    alice.put(b"version one", "/alpha/doc")
    alice.put(b"version two!", "/alpha/doc", force=True)
    before = alice.stat("/alpha/doc")
    objects = stored(folder)
    assert alice.rm("/alpha/doc") == 1
    assert not alice.exists("/alpha/doc") and [i.name for i in alice.ls("/alpha")] == []
    assert stored(folder) == objects  # nothing deleted yet
    [item] = alice.trash_list()
    assert item["path"] == "/alpha/doc" and item["size"] == 12 and item["deleted_by"] == "alice"
    assert item["expires_at"] == pytest.approx(item["deleted_at"] + 3600)
    assert login(vd, acc, "bob").trash_list() == []  # another project's trash is invisible too
    with pytest.raises(NotFound):
        login(vd, acc, "bob").trash_restore(item["id"])
    restored = alice.trash_restore(item["id"])
    after = alice.stat("/alpha/doc")
    assert (after.hash, after.size, after.replicas, after.inode) == (before.hash, before.size, before.replicas, before.inode)
    assert alice.cat("/alpha/doc") == b"version two!" and restored.hash == before.hash
    assert alice.trash_list() == []


def test_trash_restore_to_a_taken_path_and_elsewhere_and_directories(trashy: tuple[VDir, Accounts, Path]) -> None:
    vd, acc, _ = trashy
    alice = login(vd, acc, "alice")
    alice.put(b"tree file", "/alpha/tree/sub/f")
    alice.rm("/alpha/tree", recursive=True)
    alice.put(b"squatter", "/alpha/tree")
    [item] = alice.trash_list()
    assert item["type"] == "dir" and item["files"] == 1
    with pytest.raises(AlreadyExists, match="restore it elsewhere"):
        alice.trash_restore(item["id"])
    alice.trash_restore(item["id"], to="/alpha/back")
    assert alice.cat("/alpha/back/sub/f") == b"tree file"
    with pytest.raises(NotFound):  # the other project is not a place to restore to
        alice.trash_restore(item["id"], to="/beta/x")


def test_trash_is_hidden_from_every_path(trashy: tuple[VDir, Accounts, Path]) -> None:
    vd, _, _ = trashy
    vd.put(b"x", "/top")
    vd.rm("/top")
    assert [i.name for i in vd.ls("/")] == ["alpha", "beta"]
    assert all(not i.path.startswith(TRASH_PATH) for i in vd.ls("/", recursive=True))
    assert all(not i.path.startswith(TRASH_PATH) for i in vd.find("/"))
    assert vd.glob("/.vdir*") == [] and vd.du("/").files == 0
    for call in (vd.stat, vd.ls, vd.cat):
        with pytest.raises(NotFound):
            call(TRASH_PATH)
    with pytest.raises(InvalidPath):
        vd.put(b"x", TRASH_PATH + "/planted")
    assert vd.child(1, ".vdir-trash") is None and ".vdir-trash" not in [e.name for e in vd.children(1)]


def test_trash_off_rm_deletes_as_before(world: tuple[VDir, Accounts, Path]) -> None:
    vd, acc, folder = world
    assert vd.trash_keep == 0
    vd.put(b"gone", "/beta/f")
    vd.rm("/beta/f")
    assert stored(folder) == [] and vd.trash_list() == []
    assert vd.catalog.lookup(1, ".vdir-trash") is None


def test_placement_and_fsck_keep_trashed_replicas_until_expiry(trashy: tuple[VDir, Accounts, Path],
                                                              tmp_path: Path) -> None:
    vd, acc, folder = trashy
    vd.put(b"keep me", "/beta/f")
    vd.rm("/beta/f")
    vd.put(b"live", "/beta/live")
    assert stored(folder) == ["beta/f", "beta/live"]
    # a policy that wants everything on 'spare' only: the live file is copied there and
    # trimmed from 'local'; the trashed one is left alone
    apply_policy(vd.catalog, "rules:\n  - match: /**\n    copies: 1\n    where: name=spare\n")
    policy = load_policy(vd.catalog)
    assert policy is not None
    assert [(a.kind, a.path) for a in planner.plan(vd, policy)] == [("replicate", "/beta/live")]
    for _ in range(3):  # replicate, verify, trim
        Daemon(vd, DaemonOptions(once=True)).run()
    assert [r["backend"] for r in vd.stat("/beta/live").replicas] == ["spare"]
    report = fsck(vd, gc=True, min_age=0)
    assert report.exit_code == 0 and report.deleted_orphans == 0
    assert stored(folder) == ["beta/f"]
    # expiry: the daemon's loop purges the item and deletes the object
    [item] = vd.trash_list()
    doc, version = vd.catalog.get_record("trash", item["id"])
    vd.catalog.put_record("trash", item["id"], dict(doc, expires_at=doc["deleted_at"] - 1), expected_version=version)
    Daemon(vd, DaemonOptions(once=True)).run()
    assert stored(folder) == [] and vd.trash_list() == []
    assert fsck(vd).exit_code == 0 and vd.catalog.replica_users("local", "beta/f") == []


def test_trash_empty_expired_only_or_all(trashy: tuple[VDir, Accounts, Path]) -> None:
    vd, acc, folder = trashy
    alice = login(vd, acc, "alice")
    alice.put(b"1", "/alpha/one")
    alice.put(b"2", "/alpha/two")
    login(vd, acc, "bob").put(b"3", "/beta/three")
    alice.rm("/alpha/one")
    alice.rm("/alpha/two")
    vd.rm("/beta/three")
    assert alice.trash_empty() == 0  # nothing expired
    assert alice.trash_empty(all=True) == 2  # alice's own only
    assert stored(folder) == ["beta/three"]
    assert [i["path"] for i in vd.trash_list()] == ["/beta/three"]
    vd.set_trash_keep(0)
    vd.put(b"4", "/beta/four")
    vd.rm("/beta/four")  # off again: deleted at once
    assert stored(folder) == ["beta/three"]


def test_cli_trash(cli: CLI) -> None:
    ok(cli, "init")
    assert "trash is off" in ok(cli, "trash", "keep")
    (cli.home / "f").write_bytes(b"precious")
    ok(cli, "put", str(cli.home / "f"), "/d/f")
    ok(cli, "rm", "/d/f")
    assert ok(cli, "trash", "list") == ""  # off: deleted
    assert "7d" in ok(cli, "trash", "keep", "7d")
    ok(cli, "put", str(cli.home / "f"), "/d/f")
    ok(cli, "rm", "-r", "/d")
    assert ok(cli, "ls", "/") == ""
    [item] = json.loads(ok(cli, "trash", "list", "--json"))
    assert item["path"] == "/d" and item["files"] == 1
    assert "/d" in ok(cli, "trash", "list")
    assert "restored /d" in ok(cli, "trash", "restore", item["id"])
    assert cli.run("cat", "/d/f", check=True).stdout == b"precious"
    assert "no trash item" in fails(cli, "trash", "restore", item["id"])
    ok(cli, "rm", "-r", "/d")
    ok(cli, "mkdir", "/d")
    [item] = json.loads(ok(cli, "trash", "list", "--json"))
    assert "/d: exists" in fails(cli, "trash", "restore", item["id"])
    assert "purged 0 item(s)" in ok(cli, "trash", "empty")
    assert "purged 1 item(s)" in ok(cli, "trash", "empty", "--all")
    assert ok(cli, "trash", "list") == ""
    assert not any((cli.home / ".local" / "share" / "vdir").rglob("f"))  # the object went with it
    assert cli.run("fsck").returncode == 0


def test_a_trim_queued_before_the_rm_keeps_the_trashed_replica(trashy: tuple[VDir, Accounts, Path]) -> None:
    vd, _, folder = trashy
    vd.put(b"two copies", "/beta/f")
    apply_policy(vd.catalog, "rules:\n  - match: /**\n    copies: 2\n    where: name=local | name=spare\n")
    Daemon(vd, DaemonOptions(once=True)).run()
    assert sorted(r["backend"] for r in vd.stat("/beta/f").replicas) == ["local", "spare"]
    apply_policy(vd.catalog, "rules:\n  - match: /**\n    copies: 1\n    where: name=spare\n")
    policy = load_policy(vd.catalog)
    assert policy is not None
    actions = list(planner.plan(vd, policy))
    assert [(a.kind, a.backend) for a in actions] == [("trim", "local")]
    planner.queue(vd, iter(actions))
    vd.rm("/beta/f")
    Daemon(vd, DaemonOptions(once=True)).run()
    assert stored(folder) == ["beta/f"]
    [item] = vd.trash_list()
    vd.trash_restore(item["id"])
    assert sorted(r["backend"] for r in vd.stat("/beta/f").replicas) == ["local", "spare"]
    assert vd.cat("/beta/f") == b"two copies"
