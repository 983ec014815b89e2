"""Azure Blob for tests: Azurite (the Azure Storage emulator, npm ``azurite@3.35.0``, installed into
``.cache/azurite`` by ``scripts/setup.sh --test``), one in-memory server per test session, and a
fresh container per test for the conformance suite.

The backend's block size is lowered to 1 MiB so multi-MiB objects are staged in several blocks.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from tests.servers.process import CACHE, free_port, server

if TYPE_CHECKING:
    from vdir.backends.azure import AzureBackend

BACKEND_FIXTURES = ["backend_azure"]
BLOCK_SIZE = 1024 * 1024
AZURITE = CACHE / "azurite" / "node_modules" / ".bin" / "azurite-blob"
ACCOUNT = "devstoreaccount1"
# The well-known development account of the Azure Storage emulators (public, not a secret).
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
_containers = itertools.count(1)


@dataclass(frozen=True)
class Azurite:
    port: int

    @property
    def blob_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}"

    def connection_string(self, key: str = ACCOUNT_KEY) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={key};"
                f"BlobEndpoint={self.blob_endpoint};")

    def create_container(self, name: str | None = None) -> str:
        """A new, empty container (the backend never creates containers itself)."""
        from azure.storage.blob import BlobServiceClient

        name = name or f"vdir-test-{os.getpid()}-{next(_containers)}"  # unique across processes
        with BlobServiceClient.from_connection_string(self.connection_string()) as service:
            service.create_container(name)
        return name


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    if not AZURITE.exists():
        pytest.fail(f"Azurite is not installed ({AZURITE} is missing); run scripts/setup.sh --test", pytrace=False)
    if shutil.which("node") is None:
        pytest.fail("node is not installed (Azurite needs it); run scripts/setup.sh --test", pytrace=False)
    pytest.importorskip("azure.storage.blob", reason="the azure extra is not installed")
    workdir = tmp_path_factory.mktemp("azurite")
    port = free_port()
    cmd = [str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--inMemoryPersistence",
           "--skipApiVersionCheck", "--disableTelemetry"]
    with server(cmd, port, "azurite", cwd=workdir):
        yield Azurite(port)


def make_azure_backend(azurite: Azurite, url: str | None = None, **options: Any) -> AzureBackend:
    """A backend on a new, empty container; every other test also puts it below a prefix."""
    from vdir.backends.azure import AzureBackend

    if url is None:
        container = azurite.create_container()
        n = int(container.rsplit("-", 1)[1])
        url = f"az://{container}/some/prefix" if n % 2 else f"az://{container}"
    options = {"connection_string": azurite.connection_string(), "block_size": BLOCK_SIZE, "retry_backoff": 0.05,
               **options}
    return AzureBackend("azure", url, **options)


@pytest.fixture
def backend_azure(azurite: Azurite) -> Iterator[AzureBackend]:
    backend = make_azure_backend(azurite)
    try:
        yield backend
    finally:
        backend.close()
