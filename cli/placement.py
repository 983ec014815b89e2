"""``vdir policy ...``, ``vdir placement ...`` and ``vdir watch`` (registered by
:func:`cli.main._register_plugins`).  Thin front ends over :mod:`vdir.placement`."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Any

import typer

from cli.output import fmt_size


def register(app: typer.Typer, state: Any, out: Any) -> None:
    policy_app = typer.Typer(help="Placement policies: check, apply, show.", no_args_is_help=True)
    placement_app = typer.Typer(help="Make replicas match the policy: plan, run, status.", no_args_is_help=True)
    app.add_typer(policy_app, name="policy")
    app.add_typer(placement_app, name="placement")

    def read(file: str) -> str:
        from vdir.errors import NotFound

        try:
            return Path(file).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise NotFound(f"{file}: no such policy file") from None
        except UnicodeDecodeError:
            raise NotFound(f"{file}: not a UTF-8 text file") from None

    @policy_app.command("check")
    def policy_check(file: str = typer.Argument(..., metavar="FILE", help="A policy file (YAML).")) -> None:
        """Validate a policy file (errors name the line); warn about rules the backends cannot meet."""
        from vdir.placement.policy import check_backends, parse_policy

        policy = parse_policy(read(file), file)
        for warning in check_backends(policy, state.vd().catalog.list_backends()):
            out.line(f"warning: {file}: {warning}")
        out.say(f"{file}: {len(policy.rules)} rule(s), valid")

    @policy_app.command("apply")
    def policy_apply(file: str = typer.Argument(..., metavar="FILE", help="A policy file (YAML).")) -> None:
        """Store the policy in the catalog (versioned); daemons pick it up at their next plan."""
        from vdir.placement.policy import apply_policy, check_backends, parse_policy

        text = read(file)
        vd = state.vd()
        for warning in check_backends(parse_policy(text, file), vd.catalog.list_backends()):
            out.line(f"warning: {file}: {warning}")
        version = apply_policy(vd.catalog, text, file)
        out.say(f"policy v{version} applied from {file}")

    @policy_app.command("show")
    def policy_show(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
        """Print the current policy and its version."""
        from vdir.errors import NotFound

        try:
            doc, version = state.vd().catalog.get_record("policies", "current")
        except NotFound:
            raise NotFound("no policy applied yet (vdir policy apply FILE)") from None
        if as_json:
            out.json({"version": version, **doc})
            return
        out.line(f"# policy v{version}, from {doc.get('source')}")
        out.line(doc["text"].rstrip("\n"))

    @placement_app.command("plan")
    def plan(
        path: str = typer.Argument("/", help="Only files under this path."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Show what would change, queue nothing."),
    ) -> None:
        """Compare the policy with where copies are; queue the tasks that close the gap."""
        from vdir.errors import NotFound
        from vdir.placement import planner
        from vdir.placement.policy import load_policy

        vd = state.vd()
        policy = load_policy(vd.catalog)
        if policy is None:
            raise NotFound("no policy applied yet (vdir policy apply FILE)")
        actions = list(planner.plan(vd, policy, path))
        for a in actions:
            out.line(a.describe())
        lost = sum(1 for a in actions if a.kind == planner.LOST)
        if dry_run:
            out.say(f"{len(actions) - lost} action(s) would be queued" + (f"; {lost} file(s) have no good copy" if lost else ""))
            return
        new, existing = planner.queue(vd, iter(actions))
        out.say(f"queued {new} task(s), {existing} already queued" + (f"; {lost} file(s) have no good copy" if lost else ""))
        if lost:
            raise typer.Exit(2)

    @placement_app.command("run")
    def run(
        workers: int = typer.Option(2, "--workers", "-w", min=1, max=64, help="Tasks run at the same time (1-64)."),
        once: bool = typer.Option(False, "--once", help="Plan, do every claimable task, then exit."),
        policy_file: str | None = typer.Option(None, "--policy-file", help="Apply this file, and again whenever it changes."),
        lease: float = typer.Option(60.0, "--lease", min=1.0, help="Seconds a task stays claimed without renewal."),
        plan_interval: float = typer.Option(60.0, "--plan-interval", min=0.1, help="Seconds between planning passes."),
        scrub_interval: float = typer.Option(0.0, "--scrub-interval", help="Seconds between scrubs (0: no scrub)."),
        scrub_age: float = typer.Option(7 * 86400.0, "--scrub-age", help="Re-verify replicas last verified longer ago than this."),
        retry_base: float = typer.Option(5.0, "--retry-base", help="First retry delay of a failed task (seconds; doubles)."),
        max_attempts: int = typer.Option(5, "--max-attempts", min=1, help="Tries before a task is parked as failed."),
        task_retention: float = typer.Option(7 * 86400.0, "--task-retention", min=0.0, metavar="SECONDS",
                                             help="Seconds a finished task is kept before it expires."),
        node: str | None = typer.Option(None, "--node", help="Node id (default host-pid)."),
        journal: str | None = typer.Option(None, "--journal", hidden=True),
    ) -> None:
        """Run a placement daemon (until SIGTERM/SIGINT, or with --once until the queue is empty)."""
        from vdir.placement.daemon import Daemon, DaemonOptions

        if state.verbose is False:
            logging.basicConfig(level=logging.WARNING, format="vdir placement: %(message)s")
        opts = DaemonOptions(workers=workers, once=once, policy_file=policy_file, lease=lease, plan_interval=plan_interval,
                             scrub_interval=scrub_interval, scrub_age=scrub_age, retry_base=retry_base,
                             max_attempts=max_attempts, journal=journal, task_retention=task_retention)
        if node:
            opts.node_id = node
        daemon = Daemon(state.vd(), opts)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: daemon.stop())
        result = daemon.run()
        out.say(f"placement: {result['done']} task(s) done, {result['retried']} to retry, {result['failed']} failed, "
                f"{fmt_size(result['bytes'])} copied")

    @placement_app.command("status")
    def status(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
        """Backlog, running and failed tasks (with reasons), nodes, bytes per backend."""
        from vdir.placement.status import status as get_status

        s = get_status(state.vd())
        if as_json:
            out.json(s)
            return
        t = s["tasks"]
        out.line(f"tasks: {t['pending']} pending ({t['retrying']} retrying), {t['running']} running, {t['done']} done, "
                 f"{t['failed']} failed; progress {100 * s['progress']:.1f}%")
        for r in s["running"]:
            out.line(f"  running  #{r['id']} {r['kind']} {r['path']} on {r['owner']} (lease {r['lease_left_s']}s)")
        for f in s["failed"]:
            out.line(f"  failed   #{f['id']} {f['kind']} {f['path']} -> {f['destination']} after {f['attempts']} attempt(s): {f['error']}")
        for f in s["retrying"]:
            out.line(f"  retrying #{f['id']} {f['kind']} {f['path']} (attempt {f['attempts']}): {f['error']}")
        for name, row in sorted(s["backends"].items()):
            bad = f", {row['bad']} missing/corrupt" if row["bad"] else ""
            out.line(f"backend {name:12} {row['replicas']:>8} replica(s) {fmt_size(row['bytes']):>10}{bad}")
        for n in s["nodes"]:
            state_text = "alive" if n["alive"] else "gone"
            out.line(f"node {n['node']} ({state_text}, seen {n['last_seen_s']}s ago): {n.get('done') or 0} done, "
                     f"{n.get('failed') or 0} failed")

    @app.command("watch")
    def watch(
        localdir: str = typer.Argument(..., metavar="LOCALDIR", help="Local directory to watch."),
        vpath: str = typer.Argument(..., metavar="VPATH", help="Virtual directory to keep in step with it."),
        delete: bool = typer.Option(False, "--delete", help="Also remove files deleted locally."),
        settle: float = typer.Option(1.0, "--settle", help="Seconds a file must be unchanged before it is ingested."),
        backend: str | None = typer.Option(None, "--backend", "-b", help="Where new files go (default: the config's default backend)."),
        duration: float | None = typer.Option(None, "--duration", help="Stop after this many seconds (default: run until interrupted)."),
    ) -> None:
        """Ingest new and changed files of LOCALDIR into VPATH continuously."""
        from vdir.placement.watch import Watcher

        w = Watcher(state.vd(), localdir, vpath, delete=delete, settle=settle, backend=backend)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: w.stop_event.set())
        w.run(duration)
        out.say(f"watch: {w.ingested} file(s) ingested, {w.removed} removed")
