"""Clusters on clouds: N VMs in one request (all or nothing) against moto's EC2, and a local
cluster through the CLI.  SLURM clusters run on a real cluster in test_compute_slurm.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers.ec2 import EC2Server
from tests.servers.vdirs import CLI, fails, ok
from tests.test_compute import MiB, add_file, compute_for, records, register_sites
from vdir.catalog.base import open_catalog
from vdir.compute.cluster import COLLECTION, Clusters
from vdir.core import VDir
from vdir.errors import AlreadyExists, InvalidArgument


@pytest.fixture
def mvd(mongo_catalog_url: str) -> Iterator[VDir]:
    v = VDir(open_catalog(mongo_catalog_url))
    register_sites(v)
    try:
        yield v
    finally:
        v.close()


def cluster_records(vd: VDir) -> list[str]:
    return [k for k, _, _ in vd.catalog.list_records(COLLECTION)]


def test_ec2_cluster_boots_n_vms_and_writes_hosts(mvd: VDir, ec2: EC2Server, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    add_file(mvd, "/ds/a", 3 * MiB, "s3eu")
    add_file(mvd, "/ds/b", MiB, "s3us")
    clusters = Clusters(compute_for(mvd, ec2))
    plan = clusters.plan("train", ["/ds"], 3)
    assert plan.provider == "ec2" and plan.region == "eu-west-1" and plan.names == ["train-1", "train-2", "train-3"]
    cluster = clusters.create("train", plan, 3)
    assert cluster.members == ["train-1", "train-2", "train-3"] and cluster.region == "eu-west-1"
    live = ec2.instances("eu-west-1")
    names = sorted({t["Key"]: t["Value"] for t in i["Tags"]}["Name"] for i in live)
    assert names == ["train-1", "train-2", "train-3"]
    waited = clusters.wait("train", timeout=30, interval=0.05)
    assert waited.state == "running"
    assert sorted(waited.hosts) == sorted(i["PrivateIpAddress"] for i in live)
    assert waited.hosts_file and Path(waited.hosts_file).read_text().split() == waited.hosts
    [listed] = clusters.list()
    assert listed.name == "train" and listed.count == 3 and listed.hosts == waited.hosts
    with pytest.raises(AlreadyExists, match="a cluster named 'train' exists"):
        clusters.plan("train", ["/ds"], 2)
    ssh = clusters.ssh("train", ["hostname"])
    first, _ = clusters.compute.get("train-1")
    assert ssh.argv[-3:] == [f"{first.ssh_user}@{first.public_ip}", "--", "hostname"]
    clusters.delete("train")
    assert ec2.instances("eu-west-1") == [] and cluster_records(mvd) == [] and records(mvd) == []
    assert not Path(waited.hosts_file).exists()


def test_ec2_cluster_all_or_nothing(mvd: VDir, ec2: EC2Server) -> None:
    add_file(mvd, "/ds/a", MiB, "s3eu")
    clusters = Clusters(compute_for(mvd, ec2))
    with pytest.raises(InvalidArgument, match="instance type 't9.enormous' does not exist in eu-west-1"):
        clusters.create("big", clusters.plan("big", ["/ds"], 4, flavor="t9.enormous"), 4)
    assert cluster_records(mvd) == [] and records(mvd) == []
    assert ec2.instances("eu-west-1", live_only=False) == []


def test_local_cluster_through_the_cli(cli: CLI) -> None:
    ok(cli, "init")
    (cli.home / "f.txt").write_text("hello\n")
    ok(cli, "put", str(cli.home / "f.txt"), "/data/f.txt")
    dry = ok(cli, "cluster", "create", "pair", "--near", "/data", "--count", "2", "--dry-run")
    assert "decision: local in" in dry and "2 machines (pair-1, pair-2)" in dry
    started = ok(cli, "cluster", "create", "pair", "--near", "/data", "--count", "2", "--", "cat vdir/data/f.txt")
    assert "started cluster pair on local" in started
    waited = ok(cli, "cluster", "wait", "pair", "--timeout", "60")
    assert "pair: exited, hosts localhost, localhost" in waited
    assert ok(cli, "vm", "logs", "pair-2") == "hello\n"
    [row] = json.loads(ok(cli, "cluster", "list", "--json"))
    assert row["members"] == ["pair-1", "pair-2"] and row["provider"] == "local"
    ok(cli, "cluster", "delete", "pair")
    assert json.loads(ok(cli, "cluster", "list", "--json")) == [] and json.loads(ok(cli, "vm", "list", "--json")) == []
    assert "no cluster named 'pair'" in fails(cli, "cluster", "ssh", "pair")
