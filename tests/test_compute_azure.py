"""The Azure compute provider: azure-mgmt-compute/-network against the labelled FAKE of Azure
Resource Manager in tests/fakes/azure_arm_server.py (HTTPS, bearer token, ARM long-running
operations).  Placement picks Azure for data held in Azure Blob storage."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.servers.azure_arm import ARM, FakeCredential
from tests.servers.vdirs import CLI, fails, ok
from tests.test_compute import MiB, add_file, records
from vdir.admin import add_backend
from vdir.catalog.base import open_catalog
from vdir.compute import Compute, Settings
from vdir.compute.azure import AzureProvider
from vdir.core import VDir
from vdir.errors import AuthenticationError, ConfigError, InvalidArgument, NoSpace, NotFound, VDirError

NET = "/providers/Microsoft.Network/"


@pytest.fixture
def mvd(mongo_catalog_url: str) -> Iterator[VDir]:
    v = VDir(open_catalog(mongo_catalog_url))
    add_backend(v, "azwe", "az://container/data", region="westeurope", check=False)
    add_backend(v, "s3us", "s3://bucket-us/data", region="us-east-1", check=False)
    try:
        yield v
    finally:
        v.close()


@pytest.fixture
def ssh_key(tmp_path: Path) -> Path:
    key = tmp_path / "id_test"
    key.write_text("not a real private key\n")
    (tmp_path / "id_test.pub").write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTests ann@test\n")
    return key


def azure_compute(vd: VDir, arm: ARM, ssh_key: Path, credential: Any = None, **azure: Any) -> Compute:
    section = {"user": "ann", "poll_interval": 0.01,
               "azure": {"endpoint": arm.url, "ca_bundle": str(arm.ca_bundle), "subscription_id": arm.subscription,
                         "key_file": str(ssh_key), **azure}}
    settings = Settings.from_section(section)
    provider = AzureProvider(lambda region: settings.cloud("azure", region or None),
                             credential=credential if credential is not None else FakeCredential(), poll=0)
    return Compute(vd, settings=settings, providers={"azure": provider})


def puts(arm: ARM) -> list[str]:
    return [p.rsplit("/providers/", 1)[1] for m, p in arm.fake.requests if m == "PUT"]


def deletes(arm: ARM) -> list[str]:
    return [p.rsplit("/providers/", 1)[1] for m, p in arm.fake.requests if m == "DELETE"]


def test_blob_data_boots_an_azure_vm_in_its_region(mvd: VDir, fake_arm: ARM, ssh_key: Path) -> None:
    add_file(mvd, "/ds/a", 3 * MiB, "azwe")
    add_file(mvd, "/ds/b", MiB, "s3us")
    c = azure_compute(mvd, fake_arm, ssh_key)
    plan = c.plan(["/ds"])
    assert (plan.provider, plan.region, plan.blocker) == ("azure", "westeurope", None)
    assert {s.label: s.provider for s in plan.decision.sites} == {"azure/westeurope": "azure", "aws/us-east-1": "ec2"}
    [vm] = c.boot(plan)
    assert vm.name == "ann-vdir-1" and vm.cloud == "azure" and vm.flavor == "Standard_B2s"
    assert vm.image == "Canonical:ubuntu-24_04-lts:server:latest" and vm.ssh_user == "azureuser"
    # created in dependency order, each a long-running operation polled to its end
    assert puts(fake_arm) == ["Microsoft.Network/virtualNetworks/vdir-vnet-westeurope",
                              "Microsoft.Network/networkSecurityGroups/ann-vdir-1-nsg",
                              "Microsoft.Network/publicIPAddresses/ann-vdir-1-ip",
                              "Microsoft.Network/networkInterfaces/ann-vdir-1-nic",
                              "Microsoft.Compute/virtualMachines/ann-vdir-1"]
    assert any(m == "GET" and "/operations/" in p for m, p in fake_arm.fake.requests)
    body = fake_arm.fake.resources[("vdir", "virtualMachines", "ann-vdir-1")]
    custom = base64.b64decode(body["properties"]["osProfile"]["customData"]).decode()
    assert custom.startswith("#cloud-config") and mvd.catalog.url in custom
    assert "'vdir[mongo,azure,fuse]'" in custom  # vdir on the VM reads Blob storage
    assert body["identity"]["type"] == "SystemAssigned" and vm.extra["identity"]
    keys = body["properties"]["osProfile"]["linuxConfiguration"]["ssh"]["publicKeys"]
    assert keys[0]["keyData"].startswith("ssh-ed25519 ") and body["properties"]["storageProfile"]["osDisk"]["deleteOption"] == "Delete"
    assert body["tags"]["vdir-vm"] == "ann-vdir-1"

    waited = c.wait(vm.name, timeout=30, interval=0.01)
    nic = fake_arm.fake.resources[("vdir", "networkInterfaces", "ann-vdir-1-nic")]
    ip = fake_arm.fake.resources[("vdir", "publicIPAddresses", "ann-vdir-1-ip")]
    assert waited.state == "running"
    assert waited.private_ip == nic["properties"]["ipConfigurations"][0]["properties"]["privateIPAddress"]
    assert waited.public_ip == ip["properties"]["ipAddress"]
    assert c.ssh(vm.name, ["ls"]).argv[-3:] == [f"azureuser@{waited.public_ip}", "--", "ls"]

    fake_arm.fake.requests.clear()
    c.delete(vm.name)
    assert deletes(fake_arm) == ["Microsoft.Compute/virtualMachines/ann-vdir-1",
                                 "Microsoft.Network/networkInterfaces/ann-vdir-1-nic",
                                 "Microsoft.Network/publicIPAddresses/ann-vdir-1-ip",
                                 "Microsoft.Network/networkSecurityGroups/ann-vdir-1-nsg"]
    assert list(fake_arm.fake.resources) == [("vdir", "virtualNetworks", "vdir-vnet-westeurope")]  # shared, kept
    assert records(mvd) == []


@pytest.mark.parametrize("kwargs, azure, error, pattern", [
    ({"flavor": "Standard_Z99"}, {}, InvalidArgument, r"VM size 'Standard_Z99' does not exist in westeurope"),
    ({"image": "Canonical:no-such-offer:server"}, {}, InvalidArgument,
     r"image 'Canonical:no-such-offer:server' does not exist in westeurope"),
    ({"provider": "azure", "region": "marscentral"}, {}, InvalidArgument, r"region 'marscentral' does not exist in Azure"),
    ({}, {"resource_group": "nosuch"}, NotFound, r"resource group 'nosuch' does not exist in subscription"),
    ({}, {"subscription_id": None}, ConfigError, r"no Azure subscription"),
])
def test_bad_input_fails_in_one_line_leaving_nothing(mvd: VDir, fake_arm: ARM, ssh_key: Path, kwargs: dict[str, Any],
                                                     azure: dict[str, Any], error: type[Exception], pattern: str) -> None:
    add_file(mvd, "/ds/a", MiB, "azwe")
    c = azure_compute(mvd, fake_arm, ssh_key, **azure)
    with pytest.raises(error, match=pattern) as info:
        c.boot(c.plan(["/ds"], **kwargs))
    assert "\n" not in str(info.value)
    assert puts(fake_arm) == [] and records(mvd) == [] and fake_arm.fake.resources == {}


def test_missing_ssh_key_is_one_line(mvd: VDir, fake_arm: ARM, tmp_path: Path) -> None:
    add_file(mvd, "/ds/a", MiB, "azwe")
    c = azure_compute(mvd, fake_arm, tmp_path / "absent")
    with pytest.raises(ConfigError, match="cannot read the ssh public key"):
        c.boot(c.plan(["/ds"]))
    assert puts(fake_arm) == [] and records(mvd) == []


def test_quota_exceeded_deletes_what_the_boot_created_in_reverse(mvd: VDir, fake_arm: ARM, ssh_key: Path) -> None:
    """The second VM's create operation fails (regional cores quota): everything this boot made
    goes again, dependants first — the fake refuses to delete anything still in use."""
    add_file(mvd, "/ds/a", MiB, "azwe")
    fake_arm.fake.core_quota["westeurope"] = 2  # one Standard_B2s
    c = azure_compute(mvd, fake_arm, ssh_key)
    with pytest.raises(NoSpace, match=r"quota exceeded: Operation could not be completed as it results in exceeding "
                                      r"approved Total Regional Cores quota") as info:
        c.boot(c.plan(["/ds"], count=2))
    assert "\n" not in str(info.value)
    assert deletes(fake_arm) == [
        "Microsoft.Compute/virtualMachines/ann-vdir-2", "Microsoft.Network/networkInterfaces/ann-vdir-2-nic",
        "Microsoft.Network/publicIPAddresses/ann-vdir-2-ip", "Microsoft.Network/networkSecurityGroups/ann-vdir-2-nsg",
        "Microsoft.Compute/virtualMachines/ann-vdir-1", "Microsoft.Network/networkInterfaces/ann-vdir-1-nic",
        "Microsoft.Network/publicIPAddresses/ann-vdir-1-ip", "Microsoft.Network/networkSecurityGroups/ann-vdir-1-nsg",
        "Microsoft.Network/virtualNetworks/vdir-vnet-westeurope"]
    assert fake_arm.fake.resources == {} and records(mvd) == []


def test_missing_credentials_is_one_line(mvd: VDir, fake_arm: ARM, ssh_key: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real chain (DefaultAzureCredential) finds nothing: one line, nothing created.  The
    SDK's own AZURE_TOKEN_CREDENTIALS=dev leaves out managed identity (no metadata-service probe)."""
    add_file(mvd, "/ds/a", MiB, "azwe")
    monkeypatch.setenv("AZURE_TOKEN_CREDENTIALS", "dev")
    monkeypatch.setenv("PATH", "/nonexistent")  # no az, azd or pwsh to ask
    section = {"user": "ann", "azure": {"endpoint": fake_arm.url, "ca_bundle": str(fake_arm.ca_bundle),
                                        "subscription_id": fake_arm.subscription, "key_file": str(ssh_key)}}
    c = Compute(mvd, settings=Settings.from_section(section))
    with pytest.raises(AuthenticationError, match="no usable Azure credentials") as info:
        c.boot(c.plan(["/ds"]))
    assert "\n" not in str(info.value)
    assert puts(fake_arm) == [] and records(mvd) == []


