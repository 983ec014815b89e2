"""FAKE: not Google Compute Engine; implements only the subset vdir calls, from the public REST
reference of the Compute Engine API v1 (cloud.google.com/compute/docs/reference/rest/v1).

Served under ``/compute/v1/...`` (point ``google-cloud-compute``'s REST transport at it with
``client_options={"api_endpoint": url}``).  Implemented:

* ``GET projects/P/regions/R`` (``zones`` as URLs, ``status``), ``GET projects/P/zones/Z/machineTypes/T``
  (``guestCpus``), ``GET projects/P/global/images/NAME`` and ``.../images/family/F``;
* ``POST projects/P/zones/Z/instances`` → a zone **Operation** (``compute#operation``, status
  ``RUNNING``), ``GET projects/P/zones/Z/operations/OP`` advances it one step per poll to
  ``DONE``; a failed insert is an operation ending ``DONE`` with ``error.errors[]`` and
  ``httpErrorStatusCode``/``httpErrorMessage`` (e.g. ``QUOTA_EXCEEDED``, 403), as GCE reports
  quota after accepting the request;
* ``GET``/``DELETE projects/P/zones/Z/instances/NAME`` (status ``PROVISIONING`` → ``STAGING`` →
  ``RUNNING``; delete is an operation too, the instance ``STOPPING`` until it is done),
  ``GET .../instances`` (list), ``GET .../instances/NAME/serialPort``;
* error bodies ``{"error": {"code", "message", "errors": [{"message", "domain", "reason"}]}}``
  with 400 ``invalid``, 404 ``notFound``, 409 ``alreadyExists``.

State is in memory; :class:`FakeGCE` is the handle tests use (``cpu_quota`` per region,
``requests`` lists every (method, path)).  Regions known: see :data:`REGIONS`.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.httpbase import FakeService, Reply, parse_json

REGIONS = {
    "europe-west1": ["europe-west1-b", "europe-west1-c", "europe-west1-d"],
    "us-central1": ["us-central1-a", "us-central1-b", "us-central1-c", "us-central1-f"],
    "us-east1": ["us-east1-b", "us-east1-c", "us-east1-d"],
}
MACHINE_TYPES = {"e2-micro": 2, "e2-small": 2, "e2-medium": 2, "n2-standard-2": 2, "n2-standard-4": 4, "n2-standard-8": 8}
IMAGES = {
    "ubuntu-os-cloud": {"families": {"ubuntu-2404-lts-amd64": "ubuntu-2404-noble-amd64-v20261101",
                                     "ubuntu-2204-lts": "ubuntu-2204-jammy-v20261101"}},
    "debian-cloud": {"families": {"debian-12": "debian-12-bookworm-v20261101"}},
}
NAME = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
BASE = "https://www.googleapis.com/compute/v1"


@dataclass
class Instance:
    id: int
    name: str
    zone: str
    machine_type: str
    body: dict[str, Any]
    status: str = "PROVISIONING"
    ip: str = ""
    nat: str = ""


@dataclass
class Operation:
    id: int
    name: str
    zone: str
    kind: str  # insert | delete
    target: str
    steps: int = 1
    error: dict[str, Any] | None = None
    http: tuple[int, str] | None = None
    done: bool = False
    on_done: list[Any] = field(default_factory=list)


def _error(code: int, reason: str, message: str) -> Reply:
    return code, {}, {"error": {"code": code, "message": message,
                                "errors": [{"message": message, "domain": "global", "reason": reason}]}}


class FakeGCE(FakeService):
    def __init__(self, cpu_quota: int = 24) -> None:
        super().__init__()
        self.cpu_quota: dict[str, int] = {}
        self.default_quota = cpu_quota
        self.instances: dict[tuple[str, str, str], Instance] = {}
        self.operations: dict[tuple[str, str, str], Operation] = {}
        self.requests: list[tuple[str, str]] = []
        self._ids = itertools.count(4_000_000_000_000_001)
        self._hosts = itertools.count(2)

    def reset(self) -> None:
        with self.lock:
            self.instances.clear()
            self.operations.clear()
            self.requests.clear()
            self.cpu_quota.clear()

    def live(self, project: str | None = None) -> list[Instance]:
        with self.lock:
            return [i for (p, _, _), i in self.instances.items() if project in (None, p)]

    # -- routing ----------------------------------------------------------------------------
    def dispatch(self, method: str, path: str, query: dict[str, str], headers: Any, body: bytes) -> Reply:
        with self.lock:
            self.requests.append((method, path))
            self.calls[f"{method} {re.sub(r'/[^/]+$', '/X', path)}"] += 1
            m = re.fullmatch(r"/compute/v1/projects/([^/]+)/(.*)", path)
            if not m:
                return _error(404, "notFound", f"no such API path {path}")
            project, rest = m.group(1), m.group(2)
            if method == "GET" and (r := re.fullmatch(r"regions/([^/]+)", rest)):
                return self._region(project, r.group(1))
            if method == "GET" and (r := re.fullmatch(r"zones/([^/]+)/machineTypes/([^/]+)", rest)):
                return self._machine_type(project, r.group(1), r.group(2))
            if method == "GET" and (r := re.fullmatch(r"global/images/family/([^/]+)", rest)):
                return self._image(project, r.group(1), family=True)
            if method == "GET" and (r := re.fullmatch(r"global/images/([^/]+)", rest)):
                return self._image(project, r.group(1), family=False)
            if (r := re.fullmatch(r"zones/([^/]+)/instances", rest)):
                if method == "POST":
                    return self._insert(project, r.group(1), parse_json(body))
                if method == "GET":
                    items = [self._instance_json(i) for (p, z, _), i in sorted(self.instances.items())
                             if p == project and z == r.group(1)]
                    return 200, {}, {"kind": "compute#instanceList", "items": items}
            if (r := re.fullmatch(r"zones/([^/]+)/instances/([^/]+)", rest)):
                if method == "GET":
                    return self._get(project, r.group(1), r.group(2))
                if method == "DELETE":
                    return self._delete(project, r.group(1), r.group(2))
            if method == "GET" and (r := re.fullmatch(r"zones/([^/]+)/instances/([^/]+)/serialPort", rest)):
                found = self.instances.get((project, r.group(1), r.group(2)))
                if found is None:
                    return _error(404, "notFound", f"The resource 'projects/{project}/zones/{r.group(1)}/instances/{r.group(2)}' was not found")
                return 200, {}, {"kind": "compute#serialPortOutput", "contents": f"[fake console of {found.name}]\n", "start": "0", "next": "1"}
            if method == "GET" and (r := re.fullmatch(r"zones/([^/]+)/operations/([^/]+)", rest)):
                return self._operation(project, r.group(1), r.group(2))
            return _error(404, "notFound", f"The resource '{path}' was not found (not implemented by the fake)")

    # -- resources --------------------------------------------------------------------------
    def _region(self, project: str, region: str) -> Reply:
        if region not in REGIONS:
            return _error(404, "notFound", f"The resource 'projects/{project}/regions/{region}' was not found")
        zones = [f"{BASE}/projects/{project}/zones/{z}" for z in REGIONS[region]]
        return 200, {}, {"kind": "compute#region", "name": region, "status": "UP", "zones": zones,
                         "selfLink": f"{BASE}/projects/{project}/regions/{region}",
                         "quotas": [{"metric": "CPUS", "limit": float(self._quota(region)), "usage": float(self._usage(project, region))}]}

    def _zone_ok(self, zone: str) -> bool:
        return any(zone in zones for zones in REGIONS.values())

    def _machine_type(self, project: str, zone: str, name: str) -> Reply:
        if not self._zone_ok(zone) or name not in MACHINE_TYPES:
            return _error(404, "notFound", f"The resource 'projects/{project}/zones/{zone}/machineTypes/{name}' was not found")
        return 200, {}, {"kind": "compute#machineType", "name": name, "zone": zone, "guestCpus": MACHINE_TYPES[name],
                         "memoryMb": 2048 * MACHINE_TYPES[name]}

    def _image(self, project: str, name: str, family: bool) -> Reply:
        known = IMAGES.get(project, {}).get("families", {})
        found = known.get(name) if family else (name if name in known.values() else None)
        if not found:
            what = f"global/images/family/{name}" if family else f"global/images/{name}"
            return _error(404, "notFound", f"The resource 'projects/{project}/{what}' was not found")
        return 200, {}, {"kind": "compute#image", "name": found, "family": name if family else "", "status": "READY",
                         "selfLink": f"{BASE}/projects/{project}/global/images/{found}"}

    def _quota(self, region: str) -> int:
        return self.cpu_quota.get(region, self.default_quota)

    def _usage(self, project: str, region: str) -> int:
        return sum(MACHINE_TYPES.get(i.machine_type, 0) for (p, z, _), i in self.instances.items()
                   if p == project and z in REGIONS.get(region, []))

    def _new_operation(self, project: str, zone: str, kind: str, target: str) -> Operation:
        op_id = next(self._ids)
        op = Operation(id=op_id, name=f"operation-{op_id}-fake", zone=zone, kind=kind, target=target)
        self.operations[(project, zone, op.name)] = op
        return op

    def _operation_json(self, project: str, op: Operation) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "kind": "compute#operation", "id": str(op.id), "name": op.name, "operationType": op.kind,
            "zone": f"{BASE}/projects/{project}/zones/{op.zone}", "targetLink": op.target,
            "status": "DONE" if op.done else "RUNNING", "progress": 100 if op.done else 0,
            "selfLink": f"{BASE}/projects/{project}/zones/{op.zone}/operations/{op.name}",
        }
        if op.done and op.error:
            doc["error"] = op.error
            assert op.http is not None
            doc["httpErrorStatusCode"], doc["httpErrorMessage"] = op.http
        return doc

    def _insert(self, project: str, zone: str, body: Any) -> Reply:
        if not isinstance(body, dict):
            return _error(400, "parseError", "This API does not support parsing form-encoded input.")
        if not self._zone_ok(zone):
            return _error(404, "notFound", f"The resource 'projects/{project}/zones/{zone}' was not found")
        name = str(body.get("name") or "")
        if not NAME.fullmatch(name):
            return _error(400, "invalid", f"Invalid value for field 'resource.name': '{name}'. Must be a match of regex "
                                          "'(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)'")
        if (project, zone, name) in self.instances:
            return _error(409, "alreadyExists", f"The resource 'projects/{project}/zones/{zone}/instances/{name}' already exists")
        machine = str(body.get("machineType") or "").rsplit("/", 1)[-1]
        if machine not in MACHINE_TYPES:
            return _error(400, "invalid", f"Invalid value for field 'resource.machineType': '{body.get('machineType')}'. "
                                          "Machine type with name '" + machine + f"' does not exist in zone '{zone}'.")
        disks = body.get("disks") or []
        image = ((disks[0].get("initializeParams") or {}).get("sourceImage") if disks else None) or ""
        im = re.fullmatch(r"projects/([^/]+)/global/images/(family/)?([^/]+)", image)
        if not im or self._image(im.group(1), im.group(3), bool(im.group(2)))[0] != 200:
            return _error(400, "invalid", f"Invalid value for field 'resource.disks[0].initializeParams.sourceImage': "
                                          f"'{image}'. The referenced image resource cannot be found.")
        target = f"{BASE}/projects/{project}/zones/{zone}/instances/{name}"
        op = self._new_operation(project, zone, "insert", target)
        region = next(r for r, zones in REGIONS.items() if zone in zones)
        wanted = MACHINE_TYPES[machine]
        if self._usage(project, region) + wanted > self._quota(region):
            op.steps = 1
            op.error = {"errors": [{"code": "QUOTA_EXCEEDED",
                                    "message": f"Quota 'CPUS' exceeded.  Limit: {float(self._quota(region))} in region {region}."}]}
            op.http = (403, "FORBIDDEN")
        else:
            n = next(self._hosts)
            self.instances[(project, zone, name)] = Instance(
                id=next(self._ids), name=name, zone=zone, machine_type=machine, body=body,
                ip=f"10.132.0.{n}", nat=f"34.78.{n // 250}.{n % 250 + 1}")
        return 200, {}, self._operation_json(project, op)

    def _operation(self, project: str, zone: str, name: str) -> Reply:
        op = self.operations.get((project, zone, name))
        if op is None:
            return _error(404, "notFound", f"The resource 'projects/{project}/zones/{zone}/operations/{name}' was not found")
        if not op.done:
            op.steps -= 1
            if op.steps < 0:
                op.done = True
                inst_name = op.target.rsplit("/", 1)[-1]
                found = self.instances.get((project, zone, inst_name))
                if op.kind == "insert" and found is not None:
                    found.status = "STAGING"
                elif op.kind == "delete":
                    self.instances.pop((project, zone, inst_name), None)
        return 200, {}, self._operation_json(project, op)

    def _instance_json(self, inst: Instance) -> dict[str, Any]:
        b = inst.body
        return {
            "kind": "compute#instance", "id": str(inst.id), "name": inst.name, "status": inst.status,
            "zone": f"{BASE}/projects/p/zones/{inst.zone}", "machineType": f"{BASE}/projects/p/zones/{inst.zone}/machineTypes/{inst.machine_type}",
            "labels": b.get("labels") or {}, "metadata": b.get("metadata") or {}, "disks": b.get("disks") or [],
            "serviceAccounts": b.get("serviceAccounts") or [],
            "networkInterfaces": [{"network": (b.get("networkInterfaces") or [{}])[0].get("network"), "networkIP": inst.ip,
                                   "accessConfigs": [{"name": "External NAT", "type": "ONE_TO_ONE_NAT", "natIP": inst.nat}]}],
        }

    def _get(self, project: str, zone: str, name: str) -> Reply:
        inst = self.instances.get((project, zone, name))
        if inst is None:
            return _error(404, "notFound", f"The resource 'projects/{project}/zones/{zone}/instances/{name}' was not found")
        doc = self._instance_json(inst)
        if inst.status == "STAGING":
            inst.status = "RUNNING"  # the next look finds it running
        return 200, {}, doc

    def _delete(self, project: str, zone: str, name: str) -> Reply:
        inst = self.instances.get((project, zone, name))
        if inst is None:
            return _error(404, "notFound", f"The resource 'projects/{project}/zones/{zone}/instances/{name}' was not found")
        inst.status = "STOPPING"
        op = self._new_operation(project, zone, "delete", f"{BASE}/projects/{project}/zones/{zone}/instances/{name}")
        return 200, {}, self._operation_json(project, op)
