"""The compute sidecar: start VMs in the cloud and region where a path's data already is.

``Compute(vd).plan(["/datasets/cifar"])`` weighs the bytes below the path per (cloud, region)
and picks a provider and region; ``Compute.boot(plan)`` starts the VMs and records them in the
catalog.  See :mod:`vdir.compute.service` for the lifecycle and configuration,
:mod:`vdir.compute.placement` for the decision, and ``docs/compute.md`` for examples.
"""

from __future__ import annotations

from vdir.compute.base import VM, Provider, SSHCommand, Status, VMSpec
from vdir.compute.placement import Decision, Site, decide
from vdir.compute.service import BootPlan, Compute, Settings

__all__ = ["VM", "BootPlan", "Compute", "Decision", "Provider", "SSHCommand", "Settings", "Site", "Status", "VMSpec", "decide"]
