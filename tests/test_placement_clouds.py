"""Placement on real servers: moto S3 (behind a fault proxy), Azurite and fake-gcs-server
beside a local folder.  Each rule kind carried out, server-side copies within one service
verified at the destination, a byte flipped in a stored cloud replica, an outage of the S3
server, and a daemon killed with SIGKILL in the middle of copies to Azure.  Every copy is
checked by reading it back from its backend."""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faultproxy import FaultProxy
from tests.placement_helpers import backends_of, run_once, start_daemons, wait_until_in_place
from tests.servers.azure import Azurite
from tests.servers.gcs import FakeGCS
from tests.servers.s3 import S3Server
from tests.servers.vdirs import CLI
from vdir.admin import add_backend
from vdir.catalog.base import CORRUPT, OK, open_catalog
from vdir.core import VDir
from vdir.fsck import fsck
from vdir.placement import worker
from vdir.placement.daemon import Daemon, DaemonOptions
from vdir.placement.policy import apply_policy

pytest.importorskip("boto3", reason="the s3 extra is not installed")
_prefixes = itertools.count(1)

POLICY = """\
rules:
  - name: datasets
    match: /datasets/**
    copies: 2
    where: (cloud=aws & tier=standard) | (cloud=azure & tier=standard) | cloud=gcp
    spread: cloud
  - name: archive
    match: /archive/**
    copies: 1
    where: name=aws
    lifecycle: {after: 30d, where: name=glacier}
  - name: cool
    match: /cool/**
    copies: 1
    where: name=azure
    lifecycle: {after: 30d, where: name=azcool}
  - name: scratch
    match: /scratch/**
    copies: 1
    where: cloud=local
"""


@pytest.fixture
def proxy(moto_s3: S3Server) -> Iterator[FaultProxy]:
    with FaultProxy(("127.0.0.1", int(moto_s3.endpoint.rsplit(":", 1)[1]))) as p:
        yield p


