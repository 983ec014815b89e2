"""The CLI never does something silently wrong: get never writes through symlinks, a missing or
foreign catalog is an error, put -r keeps symlinks, names are printed escaped, and help screens
read like a Unix tool's (issue 10 items 7, 9, 11; issue 11 item 1)."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

import vdir
from tests.servers.vdirs import CLI, fails, ok


def config_file(cli: CLI) -> Path:
    return cli.home / ".config" / "vdir" / "config.yaml"


def data_dir(cli: CLI) -> Path:
    return cli.home / ".local" / "share" / "vdir"


def set_catalog(cli: CLI, url: str) -> None:
    conf = yaml.safe_load(config_file(cli).read_text())
    conf["catalog"] = url
    config_file(cli).write_text(yaml.safe_dump(conf))


def connect(cli: CLI) -> vdir.VDir:
    return vdir.connect(str(config_file(cli)))


# -- item 7: get never writes outside its destination ----------------------------------------
@pytest.mark.parametrize("absolute", [True, False], ids=["absolute-link", "relative-link"])
@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
def test_get_r_never_writes_through_a_symlink_an_earlier_get_left(cli: CLI, tmp_path: Path, absolute: bool, force: bool) -> None:
    ok(cli, "init")
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    with connect(cli) as vd:
        vd.mkdir("/d")
        # dest/d/link -> outside, by absolute path or by ../../outside
        vd.symlink(str(outside) if absolute else "../../outside", "/d/link")
    ok(cli, "get", "-r", "/d", str(dest))
    assert (dest / "d" / "link").is_symlink() and (dest / "d" / "link").resolve() == outside.resolve()
    with connect(cli) as vd:  # the catalog changes: link becomes a directory with a file in it
        vd.rm("/d/link")
        vd.mkdir("/d/link")
        vd.put(b"owned", "/d/link/f")
    err = fails(cli, "get", "-r", *(["-f"] if force else []), "/d", str(dest))
    assert "symbolic link" in err and "link" in err
    assert list(outside.iterdir()) == []  # nothing written through the link
    assert (dest / "d" / "link").is_symlink()  # and the link itself is left alone


def test_get_r_refuses_a_symlink_where_its_directory_goes(cli: CLI, tmp_path: Path) -> None:
    ok(cli, "init")
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "d").symlink_to(outside)  # what get -r /d dest would create, already a link
    with connect(cli) as vd:
        vd.mkdir("/d/sub", parents=True)
        vd.put(b"x", "/d/sub/f")
    assert "symbolic link" in fails(cli, "get", "-r", "-f", "/d", str(dest))
    assert list(outside.iterdir()) == []


def test_get_force_replaces_a_symlink_never_its_target(cli: CLI, tmp_path: Path) -> None:
    ok(cli, "init")
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    dest = tmp_path / "dest"
    (dest / "d").mkdir(parents=True)
    (dest / "d" / "f").symlink_to(victim)
    (dest / "one").symlink_to(victim)
    with connect(cli) as vd:
        vd.mkdir("/d")
        vd.put(b"new", "/d/f")
    ok(cli, "get", "-f", "/d/f", str(dest / "one"))
    ok(cli, "get", "-r", "-f", "/d", str(dest))
    assert victim.read_bytes() == b"precious"
    for p in (dest / "one", dest / "d" / "f"):
        assert not p.is_symlink() and p.read_bytes() == b"new"


# -- item 9: a missing, mistyped or foreign catalog is an error --------------------------------
def test_missing_catalog_is_an_error_for_every_command_but_init(cli: CLI, tmp_path: Path) -> None:
    ok(cli, "init")
    typo = data_dir(cli) / "catalgo.db"
    for url in (f"sqlite:///{tmp_path}/missing/dir/catalog.db", f"sqlite:///{typo}"):
        set_catalog(cli, url)
        for args in (("ls", "/"), ("du",), ("fsck",), ("backend", "list")):
            err = fails(cli, *args)
            assert "does not exist" in err and "vdir init" in err, err
    assert not typo.exists()  # nothing was created


def test_init_writes_its_config_only_once_the_catalog_opens(cli: CLI, tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("shopping list\n" * 100)
    assert "not" in fails(cli, "init", "--catalog", f"sqlite:///{text}")
    assert not config_file(cli).exists()
    assert text.read_text() == "shopping list\n" * 100
    fails(cli, "init", "--catalog", f"sqlite:///{tmp_path}/no/such/dir/c.db")
    assert not config_file(cli).exists()
    ok(cli, "init", "--catalog", f"sqlite:///{tmp_path}/mine.db")
    assert yaml.safe_load(config_file(cli).read_text())["catalog"] == f"sqlite:///{tmp_path}/mine.db"


def test_init_catalog_on_an_existing_config_refuses_and_says_so(cli: CLI, tmp_path: Path) -> None:
    ok(cli, "init")
    before = config_file(cli).read_text()
    err = fails(cli, "init", "--catalog", f"sqlite:///{tmp_path}/other.db")
    assert str(config_file(cli)) in err and "already" in err
    assert config_file(cli).read_text() == before
    assert not (tmp_path / "other.db").exists()
    same = yaml.safe_load(before)["catalog"]
    assert "already set up" in ok(cli, "init", "--catalog", same)


def test_a_sqlite_file_of_another_app_is_refused_not_extended(cli: CLI, tmp_path: Path) -> None:
    ok(cli, "init")
    other = tmp_path / "photos.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE albums (name TEXT)")
        db.execute("INSERT INTO albums VALUES ('summer')")
    db.close()
    set_catalog(cli, f"sqlite:///{other}")
    assert "not a vdir catalog" in fails(cli, "ls", "/")
    assert "not a vdir catalog" in fails(cli, "init")
    with sqlite3.connect(other) as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    db.close()
    assert tables == {"albums"}


# -- item 9: put -r keeps symlinks (cp -r), -L follows them ------------------------------------
def _tree_with_links(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "real").mkdir(parents=True)
    (src / "real" / "a.txt").write_bytes(b"alpha")
    (src / "dirlink").symlink_to("real")
    (src / "filelink").symlink_to("real/a.txt")
    (tmp_path / "toplink").symlink_to("src")
    return src


def test_put_r_stores_symlinks_as_symlinks(cli: CLI, tmp_path: Path) -> None:
    ok(cli, "init")
    src = _tree_with_links(tmp_path)
    ok(cli, "put", "-r", str(src), "/s")
    rows = {r["name"]: r for r in json.loads(ok(cli, "ls", "--json", "/s"))}
    assert rows["dirlink"]["type"] == "symlink" and rows["dirlink"]["target"] == "real"
    assert rows["filelink"]["type"] == "symlink" and rows["filelink"]["target"] == "real/a.txt"
    assert rows["real"]["type"] == "dir"
    ok(cli, "put", "-r", str(src), "/")
    (src / "filelink").unlink()
    (src / "filelink").symlink_to("elsewhere")
    assert "exists" in fails(cli, "put", "-r", str(src), "/")
    ok(cli, "put", "-r", "-f", str(src), "/")  # --force replaces the stored link
    assert json.loads(ok(cli, "stat", "--json", "/src/filelink"))["target"] == "elsewhere"
    ok(cli, "put", "-r", str(tmp_path / "toplink"), "/top")  # a symlinked directory named on the command line
    assert json.loads(ok(cli, "stat", "--json", "/top"))["target"] == "src"


def test_put_r_L_follows_symlinks_like_cp(cli: CLI, tmp_path: Path) -> None:
    ok(cli, "init")
    src = _tree_with_links(tmp_path)
    ok(cli, "put", "-r", "-L", str(src), "/s")
    rows = {r["name"]: r for r in json.loads(ok(cli, "ls", "--json", "/s"))}
    assert rows["dirlink"]["type"] == "dir" and rows["filelink"]["type"] == "file"
    assert cli.run("cat", "/s/dirlink/a.txt", check=True).stdout == b"alpha"
    (src / "real" / "loop").symlink_to("..")
    assert "loop" in fails(cli, "put", "-r", "-L", str(src), "/t")
    assert "t" not in {r["name"] for r in json.loads(ok(cli, "ls", "--json", "/"))}  # nothing half-written


# -- item 11: names are printed escaped -----------------------------------------------------
NASTY = ["\x1b[31mred", "a\nb", "cr\rx", "tab\there", "bell\x07", "del\x7f", "c1\x9bx"]


def test_names_with_control_characters_are_printed_escaped(cli: CLI, tmp_path: Path) -> None:
    ok(cli, "init")
    with connect(cli) as vd:
        vd.mkdir("/d")
        for i, name in enumerate(NASTY):
            vd.put(b"x" * i, f"/d/{name}")
        vd.symlink("\x1b]0;title\x07", "/d/link")
    outputs = [ok(cli, "ls", "/d"), ok(cli, "ls", "-l", "/d"), ok(cli, "ls", "-R", "/"),
               ok(cli, "stat", "/d/\x1b[31mred"), ok(cli, "stat", "/d/link")]
    for text in outputs:
        assert not any(ord(c) < 0x20 and c != "\n" or 0x7f <= ord(c) < 0xa0 for c in text), repr(text)
    listing = outputs[0].splitlines()
    assert len(listing) == len(NASTY) + 1  # one line per name: no newline got through
    for shown in ("\\x1b[31mred", "a\\nb", "cr\\rx", "tab\\there", "bell\\a", "del\\x7f", "c1\\x9bx"):
        assert shown in listing, (shown, listing)
    assert "-> \\x1b]0;title\\a" in outputs[1]
    # JSON stays exact
    assert {r["name"] for r in json.loads(ok(cli, "ls", "--json", "/d"))} == {*NASTY, "link"}
    # errors (and the paths they name) are escaped too
    err = fails(cli, "cat", "/d/no\x1b[2Jsuch")
    assert "\x1b" not in err and "no\\x1b[2Jsuch" in err


def test_log_lines_and_tracebacks_escape_names(cli: CLI, tmp_path: Path) -> None:
    ok(cli, "init")
    name = "/evil\x1b[2J\nname"
    with connect(cli) as vd:
        vd.put(b"good bytes", name)
        replica = vd.stat(name).replicas[0]
    (data_dir(cli) / "objects" / replica["key"]).write_bytes(b"evil bytes")  # the warning names the path
    for args in (("cat", name), ("-v", "cat", name)):
        proc = cli.run(*args)
        err = proc.stderr.decode()
        assert proc.returncode == 1 and "corrupt" in err, err
        assert "\x1b" not in err and "evil\\x1b[2J\\nname" in err, err
        warning = [line for line in err.splitlines() if "WARNING" in line]
        assert warning and "evil\\x1b[2J\\nname: replica on local is corrupt" in warning[0], err


# -- issue 11 item 1: help screens ------------------------------------------------------------
def _commands() -> list[list[str]]:
    from typer.main import get_command

    from cli.main import app

    found: list[list[str]] = []

    def walk(cmd: object, path: list[str]) -> None:
        found.append(path)
        for name, sub in sorted(getattr(cmd, "commands", {}).items()):
            if not getattr(sub, "hidden", False):
                walk(sub, [*path, name])

    walk(get_command(app), [])
    return found


@pytest.fixture
def keep_logging() -> Iterator[None]:
    """cli.main.main() run in this process sets up the root logger; put it back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_help_screens_read_like_a_unix_tool(capsys: pytest.CaptureFixture[str], keep_logging: None) -> None:
    import re

    from cli.main import main

    commands = _commands()
    assert ["put"] in commands and ["backend", "add"] in commands and ["mount"] in commands
    for path in commands:
        assert main([*path, "--help"]) == 0, path
        text = capsys.readouterr().out
        assert text.startswith("Usage: vdir"), (path, text[:200])
        for marker in ("<bool>", "<str>", "<int>", "<float>", "list[", "{", "}", "\u2502", "\u256d"):
            assert marker not in text, (path, marker, text)
        # every option and argument has a description
        section = None
        for line in text.splitlines():
            if line and not line.startswith(" "):
                section = line.rstrip(":")
                continue
            if section in ("Options", "Arguments") and line.startswith("  ") and not line.startswith("   "):
                assert re.search(r"\S\s{2,}\S", line.strip()), (path, line)
    # -f is --force everywhere; mount's --foreground has another short option
    for path in commands:
        main([*path, "--help"])
        text = capsys.readouterr().out
        for line in text.splitlines():
            if re.match(r"\s+-f[, ]", line):
                assert "--force" in line, (path, line)
    main(["mount", "--help"])
    assert re.search(r"-F, --foreground", capsys.readouterr().out)


def test_vdir_with_no_arguments_prints_the_help(cli: CLI) -> None:
    proc = cli.run()
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.decode()
    assert out.startswith("Usage: vdir") and "put" in out and "Commands:" in out
    assert proc.stderr == b""
    sub = cli.run("backend")
    assert sub.returncode == 0 and sub.stdout.decode().startswith("Usage: vdir backend")
