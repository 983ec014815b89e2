"""The GCE compute provider: google-cloud-compute's REST transport against the labelled FAKE of
tests/fakes/gce_server.py (no GCE emulator exists).  Placement picks GCE for GCS-held data."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.fakes.gce_server import FakeGCE
from tests.servers.vdirs import CLI, fails, ok
from tests.test_compute import MiB, add_file, records
from vdir.admin import add_backend
from vdir.catalog.base import open_catalog
from vdir.compute import Compute, Settings
from vdir.core import VDir
from vdir.errors import AuthenticationError, InvalidArgument, NoSpace, VDirError

PROJECT = "vdir-test"


@pytest.fixture
def mvd(mongo_catalog_url: str) -> Iterator[VDir]:
    v = VDir(open_catalog(mongo_catalog_url))
    add_backend(v, "gcseu", "gs://bucket-eu/data", region="europe-west1", check=False)
    add_backend(v, "gcsus", "gs://bucket-us/data", region="US", check=False)
    add_backend(v, "s3us", "s3://bucket-us/data", region="us-east-1", check=False)
    try:
        yield v
    finally:
        v.close()


def gce_compute(vd: VDir, fake: FakeGCE, **gcp: Any) -> Compute:
    section = {"user": "ann", "poll_interval": 0.01,
               "gcp": {"endpoint": fake.url, "project": PROJECT, "poll_interval": 0.01, **gcp}}
    return Compute(vd, settings=Settings.from_section(section))


def inserts(fake: FakeGCE) -> list[str]:
    return [p for m, p in fake.requests if m == "POST" and p.endswith("/instances")]


def test_gcs_data_boots_gce_in_the_buckets_region(mvd: VDir, fake_gce: FakeGCE) -> None:
    add_file(mvd, "/ds/a", 3 * MiB, "gcseu")
    add_file(mvd, "/ds/b", MiB, "s3us")
    c = gce_compute(mvd, fake_gce, service_account="vdir-vm@vdir-test.iam.gserviceaccount.com")
    plan = c.plan(["/ds"])
    assert (plan.provider, plan.region, plan.blocker) == ("gce", "europe-west1", None)
    assert {s.label: s.provider for s in plan.decision.sites} == {"gcp/europe-west1": "gce", "aws/us-east-1": "ec2"}
    [vm] = c.boot(plan)
    assert vm.name == "ann-vdir-1" and vm.cloud == "gcp" and vm.extra["zone"] == "europe-west1-b"
    assert vm.flavor == "e2-small" and vm.image == "projects/ubuntu-os-cloud/global/images/family/ubuntu-2404-lts-amd64"
    [inst] = fake_gce.live(PROJECT)
    assert inst.zone == "europe-west1-b" and inst.machine_type == "e2-small"
    body = inst.body
    metadata = {i["key"]: i["value"] for i in body["metadata"]["items"]}
    assert metadata["user-data"].startswith("#cloud-config") and mvd.catalog.url in metadata["user-data"]
    assert "'vdir[mongo,gcs,fuse]'" in metadata["user-data"]  # vdir on the VM reads GCS
    assert body["serviceAccounts"] == [{"email": "vdir-vm@vdir-test.iam.gserviceaccount.com",
                                        "scopes": ["https://www.googleapis.com/auth/devstorage.read_only"]}]
    assert body["labels"]["vdir-vm"] == "ann-vdir-1" and body["labels"]["vdir-managed-by"] == "vdir"
    assert body["disks"][0]["autoDelete"] is True
    # the insert was a long-running operation, polled until DONE
    assert any(m == "GET" and "/zones/europe-west1-b/operations/operation-" in p for m, p in fake_gce.requests)

    waited = c.wait(vm.name, timeout=30, interval=0.01)
    assert waited.state == "running" and waited.public_ip == inst.nat and waited.private_ip == inst.ip
    assert c.ssh(vm.name, ["ls", "/vdir"]).argv[-4:] == [f"ubuntu@{inst.nat}", "--", "ls", "/vdir"]
    assert "fake console of ann-vdir-1" in c.logs(vm.name)
    c.delete(vm.name)
    assert fake_gce.live() == [] and records(mvd) == []


def test_multi_region_bucket_maps_to_a_region(mvd: VDir, fake_gce: FakeGCE) -> None:
    add_file(mvd, "/ds/a", MiB, "gcsus")
    c = gce_compute(mvd, fake_gce)
    [vm] = c.boot(c.plan(["/ds"]))
    assert vm.region == "US" and vm.extra["zone"] == "us-central1-a"
    assert [i.zone for i in fake_gce.live()] == ["us-central1-a"]


@pytest.mark.parametrize("kwargs, gcp, pattern", [
    ({"flavor": "n9-huge"}, {}, r"machine type 'n9-huge' does not exist in europe-west1-b"),
    ({"image": "projects/debian-cloud/global/images/family/debian-99"}, {},
     r"image '.*debian-99' does not exist \(no family 'debian-99' in project debian-cloud\)"),
    ({"image": "windows"}, {}, r"image 'windows' is not an image path"),
    ({"provider": "gce", "region": "mars-central1"}, {}, r"region 'mars-central1' does not exist in GCE"),
    ({"key": "ann"}, {}, r"--key is for EC2 key pairs"),
])
def test_bad_input_fails_in_one_line_leaving_nothing(mvd: VDir, fake_gce: FakeGCE, kwargs: dict[str, Any],
                                                     gcp: dict[str, Any], pattern: str) -> None:
    add_file(mvd, "/ds/a", MiB, "gcseu")
    c = gce_compute(mvd, fake_gce, **gcp)
    with pytest.raises(InvalidArgument, match=pattern) as info:
        c.boot(c.plan(["/ds"], **kwargs))
    assert "\n" not in str(info.value)
    assert inserts(fake_gce) == [] and records(mvd) == [] and fake_gce.live() == []


def test_quota_exceeded_deletes_what_was_created(mvd: VDir, fake_gce: FakeGCE) -> None:
    """The second insert's operation ends with QUOTA_EXCEEDED: the first instance is deleted
    again, no record stays, and the error is one line."""
    add_file(mvd, "/ds/a", MiB, "gcseu")
    fake_gce.cpu_quota["europe-west1"] = 2  # one e2-small
    c = gce_compute(mvd, fake_gce)
    with pytest.raises(NoSpace, match=r"quota exceeded: Quota 'CPUS' exceeded. Limit: 2.0 in region europe-west1") as info:
        c.boot(c.plan(["/ds"], count=2))
    assert "\n" not in str(info.value)
    assert len(inserts(fake_gce)) == 2
    assert ("DELETE", f"/compute/v1/projects/{PROJECT}/zones/europe-west1-b/instances/ann-vdir-1") in fake_gce.requests
    assert fake_gce.live() == [] and records(mvd) == []


def test_missing_credentials_is_one_line(mvd: VDir, fake_gce: FakeGCE, tmp_path: Any,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    add_file(mvd, "/ds/a", MiB, "gcseu")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-such-key.json"))
    c = Compute(mvd, settings=Settings.from_section({"user": "ann", "gcp": {"project": PROJECT}}))
    with pytest.raises(AuthenticationError, match="no Google credentials found for GCE") as info:
        c.boot(c.plan(["/ds"]))
    assert "\n" not in str(info.value) and records(mvd) == []


def test_cli_lifecycle_against_the_fake(cli: CLI, mvd: VDir, fake_gce: FakeGCE) -> None:
    config = cli.home / ".config" / "vdir" / "config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text(yaml.safe_dump({"catalog": mvd.catalog.url, "compute": {
        "user": "ann", "poll_interval": 0.01, "gcp": {"endpoint": fake_gce.url, "project": PROJECT, "poll_interval": 0.01}}}))
    cli.env.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
    add_file(mvd, "/datasets/imagenet/train.tar", 3 * MiB, "gcseu")
    add_file(mvd, "/datasets/imagenet/val.tar", MiB, "s3us")
    dry = ok(cli, "vm", "boot", "--near", "/datasets/imagenet", "--dry-run")
    assert "decision: gce in europe-west1" in dry and "gcp/europe-west1" in dry and "candidate for gce" in dry
    assert "candidate for ec2" in dry and "nothing was started" in dry and fake_gce.live() == []
    booted = ok(cli, "vm", "boot", "--near", "/datasets/imagenet", "--flavor", "n2-standard-2")
    assert "booted ann-vdir-1 on gce in europe-west1" in booted
    assert "ann-vdir-1: running" in ok(cli, "vm", "wait", "ann-vdir-1")
    [row] = json.loads(ok(cli, "vm", "list", "--json"))
    assert row["flavor"] == "n2-standard-2" and row["extra"]["zone"] == "europe-west1-b"
    err = fails(cli, "vm", "boot", "--near", "/datasets/imagenet", "--flavor", "n9-huge")
    assert "machine type 'n9-huge' does not exist in europe-west1-b" in err
    ok(cli, "vm", "delete", "ann-vdir-1")
    assert fake_gce.live() == [] and json.loads(ok(cli, "vm", "list", "--json")) == []


def test_vdir_error_types(mvd: VDir, fake_gce: FakeGCE) -> None:
    """A name GCE refuses (not lower case) is refused before the insert by the name check, or
    by GCE's 400 in one line."""
    add_file(mvd, "/ds/a", MiB, "gcseu")
    c = gce_compute(mvd, fake_gce)
    plan = c.plan(["/ds"], name="Upper_Case")
    with pytest.raises(VDirError, match=r"Invalid value for field 'resource.name'") as info:
        c.boot(plan)
    assert "\n" not in str(info.value) and records(mvd) == [] and fake_gce.live() == []


