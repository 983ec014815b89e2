"""Faults seen from where users work (the core API and the CLI), with a fault-injecting proxy
between vdir and a real S3 server (moto): a put that fails on the way leaves the catalog as it
was; a read whose first replica's server errs, breaks off mid-body or is gone reads the next
replica (on Azurite); with the S3 server stopped, every file with two replicas still reads
through the CLI and the Python API."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import vdir
from tests.faultproxy import FaultProxy
from tests.servers.azure import Azurite
from tests.servers.s3 import S3Server
from tests.servers.vdirs import CLI
from vdir.admin import add_backend
from vdir.catalog.base import Replica, open_catalog
from vdir.core import VDir
from vdir.errors import VDirError
from vdir.fsck import fsck

pytest.importorskip("boto3", reason="the s3 extra is not installed")
_prefixes = itertools.count(1)


@pytest.fixture
def proxy(moto_s3: S3Server) -> Iterator[FaultProxy]:
    with FaultProxy(("127.0.0.1", int(moto_s3.endpoint.rsplit(":", 1)[1]))) as p:
        yield p


def _prefix() -> str:
    return f"faults-{os.getpid()}-{next(_prefixes)}"


@pytest.fixture
def world(tmp_path: Path, moto_s3: S3Server, azurite: Azurite, proxy: FaultProxy,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[VDir]:
    """A catalog with ``aws`` (moto behind the proxy; cheapest, so reads try it first) and
    ``az`` (Azurite, straight)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", moto_s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", moto_s3.secret_key)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string())
    vd = VDir(open_catalog(f"sqlite:///{tmp_path / 'catalog.db'}"), default_backend="aws")
    add_backend(vd, "aws", f"s3://{moto_s3.bucket}/{_prefix()}", endpoint=proxy.url, region="us-east-1", cost=0.01,
                options={"max_attempts": 2, "read_timeout": 2, "connect_timeout": 2}, check=False)
    add_backend(vd, "az", f"az://{azurite.create_container()}", cost=0.02, check=False)
    try:
        yield vd
    finally:
        vd.close()


def snapshot(vd: VDir) -> list[tuple[str, int, str | None, list[str]]]:
    return [(i.path, i.size, i.hash, sorted(r["backend"] for r in i.replicas)) for i in vd.ls("/", recursive=True)]


FAULTS = {
    "500": lambda p: p.respond(500),
    "dropped connection": lambda p: p.drop(),
    "upload cut mid-body": lambda p: p.cut_request(after=4096),
    "slow server": lambda p: p.delay(5.0),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_failed_put_leaves_the_catalog_as_it_was(world: VDir, proxy: FaultProxy, fault: str) -> None:
    world.put(b"old content", "/d/keep.bin")
    before = snapshot(world)
    objects = sorted(m.key for m in world.backend("aws").list(""))
    FAULTS[fault](proxy)
    with pytest.raises(VDirError) as info:
        world.put(os.urandom(200_000), "/d/new.bin")
    assert info.value.retryable and "\n" not in str(info.value)
    with pytest.raises(VDirError):
        world.put(os.urandom(100_000), "/d/keep.bin", force=True)
    proxy.reset()
    assert snapshot(world) == before
    assert not world.exists("/d/new.bin")
    assert world.cat("/d/keep.bin") == b"old content"
    report = fsck(world)
    assert not [p for p in report.problems if p.kind not in ("orphan", "temporary")]
    if fault != "slow server":  # a request that timed out here may still complete there later: an orphan fsck lists
        assert sorted(m.key for m in world.backend("aws").list("")) == objects  # nothing half-written
        assert report.exit_code == 0


def _two_replicas(vd: VDir, path: str, data: bytes) -> None:
    """``path`` on aws (written through vdir) and on az (as placement would add it)."""
    vd.put(data, path)
    entry = vd.entry(path)
    key = path.lstrip("/")
    meta = vd.backend("az").put_bytes(key, data)
    changed = entry.copy()
    changed.replicas.append(Replica("az", key, len(data), entry.hash, meta.etag))
    vd.catalog.update(changed, entry.version)


READ_FAULTS = {
    "500": lambda p: p.respond(500, match="GET "),
    "body cut": lambda p: p.cut(after=64 * 1024, match="GET "),
    "server gone": lambda p: p.stop(),
}


@pytest.mark.parametrize("fault", READ_FAULTS)
def test_failed_read_tries_the_next_replica(world: VDir, proxy: FaultProxy, fault: str) -> None:
    data = os.urandom(300_000)
    _two_replicas(world, "/r.bin", data)
    assert [r.backend for r in world.entry("/r.bin").replicas] == ["aws", "az"]
    proxy.requests.clear()
    READ_FAULTS[fault](proxy)
    assert world.cat("/r.bin") == data
    with world.open("/r.bin") as fh:  # the seekable reader fails over too, at any offset
        fh.seek(250_000)
        assert fh.read() == data[250_000:]
    if fault != "server gone":
        assert any(r.startswith("GET ") for r in proxy.requests)  # aws was tried first


def test_with_the_s3_server_stopped_every_file_with_two_replicas_reads(
        cli: CLI, tmp_path: Path, moto_s3: S3Server, azurite: Azurite, proxy: FaultProxy) -> None:
    cli.env.update(AWS_ACCESS_KEY_ID=moto_s3.access_key, AWS_SECRET_ACCESS_KEY=moto_s3.secret_key)
    cli.run("init", check=True)
    cli.run("backend", "add", "aws", f"s3://{moto_s3.bucket}/{_prefix()}", "--endpoint", proxy.url, "--region",
            "us-east-1", "--cost", "0.01", "--option", "max_attempts=2", "--option", "connect_timeout=2", check=True)
    cli.run("backend", "add", "az", f"az://{azurite.create_container()}", "--cost", "0.02",
            "--option", f"connection_string={azurite.connection_string()}", check=True)
    src = tmp_path / "src"
    src.mkdir()
    files = {f"f{i}.bin": os.urandom(50_000 + i) for i in range(6)}
    for name, data in files.items():
        (src / name).write_bytes(data)
    cli.run("put", "-r", "--backend", "aws", str(src), "/data", check=True)
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules:\n  - match: /data/**\n    copies: 2\n    where: name=aws | name=az\n    spread: cloud\n")
    cli.run("policy", "apply", str(policy), check=True)
    cli.run("placement", "run", "--once", check=True)

    proxy.refuse()  # the S3 server is unreachable from here on (the port stays ours: refused, not reused)
    for name, data in files.items():
        answer = cli.run("cat", f"/data/{name}")
        assert answer.returncode == 0 and answer.stdout == data, answer.stderr
        assert b"aws" in answer.stderr  # the warning says which replica could not be read
    out = tmp_path / "out"
    cli.run("get", "-r", "/data", str(out), check=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files
    vd = vdir.connect(str(cli.home / ".config" / "vdir" / "config.yaml"))
    try:
        for name, data in files.items():
            assert vd.cat(f"/data/{name}") == data
    finally:
        vd.close()
