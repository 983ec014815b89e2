"""``vdir vm ...`` and ``vdir cluster ...``: the compute sidecar (registered by
:func:`cli.main._register_plugins`).

A thin front end over :class:`vdir.compute.Compute` and :class:`vdir.compute.cluster.Clusters`;
every decision lives there.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from typing import TYPE_CHECKING, Any

import typer

from cli.output import fmt_size, fmt_time

if TYPE_CHECKING:
    from vdir.compute import VM, BootPlan, Compute


def _vm_row(vm: VM) -> dict[str, Any]:
    return vm.as_doc()


def register(app: typer.Typer, state: Any, out: Any) -> None:
    """Add the ``vm`` command group to ``app``."""
    vm_app = typer.Typer(help="Start VMs where a path's data already is, and manage them.", no_args_is_help=True)
    app.add_typer(vm_app, name="vm")
    register_cluster(app, state, out)

    def compute(allow_local_catalog: bool = False) -> Compute:
        from vdir.compute import Compute

        return Compute(state.vd(), allow_embedded_catalog=allow_local_catalog)

    def show_plan(plan: BootPlan, dry_run: bool) -> None:
        d = plan.decision
        out.line(f"data under {', '.join(plan.specs[0].near)}: {d.total_files} file(s), {fmt_size(d.total_bytes)}")
        for site in d.sites:
            pct = f"{100 * site.bytes / d.total_bytes:3.0f}%" if d.total_bytes else "  -"
            by = f"candidate for {site.provider}" if site.provider else "no compute provider"
            out.line(f"  {site.label:24} {fmt_size(site.bytes):>10} {pct}  {site.files} file(s) on {', '.join(site.backends)}"
                     f"  ({by})")
        out.line(f"decision: {plan.provider} in {plan.region}: {d.reason}")
        for note in plan.notes:
            out.line(f"note: {note}")
        spec = plan.specs[0]
        what = [f"{k} {v}" for k, v in (("image", spec.image), ("flavor", spec.flavor), ("key", spec.key),
                                          ("security group", spec.security_group), ("subnet", spec.subnet)) if v]
        if spec.command:
            what.append(f"job: {' '.join(spec.command)}")
        verb = "would boot" if dry_run else "booting"
        out.line(f"{verb}: {', '.join(plan.names)}" + (f" ({'; '.join(what)})" if what else ""))
        if spec.user_data:
            out.line(f"user data: {len(spec.user_data.encode())} bytes of cloud-init: installs vdir, points it at this "
                     "catalog, mounts the namespace read-only")

    @vm_app.command("boot")
    def boot(
        near: list[str] = typer.Option(..., "--near", help="Boot next to the data under this path (repeatable)."),
        command: list[str] = typer.Argument(None, metavar="[-- COMMAND...]", help="Local provider: the job to run, after --."),
        name: str | None = typer.Option(None, "--name", help="VM name (default: USER-vdir-N)."),
        flavor: str | None = typer.Option(None, "--flavor", "--size", help="Instance type, e.g. t3.micro."),
        image: str | None = typer.Option(None, "--image", help="AMI id, alias (al2023, ubuntu-24.04) or name pattern."),
        key: str | None = typer.Option(None, "--key", help="SSH key pair name at the provider."),
        count: int = typer.Option(1, "--count", "-n", help="How many VMs (all or nothing)."),
        user_data: str | None = typer.Option(None, "--user-data", help="Your own cloud-init file, run after vdir's."),
        provider: str | None = typer.Option(None, "--provider", help="ec2 (aws), azure, gce (gcp), slurm or local; default: where the data is."),
        region: str | None = typer.Option(None, "--region", help="Override the region placement picked."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Show the decision and why; start nothing."),
        allow_local_catalog: bool = typer.Option(
            False, "--allow-local-catalog",
            help="Development/tests only: boot a cloud VM even though the catalog is an embedded SQLite file it cannot reach."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    ) -> None:
        """Start VM(s) in the cloud and region that hold the most of the data under --near."""
        from vdir.compute.service import read_user_data

        c = compute(allow_local_catalog)
        extra = read_user_data(user_data) if user_data else None
        plan = c.plan(near, provider=provider, region=region, name=name, count=count, flavor=flavor, image=image,
                      key=key, user_data=extra, command=list(command or []))
        if dry_run:
            if as_json:
                out.json({"dry_run": True, **plan.as_dict()})
            else:
                show_plan(plan, True)
            if plan.blocker is not None:
                raise plan.blocker
            if not as_json:
                out.line("dry run: nothing was started")
            return
        if plan.blocker is not None:
            raise plan.blocker
        vms = c.boot(plan)
        if as_json:
            out.json([_vm_row(vm) for vm in vms])
            return
        for vm in vms:
            where = vm.public_ip or vm.extra.get("workdir") or ""
            out.say(f"booted {vm.name} on {vm.provider} in {vm.region} ({vm.instance_id}, {vm.state}) {where}".rstrip())
        out.say(f"why: {plan.decision.reason}")

    @vm_app.command("list")
    def list_(
        refresh: bool = typer.Option(False, "--refresh", help="Ask the providers for the current state first."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    ) -> None:
        """VMs recorded in the catalog (every host sharing the catalog sees the same list)."""
        vms = compute().list(refresh=refresh)
        if as_json:
            out.json([_vm_row(vm) for vm in vms])
            return
        for vm in vms:
            address = vm.public_ip or vm.private_ip or "-"
            out.line(f"{vm.name:20} {vm.provider:6} {vm.region:14} {vm.state:11} {vm.instance_id or '-':22} "
                     f"{address:15} {','.join(vm.near)}")

    @vm_app.command("status")
    def status(name: str = typer.Argument(..., metavar="NAME", help="VM name."), as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
        """Ask the provider how one VM is doing (and update its record)."""
        vm = compute().status(name)
        if as_json:
            out.json(_vm_row(vm))
            return
        out.line(f"    name: {vm.name}\nprovider: {vm.provider} ({vm.cloud}) in {vm.region}\n   state: {vm.state}")
        out.line(f"instance: {vm.instance_id or '-'}\n    near: {', '.join(vm.near)}\n created: {fmt_time(vm.created)}")
        for label, value in (("image", vm.image), ("flavor", vm.flavor), ("key", vm.key), ("public ip", vm.public_ip),
                             ("private ip", vm.private_ip), ("exit code", vm.exit_code), ("workdir", vm.extra.get("workdir"))):
            if value is not None:
                out.line(f"{label:>8}: {value}")
        if vm.command:
            out.line(f"     job: {' '.join(vm.command)}")
        if vm.reason:
            out.line(f"     why: {vm.reason}")

    @vm_app.command("ssh")
    def ssh(
        name: str = typer.Argument(..., metavar="NAME", help="VM name."),
        command: list[str] = typer.Argument(None, metavar="[-- COMMAND...]", help="Run this instead of a shell (after --)."),
        print_only: bool = typer.Option(False, "--print", help="Print the command instead of running it."),
    ) -> None:
        """Open a shell on the VM, or run a command there: vdir vm ssh NAME [-- CMD...]."""
        _run_target(compute().ssh(name, list(command or [])), print_only, out)

    @vm_app.command("wait")
    def wait(
        name: str = typer.Argument(..., metavar="NAME", help="VM name."),
        timeout: float = typer.Option(300.0, "--timeout", help="Give up after this many seconds."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    ) -> None:
        """Wait until the VM runs (cloud) or its job has ended (local; exits 1 if the job failed)."""
        vm = compute().wait(name, timeout=timeout)
        if as_json:
            out.json(_vm_row(vm))
        else:
            tail = f", exit code {vm.exit_code}" if vm.exit_code is not None else ""
            address = f", {vm.public_ip}" if vm.public_ip else ""
            out.say(f"{vm.name}: {vm.state}{tail}{address}")
        if vm.state in ("running", "ready") or (vm.state == "exited" and vm.exit_code == 0):
            return
        from vdir.errors import VDirError

        if vm.state == "exited":
            raise VDirError(f"vm {vm.name}: the job exited with code {vm.exit_code} (see 'vdir vm logs {vm.name}')")
        raise VDirError(f"vm {vm.name} ended in state {vm.state}")

    @vm_app.command("logs")
    def logs(name: str = typer.Argument(..., metavar="NAME", help="VM name.")) -> None:
        """The job's output (local) or the console output (cloud)."""
        text = compute().logs(name)
        if text:
            out.line(text.rstrip("\n"))

    @vm_app.command("delete")
    def delete(
        name: str | None = typer.Argument(None, metavar="NAME", help="VM name (or use --all-near)."),
        all_near: str | None = typer.Option(None, "--all-near", help="Delete every VM booted near this path or below it."),
    ) -> None:
        """Terminate a VM (or all VMs near a path) and forget its record."""
        from vdir.errors import InvalidArgument

        if not name and not all_near:
            raise InvalidArgument("say which VM to delete: NAME or --all-near VPATH")
        c = compute()
        gone = []
        if name:
            gone.append(c.delete(name))
        if all_near:
            gone.extend(c.delete_near(all_near))
        for vm in gone:
            out.say(f"deleted {vm.name} ({vm.provider} {vm.region} {vm.instance_id or ''})".replace(" )", ")"))
        if not gone:
            out.say(f"no VM was booted near {all_near}")


