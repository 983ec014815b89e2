"""``vdir cp``, ``find`` and ``tree`` (registered by :func:`cli.main._register_plugins`), and what
``ls``, ``rm`` and the rest share with them: glob expansion of virtual paths and shell completion
of virtual paths.

Globs are expanded by the core (:meth:`vdir.core.VDir.glob`), never by the shell: quote them
(``vdir ls '/d/*.csv'``).  A path that exists as written is taken literally.
"""

from __future__ import annotations

import datetime
import os
import re
import time
from typing import Any

import typer

from cli import sync as sync_opts
from cli.output import fmt_size, fmt_time
from vdir import paths as vpaths
from vdir.errors import InvalidArgument, NotADirectory, NotFound
from vdir.paths import printable as shown

COMPLETION_LIMIT = 500
"""At most this many names are offered for one completion (a huge directory stays quick)."""


def expand_paths(vd: Any, args: list[str]) -> list[str]:
    """Each argument, or for a glob the paths it matches (``NotFound`` when a glob matches
    nothing, as a shell's ``failglob`` does: a typo never silently means nothing)."""
    out: list[str] = []
    for arg in args:
        if vpaths.has_magic(arg):
            found = vd.glob(arg)
            if not found:
                raise NotFound(f"{arg}: no match", path=arg)
            out += found
        else:
            out.append(arg)
    return out


def outermost(found: list[str]) -> list[str]:
    """``found`` without the paths that lie below another one of them (``rm -r '/d/**'``)."""
    kept: list[str] = []
    for p in sorted({vpaths.normalize(p) for p in found}, key=lambda p: (p.count("/"), p)):
        if not any(vpaths.is_within(p, k) for k in kept):
            kept.append(p)
    return kept


# -- completion -------------------------------------------------------------------------------
def path_completions(vd: Any, incomplete: str, limit: int = COMPLETION_LIMIT) -> list[str]:
    """Virtual paths that complete ``incomplete``: the children of the directory it names up to
    its last ``/`` whose names start with the rest; directories end in ``/``.  Names a shell
    could not take back as one word (control characters) are left out."""
    head, sep, prefix = incomplete.rpartition("/")
    base = (head + sep) if sep else ""
    try:
        entry = vd.entry(head or "/")
    except (OSError, ValueError):
        return []
    if entry.type != "dir":
        return []
    names: list[str] = []
    for child in vd.catalog.iter_children(entry.id):
        if child.name.startswith(prefix):
            if shown(child.name, backslash=False) == child.name:
                names.append(base + child.name + ("/" if child.type == "dir" else ""))
                if len(names) >= limit:
                    break
        elif names or child.name > prefix:  # children come sorted: past the prefix, stop
            break
    return names


def complete_vpath(ctx: typer.Context, incomplete: str) -> list[str]:
    """Shell completion callback for virtual-path arguments (bash, zsh, fish): opens the
    catalog the command line (``-c``) or ``VDIR_CONFIG`` names; any failure offers nothing."""
    import vdir

    root = ctx.find_root()
    config = root.params.get("config") or os.environ.get("VDIR_CONFIG")
    try:
        vd = vdir.connect(config)
    except Exception:  # noqa: BLE001 - completion must never print a traceback into a prompt
        return []
    try:
        return path_completions(vd, incomplete)
    except Exception:  # noqa: BLE001
        return []
    finally:
        vd.close()


# -- find's arguments -------------------------------------------------------------------------
_AGO = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_when(text: str, now: float | None = None) -> float | str:
    """``--newer``'s value: a virtual path (starts with ``/``), an age (``30m``, ``2h``, ``7d``,
    ``1w``: that long ago), ``@SECONDS`` since the epoch, or an ISO date/time (local time unless
    it names a zone)."""
    text = text.strip()
    if text.startswith("/"):
        return text
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhdw])", text)
    if m:
        return (time.time() if now is None else now) - float(m.group(1)) * _AGO[m.group(2)]
    if text.startswith("@"):
        try:
            return float(text[1:])
        except ValueError:
            pass
    try:
        return datetime.datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise InvalidArgument(f"--newer {text!r}: not a virtual path (/...), an age (2h, 7d), "
                              "@SECONDS or a date (2026-01-31, 2026-01-31T12:00)") from None


