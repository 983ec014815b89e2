"""The ``vdir`` command.  A thin front end: every command calls the core API (:mod:`vdir`).

User errors print ``vdir: error: <one line>`` on stderr and exit non-zero; ``-v`` adds debug
logs and tracebacks.  ``--json`` gives machine-readable output where a command lists things.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat as stat_mod
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import typer

from cli import help as help_screens
from cli import sync as sync_opts
from cli.listing import complete_vpath, expand_paths, outermost
from cli.output import Output, SafeFormatter, fmt_size, fmt_time, safe_lines
from vdir import __version__, paths
from vdir.errors import NotFound
from vdir.paths import printable as shown

app = typer.Typer(
    name="vdir",
    help="vdir: one virtual directory over local folders, S3, Azure, GCS, Box and GitHub.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    context_settings={"help_option_names": ["--help"]},  # -h is --human-readable, as in ls and du
)
backend_app = typer.Typer(help="Register, list and remove storage backends.", no_args_is_help=True)
app.add_typer(backend_app, name="backend")

VERSION_TEXT = (
    f"vdir {__version__} — the multicloud virtual directory (Python package 'vdir').\n"
    "This is not GNU coreutils' 'vdir' (a variant of ls)."
)


class State:
    config: str | None = None
    verbose: bool = False
    _vd: Any = None

    def vd(self) -> Any:
        if self._vd is None:
            import vdir

            self._vd = vdir.connect(self.config)
        return self._vd


state = State()
out = Output()


def _version(value: bool) -> None:
    if value:
        from cli.remote import mode_line

        typer.echo(VERSION_TEXT)
        typer.echo(mode_line())  # standalone, or remote mode with the server's URL and the user
        raise typer.Exit(0)


@app.callback()
def _main(
    config: str | None = typer.Option(None, "--config", "-c", envvar="VDIR_CONFIG", metavar="FILE", help="Config file (default: $XDG_CONFIG_HOME/vdir/config.yaml)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logs and tracebacks."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Say which program this is, and its version."),
) -> None:
    state.config = config
    state.verbose = verbose
    _setup_logging(verbose)


_log_handler: logging.Handler | None = None


def _setup_logging(verbose: bool) -> None:
    """Log records go to stderr as ``vdir: LEVEL: message``, control characters escaped."""
    global _log_handler
    root = logging.getLogger()
    if _log_handler is None:
        _log_handler = logging.StreamHandler()
        _log_handler.setFormatter(SafeFormatter("vdir: %(levelname)s: %(message)s"))
        root.addHandler(_log_handler)
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)


# -- set-up -----------------------------------------------------------------------------------
@app.command()
def init(catalog: str | None = typer.Option(None, "--catalog", metavar="URL", help="Catalog URL for a new config: sqlite:///path/catalog.db or mongodb://host/db (default: SQLite in the XDG data dir). An existing config keeps its catalog.")) -> None:
    """Create the embedded default (SQLite catalog + a local-folder backend); safe to run again."""
    import vdir

    vd, created = vdir.init(state.config, catalog=catalog)
    state._vd = vd
    conf = vd.config
    assert conf is not None
    what = "created" if created else "already set up"
    out.say(f"vdir {what}: config {conf.path}, catalog {conf.catalog}, default backend {conf.default_backend}")


# -- transfers --------------------------------------------------------------------------------
@app.command()
def put(
    sources: list[str] = typer.Argument(..., metavar="SRC... DEST", help="Local files or directories, then the vdir destination (a trailing / puts them inside it)."),
    recursive: bool = typer.Option(False, "-r", "-R", "--recursive", help="Copy directories."),
    force: bool = typer.Option(False, "-f", "--force", help="Overwrite existing files."),
    backend: str | None = typer.Option(None, "--backend", "-b", metavar="NAME", help="Where the first copy goes (default: the config's default backend)."),
    jobs: int = typer.Option(8, "--jobs", "-j", metavar="N", help="Parallel uploads."),
    dereference: bool = typer.Option(False, "-L", "--dereference", help="Follow symbolic links (default with -r: store them as links, like cp -r)."),
    include: list[str] = typer.Option(None, "--include", metavar="PATTERN", help=sync_opts.INCLUDE_HELP),
    exclude: list[str] = typer.Option(None, "--exclude", metavar="PATTERN", help=sync_opts.EXCLUDE_HELP),
    rules: list[str] = typer.Option(None, "--filter", metavar="RULE", help=sync_opts.FILTER_HELP),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help=sync_opts.DRY_RUN_HELP),
) -> None:
    """Copy local files into the virtual directory, like cp -r.

    Every name and destination is checked before the first byte moves. With -r, symbolic links
    are stored as links (-L stores what they point to)."""
    if len(sources) < 2:
        raise click.UsageError("put needs at least one source and a destination")
    *srcs, dest = sources
    vd = state.vd()
    if "-" in srcs:
        _put_stdin(vd, srcs, dest, backend=backend, force=force)
        return
    if len(srcs) > 1 and not dest.endswith("/"):
        dest += "/"
        vd.mkdir(dest, parents=True, exist_ok=True)
    flt = sync_opts.make_filter(include, exclude, rules)
    plans = [vd.plan_put(Path(s), dest, recursive=recursive, force=force, follow_symlinks=dereference, filter=flt) for s in srcs]
    total = sum(st.st_size for p in plans for _, _, st in p.files)
    if dry_run:
        for p in plans:
            for _, vpath, st in p.files:
                out.line(f"would store {shown(vpath)} ({fmt_size(st.st_size)})")
            for target, vpath in p.links:
                out.line(f"would link {shown(vpath)} -> {shown(target)}")
            for first, vpath in p.hardlinks:
                out.line(f"would hard-link {shown(vpath)} to {shown(first)}")
        out.say(f"dry run: would store {sum(len(p.files) for p in plans)} file(s), {fmt_size(total)}")
        return
    with out.progress(total, "put") as tick:
        count = 0
        for s in srcs:
            count += len(vd.put(Path(s), dest, backend=backend, recursive=recursive, force=force, workers=jobs, progress=tick,
                                follow_symlinks=dereference, filter=flt))
    links, hard = sum(len(p.links) for p in plans), sum(len(p.hardlinks) for p in plans)
    out.say(f"stored {count - hard} file(s)" + (f", {hard} hard link(s)" if hard else "")
            + (f", {links} symbolic link(s)" if links else "") + f", {fmt_size(total)}")


def _put_stdin(vd: Any, srcs: list[str], dest: str, *, backend: str | None, force: bool) -> None:
    """``put - DEST``: standard input streamed to one file (hashed as it passes; committed only
    once all of it is stored, so an interrupted pipe writes nothing)."""
    if srcs != ["-"]:
        raise click.UsageError("put -: standard input is the only source then")
    if dest.endswith("/"):
        raise click.UsageError("put -: DEST must name the file (standard input has no name)")
    with out.progress(0, "put") as tick:
        entry = vd.put(sys.stdin.buffer, dest, backend=backend, force=force, progress=tick)[0]
    out.say(f"stored 1 file(s), {fmt_size(entry.size)}")


@app.command()
def get(
    source: str = typer.Argument(..., metavar="SRC", autocompletion=complete_vpath, help="Virtual path of a file, or of a directory with -r."),
    dest: str = typer.Argument(".", metavar="DEST", help="Local destination (file or directory; - for standard output)."),
    recursive: bool = typer.Option(False, "-r", "-R", "--recursive", help="Copy a directory and everything below it."),
    force: bool = typer.Option(False, "-f", "--force", help="Overwrite existing local files (a symbolic link is replaced, never written through)."),
    jobs: int = typer.Option(8, "--jobs", "-j", metavar="N", help="Parallel downloads."),
    include: list[str] = typer.Option(None, "--include", metavar="PATTERN", help=sync_opts.INCLUDE_HELP),
    exclude: list[str] = typer.Option(None, "--exclude", metavar="PATTERN", help=sync_opts.EXCLUDE_HELP),
    rules: list[str] = typer.Option(None, "--filter", metavar="RULE", help=sync_opts.FILTER_HELP),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help=sync_opts.DRY_RUN_HELP),
) -> None:
    """Copy a file or directory out of the virtual directory, verified against its hash.

    Files appear under their names only once complete and durable. Nothing is written through a
    symbolic link inside DEST."""
    vd = state.vd()
    if dest == "-":  # verified bytes only: cat_to spools, checks the hash, then writes
        if recursive:
            raise click.UsageError("get -r cannot write a directory to standard output")
        vd.cat_to(source, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return
    flt = sync_opts.make_filter(include, exclude, rules)
    if dry_run:
        planned = vd.get(source, dest, recursive=recursive, force=force, filter=flt, dry_run=True)
        for p in planned:
            out.line(f"would write {shown(str(p))}")
        out.say(f"dry run: would fetch {len(planned)} file(s)")
        return
    total = vd.du(source).bytes
    with out.progress(total, "get") as tick:
        written = vd.get(source, dest, recursive=recursive, force=force, workers=jobs, progress=tick, filter=flt)
    out.say(f"fetched {len(written)} file(s), {fmt_size(total)}")


@app.command()
def cat(paths: list[str] = typer.Argument(..., metavar="PATH...", autocompletion=complete_vpath, help="Virtual paths of files.")) -> None:
    """Write files' verified contents to standard output."""
    vd = state.vd()
    for p in paths:
        vd.cat_to(p, sys.stdout.buffer)
    sys.stdout.buffer.flush()


