"""EC2 for tests: a moto server started once per session with AWS's validation switched on
(unknown instance types and AMIs fail as on AWS).  Not a storage backend: no BACKEND_FIXTURES.

``ec2`` gives each test a clean server (``POST /moto-api/reset``) and AWS credentials in the
environment (moto accepts any).  AMI ids valid in every moto region: :data:`AMI_ANY_REGION`;
the ``al2023`` alias resolves in every region too.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.servers.process import free_port, server, venv_bin

AMI_ANY_REGION = "ami-1e749f67"
"""An Ubuntu image from moto's default list (moto/ec2/resources/amis.json), loaded in every region."""

ENV = {
    "MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION": "true",
    "MOTO_ENABLE_AMI_VALIDATION": "true",
}
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing"}


@dataclass(frozen=True)
class EC2Server:
    endpoint: str

    def client(self, region: str) -> Any:
        import boto3

        return boto3.client("ec2", region_name=region, endpoint_url=self.endpoint, aws_access_key_id="testing",
                            aws_secret_access_key="testing")

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=30) as answer:
            answer.read()

    def instances(self, region: str, live_only: bool = True) -> list[dict[str, Any]]:
        """Every instance of ``region`` (only those not terminated, by default)."""
        found = [i for r in self.client(region).describe_instances()["Reservations"] for i in r["Instances"]]
        if live_only:
            found = [i for i in found if i["State"]["Name"] not in ("terminated", "shutting-down")]
        return found


@pytest.fixture(scope="session")
def ec2_endpoint() -> Iterator[str]:
    """Endpoint URL of a moto server validating instance types and AMIs, for the session."""
    port = free_port()
    cmd = [venv_bin("moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    with server(cmd, port, "moto-ec2", env=ENV):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def ec2(ec2_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> EC2Server:
    """The session's EC2 server, emptied, with credentials for it in the environment."""
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    s = EC2Server(ec2_endpoint)
    s.reset()
    return s
