"""Azure Resource Manager for tests: the in-process FAKE of ``tests/fakes/azure_arm_server.py``
(no emulator exists for ARM), over HTTPS with a self-signed certificate made for the session.
Not a storage backend: no BACKEND_FIXTURES (Azure Blob is Azurite, tests/servers/azure.py).

:class:`FakeCredential` is a FAKE token credential handing out the fake's one accepted token."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.azure_arm_server import SUBSCRIPTION, TOKEN, FakeARM, make_certificate


class FakeCredential:
    """FAKE: an azure-core ``TokenCredential`` for the fake ARM (the real chain is DefaultAzureCredential)."""

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken(TOKEN, int(time.time()) + 3600)

    def get_token_info(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessTokenInfo

        return AccessTokenInfo(TOKEN, int(time.time()) + 3600)


@dataclass(frozen=True)
class ARM:
    fake: FakeARM
    ca_bundle: Path
    subscription: str = SUBSCRIPTION

    @property
    def url(self) -> str:
        return self.fake.url


@pytest.fixture(scope="session")
def fake_arm_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ARM]:
    cert, key = make_certificate(tmp_path_factory.mktemp("fake-arm"))
    fake = FakeARM(cert, key)
    fake.start()
    try:
        yield ARM(fake=fake, ca_bundle=cert)
    finally:
        fake.stop()


@pytest.fixture
def fake_arm(fake_arm_session: ARM, monkeypatch: pytest.MonkeyPatch) -> ARM:
    """The session's fake ARM, emptied (resource group ``vdir`` exists), no ambient Azure credentials."""
    for name in ("AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_TENANT_ID", "AZURE_SUBSCRIPTION_ID",
                 "AZURE_FEDERATED_TOKEN_FILE", "AZURE_USERNAME", "AZURE_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    fake_arm_session.fake.reset()
    return fake_arm_session
