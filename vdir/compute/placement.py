"""Placement of compute: which cloud and region hold the bytes of some paths, and where to boot.

:func:`weigh` walks the catalog below the given paths and adds up, per site (cloud, region),
the bytes of the files that have a healthy replica there.  A file with copies in two regions
counts in both: either region can read it without egress.  Overlapping paths count a file once.

:func:`choose` picks the site with the most bytes among those a compute provider can serve,
breaking ties by the configured preference (``compute.preference``, provider or cloud names),
then by the lower storage cost class of the site's backends, then by name, and says why in one
line (:attr:`Decision.reason`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from vdir import paths
from vdir.catalog.base import DIR, FILE, OK
from vdir.errors import InvalidArgument, NotFound

if TYPE_CHECKING:
    from vdir.core import VDir

PROVIDER_CLOUDS = {"ec2": "aws", "azure": "azure", "gce": "gcp", "slurm": "slurm", "local": "local"}
"""Provider name -> the cloud (``BackendRecord.cloud``) whose regions it can boot in."""

DEFAULT_PREFERENCE = ["aws", "azure", "gcp", "slurm", "local"]


def provider_for(name: str) -> str:
    """The provider called ``name``, given as a provider (``ec2``) or a cloud (``aws``)."""
    low = name.lower()
    if low in PROVIDER_CLOUDS:
        return low
    for provider, cloud in PROVIDER_CLOUDS.items():
        if cloud == low:
            return provider
    known = ", ".join(f"{p} ({c})" for p, c in PROVIDER_CLOUDS.items())
    raise InvalidArgument(f"unknown compute provider {name!r}; known: {known}")


def fmt_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


@dataclass
class Site:
    """Bytes of the weighed paths that can be read within one (cloud, region)."""

    cloud: str
    region: str
    bytes: int = 0
    files: int = 0
    backends: list[str] = field(default_factory=list)
    cost: float = 0.0
    """The lowest cost class among the site's backends holding the data."""
    provider: str | None = None
    """The compute provider that can boot here (``None``: no provider serves this cloud)."""

    @property
    def label(self) -> str:
        return f"{self.cloud}/{self.region}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Decision:
    """Where to boot and why."""

    provider: str
    cloud: str
    region: str
    reason: str
    total_bytes: int
    total_files: int
    sites: list[Site]
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["sites"] = [s.as_dict() for s in self.sites]
        return d


def weigh(vd: VDir, near: list[str]) -> tuple[list[Site], int, int]:
    """(sites sorted by bytes, total bytes, total files) for the files below ``near``.

    ``NotFound`` if a path does not exist.  Replicas that are missing or corrupt do not count.
    """
    sites: dict[tuple[str, str], Site] = {}
    seen: set[int] = set()
    total_bytes = 0
    total_files = 0
    for path in near:
        norm = paths.normalize(path)
        top = vd.catalog.resolve(norm)
        items = (e for _, e in vd.catalog.walk(top.id)) if top.type == DIR else iter([top])
        for entry in items:
            if entry.type != FILE or entry.id in seen:
                continue
            seen.add(entry.id)
            total_files += 1
            total_bytes += entry.size
            counted: set[tuple[str, str]] = set()
            for replica in entry.replicas:
                if replica.state != OK:
                    continue
                try:
                    record = vd.backend_record(replica.backend)
                    where, cost = (record.cloud, record.region), record.cost
                except NotFound:
                    where, cost = ("unknown", "unknown"), 0.0
                site = sites.get(where)
                if site is None:
                    site = sites[where] = Site(cloud=where[0], region=where[1], cost=cost)
                if replica.backend not in site.backends:
                    site.backends.append(replica.backend)
                    site.cost = min(site.cost, cost)
                if where not in counted:
                    counted.add(where)
                    site.bytes += replica.size or entry.size
                    site.files += 1
    ordered = sorted(sites.values(), key=lambda s: (-s.bytes, s.cloud, s.region))
    return ordered, total_bytes, total_files


def _rank(preference: list[str], cloud: str) -> int:
    provider = next((p for p, c in PROVIDER_CLOUDS.items() if c == cloud), cloud)
    for i, name in enumerate(preference):
        if name.lower() in (cloud, provider):
            return i
    return len(preference)


