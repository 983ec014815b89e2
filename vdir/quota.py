"""Per-project quotas on bytes and files, checked by the core before bytes are stored.

A project's usage is what lies below its prefixes, walked from the catalog (always correct; no
counter to drift): every file counts once (a file with several names once), and its bytes once
per copy the placement policy asks for (the ``copies`` of the rule matching its path; one when
no rule or no policy applies, as a file always has at least one copy).  Files in the trash do
not count.
"""

from __future__ import annotations

import time
from typing import Any

from vdir import paths
from vdir.catalog.base import DIR, FILE, Catalog, Entry
from vdir.errors import NoSpace, NotADirectory, NotFound


def _policy(catalog: Catalog) -> Any:
    from vdir.placement.policy import load_policy

    return load_policy(catalog)


def copies(policy: Any, path: str, entry: Entry, now: float) -> int:
    """How many copies of ``entry`` at ``path`` the policy asks for (at least one)."""
    if policy is None:
        return 1
    rule = policy.rule_for(path, entry, now)
    return max(1, rule.copies) if rule is not None else 1


def project_usage(catalog: Catalog, project: dict[str, Any], policy: Any = None) -> tuple[int, int]:
    """(bytes charged, files) below the project's prefixes."""
    policy = policy if policy is not None else _policy(catalog)
    now = time.time()
    total = files = 0
    seen: set[int] = set()
    for prefix in project["prefixes"]:
        try:
            top = catalog.resolve(prefix)
        except (NotFound, NotADirectory):
            continue
        items = [(prefix, top)] if top.type != DIR else ((paths.join(prefix, rel), e) for rel, e in catalog.walk(top.id))
        for path, e in items:
            if e.type != FILE:
                continue
            if e.nlink > 1:
                if e.id in seen:
                    continue
                seen.add(e.id)
            files += 1
            total += e.size * copies(policy, path, e, now)
    return total, files


def has_quota(project: dict[str, Any] | None) -> bool:
    return project is not None and (project.get("quota_bytes") is not None or project.get("quota_files") is not None)


def check(catalog: Catalog, project: dict[str, Any], path: str, size: int, *, files: int = 1,
          replaced: Entry | None = None) -> None:
    """Raise ``NoSpace`` when adding ``files`` file(s) of ``size`` bytes at ``path`` (replacing
    ``replaced``) would take ``project`` over its quota."""
    policy = _policy(catalog)
    used_bytes, used_files = project_usage(catalog, project, policy)
    now = time.time()
    probe = Entry(name=paths.split(path)[1], type=FILE, size=size)
    charge = size * copies(policy, path, probe, now)
    if replaced is not None and replaced.type == FILE:
        charge -= replaced.size * copies(policy, path, replaced, now)
        files = 0
    name = project["name"]
    limit = project.get("quota_bytes")
    if limit is not None and charge > 0 and used_bytes + charge > limit:
        raise NoSpace(f"{path}: quota of project {name} exceeded (used {used_bytes} of {limit} bytes)", path=path)
    limit = project.get("quota_files")
    if limit is not None and files > 0 and used_files + files > limit:
        raise NoSpace(f"{path}: quota of project {name} exceeded (used {used_files} of {limit} files)", path=path)
