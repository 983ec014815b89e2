"""``vdir sync`` (registered by :func:`cli.main._register_plugins`), and the filter options that
put, get, rm and cp share (:func:`make_filter`, :data:`INCLUDE_HELP`...)."""

from __future__ import annotations

from typing import Any

import typer

INCLUDE_HELP = "Take only paths matching PATTERN (rclone glob; repeatable; everything else is left out)."
EXCLUDE_HELP = "Leave out paths matching PATTERN (rclone glob; repeatable)."
FILTER_HELP = "An ordered rule, '+ PATTERN' or '- PATTERN' (repeatable; applied after --include/--exclude)."
DRY_RUN_HELP = "Show what would be done; change nothing."


def make_filter(include: list[str] | None, exclude: list[str] | None, rules: list[str] | None = None) -> Any:
    """A :class:`vdir.filters.Filter` from the options, or None when none was given."""
    if not include and not exclude and not rules:
        return None
    from vdir.filters import Filter

    return Filter.from_rules(include=include or [], exclude=exclude or [], rules=rules or [])


def register(app: typer.Typer, state: Any, out: Any) -> None:
    """Add the ``sync`` command to ``app``."""

    @app.command()
    def sync(
        source: str = typer.Argument(..., metavar="SRC", help="Source directory: a local path, or vdir:/path for a virtual one."),
        dest: str = typer.Argument(..., metavar="DST", help="Destination directory: a local path, or vdir:/path (created if missing)."),
        checksum: bool = typer.Option(False, "--checksum", help="Compare size and content hash, not size and modification time."),
        delete: bool = typer.Option(False, "--delete", help="Remove destination files that are not in the source (filtered-out paths stay)."),
        dry_run: bool = typer.Option(False, "--dry-run", "-n", help=DRY_RUN_HELP),
        include: list[str] = typer.Option(None, "--include", metavar="PATTERN", help=INCLUDE_HELP),
        exclude: list[str] = typer.Option(None, "--exclude", metavar="PATTERN", help=EXCLUDE_HELP),
        rules: list[str] = typer.Option(None, "--filter", metavar="RULE", help=FILTER_HELP),
        jobs: int = typer.Option(8, "--jobs", "-j", metavar="N", help="Files transferred in parallel."),
        backend: str | None = typer.Option(None, "--backend", "-b", metavar="NAME", help="Where files sent into vdir are stored (default: the config's default backend)."),
        as_json: bool = typer.Option(False, "--json", help="Print the report as JSON (paths relative to SRC/DST)."),
    ) -> None:
        """Make DST the same as SRC, sending only files that differ (like rclone sync).

        Virtual paths are written vdir:/path; anything else is a local path. The contents of SRC
        go into DST. Files with the same size and modification time (with --checksum: the same
        hash) are skipped; every file sent is verified and committed on its own, so an
        interrupted sync, run again, sends only the rest."""
        from cli.output import fmt_size

        flt = make_filter(include, exclude, rules)
        vd = state.vd()
        if dry_run:
            report = vd.sync(source, dest, checksum=checksum, delete=delete, dry_run=True, filter=flt, workers=jobs)
        else:
            import sys

            # the bar needs a total: worked out first only when a terminal shows it
            total = vd.sync(source, dest, checksum=checksum, delete=delete, dry_run=True, filter=flt,
                            workers=jobs).bytes if sys.stderr.isatty() else 0
            with out.progress(total, "sync") as tick:
                report = vd.sync(source, dest, checksum=checksum, delete=delete, filter=flt, workers=jobs, progress=tick,
                                 backend=backend)
        if as_json:
            out.json(report.as_dict())
            return
        if dry_run:
            from vdir.paths import printable

            for verb, rel in report.actions():
                out.line(f"would {verb} {printable(rel)}")
        prefix = "dry run: would have " if dry_run else ""
        out.say(f"{prefix}copied {len(report.copied)}, updated {len(report.updated)}, "
                f"deleted {len(report.deleted)}, skipped {report.skipped} identical, "
                f"retimed {len(report.touched)} file(s); {fmt_size(report.bytes)} sent")
