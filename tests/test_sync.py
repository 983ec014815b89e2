"""``sync`` in every direction, rclone-style filters, ``--dry-run`` on put/get/rm/sync, and
put/get keeping modification times (issue 11, item 2)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.servers.vdirs import CLI
from vdir.catalog.base import open_catalog
from vdir.core import VDir
from vdir.errors import InvalidArgument
from vdir.filters import Filter

OLD = 1_600_000_000.5  # a modification time well in the past, with a fraction


def tree(root: Path, files: dict[str, bytes], mtime: float | None = OLD) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        if mtime is not None:
            os.utime(p, (mtime, mtime))
    return root


def local_state(root: Path) -> dict[str, tuple[bytes, float]]:
    return {p.relative_to(root).as_posix(): (p.read_bytes(), p.stat().st_mtime) for p in sorted(root.rglob("*")) if p.is_file()}


def virtual_state(vd: VDir, root: str) -> dict[str, tuple[bytes, float]]:
    if not vd.exists(root):
        return {}
    return {i.path[len(root.rstrip("/")) + 1:]: (vd.cat(i.path), i.mtime) for i in vd.ls(root, recursive=True) if i.type == "file"}


def object_files(tmp_path: Path) -> set[str]:
    base = tmp_path / "objects"
    return {p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file()}


FILES = {"a.txt": b"alpha", "sub/b.bin": b"b" * 1000, "sub/deep/c.csv": b"x,y\n1,2\n", "tmp/d.tmp": b"scratch"}


# -- filters -------------------------------------------------------------------------------------
def test_filter_globs_follow_rclone() -> None:
    f = Filter.from_rules(exclude=["*.tmp"])
    assert not f.matches("a.tmp", False) and not f.matches("x/y/a.tmp", False)  # unanchored: any depth
    assert f.matches("a.tmpx", False) and f.matches("a.txt", False)
    assert f.matches("dir.tmp", True)  # a file rule does not leave a directory out

    star = Filter.from_rules(exclude=["/sub/*.bin"])
    assert not star.matches("sub/b.bin", False)
    assert star.matches("sub/deep/b.bin", False)  # * stays within one component
    assert star.matches("other/sub/b.bin", False)  # a leading / anchors at the root
    both = Filter.from_rules(exclude=["/sub/**.bin"])
    assert not both.matches("sub/deep/b.bin", False)  # ** crosses /

    dirs = Filter.from_rules(exclude=["cache/"])
    assert not dirs.matches("cache", True) and not dirs.matches("x/cache", True)
    assert not dirs.matches("cache/f", False) and not dirs.matches("x/cache/deep/f", False)  # nothing below it
    assert dirs.matches("cache", False)  # a trailing / matches directories only

    assert Filter.from_rules(exclude=["?.txt"]).matches("ab.txt", False)
    assert not Filter.from_rules(exclude=["{a,b}.txt"]).matches("b.txt", False)
    assert not Filter.from_rules(exclude=["[ab].txt"]).matches("a.txt", False)


def test_filter_rules_apply_in_order_first_match_wins() -> None:
    keep = Filter.from_rules(rules=["+ keep.tmp", "- *.tmp"])
    assert keep.matches("keep.tmp", False) and not keep.matches("other.tmp", False) and keep.matches("a.txt", False)
    drop = Filter.from_rules(rules=["- *.tmp", "+ keep.tmp"])
    assert not drop.matches("keep.tmp", False)
    only = Filter.from_rules(include=["*.csv"])  # any include: everything else is left out
    assert only.matches("sub/deep/c.csv", False) and not only.matches("a.txt", False)
    assert only.matches("sub", True)  # directories are still walked to find the csv files
    inside = Filter.from_rules(include=["/sub/keep.txt"], exclude=["sub/"])  # the include keeps its directory
    assert inside.matches("sub/keep.txt", False) and not inside.matches("sub/other.txt", False)
    with pytest.raises(InvalidArgument):
        Filter.from_rules(rules=["* no sign"])
    with pytest.raises(InvalidArgument):
        Filter.from_rules(exclude=["[unclosed"])


# -- put/get keep mtimes, filters and dry runs on put/get/rm --------------------------------------
def test_put_and_get_keep_modification_times(vd: VDir, tmp_path: Path) -> None:
    src = tree(tmp_path / "src", FILES)
    vd.put(src, "/in", recursive=True)
    vd.put(src / "a.txt", "/single.txt")
    assert vd.stat("/in/sub/deep/c.csv").mtime == pytest.approx(OLD, abs=1e-6)
    assert vd.stat("/single.txt").mtime == pytest.approx(OLD, abs=1e-6)
    vd.get("/in", tmp_path / "back", recursive=True)
    vd.get("/single.txt", tmp_path / "one.txt")
    assert (tmp_path / "back" / "sub" / "b.bin").stat().st_mtime == pytest.approx(OLD, abs=1e-6)
    assert (tmp_path / "one.txt").stat().st_mtime == pytest.approx(OLD, abs=1e-6)


def test_put_get_rm_filters_and_dry_run(vd: VDir, tmp_path: Path) -> None:
    src = tree(tmp_path / "src", FILES)
    assert vd.put(src, "/in", recursive=True, filter=Filter.from_rules(exclude=["*.tmp"]), dry_run=True) == []
    assert not vd.exists("/in") and object_files(tmp_path) == set()
    vd.put(src, "/in", recursive=True, filter=Filter.from_rules(exclude=["*.tmp", "deep/"]))
    assert set(virtual_state(vd, "/in")) == {"a.txt", "sub/b.bin"}

    vd.put(src, "/all", recursive=True)
    planned = vd.get("/all", tmp_path / "out", recursive=True, filter=Filter.from_rules(include=["*.csv"]), dry_run=True)
    assert planned == [tmp_path / "out" / "sub/deep/c.csv"] and not (tmp_path / "out").exists()
    vd.get("/all", tmp_path / "out", recursive=True, filter=Filter.from_rules(include=["*.csv"]))
    assert set(local_state(tmp_path / "out")) == {"sub/deep/c.csv"}

    before, objs = virtual_state(vd, "/all"), object_files(tmp_path)
    assert vd.rm("/all", recursive=True, dry_run=True) == 8  # 4 files, 3 directories, /all
    assert vd.rm("/all", recursive=True, filter=Filter.from_rules(include=["*.tmp"]), dry_run=True) == 1
    assert virtual_state(vd, "/all") == before and object_files(tmp_path) == objs
    assert vd.rm("/all", recursive=True, filter=Filter.from_rules(include=["*.tmp", "*.csv"])) == 2
    assert set(virtual_state(vd, "/all")) == {"a.txt", "sub/b.bin"}
    assert vd.exists("/all/tmp") and vd.exists("/all/sub/deep")  # directories stay, as with rclone delete
    assert len(object_files(tmp_path)) == len(objs) - 2  # their objects went through the safe delete


# -- sync ------------------------------------------------------------------------------------------
def test_sync_local_to_vdir_sends_only_what_changed(vd: VDir, tmp_path: Path) -> None:
    src = tree(tmp_path / "src", FILES)
    first = vd.sync(src, "vdir:/mirror")
    assert sorted(first.copied) == sorted(FILES) and first.skipped == 0
    assert {k: v[0] for k, v in virtual_state(vd, "/mirror").items()} == FILES
    again = vd.sync(str(src), "vdir:/mirror")
    assert again.copied == again.updated == [] and again.skipped == len(FILES)
    (src / "a.txt").write_bytes(b"ALPHA!")  # new size, new mtime
    os.utime(src / "sub/b.bin", (OLD + 10, OLD + 10))  # same size, newer mtime
    third = vd.sync(src, "vdir:/mirror")
    assert sorted(third.updated) == ["a.txt", "sub/b.bin"] and third.skipped == 2
    assert vd.cat("/mirror/a.txt") == b"ALPHA!"
    assert vd.stat("/mirror/sub/b.bin").mtime == pytest.approx(OLD + 10, abs=1e-6)


def test_sync_stores_on_the_backend_named(vd: VDir, tmp_path: Path) -> None:
    src = tree(tmp_path / "src", FILES)
    vd.sync(src, "vdir:/m", backend="spare")
    assert {r["backend"] for i in vd.ls("/m", recursive=True) if i.type == "file" for r in i.replicas} == {"spare"}
    vd.sync("vdir:/m", "vdir:/n", backend="local")
    assert {r["backend"] for i in vd.ls("/n", recursive=True) if i.type == "file" for r in i.replicas} == {"local"}


def test_sync_vdir_to_local_and_vdir_to_vdir(vd: VDir, tmp_path: Path) -> None:
    tree(tmp_path / "src", FILES)
    vd.put(tmp_path / "src", "/data", recursive=True)
    out = tmp_path / "out"
    rep = vd.sync("vdir:/data", out)
    assert sorted(rep.copied) == sorted(FILES)
    assert local_state(out) == {k: (v, pytest.approx(OLD, abs=1e-6)) for k, v in FILES.items()}
    assert vd.sync("vdir:/data", str(out)).skipped == len(FILES)

    copy = vd.sync("vdir:/data", "vdir:/copy", workers=1)
    assert sorted(copy.copied) == sorted(FILES)
    assert virtual_state(vd, "/copy") == virtual_state(vd, "/data")  # bytes and mtimes
    assert vd.sync("vdir:/data", "vdir:/copy").skipped == len(FILES)
    vd.put(b"changed", "/data/a.txt", force=True)
    assert vd.sync("vdir:/data", "vdir:copy").updated == ["a.txt"]
    assert vd.cat("/copy/a.txt") == b"changed"


def test_sync_checksum_compares_hashes(vd: VDir, tmp_path: Path) -> None:
    src = tree(tmp_path / "src", FILES)
    vd.sync(src, "vdir:/m")
    (src / "a.txt").write_bytes(b"ALPHx")  # same size, same mtime, other content
    os.utime(src / "a.txt", (OLD, OLD))
    os.utime(src / "sub/b.bin", (OLD + 99, OLD + 99))  # same content, other mtime
    assert vd.sync(src, "vdir:/m", dry_run=True).updated == ["sub/b.bin"]  # size+mtime misses a.txt
    rep = vd.sync(src, "vdir:/m", checksum=True)
    assert rep.updated == ["a.txt"] and rep.touched == ["sub/b.bin"] and rep.bytes == 5
    assert vd.cat("/m/a.txt") == b"ALPHx"
    assert vd.stat("/m/sub/b.bin").mtime == pytest.approx(OLD + 99, abs=1e-6)
    out = tmp_path / "out"
    vd.sync("vdir:/m", out)
    (out / "a.txt").write_bytes(b"zzzzz")
    os.utime(out / "a.txt", (OLD, OLD))
    assert vd.sync("vdir:/m", out, checksum=True).updated == ["a.txt"]
    assert (out / "a.txt").read_bytes() == b"ALPHx"


def test_sync_delete_removes_extra_files_through_rm(vd: VDir, tmp_path: Path) -> None:
    src = tree(tmp_path / "src", FILES)
    vd.sync(src, "vdir:/m")
    vd.put(b"extra", "/m/gone/extra.txt")
    vd.put(b"kept", "/m/keep.tmp")
    objs = object_files(tmp_path)
    no_delete = vd.sync(src, "vdir:/m")
    assert no_delete.deleted == [] and vd.exists("/m/gone/extra.txt")
    rep = vd.sync(src, "vdir:/m", delete=True, filter=Filter.from_rules(exclude=["*.tmp"]))
    assert rep.deleted == ["gone/extra.txt", "gone"]
    assert not vd.exists("/m/gone") and vd.exists("/m/keep.tmp")  # filtered-out paths are not deleted
    assert len(object_files(tmp_path)) == len(objs) - 1
    out = tmp_path / "out"
    vd.sync("vdir:/m", out)
    (out / "stray.txt").write_bytes(b"stray")
    assert vd.sync("vdir:/m", out, delete=True).deleted == ["stray.txt"]
    assert not (out / "stray.txt").exists()


def test_sync_dry_run_changes_nothing(vd: VDir, tmp_path: Path) -> None:
    src = tree(tmp_path / "src", FILES)
    rep = vd.sync(src, "vdir:/m", dry_run=True)
    assert sorted(rep.copied) == sorted(FILES) and not vd.exists("/m") and object_files(tmp_path) == set()
    vd.sync(src, "vdir:/m")
    vd.put(b"extra", "/m/extra")
    (src / "a.txt").write_bytes(b"new")
    out = tmp_path / "out"
    tree(out, {"stray": b"s"})
    snapshot = (virtual_state(vd, "/m"), object_files(tmp_path), local_state(out))
    for a, b in (("src", "vdir:/m"), ("vdir:/m", "out"), ("vdir:/m", "vdir:/n")):
        rep = vd.sync(tmp_path / a if a == "src" else a, out if b == "out" else b, delete=True, checksum=True, dry_run=True)
        assert rep.dry_run and (rep.copied or rep.updated)
    assert (virtual_state(vd, "/m"), object_files(tmp_path), local_state(out)) == snapshot
    assert not vd.exists("/n")


def test_sync_refuses_bad_input_changing_nothing(vd: VDir, tmp_path: Path) -> None:
    src = tree(tmp_path / "src", {"x": b"file here"})
    vd.mkdir("/m/x", parents=True)
    with pytest.raises(InvalidArgument, match="a file in"):
        vd.sync(src, "vdir:/m")
    with pytest.raises(InvalidArgument, match="local paths"):
        vd.sync(src, tmp_path / "elsewhere")
    with pytest.raises(FileNotFoundError):
        vd.sync(tmp_path / "missing", "vdir:/m")
    assert [i.path for i in vd.ls("/m", recursive=True)] == ["/m/x"]


# -- the command -------------------------------------------------------------------------------------
def test_cli_sync_filters_and_dry_runs(cli: CLI, tmp_path: Path) -> None:
    cli.run("init", check=True)
    src = tree(tmp_path / "src", FILES)
    dry = cli.run("sync", "--dry-run", "--exclude", "tmp/", str(src), "vdir:/m", check=True).stdout.decode()
    assert "would copy a.txt" in dry and "d.tmp" not in dry
    assert cli.run("ls", "/m").returncode != 0  # nothing was made
    rep = json.loads(cli.run("sync", "--json", "--exclude", "tmp/", str(src), "vdir:/m", check=True).stdout)
    assert sorted(rep["copied"]) == ["a.txt", "sub/b.bin", "sub/deep/c.csv"]
    listing = cli.run("rm", "-r", "-n", "--include", "*.csv", "/m", check=True).stdout.decode()
    assert "would remove /m/sub/deep/c.csv" in listing
    cli.run("rm", "-r", "--include", "*.csv", "/m", check=True)
    out = tmp_path / "out"
    cli.run("sync", "vdir:/m", str(out), check=True)
    assert sorted(local_state(out)) == ["a.txt", "sub/b.bin"]
    assert (out / "a.txt").stat().st_mtime == pytest.approx(OLD, abs=1e-6)
    bad = cli.run("sync", str(src), str(out))
    assert bad.returncode == 1 and bad.stderr.decode().count("\n") == 1 and "vdir:/path" in bad.stderr.decode()


def test_cli_sync_resumes_after_kill_without_resending(cli: CLI, tmp_path: Path) -> None:
    cli.run("init", check=True)
    n = 1500
    src = tree(tmp_path / "src", {f"d{i % 10}/f{i:05d}.txt": f"file {i}\n".encode() for i in range(n)})
    catalog = cli.home / ".local" / "share" / "vdir" / "catalog.db"
    proc = cli.popen("sync", "-j", "1", str(src), "vdir:/m")
    committed = 0
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if catalog.exists():
                with VDir(open_catalog(f"sqlite:///{catalog}")) as watch:
                    committed = sum(1 for i in watch.iter_ls("/m", recursive=True) if i.type == "file") if watch.exists("/m") else 0
            if committed >= 100:
                break
            time.sleep(0.02)  # polling interval, not synchronisation: the loop waits for a count
        assert proc.poll() is None, "the sync finished before it could be interrupted"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    with VDir(open_catalog(f"sqlite:///{catalog}")) as after:
        stored = {i.path[3:] for i in after.iter_ls("/m", recursive=True) if i.type == "file"}
    assert 100 <= len(stored) < n
    rep = json.loads(cli.run("sync", "--json", str(src), "vdir:/m", check=True).stdout)
    assert rep["updated"] == [] and rep["skipped"] == len(stored)
    assert sorted(rep["copied"]) == sorted(set(local_state(src)) - stored)  # only the rest was sent
    back = tmp_path / "back"
    cli.run("get", "-r", "/m", str(back), check=True)
    assert {k: v[0] for k, v in local_state(back).items()} == {k: v[0] for k, v in local_state(src).items()}