def choose(
    sites: list[Site],
    total_bytes: int,
    total_files: int,
    near: list[str],
    *,
    preference: list[str] | None = None,
    provider: str | None = None,
    region: str | None = None,
    default_regions: dict[str, str] | None = None,
) -> Decision:
    """Pick provider and region for compute next to ``sites`` (see the module docstring).

    ``provider`` restricts the choice to one provider; ``region`` overrides the region (both
    from the command line).  ``default_regions`` (provider -> region) is used when the chosen
    provider holds none of the data.  Raises ``InvalidArgument`` when no provider can serve.
    """
    prefs = [p.lower() for p in (preference if preference is not None else DEFAULT_PREFERENCE)]
    where = ", ".join(near)
    served = {c for c in PROVIDER_CLOUDS.values()}
    for site in sites:  # every candidate, as the dry run shows it
        site.provider = next((p for p, c in PROVIDER_CLOUDS.items() if c == site.cloud), None)
    notes = [f"{s.label} holds {fmt_bytes(s.bytes)} but vdir has no compute provider for {s.cloud}"
             for s in sites if s.cloud not in served and s.bytes]
    wanted = provider_for(provider) if provider else None
    candidates = [s for s in sites if s.cloud in served and (wanted is None or PROVIDER_CLOUDS[wanted] == s.cloud)]

    def share(site: Site) -> str:
        pct = f" ({100 * site.bytes / total_bytes:.0f}%)" if total_bytes else ""
        return f"{fmt_bytes(site.bytes)} of {fmt_bytes(total_bytes)}{pct}"

    if region:
        matching = [s for s in candidates if s.region == region]
        if not matching and wanted is None:
            raise InvalidArgument(f"--region {region} needs --provider: none of the data under {where} is in {region}")
        candidates = matching
    if not candidates:
        if wanted is None:
            held = "; ".join(f"{s.label}: {fmt_bytes(s.bytes)}" for s in sites) or "no stored bytes"
            raise InvalidArgument(f"no compute provider is near the data under {where} ({held}); choose one with --provider")
        chosen_region = region or (default_regions or {}).get(wanted)
        if not chosen_region:
            raise InvalidArgument(
                f"none of the data under {where} is on {PROVIDER_CLOUDS[wanted]}; say where to boot with --region "
                f"(or set compute.{PROVIDER_CLOUDS[wanted]}.region)")
        why = "given with --region" if region else f"the configured default region of {wanted}"
        on = PROVIDER_CLOUDS[wanted] + (f" in {region}" if region else "")
        return Decision(provider=wanted, cloud=PROVIDER_CLOUDS[wanted], region=chosen_region,
                        reason=f"--provider {wanted}: none of the data under {where} is on {on}; "
                               f"region {chosen_region} is {why}",
                        total_bytes=total_bytes, total_files=total_files, sites=sites, notes=notes)

    ordered = sorted(candidates, key=lambda s: (-s.bytes, _rank(prefs, s.cloud), s.cost, s.cloud, s.region))
    best = ordered[0]
    runner = ordered[1] if len(ordered) > 1 else None
    chosen_provider = wanted or next(p for p, c in PROVIDER_CLOUDS.items() if c == best.cloud)
    if runner is None or runner.bytes < best.bytes:
        reason = f"{best.label} holds the most of the data under {where}: {share(best)}"
        if runner is not None:
            reason += f"; next is {runner.label} with {fmt_bytes(runner.bytes)}"
        elif len(sites) == 1:
            reason = f"all of the data under {where} ({fmt_bytes(total_bytes)}) is in {best.label}"
    elif _rank(prefs, best.cloud) < _rank(prefs, runner.cloud):
        reason = (f"{best.label} and {runner.label} hold the same {fmt_bytes(best.bytes)} of the data under {where}; "
                  f"{best.cloud} comes first in compute.preference ({', '.join(prefs) or 'empty'})")
    elif best.cost < runner.cost:
        reason = (f"{best.label} and {runner.label} hold the same {fmt_bytes(best.bytes)} of the data under {where} "
                  f"and rank equal in compute.preference; {best.label} has the lower storage cost ({best.cost:g} < {runner.cost:g})")
    else:
        reason = (f"{best.label} and {runner.label} hold the same {fmt_bytes(best.bytes)} of the data under {where}, "
                  f"rank equal in compute.preference and cost; {best.label} comes first by name")
    if wanted:
        reason = f"--provider {wanted}: " + reason
    return Decision(provider=chosen_provider, cloud=best.cloud, region=best.region, reason=reason,
                    total_bytes=total_bytes, total_files=total_files, sites=sites, notes=notes)


def decide(
    vd: VDir,
    near: list[str],
    *,
    preference: list[str] | None = None,
    provider: str | None = None,
    region: str | None = None,
    default_regions: dict[str, str] | None = None,
) -> Decision:
    """:func:`weigh` then :func:`choose`."""
    if not near:
        raise InvalidArgument("say which data to boot near: --near VPATH")
    normalized = [paths.normalize(p) for p in near]
    sites, total, files = weigh(vd, normalized)
    return choose(sites, total, files, normalized, preference=preference, provider=provider, region=region,
                  default_regions=default_regions)