def register(app: typer.Typer, state: Any, out: Any) -> None:
    """Add ``cp``, ``find``, ``tree`` and ``completion`` to ``app``."""

    @app.command()
    def completion(
        shell: str = typer.Argument(..., metavar="SHELL", help="bash, zsh or fish."),
    ) -> None:
        """Print the shell's completion script (virtual paths included): eval "$(vdir completion bash)".

        Unlike --show-completion, which guesses the shell from the processes above it, this
        names it, so it works from scripts, make and CI too."""
        from typer._completion_shared import get_completion_script

        if shell not in ("bash", "zsh", "fish"):
            raise InvalidArgument(f"completion: unknown shell {shell!r} (use bash, zsh or fish)")
        out.line(get_completion_script(prog_name="vdir", complete_var="_VDIR_COMPLETE", shell=shell).rstrip("\n"))

    @app.command()
    def cp(
        sources: list[str] = typer.Argument(..., metavar="SRC... DEST", autocompletion=complete_vpath,
                                            help="Virtual paths or globs to copy, then the destination (a trailing / or several sources: copy into that directory)."),
        recursive: bool = typer.Option(False, "-r", "-R", "--recursive", help="Copy directories and everything below them."),
        force: bool = typer.Option(False, "-f", "--force", help="Overwrite existing files."),
        backend: str | None = typer.Option(None, "--backend", "-b", metavar="NAME", help="Where the copies go (default: the backend of each source's copy)."),
        dry_run: bool = typer.Option(False, "-n", "--dry-run", help="Print what would be copied; change nothing."),
        include: list[str] = typer.Option(None, "--include", metavar="PATTERN", help=sync_opts.INCLUDE_HELP),
        exclude: list[str] = typer.Option(None, "--exclude", metavar="PATTERN", help=sync_opts.EXCLUDE_HELP),
        rules: list[str] = typer.Option(None, "--filter", metavar="RULE", help=sync_opts.FILTER_HELP),
    ) -> None:
        """Copy files or directories inside the virtual directory, like cp.

        Each copy gets its own new object; within one backend that copies server-side (S3,
        Azure, GCS) no byte passes through this machine, otherwise the bytes stream through and
        are checked against the source's hash. Every source and destination is checked before
        the first byte moves."""
        import click

        if len(sources) < 2:
            raise click.UsageError("cp needs at least one source and a destination")
        *patterns, dest = sources
        vd = state.vd()
        srcs = expand_paths(vd, patterns)
        dnorm = vpaths.normalize(dest)
        try:
            dentry = vd.entry(dnorm)
        except NotFound:
            dentry = None
        into = dest.endswith("/") or len(srcs) > 1
        if into and dentry is not None and dentry.type != "dir":
            raise NotADirectory(f"{dnorm}: not a directory", path=dnorm)
        if len(srcs) > 1 and dentry is None and not dest.endswith("/"):
            raise NotADirectory(f"{dnorm}: no such directory (several sources are copied into a directory; "
                                "end DEST with / to create it)", path=dnorm)

        def target(src: str) -> str:
            if into and dentry is None:  # a directory to be created: the source goes inside it
                return vpaths.join(dnorm, vpaths.split(vpaths.normalize(src))[1])
            return dnorm

        flt = sync_opts.make_filter(include, exclude, rules)
        plans = [vd.plan_copy(s, target(s), recursive=recursive, force=force, filter=flt) for s in srcs]
        pairs = [pair for plan in plans for pair in plan]
        if len({d for _, d in pairs}) != len(pairs):
            raise InvalidArgument("two sources would be copied to the same destination")
        total = sum(vd.du(s).bytes for s in srcs)
        if dry_run:
            for s, d in pairs:
                out.line(f"would copy {shown(s)} -> {shown(d)}")
            out.say(f"would copy {len(pairs)} file(s), {fmt_size(total)}")
            return
        if into and dentry is None:
            vd.mkdir(dnorm, parents=True, exist_ok=True)
        for s in srcs:
            vd.copy(s, target(s), recursive=recursive, force=force, backend=backend, filter=flt)
        out.say(f"copied {len(pairs)} file(s), {fmt_size(total)}")

    @app.command()
    def find(
        path: str = typer.Argument("/", metavar="PATH", autocompletion=complete_vpath, help="Where to start (default: /)."),
        name: str | None = typer.Option(None, "--name", metavar="GLOB", help="The last component matches GLOB (quote it: '*.csv')."),
        size: str | None = typer.Option(None, "--size", metavar="[+|-]SIZE", help="More (+) or less (-) than SIZE, or exactly; suffixes k, M, G, T are KiB, MiB... (--size=-1k)."),
        newer: str | None = typer.Option(None, "--newer", metavar="TIME|PATH", help="Modified after a virtual path was, or after a time: 2h, 7d (ago), 2026-01-31, @SECONDS."),
        kind: str | None = typer.Option(None, "--type", metavar="f|d|l", help="Files (f), directories (d) or symbolic links (l)."),
        maxdepth: int | None = typer.Option(None, "--maxdepth", metavar="N", min=0, help="Go at most N levels below PATH."),
        long: bool = typer.Option(False, "-l", "--long", help="Size and mtime before each path."),
        human: bool = typer.Option(False, "-h", "--human-readable", help="Sizes in KiB, MiB, GiB (with -l)."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output (names exactly as stored)."),
    ) -> None:
        """Everything below PATH that passes every filter given, like find(1), one path a line."""
        vd = state.vd()
        when = parse_when(newer) if newer is not None else None
        found = vd.find(path, name=name, size=size, newer=when, type=kind, maxdepth=maxdepth)
        if as_json:
            out.json([i.as_dict() for i in found])
            return
        for i in found:
            suffix = "/" if i.type == "dir" and i.path != "/" else ""
            if long:
                out.line(f"{fmt_size(i.size, exact=not human):>12} {fmt_time(i.mtime)} {shown(i.path)}{suffix}")
            else:
                out.line(shown(i.path) + suffix)

    @app.command()
    def tree(
        path: str = typer.Argument("/", metavar="PATH", autocompletion=complete_vpath, help="Directory to draw (default: /)."),
        level: int | None = typer.Option(None, "-L", "--level", metavar="N", min=1, help="Descend at most N levels."),
        human: bool = typer.Option(False, "-h", "--human-readable", help="Show each file's size (KiB, MiB, GiB)."),
    ) -> None:
        """The directory tree below PATH, like tree(1)."""
        vd = state.vd()
        top = vd.stat(path)
        out.line(shown(top.path) + ("/" if top.type == "dir" and top.path != "/" else ""))
        counts = {"dir": 0, "file": 0}

        def draw(dir_path: str, prefix: str, depth: int) -> None:
            children = vd.ls(dir_path)
            for n, child in enumerate(children):
                last = n == len(children) - 1
                counts["dir" if child.type == "dir" else "file"] += 1
                size = f" [{fmt_size(child.size)}]" if human and child.type == "file" else ""
                link = f" -> {shown(child.target)}" if child.target else ""
                mark = "/" if child.type == "dir" else ""
                out.line(f"{prefix}{'└── ' if last else '├── '}{shown(child.name)}{mark}{size}{link}")
                if child.type == "dir" and (level is None or depth < level):
                    draw(child.path, prefix + ("    " if last else "│   "), depth + 1)

        if top.type == "dir":
            draw(top.path, "", 1)
        dirs, files = counts["dir"], counts["file"]
        out.line(f"\n{dirs} director{'y' if dirs == 1 else 'ies'}, {files} file{'' if files == 1 else 's'}")
