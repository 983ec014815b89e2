"""Virtual clusters: N machines started together next to a path's data, with a host list.

``Clusters(compute).create("train", ["/datasets/cifar"], count=4)`` places like ``vm boot``
(:mod:`vdir.compute.placement`) and then, all or nothing:

* on a cloud provider (``ec2``), boots N VMs ``train-1`` … ``train-N`` in one request (the
  provider's ``boot`` leaves nothing running if any fails);
* on ``slurm``, submits **one job of N tasks** (``--ntasks N``; N whole nodes with
  ``compute.slurm.cluster: nodes``), which SLURM starts complete or not at all (or, with
  ``cluster: array``, a job array of N tasks, submitted at once but started as room allows); its one VM
  record is called ``train``;
* on ``local``, starts N local VMs (for trying things out).

The cluster is a record in the catalog (collection ``clusters``, keyed by name: provider,
region, members, hosts), next to the members' own VM records, so every host sharing the
catalog sees it.  The name is reserved with a create-only record first; if booting fails the
record is removed again.

The **host list** is one line per task or machine (an MPI host file; Dask and Spark take the
same list).  On SLURM the job writes it into its working directory on the shared file system
as soon as it starts (``$VDIR_HOSTS`` inside the job); for cloud VMs it is written to
``$XDG_DATA_HOME/vdir/clusters/NAME/hosts`` from the members' private addresses, refreshed by
``list(refresh=True)``, and recorded in the cluster record either way.
"""

from __future__ import annotations

import builtins
import contextlib
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vdir import paths
from vdir.compute.base import BOOTING, FINAL_STATES, GONE, VM, SSHCommand
from vdir.errors import AlreadyExists, Conflict, InvalidArgument, NotFound, Timeout

if TYPE_CHECKING:
    from vdir.compute.service import BootPlan, Compute

COLLECTION = "clusters"


@dataclass
class Cluster:
    """The catalog's record of one cluster."""

    name: str
    provider: str
    cloud: str
    region: str
    count: int
    near: list[str] = field(default_factory=list)
    members: list[str] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)
    hosts_file: str | None = None
    state: str = BOOTING
    reason: str | None = None
    command: list[str] = field(default_factory=list)
    owner: str | None = None
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)

    def as_doc(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Cluster:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in known})


def _overall(states: builtins.list[str]) -> str:
    """One state for the cluster: the members' common state, else the least advanced one."""
    if not states:
        return GONE
    if len(set(states)) == 1:
        return states[0]
    for state in ("booting", "pending", "running", "ready"):
        if state in states:
            return "partly " + state if any(s in FINAL_STATES or s == GONE for s in states) else state
    return "stopped"


