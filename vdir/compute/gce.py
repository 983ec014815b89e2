"""Google Compute Engine as a compute provider: the only module that calls GCE (google-cloud-compute).

Placement hands over a GCS location (the bucket's region, e.g. ``europe-west1``, or a
multi-region such as ``eu``, mapped to one region of it); the zone is ``compute.gcp.zone`` or
``compute.gcp.regions.R.zone``, else the first zone that is ``UP`` in the region as GCE lists it.

Before anything is created :meth:`GCEProvider.check` asks GCE for the region, the machine type
in the zone and the image (``projects/P/global/images/family/F``, ``.../images/NAME`` or an
alias such as ``ubuntu-24.04``), so a typo is one line and leaves nothing.  :meth:`boot`
inserts one instance per spec and waits for each insert operation (zone operations polled with
a deadline); if one fails — quota, capacity, anything — the instances already created are
deleted again, newest first, and the error is one line.

What the VM gets: an Ubuntu image (cloud-init reads the ``user-data`` metadata key, vdir's
cloud-config), a 10 GB boot disk deleted with the instance, an external address on the
``default`` network, labels ``vdir-vm``/``vdir-managed-by``, and the **service account**
``compute.gcp.service_account`` (default: the project's default compute account) with the
``devstorage.read_only`` scope, so vdir on the VM reads GCS buckets with the VM's identity and no
secret is ever written to metadata.

Credentials come from Application Default Credentials (``gcloud auth application-default
login``, ``GOOGLE_APPLICATION_CREDENTIALS``, the metadata server); the project from
``compute.gcp.project``, else from ADC.  ``compute.gcp.endpoint`` points at another endpoint
(tests use a labelled fake), used anonymously, as the GCS backend does with its emulator.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc
from google.cloud import compute_v1

from vdir.compute.base import GONE, PENDING, RUNNING, STOPPED, VM, Provider, SSHCommand, Status, VMSpec
from vdir.errors import (
    AuthenticationError,
    BackendUnavailable,
    ConfigError,
    InvalidArgument,
    NoSpace,
    NotFound,
    Timeout,
    TransientError,
    VDirError,
)

T = TypeVar("T")

IMAGE_ALIASES = {
    "ubuntu-24.04": "projects/ubuntu-os-cloud/global/images/family/ubuntu-2404-lts-amd64",
    "ubuntu-22.04": "projects/ubuntu-os-cloud/global/images/family/ubuntu-2204-lts",
    "debian-12": "projects/debian-cloud/global/images/family/debian-12",
}
DEFAULT_IMAGE = "ubuntu-24.04"
DEFAULT_FLAVOR = "e2-small"
STORAGE_SCOPE = "https://www.googleapis.com/auth/devstorage.read_only"
MULTI_REGIONS = {"us": "us-central1", "eu": "europe-west1", "asia": "asia-east1", "nam4": "us-central1",
                 "eur4": "europe-west4", "asia1": "asia-northeast1"}
"""GCS multi- and dual-regions -> the region a VM goes to."""
METADATA_LIMIT = 256 * 1024
_STATES = {"PROVISIONING": PENDING, "STAGING": PENDING, "RUNNING": RUNNING, "REPAIRING": RUNNING,
           "STOPPING": STOPPED, "STOPPED": STOPPED, "SUSPENDING": STOPPED, "SUSPENDED": STOPPED, "TERMINATED": STOPPED}


def gce_region(location: str) -> str:
    """The region a VM next to a bucket in ``location`` goes to."""
    low = location.lower()
    return MULTI_REGIONS.get(low, low)


def _label(value: str) -> str:
    return re.sub(r"[^a-z0-9_-]", "-", value.lower())[:63]


class GCEProvider(Provider):
    name = "gce"
    cloud = "gcp"
    remote = True

    def __init__(self, settings: Callable[[str], dict[str, Any]], *, poll: float = 1.0, timeout: float = 600.0) -> None:
        self._settings = settings
        self.poll = poll
        self.timeout = timeout
        self._clients: dict[str, Any] = {}
        self._project: str | None = None
        self._credentials: Any = None

    # -- plumbing -----------------------------------------------------------------------------
    def _base(self) -> dict[str, Any]:
        return self._settings("")

    def _auth(self) -> tuple[Any, str]:
        """(credentials, project) from ADC, or anonymous credentials for a given endpoint."""
        if self._credentials is None:
            base = self._base()
            project = base.get("project")
            if base.get("endpoint"):
                from google.auth.credentials import AnonymousCredentials

                self._credentials = AnonymousCredentials()
            else:
                import google.auth

                try:
                    self._credentials, found = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
                except auth_exc.DefaultCredentialsError as exc:
                    raise AuthenticationError(
                        "no Google credentials found for GCE (run 'gcloud auth application-default login' or set "
                        f"GOOGLE_APPLICATION_CREDENTIALS): {str(exc).splitlines()[0]}") from exc
                project = project or found
            if not project:
                raise ConfigError("no Google Cloud project: set compute.gcp.project")
            self._project = str(project)
        assert self._project is not None
        return self._credentials, self._project

    def client(self, kind: str) -> Any:
        found = self._clients.get(kind)
        if found is not None:
            return found
        credentials, _ = self._auth()
        endpoint = self._base().get("endpoint")
        options = {"api_endpoint": str(endpoint)} if endpoint else None
        cls = {"instances": compute_v1.InstancesClient, "operations": compute_v1.ZoneOperationsClient,
               "regions": compute_v1.RegionsClient, "machine_types": compute_v1.MachineTypesClient,
               "images": compute_v1.ImagesClient}[kind]
        made = cls(credentials=credentials, client_options=options, transport="rest")
        self._clients[kind] = made
        return made

    @property
    def project(self) -> str:
        return self._auth()[1]

    def _call(self, where: str, what: str, fn: Callable[[], T], spec: VMSpec | None = None) -> T:
        try:
            return fn()
        except VDirError:
            raise
        except (gexc.GoogleAPICallError, gexc.RetryError, auth_exc.GoogleAuthError) as exc:
            raise self._translate(exc, where, what, spec) from exc

    @staticmethod
    def _translate(exc: BaseException, where: str, what: str, spec: VMSpec | None = None) -> VDirError:
        """The one place GCE SDK exceptions become vdir errors (one line each)."""
        message = re.sub(r"\s+", " ", getattr(exc, "message", None) or str(exc)).strip()
        prefix = f"gce {where}: {what}"
        if isinstance(exc, auth_exc.GoogleAuthError) or isinstance(exc, (gexc.Unauthorized,)):
            return AuthenticationError(f"{prefix}: Google refused the credentials ({message})")
        if isinstance(exc, gexc.Forbidden):
            if "quota" in message.lower():
                return NoSpace(f"{prefix}: quota exceeded: {message}")
            return AuthenticationError(f"{prefix}: permission denied ({message})")
        if isinstance(exc, gexc.NotFound):
            return NotFound(f"{prefix}: not found ({message})")
        if isinstance(exc, gexc.Conflict):
            return InvalidArgument(f"{prefix}: {message}")
        if isinstance(exc, (gexc.BadRequest,)):
            return InvalidArgument(f"{prefix}: {message}")
        if isinstance(exc, (gexc.TooManyRequests, gexc.ServiceUnavailable, gexc.InternalServerError)):
            return TransientError(f"{prefix}: {message} (try again later)")
        if isinstance(exc, gexc.RetryError):
            return BackendUnavailable(f"{prefix}: cannot reach GCE ({message})")
        return VDirError(f"{prefix}: {message}")

    # -- places -------------------------------------------------------------------------------
    def zone(self, region: str) -> str:
        """The zone of ``region`` a VM goes to (configured, else the first zone that is UP)."""
        site = self._settings(region)
        if site.get("zone"):
            return str(site["zone"])
        name = gce_region(region)
        found = self._call(name, "look up the region", lambda: self.client("regions").get(project=self.project, region=name))
        zones = sorted(str(z).rstrip("/").rsplit("/", 1)[-1] for z in found.zones)
        if not zones:
            raise InvalidArgument(f"GCE region {name} has no zones in project {self.project}")
        return zones[0]

    def _zone_of(self, vm: VM) -> str:
        return str(vm.extra.get("zone") or self.zone(vm.region))

    # -- validation ---------------------------------------------------------------------------
    def check(self, spec: VMSpec) -> VMSpec:
        region = gce_region(spec.region)
        try:
            zone = self.zone(spec.region)
        except NotFound:
            raise InvalidArgument(f"region {region!r} does not exist in GCE (project {self.project})") from None
        flavor = spec.flavor or DEFAULT_FLAVOR
        try:
            self._call(zone, f"check machine type {flavor}",
                       lambda: self.client("machine_types").get(project=self.project, zone=zone, machine_type=flavor), spec)
        except NotFound:
            raise InvalidArgument(f"machine type {flavor!r} does not exist in {zone} (try e2-small or n2-standard-2; "
                                  "see 'gcloud compute machine-types list')") from None
        image = self.resolve_image(spec.image or DEFAULT_IMAGE, zone)
        if spec.user_data and len(spec.user_data.encode()) > METADATA_LIMIT:
            raise InvalidArgument(f"user data is {len(spec.user_data.encode())} bytes; GCE metadata takes at most {METADATA_LIMIT}")
        if spec.key:
            raise InvalidArgument("--key is for EC2 key pairs; on GCE add your ssh key to the project's metadata "
                                  "(OS Login or 'gcloud compute project-info add-metadata')")
        return replace(spec, image=image, flavor=flavor, ssh_user=spec.ssh_user or "ubuntu",
                       subnet=spec.subnet or None)

    def resolve_image(self, image: str, zone: str) -> str:
        """The image's resource path, checked to exist."""
        path = IMAGE_ALIASES.get(image, image)
        m = re.fullmatch(r"(?:https://www\.googleapis\.com/compute/v1/)?projects/([^/]+)/global/images/(family/)?([^/]+)", path)
        if not m:
            known = ", ".join(sorted(IMAGE_ALIASES))
            raise InvalidArgument(f"image {image!r} is not an image path (projects/P/global/images/[family/]NAME) "
                                  f"or an alias ({known})")
        project, family, name = m.group(1), m.group(2), m.group(3)
        images = self.client("images")
        try:
            if family:
                self._call(zone, f"check image {image}", lambda: images.get_from_family(project=project, family=name))
            else:
                self._call(zone, f"check image {image}", lambda: images.get(project=project, image=name))
        except NotFound:
            raise InvalidArgument(f"image {image!r} does not exist (no {'family' if family else 'image'} {name!r} "
                                  f"in project {project})") from None
        return f"projects/{project}/global/images/{'family/' if family else ''}{name}"

    # -- operations ---------------------------------------------------------------------------
    def _wait_operation(self, zone: str, operation: Any, what: str, spec: VMSpec | None = None) -> None:
        """Poll the zone operation until DONE (with a deadline); its error becomes one line."""
        ops = self.client("operations")
        name = operation.name
        deadline = time.monotonic() + self.timeout
        while operation.status != compute_v1.Operation.Status.DONE:
            if time.monotonic() > deadline:
                raise Timeout(f"gce {zone}: {what}: operation {name} not done after {self.timeout:g}s")
            time.sleep(self.poll)
            operation = self._call(zone, what, lambda: ops.get(project=self.project, zone=zone, operation=name), spec)
        if operation.error and operation.error.errors:
            first = operation.error.errors[0]
            code, message = str(first.code), re.sub(r"\s+", " ", str(first.message)).strip()
            where = f"gce {zone}: {what}"
            if "QUOTA" in code:
                raise NoSpace(f"{where}: quota exceeded: {message}")
            if code in ("ZONE_RESOURCE_POOL_EXHAUSTED", "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS", "RESOURCE_NOT_READY"):
                raise TransientError(f"{where}: {code}: {message} (try another zone with compute.gcp.zone)")
            raise VDirError(f"{where}: {code}: {message}")

    # -- lifecycle ----------------------------------------------------------------------------
    def _instance(self, spec: VMSpec, zone: str) -> Any:
        site = self._settings(spec.region)
        labels = {_label(k.replace(":", "-")): _label(v) for k, v in spec.tags.items() if k != "vdir:near"}
        labels["vdir-vm"] = _label(spec.name)
        items = [compute_v1.Items(key="user-data", value=spec.user_data)] if spec.user_data else []
        return compute_v1.Instance(
            name=spec.name,
            machine_type=f"zones/{zone}/machineTypes/{spec.flavor}",
            labels=labels,
            metadata=compute_v1.Metadata(items=items),
            disks=[compute_v1.AttachedDisk(
                boot=True, auto_delete=True,
                initialize_params=compute_v1.AttachedDiskInitializeParams(source_image=spec.image,
                                                                          disk_size_gb=int(site.get("disk_gb", 10))))],
            network_interfaces=[compute_v1.NetworkInterface(
                network=str(site.get("network") or "global/networks/default"),
                **({"subnetwork": str(site["subnetwork"])} if site.get("subnetwork") else {}),
                access_configs=[compute_v1.AccessConfig(name="External NAT", type_="ONE_TO_ONE_NAT")])],
            service_accounts=[compute_v1.ServiceAccount(
                email=str(site.get("service_account") or "default"),
                scopes=list(site.get("scopes") or [STORAGE_SCOPE]))],
        )

    def boot(self, specs: list[VMSpec]) -> list[Status]:
        created: list[tuple[str, str]] = []
        statuses: list[Status] = []
        try:
            for spec in specs:
                zone = self.zone(spec.region)
                op = self._insert(zone, spec)
                created.append((zone, spec.name))
                self._wait_operation(zone, op, f"create {spec.name}", spec)
                status = self._get(zone, spec.name)
                status.extra["zone"] = zone
                statuses.append(status)
        except BaseException:
            for zone, name in reversed(created):
                try:
                    self._delete(zone, name)
                except VDirError:
                    continue
            raise
        return statuses

    def _insert(self, zone: str, spec: VMSpec) -> Any:
        body = self._instance(spec, zone)
        instances = self.client("instances")
        return self._call(zone, f"create {spec.name}",
                          lambda: instances.insert_unary(project=self.project, zone=zone, instance_resource=body), spec)

    def _get(self, zone: str, name: str) -> Status:
        try:
            found = self._call(zone, f"describe {name}",
                               lambda: self.client("instances").get(project=self.project, zone=zone, instance=name))
        except NotFound:
            return Status(state=GONE)
        nic = found.network_interfaces[0] if found.network_interfaces else None
        public = nic.access_configs[0].nat_i_p if nic and nic.access_configs else None
        return Status(state=_STATES.get(found.status, str(found.status).lower()), instance_id=str(found.id or name),
                      public_ip=public or None, private_ip=(nic.network_i_p if nic else None) or None,
                      extra={"zone": zone, "gce_status": found.status})

    def status(self, vm: VM) -> Status:
        return self._get(self._zone_of(vm), vm.name)

    def find(self, vm: VM) -> Status | None:
        status = self._get(self._zone_of(vm), vm.name)
        return None if status.state == GONE else status

    def _delete(self, zone: str, name: str) -> None:
        instances = self.client("instances")
        try:
            op = self._call(zone, f"delete {name}", lambda: instances.delete_unary(project=self.project, zone=zone, instance=name))
        except NotFound:
            return
        self._wait_operation(zone, op, f"delete {name}")

    def delete(self, vm: VM) -> None:
        self._delete(self._zone_of(vm), vm.name)

    def ssh(self, vm: VM, command: list[str]) -> SSHCommand:
        return SSHCommand.to_vm(vm, command, "ubuntu")

    def logs(self, vm: VM) -> str:
        zone = self._zone_of(vm)
        out = self._call(zone, f"serial port of {vm.name}", lambda: self.client("instances").get_serial_port_output(
            project=self.project, zone=zone, instance=vm.name))
        return str(out.contents or "")