# -- listing ----------------------------------------------------------------------------------
@app.command()
def ls(
    paths: list[str] = typer.Argument(None, metavar="[PATH]...", autocompletion=complete_vpath,
                                      help="Directories, files or globs ('/d/*.csv') to list (default: /)."),
    long: bool = typer.Option(False, "-l", "--long", help="Type, size, mtime, hash and replicas."),
    human: bool = typer.Option(False, "-h", "--human-readable", help="With -l, sizes in KiB, MiB, GiB."),
    recursive: bool = typer.Option(False, "-R", "--recursive", help="List everything below PATH, with full paths."),
    by_time: bool = typer.Option(False, "-t", help="Sort by modification time, newest first."),
    by_size: bool = typer.Option(False, "-S", help="Sort by size, largest first."),
    reverse: bool = typer.Option(False, "-r", "--reverse", help="Reverse the order."),
    one: bool = typer.Option(False, "-1", help="One name a line (always so; accepted for habit)."),
    directory: bool = typer.Option(False, "-d", "--directory", help="List directories themselves, not their contents."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output (names exactly as stored)."),
) -> None:
    """List directories, or files. Globs are expanded by vdir (quote them); a path that exists as
    written is taken literally. Files named come first, then each directory's contents (under a
    "PATH:" heading when there are several). Control characters in names are shown as
    backslash escapes."""
    vd = state.vd()
    targets = expand_paths(vd, paths or ["/"])
    infos = [vd.stat(p) for p in targets]
    singles = [i for i in infos if directory or i.type != "dir"]
    dirs = [i for i in infos if not directory and i.type == "dir"]

    def order(items: list[Any]) -> list[Any]:
        if by_size:
            items = sorted(items, key=lambda i: -i.size)  # stable: ties keep the name order
        elif by_time:
            items = sorted(items, key=lambda i: -i.mtime)
        return items[::-1] if reverse else items

    singles = order(sorted(singles, key=lambda i: i.path))
    if as_json:
        rows = [i.as_dict() for i in singles]
        for d in dirs:
            rows += [i.as_dict() for i in order(list(vd.iter_ls(d.path, recursive=recursive)))]
        out.json(rows)
        return

    def show(i: Any, name: str) -> None:
        if not long:
            out.line(name + ("/" if i.type == "dir" and name != "/" else ""))
            return
        kind = TYPE_LETTERS.get(i.type, "?")
        mode = kind + stat_mod.filemode(i.mode)[1:]
        reps = shown(",".join(r["backend"] + ("" if r["state"] == "ok" else f"({r['state']})") for r in i.replicas))
        h = (i.hash or "-")[:16] if i.type == "file" else "-"
        tail = f" -> {shown(i.target)}" if i.target else ""
        # a device shows its numbers where a file shows its size, as ls -l does
        size = f"{os.major(i.rdev)}, {os.minor(i.rdev)}" if i.type in ("chr", "blk") else fmt_size(i.size, exact=not human)
        out.line(f"{mode} {i.nlink:>2} {size:>12} {fmt_time(i.mtime)} {h:16} {reps or '-':12} {name}{'/' if i.type == 'dir' and name != '/' else ''}{tail}")

    for i in singles:
        show(i, shown(i.path))
    headings = len(infos) > 1
    for n, d in enumerate(dirs):
        if headings:
            out.line(("\n" if singles or n else "") + f"{shown(d.path)}:")
        for i in order(list(vd.iter_ls(d.path, recursive=recursive))):
            show(i, shown(i.path if recursive else i.name))


TYPE_LETTERS = {"dir": "d", "file": "-", "symlink": "l", "fifo": "p", "chr": "c", "blk": "b", "sock": "s"}
"""The type letter ``ls -l`` shows."""
TYPE_NAMES = {"dir": "directory", "file": "regular file", "symlink": "symbolic link", "fifo": "fifo",
              "chr": "character special file", "blk": "block special file", "sock": "socket"}
"""Entry types as stat(1) names them."""


@app.command()
def stat(path: str = typer.Argument(..., metavar="PATH", autocompletion=complete_vpath, help="Virtual path."), as_json: bool = typer.Option(False, "--json", help="Machine-readable output (names exactly as stored).")) -> None:
    """Everything the catalog knows about one path."""
    info = state.vd().stat(path)
    if as_json:
        out.json(info.as_dict())
        return
    kind = TYPE_NAMES.get(info.type, info.type)
    out.line(f"  path: {shown(info.path)}\n  type: {kind}\n  size: {info.size}\n  mode: {TYPE_LETTERS.get(info.type, '?')}"
             f"{stat_mod.filemode(info.mode)[1:]} ({oct(info.mode & 0o7777)})")
    if info.type in ("chr", "blk"):
        out.line(f"device: {os.major(info.rdev)}, {os.minor(info.rdev)} (major, minor)")
    out.line(f" links: {info.nlink}\n inode: {info.inode}")
    out.line(f" mtime: {fmt_time(info.mtime)}\n  hash: {info.hash or '-'} (xxh3-128)\nversion: {info.version}")
    if info.target:
        out.line(f"target: {shown(info.target)}")
    for r in info.replicas:
        verified = fmt_time(r["verified_at"]) if r.get("verified_at") else "never"
        out.line(f"replica: {shown(r['backend'])}:{shown(r['key'])} size={r['size']} state={r['state']} verified={verified}")


@app.command()
def du(path: str = typer.Argument("/", metavar="PATH", autocompletion=complete_vpath, help="Directory to sum up."),
       human: bool = typer.Option(False, "-h", "--human-readable", help="Accepted for habit: sizes are always shown in KiB, MiB, GiB, bytes beside."),
       as_json: bool = typer.Option(False, "--json", help="Machine-readable output (names exactly as stored).")) -> None:
    """Files, bytes, and bytes stored per backend, under a path."""
    u = state.vd().du(path)
    if as_json:
        out.json(u.as_dict())
        return
    out.line(f"{u.files} file(s), {u.dirs} dir(s), {fmt_size(u.bytes)} ({u.bytes} bytes)")
    for name, size in sorted(u.per_backend.items()):
        out.line(f"  {shown(name)}: {fmt_size(size)}")


# -- namespace --------------------------------------------------------------------------------
@app.command()
def mkdir(
    paths: list[str] = typer.Argument(..., metavar="PATH...", autocompletion=complete_vpath, help="Directories to create."),
    parents: bool = typer.Option(False, "-p", "--parents", help="Create missing parents; no error if it exists."),
) -> None:
    """Create directories."""
    vd = state.vd()
    for p in paths:
        vd.mkdir(p, parents=parents, exist_ok=parents)


@app.command()
def rm(
    paths: list[str] = typer.Argument(..., metavar="PATH...", autocompletion=complete_vpath, help="Files, links or directories to remove, or globs ('/d/**/*.tmp')."),
    recursive: bool = typer.Option(False, "-r", "-R", "--recursive", help="Remove directories and everything below them."),
    include: list[str] = typer.Option(None, "--include", metavar="PATTERN", help=sync_opts.INCLUDE_HELP),
    exclude: list[str] = typer.Option(None, "--exclude", metavar="PATTERN", help=sync_opts.EXCLUDE_HELP),
    rules: list[str] = typer.Option(None, "--filter", metavar="RULE", help=sync_opts.FILTER_HELP),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help=sync_opts.DRY_RUN_HELP),
) -> None:
    """Remove files, or directories with -r (their objects are deleted from the backends).

    With --include/--exclude/--filter only the matching files below each PATH are removed
    (directories stay, as with rclone delete)."""
    vd = state.vd()
    flt = sync_opts.make_filter(include, exclude, rules)
    targets = outermost(expand_paths(vd, paths))
    if dry_run:
        count = 0
        for p in targets:
            for vpath, _ in vd.plan_rm(p, recursive=recursive, filter=flt):
                out.line(f"would remove {shown(vpath)}")
                count += 1
        out.say(f"dry run: would remove {count} entr{'y' if count == 1 else 'ies'}")
        return
    for p in targets:
        vd.rm(p, recursive=recursive, filter=flt)


