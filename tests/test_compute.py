"""The compute sidecar: placement of compute by where the bytes are, the EC2 provider against
moto (instance-type and AMI validation on), the local provider, and the ``vdir vm`` commands."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.servers.ec2 import AMI_ANY_REGION, CREDENTIALS, EC2Server
from tests.servers.vdirs import CLI
from vdir import paths
from vdir.admin import add_backend
from vdir.catalog.base import MISSING, Entry, Replica, open_catalog
from vdir.compute import Compute, Settings
from vdir.compute.base import COLLECTION
from vdir.compute.placement import decide
from vdir.compute.userdata import build as build_user_data
from vdir.core import VDir
from vdir.errors import AlreadyExists, ConfigError, InvalidArgument, NotFound, VDirError

MiB = 1024 * 1024


def register_sites(vd: VDir) -> None:
    """Backends in three AWS regions, Azure and a second AWS backend in eu-west-1 (registered
    only: no bytes are read, the catalog's replicas say where data is)."""
    add_backend(vd, "s3eu", "s3://bucket-eu/data", region="eu-west-1", check=False, cost=0.023)
    add_backend(vd, "s3eu2", "s3://bucket-eu2/data", region="eu-west-1", check=False, cost=0.02)
    add_backend(vd, "s3us", "s3://bucket-us/data", region="us-east-1", check=False, cost=0.021)
    add_backend(vd, "s3ap", "s3://bucket-ap/data", region="ap-south-1", check=False, cost=0.025)
    add_backend(vd, "azwe", "az://container/data", region="westeurope", check=False)
    add_backend(vd, "boxy", "box://vdir/data", region="box", check=False)  # no compute provider serves box


def add_file(vd: VDir, path: str, size: int, *backends: str, state: str = "ok") -> Entry:
    """A catalog entry of ``size`` bytes with a replica on each backend."""
    norm = paths.normalize(path)
    parent_path, name = paths.split(norm)
    parent = vd.mkdir(parent_path, parents=True, exist_ok=True)
    replicas = [Replica(backend=b, key=norm[1:], size=size, state=state) for b in backends]
    return vd.catalog.create(Entry(name=name, parent_id=parent.id, size=size, replicas=replicas))


def records(vd: VDir) -> list[str]:
    return [k for k, _, _ in vd.catalog.list_records(COLLECTION)]


# -- placement (no servers) -------------------------------------------------------------------
def test_weigh_counts_bytes_per_region(vd: VDir) -> None:
    register_sites(vd)
    add_file(vd, "/ds/a.bin", 3 * MiB, "s3eu")
    add_file(vd, "/ds/b.bin", 2 * MiB, "s3eu", "s3eu2", "s3us")  # two backends in one region count once
    add_file(vd, "/ds/sub/c.bin", 1 * MiB, "azwe")
    add_file(vd, "/ds/sub/e.bin", 1 * MiB, "boxy")
    add_file(vd, "/ds/lost.bin", 50 * MiB, "s3ap", state=MISSING)  # a missing replica does not count
    add_file(vd, "/other/d.bin", 99 * MiB, "s3us")  # not under --near
    d = decide(vd, ["/ds", "/ds/sub"])  # overlapping paths count a file once
    by_site = {s.label: s for s in d.sites}
    assert by_site["aws/eu-west-1"].bytes == 5 * MiB and by_site["aws/eu-west-1"].files == 2
    assert sorted(by_site["aws/eu-west-1"].backends) == ["s3eu", "s3eu2"]
    assert by_site["aws/us-east-1"].bytes == 2 * MiB
    assert by_site["azure/westeurope"].bytes == 1 * MiB
    assert "aws/ap-south-1" not in by_site
    assert d.total_files == 5 and d.total_bytes == 57 * MiB
    assert (d.provider, d.cloud, d.region) == ("ec2", "aws", "eu-west-1")
    assert "aws/eu-west-1 holds the most" in d.reason and "next is aws/us-east-1" in d.reason
    assert by_site["azure/westeurope"].provider == "azure" and by_site["box/box"].provider is None
    assert any("no compute provider for box" in n for n in d.notes)


def test_larger_share_wins(vd: VDir) -> None:
    register_sites(vd)
    add_file(vd, "/ds/big.bin", 3 * MiB, "s3us")
    add_file(vd, "/ds/small1.bin", 1 * MiB, "s3eu")
    add_file(vd, "/ds/small2.bin", 1 * MiB, "s3eu")
    d = decide(vd, ["/ds"])
    assert d.region == "us-east-1"
    assert "60%" in d.reason


def test_ties_go_by_preference_then_cost(vd: VDir) -> None:
    register_sites(vd)
    add_backend(vd, "disk", "file:///tmp/vdir-test-unused-disk", region="lab", check=False, cost=0.0)
    add_file(vd, "/ds/a.bin", 2 * MiB, "s3eu")
    on_disk = add_file(vd, "/ds/b.bin", 2 * MiB, "disk")
    d = decide(vd, ["/ds"], preference=["local", "aws"])
    assert (d.provider, d.region) == ("local", "lab")
    assert "comes first in compute.preference" in d.reason
    d = decide(vd, ["/ds"], preference=["aws", "local"])
    assert (d.provider, d.region) == ("ec2", "eu-west-1")
    # equal preference: the cheaper storage site wins, and the reason says so
    vd.catalog.delete(on_disk.id)
    add_file(vd, "/ds/b.bin", 2 * MiB, "s3us")
    d = decide(vd, ["/ds"], preference=[])
    assert d.region == "us-east-1" and "lower storage cost" in d.reason


def test_provider_and_region_overrides(vd: VDir) -> None:
    register_sites(vd)
    add_file(vd, "/ds/a.bin", 2 * MiB, "boxy")
    with pytest.raises(InvalidArgument, match="no compute provider is near the data under /ds") as info:
        decide(vd, ["/ds"])
    assert "\n" not in str(info.value) and "--provider" in str(info.value)
    with pytest.raises(InvalidArgument, match="--region"):
        decide(vd, ["/ds"], provider="aws")
    d = decide(vd, ["/ds"], provider="aws", region="eu-central-1")
    assert (d.provider, d.region) == ("ec2", "eu-central-1") and "--region" in d.reason
    d = decide(vd, ["/ds"], provider="ec2", default_regions={"ec2": "us-west-2"})
    assert d.region == "us-west-2"
    with pytest.raises(NotFound):
        decide(vd, ["/nope"])
    with pytest.raises(InvalidArgument, match="unknown compute provider"):
        decide(vd, ["/ds"], provider="openstack")


def test_embedded_catalog_refuses_cloud_boot(vd: VDir) -> None:
    register_sites(vd)
    add_file(vd, "/ds/a.bin", MiB, "s3eu")
    c = Compute(vd, settings=Settings.from_section({"user": "Ann Lee"}))
    plan = c.plan(["/ds"])
    assert plan.provider == "ec2" and plan.region == "eu-west-1" and plan.names == ["ann-lee-vdir-1"]
    assert isinstance(plan.blocker, ConfigError)
    message = str(plan.blocker)
    assert "embedded SQLite catalog" in message and "MongoDB" in message and "\n" not in message
    with pytest.raises(ConfigError, match="embedded SQLite catalog"):
        c.boot(plan)
    assert records(vd) == []


def test_user_data_never_holds_a_password() -> None:
    with pytest.raises(ConfigError, match="password") as info:
        build_user_data(name="a-vdir-1", catalog_url="mongodb://ann:s3cret@db.example.org/vdir", near=["/ds"],
                        region="eu-west-1")
    assert "s3cret" not in str(info.value)
    text = build_user_data(name="a-vdir-1", catalog_url="mongodb://ann:s3cret@db.example.org/vdir", near=["/ds"],
                           region="eu-west-1", catalog_parameter="/vdir/catalog-url")
    assert "s3cret" not in text and "/vdir/catalog-url" in text and "get_parameter" in text
    plain = build_user_data(name="a-vdir-1", catalog_url="mongodb://db.example.org/vdir", near=["/ds"], region="eu-west-1")
    assert plain.startswith("#cloud-config\n")
    doc = yaml.safe_load(plain)
    files = {f["path"]: f["content"] for f in doc["write_files"]}
    assert yaml.safe_load(files["/etc/vdir/config.yaml"]) == {"catalog": "mongodb://db.example.org/vdir"}
    assert "mount --foreground --read-only" in files["/etc/systemd/system/vdir-mount.service"]
    assert "pip install" in files["/usr/local/sbin/vdir-vm-setup"]
    mixed = build_user_data(name="a-vdir-1", catalog_url="mongodb://db.example.org/vdir", near=["/ds"],
                            region="eu-west-1", extra="#!/bin/sh\necho mine\n")
    assert "text/cloud-config" in mixed and "text/x-shellscript" in mixed


# -- EC2 against moto, with a MongoDB catalog a VM could reach --------------------------------
@pytest.fixture
def mvd(mongo_catalog_url: str) -> Iterator[VDir]:
    v = VDir(open_catalog(mongo_catalog_url))
    register_sites(v)
    try:
        yield v
    finally:
        v.close()


def compute_for(vd: VDir, ec2: EC2Server, **aws: Any) -> Compute:
    section = {"user": "ann", "poll_interval": 0.05,
               "aws": {"endpoint_url": ec2.endpoint, "flavor": "t3.micro", "key_file": "~/.ssh/ann.pem", **aws}}
    return Compute(vd, settings=Settings.from_section(section))


def test_data_on_s3_eu_west_1_boots_in_eu_west_1(mvd: VDir, ec2: EC2Server) -> None:
    add_file(mvd, "/datasets/cifar/train.tar", 4 * MiB, "s3eu")
    add_file(mvd, "/datasets/cifar/test.tar", MiB, "s3eu")
    ec2.client("eu-west-1").create_key_pair(KeyName="ann")
    c = compute_for(mvd, ec2, key="ann")
    plan = c.plan(["/datasets/cifar"])
    assert (plan.provider, plan.region, plan.blocker) == ("ec2", "eu-west-1", None)
    [vm] = c.boot(plan)
    assert vm.name == "ann-vdir-1" and vm.region == "eu-west-1" and vm.instance_id
    assert vm.state in ("pending", "running") and vm.ssh_user == "ec2-user"
    [instance] = ec2.instances("eu-west-1")
    assert ec2.instances("us-east-1") == []
    assert instance["InstanceId"] == vm.instance_id and instance["InstanceType"] == "t3.micro"
    assert instance["KeyName"] == "ann"
    tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
    assert tags["Name"] == "ann-vdir-1" and tags["vdir:vm"] == "ann-vdir-1" and tags["vdir:near"] == "/datasets/cifar"
    image = ec2.client("eu-west-1").describe_images(ImageIds=[instance["ImageId"]])["Images"][0]
    assert image["Name"].startswith("al2023-ami-2023")  # the default alias, resolved in eu-west-1
    raw = ec2.client("eu-west-1").describe_instance_attribute(InstanceId=vm.instance_id, Attribute="userData")
    import base64

    user_data = base64.b64decode(raw["UserData"]["Value"]).decode()
    assert mvd.catalog.url in user_data and "--read-only" in user_data
    # the record is what every front end sees
    [listed] = c.list()
    assert listed.name == vm.name and listed.instance_id == vm.instance_id and listed.near == ["/datasets/cifar"]
    assert "eu-west-1" in (listed.reason or "")


def test_split_data_larger_share_wins_on_ec2(mvd: VDir, ec2: EC2Server) -> None:
    add_file(mvd, "/ds/part1", 3 * MiB, "s3us")
    add_file(mvd, "/ds/part2", 2 * MiB, "s3eu")
    add_file(mvd, "/ds/part3", 1 * MiB, "s3ap")
    c = compute_for(mvd, ec2)
    [vm] = c.boot(c.plan(["/ds"]))
    assert vm.region == "us-east-1"
    assert len(ec2.instances("us-east-1")) == 1
    assert ec2.instances("eu-west-1") == [] and ec2.instances("ap-south-1") == []


@pytest.mark.parametrize(
    "what, kwargs, aws, pattern",
    [
        ("flavor", {"flavor": "t9.enormous"}, {}, r"instance type 't9.enormous' does not exist in eu-west-1"),
        ("image", {"image": "ami-0123456789abcdef0"}, {}, r"image 'ami-0123456789abcdef0' does not exist in eu-west-1"),
        ("image alias", {"image": "no-such-image-*"}, {}, r"no image matches 'no-such-image-\*' in eu-west-1"),
        ("key", {"key": "nobody"}, {}, r"key pair 'nobody' does not exist in eu-west-1"),
        ("security group", {}, {"security_group": "sg-0123456789abcdef0"}, r"security group .* does not exist"),
        ("subnet", {}, {"subnet": "subnet-0123456789abcdef0"}, r"subnet .* does not exist"),
    ],
)
def test_bad_input_fails_in_one_line_leaving_nothing(mvd: VDir, ec2: EC2Server, what: str, kwargs: dict[str, Any],
                                                     aws: dict[str, str], pattern: str) -> None:
    add_file(mvd, "/ds/a", MiB, "s3eu")
    c = compute_for(mvd, ec2, **aws)
    with pytest.raises(VDirError, match=pattern) as info:
        c.boot(c.plan(["/ds"], **kwargs))
    assert "\n" not in str(info.value)
    assert records(mvd) == []
    assert ec2.instances("eu-west-1", live_only=False) == []


def test_failure_inside_run_instances_removes_reserved_records(mvd: VDir, ec2: EC2Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """Even when the checks pass and RunInstances itself fails, no record is left behind."""
    add_file(mvd, "/ds/a", MiB, "s3eu")
    c = compute_for(mvd, ec2)
    plan = c.plan(["/ds"], count=2)
    prov = c.provider("ec2")
    monkeypatch.setattr(prov, "check", lambda spec: spec)  # skip the pre-check: let EC2 refuse
    plan.specs[0].flavor = "t9.enormous"
    plan.specs[0].image = AMI_ANY_REGION
    with pytest.raises(InvalidArgument, match="t9.enormous"):
        c.boot(plan)
    assert records(mvd) == [] and ec2.instances("eu-west-1", live_only=False) == []


def test_lifecycle_list_status_wait_ssh_delete(mvd: VDir, ec2: EC2Server) -> None:
    add_file(mvd, "/ds/a", MiB, "s3eu")
    add_file(mvd, "/elsewhere/b", MiB, "s3eu")
    ec2.client("eu-west-1").create_key_pair(KeyName="ann")
    c = compute_for(mvd, ec2, key="ann")
    vms = c.boot(c.plan(["/ds"], count=2, image=AMI_ANY_REGION))
    assert [v.name for v in vms] == ["ann-vdir-1", "ann-vdir-2"]
    assert all(v.ssh_user == "ubuntu" for v in vms)  # guessed from the image's name
    other = c.boot(c.plan(["/elsewhere"]))[0]
    assert other.name == "ann-vdir-3"
    live = {i["InstanceId"]: {t["Key"]: t["Value"] for t in i["Tags"]}["Name"] for i in ec2.instances("eu-west-1")}
    assert sorted(live.values()) == ["ann-vdir-1", "ann-vdir-2", "ann-vdir-3"]

    assert [v.name for v in c.list()] == ["ann-vdir-1", "ann-vdir-2", "ann-vdir-3"]
    waited = c.wait("ann-vdir-1", timeout=30)
    assert waited.state == "running" and waited.public_ip
    status = c.status("ann-vdir-2")
    assert status.state == "running" and status.private_ip
    refreshed = {v.name: v for v in c.list(refresh=True)}
    assert all(v.state == "running" for v in refreshed.values())

    target = c.ssh("ann-vdir-1", ["nproc"])
    assert target.argv[-3:] == [f"ubuntu@{waited.public_ip}", "--", "nproc"]
    assert str(Path("~/.ssh/ann.pem").expanduser()) in target.argv

    with pytest.raises(AlreadyExists, match="ann-vdir-1"):
        c.plan(["/ds"], name="ann-vdir-1")

    deleted = c.delete("ann-vdir-3")
    assert deleted.name == "ann-vdir-3"
    assert sorted(live[i["InstanceId"]] for i in ec2.instances("eu-west-1")) == ["ann-vdir-1", "ann-vdir-2"]
    gone = c.delete_near("/ds")
    assert sorted(v.name for v in gone) == ["ann-vdir-1", "ann-vdir-2"]
    assert records(mvd) == [] and ec2.instances("eu-west-1") == []
    with pytest.raises(NotFound, match="no VM named"):
        c.status("ann-vdir-1")
    # numbers are not reused after a delete
    assert c.plan(["/ds"]).names == ["ann-vdir-4"]


def test_explicit_names_and_duplicates(mvd: VDir, ec2: EC2Server) -> None:
    add_file(mvd, "/ds/a", MiB, "s3eu")
    c = compute_for(mvd, ec2)
    [vm] = c.boot(c.plan(["/ds"], name="train"))
    assert vm.name == "train"
    with pytest.raises(AlreadyExists, match="'train' exists"):
        c.boot(c.plan(["/ds"], name="train"))
    # a record created by someone else between plan and boot is still caught, atomically
    plan = c.plan(["/ds"], name="race", count=2)
    mvd.catalog.put_record(COLLECTION, "race-2", {"name": "race-2", "provider": "ec2", "cloud": "aws", "region": "eu-west-1"})
    with pytest.raises(AlreadyExists, match="race-2"):
        c.boot(plan)
    assert sorted(records(mvd)) == ["race-2", "train"]
    assert len(ec2.instances("eu-west-1")) == 1


def test_refresh_repairs_a_record_left_booting(mvd: VDir, ec2: EC2Server) -> None:
    """A crash after RunInstances but before the record was filled in: --refresh finds the
    instance by its vdir:vm tag."""
    add_file(mvd, "/ds/a", MiB, "s3eu")
    c = compute_for(mvd, ec2)
    plan = c.plan(["/ds"])
    prov = c.provider("ec2")
    spec = prov.check(plan.specs[0])
    [status] = prov.boot([spec])
    mvd.catalog.put_record(COLLECTION, spec.name, {"name": spec.name, "provider": "ec2", "cloud": "aws",
                                                     "region": "eu-west-1", "near": ["/ds"], "state": "booting"})
    [vm] = c.list(refresh=True)
    assert vm.instance_id == status.instance_id and vm.state == "running"
    c.delete(vm.name)
    assert ec2.instances("eu-west-1") == []


def test_allow_embedded_catalog_flag(vd: VDir, ec2: EC2Server) -> None:
    register_sites(vd)
    add_file(vd, "/ds/a", MiB, "s3eu")
    settings = Settings.from_section({"user": "ann", "aws": {"endpoint_url": ec2.endpoint}})
    with pytest.raises(ConfigError, match="SQLite"):
        c = Compute(vd, settings=settings)
        c.boot(c.plan(["/ds"]))
    c = Compute(vd, settings=settings, allow_embedded_catalog=True)
    [vm] = c.boot(c.plan(["/ds"]))
    assert vm.region == "eu-west-1" and len(ec2.instances("eu-west-1")) == 1


# -- the CLI against moto ---------------------------------------------------------------------
@pytest.fixture
def cloud_cli(cli: CLI, mvd: VDir, ec2: EC2Server) -> CLI:
    config = cli.home / ".config" / "vdir" / "config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text(yaml.safe_dump({
        "catalog": mvd.catalog.url,
        "compute": {"user": "ann", "poll_interval": 0.05,
                    "aws": {"endpoint_url": ec2.endpoint, "key": "ann", "key_file": "~/.ssh/ann.pem"}},
    }))
    cli.env.update(CREDENTIALS)
    cli.env.pop("AWS_PROFILE", None)
    ec2.client("eu-west-1").create_key_pair(KeyName="ann")
    add_file(mvd, "/datasets/cifar/train.tar", 3 * MiB, "s3eu")
    add_file(mvd, "/datasets/cifar/extra.tar", 1 * MiB, "s3us")
    return cli


