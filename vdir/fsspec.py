"""``vdir://`` for fsspec, so pandas, dask and pyarrow read and write the virtual directory.

    import pandas as pd
    df = pd.read_csv("vdir:///datasets/iris.csv")                       # default config
    df.to_parquet("vdir:///results/iris.parquet", storage_options={"config": "/path/config.yaml"})

A thin front end over :class:`vdir.core.VDir`: every call maps to one core call, so reads are
hash-checked and fail over between replicas exactly as in the CLI.
"""

from __future__ import annotations

import os
from glob import has_magic
from typing import IO, Any

from fsspec.callbacks import DEFAULT_CALLBACK
from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

from vdir import paths
from vdir.core import Info, VDir
from vdir.errors import NotFound


class VDirFileSystem(AbstractFileSystem):  # type: ignore[misc]
    protocol = "vdir"
    root_marker = "/"

    def __init__(self, config: str | None = None, catalog: str | None = None, backend: str | None = None, vd: VDir | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        import vdir as _vdir

        # (the instance keyword is ``vd``: fsspec reserves a keyword named like the protocol)
        self.vd = vd or _vdir.connect(config, catalog=catalog)
        self.backend = backend

    @classmethod
    def _strip_protocol(cls, path: str) -> str:  # type: ignore[override]
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]  # type: ignore[return-value]
        path = str(path)
        if path.startswith("vdir://"):
            path = path[len("vdir://") :]
        return "/" + path.strip("/") if path.strip("/") else "/"

    @staticmethod
    def _info(i: Info) -> dict[str, Any]:
        return {
            "name": i.path, "size": i.size, "type": "directory" if i.type == "dir" else "file",
            "mtime": i.mtime, "hash": i.hash, "replicas": [r["backend"] for r in i.replicas],
        }

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        items = [self._info(i) for i in self.vd.iter_ls(self._strip_protocol(path))]
        return items if detail else [i["name"] for i in items]

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            return self._info(self.vd.stat(self._strip_protocol(path)))
        except NotFound:
            raise FileNotFoundError(path) from None

    def _open(self, path: str, mode: str = "rb", block_size: int | None = None, autocommit: bool = True,
              cache_options: Any = None, **kwargs: Any) -> VDirFile:
        return VDirFile(self, self._strip_protocol(path), mode, block_size=block_size, autocommit=autocommit,
                        cache_options=cache_options, **kwargs)

    def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any) -> bytes:
        p = self._strip_protocol(path)
        if start is None and end is None:
            return self.vd.cat(p)
        size = self.vd.stat(p).size
        s = 0 if start is None else (start if start >= 0 else max(size + start, 0))
        e = size if end is None else (end if end >= 0 else max(size + end, 0))
        with self.vd.open(p, "rb") as f:
            f.seek(s)
            return f.read(max(e - s, 0))

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        """``mode="create"`` is create-only at the commit (``FileExistsError``); a ``str`` value
        is refused with ``TypeError`` (encode it first).  Inside a transaction it is deferred."""
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(f"pipe needs bytes, not {type(value).__name__} (encode text first)")
        if mode not in ("overwrite", "create"):
            raise ValueError(f"unknown pipe mode {mode!r} (use 'overwrite' or 'create')")
        p = self._strip_protocol(path)
        if self._intrans or mode == "create":
            with self.open(p, "wb" if mode == "overwrite" else "xb") as f:
                f.write(value)
            return
        self.vd.put(bytes(value), p, backend=self.backend, force=True)

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        self.vd.mkdir(self._strip_protocol(path), parents=create_parents, exist_ok=create_parents)

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        self.vd.mkdir(self._strip_protocol(path), parents=True, exist_ok=exist_ok)

    def rm_file(self, path: str) -> None:
        self.vd.rm(self._strip_protocol(path))

    def rmdir(self, path: str) -> None:
        self.vd.rmdir(self._strip_protocol(path))

    def _rm(self, path: str) -> None:
        self.vd.rm(self._strip_protocol(path))

    def rm(self, path: str | list[str], recursive: bool = False, maxdepth: int | None = None) -> None:
        """Paths, globs or lists of them; ``FileNotFoundError`` if nothing matches.  A directory
        needs ``recursive`` unless it is empty; with it, each tree goes in one core call."""
        if maxdepth is not None:
            return super().rm(path, recursive=recursive, maxdepth=maxdepth)  # type: ignore[no-any-return]
        for p in _outermost(self.expand_path(path)):
            self.vd.rm(p, recursive=recursive)
        return None

    def mv(self, path1: str | list[str], path2: str | list[str], recursive: bool = False, maxdepth: int | None = None,
           **kwargs: Any) -> None:
        """Renames in the catalog (no bytes move).  ``path1`` may be a glob or a list; the
        destinations are worked out as fsspec's ``copy`` does.  A missing destination parent
        is created."""
        if path1 == path2:
            return
        if maxdepth is not None:
            return super().mv(path1, path2, recursive=recursive, maxdepth=maxdepth, **kwargs)  # type: ignore[no-any-return]
        for src, dst in self._move_pairs(path1, path2, recursive):
            if not self.vd.exists(src):
                raise FileNotFoundError(src)
            self.vd.mkdir(self._parent(dst), parents=True, exist_ok=True)
            self.vd.mv(src, dst, force=True)
        return None

    def _move_pairs(self, path1: str | list[str], path2: str | list[str], recursive: bool) -> list[tuple[str, str]]:
        from fsspec.implementations.local import trailing_sep
        from fsspec.utils import other_paths

        if isinstance(path1, str) and not has_magic(path1):
            return [(self._strip_protocol(path1), self._strip_protocol(path2))]  # type: ignore[arg-type]
        if isinstance(path1, list) and isinstance(path2, list):
            if len(path1) != len(path2):
                raise ValueError(f"mv of {len(path1)} paths to {len(path2)} destinations")
            return [(self._strip_protocol(a), self._strip_protocol(b)) for a, b in zip(path1, path2, strict=True)]
        sources = _outermost(self.expand_path(path1))
        if not recursive:
            sources = [p for p in sources if not self.isdir(p)]
        if not sources:
            return []
        if not isinstance(path2, str):
            raise ValueError("mv of a glob needs one destination, not a list")
        exists = isinstance(path1, str) and len(sources) == 1
        dest = path2 if trailing_sep(path2) else self._strip_protocol(path2)
        targets = other_paths(sources, dest, exists=exists, flatten=not isinstance(path1, str))
        return [(s, self._strip_protocol(t)) for s, t in zip(sources, targets, strict=True)]

    def put_file(self, lpath: str, rpath: str, callback: Any = DEFAULT_CALLBACK, mode: str = "overwrite",
                 **kwargs: Any) -> None:
        """A local file streams straight to the backend through the core's write (no spool);
        inside a transaction it goes through a deferred file like any other write."""
        if os.path.isdir(lpath):
            self.makedirs(rpath, exist_ok=True)
            return
        if self._intrans:
            super().put_file(lpath, rpath, callback=callback, mode=mode, **kwargs)
            return
        with open(lpath, "rb") as src:
            size = os.fstat(src.fileno()).st_size
            callback.set_size(size)
            self.vd.write_stream(self._strip_protocol(rpath), src, backend=self.backend, overwrite=mode != "create",
                                 size=size, progress=callback.relative_update)

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        """One file through :meth:`VDir.copy` (server-side where the backend can); a directory
        (as fsspec's recursive ``copy`` passes them) is created empty."""
        p1, p2 = self._strip_protocol(path1), self._strip_protocol(path2)
        if self.vd.stat(p1).type == "dir":
            self.vd.mkdir(p2, parents=True, exist_ok=True)
            return
        self.vd.copy(p1, p2, force=True, backend=self.backend)

    def created(self, path: str) -> Any:
        import datetime

        return datetime.datetime.fromtimestamp(self.vd.stat(self._strip_protocol(path)).mtime, tz=datetime.UTC)

    modified = created

    def checksum(self, path: str) -> int:
        h = self.vd.stat(self._strip_protocol(path)).hash
        return int(h, 16) if h else 0

    def ukey(self, path: str) -> str:
        i = self.vd.stat(self._strip_protocol(path))
        return f"{i.hash}:{i.version}"