@app.command()
def mv(source: str = typer.Argument(..., metavar="SRC", autocompletion=complete_vpath, help="Virtual path to move."),
       dest: str = typer.Argument(..., metavar="DEST", autocompletion=complete_vpath, help="New path, or an existing directory to move into."),
       force: bool = typer.Option(False, "-f", "--force", help="Replace an existing file.")) -> None:
    """Rename or move a file or directory (a catalog change; no bytes move)."""
    state.vd().mv(source, dest, force=force)


@app.command()
def ln(
    target: str = typer.Argument(..., metavar="TARGET", autocompletion=complete_vpath, help="Existing virtual path (for -s: any text, the link's target)."),
    link_name: str = typer.Argument(..., metavar="LINK_NAME", autocompletion=complete_vpath, help="The new name, or an existing directory to make it in."),
    symbolic: bool = typer.Option(False, "-s", "--symbolic", help="Make a symbolic link instead of a hard link."),
) -> None:
    """Make a hard link (another name of the same file: content stored once, changes seen through
    every name) or, with -s, a symbolic link, as ln(1) does.  No bytes move."""
    vd = state.vd()
    dest = link_name
    with contextlib.suppress(NotFound):
        if vd.entry(link_name).type == "dir":
            dest = paths.join(paths.normalize(link_name), target.rstrip("/").rsplit("/", 1)[-1])
    if symbolic:
        vd.symlink(target, dest)
    else:
        vd.hardlink(target, dest)


