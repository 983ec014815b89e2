"""VM lifecycle, used by every front end: boot near a path, list, status, ssh, wait, delete.

:class:`Compute` joins placement (:mod:`vdir.compute.placement`), the providers and the
catalog's ``vms`` records.  Every VM is a record keyed by its name (provider, cloud, region,
instance id, state, near-paths, created...), so all hosts sharing a catalog see one list.

Booting is careful about leftovers:

1. placement picks provider and region (``--dry-run`` stops here and shows why);
2. a cloud provider needs a catalog the VM can reach: with the embedded SQLite catalog it is
   refused (``allow_embedded_catalog`` overrides, for tests and development);
3. the provider validates image, flavor, key pair and network *before* anything is created;
4. the names are reserved with create-only records (state ``booting``): the duplicate-name
   check is atomic, two concurrent boots never share a name;
5. the provider starts all VMs in one request; if that fails the reserved records are
   deleted, so a failed boot leaves neither records nor instances;
6. the records are filled in with instance ids and addresses.

A crash between 5 and 6 leaves a ``booting`` record; ``list --refresh`` finds its instance by
its ``vdir:vm`` tag.  Names are ``{user}-vdir-{n}`` with ``n`` from a per-user counter in the
catalog (collection ``counters``), or given with ``--name`` (``NAME-1``... with ``--count``).

Configuration (``compute:`` in the config file)::

    compute:
      user: alice                  # name prefix (default: the login name)
      preference: [aws, slurm, local]  # tie-break between sites holding equal bytes
      install: "vdir[mongo,s3,fuse]"   # default per cloud: s3 on aws, azure on azure, gcs on gcp
      mountpoint: /vdir
      poll_interval: 2
      aws:
        region: us-east-1          # used when none of the data is on AWS and --provider aws
        image: al2023              # alias, name pattern or ami-...
        flavor: t3.micro
        key: my-key                # EC2 key pair name, checked before booting
        key_file: ~/.ssh/my-key.pem
        security_group: vdir-ssh   # name or sg- id
        subnet: subnet-0123
        instance_profile: vdir-vm  # IAM role of the VM (reads S3 and the catalog parameter)
        catalog_parameter: /vdir/catalog-url   # SSM SecureString, when the catalog URL has a password
        profile: default           # AWS credentials profile used on this machine
        endpoint_url: null         # an EC2-compatible endpoint (tests)
        regions:                   # per-region overrides (AMI ids, subnets, groups differ)
          eu-west-1: {subnet: subnet-0abc, security_group: sg-0def}
      local:
        workdir: ~/.local/share/vdir/vms
      gcp:                         # Google Compute Engine, next to GCS data (vdir.compute.gce)
        project: my-project        # default: from Application Default Credentials
        flavor: e2-small
        image: ubuntu-24.04
        service_account: vdir-vm@my-project.iam.gserviceaccount.com
      azure:                       # Azure VMs, next to Blob data (vdir.compute.azure)
        subscription_id: 0000-...  # default: AZURE_SUBSCRIPTION_ID
        resource_group: vdir
        flavor: Standard_B2s
        ssh_public_key: ~/.ssh/id_ed25519.pub
      slurm:                       # HPC sites: backends with --cloud slurm --region SITE
        partition: batch           # see vdir.compute.slurm for every setting
        regions:
          hpc1: {partition: gpu, account: proj42}
"""

from __future__ import annotations

import builtins
import getpass
import os
import re
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vdir import paths
from vdir.compute import placement, userdata
from vdir.compute.base import BOOTING, COLLECTION, GONE, VM, Provider, SSHCommand, Status, VMSpec
from vdir.errors import (
    AlreadyExists,
    ConfigError,
    Conflict,
    InvalidArgument,
    MissingDependency,
    NotFound,
    VDirError,
)

if TYPE_CHECKING:
    from vdir.core import VDir

COUNTERS = "counters"
MAX_COUNT = 100


def _clean_user(user: str) -> str:
    cleaned = re.sub(r"[^a-z0-9-]+", "-", user.lower()).strip("-")
    return cleaned or "user"


