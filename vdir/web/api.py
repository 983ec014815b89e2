"""Endpoints the web interface needs beyond the REST API (under ``/v1/web``), calling the core only.

- ``GET /v1/web/where?path=``: bytes of the files below a path per cloud, region and backend
  (verified replicas), and the placement policy's rules that apply there: copies wanted against
  copies verified, file by file, summed per rule.
- ``POST /v1/web/policy/check``: validate a policy text as ``vdir policy check`` does (the error
  names the line; warnings for rules the backends cannot meet), without applying it.
- ``POST /v1/web/vms/plan``: the dry run of ``vdir vm boot --near PATH`` (where and why), so the
  interface shows the decision before anything boots (administrators, as booting is).

Every handler authenticates like the REST API and works on the caller's view of the VDir, so a
path the caller may not see is a 404 with the message a missing path gets.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from vdir import paths
from vdir.catalog.base import FILE, OK
from vdir.errors import InvalidArgument, NotFound
from vdir.server.app import CallerDep

WHERE_LIMIT = 200_000
"""Files weighed at most by one ``where`` (the answer says when it stopped early)."""


class RuleUse(BaseModel):
    rule: str | None = Field(description="The rule's name; null for files no rule matches.")
    line: int = 0
    match: str | None = None
    where: str | None = None
    copies: int = Field(default=0, description="Copies the rule wants of each file.")
    files: int = 0
    bytes: int = 0
    met: int = Field(default=0, description="Files with at least `copies` verified copies.")
    short: int = Field(default=0, description="Files with fewer verified copies than wanted.")
    verified: int = Field(default=0, description="Verified copies of these files, summed.")
    wanted: int = Field(default=0, description="Copies wanted of these files, summed.")


class Where(BaseModel):
    path: str
    files: int
    bytes: int
    truncated: bool = Field(default=False, description="True when only the first files were weighed.")
    per_backend: dict[str, int]
    per_cloud: dict[str, int]
    per_region: dict[str, int]
    backends: dict[str, dict[str, Any]] = Field(description="Each backend's cloud, region and tier.")
    policy_version: int = 0
    rules: list[RuleUse]


class PolicyText(BaseModel):
    text: str = Field(max_length=1_000_000)


class PolicyCheck(BaseModel):
    valid: bool
    rules: int = 0
    error: str | None = Field(default=None, description="The first error, naming its line (as `vdir policy check`).")
    line: int | None = None
    warnings: list[str] = Field(default_factory=list)


class VMPlanRequest(BaseModel):
    near: list[str] = Field(min_length=1)
    provider: str | None = None
    region: str | None = None
    name: str | None = None
    count: int = Field(default=1, ge=1, le=100)


router = APIRouter(prefix="/v1/web", tags=["web"])


@router.get("/where", response_model=Where)
def where(caller: CallerDep, path: Annotated[str, Query(description="A virtual path.")] = "/") -> Where:
    """Where the bytes below `path` are (per cloud, region, backend; verified copies only) and
    whether the placement policy is met there."""
    from vdir.placement.policy import load_policy

    vd = caller.vd
    norm = paths.normalize(path)
    vd.stat(norm)  # the caller's access first (404 when hidden)
    records: dict[str, Any] = {}

    def record(name: str) -> Any:
        if name not in records:
            try:
                records[name] = vd.backend_record(name)
            except NotFound:
                records[name] = None
        return records[name]

    try:
        policy = load_policy(vd.catalog)
    except InvalidArgument:
        policy = None
    per_backend: dict[str, int] = {}
    per_cloud: dict[str, int] = {}
    per_region: dict[str, int] = {}
    uses: dict[str | None, RuleUse] = {}
    files = total = 0
    truncated = False
    seen: set[int] = set()
    for info in vd.iter_ls(norm, recursive=True):
        if info.type != FILE or info.inode in seen:
            continue
        if files >= WHERE_LIMIT:
            truncated = True
            break
        seen.add(info.inode)
        files += 1
        total += info.size
        good = [r for r in info.replicas if r.get("state") == OK]
        for r in good:
            rec = record(r["backend"])
            size = int(r.get("size") or info.size)
            per_backend[r["backend"]] = per_backend.get(r["backend"], 0) + size
            cloud = rec.cloud if rec is not None else "unknown"
            region = f"{cloud}/{rec.region if rec is not None else 'unknown'}"
            per_cloud[cloud] = per_cloud.get(cloud, 0) + size
            per_region[region] = per_region.get(region, 0) + size
        rule = None
        if policy is not None:
            # the rule sees what decides it: size, age (tags are not in a listing; rules by tag count as unmatched)
            rule = policy.rule_for(info.path, SimpleNamespace(size=info.size, mtime=info.mtime, xattrs={}))  # type: ignore[arg-type]
        key = rule.name if rule is not None else None
        use = uses.get(key)
        if use is None:
            use = uses[key] = (RuleUse(rule=rule.name, line=rule.line, match=rule.match, where=str(rule.where),
                                       copies=rule.copies) if rule is not None else RuleUse(rule=None))
        use.files += 1
        use.bytes += info.size
        use.verified += len(good)
        use.wanted += use.copies
        if len(good) >= use.copies:
            use.met += 1
        else:
            use.short += 1
    backends = {name: {"cloud": rec.cloud, "region": rec.region, "tier": rec.tier}
                for name, rec in records.items() if rec is not None}
    ordered = sorted(uses.values(), key=lambda u: (u.rule is None, u.line))
    return Where(path=norm, files=files, bytes=total, truncated=truncated, per_backend=per_backend,
                 per_cloud=per_cloud, per_region=per_region, backends=backends,
                 policy_version=policy.version if policy is not None else 0, rules=ordered)


@router.post("/policy/check", response_model=PolicyCheck)
def policy_check(caller: CallerDep, req: PolicyText) -> PolicyCheck:
    """Validate a policy without applying it: the same parser and warnings as `vdir policy check`."""
    import re

    from vdir.placement.policy import PolicyError, check_backends, parse_policy

    caller.require_admin()
    try:
        policy = parse_policy(req.text, "policy")
    except PolicyError as exc:
        message = str(exc)
        found = re.match(r"policy:(\d+):", message)
        return PolicyCheck(valid=False, error=message, line=int(found.group(1)) if found else None)
    return PolicyCheck(valid=True, rules=len(policy.rules),
                       warnings=check_backends(policy, caller.vd.catalog.list_backends()))


@router.post("/vms/plan", response_model=dict[str, Any])
def vm_plan(caller: CallerDep, req: VMPlanRequest) -> dict[str, Any]:
    """What `vdir vm boot --dry-run` says: the provider and region chosen, why, the sites
    holding the data, and what would stop the boot."""
    from vdir.compute import Compute

    caller.require_admin()
    for p in req.near:
        caller.vd.stat(p)
    plan = Compute(caller.vd).plan(req.near, provider=req.provider, region=req.region, name=req.name, count=req.count)
    return dict(plan.as_dict())