@app.command()
def link(
    url: str = typer.Argument(..., metavar="URL", help="The object's URL on a registered backend."),
    path: str = typer.Argument(..., metavar="PATH", help="Virtual path to register it as."),
    compute_hash: bool = typer.Option(False, "--hash", help="Read the object now to record its hash."),
    force: bool = typer.Option(False, "-f", "--force", help="Replace an existing file at PATH."),
) -> None:
    """Register an object that already exists on a backend, without copying it."""
    e = state.vd().link(url, path, compute_hash=compute_hash, force=force)
    out.say(f"linked {url} as {path} ({fmt_size(e.size)})")


@app.command(name="import")
def import_(
    url: str = typer.Argument(..., metavar="URL-PREFIX", help="A prefix on a registered backend."),
    path: str = typer.Argument(..., metavar="PATH", help="Virtual directory to index it into."),
    compute_hash: bool = typer.Option(False, "--hash", help="Read every object now to record its hash."),
    force: bool = typer.Option(False, "-f", "--force", help="Replace existing files below PATH."),
) -> None:
    """Index every object under a backend prefix into a vdir directory (no bytes copied)."""
    entries = state.vd().import_prefix(url, path, compute_hash=compute_hash, force=force)
    out.say(f"imported {len(entries)} object(s) under {path}")