@dataclass
class Settings:
    """The ``compute:`` section of the config, with defaults."""

    user: str
    preference: list[str] = field(default_factory=lambda: list(placement.DEFAULT_PREFERENCE))
    install: str = ""
    """What the VMs pip-install; empty: the default of their cloud (:data:`userdata.CLOUD_INSTALL`)."""
    mountpoint: str = userdata.DEFAULT_MOUNTPOINT
    poll_interval: float = 2.0
    aws: dict[str, Any] = field(default_factory=dict)
    local: dict[str, Any] = field(default_factory=dict)
    slurm: dict[str, Any] = field(default_factory=dict)
    gcp: dict[str, Any] = field(default_factory=dict)
    azure: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_section(cls, section: dict[str, Any] | None) -> Settings:
        doc = dict(section or {})
        try:
            login = getpass.getuser()
        except (KeyError, OSError):
            login = "user"
        preference = doc.get("preference", placement.DEFAULT_PREFERENCE)
        if isinstance(preference, str):
            preference = [p.strip() for p in preference.split(",") if p.strip()]
        if not isinstance(preference, list):
            raise ConfigError("compute.preference must be a list such as [aws, local]")
        for name in ("aws", "local", "slurm", "gcp", "azure"):
            if not isinstance(doc.get(name) or {}, dict):
                raise ConfigError(f"compute.{name} must be a mapping")
        try:
            interval = float(doc.get("poll_interval", 2.0))
        except (TypeError, ValueError):
            raise ConfigError("compute.poll_interval must be a number of seconds") from None
        return cls(user=_clean_user(str(doc.get("user") or login)), preference=[str(p) for p in preference],
                   install=str(doc.get("install") or ""),
                   mountpoint=str(doc.get("mountpoint") or userdata.DEFAULT_MOUNTPOINT), poll_interval=interval,
                   aws=dict(doc.get("aws") or {}), local=dict(doc.get("local") or {}),
                   slurm=dict(doc.get("slurm") or {}), gcp=dict(doc.get("gcp") or {}),
                   azure=dict(doc.get("azure") or {}))

    def cloud(self, cloud: str, region: str | None = None) -> dict[str, Any]:
        """The settings of one cloud, with the overrides of ``region`` applied."""
        base = dict(getattr(self, cloud, None) or {})
        regions = base.pop("regions", None) or {}
        if region and isinstance(regions, dict) and isinstance(regions.get(region), dict):
            base.update(regions[region])
        return base


@dataclass
class BootPlan:
    """What ``boot`` would do, and why: shown by ``--dry-run``."""

    decision: placement.Decision
    provider: str
    region: str
    names: list[str]
    specs: list[VMSpec]
    blocker: VDirError | None = None
    notes: list[str] = field(default_factory=list)
    explicit_names: bool = False
    extra_user_data: str | None = None
    """The user's own ``--user-data`` part, kept to rebuild user data if a name changes."""

    def as_dict(self) -> dict[str, Any]:
        return {"decision": self.decision.as_dict(), "provider": self.provider, "region": self.region,
                "names": self.names, "specs": [asdict(s) for s in self.specs],
                "blocked": str(self.blocker) if self.blocker else None, "notes": self.notes}


