"""FAKE: not Azure Resource Manager; implements only the subset vdir's Azure compute provider
calls, from the public REST reference (learn.microsoft.com/rest/api/compute, .../rest/api/
virtualnetwork) and ARM's long-running-operation rules
(learn.microsoft.com/azure/azure-resource-manager/management/async-operations).

HTTPS only (the Azure SDK refuses to send a bearer token over http): :func:`make_certificate`
writes a self-signed certificate for 127.0.0.1, and the client is given it as its CA bundle.
Every request needs ``api-version`` (400 ``MissingApiVersionParameter``) and a bearer token
(401 ``AuthenticationFailed``).  Implemented, under ``/subscriptions/SUB``:

* ``providers/Microsoft.Compute/locations/LOC/vmSizes`` (400 ``LocationNotAvailableForResourceType``
  for an unknown location) and ``.../publishers/P/artifacttypes/vmimage/offers/O/skus/S/versions``;
* ``resourceGroups/RG/providers/Microsoft.Network/{virtualNetworks,networkSecurityGroups,
  publicIPAddresses,networkInterfaces}/NAME`` and ``.../Microsoft.Compute/virtualMachines/NAME``:
  ``GET`` (404 ``ResourceNotFound``; 404 ``ResourceGroupNotFound`` for an unknown group), ``PUT``
  (201 with ``Azure-AsyncOperation`` and ``Retry-After``, the body ``provisioningState:
  Creating``), ``DELETE`` (202 with ``Location`` and ``Azure-AsyncOperation``; 204 when absent),
  and the collection ``GET`` (list);
* ``providers/NS/locations/LOC/operations/ID`` (``{"status": "InProgress"}`` for one poll, then
  ``Succeeded``, or ``Failed`` with ``error``) and ``.../operationResults/ID`` (202, then 204).

A VM whose cores exceed :attr:`FakeARM.core_quota` in its location fails *in its operation* with
``OperationNotAllowed`` (what ARM reports for the regional cores quota).  A NIC must name an
existing subnet and NSG/public IP, a VM an existing NIC (400 ``InvalidResourceReference``), and a
resource still referenced cannot be deleted (400 ``InUseNetworkSecurityGroupCannotBeDeleted``,
``PublicIPAddressInUse``, ``NicInUse``) — so a client deleting in the wrong order fails here.
"""

from __future__ import annotations

import datetime
import ipaddress
import itertools
import re
import ssl
from pathlib import Path
from typing import Any

from tests.fakes.httpbase import FakeHTTPServer, FakeService, Reply, parse_json

SUBSCRIPTION = "00000000-0000-0000-0000-00000000cafe"
TOKEN = "fake-arm-token"
LOCATIONS = {"westeurope", "northeurope", "eastus", "westus2"}
SIZES = {"Standard_B1s": 1, "Standard_B2s": 2, "Standard_D2s_v5": 2, "Standard_D4s_v5": 4}
IMAGES = {("Canonical", "ubuntu-24_04-lts", "server"): ["24.04.202611010"],
          ("Canonical", "0001-com-ubuntu-server-jammy", "22_04-lts-gen2"): ["22.04.202611010"],
          ("Debian", "debian-12", "12-gen2"): ["0.20261101.1"]}