@app.command()
def fsck(
    deep: bool = typer.Option(False, "--deep", help="Re-read every replica and check its hash."),
    backend: list[str] = typer.Option(None, "--backend", "-b", metavar="NAME", help="Check only this backend (repeatable; default: all)."),
    gc: bool = typer.Option(False, "--delete-orphans", help="Delete what vdir itself wrote and nothing uses (orphans, unfinished uploads) older than --min-age; foreign objects are never deleted."),
    min_age: float = typer.Option(3600.0, "--min-age", metavar="SECONDS", help="Seconds an orphan must be old before --delete-orphans removes it."),
    repair: bool = typer.Option(False, "--repair", help="Mark bad replicas and copy good ones over them."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output (names exactly as stored)."),
) -> None:
    """Check catalog against backends. Exit 0 clean, 1 orphans only, 2 missing/corrupt/lost files."""
    from vdir.fsck import fsck as run_fsck

    report = run_fsck(state.vd(), deep=deep, backends=backend or None, gc=gc, min_age=min_age)
    if repair:
        from vdir.placement.repair import repair as run_repair

        result = run_repair(state.vd(), report)
        if as_json:
            out.json({**report.as_dict(), "repaired": result.repaired, "lost": result.lost, "failed": result.failed})
        else:
            for line in result.repaired:
                out.line(f"repaired    {line}")
            for line in result.lost + result.failed:
                out.line(f"NOT REPAIRED {line}")
            out.say(f"repair: {len(result.repaired)} replica(s) restored, {len(result.lost)} file(s) lost, "
                    f"{len(result.failed)} failed")
        raise typer.Exit(result.exit_code if result.exit_code else (1 if report.of_kind("orphan") else 0))
    if as_json:
        out.json(report.as_dict())
    else:
        for p in report.problems:
            where = p.path or p.key
            out.line(f"{p.kind:11} {shown(p.backend)}:{shown(p.key)} {shown(where) if p.path else ''} {shown(p.detail, backslash=False)}".rstrip())
        counts = ", ".join(f"{len(report.of_kind(k))} {k}" for k in ("missing", "corrupt", "lost", "orphan", "temporary", "foreign"))
        out.say(f"checked {report.files} file(s), {report.replicas} replica(s), {report.objects} object(s): {counts}"
                + (f"; {report.deleted_orphans} deleted" if gc else ""))
    raise typer.Exit(report.exit_code)


# -- backends ---------------------------------------------------------------------------------
@backend_app.command("add")
def backend_add(
    name: str = typer.Argument(..., metavar="NAME", help="A short name for the backend, e.g. aws1."),
    url: str = typer.Argument(..., metavar="URL", help="file:///dir, s3://bucket/prefix, az://account/container, gs://bucket, box://..., github://owner/repo."),
    region: str | None = typer.Option(None, "--region", metavar="REGION", help="Where the data lives (default: asked from the backend)."),
    endpoint: str | None = typer.Option(None, "--endpoint", metavar="URL", help="Service endpoint (S3-compatible servers, emulators)."),
    option: list[str] = typer.Option(None, "--option", "-o", metavar="KEY=VALUE", help="A backend option (secrets go to the config file, never the catalog)."),
    cloud: str | None = typer.Option(None, "--cloud", metavar="NAME", help="Cloud name for placement (default: from the URL scheme)."),
    tier: str | None = typer.Option(None, "--tier", metavar="NAME", help="Storage tier for placement (default: standard)."),
    cost: float | None = typer.Option(None, "--cost", metavar="NUMBER", help="Relative cost for placement (default: 0)."),
    no_check: bool = typer.Option(False, "--no-check", help="Do not contact the backend now."),
    replace: bool = typer.Option(False, "--replace", help="Replace a backend of the same name."),
) -> None:
    """Register a backend under NAME (contacted once, unless --no-check)."""
    from vdir.admin import add_backend

    options: dict[str, Any] = {}
    for item in option or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--option")
        options[key] = value
    rec = add_backend(state.vd(), name, url, region=region, endpoint=endpoint, options=options, cloud=cloud, tier=tier,
                      cost=cost, check=not no_check, replace=replace)
    out.say(f"backend {rec.name}: {rec.url} ({rec.cloud}/{rec.region})")


@backend_app.command("list")
def backend_list(as_json: bool = typer.Option(False, "--json", help="Machine-readable output (names exactly as stored).")) -> None:
    """Registered backends with their location."""
    vd = state.vd()
    records = vd.catalog.list_backends()
    rows = [{**r.__dict__, "replicas": vd.catalog.count_replicas(r.name), "default": r.name == vd.default_backend} for r in records]
    if as_json:
        out.json(rows)
        return
    for r in rows:
        mark = "*" if r["default"] else " "
        out.line(f"{mark} {shown(r['name']):12} {shown(r['cloud']):8} {shown(r['region']):14} {shown(r['tier']):9} {r['replicas']:>8} replica(s)  {shown(r['url'])}")


@backend_app.command("rm")
def backend_rm(name: str = typer.Argument(..., metavar="NAME", help="The backend to unregister."), force: bool = typer.Option(False, "-f", "--force", help="Drop the catalog's replica records on it too.")) -> None:
    """Unregister a backend (refused while replicas live there, unless --force)."""
    from vdir.admin import remove_backend

    n = remove_backend(state.vd(), name, force=force)
    out.say(f"removed backend {name}" + (f" and forgot {n} replica record(s)" if n else ""))


def _register_plugins() -> None:
    """Commands of other parts (mount, placement, compute) register themselves here."""
    import importlib

    for mod in ("cli.listing", "cli.mount", "cli.placement", "cli.compute", "cli.sync", "cli.access", "cli.serve",
                "cli.remote"):
        try:
            module = importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise
            continue
        register: Callable[[typer.Typer, State, Output], None] = module.register
        register(app, state, out)


_register_plugins()


def _print_help_for_no_args(exc: Exception) -> bool:
    """``vdir`` (or ``vdir backend``) alone: the help on stdout, exit 0 (as rclone does), not
    ``vdir: error:`` and a help text as the error."""
    if type(exc).__name__ != "NoArgsIsHelpError":
        return False
    ctx = getattr(exc, "ctx", None)
    sys.stdout.write((ctx.get_help() if ctx is not None else str(exc)) + "\n")
    return True


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the command, turn errors into one line and an exit code."""
    from vdir.errors import VDirError

    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["-h"]:  # `vdir -h`: help; after a command -h is --human-readable (ls, du, find, tree)
        args = ["--help", *args[1:]]
    verbose = "-v" in args or "--verbose" in args or bool(os.environ.get("VDIR_DEBUG"))
    command = typer.main.get_command(app)
    help_screens.install(command)
    try:
        rv = command.main(args=args, prog_name="vdir", standalone_mode=False)
        return rv if isinstance(rv, int) else 0
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        if _print_help_for_no_args(exc):
            return 0
        out.error(exc.format_message())
        return exc.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        out.error("interrupted")
        return 130
    except BrokenPipeError:
        return 141
    except VDirError as exc:
        if verbose:
            print(safe_lines(traceback.format_exc()), end="", file=sys.stderr)
        out.error(str(exc))
        return 1
    except OSError as exc:
        if verbose:
            print(safe_lines(traceback.format_exc()), end="", file=sys.stderr)
        name = f": {exc.filename}" if exc.filename else ""
        out.error(f"{exc.strerror or exc}{name}")
        return 1
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, no traceback
        # typer >= 0.2x ships its own copy of click: its usage errors are not click's classes
        message, code = getattr(exc, "format_message", None), getattr(exc, "exit_code", None)
        if _print_help_for_no_args(exc):
            return 0
        if callable(message) and isinstance(code, int):
            out.error(message())
            return code
        if type(exc).__name__ == "Abort":
            out.error("interrupted")
            return 130
        if verbose:
            print(safe_lines(traceback.format_exc()), end="", file=sys.stderr)
        out.error(f"unexpected {type(exc).__name__}: {exc} (run with -v for details)")
        return 1
    finally:
        if state._vd is not None:
            state._vd.close()
            state._vd = None


__all__ = ["app", "main"]
