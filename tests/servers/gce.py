"""Google Compute Engine for tests: the in-process FAKE server of ``tests/fakes/gce_server.py``
(no GCE emulator exists).  Not a storage backend: no BACKEND_FIXTURES.

``fake_gce`` gives each test an emptied fake and no ambient Google credentials."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.gce_server import FakeGCE


@pytest.fixture(scope="session")
def fake_gce_session() -> Iterator[FakeGCE]:
    fake = FakeGCE()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def fake_gce(fake_gce_session: FakeGCE, monkeypatch: pytest.MonkeyPatch) -> FakeGCE:
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    fake_gce_session.reset()
    return fake_gce_session