class VDirFile(AbstractBufferedFile):  # type: ignore[misc]
    """An fsspec file over a :meth:`VDir.open` handle, so fsspec's caches and wrappers
    (``read_block``, ``blockcache``, transactions) work as with any fsspec filesystem.

    ``rb`` reads ranges of the version current at open (``.size``, ``seek``, ``tell``).
    ``wb``/``xb``/``ab`` spool and commit on ``close`` (``xb`` create-only, ``ab`` appending
    with compare-and-set, both in the core); with ``autocommit=False`` (inside
    ``fs.transaction``) ``close`` only finishes the spool and :meth:`commit` or :meth:`discard`
    decide.  Other modes raise ``ValueError``.
    """

    def __init__(self, fs: VDirFileSystem, path: str, mode: str = "rb", block_size: int | str | None = "default",
                 autocommit: bool = True, cache_type: str = "readahead", cache_options: Any = None,
                 size: int | None = None, **kwargs: Any) -> None:
        if mode not in ("rb", "wb", "xb", "ab"):
            raise ValueError(f"unsupported mode {mode!r} for vdir:// (use 'rb', 'wb', 'xb' or 'ab')")
        self._reader: IO[bytes] | None = None
        self._writer: IO[bytes] | None = None
        start = 0
        if mode == "rb":
            self._reader = fs.vd.open(path, "rb")
            size = self._reader.raw.size  # type: ignore[attr-defined]  # the version being read
        else:
            if mode == "ab":
                try:
                    start = fs.vd.stat(path).size
                except NotFound:
                    start = 0
            self._writer = fs.vd.open(path, mode, backend=fs.backend)
        super().__init__(fs, path, mode, block_size=block_size, autocommit=autocommit, cache_type=cache_type,
                         cache_options=cache_options, size=size, **kwargs)
        self.loc = start

    def _fetch_range(self, start: int, end: int) -> bytes:
        assert self._reader is not None
        self._reader.seek(start)
        return self._reader.read(max(end - start, 0))

    def _upload_chunk(self, final: bool = False) -> bool:
        assert self._writer is not None
        self._writer.write(self.buffer.getbuffer())
        if final and self.autocommit:
            self.commit()
        return True

    def commit(self) -> None:
        """Commit what was written (a transaction calls this after ``close``)."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()

    def discard(self) -> None:
        """Drop what was written: nothing reaches the catalog."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.raw.abort()  # type: ignore[attr-defined]

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self._reader is not None:
                self._reader.close()


def _outermost(found: list[str]) -> list[str]:
    """``found`` without the paths that lie inside another one of them."""
    out: list[str] = []
    for p in sorted(found):
        if not any(paths.is_within(p, o) for o in out):
            out.append(p)
    return out
