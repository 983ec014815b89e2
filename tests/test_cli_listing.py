"""Everyday commands of issue 11 (listing part): globs in virtual paths, ``cp``, ``find``,
``tree``, ``ls`` sorting and ``-h``/``-d``, ``-`` for standard input/output, completion of
virtual paths, one unit (binary) everywhere.  Core behaviour first (``VDir.glob``/``find``/
``plan_copy``), then the command as a user meets it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import vdir
from tests.servers.vdirs import CLI, fails, ok
from vdir.core import VDir
from vdir.errors import InvalidArgument, NotFound

TREE = ["/d/a.csv", "/d/b.csv", "/d/c.txt", "/d/z.tmp", "/d/sub/x.tmp", "/d/sub/deep/y.tmp", "/d/sub/deep/keep.txt"]






def fill(vd: VDir, names: list[str] = TREE) -> None:
    for n in names:
        vd.put(n.encode(), n)


def connect(cli: CLI) -> VDir:
    return vdir.connect(cli.home / ".config" / "vdir" / "config.yaml")


# -- core: glob ---------------------------------------------------------------------------------
def test_glob_matches_within_and_across_components(vd: VDir) -> None:
    fill(vd)
    assert vd.glob("/d/*.csv") == ["/d/a.csv", "/d/b.csv"]
    assert vd.glob("/d/?.*t") == ["/d/c.txt"]
    assert vd.glob("/d/[!a].csv") == ["/d/b.csv"]
    assert vd.glob("/d/**/*.tmp") == ["/d/sub/deep/y.tmp", "/d/sub/x.tmp", "/d/z.tmp"]  # ** is zero or more dirs
    assert vd.glob("/d/s*/**/*.txt") == ["/d/sub/deep/keep.txt"]
    assert vd.glob("/d/sub/**") == ["/d/sub/deep", "/d/sub/deep/keep.txt", "/d/sub/deep/y.tmp", "/d/sub/x.tmp"]
    assert vd.glob("/*/sub") == ["/d/sub"]
    assert vd.glob("/d/*.csv/x") == []  # a file has nothing below it
    assert vd.glob("/nothing/*") == [] and vd.glob("/d/nothing") == []
    assert vd.glob("/d/a.csv") == ["/d/a.csv"]


def test_glob_takes_a_name_with_glob_characters_literally(vd: VDir) -> None:
    fill(vd, ["/d/a[1].csv", "/d/a1.csv", "/d/star*", "/d/starry", "/d/what?"])
    assert vd.glob("/d/a[1].csv") == ["/d/a[1].csv"]  # exists as written: that one path
    assert vd.glob("/d/a[[]1].csv") == ["/d/a[1].csv"]  # brackets escape
    assert vd.glob("/d/a[12].csv") == ["/d/a1.csv"]
    assert vd.glob("/d/star*") == ["/d/star*"]
    assert vd.glob("/d/star[*]") == ["/d/star*"]
    assert vd.glob("/d/sta*") == ["/d/star*", "/d/starry"]
    assert vd.glob("/d/what[?]") == ["/d/what?"]


def test_glob_reads_only_the_directories_the_pattern_needs(vd: VDir, monkeypatch: pytest.MonkeyPatch) -> None:
    fill(vd)
    fill(vd, [f"/big/{i}/f{j}.tmp" for i in range(20) for j in range(3)])
    listed: list[int] = []
    walked: list[int] = []
    real_list, real_walk = vd.catalog.list, vd.catalog.walk
    monkeypatch.setattr(vd.catalog, "list", lambda pid, *a, **k: listed.append(pid) or real_list(pid, *a, **k))
    monkeypatch.setattr(vd.catalog, "walk", lambda top: walked.append(top) or real_walk(top))
    sub = vd.entry("/d/sub")
    assert vd.glob("/d/sub/*.tmp") == ["/d/sub/x.tmp"]
    assert set(listed) == {sub.id} and walked == []  # literal /d/sub looked up, one directory listed
    listed.clear()
    assert vd.glob("/d/sub/**/*.tmp") == ["/d/sub/deep/y.tmp", "/d/sub/x.tmp"]
    assert walked == [sub.id] and vd.entry("/big").id not in listed


# -- core: find ---------------------------------------------------------------------------------
def test_find_filters_like_find(vd: VDir) -> None:
    fill(vd)
    vd.put(b"x" * 3000, "/d/big.bin")
    vd.symlink("a.csv", "/d/link")
    old = time.time() - 10 * 86400
    for p in [*TREE, "/d/big.bin", "/d/link"]:
        vd.update_entry(p, mtime=old)
    vd.update_entry("/d/b.csv", mtime=old + 86400)
    vd.update_entry("/d/sub/x.tmp", mtime=old + 2 * 86400)

    def found(**kw: Any) -> list[str]:
        return [i.path for i in vd.find("/d", **kw)]

    assert found(name="*.tmp") == ["/d/sub/deep/y.tmp", "/d/sub/x.tmp", "/d/z.tmp"]
    assert found(size="+1k") == ["/d/big.bin"]
    assert found(size="-2k", type="f", name="*.csv") == ["/d/a.csv", "/d/b.csv"]
    assert found(size=len("/d/c.txt"), type="f") == ["/d/a.csv", "/d/b.csv", "/d/c.txt", "/d/z.tmp"]
    assert found(type="l") == ["/d/link"]
    assert found(type="d") == ["/d", "/d/sub", "/d/sub/deep"]
    assert found(newer="/d/b.csv", type="f") == ["/d/sub/x.tmp"]
    assert found(newer=old + 1, type="f") == ["/d/b.csv", "/d/sub/x.tmp"]
    assert found(maxdepth=1, type="d") == ["/d", "/d/sub"]
    assert found(maxdepth=0) == ["/d"]
    with pytest.raises(InvalidArgument):
        found(size="+lots")
    with pytest.raises(InvalidArgument):
        found(type="x")
    with pytest.raises(NotFound):
        found(newer="/nothing")


def test_plan_copy_lists_what_copy_writes_and_changes_nothing(vd: VDir) -> None:
    fill(vd)
    plan = vd.plan_copy("/d/sub", "/e", recursive=True)
    assert plan == [("/d/sub/deep/keep.txt", "/e/deep/keep.txt"), ("/d/sub/deep/y.tmp", "/e/deep/y.tmp"),
                    ("/d/sub/x.tmp", "/e/x.tmp")]
    assert not vd.exists("/e")
    seen: list[tuple[int, int]] = []
    vd.copy("/d/sub", "/e", recursive=True, progress=lambda done, total: seen.append((done, total)))
    assert sorted(i.path for i in vd.find("/e", type="f")) == sorted(d for _, d in plan)
    assert seen == [(1, 3), (2, 3), (3, 3)]  # after each file of the plan
    assert vd.plan_copy("/d/sub", "/e", recursive=True)[0] == ("/d/sub/deep/keep.txt", "/e/sub/deep/keep.txt")
    with pytest.raises(FileExistsError):
        vd.plan_copy("/d/sub/x.tmp", "/e/x.tmp")
    with pytest.raises(IsADirectoryError):
        vd.plan_copy("/d/sub", "/f")  # without recursive
    assert vd.plan_copy("/d/a.csv", "/e", force=True) == [("/d/a.csv", "/e/a.csv")]


# -- CLI ----------------------------------------------------------------------------------------
def test_cp_several_sources_globs_dry_run_and_checks(cli: CLI, tmp_path: Path) -> None:
    ok(cli, "init")
    with connect(cli) as vd:
        fill(vd)
    out = ok(cli, "cp", "-n", "-r", "/d/sub", "/d/*.csv", "/dst/")
    assert "would copy /d/sub/x.tmp -> /dst/sub/x.tmp" in out and "would copy /d/a.csv -> /dst/a.csv" in out
    assert "would copy 5 file(s)" in out
    assert "no such file" in fails(cli, "ls", "/dst")  # a dry run changes nothing
    assert "is a directory" in fails(cli, "cp", "/d/sub", "/d/a.csv", "/dst/")  # no -r: refused before anything
    assert "no such file" in fails(cli, "ls", "/dst")
    assert "no such directory" in fails(cli, "cp", "/d/a.csv", "/d/b.csv", "/nodir")
    assert "copied 5 file(s)" in ok(cli, "cp", "-R", "/d/sub", "/d/*.csv", "/dst/")
    assert cli.run("cat", "/dst/sub/deep/y.tmp", "/dst/b.csv").stdout == b"/d/sub/deep/y.tmp/d/b.csv"
    assert "exists" in fails(cli, "cp", "/d/c.txt", "/dst/a.csv")
    ok(cli, "cp", "-f", "/d/c.txt", "/dst/a.csv")
    assert cli.run("cat", "/dst/a.csv").stdout == b"/d/c.txt"
    assert "no match" in fails(cli, "cp", "/d/*.parquet", "/dst/")
    ok(cli, "cp", "/d/a.csv", "/single")  # one source, a new name
    assert cli.run("cat", "/single").stdout == b"/d/a.csv"
    assert cli.run("fsck").returncode == 0


def test_ls_globs_several_paths_sorting_and_sizes(cli: CLI) -> None:
    ok(cli, "init")
    with connect(cli) as vd:
        fill(vd)
        vd.put(b"x" * 3000, "/d/big.bin")
        now = time.time()
        for age, p in enumerate(["/d/c.txt", "/d/a.csv", "/d/big.bin", "/d/b.csv"]):
            vd.update_entry(p, mtime=now - 1000 * (age + 1))
    assert ok(cli, "ls", "/d/*.csv").split() == ["/d/a.csv", "/d/b.csv"]
    assert ok(cli, "ls", "/d/**/*.tmp").split() == ["/d/sub/deep/y.tmp", "/d/sub/x.tmp", "/d/z.tmp"]
    two = ok(cli, "ls", "/d/c.txt", "/d/sub", "/d/sub/deep")
    assert two == "/d/c.txt\n\n/d/sub:\ndeep/\nx.tmp\n\n/d/sub/deep:\nkeep.txt\ny.tmp\n"
    files = ["a.csv", "b.csv", "big.bin", "c.txt", "z.tmp"]
    assert [n for n in ok(cli, "ls", "-1", "-S", "/d").split() if n in files][0] == "big.bin"
    by_time = [n for n in ok(cli, "ls", "-t", "/d").split() if n in ("a.csv", "b.csv", "big.bin", "c.txt")]
    assert by_time == ["c.txt", "a.csv", "big.bin", "b.csv"]  # newest first
    assert [n for n in ok(cli, "ls", "-t", "-r", "/d").split() if n in by_time] == by_time[::-1]
    assert ok(cli, "ls", "-r", "/d/*.csv").split() == ["/d/b.csv", "/d/a.csv"]
    assert ok(cli, "ls", "-d", "/d", "/d/sub").split() == ["/d/", "/d/sub/"]
    assert "/d/sub/" in ok(cli, "ls", "-l", "-d", "/d/sub")
    assert " 2.9 KiB " in ok(cli, "ls", "-l", "-h", "/d/big.bin") and " 3000 " in ok(cli, "ls", "-l", "/d/big.bin")
    rows = json.loads(ok(cli, "ls", "--json", "/d/*.csv", "/d/sub"))
    assert [r["path"] for r in rows] == ["/d/a.csv", "/d/b.csv", "/d/sub/deep", "/d/sub/x.tmp"]
    assert "no match" in fails(cli, "ls", "/d/*.parquet")


def test_h_is_human_readable_and_help_is_help(cli: CLI) -> None:
    ok(cli, "init")
    assert ok(cli, "ls", "--help").startswith("Usage: vdir ls")
    assert ok(cli, "-h").startswith("Usage: vdir [OPTIONS] COMMAND")  # before a command, -h is still help
    assert ok(cli, "ls", "-h", "/") == ""  # not the help screen
    assert "file(s)" in ok(cli, "du", "-h", "/")
    assert ok(cli, "find", "-h", "-l", "/") .strip().endswith("/")
    for command in ("ls", "du", "find", "tree"):
        assert "-h, --human-readable" in ok(cli, command, "--help")
    assert "-f, --force" in ok(cli, "cp", "--help") and "-r, -R, --recursive" in ok(cli, "cp", "--help")
    assert "-n, --dry-run" in ok(cli, "cp", "--help")


def test_rm_globs_across_directories_and_literal_names(cli: CLI) -> None:
    ok(cli, "init")
    with connect(cli) as vd:
        fill(vd, [*TREE, "/d/star*", "/d/starry"])
    ok(cli, "rm", "/d/**/*.tmp")
    assert ok(cli, "find", "/d", "--type", "f").split() == ["/d/a.csv", "/d/b.csv", "/d/c.txt", "/d/star*",
                                                           "/d/starry", "/d/sub/deep/keep.txt"]
    ok(cli, "rm", "/d/star*")  # exists as written: only that one
    assert ok(cli, "ls", "/d/sta*").split() == ["/d/starry"]
    assert "no match" in fails(cli, "rm", "/d/*.tmp")
    ok(cli, "rm", "-r", "/d/**")  # a directory and what lies below it, once
    assert ok(cli, "ls", "/d") == ""
    assert cli.run("fsck").returncode == 0


def test_find_and_tree(cli: CLI) -> None:
    ok(cli, "init")
    with connect(cli) as vd:
        fill(vd)
        vd.put(b"x" * 3000, "/d/big.bin")
        day_ago = time.time() - 86400
        for p in [*TREE, "/d/big.bin"]:
            vd.update_entry(p, mtime=day_ago)
        vd.update_entry("/d/sub/x.tmp", mtime=time.time())
    assert ok(cli, "find", "/d", "--name", "*.tmp").split() == ["/d/sub/deep/y.tmp", "/d/sub/x.tmp", "/d/z.tmp"]
    assert ok(cli, "find", "/d", "--size", "+1k").split() == ["/d/big.bin"]
    assert ok(cli, "find", "/d", "--size", "-1k", "--type", "f", "--name", "?.csv").split() == ["/d/a.csv", "/d/b.csv"]
    assert ok(cli, "find", "/d", "--newer", "2h").split() == ["/d/", "/d/sub/", "/d/sub/deep/", "/d/sub/x.tmp"]  # dirs were made now
    assert ok(cli, "find", "/d", "--newer", "/d/a.csv", "--type", "f").split() == ["/d/sub/x.tmp"]
    assert ok(cli, "find", "/d", "--type", "d", "--maxdepth", "1").split() == ["/d/", "/d/sub/"]
    assert "2.9 KiB" in ok(cli, "find", "/d/big.bin", "-l", "-h")
    assert "not a size" in fails(cli, "find", "/d", "--size", "big")
    assert "--newer" in fails(cli, "find", "/d", "--newer", "yesterday-ish")
    assert ok(cli, "tree", "/d") == (
        "/d/\n├── a.csv\n├── b.csv\n├── big.bin\n├── c.txt\n├── sub/\n│   ├── deep/\n│   │   ├── keep.txt\n"
        "│   │   └── y.tmp\n│   └── x.tmp\n└── z.tmp\n\n2 directories, 8 files\n")
    assert ok(cli, "tree", "-L", "1", "/d/sub") == "/d/sub/\n├── deep/\n└── x.tmp\n\n1 directory, 1 file\n"
    assert "big.bin [2.9 KiB]" in ok(cli, "tree", "-h", "/d")


def test_dash_is_standard_input_and_output(cli: CLI, tmp_path: Path) -> None:
    ok(cli, "init")
    blob = os.urandom(3_000_000)
    assert "stored 1 file(s), 2.9 MiB" in ok(cli, "put", "-", "/b/x.bin", input=blob)
    assert cli.run("get", "/b/x.bin", "-").stdout == blob
    assert "exists" in fails(cli, "put", "-", "/b/x.bin")
    ok(cli, "put", "-f", "-", "/b/x.bin", input=b"new")
    assert cli.run("get", "/b/x.bin", "-").stdout == b"new"
    fails(cli, "put", "-", "/b/", code=2)  # standard input has no name
    fails(cli, "get", "-r", "/b", "-", code=2)
    # only verified bytes reach standard output: a corrupted object gives an error and no bytes
    info = json.loads(ok(cli, "stat", "--json", "/b/x.bin"))
    root = json.loads(ok(cli, "backend", "list", "--json"))[0]["url"].removeprefix("file://")
    Path(root, info["replicas"][0]["key"]).write_bytes(b"bad")
    proc = cli.run("get", "/b/x.bin", "-")
    assert proc.returncode == 1 and proc.stdout == b"" and b"vdir: error:" in proc.stderr


def test_put_from_a_pipe_streams(cli: CLI) -> None:
    """A pipe larger than the process's whole memory use goes through: it is never held whole."""
    ok(cli, "init")
    size = 192 * 1024 * 1024
    script = (
        "import resource, subprocess, sys\n"
        f"gen = subprocess.Popen(['head', '-c', '{size}', '/dev/zero'], stdout=subprocess.PIPE)\n"
        "rc = subprocess.run([sys.executable, '-m', 'cli', 'put', '-', '/big.bin'], stdin=gen.stdout).returncode\n"
        "gen.stdout.close()\n"
        "gen.wait()\n"
        "print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], env=cli.env, cwd=cli.home, capture_output=True, timeout=300)
    rc, peak = map(int, proc.stdout.split()[-2:])
    assert rc == 0, proc.stderr.decode()
    assert json.loads(ok(cli, "stat", "--json", "/big.bin"))["size"] == size
    print(f"peak RSS {peak >> 20} MiB for a {size >> 20} MiB pipe")
    assert peak < size // 2, f"peak RSS {peak} for a {size}-byte pipe"


def test_completion_of_virtual_paths(cli: CLI) -> None:
    from cli.listing import path_completions

    ok(cli, "init")
    with connect(cli) as vd:
        fill(vd, [*TREE, "/d/bad\nname"])
        assert path_completions(vd, "/d/") == ["/d/a.csv", "/d/b.csv", "/d/c.txt", "/d/sub/", "/d/z.tmp"]
        assert path_completions(vd, "/d/s") == ["/d/sub/"]
        assert path_completions(vd, "/d/sub/d") == ["/d/sub/deep/"]
        assert path_completions(vd, "d") == ["d/"]
        assert path_completions(vd, "/nothing/x") == [] and path_completions(vd, "/d/a.csv/") == []
    # the shell protocol itself, as the script `vdir completion bash` installs calls it
    env = {**cli.env, "_VDIR_COMPLETE": "complete_bash", "COMP_WORDS": "vdir cp -r /d/sub/", "COMP_CWORD": "3"}
    proc = subprocess.run([sys.executable, "-m", "cli"], env=env, cwd=cli.home, capture_output=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.decode().split() == ["/d/sub/deep/", "/d/sub/x.tmp"], proc
    for shell, extra, want in (("zsh", {}, ['"/d/sub/deep/"', '"/d/sub/x.tmp"']),
                               ("fish", {"_TYPER_COMPLETE_FISH_ACTION": "get-args"}, ["/d/sub/deep/", "/d/sub/x.tmp"])):
        env = {**cli.env, "_VDIR_COMPLETE": f"complete_{shell}", "_TYPER_COMPLETE_ARGS": "vdir ls /d/sub/", **extra}
        proc = subprocess.run([sys.executable, "-m", "cli"], env=env, cwd=cli.home, capture_output=True, timeout=60)
        assert proc.returncode == 0 and all(w in proc.stdout.decode() for w in want), (shell, proc)
        assert "/d/a.csv" not in proc.stdout.decode()
    script = ok(cli, "completion", "bash")  # the shell named, not guessed from the processes above
    assert "_VDIR_COMPLETE=complete_bash" in script and "complete " in script
    assert "compdef" in ok(cli, "completion", "zsh") and "complete --command vdir" in ok(cli, "completion", "fish")
    fails(cli, "completion", "tcsh")


def test_progress_bar_and_summaries_use_binary_units() -> None:
    from rich.progress import Progress

    from cli.output import fmt_size, progress_columns

    assert (fmt_size(1536), fmt_size(3 * 1024 * 1024), fmt_size(5 << 30)) == ("1.5 KiB", "3.0 MiB", "5.0 GiB")
    with Progress(*progress_columns(), transient=True, disable=True) as p:
        task_id = p.add_task("put", total=8 * 1024 * 1024)
        p.update(task_id, completed=3 * 1024 * 1024)
        task = p.tasks[0]
        text = " ".join(str(c.render(task)) for c in p.columns if not isinstance(c, str))
    assert "3.0/8.0 MiB" in text and "MB" not in text.replace("MiB", "")



def test_short_options_mean_the_same_in_every_command() -> None:
    import typer

    from cli.main import app

    def commands(c: Any, path: str) -> list[tuple[str, Any]]:
        found = [(path, c)]
        for name, sub in getattr(c, "commands", {}).items():
            found += commands(sub, f"{path} {name}")
        return found

    meanings: dict[str, set[str]] = {}
    for path, c in commands(typer.main.get_command(app), "vdir"):
        for p in c.params:
            names = [*p.opts, *p.secondary_opts]
            long = next((o for o in names if o.startswith("--")), "")
            for short in (o for o in names if len(o) == 2):
                meanings.setdefault(short, set()).add(long if not (path, short) == ("vdir ls", "-r") else "ls")
            if long == "--recursive" and path != "vdir ls":
                assert {"-r", "-R"} <= set(names), path  # both, as cp and rm accept
            if long == "--force":
                assert "-f" in names, path
    assert meanings["-f"] == {"--force"} and meanings["-h"] == {"--human-readable"}
    assert meanings["-R"] == {"--recursive"} and meanings["-r"] == {"--recursive", "ls"}  # ls -r: reverse, as ls(1)


def test_glob_below_a_file_matches_nothing(vd: VDir) -> None:
    fill(vd)
    assert vd.glob("/d/a.csv/*") == [] and vd.glob("/d/a.csv/x") == []


def test_cp_takes_filters(cli: CLI, tmp_path: Path) -> None:
    src = tmp_path / "t"
    (src / "sub").mkdir(parents=True)
    for rel in ("a.csv", "b.tmp", "sub/c.csv", "sub/d.tmp"):
        (src / rel).write_text(rel)
    cli.run("init", check=True)
    cli.run("put", "-r", str(src), "/t", check=True)
    dry = cli.run("cp", "-r", "--exclude", "*.tmp", "-n", "/t", "/u", check=True).stdout.decode()
    assert "a.csv" in dry and "tmp" not in dry.replace("/t", "")
    assert cli.run("stat", "/u").returncode != 0  # the dry run changed nothing
    cli.run("cp", "-r", "--exclude", "*.tmp", "/t", "/u", check=True)
    found = cli.run("find", "/u", "--type", "f", check=True).stdout.decode().split()
    assert sorted(found) == ["/u/a.csv", "/u/sub/c.csv"]
