"""The two backends that need no server: ``memory`` (the reference) and ``local`` (a folder)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from vdir.backends.local import LocalBackend
from vdir.backends.memory import MemoryBackend

BACKEND_FIXTURES = ["backend_memory", "backend_local"]


@pytest.fixture
def backend_memory() -> MemoryBackend:
    return MemoryBackend("mem", f"memory://{uuid.uuid4().hex}")


@pytest.fixture
def backend_local(tmp_path: Path) -> LocalBackend:
    return LocalBackend("local", f"file://{tmp_path / 'objects'}")