def test_cli_vm_lifecycle(cloud_cli: CLI, mvd: VDir, ec2: EC2Server) -> None:
    dry = cloud_cli.run("vm", "boot", "--near", "/datasets/cifar", "--dry-run", check=True).stdout.decode()
    assert "decision: ec2 in eu-west-1" in dry and "aws/eu-west-1 holds the most" in dry and "75%" in dry
    assert "would boot: ann-vdir-1" in dry and "nothing was started" in dry
    assert records(mvd) == [] and ec2.instances("eu-west-1") == []

    booted = cloud_cli.run("vm", "boot", "--near", "/datasets/cifar", "--flavor", "t3.small", check=True).stdout.decode()
    assert "booted ann-vdir-1 on ec2 in eu-west-1" in booted and "why:" in booted
    listed = json.loads(cloud_cli.run("vm", "list", "--json", check=True).stdout)
    assert [(v["name"], v["region"], v["flavor"]) for v in listed] == [("ann-vdir-1", "eu-west-1", "t3.small")]

    waited = cloud_cli.run("vm", "wait", "ann-vdir-1", check=True).stdout.decode()
    assert "ann-vdir-1: running" in waited
    status = cloud_cli.run("vm", "status", "ann-vdir-1", check=True).stdout.decode()
    assert "state: running" in status and "eu-west-1" in status
    [instance] = ec2.instances("eu-west-1")
    ssh = cloud_cli.run("vm", "ssh", "ann-vdir-1", "--print", "--", "ls", "-l", check=True).stdout.decode()
    assert f"ec2-user@{instance['PublicIpAddress']} -- ls -l" in ssh and "ann.pem" in ssh
    table = cloud_cli.run("vm", "list", "--refresh", check=True).stdout.decode()
    assert "ann-vdir-1" in table and "running" in table and "/datasets/cifar" in table

    deleted = cloud_cli.run("vm", "delete", "ann-vdir-1", check=True).stdout.decode()
    assert "deleted ann-vdir-1" in deleted
    assert json.loads(cloud_cli.run("vm", "list", "--json", check=True).stdout) == []
    assert ec2.instances("eu-west-1") == []