def test_password_in_the_catalog_url_blocks_a_gce_boot(mvd: VDir, fake_gce: FakeGCE, monkeypatch: pytest.MonkeyPatch) -> None:
    """The SSM hint is for AWS; on GCE the refusal says what to do there instead."""
    from vdir.errors import ConfigError

    add_file(mvd, "/ds/a", MiB, "gcseu")
    monkeypatch.setattr(mvd.catalog, "url", "mongodb://ann:s3cret@db.example.org/vdir")
    plan = gce_compute(mvd, fake_gce).plan(["/ds"])
    assert isinstance(plan.blocker, ConfigError)
    assert "on gcp use a catalog the VM's own identity may read" in str(plan.blocker) and "s3cret" not in str(plan.blocker)
    assert inserts(fake_gce) == []


def test_gce_cluster_is_all_the_instances_and_their_hosts(mvd: VDir, fake_gce: FakeGCE, tmp_path: Any,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from vdir.compute.cluster import Clusters

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    add_file(mvd, "/ds/a", MiB, "gcseu")
    clusters = Clusters(gce_compute(mvd, fake_gce))
    cluster = clusters.create("spark", clusters.plan("spark", ["/ds"], 3), 3)
    assert cluster.provider == "gce" and cluster.members == ["spark-1", "spark-2", "spark-3"]
    ready = clusters.wait("spark", timeout=30, interval=0.01)
    assert ready.state == "running" and sorted(ready.hosts) == sorted(i.ip for i in fake_gce.live())
    clusters.delete("spark")
    assert fake_gce.live() == [] and records(mvd) == []
