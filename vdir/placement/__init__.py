"""Placement: declarative policies, a planner that turns them into tasks, and daemons that
carry the tasks out (copy, verify, trim), sharing the catalog's task queue without a leader.

* :mod:`vdir.placement.policy` — the YAML policy, backend expressions, storage in the catalog.
* :mod:`vdir.placement.planner` — desired vs actual replicas, as actions and queued tasks.
* :mod:`vdir.placement.worker` — the one copy / verify / trim implementation.
* :mod:`vdir.placement.daemon` — workers under leases, node heartbeats, scrub, policy reload.
* :mod:`vdir.placement.repair` — ``vdir fsck --repair``.
* :mod:`vdir.placement.watch` — ``vdir watch``: continuous ingestion of a local folder.
* :mod:`vdir.placement.status` — ``vdir placement status``.
"""