class Compute:
    """The compute sidecar of one :class:`~vdir.core.VDir`."""

    def __init__(
        self,
        vd: VDir,
        *,
        settings: Settings | None = None,
        providers: dict[str, Provider] | None = None,
        allow_embedded_catalog: bool = False,
    ) -> None:
        self.vd = vd
        if settings is None:
            settings = Settings.from_section(vd.config.section("compute") if vd.config else None)
        self.settings = settings
        self._providers: dict[str, Provider] = dict(providers or {})
        self.allow_embedded_catalog = allow_embedded_catalog

    # -- providers ----------------------------------------------------------------------------
    def provider(self, name: str) -> Provider:
        name = placement.provider_for(name)
        found = self._providers.get(name)
        if found is not None:
            return found
        made: Provider
        if name == "ec2":
            try:
                from vdir.compute.ec2 import EC2Provider
            except ImportError as exc:
                raise MissingDependency("the ec2 compute provider needs boto3; install it with: pip install 'vdir[s3]'") from exc
            aws = self.settings.cloud("aws")
            made = EC2Provider(profile=aws.get("profile"), endpoint_url=aws.get("endpoint_url"))
        elif name == "gce":
            try:
                from vdir.compute.gce import GCEProvider
            except ImportError as exc:
                raise MissingDependency("the gce compute provider needs google-cloud-compute; install it with: "
                                        "pip install 'vdir[gce]'") from exc
            gcp = self.settings
            made = GCEProvider(lambda region: gcp.cloud("gcp", region or None),
                               poll=float(self.settings.gcp.get("poll_interval", 1.0)))
        elif name == "azure":
            try:
                from vdir.compute.azure import AzureProvider
            except ImportError as exc:
                raise MissingDependency("the azure compute provider needs azure-mgmt-compute and azure-mgmt-network; "
                                        "install them with: pip install 'vdir[azure-compute]'") from exc
            az = self.settings
            made = AzureProvider(lambda region: az.cloud("azure", region or None),
                                 poll=float(self.settings.azure.get("poll_interval", 2.0)))
        elif name == "slurm":
            from vdir.compute.slurm import SlurmProvider

            settings = self.settings
            made = SlurmProvider(self.vd, lambda region: settings.cloud("slurm", region or None))
        else:
            from vdir.compute.local import LocalProvider

            made = LocalProvider(self.vd, self.settings.local.get("workdir"))
        self._providers[name] = made
        return made

    # -- records ------------------------------------------------------------------------------
    def get(self, name: str) -> tuple[VM, int]:
        try:
            doc, version = self.vd.catalog.get_record(COLLECTION, name)
        except NotFound:
            known = ", ".join(k for k, _, _ in self.vd.catalog.list_records(COLLECTION)) or "none"
            raise NotFound(f"no VM named {name!r} (known: {known}; see 'vdir vm list')") from None
        return VM.from_doc(doc), version

    def _save(self, vm: VM, version: int) -> int:
        """Write ``vm`` if its record is still at ``version``; a record deleted meanwhile stays
        deleted (returns 0), a concurrent update wins over this refresh."""
        try:
            return self.vd.catalog.put_record(COLLECTION, vm.name, vm.as_doc(), expected_version=version)
        except (Conflict, NotFound):
            return 0

    # -- names --------------------------------------------------------------------------------
    def _counter(self) -> tuple[int, int]:
        try:
            doc, version = self.vd.catalog.get_record(COUNTERS, f"vm:{self.settings.user}")
            return int(doc.get("next", 1)), version
        except NotFound:
            return 1, 0

    def _taken(self, name: str) -> bool:
        try:
            self.vd.catalog.get_record(COLLECTION, name)
            return True
        except NotFound:
            return False

    def _propose(self, name: str | None, count: int) -> list[str]:
        if name:
            paths.check_name(name)
            names = [name] if count == 1 else [f"{name}-{i}" for i in range(1, count + 1)]
            for taken in names:
                if self._taken(taken):
                    raise AlreadyExists(f"a VM named {taken!r} exists (see 'vdir vm list'); choose another --name or delete it")
            return names
        n, _ = self._counter()
        names = []
        while len(names) < count:
            candidate = f"{self.settings.user}-vdir-{n}"
            if not self._taken(candidate):
                names.append(candidate)
            n += 1
        return names

    def _reserve(self, vms: list[VM], explicit: bool) -> list[VM]:
        """Create the records (create-only); auto names move on to the next free number."""
        done: list[VM] = []
        try:
            if explicit:
                for vm in vms:
                    try:
                        self.vd.catalog.put_record(COLLECTION, vm.name, vm.as_doc(), expected_version=0)
                    except AlreadyExists:
                        raise AlreadyExists(f"a VM named {vm.name!r} exists (see 'vdir vm list'); choose another --name") from None
                    done.append(vm)
                return done
            n, _ = self._counter()
            for vm in vms:
                while True:
                    vm.name = f"{self.settings.user}-vdir-{n}"
                    n += 1
                    try:
                        self.vd.catalog.put_record(COLLECTION, vm.name, vm.as_doc(), expected_version=0)
                        break
                    except AlreadyExists:
                        continue
                done.append(vm)
            self._advance_counter(n)
            return done
        except BaseException:
            for vm in done:
                self.vd.catalog.delete_record(COLLECTION, vm.name)
            raise

    def _advance_counter(self, n: int) -> None:
        key = f"vm:{self.settings.user}"
        for _ in range(10):
            current, version = self._counter()
            if current >= n:
                return
            try:
                self.vd.catalog.put_record(COUNTERS, key, {"next": n}, expected_version=version)
                return
            except (Conflict, AlreadyExists):
                continue

    # -- boot ---------------------------------------------------------------------------------
    def plan(
        self,
        near: list[str],
        *,
        provider: str | None = None,
        region: str | None = None,
        name: str | None = None,
        count: int = 1,
        flavor: str | None = None,
        image: str | None = None,
        key: str | None = None,
        user_data: str | None = None,
        command: list[str] | None = None,
    ) -> BootPlan:
        """Decide where and what to boot; raises only for bad input, a refusal to boot (e.g.
        the embedded catalog) is returned as :attr:`BootPlan.blocker`."""
        if not 1 <= count <= MAX_COUNT:
            raise InvalidArgument(f"--count must be between 1 and {MAX_COUNT}")
        near = [paths.normalize(p) for p in near]
        defaults = {"ec2": str(self.settings.aws["region"])} if self.settings.aws.get("region") else {}
        decision = placement.decide(self.vd, near, preference=self.settings.preference, provider=provider,
                                    region=region, default_regions=defaults)
        prov = self.provider(decision.provider)
        names = self._propose(name, count)
        notes = list(decision.notes)
        blocker: VDirError | None = None
        catalog_url = self.vd.catalog.url
        if prov.remote:
            if catalog_url.startswith("sqlite:") and not self.allow_embedded_catalog:
                blocker = ConfigError(
                    f"a VM on {decision.provider} cannot reach the embedded SQLite catalog; use a MongoDB catalog "
                    "('vdir init --catalog mongodb://HOST/vdir' in a new config) or boot with --provider local")
            else:
                host = userdata.local_host(catalog_url)
                if host:
                    notes.append(f"the catalog is at {host}, which a VM in {decision.region} cannot reach")
        elif user_data:
            raise InvalidArgument("--user-data is for cloud VMs; a local VM runs its job directly (give it after --)")
        if prov.remote and command:
            raise InvalidArgument(f"a job command is for --provider local; on {decision.provider} use --user-data FILE "
                                  "or 'vdir vm ssh NAME -- CMD'")
        cloud = self.settings.cloud(decision.cloud, decision.region)
        specs: list[VMSpec] = []
        for vm_name in names:
            spec = VMSpec(name=vm_name, provider=decision.provider, region=decision.region, near=near,
                          command=list(command or []))
            if prov.remote:
                spec.image = image or cloud.get("image")
                spec.flavor = flavor or cloud.get("flavor")
                spec.key = key or cloud.get("key")
                spec.security_group = cloud.get("security_group")
                spec.subnet = cloud.get("subnet")
                spec.instance_profile = cloud.get("instance_profile")
                spec.ssh_user = cloud.get("ssh_user")
                spec.key_file = str(Path(str(cloud["key_file"])).expanduser()) if cloud.get("key_file") else None
                spec.tags = {"vdir:near": ",".join(near), "vdir:managed-by": "vdir", "vdir:owner": self.settings.user}
                if decision.provider == "ec2":
                    from vdir.compute.ec2 import DEFAULT_FLAVOR, DEFAULT_IMAGE

                    spec.image = spec.image or DEFAULT_IMAGE
                    spec.flavor = spec.flavor or DEFAULT_FLAVOR
                if blocker is None:
                    try:
                        spec.user_data = self._user_data(vm_name, near, decision.region, cloud, user_data, decision.cloud)
                    except ConfigError as exc:
                        blocker = exc
            else:
                spec.image, spec.flavor, spec.key = image, flavor, key
            specs.append(spec)
        return BootPlan(decision=decision, provider=decision.provider, region=decision.region, names=names,
                        specs=specs, blocker=blocker, notes=notes, explicit_names=bool(name), extra_user_data=user_data)

    def _user_data(self, name: str, near: list[str], region: str, cloud: dict[str, Any], extra: str | None,
                   cloud_name: str = "aws") -> str:
        install = str(cloud.get("install") or self.settings.install or userdata.CLOUD_INSTALL.get(cloud_name, userdata.DEFAULT_INSTALL))
        return userdata.build(name=name, catalog_url=self.vd.catalog.url, near=near, region=region,
                              install=install, mountpoint=self.settings.mountpoint,
                              catalog_parameter=cloud.get("catalog_parameter"), extra=extra, cloud=cloud_name)

    def boot(self, plan: BootPlan) -> list[VM]:
        """Carry out ``plan`` (see the module docstring for the order of steps)."""
        if plan.blocker is not None:
            raise plan.blocker
        prov = self.provider(plan.provider)
        checked = prov.check(plan.specs[0])
        if not prov.remote:  # one working directory each; a cloud request shares one check
            for spec in plan.specs[1:]:
                prov.check(spec)
        now = time.time()
        records = [
            VM(name=spec.name, provider=plan.provider, cloud=plan.decision.cloud, region=plan.region, near=spec.near,
               state=BOOTING, flavor=checked.flavor, image=checked.image, key=checked.key, key_file=checked.key_file,
               ssh_user=checked.ssh_user, owner=self.settings.user, reason=plan.decision.reason,
               command=spec.command, created=now, updated=now)
            for spec in plan.specs
        ]
        reserved = self._reserve(records, plan.explicit_names)
        try:
            cloud = self.settings.cloud(plan.decision.cloud, plan.region)
            specs = []
            for spec, vm in zip(plan.specs, reserved, strict=True):
                resolved = replace(spec, name=vm.name, image=checked.image, flavor=checked.flavor,
                                   security_group=checked.security_group,
                                   ssh_user=checked.ssh_user)
                if prov.remote and vm.name != spec.name:
                    resolved.user_data = self._user_data(vm.name, spec.near, plan.region, cloud, plan.extra_user_data,
                                                         plan.decision.cloud)
                specs.append(resolved)
            statuses = prov.boot(specs)
        except BaseException:
            for vm in reserved:
                self.vd.catalog.delete_record(COLLECTION, vm.name)
            raise
        for vm, status in zip(reserved, statuses, strict=True):
            status.apply(vm)
            if not self._save(vm, 1):
                self.vd.catalog.put_record(COLLECTION, vm.name, vm.as_doc())
        return reserved

    # -- the rest of the life -----------------------------------------------------------------
    def list(self, refresh: bool = False) -> builtins.list[VM]:
        """Every recorded VM, by name; ``refresh`` asks the providers first."""
        out: builtins.list[VM] = []
        for _, doc, version in self.vd.catalog.list_records(COLLECTION):
            vm = VM.from_doc(doc)
            if refresh:
                vm = self._refresh(vm, version)
            out.append(vm)
        return out

    def _refresh(self, vm: VM, version: int) -> VM:
        status = self.provider(vm.provider).status(vm)
        status.apply(vm)
        self._save(vm, version)
        return vm

    def status(self, name: str) -> VM:
        vm, version = self.get(name)
        return self._refresh(vm, version)

    def wait(self, name: str, timeout: float = 300.0, interval: float | None = None) -> VM:
        """Until the VM runs (cloud) or its job has ended (local)."""
        vm, _ = self.get(name)
        status: Status = self.provider(vm.provider).wait(vm, timeout=timeout,
                                                         interval=self.settings.poll_interval if interval is None else interval)
        vm, version = self.get(name)
        status.apply(vm)
        self._save(vm, version)
        return vm

    def ssh(self, name: str, command: builtins.list[str] | None = None) -> SSHCommand:
        vm, version = self.get(name)
        prov = self.provider(vm.provider)
        if prov.remote and not (vm.public_ip or vm.private_ip):
            vm = self._refresh(vm, version)
        if prov.remote:
            key_file = self.settings.cloud(vm.cloud, vm.region).get("key_file")
            if key_file:
                vm.key_file = str(Path(str(key_file)).expanduser())
        return prov.ssh(vm, list(command or []))

    def logs(self, name: str) -> str:
        vm, _ = self.get(name)
        return self.provider(vm.provider).logs(vm)

    def delete(self, name: str) -> VM:
        """Stop the VM at its provider, then forget its record.  If the provider fails, the
        record stays so the delete can be tried again."""
        vm, _ = self.get(name)
        try:
            self.provider(vm.provider).delete(vm)
        except NotFound:
            pass
        vm.state = GONE
        self.vd.catalog.delete_record(COLLECTION, vm.name)
        return vm

    def delete_near(self, path: str) -> builtins.list[VM]:
        """Delete every VM booted near ``path`` or a path below it."""
        norm = paths.normalize(path)
        doomed = [vm for vm in self.list() if any(paths.is_within(n, norm) for n in vm.near)]
        return [self.delete(vm.name) for vm in doomed]


def read_user_data(path: str) -> str:
    """The text of a ``--user-data`` file (one-line errors)."""
    try:
        return Path(os.path.expanduser(path)).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotFound(f"user data file {path} does not exist") from None
    except UnicodeDecodeError:
        raise InvalidArgument(f"user data file {path} is not UTF-8 text") from None
    except OSError as exc:
        raise InvalidArgument(f"cannot read user data file {path}: {exc.strerror}") from exc