class Clusters:
    """Clusters of one :class:`~vdir.compute.service.Compute`."""

    def __init__(self, compute: Compute) -> None:
        self.compute = compute
        self.catalog = compute.vd.catalog

    def get(self, name: str) -> tuple[Cluster, int]:
        try:
            doc, version = self.catalog.get_record(COLLECTION, name)
        except NotFound:
            known = ", ".join(k for k, _, _ in self.catalog.list_records(COLLECTION)) or "none"
            raise NotFound(f"no cluster named {name!r} (known: {known}; see 'vdir cluster list')") from None
        return Cluster.from_doc(doc), version

    def plan(
        self,
        name: str,
        near: builtins.list[str],
        count: int,
        *,
        provider: str | None = None,
        region: str | None = None,
        flavor: str | None = None,
        image: str | None = None,
        key: str | None = None,
        command: builtins.list[str] | None = None,
    ) -> BootPlan:
        """What ``create`` would boot (``--dry-run`` shows it)."""
        paths.check_name(name)
        if count < 1:
            raise InvalidArgument("--count must be at least 1")
        with contextlib.suppress(NotFound):
            self.get(name)
            raise AlreadyExists(f"a cluster named {name!r} exists (see 'vdir cluster list'); choose another name or delete it")
        from vdir.compute import placement

        settings = self.compute.settings
        defaults = {"ec2": str(settings.aws["region"])} if settings.aws.get("region") else {}
        chosen = placement.decide(self.compute.vd, near, preference=settings.preference, provider=provider,
                                  region=region, default_regions=defaults).provider
        if chosen == "slurm":
            plan = self.compute.plan(near, provider=provider, region=region, name=name, count=1,
                                     flavor=flavor, image=image, key=key, command=command)
            for spec in plan.specs:
                spec.tasks = count
        else:
            plan = self.compute.plan(near, provider=provider, region=region, name=name, count=count,
                                     flavor=flavor, image=image, key=key, command=command)
        return plan

    def create(self, name: str, plan: BootPlan, count: int) -> Cluster:
        """Reserve the name, boot every member (all or nothing), record the host list."""
        if plan.blocker is not None:
            raise plan.blocker
        spec = plan.specs[0]
        cluster = Cluster(name=name, provider=plan.provider, cloud=plan.decision.cloud, region=plan.region, count=count,
                          near=list(spec.near), members=list(plan.names), command=list(spec.command),
                          reason=plan.decision.reason, owner=self.compute.settings.user)
        try:
            self.catalog.put_record(COLLECTION, name, cluster.as_doc(), expected_version=0)
        except AlreadyExists:
            raise AlreadyExists(f"a cluster named {name!r} exists (see 'vdir cluster list')") from None
        try:
            vms = self.compute.boot(plan)
        except BaseException:
            self.catalog.delete_record(COLLECTION, name)
            raise
        cluster.members = [vm.name for vm in vms]
        self._update(cluster, vms)
        self._save(cluster, 1)
        return cluster

    def _hosts_dir(self, name: str) -> Path:
        from vdir.config import data_dir

        return data_dir() / "clusters" / name

    def _update(self, cluster: Cluster, vms: builtins.list[VM]) -> None:
        cluster.state = _overall([vm.state for vm in vms])
        cluster.updated = time.time()
        if cluster.provider == "slurm" and vms:
            from vdir.compute.slurm import SlurmProvider

            prov = self.compute.provider("slurm")
            if isinstance(prov, SlurmProvider):
                cluster.hosts = prov.hosts(vms[0])
                cluster.hosts_file = str(Path(vms[0].extra.get("workdir") or prov.workdir(vms[0].name)) / "hosts")
            return
        cluster.hosts = [h for h in ((vm.private_ip or vm.public_ip) for vm in vms) if h]
        if cluster.provider == "local":
            cluster.hosts = ["localhost"] * len(vms)
        folder = self._hosts_dir(cluster.name)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / "hosts"
        tmp = folder / "hosts.tmp"
        tmp.write_text("".join(h + "\n" for h in cluster.hosts))
        tmp.replace(target)
        cluster.hosts_file = str(target)

    def _save(self, cluster: Cluster, version: int) -> None:
        try:
            self.catalog.put_record(COLLECTION, cluster.name, cluster.as_doc(), expected_version=version)
        except (Conflict, NotFound):
            pass

    def _members(self, cluster: Cluster, refresh: bool) -> builtins.list[VM]:
        vms = []
        for member in cluster.members:
            try:
                vms.append(self.compute.status(member) if refresh else self.compute.get(member)[0])
            except NotFound:
                continue
        return vms

    def list(self, refresh: bool = False) -> builtins.list[Cluster]:
        """Every cluster, by name; ``refresh`` asks the providers and rewrites the host lists."""
        out = []
        for _, doc, version in self.catalog.list_records(COLLECTION):
            cluster = Cluster.from_doc(doc)
            if refresh:
                self._update(cluster, self._members(cluster, True))
                self._save(cluster, version)
            out.append(cluster)
        return out

    def status(self, name: str) -> Cluster:
        cluster, version = self.get(name)
        self._update(cluster, self._members(cluster, True))
        self._save(cluster, version)
        return cluster

    def wait(self, name: str, timeout: float = 300.0, interval: float | None = None) -> Cluster:
        """Until every member runs (or has ended), then the cluster with fresh hosts."""
        cluster, _ = self.get(name)
        deadline = time.monotonic() + timeout
        for member in cluster.members:
            left = max(0.0, deadline - time.monotonic())
            self.compute.wait(member, timeout=left, interval=interval)
        status = self.status(name)
        # a SLURM job writes its host list just after it starts
        while status.provider == "slurm" and status.state == "running" and len(status.hosts) < status.count:
            if time.monotonic() > deadline:
                raise Timeout(f"cluster {name}: running, but its host list is not written after {timeout:g}s")
            time.sleep(0.05 if interval is None else min(interval, 0.5))
            status = self.status(name)
        return status

    def ssh(self, name: str, command: builtins.list[str] | None = None) -> SSHCommand:
        """A shell (or ``command``) on the cluster's first member."""
        cluster, _ = self.get(name)
        if not cluster.members:
            raise InvalidArgument(f"cluster {name} has no members")
        return self.compute.ssh(cluster.members[0], command)

    def delete(self, name: str) -> Cluster:
        """Delete every member, then the record and the local host list.  A member whose delete
        fails keeps the cluster record, so the delete can be tried again."""
        cluster, _ = self.get(name)
        for member in cluster.members:
            with contextlib.suppress(NotFound):
                self.compute.delete(member)
        self.catalog.delete_record(COLLECTION, name)
        shutil.rmtree(self._hosts_dir(name), ignore_errors=True)
        cluster.state = GONE
        return cluster