KINDS = {"virtualNetworks": "Microsoft.Network", "networkSecurityGroups": "Microsoft.Network",
         "publicIPAddresses": "Microsoft.Network", "networkInterfaces": "Microsoft.Network",
         "virtualMachines": "Microsoft.Compute"}


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """(certificate, key) of a self-signed certificate for 127.0.0.1, written to ``folder``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-arm.local")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "fake-arm.crt", folder / "fake-arm.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def _error(status: int, code: str, message: str) -> Reply:
    return status, {"x-ms-error-code": code}, {"error": {"code": code, "message": message}}


class FakeARM(FakeService):
    def __init__(self, certificate: Path, key: Path, core_quota: int = 10) -> None:
        super().__init__()
        self.certificate, self.key = certificate, key
        self.core_quota: dict[str, int] = {}
        self.default_quota = core_quota
        self.groups: set[str] = {"vdir"}
        self.resources: dict[tuple[str, str, str], dict[str, Any]] = {}  # (group, kind, name) -> REST body
        self.operations: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self._ids = itertools.count(1)
        self._hosts = itertools.count(4)

    def start(self) -> str:
        import threading

        self._server = FakeHTTPServer(self)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(self.certificate), str(self.key))
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, name="FakeARM", daemon=True)
        self._thread.start()
        return self.url

    @property
    def url(self) -> str:
        return super().url.replace("http://", "https://")

    def reset(self) -> None:
        with self.lock:
            self.groups = {"vdir"}
            self.resources.clear()
            self.operations.clear()
            self.requests.clear()
            self.core_quota.clear()

    def names(self, kind: str) -> list[str]:
        with self.lock:
            return sorted(n for (_, k, n) in self.resources if k == kind)

    # -- routing ----------------------------------------------------------------------------
    def dispatch(self, method: str, path: str, query: dict[str, str], headers: Any, body: bytes) -> Reply:
        with self.lock:
            self.requests.append((method, path))
            if headers.get("Authorization") != f"Bearer {TOKEN}":
                return _error(401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing or invalid.")
            if "api-version" not in query:
                return _error(400, "MissingApiVersionParameter", "The api-version query parameter (?api-version=) is required for all requests.")
            m = re.fullmatch(rf"/subscriptions/{SUBSCRIPTION}/(.*)", path)
            if not m:
                return _error(404, "SubscriptionNotFound", f"The subscription of '{path}' could not be found.")
            rest = m.group(1)
            if r := re.fullmatch(r"providers/([^/]+)/locations/([^/]+)/(operations|operationResults)/([^/]+)", rest):
                return self._operation(r.group(3), r.group(4))
            if method == "GET" and (r := re.fullmatch(r"providers/Microsoft.Compute/locations/([^/]+)/vmSizes", rest)):
                return self._sizes(r.group(1))
            if method == "GET" and (r := re.fullmatch(
                    r"providers/Microsoft.Compute/locations/([^/]+)/publishers/([^/]+)/artifacttypes/vmimage/offers/([^/]+)/skus/([^/]+)/versions", rest)):
                return self._image_versions(*r.groups())
            if r := re.fullmatch(r"resourceGroups/([^/]+)/providers/(Microsoft\.\w+)/(\w+)(?:/([^/]+))?", rest):
                group, namespace, kind, name = r.groups()
                if KINDS.get(kind) != namespace:
                    return _error(404, "InvalidResourceType", f"The resource type '{kind}' could not be found in the namespace '{namespace}'.")
                if group not in self.groups:
                    return _error(404, "ResourceGroupNotFound", f"Resource group '{group}' could not be found.")
                if name is None and method == "GET":
                    items = [v for (g, k, _), v in sorted(self.resources.items()) if g == group and k == kind]
                    return 200, {}, {"value": items}
                if name is not None:
                    if method == "GET":
                        found = self.resources.get((group, kind, name))
                        if found is None:
                            return _error(404, "ResourceNotFound", f"The Resource '{namespace}/{kind}/{name}' under resource group '{group}' was not found.")
                        return 200, {}, found
                    if method == "PUT":
                        return self._put(group, namespace, kind, name, parse_json(body))
                    if method == "DELETE":
                        return self._delete(group, namespace, kind, name)
            return _error(404, "NotImplementedByFake", f"{method} {path} is not implemented by the fake")

    # -- catalogue --------------------------------------------------------------------------
    def _sizes(self, location: str) -> Reply:
        if location not in LOCATIONS:
            return _error(400, "LocationNotAvailableForResourceType",
                          f"The provided location '{location}' is not available for resource type "
                          f"'Microsoft.Compute/locations/vmSizes'. List of available regions for the resource type is "
                          f"'{','.join(sorted(LOCATIONS))}'.")
        return 200, {}, {"value": [{"name": n, "numberOfCores": c, "memoryInMB": 1024 * c, "maxDataDiskCount": 4,
                                    "osDiskSizeInMB": 1047552, "resourceDiskSizeInMB": 4096} for n, c in SIZES.items()]}

    def _image_versions(self, location: str, publisher: str, offer: str, sku: str) -> Reply:
        if location not in LOCATIONS:
            return _error(400, "LocationNotAvailableForResourceType", f"The provided location '{location}' is not available.")
        versions = IMAGES.get((publisher, offer, sku))
        if versions is None:
            return _error(404, "NotFound", "Artifact: VMImage was not found.")
        return 200, {}, [{"name": v, "location": location,
                          "id": f"/Subscriptions/{SUBSCRIPTION}/Providers/Microsoft.Compute/Locations/{location}/Publishers/"
                                f"{publisher}/ArtifactTypes/VMImage/Offers/{offer}/Skus/{sku}/Versions/{v}"} for v in versions]

    # -- long-running operations ------------------------------------------------------------
    def _new_operation(self, namespace: str, location: str, kind: str, target: tuple[str, str, str],
                       error: dict[str, str] | None = None) -> dict[str, str]:
        op_id = f"{next(self._ids):08d}-fake-op"
        self.operations[op_id] = {"kind": kind, "target": target, "polls": 1, "error": error, "done": False}
        base = f"{self.url}/subscriptions/{SUBSCRIPTION}/providers/{namespace}/locations/{location}"
        return {"Azure-AsyncOperation": f"{base}/operations/{op_id}?api-version=2024-07-01",
                "Location": f"{base}/operationResults/{op_id}?api-version=2024-07-01", "Retry-After": "0"}

    def _operation(self, which: str, op_id: str) -> Reply:
        op = self.operations.get(op_id)
        if op is None:
            return _error(404, "OperationNotFound", f"The operation '{op_id}' could not be found.")
        if not op["done"]:
            op["polls"] -= 1
            if op["polls"] < 0:
                self._finish(op)
        if which == "operationResults":
            return (202, {"Retry-After": "0", "Location": ""}, None) if not op["done"] else (204, {}, None)
        if not op["done"]:
            return 200, {"Retry-After": "0"}, {"name": op_id, "status": "InProgress"}
        if op["error"]:
            return 200, {}, {"name": op_id, "status": "Failed", "error": op["error"]}
        return 200, {}, {"name": op_id, "status": "Succeeded"}

    def _finish(self, op: dict[str, Any]) -> None:
        op["done"] = True
        group, kind, name = op["target"]
        if op["kind"] == "delete":
            self.resources.pop((group, kind, name), None)
            return
        found = self.resources.get((group, kind, name))
        if found is None:
            return
        if op["error"]:
            found["properties"]["provisioningState"] = "Failed"
        else:
            found["properties"]["provisioningState"] = "Succeeded"
            if kind == "virtualMachines":
                found["properties"]["instanceView"] = {"statuses": [
                    {"code": "ProvisioningState/succeeded", "level": "Info"},
                    {"code": "PowerState/running", "level": "Info", "displayStatus": "VM running"}]}

    # -- resources --------------------------------------------------------------------------
    def _id(self, group: str, namespace: str, kind: str, name: str) -> str:
        return f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{group}/providers/{namespace}/{kind}/{name}"

    def _exists(self, ref: str | None) -> bool:
        if not ref:
            return False
        m = re.fullmatch(r"/subscriptions/[^/]+/resourceGroups/([^/]+)/providers/[^/]+/(\w+)/([^/]+)(?:/subnets/([^/]+))?", ref, re.I)
        if not m:
            return False
        found = self.resources.get((m.group(1), m.group(2), m.group(3)))
        if found is None:
            return False
        if m.group(4):
            return any(s.get("name") == m.group(4) for s in found["properties"].get("subnets", []))
        return True

    def _put(self, group: str, namespace: str, kind: str, name: str, body: Any) -> Reply:
        if not isinstance(body, dict) or not isinstance(body.get("location"), str):
            return _error(400, "LocationRequired", "The location property is required for this definition.")
        location = body["location"]
        if location not in LOCATIONS:
            return _error(400, "LocationNotAvailableForResourceType", f"The provided location '{location}' is not available for resource type '{namespace}/{kind}'.")
        props = dict(body.get("properties") or {})
        error: dict[str, str] | None = None
        if kind == "networkInterfaces":
            for conf in props.get("ipConfigurations") or []:
                cp = conf.get("properties") or {}
                for ref in ((cp.get("subnet") or {}).get("id"), (cp.get("publicIPAddress") or {}).get("id")):
                    if ref is not None and not self._exists(ref):
                        return _error(400, "InvalidResourceReference", f"Resource {ref} referenced by resource {self._id(group, namespace, kind, name)} was not found.")
                cp["privateIPAddress"] = f"10.0.0.{next(self._hosts)}"
                conf["properties"] = cp
            nsg = (props.get("networkSecurityGroup") or {}).get("id")
            if nsg is not None and not self._exists(nsg):
                return _error(400, "InvalidResourceReference", f"Resource {nsg} was not found.")
        if kind == "publicIPAddresses":
            props["ipAddress"] = f"20.{next(self._hosts)}.0.1"
        if kind == "virtualMachines":
            size = (props.get("hardwareProfile") or {}).get("vmSize")
            if size not in SIZES:
                return _error(400, "InvalidParameter", f"The value {size} provided for the VM size is not valid.")
            for nic in (props.get("networkProfile") or {}).get("networkInterfaces") or []:
                if not self._exists(nic.get("id")):
                    return _error(400, "InvalidResourceReference", f"Resource {nic.get('id')} referenced by resource {name} was not found.")
            cores = sum(SIZES[(v["properties"].get("hardwareProfile") or {}).get("vmSize", "Standard_B1s")]
                        for (g, k, _), v in self.resources.items() if k == "virtualMachines" and v["location"] == location)
            if cores + SIZES[size] > self.core_quota.get(location, self.default_quota):
                error = {"code": "OperationNotAllowed",
                         "message": f"Operation could not be completed as it results in exceeding approved Total Regional "
                                    f"Cores quota. Location: {location}, Current Limit: {self.core_quota.get(location, self.default_quota)}, "
                                    f"Current Usage: {cores}, Additional Required: {SIZES[size]}."}
            props.pop("instanceView", None)
        props["provisioningState"] = "Creating" if (group, kind, name) not in self.resources else "Updating"
        doc = {**body, "id": self._id(group, namespace, kind, name), "name": name, "type": f"{namespace}/{kind}",
               "properties": props}
        if kind == "virtualMachines" and (body.get("identity") or {}).get("type") == "SystemAssigned":
            doc["identity"] = {"type": "SystemAssigned", "principalId": f"{next(self._ids):08d}-principal",
                               "tenantId": "00000000-0000-0000-0000-0000000000aa"}
        self.resources[(group, kind, name)] = doc
        headers = self._new_operation(namespace, location, "put", (group, kind, name), error)
        headers.pop("Location")
        return 201, headers, doc

    def _delete(self, group: str, namespace: str, kind: str, name: str) -> Reply:
        found = self.resources.get((group, kind, name))
        if found is None:
            return 204, {}, None
        rid = self._id(group, namespace, kind, name).lower()
        for (g, k, n), other in self.resources.items():
            if (g, k, n) == (group, kind, name):
                continue
            if rid in str(other).lower():
                code = {"networkSecurityGroups": "InUseNetworkSecurityGroupCannotBeDeleted",
                        "publicIPAddresses": "PublicIPAddressInUse", "networkInterfaces": "NicInUse",
                        "virtualNetworks": "InUseSubnetCannotBeDeleted"}.get(kind, "InUse")
                return _error(400, code, f"Resource {rid} is in use by {other['id']} and cannot be deleted.")
        return 202, self._new_operation(namespace, found["location"], "delete", (group, kind, name)), None


__all__ = ["SUBSCRIPTION", "TOKEN", "FakeARM", "FakeHTTPServer", "make_certificate"]
