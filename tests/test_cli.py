"""The vdir command as a user meets it: one-line errors, exit codes, --json, no tracebacks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import xxhash

from tests.servers.vdirs import CLI, fails, ok


def test_version_says_which_program(cli: CLI) -> None:
    out = ok(cli, "--version")
    assert "vdir 0.1.0" in out and "not GNU coreutils" in out


def test_init_is_idempotent_and_end_to_end(cli: CLI, tmp_path: Path) -> None:
    assert "created" in ok(cli, "init")
    assert "already set up" in ok(cli, "init")
    conf = cli.home / ".config" / "vdir" / "config.yaml"
    assert oct(conf.stat().st_mode & 0o777) == "0o600"
    src = tmp_path / "data"
    (src / "deep").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"alpha\n")
    blob = os.urandom(2_000_000)
    (src / "deep" / "b.bin").write_bytes(blob)
    ok(cli, "put", "-r", str(src), "/proj/")
    listing = ok(cli, "ls", "-l", "-R", "/proj")
    assert "/proj/data/deep/b.bin" in listing and "2000000" in listing and "local" in listing
    assert xxhash.xxh3_128_hexdigest(blob)[:16] in listing
    rows = json.loads(ok(cli, "ls", "--json", "/proj/data"))
    assert [r["name"] for r in rows] == ["a.txt", "deep"]
    st = json.loads(ok(cli, "stat", "--json", "/proj/data/deep/b.bin"))
    assert st["hash"] == xxhash.xxh3_128_hexdigest(blob) and st["replicas"][0]["backend"] == "local"
    assert cli.run("cat", "/proj/data/a.txt", check=True).stdout == b"alpha\n"
    ok(cli, "get", "-r", "/proj/data", str(tmp_path / "back"))
    assert (tmp_path / "back" / "deep" / "b.bin").read_bytes() == blob
    du = json.loads(ok(cli, "du", "--json", "/proj"))
    assert du["files"] == 2 and du["bytes"] == len(blob) + 6
    ok(cli, "mv", "/proj/data", "/renamed")
    ok(cli, "mkdir", "-p", "/x/y/z")
    fails(cli, "rm", "/renamed")  # non-empty directory
    ok(cli, "rm", "-r", "/renamed")
    assert cli.run("fsck").returncode == 0


def test_user_errors_are_one_line(cli: CLI, tmp_path: Path) -> None:
    ok(cli, "init")
    (tmp_path / "f").write_bytes(b"f")
    ok(cli, "put", str(tmp_path / "f"), "/f")
    assert "exists" in fails(cli, "put", str(tmp_path / "f"), "/f")
    ok(cli, "put", "--force", str(tmp_path / "f"), "/f")
    assert "no such local file" in fails(cli, "put", str(tmp_path / "missing"), "/m")
    assert "not a directory" in fails(cli, "put", str(tmp_path / "f"), "/f/inner")
    assert "traversal" in fails(cli, "put", str(tmp_path / "f"), "/a/../../etc")
    assert "empty component" in fails(cli, "ls", "/a//b")
    assert "bytes long" in fails(cli, "put", str(tmp_path / "f"), "/" + "n" * 300)
    assert "unknown backend" in fails(cli, "put", "--backend", "mars", str(tmp_path / "f"), "/g")
    assert "no such file" in fails(cli, "cat", "/nothing")
    fails(cli, "mv", "/", "/x")
    ok(cli, "mkdir", "/d")
    assert "into itself" in fails(cli, "mv", "/d", "/d/e")
    assert "is a directory" in fails(cli, "put", str(tmp_path), "/dir")
    fails(cli, "put", str(tmp_path / "f"), code=2)  # usage error: no destination
    assert "unexpected extra argument" in fails(cli, "stat", "/", "/x", code=2)  # typer's own usage errors too


def test_non_utf8_local_names(cli: CLI, tmp_path: Path) -> None:
    ok(cli, "init")
    d = os.path.join(os.fsencode(tmp_path), b"tree")
    os.mkdir(d)
    with open(os.path.join(d, b"caf\xe9.txt"), "wb") as f:
        f.write(b"latin-1")
    assert "UTF-8" in fails(cli, "put", "-r", d, "/t")
    assert ok(cli, "ls", "/") == ""  # nothing written half-way


def test_corrupt_catalog_is_one_line(cli: CLI) -> None:
    ok(cli, "init")
    db = cli.home / ".local" / "share" / "vdir" / "catalog.db"
    db.write_bytes(b"this is not a database" * 100)
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    err = fails(cli, "ls", "/")
    assert "catalog" in err.lower()


def test_bad_config_is_one_line(cli: CLI) -> None:
    conf = cli.home / ".config" / "vdir" / "config.yaml"
    assert "vdir init" in fails(cli, "ls")
    conf.parent.mkdir(parents=True)
    conf.write_text("catalog: [unclosed\n")
    assert "not valid YAML" in fails(cli, "ls")


def test_backend_add_list_rm(cli: CLI, tmp_path: Path) -> None:
    ok(cli, "init")
    ok(cli, "backend", "add", "cold", f"file://{tmp_path / 'cold'}", "--region", "basement", "--tier", "cold")
    rows = {r["name"]: r for r in json.loads(ok(cli, "backend", "list", "--json"))}
    assert rows["cold"]["region"] == "basement" and rows["cold"]["tier"] == "cold" and rows["local"]["default"]
    (tmp_path / "f").write_bytes(b"data")
    ok(cli, "put", "--backend", "cold", str(tmp_path / "f"), "/f")
    assert "holds 1 replica" in fails(cli, "backend", "rm", "cold")
    assert "exists" in fails(cli, "backend", "add", "cold", f"file://{tmp_path / 'x'}")
    assert "unknown backend scheme" in fails(cli, "backend", "add", "weird", "ftp://host/x")
    ok(cli, "backend", "rm", "--force", "cold")
    assert "cold" not in ok(cli, "backend", "list")


def test_link_and_import(cli: CLI, tmp_path: Path) -> None:
    ok(cli, "init")
    store = tmp_path / "bucket"
    (store / "raw").mkdir(parents=True)
    (store / "raw" / "a.csv").write_bytes(b"x,y\n")
    (store / "raw" / "b.csv").write_bytes(b"z,w\n")
    ok(cli, "backend", "add", "ext", f"file://{store}")
    ok(cli, "link", f"file://{store}/raw/a.csv", "/one.csv")
    assert cli.run("cat", "/one.csv", check=True).stdout == b"x,y\n"
    ok(cli, "import", "--hash", f"file://{store}/raw", "/imported")
    assert ok(cli, "ls", "/imported").split() == ["a.csv", "b.csv"]
    assert (store / "raw" / "a.csv").exists()
