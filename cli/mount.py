"""``vdir mount`` and ``vdir umount`` (registered by :func:`cli.main._register_plugins`)."""

from __future__ import annotations

from typing import Any

import typer


def register(app: typer.Typer, state: Any, out: Any) -> None:
    """Add the ``mount`` and ``umount`` commands to ``app``."""

    @app.command()
    def mount(
        mountpoint: str = typer.Argument(..., help="An existing empty directory."),
        foreground: bool = typer.Option(False, "--foreground", "-F", help="Serve in this process until unmounted."),
        read_only: bool = typer.Option(False, "--read-only", "--ro", help="Refuse every change."),
        cache_dir: str | None = typer.Option(None, "--cache-dir", help="Write-back journal and read cache (default: per catalog, in the data dir)."),
        cache_size: str = typer.Option("10G", "--cache-size", help="Read-cache limit, e.g. 512M, 10G."),
        allow_other: bool = typer.Option(False, "--allow-other", help="Let other users use the mount (root, or user_allow_other in /etc/fuse.conf)."),
        attr_timeout: float = typer.Option(1.0, "--attr-timeout", help="Seconds the kernel (and the mount) may keep attributes."),
        entry_timeout: float = typer.Option(1.0, "--entry-timeout", help="Seconds the kernel may keep name lookups."),
        noatime: bool = typer.Option(False, "--noatime", help="Never record access times (reads write nothing to "
                                     "the catalog); the default is relatime."),
        no_xattrs: bool = typer.Option(False, "--no-xattrs", help="No extended attributes (not even user.vdir.hash): "
                                       "the kernel stops asking for them, and ls -l gets several times faster."),
        write_back: bool = typer.Option(False, "--write-back", help="close returns once the file is in the local write-back "
                                        "journal and uploads continue in the background (default: close waits for the commit; "
                                        "fsync always waits)."),
        write_back_delay: float = typer.Option(5.0, "--write-back-delay", metavar="S", help="With --write-back: seconds from a file's "
                                               "last close to the start of its upload."),
    ) -> None:
        """Mount the virtual directory at MOUNTPOINT (a FUSE filesystem); returns once it is ready."""
        from vdir.fuse import mount as m
        from vdir.units import parse_size

        size = parse_size(cache_size)
        if attr_timeout < 0 or entry_timeout < 0 or write_back_delay < 0:
            raise typer.BadParameter("timeouts must be >= 0")
        m.load_fuse()
        m.check_device()
        path = m.check_mountpoint(mountpoint)
        vd = state.vd()
        m.check_catalog(vd)
        cache = cache_dir or str(m.default_cache_dir(vd.catalog.url or str(vd.config.path if vd.config else "")))
        opts = m.MountOptions(
            mountpoint=path, config=str(vd.config.path) if vd.config else state.config, read_only=read_only,
            cache_dir=cache, cache_size=size, allow_other=allow_other, attr_timeout=attr_timeout,
            entry_timeout=entry_timeout, xattrs=not no_xattrs, noatime=noatime, write_back=write_back,
            write_back_delay=write_back_delay, debug=bool(state.verbose),
        )
        if foreground:
            m.serve(vd, opts)
            return
        pid = m.start(opts)
        out.say(f"mounted {path} (process {pid}; unmount with 'vdir umount {path}')")
        for line in m.startup_report(cache, pid):
            out.say(line)

    @app.command()
    def umount(mountpoint: str = typer.Argument(..., help="Where a vdir is mounted.")) -> None:
        """Unmount a vdir mount (fails, changing nothing, while files on it are in use)."""
        from vdir.fuse.mount import unmount

        unmount(mountpoint)
        out.say(f"unmounted {mountpoint}")