def test_wrong_token_is_refused(mvd: VDir, fake_arm: ARM, ssh_key: Path) -> None:
    class Wrong(FakeCredential):
        def get_token(self, *scopes: str, **kwargs: Any) -> Any:
            from azure.core.credentials import AccessToken

            return AccessToken("stolen", 2**31)

        def get_token_info(self, *scopes: str, **kwargs: Any) -> Any:
            from azure.core.credentials import AccessTokenInfo

            return AccessTokenInfo("stolen", 2**31)

    add_file(mvd, "/ds/a", MiB, "azwe")
    c = azure_compute(mvd, fake_arm, ssh_key, credential=Wrong())
    with pytest.raises(VDirError, match="Azure refused the credentials") as info:
        c.boot(c.plan(["/ds"]))
    assert "\n" not in str(info.value) and records(mvd) == []


def test_cli_without_azure_credentials_is_one_line(cli: CLI, mvd: VDir, fake_arm: ARM, ssh_key: Path) -> None:
    config = cli.home / ".config" / "vdir" / "config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text(yaml.safe_dump({"catalog": mvd.catalog.url, "compute": {"user": "ann", "azure": {
        "endpoint": fake_arm.url, "ca_bundle": str(fake_arm.ca_bundle), "subscription_id": fake_arm.subscription,
        "key_file": str(ssh_key)}}}))
    for name in [k for k in cli.env if k.startswith("AZURE_")]:
        cli.env.pop(name)
    cli.env["AZURE_TOKEN_CREDENTIALS"] = "dev"  # the SDK's own switch: no managed-identity probe
    add_file(mvd, "/ds/a", MiB, "azwe")
    dry = ok(cli, "vm", "boot", "--near", "/ds", "--dry-run")
    assert "decision: azure in westeurope" in dry and "candidate for azure" in dry
    err = fails(cli, "vm", "boot", "--near", "/ds")
    assert "no usable Azure credentials for compute" in err and "az login" in err
    assert puts(fake_arm) == [] and records(mvd) == []