def register_cluster(app: typer.Typer, state: Any, out: Any) -> None:
    """Add the ``cluster`` command group to ``app``."""
    cluster_app = typer.Typer(help="Start N machines (or one SLURM job of N tasks) next to a path's data.",
                              no_args_is_help=True)
    app.add_typer(cluster_app, name="cluster")

    def clusters(allow_local_catalog: bool = False) -> Any:
        from vdir.compute import Compute
        from vdir.compute.cluster import Clusters

        return Clusters(Compute(state.vd(), allow_embedded_catalog=allow_local_catalog))

    def row(cluster: Any) -> dict[str, Any]:
        return dict(cluster.as_doc())

    def show(cluster: Any) -> None:
        hosts = ",".join(cluster.hosts) if cluster.hosts else "-"
        out.line(f"{cluster.name:16} {cluster.provider:6} {cluster.region:14} {cluster.count:>3} {cluster.state:11} "
                 f"{hosts:30} {','.join(cluster.near)}")

    @cluster_app.command("create")
    def create(
        name: str = typer.Argument(..., metavar="NAME", help="Cluster name (members are NAME-1 ... NAME-N on clouds)."),
        near: list[str] = typer.Option(..., "--near", help="Start next to the data under this path (repeatable)."),
        count: int = typer.Option(2, "--count", "-n", help="How many machines (SLURM: tasks of one job); all or nothing."),
        command: list[str] = typer.Argument(None, metavar="[-- COMMAND...]", help="SLURM/local: the job to run, after --."),
        provider: str | None = typer.Option(None, "--provider", help="ec2 (aws), azure, gce (gcp), slurm or local; default: where the data is."),
        region: str | None = typer.Option(None, "--region", help="Override the region (site) placement picked."),
        flavor: str | None = typer.Option(None, "--flavor", "--size", help="Instance type of each machine."),
        image: str | None = typer.Option(None, "--image", help="Image of each machine."),
        key: str | None = typer.Option(None, "--key", help="SSH key pair name at the provider."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Show the decision and why; start nothing."),
        allow_local_catalog: bool = typer.Option(False, "--allow-local-catalog",
                                                 help="Development/tests only: cloud machines with an embedded catalog."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    ) -> None:
        """Start a cluster where the data under --near is, all or nothing, and write its host list."""
        c = clusters(allow_local_catalog)
        plan = c.plan(name, near, count, provider=provider, region=region, flavor=flavor, image=image, key=key,
                      command=list(command or []))
        if dry_run:
            d = plan.decision
            if as_json:
                out.json({"dry_run": True, "count": count, **plan.as_dict()})
            else:
                for site in d.sites:
                    by = f"candidate for {site.provider}" if site.provider else "no compute provider"
                    out.line(f"  {site.label:24} {fmt_size(site.bytes):>10}  {site.files} file(s) on "
                             f"{', '.join(site.backends)}  ({by})")
                out.line(f"decision: {plan.provider} in {plan.region}: {d.reason}")
                for note in plan.notes:
                    out.line(f"note: {note}")
                what = f"one job of {count} tasks" if plan.provider == "slurm" else f"{count} machines"
                out.line(f"would start cluster {name}: {what} ({', '.join(plan.names)})")
            if plan.blocker is not None:
                raise plan.blocker
            if not as_json:
                out.line("dry run: nothing was started")
            return
        cluster = c.create(name, plan, count)
        if as_json:
            out.json(row(cluster))
            return
        what = f"one SLURM job of {count} tasks" if cluster.provider == "slurm" else f"{count} machines"
        out.say(f"started cluster {name} on {cluster.provider} in {cluster.region}: {what} ({', '.join(cluster.members)})")
        out.say(f"hosts: {cluster.hosts_file}")
        out.say(f"why: {plan.decision.reason}")

    @cluster_app.command("list")
    def list_(
        refresh: bool = typer.Option(False, "--refresh", help="Ask the providers first (and rewrite host lists)."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    ) -> None:
        """Clusters recorded in the catalog."""
        found = clusters().list(refresh=refresh)
        if as_json:
            out.json([row(x) for x in found])
            return
        for cluster in found:
            show(cluster)

    @cluster_app.command("status")
    def status(name: str = typer.Argument(..., metavar="NAME", help="Cluster name."),
               as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
        """Ask the providers how a cluster is doing; show its members and hosts."""
        cluster = clusters().status(name)
        if as_json:
            out.json(row(cluster))
            return
        out.line(f"   name: {cluster.name}\nprovider: {cluster.provider} ({cluster.cloud}) in {cluster.region}")
        out.line(f"  state: {cluster.state}\nmembers: {', '.join(cluster.members)}\n  hosts: {', '.join(cluster.hosts) or '-'}")
        out.line(f"hostfile: {cluster.hosts_file or '-'}\n   near: {', '.join(cluster.near)}\ncreated: {fmt_time(cluster.created)}")

    @cluster_app.command("wait")
    def wait(
        name: str = typer.Argument(..., metavar="NAME", help="Cluster name."),
        timeout: float = typer.Option(300.0, "--timeout", help="Give up after this many seconds."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    ) -> None:
        """Wait until every member runs (or has ended) and the host list is written."""
        cluster = clusters().wait(name, timeout=timeout)
        if as_json:
            out.json(row(cluster))
        else:
            out.say(f"{cluster.name}: {cluster.state}, hosts {', '.join(cluster.hosts) or '-'}")

    @cluster_app.command("hosts")
    def hosts(name: str = typer.Argument(..., metavar="NAME", help="Cluster name.")) -> None:
        """Print the host list (one line per task or machine)."""
        for host in clusters().status(name).hosts:
            out.line(host)

    @cluster_app.command("ssh")
    def ssh(
        name: str = typer.Argument(..., metavar="NAME", help="Cluster name."),
        command: list[str] = typer.Argument(None, metavar="[-- COMMAND...]", help="Run this instead of a shell (after --)."),
        print_only: bool = typer.Option(False, "--print", help="Print the command instead of running it."),
    ) -> None:
        """A shell (or a command) on the cluster's first machine, or inside its SLURM allocation."""
        target = clusters().ssh(name, list(command or []))
        _run_target(target, print_only, out)

    @cluster_app.command("delete")
    def delete(name: str = typer.Argument(..., metavar="NAME", help="Cluster name.")) -> None:
        """Stop every member and forget the cluster."""
        cluster = clusters().delete(name)
        out.say(f"deleted cluster {cluster.name} ({', '.join(cluster.members)})")


def _run_target(target: Any, print_only: bool, out: Any) -> None:
    if print_only:
        prefix = f"cd {shlex.quote(target.cwd)} && " if target.cwd else ""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in target.env.items())
        out.line(prefix + (env + " " if env else "") + shlex.join(target.argv))
        return
    try:
        code = subprocess.call(target.argv, cwd=target.cwd, env={**os.environ, **target.env})
    except FileNotFoundError:
        from vdir.errors import NotFound

        raise NotFound(f"{target.argv[0]} is not installed") from None
    raise typer.Exit(code)
