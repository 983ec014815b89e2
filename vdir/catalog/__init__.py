"""Catalog engines behind one interface; see :mod:`vdir.catalog.base`."""

from vdir.catalog.base import (
    DIR,
    FILE,
    ROOT_ID,
    SYMLINK,
    BackendRecord,
    Catalog,
    Entry,
    Replica,
    Task,
    open_catalog,
)

__all__ = ["DIR", "FILE", "ROOT_ID", "SYMLINK", "BackendRecord", "Catalog", "Entry", "Replica", "Task", "open_catalog"]