@pytest.mark.parametrize("args, message", [
    (["--flavor", "t9.enormous"], "instance type 't9.enormous' does not exist in eu-west-1"),
    (["--image", "ami-0123456789abcdef0"], "image 'ami-0123456789abcdef0' does not exist in eu-west-1"),
    (["--key", "nobody"], "key pair 'nobody' does not exist in eu-west-1"),
])
def test_cli_bad_input_is_one_line(cloud_cli: CLI, mvd: VDir, ec2: EC2Server, args: list[str], message: str) -> None:
    proc = cloud_cli.run("vm", "boot", "--near", "/datasets/cifar", *args)
    err = proc.stderr.decode()
    assert proc.returncode != 0
    assert err.startswith("vdir: error: ") and message in err and err.count("\n") == 1 and "Traceback" not in err
    assert records(mvd) == [] and ec2.instances("eu-west-1", live_only=False) == []


def test_cli_sqlite_catalog_refuses_cloud_boot(cli: CLI) -> None:
    cli.run("init", check=True)
    proc = cli.run("vm", "boot", "--near", "/", "--provider", "aws", "--region", "eu-west-1", "--dry-run")
    assert proc.returncode == 1
    assert "decision: ec2 in eu-west-1" in proc.stdout.decode()
    err = proc.stderr.decode()
    assert "cannot reach the embedded SQLite catalog" in err and err.count("\n") == 1


