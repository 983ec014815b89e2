"""S3 for tests: two real local servers, started once per session.

* moto server (``moto_server -H 127.0.0.1 -p PORT``): AWS's behaviour for S3 calls, accepts any
  credentials.
* SeaweedFS (``weed mini``): a real S3 server that checks signatures, so wrong credentials fail
  as on AWS.  ``weed mini`` opens many ports (master, volume, filer, S3, admin, each with a gRPC
  twin); every one is chosen free and passed explicitly, WebDAV and the Iceberg/Lance catalogs
  are off, telemetry is off, and the data lives in a fresh directory of the session.

Each conformance fixture yields an :class:`~vdir.backends.s3.S3Backend` on a new key prefix of a
session bucket, with S3's smallest part size (5 MiB) as part size and multipart threshold, so
multi-MiB objects go through multipart uploads.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.servers.process import free_port, server, venv_bin

if TYPE_CHECKING:
    from vdir.backends.s3 import S3Backend

BACKEND_FIXTURES = ["backend_s3_moto", "backend_s3_moto_boto3", "backend_s3_seaweedfs"]
PART = 5 * 1024 * 1024
SEAWEED_KEY = "vdir-test-access"
SEAWEED_SECRET = "vdir-test-secret-0123456789"
MOTO_KEY = "testing"
MOTO_SECRET = "testing"
_prefixes = itertools.count(1)


@dataclass(frozen=True)
class S3Server:
    """A running local S3 server and credentials it accepts."""

    name: str
    endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    """A bucket made for the session."""

    def client(self, **overrides: Any) -> Any:
        """A plain boto3 client (for set-up and for looking behind the backend's back)."""
        import boto3
        from botocore.config import Config

        args: dict[str, Any] = {"aws_access_key_id": self.access_key, "aws_secret_access_key": self.secret_key,
                                "region_name": "us-east-1", "endpoint_url": self.endpoint,
                                "config": Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1})}
        args.update(overrides)
        return boto3.client("s3", **args)

    def options(self, **overrides: Any) -> dict[str, Any]:
        """Backend options for this server (small parts, few retries)."""
        return {"endpoint_url": self.endpoint, "region": "us-east-1", "access_key_id": self.access_key,
                "secret_access_key": self.secret_key, "part_size": PART, "multipart_threshold": PART,
                "max_attempts": 3, "connect_timeout": 5, "read_timeout": 30, **overrides}


def wait_s3(s3: S3Server, timeout: float = 60.0) -> None:
    """Poll until the server answers S3 calls (its port opens before its filer is ready)."""
    deadline = time.monotonic() + timeout
    client = s3.client()
    while True:
        try:
            client.list_buckets()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def make_bucket(s3: S3Server, bucket: str) -> None:
    client = s3.client()
    deadline = time.monotonic() + 30
    while True:
        try:
            client.create_bucket(Bucket=bucket)
            return
        except client.exceptions.BucketAlreadyOwnedByYou:
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[S3Server]:
    pytest.importorskip("boto3", reason="the s3 extra is not installed")
    port = free_port()
    with server([venv_bin("moto_server"), "-H", "127.0.0.1", "-p", str(port)], port, "moto"):
        s3 = S3Server("moto", f"http://127.0.0.1:{port}", MOTO_KEY, MOTO_SECRET, "vdir-tests")
        wait_s3(s3)
        make_bucket(s3, s3.bucket)
        yield s3


SEAWEED_SERVICES = ("master", "volume", "filer", "s3", "admin")


@contextlib.contextmanager
def seaweedfs(datadir: Path, access_key: str = SEAWEED_KEY, secret_key: str = SEAWEED_SECRET,
              bucket: str = "vdir-tests") -> Iterator[S3Server]:
    """Run ``weed mini`` on free 127.0.0.1 ports with data in ``datadir``; yields once S3 answers."""
    datadir.mkdir(parents=True, exist_ok=True)
    ports = {name: (free_port(), free_port()) for name in SEAWEED_SERVICES}
    cmd = [venv_bin("weed"), "mini", f"-dir={datadir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
           "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false"]
    for name, (http, grpc) in ports.items():
        cmd += [f"-{name}.port={http}", f"-{name}.port.grpc={grpc}"]
    env = {"AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key, "S3_BUCKET": ""}
    port = ports["s3"][0]
    with server(cmd, port, "seaweedfs", env=env, cwd=datadir) as proc:
        try:
            s3 = S3Server("seaweedfs", f"http://127.0.0.1:{port}", access_key, secret_key, bucket)
            wait_s3(s3)
            make_bucket(s3, bucket)
            yield s3
        finally:
            # the data is disposable and a graceful stop can take 10 s (its admin worker keeps
            # reconnecting), so it is killed outright
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def seaweedfs_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    pytest.importorskip("boto3", reason="the s3 extra is not installed")
    with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as s3:
        yield s3


def make_s3_backend(s3: S3Server, prefix: str | None = None, bucket: str | None = None, **options: Any) -> S3Backend:
    """A backend on a new, empty key prefix of the session bucket (or of ``bucket``)."""
    from vdir.backends.s3 import S3Backend

    prefix = prefix if prefix is not None else f"run{os.getpid()}-{next(_prefixes)}"
    url = f"s3://{bucket or s3.bucket}/{prefix}"
    return S3Backend(f"s3-{s3.name}", url, **s3.options(**options))


@pytest.fixture
def backend_s3_moto(moto_s3: S3Server) -> Iterator[S3Backend]:
    backend = make_s3_backend(moto_s3)
    try:
        yield backend
    finally:
        backend.close()


@pytest.fixture
def backend_s3_moto_boto3(moto_s3: S3Server) -> Iterator[S3Backend]:
    """Every request through boto3 (option ``lean=false``): the path taken where the lean one does not apply."""
    backend = make_s3_backend(moto_s3, lean=False)
    try:
        yield backend
    finally:
        backend.close()


@pytest.fixture
def backend_s3_seaweedfs(seaweedfs_s3: S3Server) -> Iterator[S3Backend]:
    backend = make_s3_backend(seaweedfs_s3)
    try:
        yield backend
    finally:
        backend.close()
