"""The backends a :class:`vdir.core.VDir` names, opened once each and cached (a mixin of ``VDir``)."""

from __future__ import annotations

import threading

from vdir.backends import Backend, Location, open_backend
from vdir.catalog.base import BackendRecord, Catalog
from vdir.config import Config
from vdir.errors import InvalidArgument, NotFound


class OpenedBackends:
    """Opening, caching and choosing backends (see the module docstring)."""

    catalog: Catalog
    config: Config | None
    default_backend: str | None
    _lock: threading.Lock
    _backends: dict[str, Backend]
    _records: dict[str, BackendRecord]
    _opening: dict[str, threading.Lock]

    def backend(self, name: str) -> Backend:
        """The opened backend called ``name`` (opened once, then cached)."""
        with self._lock:
            found = self._backends.get(name)
            opening = self._opening.setdefault(name, threading.Lock())
        if found is not None:
            return found
        with opening:  # opening an SDK client can take a second; workers starting together wait for one
            with self._lock:
                found = self._backends.get(name)
            if found is not None:
                return found
            record = self.backend_record(name)
            options = dict(record.options)
            if self.config:
                options.update(self.config.secrets.get(name, {}))
            location = Location(cloud=record.cloud, region=record.region, tier=record.tier, cost=record.cost)
            opened = open_backend(record.name, record.url, options, location)
            with self._lock:
                self._backends[name] = opened
            return opened

    def backend_record(self, name: str) -> BackendRecord:
        with self._lock:
            cached = self._records.get(name)
        if cached is not None:
            return cached
        try:
            record = self.catalog.get_backend(name)
        except NotFound:
            known = ", ".join(b.name for b in self.catalog.list_backends()) or "none"
            raise NotFound(f"unknown backend {name!r} (known: {known}; see 'vdir backend list')") from None
        with self._lock:
            self._records[name] = record
        return record

    def location_of(self, name: str) -> Location:
        try:
            r = self.backend_record(name)
        except NotFound:
            return Location(cloud="unknown", region="unknown", cost=1e9)
        return Location(cloud=r.cloud, region=r.region, tier=r.tier, cost=r.cost)

    def forget_backend(self, name: str) -> None:
        with self._lock:
            self._records.pop(name, None)
            backend = self._backends.pop(name, None)
        if backend is not None:
            backend.close()

    def choose_backend(self, name: str | None) -> str:
        if name:
            self.backend_record(name)
            return name
        if self.default_backend:
            return self.default_backend
        records = self.catalog.list_backends()
        if len(records) == 1:
            return records[0].name
        raise InvalidArgument("no default backend is configured; pass --backend NAME (see 'vdir backend list')")