# -- the local provider -----------------------------------------------------------------------
def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def test_local_job_runs_next_to_local_data(cli: CLI) -> None:
    cli.run("init", check=True)
    src = cli.home / "src"
    src.mkdir()
    (src / "a.txt").write_text("alpha\n")
    (src / "b.txt").write_text("beta\n")
    cli.run("put", "-r", str(src), "/data/", check=True)
    dry = cli.run("vm", "boot", "--near", "/data", "--dry-run", check=True).stdout.decode()
    assert "decision: local in" in dry and "would boot:" in dry
    booted = cli.run("vm", "boot", "--near", "/data", "--name", "job1", "--",
                     "cat vdir/data/src/*.txt; echo vm=$VDIR_VM near=$VDIR_NEAR; vdir_out=$(ls vdir/data/src); echo $vdir_out",
                     check=True).stdout.decode()
    assert "booted job1 on local" in booted
    waited = cli.run("vm", "wait", "job1", "--timeout", "60", check=True).stdout.decode()
    assert "job1: exited, exit code 0" in waited
    logs = cli.run("vm", "logs", "job1", check=True).stdout.decode()
    assert "alpha\nbeta\n" in logs and "vm=job1 near=/data" in logs and "a.txt b.txt" in logs
    [vm] = json.loads(cli.run("vm", "list", "--json", check=True).stdout)
    workdir = Path(vm["extra"]["workdir"])
    assert (workdir / "vdir" / "data" / "src" / "a.txt").is_symlink()
    assert vm["state"] == "exited" and vm["exit_code"] == 0
    # the job can use vdir itself: the same catalog through VDIR_CONFIG
    out = cli.run("vm", "ssh", "job1", "--", f"{sys.executable} -m cli cat /data/src/b.txt").stdout.decode()
    assert out == "beta\n"
    cli.run("vm", "delete", "job1", check=True)
    assert not workdir.exists()
    assert json.loads(cli.run("vm", "list", "--json", check=True).stdout) == []


