"""Azure Virtual Machines as a compute provider: the only module that calls Azure Resource Manager
for compute (azure-mgmt-compute, azure-mgmt-network, azure-identity).

Placement hands over an Azure region (the ``--region`` of Azure Blob backends, e.g.
``westeurope``).  A VM lives in the resource group ``compute.azure.resource_group`` (default
``vdir``; it must exist: ``az group create -n vdir -l westeurope``) and consists of, in the
order they are created:

1. the virtual network ``vdir-vnet-LOCATION`` with subnet ``default`` (shared by every vdir VM
   of the location; created only if missing),
2. a network security group ``NAME-nsg`` allowing ssh,
3. a public IP address ``NAME-ip``,
4. a network interface ``NAME-nic`` joining the three,
5. the VM ``NAME``: cloud-init in ``customData`` (vdir's cloud-config), an SSH public key
   (``compute.azure.ssh_public_key``, default ``key_file`` + ``.pub``), a managed OS disk
   deleted with the VM, and a **system-assigned managed identity**, so vdir on the VM reads
   Blob storage with the VM's identity (grant it *Storage Blob Data Reader*) and no secret goes
   into custom data.

Each step is a long-running ARM operation, polled to its end (``Azure-AsyncOperation``).  If any
step of a boot fails — quota, capacity, anything — what this boot created is deleted again in
reverse order (VM, NIC, IP, NSG, and the network if this boot made it).  ``delete`` removes VM,
NIC, IP and NSG in that order.  Before anything is created, :meth:`AzureProvider.check` asks
ARM for the VM sizes of the location and the image, and looks at the resource group, so a typo
is one line and leaves nothing.

Credentials come from ``DefaultAzureCredential`` (environment, workload or managed identity,
``az login``...); the subscription from ``compute.azure.subscription_id`` or
``AZURE_SUBSCRIPTION_ID``.  ``compute.azure.endpoint`` (and ``ca_bundle``) point at another ARM
endpoint (Azure Stack; tests use a labelled fake).
"""

from __future__ import annotations

import base64
import logging
import os
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.network import NetworkManagementClient

from vdir.compute.base import GONE, PENDING, RUNNING, STOPPED, VM, Provider, SSHCommand, Status, VMSpec
from vdir.errors import (
    AuthenticationError,
    BackendUnavailable,
    ConfigError,
    InvalidArgument,
    NoSpace,
    NotFound,
    NotSupported,
    TransientError,
    VDirError,
)

T = TypeVar("T")

IMAGE_ALIASES = {
    "ubuntu-24.04": ("Canonical", "ubuntu-24_04-lts", "server"),
    "ubuntu-22.04": ("Canonical", "0001-com-ubuntu-server-jammy", "22_04-lts-gen2"),
    "debian-12": ("Debian", "debian-12", "12-gen2"),
}
DEFAULT_IMAGE = "ubuntu-24.04"
DEFAULT_FLAVOR = "Standard_B2s"
DEFAULT_GROUP = "vdir"
CUSTOM_DATA_LIMIT = 65535
_POWER = {"running": RUNNING, "starting": PENDING, "stopped": STOPPED, "stopping": STOPPED, "deallocated": STOPPED,
          "deallocating": STOPPED}


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _dict(model: Any) -> dict[str, Any]:
    """A model of the SDK as the REST JSON it came from."""
    if model is None:
        return {}
    if hasattr(model, "as_dict"):
        return dict(model.as_dict())
    return dict(model)