@pytest.fixture
def clouds(tmp_path: Path, moto_s3: S3Server, azurite: Azurite, fake_gcs: FakeGCS, proxy: FaultProxy,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[VDir]:
    """local (folder), aws + glacier (two prefixes of one moto bucket, through the proxy),
    azure + azcool (two containers of one Azurite account), gcs (fake-gcs-server)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", moto_s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", moto_s3.secret_key)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string())
    (tmp_path / "local").mkdir()
    vd = VDir(open_catalog(f"sqlite:///{tmp_path / 'catalog.db'}"), default_backend="local")
    run = f"placement-{os.getpid()}-{next(_prefixes)}"
    s3 = {"endpoint": proxy.url, "options": {"max_attempts": 2, "connect_timeout": 2, "read_timeout": 5}, "check": False}
    add_backend(vd, "local", f"file://{tmp_path / 'local'}", check=False)
    add_backend(vd, "aws", f"s3://{moto_s3.bucket}/{run}/std", region="us-east-1", cost=0.02, **s3)  # type: ignore[arg-type]
    add_backend(vd, "glacier", f"s3://{moto_s3.bucket}/{run}/cold", region="us-east-1", tier="cold", cost=0.004,
                **s3)  # type: ignore[arg-type]
    add_backend(vd, "azure", f"az://{azurite.create_container()}", region="westeurope", cost=0.02, check=False)
    add_backend(vd, "azcool", f"az://{azurite.create_container()}", region="westeurope", tier="cold", cost=0.01,
                check=False)
    add_backend(vd, "gcs", f"gs://{fake_gcs.create_bucket()}", endpoint=fake_gcs.endpoint, region="europe-west1",
                cost=0.02, check=False)
    try:
        yield vd
    finally:
        vd.close()


def stored(vd: VDir, path: str) -> dict[str, bytes]:
    """Each good replica's bytes, read straight from its backend."""
    return {r.backend: vd.backend(r.backend).get_bytes(r.key) for r in vd.entry(path).replicas if r.state == OK}


def age(vd: VDir, path: str, days: float) -> None:
    e = vd.entry(path)
    vd.catalog.update(e.copy(mtime=time.time() - days * 86400), e.version)


def test_each_rule_kind_on_real_servers(clouds: VDir) -> None:
    vd = clouds
    apply_policy(vd.catalog, POLICY)
    data = {p: os.urandom(40_000 + i) for i, p in enumerate(
        ["/datasets/a.bin", "/datasets/sub/b.bin", "/archive/old.tar", "/cool/old.bin", "/scratch/tmp.bin"])}
    for p, d in data.items():
        vd.put(d, p)
    assert run_once(vd)["failed"] == 0
    run_once(vd)  # trims, once the new copies are verified
    for p in ["/datasets/a.bin", "/datasets/sub/b.bin"]:
        where = backends_of(vd, p)
        assert len(where) == 2 and len({vd.location_of(b).cloud for b in where}) == 2, where
        assert set(where) <= {"aws", "azure", "gcs"}
    assert backends_of(vd, "/archive/old.tar") == ["aws"]
    assert backends_of(vd, "/cool/old.bin") == ["azure"]
    assert backends_of(vd, "/scratch/tmp.bin") == ["local"]

    # 40 days later both move to their cold tier, each within its own service
    age(vd, "/archive/old.tar", 40)
    age(vd, "/cool/old.bin", 40)
    assert run_once(vd)["failed"] == 0
    run_once(vd)
    assert backends_of(vd, "/archive/old.tar") == ["glacier"]
    assert backends_of(vd, "/cool/old.bin") == ["azcool"]
    for p, d in data.items():
        assert set(stored(vd, p).values()) == {d}, p  # every copy holds the file's bytes
        assert vd.cat(p) == d
    report = fsck(vd, deep=True)
    assert report.problems == []  # trimmed objects were deleted, nothing missing or corrupt


@pytest.mark.parametrize(("source", "destination"), [("aws", "glacier"), ("azure", "azcool"), ("gcs", "gcs2")])
def test_copies_within_one_service_are_server_side_and_verified_there(clouds: VDir, fake_gcs: FakeGCS, source: str,
                                                                       destination: str) -> None:
    vd = clouds
    if destination == "gcs2":
        add_backend(vd, "gcs2", f"gs://{fake_gcs.create_bucket()}/p", endpoint=fake_gcs.endpoint, region="europe-west1",
                    check=False)
    data = os.urandom(300_000)
    vd.put(data, "/f.bin", backend=source)
    outcome = worker.replicate(vd, vd.entry("/f.bin").id, destination)
    # S3 vouches for a one-part copy with its MD5 ETag; elsewhere the copy is read back and hashed
    assert outcome.done and outcome.detail.endswith(
        "(server-side, checked by the store's MD5)" if source == "aws" else "(server-side, read back)"), outcome.detail
    assert stored(vd, "/f.bin") == {source: data, destination: data}
    # a source whose bytes no longer match the catalog: the copy is read back at the
    # destination, found wrong, deleted, and the source marked corrupt
    vd.put(os.urandom(1000), "/g.bin", backend=source)
    g = vd.entry("/g.bin")
    vd.backend(source).put_bytes(g.replicas[0].key, os.urandom(1000))  # same size, other bytes
    with pytest.raises(Exception, match="marked corrupt"):
        worker.replicate(vd, g.id, destination)
    assert [(r.backend, r.state) for r in vd.entry("/g.bin").replicas] == [(source, CORRUPT)]
    assert [m.key for m in vd.backend(destination).list("") if m.key.startswith("g.bin")] == []


def test_flipped_byte_and_s3_outage_on_real_servers(clouds: VDir, proxy: FaultProxy) -> None:
    vd = clouds
    apply_policy(vd.catalog, "rules:\n  - match: /datasets/**\n    copies: 2\n    where: name=aws | name=azure\n")
    data = {f"/datasets/{i}.bin": os.urandom(60_000 + i) for i in range(4)}
    for p, d in data.items():
        vd.put(d, p, backend="aws")
    run_once(vd)
    assert all(backends_of(vd, p) == ["aws", "azure"] for p in data)

    # a byte flipped in the Azure copy: the scrub finds it, a good copy replaces it
    victim = vd.entry("/datasets/0.bin")
    key = next(r.key for r in victim.replicas if r.backend == "azure")
    raw = bytearray(vd.backend("azure").get_bytes(key))
    raw[100] ^= 0xFF
    vd.backend("azure").put_bytes(key, bytes(raw))
    Daemon(vd, DaemonOptions(once=True, scrub_interval=1, scrub_age=0, retry_base=0.01)).run()
    assert ("azure", CORRUPT) in {(r.backend, r.state) for r in vd.entry("/datasets/0.bin").replicas}
    run_once(vd)
    run_once(vd)
    assert backends_of(vd, "/datasets/0.bin") == ["aws", "azure"]
    assert all(r.state == OK for r in vd.entry("/datasets/0.bin").replicas)
    assert set(stored(vd, "/datasets/0.bin").values()) == {data["/datasets/0.bin"]}

    # the S3 server answers 503 to everything: reads fail over, new copies wait and keep the error
    proxy.respond(503)
    for p, d in data.items():
        assert vd.cat(p) == d
    vd.put(b"late " * 5000, "/datasets/late.bin", backend="azure")
    run_once(vd, max_attempts=5)
    task = next(t for t in vd.catalog.list_tasks() if t.kind == "replicate" and t.destination == "aws")
    assert task.state in ("pending", "failed") and "503" in (task.last_error or ""), task
    assert backends_of(vd, "/datasets/late.bin") == ["azure"]  # nothing half-committed
    proxy.reset()  # the server is back
    deadline = time.monotonic() + 30
    while backends_of(vd, "/datasets/late.bin") != ["aws", "azure"] and time.monotonic() < deadline:
        run_once(vd, max_attempts=5)
        time.sleep(0.2)
    assert set(stored(vd, "/datasets/late.bin").values()) == {b"late " * 5000}


def test_daemon_killed_mid_copy_to_azure_another_finishes(cli: CLI, tmp_path: Path, azurite: Azurite) -> None:
    cli.run("init", check=True)
    cli.run("backend", "add", "azure", f"az://{azurite.create_container()}", "--region", "westeurope",
            "--option", f"connection_string={azurite.connection_string()}", check=True)
    src = tmp_path / "src"
    src.mkdir()
    files = {f"{i:02}.bin": os.urandom(2 * 1024 * 1024 + i) for i in range(12)}
    for name, d in files.items():
        (src / name).write_bytes(d)
    cli.run("put", "-r", str(src), "/big", check=True)
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules:\n  - match: /big/**\n    copies: 2\n    where: name=local | name=azure\n")
    cli.run("policy", "apply", str(policy), check=True)
    config = cli.home / ".config" / "vdir" / "config.yaml"
    import vdir

    vd = vdir.connect(str(config))
    journal = tmp_path / "journal.txt"
    first = start_daemons(cli.env, config, 1, journal)[0]
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not vd.catalog.list_tasks("running"):
            time.sleep(0.01)
        first.send_signal(signal.SIGKILL)  # mid-copy: it holds a task
        held = {t.id for t in vd.catalog.list_tasks("running")}
        first.wait(30)
        second = start_daemons(cli.env, config, 1, journal)[0]
        try:
            wait_until_in_place(vd)
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(60)
    finally:
        if first.poll() is None:
            first.kill()
    assert held, "the daemon was killed while holding no task"
    for name, d in files.items():
        assert backends_of(vd, f"/big/{name}") == ["azure", "local"]
        assert set(stored(vd, f"/big/{name}").values()) == {d}
    ids = [line.split()[0] for line in journal.read_text().splitlines()]
    assert len(ids) == len(set(ids)), "a task was completed twice"
    assert {p.kind for p in fsck(vd, deep=True).problems} <= {"orphan", "temporary"}  # at most the killed copy's blob
    fsck(vd, gc=True, min_age=0)  # vdir's own leftovers: fsck cleans them
    assert fsck(vd, deep=True).problems == []
    vd.close()
