"""The layer between the core and a filesystem front end (like rclone's ``vfs/`` over its
backends): open files, write-back and the local cache, on the core API only, with no FUSE in
sight, so all of it is testable without a mount (``tests/test_vfs.py``).

Modules: :mod:`vdir.vfs.files` (an open file: read-ahead from the backends, local content,
streamed and conditional commits, conflicts), :mod:`vdir.vfs.cache` (the cache directory: the
write-back journal and the size-bounded read cache), :mod:`vdir.vfs.writeback` (the background
committer of pending files and the replay of a journal left by an earlier process).

What they need of the catalog they ask the core (:class:`~vdir.core.VDir`): paths for the
generation checks and commits, and the node-level operations by entry id
(:meth:`~vdir.core.VDir.child`, :meth:`~vdir.core.VDir.children`, ...) that the FUSE adapter
(:mod:`vdir.fuse`) uses for lookups and listings.
"""