class AzureProvider(Provider):
    name = "azure"
    cloud = "azure"
    remote = True

    def __init__(self, settings: Callable[[str], dict[str, Any]], *, credential: Any = None, poll: float = 2.0) -> None:
        self._settings = settings
        self._credential = credential
        self.poll = poll
        self._compute: Any = None
        self._network: Any = None

    # -- plumbing -----------------------------------------------------------------------------
    def _base(self) -> dict[str, Any]:
        return self._settings("")

    @property
    def subscription(self) -> str:
        sub = self._base().get("subscription_id") or os.environ.get("AZURE_SUBSCRIPTION_ID")
        if not sub:
            raise ConfigError("no Azure subscription: set compute.azure.subscription_id or AZURE_SUBSCRIPTION_ID")
        return str(sub)

    def group(self, region: str) -> str:
        return str(self._settings(region).get("resource_group") or DEFAULT_GROUP)

    def _clients(self) -> tuple[Any, Any]:
        if self._compute is None:
            if self._credential is None:
                from azure.identity import DefaultAzureCredential

                # the chain logs a many-line warning when it finds nothing; vdir says it in one line
                # (``_translate``), so keep that for -v
                if not logging.getLogger("vdir").isEnabledFor(logging.DEBUG):
                    logging.getLogger("azure.identity").setLevel(logging.ERROR)
                self._credential = DefaultAzureCredential()
            base = self._base()
            kwargs: dict[str, Any] = {}
            if base.get("endpoint"):
                kwargs["base_url"] = str(base["endpoint"])
                kwargs["credential_scopes"] = [str(base.get("scope") or "https://management.azure.com/.default")]
            if base.get("ca_bundle"):
                kwargs["connection_verify"] = str(Path(str(base["ca_bundle"])).expanduser())
            self._compute = ComputeManagementClient(self._credential, self.subscription, **kwargs)
            self._network = NetworkManagementClient(self._credential, self.subscription, **kwargs)
        return self._compute, self._network

    @property
    def compute(self) -> Any:
        return self._clients()[0]

    @property
    def network(self) -> Any:
        return self._clients()[1]

    def _call(self, where: str, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except VDirError:
            raise
        except (HttpResponseError, ClientAuthenticationError, ServiceRequestError) as exc:
            raise self._translate(exc, where, what) from exc

    def _wait(self, where: str, what: str, start: Callable[[], Any]) -> Any:
        """Start a long-running operation and poll it to its end."""
        return self._call(where, what, lambda: start().result())

    def _translate(self, exc: BaseException, where: str, what: str) -> VDirError:
        """The one place Azure SDK exceptions become vdir errors (one line each)."""
        prefix = f"azure {where}: {what}"
        if isinstance(exc, ClientAuthenticationError) and getattr(exc, "status_code", None) is None:
            first = _one_line(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            return AuthenticationError(f"no usable Azure credentials for compute ({first}); run 'az login' or set "
                                       "AZURE_CLIENT_ID/AZURE_TENANT_ID/AZURE_CLIENT_SECRET")
        if isinstance(exc, ServiceRequestError):
            return BackendUnavailable(f"{prefix}: cannot reach Azure Resource Manager ({_one_line(str(exc))[:200]})")
        error = getattr(exc, "error", None)
        code = str(getattr(error, "code", "") or "")
        message = _one_line(str(getattr(error, "message", "") or getattr(exc, "message", "") or exc))
        status = getattr(exc, "status_code", None)
        if isinstance(exc, ClientAuthenticationError) or status in (401, 403) or code in ("AuthorizationFailed", "AuthenticationFailed"):
            return AuthenticationError(f"{prefix}: Azure refused the credentials or permission ({code}: {message})")
        if "quota" in (code + message).lower():
            return NoSpace(f"{prefix}: quota exceeded: {message}")
        if code == "ResourceGroupNotFound":
            return NotFound(f"resource group {self.group(where)!r} does not exist in subscription {self.subscription}; "
                            f"create it ('az group create -n {self.group(where)} -l {where}') or set compute.azure.resource_group")
        if isinstance(exc, ResourceNotFoundError) or status == 404:
            return NotFound(f"{prefix}: not found ({code}: {message})")
        if code in ("SkuNotAvailable", "AllocationFailed", "ZonalAllocationFailed", "OverconstrainedAllocationRequest") \
                or (status or 0) >= 500 or status == 429:
            return TransientError(f"{prefix}: {code}: {message} (try again later or another size)")
        if status == 400 or code.startswith("Invalid") or code.endswith("NotAvailableForResourceType"):
            return InvalidArgument(f"{prefix}: {code}: {message}")
        return VDirError(f"{prefix}: {code or type(exc).__name__}: {message}")

    # -- validation ---------------------------------------------------------------------------
    def _public_key(self, spec: VMSpec) -> str:
        site = self._settings(spec.region)
        path = site.get("ssh_public_key") or (f"{site['key_file']}.pub" if site.get("key_file") else None) \
            or (f"{spec.key_file}.pub" if spec.key_file else None)
        if not path:
            raise ConfigError("an Azure Linux VM needs an ssh public key: set compute.azure.ssh_public_key "
                              "(or key_file, whose .pub is used)")
        try:
            return Path(str(path)).expanduser().read_text().strip()
        except OSError:
            raise ConfigError(f"cannot read the ssh public key {path} (compute.azure.ssh_public_key)") from None

    def check(self, spec: VMSpec) -> VMSpec:
        location = spec.region
        if spec.key:
            raise InvalidArgument("--key is for EC2 key pairs; on Azure set compute.azure.ssh_public_key")
        self._public_key(spec)
        size = spec.flavor or DEFAULT_FLAVOR
        try:
            sizes = self._call(location, "list VM sizes", lambda: [s.name for s in self.compute.virtual_machine_sizes.list(location)])
        except InvalidArgument:
            raise InvalidArgument(f"region {location!r} does not exist in Azure or offers no VMs "
                                  "(see 'az account list-locations')") from None
        if size not in sizes:
            raise InvalidArgument(f"VM size {size!r} does not exist in {location} (try {DEFAULT_FLAVOR} or "
                                  "Standard_D2s_v5; see 'az vm list-sizes -l " + location + "')")
        image = self._image_urn(spec.image or DEFAULT_IMAGE, location)
        group = self.group(location)
        self._call(location, f"look at resource group {group}", lambda: list(self.network.virtual_networks.list(group)))
        if spec.user_data and len(spec.user_data.encode()) > CUSTOM_DATA_LIMIT:
            raise InvalidArgument(f"user data is {len(spec.user_data.encode())} bytes; Azure custom data takes at most {CUSTOM_DATA_LIMIT}")
        return replace(spec, image=image, flavor=size, ssh_user=spec.ssh_user or str(self._settings(location).get("ssh_user") or "azureuser"))

    def _image_urn(self, image: str, location: str) -> str:
        """``publisher:offer:sku:version`` (an alias or a URN), checked to exist in ``location``."""
        parts = IMAGE_ALIASES.get(image) or tuple(image.split(":")[:3])
        version = image.split(":")[3] if image.count(":") == 3 else "latest"
        if len(parts) != 3:
            known = ", ".join(sorted(IMAGE_ALIASES))
            raise InvalidArgument(f"image {image!r} is neither publisher:offer:sku[:version] nor an alias ({known})")
        publisher, offer, sku = parts
        try:
            versions = self._call(location, f"check image {image}", lambda: self.compute.virtual_machine_images.list(
                location, publisher, offer, sku))
        except NotFound:
            versions = []
        names = [str(getattr(v, "name", "") or _dict(v).get("name")) for v in versions or []]
        if not names or (version != "latest" and version not in names):
            raise InvalidArgument(f"image {image!r} does not exist in {location} (see 'az vm image list -l {location} --all')")
        return f"{publisher}:{offer}:{sku}:{version}"

    # -- lifecycle ----------------------------------------------------------------------------
    def _ids(self, group: str, name: str) -> dict[str, str]:
        base = f"/subscriptions/{self.subscription}/resourceGroups/{group}/providers"
        return {"nsg": f"{base}/Microsoft.Network/networkSecurityGroups/{name}-nsg",
                "ip": f"{base}/Microsoft.Network/publicIPAddresses/{name}-ip",
                "nic": f"{base}/Microsoft.Network/networkInterfaces/{name}-nic"}

    def _ensure_network(self, location: str, group: str, created: list[tuple[str, str]]) -> str:
        vnet = f"vdir-vnet-{location}"
        net = self.network
        try:
            self._call(location, f"look up {vnet}", lambda: net.virtual_networks.get(group, vnet))
        except NotFound:
            body = {"location": location, "tags": {"vdir-managed-by": "vdir"},
                    "properties": {"addressSpace": {"addressPrefixes": ["10.0.0.0/16"]},
                                   "subnets": [{"name": "default", "properties": {"addressPrefix": "10.0.0.0/24"}}]}}
            self._wait(location, f"create {vnet}", lambda: net.virtual_networks.begin_create_or_update(
                group, vnet, body, polling_interval=self.poll))
            created.append(("vnet", vnet))
        return f"/subscriptions/{self.subscription}/resourceGroups/{group}/providers/Microsoft.Network/virtualNetworks/{vnet}/subnets/default"

    def boot(self, specs: list[VMSpec]) -> list[Status]:
        if not specs:
            return []
        location = specs[0].region
        group = self.group(location)
        created: list[tuple[str, str]] = []
        statuses: list[Status] = []
        try:
            subnet = self._ensure_network(location, group, created)
            for spec in specs:
                self._boot_one(spec, group, subnet, created)
                statuses.append(self._status(location, group, spec.name))
        except BaseException:
            self._remove(location, group, list(reversed(created)))
            raise
        return statuses

    def _boot_one(self, spec: VMSpec, group: str, subnet: str, created: list[tuple[str, str]]) -> None:
        location, name, net = spec.region, spec.name, self.network
        ids = self._ids(group, name)
        tags = {k.replace(":", "-"): v[:256] for k, v in spec.tags.items()} | {"vdir-vm": name}
        nsg = {"location": location, "tags": tags, "properties": {"securityRules": [{
            "name": "ssh", "properties": {"protocol": "Tcp", "access": "Allow", "direction": "Inbound", "priority": 1000,
                                          "sourceAddressPrefix": str(self._settings(location).get("ssh_from") or "*"),
                                          "sourcePortRange": "*", "destinationAddressPrefix": "*",
                                          "destinationPortRange": "22"}}]}}
        self._wait(location, f"create {name}-nsg", lambda: net.network_security_groups.begin_create_or_update(
            group, f"{name}-nsg", nsg, polling_interval=self.poll))
        created.append(("nsg", f"{name}-nsg"))
        ip = {"location": location, "tags": tags, "sku": {"name": "Standard"},
              "properties": {"publicIPAllocationMethod": "Static"}}
        self._wait(location, f"create {name}-ip", lambda: net.public_ip_addresses.begin_create_or_update(
            group, f"{name}-ip", ip, polling_interval=self.poll))
        created.append(("ip", f"{name}-ip"))
        nic = {"location": location, "tags": tags, "properties": {
            "networkSecurityGroup": {"id": ids["nsg"]},
            "ipConfigurations": [{"name": "ipconfig1", "properties": {
                "subnet": {"id": subnet}, "privateIPAllocationMethod": "Dynamic", "publicIPAddress": {"id": ids["ip"]}}}]}}
        self._wait(location, f"create {name}-nic", lambda: net.network_interfaces.begin_create_or_update(
            group, f"{name}-nic", nic, polling_interval=self.poll))
        created.append(("nic", f"{name}-nic"))
        publisher, offer, sku, version = str(spec.image).split(":")
        user = spec.ssh_user or "azureuser"
        vm: dict[str, Any] = {
            "location": location, "tags": tags, "identity": {"type": "SystemAssigned"},
            "properties": {
                "hardwareProfile": {"vmSize": spec.flavor},
                "storageProfile": {
                    "imageReference": {"publisher": publisher, "offer": offer, "sku": sku, "version": version},
                    "osDisk": {"createOption": "FromImage", "deleteOption": "Delete",
                               "managedDisk": {"storageAccountType": "StandardSSD_LRS"}}},
                "osProfile": {"computerName": name[:64], "adminUsername": user, "linuxConfiguration": {
                    "disablePasswordAuthentication": True,
                    "ssh": {"publicKeys": [{"path": f"/home/{user}/.ssh/authorized_keys", "keyData": self._public_key(spec)}]}}},
                "networkProfile": {"networkInterfaces": [{"id": ids["nic"], "properties": {"primary": True}}]},
            },
        }
        if spec.user_data:
            vm["properties"]["osProfile"]["customData"] = base64.b64encode(spec.user_data.encode()).decode()
        created.append(("vm", name))  # a failed create may still leave the VM resource behind
        self._wait(location, f"create {name}", lambda: self.compute.virtual_machines.begin_create_or_update(
            group, name, vm, polling_interval=self.poll))

    def _remove(self, location: str, group: str, doomed: list[tuple[str, str]]) -> None:
        """Delete ``doomed`` in the order given (dependants first); a resource already gone is fine."""
        net, comp = self.network, self.compute
        starts: dict[str, Callable[[str], Any]] = {
            "vm": lambda n: comp.virtual_machines.begin_delete(group, n, polling_interval=self.poll),
            "nic": lambda n: net.network_interfaces.begin_delete(group, n, polling_interval=self.poll),
            "ip": lambda n: net.public_ip_addresses.begin_delete(group, n, polling_interval=self.poll),
            "nsg": lambda n: net.network_security_groups.begin_delete(group, n, polling_interval=self.poll),
            "vnet": lambda n: net.virtual_networks.begin_delete(group, n, polling_interval=self.poll),
        }
        for kind, name in doomed:
            try:
                self._wait(location, f"delete {name}", lambda kind=kind, name=name: starts[kind](name))  # type: ignore[misc]
            except NotFound:
                continue

    def _status(self, location: str, group: str, name: str) -> Status:
        try:
            vm = _dict(self._call(location, f"describe {name}", lambda: self.compute.virtual_machines.get(
                group, name, expand="instanceView")))
        except NotFound:
            return Status(state=GONE)
        props = vm.get("properties") or {}
        codes = [str(s.get("code", "")) for s in (props.get("instanceView") or {}).get("statuses") or []]
        power = next((c.split("/", 1)[1] for c in codes if c.startswith("PowerState/")), None)
        provisioning = str(props.get("provisioningState") or "")
        state = _POWER.get(power or "", PENDING if provisioning in ("Creating", "Updating", "") else provisioning.lower())
        private = public = None
        try:
            nic = _dict(self._call(location, f"describe {name}-nic", lambda: self.network.network_interfaces.get(group, f"{name}-nic")))
            conf = ((nic.get("properties") or {}).get("ipConfigurations") or [{}])[0].get("properties") or {}
            private = conf.get("privateIPAddress")
            ip = _dict(self._call(location, f"describe {name}-ip", lambda: self.network.public_ip_addresses.get(group, f"{name}-ip")))
            public = (ip.get("properties") or {}).get("ipAddress")
        except NotFound:
            pass
        identity = (vm.get("identity") or {}).get("principalId")
        extra = {"resource_group": group, "provisioning_state": provisioning}
        if identity:
            extra["identity"] = identity
        return Status(state=state, instance_id=str(vm.get("id") or name), public_ip=public, private_ip=private, extra=extra)

    def status(self, vm: VM) -> Status:
        return self._status(vm.region, str(vm.extra.get("resource_group") or self.group(vm.region)), vm.name)

    def find(self, vm: VM) -> Status | None:
        status = self.status(vm)
        return None if status.state == GONE else status

    def delete(self, vm: VM) -> None:
        group = str(vm.extra.get("resource_group") or self.group(vm.region))
        self._remove(vm.region, group, [("vm", vm.name), ("nic", f"{vm.name}-nic"), ("ip", f"{vm.name}-ip"),
                                        ("nsg", f"{vm.name}-nsg")])

    def ssh(self, vm: VM, command: list[str]) -> SSHCommand:
        return SSHCommand.to_vm(vm, command, "azureuser")

    def logs(self, vm: VM) -> str:
        raise NotSupported(f"vm {vm.name}: Azure keeps the console in boot diagnostics; see "
                           f"'az vm boot-diagnostics get-boot-log -g {vm.extra.get('resource_group') or DEFAULT_GROUP} -n {vm.name}'")