def test_local_job_failure_and_delete_stops_it(cli: CLI) -> None:
    cli.run("init", check=True)
    (cli.home / "f").write_text("x")
    cli.run("put", str(cli.home / "f"), "/data/f", check=True)
    cli.run("vm", "boot", "--near", "/data", "--provider", "local", "--name", "bad", "--", "echo oops >&2; exit 3", check=True)
    proc = cli.run("vm", "wait", "bad")
    assert proc.returncode == 1 and "exited with code 3" in proc.stderr.decode()
    assert "oops" in cli.run("vm", "logs", "bad", check=True).stdout.decode()

    cli.run("vm", "boot", "--near", "/data", "--provider", "local", "--name", "long", "--", "sleep 300", check=True)
    [vm] = [v for v in json.loads(cli.run("vm", "list", "--json", check=True).stdout) if v["name"] == "long"]
    pid = vm["extra"]["pid"]
    assert _alive(pid) and vm["state"] == "running"
    assert "state: running" in cli.run("vm", "status", "long", check=True).stdout.decode()
    cli.run("vm", "delete", "--all-near", "/data", check=True)
    deadline = time.monotonic() + 15
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)
    assert json.loads(cli.run("vm", "list", "--json", check=True).stdout) == []


def test_local_rejects_cloud_options(cli: CLI) -> None:
    cli.run("init", check=True)
    (cli.home / "f").write_text("x")
    cli.run("put", str(cli.home / "f"), "/data/f", check=True)
    proc = cli.run("vm", "boot", "--near", "/data", "--provider", "local", "--flavor", "t3.micro")
    assert proc.returncode == 1 and "for cloud VMs" in proc.stderr.decode()
    proc = cli.run("vm", "boot", "--near", "/missing", "--provider", "local")
    assert proc.returncode == 1 and "/missing" in proc.stderr.decode()
    assert json.loads(cli.run("vm", "list", "--json", check=True).stdout) == []
