"""The compute provider interface and the VM record every front end sees.

A provider starts machines (or processes, or batch jobs) of one kind: ``ec2``
(:mod:`vdir.compute.ec2`, the only module that calls EC2), ``local`` (:mod:`vdir.compute.local`,
a process on this machine) and ``slurm`` (:mod:`vdir.compute.slurm`, a batch job at an HPC site).
More (Azure, GCE, OpenStack) can follow behind the same small interface:

* :meth:`Provider.check` validates a :class:`VMSpec` against the cloud (image, flavor, key pair,
  network) *before* anything is created, so bad input fails with one line and leaves nothing;
* :meth:`Provider.boot` starts every spec of one request, all or nothing;
* :meth:`Provider.status` asks the cloud how one VM is doing;
* :meth:`Provider.find` looks a VM up by its name when its record lacks an instance id;
* :meth:`Provider.delete` stops it for good (idempotent: a VM already gone is fine);
* :meth:`Provider.ssh` says how to open a shell or run a command on it;
* :meth:`Provider.wait` polls (with a deadline, no blind sleeps) until it is usable or finished;
* :meth:`Provider.logs` returns its console or job output.

Which VMs exist is recorded in the catalog (collection ``vms``), not in any provider, so the
CLI, the REST server and Python see the same list; :mod:`vdir.compute.service` keeps those
records in step with the providers.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from vdir.errors import InvalidArgument, NotSupported, Timeout

COLLECTION = "vms"
"""Catalog record collection holding one document per VM, keyed by name."""

# states shared by all providers (EC2's own names, plus the ones vdir adds)
BOOTING = "booting"
"""Recorded, the provider call not yet answered (a crash here leaves a record ``--refresh`` repairs)."""
PENDING = "pending"
RUNNING = "running"
READY = "ready"
"""A local VM without a job: its working directory is prepared, ``vm ssh`` opens a shell there."""
EXITED = "exited"
"""A local job that finished (see ``exit_code``)."""
STOPPED = "stopped"
TERMINATED = "terminated"
GONE = "gone"
"""The provider no longer knows the instance."""

FINAL_STATES = frozenset({EXITED, STOPPED, TERMINATED, GONE, "shutting-down"})


@dataclass
class VMSpec:
    """What to start: one VM of a boot request."""

    name: str
    provider: str
    region: str
    near: list[str]
    image: str | None = None
    flavor: str | None = None
    key: str | None = None
    security_group: str | None = None
    subnet: str | None = None
    instance_profile: str | None = None
    user_data: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    command: list[str] = field(default_factory=list)
    """Local provider: the job to run (empty: no job, ``vm ssh`` opens a shell)."""
    ssh_user: str | None = None
    key_file: str | None = None
    tasks: int = 1
    """SLURM: tasks (or nodes) of the one job; a cluster on SLURM is one job of N tasks."""


@dataclass
class VM:
    """The catalog's record of one VM (a JSON document in collection ``vms``)."""

    name: str
    provider: str
    cloud: str
    region: str
    near: list[str] = field(default_factory=list)
    state: str = BOOTING
    instance_id: str | None = None
    flavor: str | None = None
    image: str | None = None
    key: str | None = None
    key_file: str | None = None
    ssh_user: str | None = None
    public_ip: str | None = None
    private_ip: str | None = None
    owner: str | None = None
    reason: str | None = None
    """Why it was placed where it is (the placement decision, one line)."""
    command: list[str] = field(default_factory=list)
    exit_code: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    """Provider-specific details (local: workdir, pid, pgid, start ticks)."""
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)

    def as_doc(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> VM:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in known})


@dataclass
class Status:
    """What a provider reports about one VM; ``None`` fields are unknown, not cleared."""

    state: str
    instance_id: str | None = None
    public_ip: str | None = None
    private_ip: str | None = None
    exit_code: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def apply(self, vm: VM) -> VM:
        vm.state = self.state
        for name in ("instance_id", "public_ip", "private_ip", "exit_code"):
            value = getattr(self, name)
            if value is not None:
                setattr(vm, name, value)
        vm.extra.update(self.extra)
        vm.updated = time.time()
        return vm


@dataclass
class SSHCommand:
    """How to reach a VM: run ``argv`` (in ``cwd`` with ``env`` added, when given)."""

    argv: list[str]
    cwd: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def to_vm(cls, vm: VM, command: list[str], default_user: str) -> SSHCommand:
        """``ssh`` to a cloud VM's public (else private) address, as ``vm.ssh_user`` or the
        image's ``default_user``; ``InvalidArgument`` while it has no address yet."""
        address = vm.public_ip or vm.private_ip
        if not address:
            raise InvalidArgument(f"vm {vm.name} has no address yet (state {vm.state}); run 'vdir vm wait {vm.name}'")
        argv = ["ssh", "-o", "StrictHostKeyChecking=accept-new"]
        if vm.key_file:
            argv += ["-i", vm.key_file]
        argv.append(f"{vm.ssh_user or default_user}@{address}")
        if command:
            argv += ["--", *command]
        return cls(argv=argv)


class Provider(ABC):
    """One kind of machine.  Instances are cheap; SDK clients are made on first use."""

    name: str = ""
    cloud: str = ""
    remote: bool = True
    """True when the VM runs elsewhere and so needs a catalog it can reach over the network."""

    def check(self, spec: VMSpec) -> VMSpec:
        """Validate ``spec`` against the provider and return it with names resolved (e.g. an image
        alias to an AMI id).  Raises a one-line error; creates nothing."""
        return spec

    @abstractmethod
    def boot(self, specs: list[VMSpec]) -> list[Status]:
        """Start every spec, all or nothing: on error nothing is left running.  Returns one
        status per spec, in order."""

    @abstractmethod
    def status(self, vm: VM) -> Status:
        """The VM's current state as the provider sees it (``GONE`` if it no longer exists)."""

    def find(self, vm: VM) -> Status | None:
        """Look the VM up by name (its record lost the instance id); ``None`` if not found."""
        return None

    @abstractmethod
    def delete(self, vm: VM) -> None:
        """Stop the VM for good and release what it holds.  A VM already gone is not an error."""

    @abstractmethod
    def ssh(self, vm: VM, command: list[str]) -> SSHCommand:
        """How to open a shell on the VM, or run ``command`` there."""

    def logs(self, vm: VM) -> str:
        raise NotSupported(f"provider {self.name} keeps no output for {vm.name}")

    def ready(self, vm: VM, status: Status) -> bool:
        """True when :meth:`wait` may return: the VM is usable, or it has ended."""
        return status.state in (RUNNING, READY) or status.state in FINAL_STATES

    def wait(self, vm: VM, timeout: float = 300.0, interval: float = 2.0) -> Status:
        """Poll :meth:`status` until :meth:`ready`; ``Timeout`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(vm)
            if self.ready(vm, status):
                return status
            if time.monotonic() >= deadline:
                raise Timeout(f"vm {vm.name}: still {status.state} after {timeout:g}s")
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
