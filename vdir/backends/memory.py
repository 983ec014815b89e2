"""The reference backend: objects in a dict.  The conformance suite's yardstick, and handy in
tests and demos (``memory://name``).  Objects live as long as the process."""

from __future__ import annotations

import io
import itertools
import threading
import time
from collections.abc import Iterator
from typing import IO, Any

from vdir.backends.base import Backend, ListResult, Location, ObjectMeta, PutMode
from vdir.errors import AlreadyExists, Conflict, NotFound

_STORES: dict[str, dict[str, tuple[bytes, str, float]]] = {}
_STORES_LOCK = threading.Lock()
_etags = itertools.count(1)


class MemoryBackend(Backend):
    create_only_atomic = True  # create-only is a hard link / a locked dict: atomic
    scheme = "memory"

    def __init__(self, name: str, url: str, location: Location | None = None, **_: Any) -> None:
        super().__init__(name, url, location)
        with _STORES_LOCK:  # same URL, same store: like a bucket shared by several clients
            self._objects = _STORES.setdefault(url, {})
        self._lock = threading.Lock()

    def put(self, key: str, src: IO[bytes], mode: PutMode = PutMode("overwrite"), size: int | None = None) -> ObjectMeta:
        buf = io.BytesIO()
        while chunk := src.read(1024 * 1024):
            buf.write(chunk)
        data = buf.getvalue()
        with self._lock:
            current = self._objects.get(key)
            if mode.kind == "create" and current is not None:
                raise AlreadyExists(f"{self.name}: {key} already exists")
            if mode.kind == "update" and (current is None or current[1] != mode.etag):
                raise Conflict(f"{self.name}: {key} changed since etag {mode.etag}")
            etag = f"m{next(_etags)}"
            self._objects[key] = (data, etag, time.time())
        return ObjectMeta(key, len(data), etag, self._objects[key][2])

    def _obj(self, key: str) -> tuple[bytes, str, float]:
        try:
            return self._objects[key]
        except KeyError:
            raise NotFound(f"{self.name}: no object {key}", path=key) from None

    def get(self, key: str, start: int = 0, end: int | None = None) -> IO[bytes]:
        data = self._obj(key)[0]
        return io.BytesIO(data[start:end])

    def head(self, key: str) -> ObjectMeta:
        data, etag, mtime = self._obj(key)
        return ObjectMeta(key, len(data), etag, mtime)

    def delete(self, key: str) -> None:
        with self._lock:
            self._objects.pop(key, None)

    def list(self, prefix: str = "") -> Iterator[ObjectMeta]:
        with self._lock:
            keys = sorted((k for k in self._objects if k.startswith(prefix)), key=lambda k: k.encode())
        for key in keys:
            obj = self._objects.get(key)
            if obj is not None:
                yield ObjectMeta(key, len(obj[0]), obj[1], obj[2])

    def list_with_delimiter(self, prefix: str = "") -> ListResult:
        objects: list[ObjectMeta] = []
        prefixes: set[str] = set()
        for meta in self.list(prefix):
            rest = meta.key[len(prefix):]
            if "/" in rest:
                prefixes.add(prefix + rest.split("/", 1)[0] + "/")
            else:
                objects.append(meta)
        return ListResult(objects, sorted(prefixes, key=lambda p: p.encode()))
