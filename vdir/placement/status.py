"""``vdir placement status``: the queue, the nodes, and where the bytes are."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vdir.catalog.base import FAILED, OK, PENDING, RUNNING

if TYPE_CHECKING:
    from vdir.core import VDir


def status(vd: VDir, failed_limit: int = 20) -> dict[str, Any]:
    """Backlog, running and failed tasks (with reasons), nodes, and bytes per backend."""
    counts = vd.catalog.count_tasks()
    per_backend: dict[str, dict[str, int]] = {}
    for _, replica in vd.catalog.iter_replicas():
        row = per_backend.setdefault(replica.backend, {"replicas": 0, "bytes": 0, "bad": 0})
        row["replicas"] += 1
        row["bytes"] += replica.size
        if replica.state != OK:
            row["bad"] += 1
    now = vd.catalog.now()  # heartbeats and leases are on the catalog's clock
    nodes = []
    for key, doc, _ in vd.catalog.list_records("nodes"):
        age = now - float(doc.get("heartbeat", 0))
        alive = doc.get("state") == "running" and age < 3 * max(10.0, float(doc.get("lease", 60)) / 3)
        nodes.append({"node": key, "alive": alive, "last_seen_s": round(age, 1), **{k: doc.get(k) for k in ("host", "pid", "workers", "done", "failed", "retried", "bytes")}})
    now_tasks = now
    running = [
        {"id": t.id, "kind": t.kind, "path": t.payload.get("path"), "owner": t.lease_owner,
         "lease_left_s": round((t.lease_expires or now_tasks) - now_tasks, 1)}
        for t in vd.catalog.list_tasks(RUNNING, limit=100)
    ]
    failed = [
        {"id": t.id, "kind": t.kind, "path": t.payload.get("path"), "destination": t.destination, "attempts": t.attempts,
         "error": t.last_error}
        for t in vd.catalog.list_tasks(FAILED, limit=failed_limit)
    ]
    retrying = [t for t in vd.catalog.list_tasks(PENDING, limit=1000) if t.last_error]
    done = counts.get("done", 0)
    total = sum(counts.values())
    return {
        "tasks": {"pending": counts.get(PENDING, 0), "running": counts.get(RUNNING, 0), "done": done,
                  "failed": counts.get(FAILED, 0), "retrying": len(retrying)},
        "progress": round(done / total, 4) if total else 1.0,
        "running": running,
        "failed": failed,
        "retrying": [{"id": t.id, "kind": t.kind, "path": t.payload.get("path"), "attempts": t.attempts, "error": t.last_error} for t in retrying[:failed_limit]],
        "backends": per_backend,
        "nodes": nodes,
    }
