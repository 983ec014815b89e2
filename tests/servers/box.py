"""Box for tests: the in-process FAKE server of ``tests/fakes/box_server.py`` (no Box emulator
exists), and a fresh folder per test for the conformance suite.

The fake's chunked-upload minimum and part size are lowered (1 MiB / 256 KiB) so multi-MiB
objects exercise upload sessions with several parts; the backend's threshold matches."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.fakes.box_server import FakeBox

if TYPE_CHECKING:
    from vdir.backends.box import BoxBackend

BACKEND_FIXTURES = ["backend_box"]
CHUNKED_THRESHOLD = 1024 * 1024
_folder_ids = itertools.count(1)


@pytest.fixture(scope="session")
def fake_box() -> Iterator[FakeBox]:
    fake = FakeBox(part_size=256 * 1024, min_chunked_size=CHUNKED_THRESHOLD)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def box_token_file(tmp_path: Path, fake_box: FakeBox) -> Path:
    path = tmp_path / "box-token"
    path.write_text(fake_box.token + "\n")
    path.chmod(0o600)
    return path


def make_box_backend(fake: FakeBox, token_file: Path, **options: object) -> BoxBackend:
    """A backend rooted at a new, empty folder path of the fake."""
    pytest.importorskip("box_sdk_gen", reason="the box extra is not installed")
    from vdir.backends.box import BoxBackend

    url = f"box://vdir-tests/run{next(_folder_ids)}"
    options = {"token_file": str(token_file), "base_url": fake.url, "chunked_threshold": CHUNKED_THRESHOLD, **options}
    return BoxBackend("box", url, **options)  # type: ignore[arg-type]


@pytest.fixture
def backend_box(fake_box: FakeBox, box_token_file: Path) -> Iterator[BoxBackend]:
    backend = make_box_backend(fake_box, box_token_file)
    try:
        yield backend
    finally:
        backend.close()
