"""``vdir://`` for fsspec, so pandas, dask and pyarrow read and write the virtual directory.

    import pandas as pd
    df = pd.read_csv("vdir:///datasets/iris.csv")                       # default config
    df.to_parquet("vdir:///results/iris.parquet", storage_options={"config": "/path/config.yaml"})

A thin front end over :class:`vdir.core.VDir`: every call maps to one core call, so reads are
hash-checked and fail over between replicas exactly as in the CLI.
"""

from __future__ import annotations

from typing import Any

from fsspec.spec import AbstractFileSystem

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

    def _open(self, path: str, mode: str = "rb", block_size: int | None = None, autocommit: bool = True, cache_options: Any = None, **kwargs: Any) -> Any:
        p = self._strip_protocol(path)
        if "r" in mode:
            return self.vd.open(p, "rb")
        return self.vd.open(p, "wb", backend=self.backend)

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
        self.vd.put(value, self._strip_protocol(path), backend=self.backend, force=mode == "overwrite")

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        self.vd.mkdir(self._strip_protocol(path), parents=create_parents, exist_ok=create_parents)

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        self.vd.mkdir(self._strip_protocol(path), parents=True, exist_ok=exist_ok)

    def rm_file(self, path: str) -> None:
        self.vd.rm(self._strip_protocol(path))

    def rmdir(self, path: str) -> None:
        self.vd.rm(self._strip_protocol(path))

    def _rm(self, path: str) -> None:
        self.vd.rm(self._strip_protocol(path))

    def rm(self, path: str | list[str], recursive: bool = False, maxdepth: int | None = None) -> None:
        for p in [path] if isinstance(path, str) else path:
            self.vd.rm(self._strip_protocol(p), recursive=recursive)

    def mv(self, path1: str, path2: str, recursive: bool = False, maxdepth: int | None = None, **kwargs: Any) -> None:
        self.vd.mv(self._strip_protocol(path1), self._strip_protocol(path2), force=True)

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        with self.vd.open(self._strip_protocol(path1), "rb") as src:
            self.vd.write_stream(self._strip_protocol(path2), src, backend=self.backend, overwrite=True)

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
