"""Mount a virtual directory as a POSIX filesystem (FUSE).

``vdir mount MOUNTPOINT`` (see :mod:`cli.mount` and ``docs/mount.md``).  Modules:
:mod:`vdir.fuse.mount` (lifecycle; the only one that loads libfuse), :mod:`vdir.fuse.ops` (the
operations, on the core API), :mod:`vdir.fuse.dirs` (paged listings, short-lived metadata cache).
Open files, the write-back and its journal, and the read cache are the layer below, :mod:`vdir.vfs`
(no FUSE there).
"""

from __future__ import annotations

from vdir.fuse.mount import MountOptions, is_mounted, serve, start, unmount

__all__ = ["MountOptions", "is_mounted", "serve", "start", "unmount"]
