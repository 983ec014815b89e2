"""SLURM as a compute provider: a "VM" is a batch job at an HPC site, next to the site's data.

An HPC site is a **cloud named ``slurm``** whose **region is the site's name**: its file systems
are registered as local-folder backends with ``vdir backend add scratch file:///scratch/ann
--cloud slurm --region hpc1``.  Placement then counts the bytes on ``slurm/hpc1`` like any
region, and booting there submits a job with ``sbatch`` to the partition declared for that site
(``compute.slurm.regions.hpc1.partition``; without one, the cluster's default partition).
vdir runs on a machine of the site that can submit (a login node), sharing the file systems
with the compute nodes.

Like the local provider (which this one extends), a job gets a working directory
(``compute.slurm.workdir``, default ``$XDG_DATA_HOME/vdir/slurm/NAME``, on a file system the
nodes share) with ``vdir/`` mirroring the namespace below ``--near`` as links to the stored
objects, ``env.sh`` (``VDIR_CONFIG``, ``VDIR_VM``, ``VDIR_NEAR``, ``VDIR_ROOT``, ``VDIR_HOSTS``)
and ``job.sh``, which SLURM runs:

* first it writes ``hosts``: one line per task with the node the task got (an MPI host file;
  Dask or Spark read the same list);
* then the command given after ``--`` (its exit code lands in ``exit_code``), or, without one,
  it holds the allocation until ``vdir vm delete`` (or the time limit): ``vdir vm ssh NAME``
  then runs a shell or a command inside it with ``srun --jobid --overlap``.

Its output is ``output.log``.  State comes from ``squeue`` (pending, running, and recently
finished jobs), then from ``sacct`` once the controller has forgotten the job, then from the
``exit_code`` file; ``vdir vm delete`` runs ``scancel``, waits for the job to end, and removes
the working directory.

A **cluster** (``vdir cluster create --count N``) is one job of N tasks (``--ntasks N``, or N
whole nodes with ``compute.slurm.cluster: nodes``): SLURM starts all of them together or none.
With ``cluster: array`` it is a **job array** of N tasks instead (``--array=0-N-1``): every task
runs the command (``$SLURM_ARRAY_TASK_ID`` tells which), each as soon as the site has room —
submitted all or nothing, but not started together; each writes ``hosts.d/ID`` and
``exit_code.ID``, output goes to ``output-ID.log``, and the job's exit code is the highest.

Per-site settings (``compute.slurm``, overridden per site in ``compute.slurm.regions.SITE``)::

    partition: batch             # sbatch --partition
    account: proj42              # sbatch --account
    time: "02:00:00"             # sbatch --time (a held allocation ends then too)
    options: [--mem=4G]          # more sbatch options
    conf: /etc/slurm/slurm.conf  # SLURM_CONF for the commands (default: theirs)
    wrapper: []                  # run the SLURM commands through this (e.g. [sudo, -u, hpc])
    workdir: ~/jobs              # on a file system the nodes share
    cluster: tasks               # a cluster is N tasks of one job, N whole nodes, or an array
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vdir.compute.base import EXITED, FINAL_STATES, GONE, PENDING, RUNNING, STOPPED, VM, SSHCommand, Status, VMSpec
from vdir.compute.local import EXIT_CODE, OUTPUT, LocalProvider
from vdir.errors import (
    BackendUnavailable,
    ConfigError,
    InvalidArgument,
    MissingDependency,
    Timeout,
    VDirError,
)

HOSTS = "hosts"

_PENDING = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING", "SUSPENDED", "RESV_DEL_HOLD"}
_RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING", "STOPPED"}
_EXITED = {"COMPLETED", "FAILED", "OUT_OF_MEMORY"}
# everything else (CANCELLED, TIMEOUT, PREEMPTED, NODE_FAIL, BOOT_FAIL, DEADLINE, ...) is "stopped"
_NEVER = {
    "PartitionConfig": "more nodes or CPUs than the partition has",
    "PartitionNodeLimit": "more nodes than the partition allows",
    "PartitionTimeLimit": "a longer time than the partition allows",
    "BadConstraints": "constraints no node satisfies",
    "InvalidAccount": "an account that does not exist",
    "InvalidQOS": "a QOS that does not exist",
    "AccountNotAllowed": "an account the partition does not allow",
    "QOSNotAllowed": "a QOS the partition does not allow",
}
"""Pending reasons of a job that will never start (the rest, e.g. Resources, just wait)."""


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return re.sub(r"^\w+: error: ", "", lines[-1]) if lines else ""


class SlurmProvider(LocalProvider):
    name = "slurm"
    cloud = "slurm"
    remote = False

    def __init__(self, vd: Any, site: Callable[[str], dict[str, Any]], grace: float = 30.0) -> None:
        from vdir.config import data_dir

        self._site = site
        base = site("").get("workdir")
        super().__init__(vd, base or data_dir() / "slurm", grace=grace)

    # -- plumbing -----------------------------------------------------------------------------
    def settings(self, region: str) -> dict[str, Any]:
        return self._site(region)

    def _wrapper(self, region: str) -> list[str]:
        wrapper = self.settings(region).get("wrapper") or []
        if isinstance(wrapper, str):
            wrapper = shlex.split(wrapper)
        if not isinstance(wrapper, list):
            raise ConfigError("compute.slurm.wrapper must be a list of words, e.g. [sudo, -u, hpcuser]")
        return [str(w) for w in wrapper]

    def _env(self, spec: VMSpec, work: Path) -> dict[str, str]:
        env = super()._env(spec, work)
        env["VDIR_HOSTS"] = str(work / HOSTS)
        return env

    def _slurm_env(self, region: str) -> dict[str, str]:
        conf = self.settings(region).get("conf")
        return {"SLURM_CONF": str(Path(str(conf)).expanduser())} if conf else {}

    def _run(self, region: str, argv: list[str], what: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run a SLURM command of site ``region``; a missing command or no answer is one line."""
        full = [*self._wrapper(region), *argv]
        try:
            return subprocess.run(full, capture_output=True, text=True, timeout=timeout, check=False,
                                  env={**os.environ, **self._slurm_env(region)})
        except FileNotFoundError:
            raise MissingDependency(f"{full[0]} is not installed here; the slurm provider submits from a machine of "
                                    f"the site (a login node) with the SLURM client commands") from None
        except subprocess.TimeoutExpired:
            raise Timeout(f"slurm site {region}: {what}: {argv[0]} did not answer in {timeout:g}s") from None

    def _must(self, region: str, argv: list[str], what: str) -> str:
        proc = self._run(region, argv, what)
        if proc.returncode != 0:
            message = _first_line(proc.stderr) or f"exit code {proc.returncode}"
            if "Unable to contact slurm controller" in proc.stderr or "Connection refused" in proc.stderr:
                raise BackendUnavailable(f"slurm site {region}: {what}: cannot reach the controller ({message})")
            raise VDirError(f"slurm site {region}: {what}: {message}")
        return proc.stdout

    # -- validation ---------------------------------------------------------------------------
    def check(self, spec: VMSpec) -> VMSpec:
        if spec.user_data:
            raise InvalidArgument("--user-data is for cloud VMs; a SLURM job runs its command directly (give it after --)")
        if spec.image or spec.flavor or spec.key:
            raise InvalidArgument("--image, --flavor and --key are for cloud VMs; on SLURM set the partition and "
                                  "sbatch options in compute.slurm")
        site = self.settings(spec.region)
        if not isinstance(site.get("options") or [], (list, str)):
            raise ConfigError("compute.slurm.options must be a list of sbatch options")
        listed = self._must(spec.region, ["sinfo", "-h", "-o", "%P"], "list partitions").split()
        partitions = [p.rstrip("*") for p in listed]
        wanted = site.get("partition")
        if wanted and str(wanted) not in partitions:
            raise InvalidArgument(f"partition {wanted!r} does not exist at SLURM site {spec.region} "
                                  f"(partitions: {', '.join(partitions) or 'none'}; see compute.slurm.regions.{spec.region}.partition)")
        if not wanted and not any(p.endswith("*") for p in listed):
            raise ConfigError(f"SLURM site {spec.region} has no default partition; set compute.slurm.regions.{spec.region}.partition")
        if self.workdir(spec.name).exists():
            from vdir.errors import AlreadyExists

            raise AlreadyExists(f"working directory {self.workdir(spec.name)} exists; delete the old VM first")
        return spec

    # -- boot ---------------------------------------------------------------------------------
    def boot(self, specs: list[VMSpec]) -> list[Status]:
        """Submit one job per spec; if a submission fails, cancel the ones submitted before it
        and remove every working directory made (all or nothing)."""
        done: list[tuple[VMSpec, Status]] = []
        try:
            for spec in specs:
                done.append((spec, self._submit(spec)))
        except BaseException:
            for spec, status in reversed(done):
                if status.instance_id:
                    self._run(spec.region, ["scancel", status.instance_id], "cancel")
                shutil.rmtree(self.workdir(spec.name), ignore_errors=True)
            raise
        return [status for _, status in done]

    def _submit(self, spec: VMSpec) -> Status:
        work = self._new_workdir(spec)
        try:
            linked, elsewhere, env = self._fill_workdir(spec, work)
            job = work / "job.sh"
            site = self.settings(spec.region)
            job.write_text(self._script(spec, work, array=spec.tasks > 1 and site.get("cluster") == "array"))
            job.chmod(0o755)
            argv = ["sbatch", "--parsable", f"--job-name={spec.name}", f"--chdir={work}", f"--output={work / OUTPUT}",
                    f"--comment=vdir:{spec.name}"]
            if site.get("partition"):
                argv.append(f"--partition={site['partition']}")
            if site.get("account"):
                argv.append(f"--account={site['account']}")
            if site.get("time"):
                argv.append(f"--time={site['time']}")
            tasks = max(1, int(spec.tasks))
            mode = str(site.get("cluster") or "tasks")
            if mode not in ("tasks", "nodes", "array"):
                raise ConfigError(f"compute.slurm.cluster is {mode!r}; it is tasks, nodes or array")
            array = tasks > 1 and mode == "array"
            if tasks > 1 and mode == "nodes":
                argv += [f"--nodes={tasks}", "--ntasks-per-node=1"]
            elif array:
                argv = [a for a in argv if not a.startswith("--output=")]
                argv += [f"--array=0-{tasks - 1}", f"--output={work / 'output-%a.log'}"]
            elif tasks > 1:
                argv.append(f"--ntasks={tasks}")
            options = site.get("options") or []
            argv += shlex.split(options) if isinstance(options, str) else [str(o) for o in options]
            argv.append(str(job))
            out = self._must(spec.region, argv, f"submit {spec.name}")
            job_id = out.strip().split(";")[0]
            if not job_id.isdigit():
                raise VDirError(f"slurm site {spec.region}: sbatch answered {out.strip()!r}, not a job id")
            self._refuse_impossible(spec, job_id, tasks)
            extra: dict[str, Any] = {"workdir": str(work), "linked_files": linked, "not_local_files": elsewhere,
                                     "partition": site.get("partition"), "tasks": tasks, "slurm_state": "PENDING",
                                     "array": array}
            return Status(state=PENDING, instance_id=job_id, extra=extra)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise

    def _refuse_impossible(self, spec: VMSpec, job_id: str, tasks: int) -> None:
        """SLURM accepts a job its partition can never run (without ``EnforcePartLimits``) and
        leaves it pending for ever; such a job is a failed boot, so cancel it and say why."""
        proc = self._run(spec.region, ["squeue", "-h", f"--jobs={job_id}", "-o", "%T|%r"], f"check job {job_id}")
        first = proc.stdout.strip().splitlines()[0] if proc.stdout.strip() else ""
        state, _, reason = first.partition("|")
        if state == "PENDING" and reason in _NEVER:
            self._run(spec.region, ["scancel", job_id], f"cancel job {job_id}")
            what = f"{tasks} tasks" if tasks > 1 else "the job"
            raise InvalidArgument(f"slurm site {spec.region}: {what} can never start there ({reason}: {_NEVER[reason]}); "
                                  "nothing was left queued")

    @staticmethod
    def _script(spec: VMSpec, work: Path, array: bool = False) -> str:
        if array:  # one task of a job array: its own host line and exit code
            hosts = (f"mkdir -p {HOSTS}.d\nhostname -s > {HOSTS}.d/$SLURM_ARRAY_TASK_ID.tmp\n"
                     f"mv {HOSTS}.d/$SLURM_ARRAY_TASK_ID.tmp {HOSTS}.d/$SLURM_ARRAY_TASK_ID\n")
            code_file = f"{EXIT_CODE}.$SLURM_ARRAY_TASK_ID"
        else:
            hosts = (f'if [ "${{SLURM_NTASKS:-1}}" -gt 1 ]; then srun --ntasks="$SLURM_NTASKS" hostname -s > {HOSTS}.tmp; '
                     f'else hostname -s > {HOSTS}.tmp; fi\nmv {HOSTS}.tmp {HOSTS}\n')
            code_file = EXIT_CODE
        if spec.command:
            body = (f"( {' '.join(spec.command)}\n)\ncode=$?\n"
                    f"echo $code > {code_file}.tmp && mv {code_file}.tmp {code_file}\nexit $code\n")
        else:
            body = "# no command: hold the allocation for 'vdir vm ssh' until 'vdir vm delete' or the time limit\n" \
                   "exec sleep infinity\n"
        return (f"#!/bin/sh\n# written by vdir: the SLURM job of {spec.name}\n"
                f"cd {shlex.quote(str(work))} || exit 1\n. ./env.sh\n{hosts}{body}")

    # -- life ---------------------------------------------------------------------------------
    def _from_slurm(self, vm: VM, slurm_state: str, nodes: str, work: Path) -> Status:
        word = slurm_state.split()[0].rstrip("+") if slurm_state else ""
        extra: dict[str, Any] = {"slurm_state": word}
        if nodes and nodes not in ("(null)", "None", "None assigned"):
            extra["nodes"] = nodes
        if word in _PENDING:
            return Status(state=PENDING, extra=extra)
        if word in _RUNNING:
            return Status(state=RUNNING, private_ip=nodes or None, extra=extra)
        if word in _EXITED:
            code = self._exit_code(work)
            if code is None:
                code = 0 if word == "COMPLETED" else 1
            return Status(state=EXITED, exit_code=code, extra=extra)
        return Status(state=STOPPED, extra=extra)

    @staticmethod
    def _exit_code(work: Path) -> int | None:
        """The job's exit code; of a job array, the highest of its tasks'."""
        codes = []
        for path in [work / EXIT_CODE, *sorted(work.glob(f"{EXIT_CODE}.*[0-9]"))]:
            try:
                codes.append(int(path.read_text().strip()))
            except (OSError, ValueError):
                continue
        return max(codes) if codes else None

    def _aggregate(self, vm: VM, rows: list[str], work: Path) -> Status:
        """One status for the rows squeue/sacct give for a job (one row, or one per array task)."""
        statuses = []
        for row in rows:
            state, _, nodes = row.partition("|")
            statuses.append(self._from_slurm(vm, state, nodes, work))
        if len(statuses) == 1:
            return statuses[0]
        for wanted in (RUNNING, PENDING):  # an array still going is running while any task runs
            found = [s for s in statuses if s.state == wanted]
            if found:
                found[0].extra["array_states"] = sorted({str(s.extra.get("slurm_state")) for s in statuses})
                return found[0]
        if all(s.state == EXITED for s in statuses):
            code = self._exit_code(work)
            return Status(state=EXITED, exit_code=code if code is not None else max(s.exit_code or 0 for s in statuses),
                          extra={"slurm_state": "COMPLETED" if code == 0 else "FAILED"})
        return next(s for s in statuses if s.state != EXITED)

    def status(self, vm: VM) -> Status:
        work = Path(vm.extra.get("workdir") or self.workdir(vm.name))
        if not vm.instance_id:
            found = self.find(vm)
            return found if found is not None else Status(state=GONE)
        job = vm.instance_id
        proc = self._run(vm.region, ["squeue", "-h", "--states=all", f"--jobs={job}", "-o", "%T|%N"], f"status of job {job}")
        lines = proc.stdout.strip().splitlines() if proc.returncode == 0 else []
        if lines:
            return self._aggregate(vm, lines, work)
        if proc.returncode != 0 and "Invalid job id" not in proc.stderr:
            raise BackendUnavailable(f"slurm site {vm.region}: status of job {job}: {_first_line(proc.stderr)}")
        # the controller has forgotten the job: ask accounting, if the site keeps it
        acct = self._run(vm.region, ["sacct", "-n", "-P", "-X", f"--jobs={job}", "-o", "State,NodeList"], f"accounting of job {job}")
        rows = [r for r in acct.stdout.strip().splitlines() if r.strip()] if acct.returncode == 0 else []
        if rows:
            return self._aggregate(vm, rows, work)
        code = self._exit_code(work)
        if code is not None:
            return Status(state=EXITED, exit_code=code)
        return Status(state=STOPPED if work.is_dir() else GONE)

    def find(self, vm: VM) -> Status | None:
        proc = self._run(vm.region, ["squeue", "-h", f"--name={vm.name}", "-o", "%i|%T|%N"], f"find {vm.name}")
        for line in proc.stdout.strip().splitlines() if proc.returncode == 0 else []:
            job, state, nodes = (line.split("|") + ["", ""])[:3]
            status = self._from_slurm(vm, state, nodes, self.workdir(vm.name))
            status.instance_id = job.split("_")[0]
            status.extra["workdir"] = str(self.workdir(vm.name))
            return status
        return None

    def ready(self, vm: VM, status: Status) -> bool:
        # a job with a command: wait for its end; an allocation held for ssh: until it runs
        if vm.command:
            return status.state in FINAL_STATES or status.state == GONE
        return status.state == RUNNING or status.state in FINAL_STATES

    def delete(self, vm: VM) -> None:
        job = vm.instance_id
        if not job:
            found = self.find(vm)
            job = found.instance_id if found else None
        if job:
            proc = self._run(vm.region, ["scancel", job], f"cancel job {job}")
            if proc.returncode != 0 and "Invalid job id" not in proc.stderr and "already completing" not in proc.stderr:
                raise BackendUnavailable(f"slurm site {vm.region}: cancel job {job}: {_first_line(proc.stderr)}")
            deadline = time.monotonic() + self.grace
            while True:
                status = self.status(vm)
                if status.state in FINAL_STATES or status.state == GONE:
                    break
                if time.monotonic() > deadline:
                    raise Timeout(f"slurm site {vm.region}: job {job} still {status.extra.get('slurm_state')} "
                                  f"{self.grace:g}s after scancel; try 'vdir vm delete {vm.name}' again")
                time.sleep(0.1)
        work = Path(vm.extra.get("workdir") or self.workdir(vm.name))
        if work.is_dir() and work.resolve().parent == self.root.resolve():
            shutil.rmtree(work, ignore_errors=True)

    def ssh(self, vm: VM, command: list[str]) -> SSHCommand:
        status = self.status(vm)
        if status.state != RUNNING:
            hint = "; wait for it with 'vdir vm wait'" if status.state == PENDING else ""
            raise InvalidArgument(f"vm {vm.name} (SLURM job {vm.instance_id}) is {status.state}, so there is no "
                                  f"allocation to enter{hint}")
        work = Path(vm.extra.get("workdir") or self.workdir(vm.name))
        argv = [*self._wrapper(vm.region), "srun", f"--jobid={vm.instance_id}", "--overlap", "--ntasks=1", "--nodes=1",
                f"--chdir={work}"]
        if command:
            argv += ["/bin/sh", "-c", ". ./env.sh; " + " ".join(command)]
        else:
            argv += ["--pty", os.environ.get("SHELL") or "/bin/sh", "-l"]
        return SSHCommand(argv=argv, env=self._slurm_env(vm.region))

    def hosts(self, vm: VM) -> list[str]:
        """The job's host file (one line per task), once the job has written it."""
        work = Path(vm.extra.get("workdir") or self.workdir(vm.name))
        if vm.extra.get("array"):  # one file per task that has started, in task order
            found = sorted((int(p.name), p) for p in (work / f"{HOSTS}.d").glob("*") if p.name.isdigit())
            lines = [p.read_text().strip() for _, p in found if p.read_text().strip()]
            if work.is_dir():  # gathered into the one host list the cluster names
                (work / f"{HOSTS}.tmp").write_text("".join(h + "\n" for h in lines))
                (work / f"{HOSTS}.tmp").replace(work / HOSTS)
            return lines
        try:
            return [ln.strip() for ln in (work / HOSTS).read_text().splitlines() if ln.strip()]
        except OSError:
            return []

    def logs(self, vm: VM) -> str:
        work = Path(vm.extra.get("workdir") or self.workdir(vm.name))
        if not vm.extra.get("array"):
            return super().logs(vm)
        parts = sorted((int(m.group(1)), p) for p in work.glob("output-*.log") if (m := re.fullmatch(r"output-(\d+)\.log", p.name)))
        return "".join(f"== task {n} ==\n" + p.read_text(errors="replace") for n, p in parts)
