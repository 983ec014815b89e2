"""The local provider: a "VM" that is a process on this machine, next to local-folder data.

Booting prepares a working directory (``compute.local.workdir``, default
``$XDG_DATA_HOME/vdir/vms/NAME``):

* ``vdir/`` mirrors the namespace below the ``--near`` paths with symbolic links to the stored
  objects of every file that has a replica on a local-folder backend of this machine, so a job
  reads the bytes in place, without a copy (treat them as read-only: they *are* the stored
  objects).  Files stored elsewhere are listed in ``vdir/.not-local`` and can be read with
  ``vdir cat`` / ``vdir get``;
* ``env.sh`` exports ``VDIR_CONFIG`` (the same catalog), ``VDIR_VM``, ``VDIR_NEAR`` and
  ``VDIR_ROOT`` (the ``vdir/`` folder);
* ``job.sh`` runs the job command, if one was given (like ssh, its words are joined with spaces
  and run by ``sh``, so ``-- 'wc -c vdir/data/* > sizes'`` works).

A job runs detached, in its own process group, with its output in ``output.log`` and its exit
code written to ``exit_code`` when it ends; the record keeps the pid, process group and the
process's start time (so a recycled pid is never mistaken for the job).  Without a job the VM
is ``ready`` and ``vdir vm ssh NAME`` opens a shell in the working directory.  Delete stops the
process group (TERM, then KILL after a grace period) and removes the working directory.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vdir import paths
from vdir.catalog.base import DIR, FILE, OK
from vdir.compute.base import EXITED, GONE, READY, RUNNING, STOPPED, VM, Provider, SSHCommand, Status, VMSpec
from vdir.errors import AlreadyExists, InvalidArgument, VDirError
from vdir.procs import alive, group_alive, start_ticks

if TYPE_CHECKING:
    from vdir.core import VDir

OUTPUT = "output.log"
EXIT_CODE = "exit_code"
ROOT = "vdir"


class LocalProvider(Provider):
    name = "local"
    cloud = "local"
    remote = False

    def __init__(self, vd: VDir, workdir: str | os.PathLike[str] | None = None, grace: float = 5.0) -> None:
        from vdir.config import data_dir

        self.vd = vd
        self.root = Path(os.path.expanduser(str(workdir))) if workdir else data_dir() / "vms"
        self.grace = grace

    def workdir(self, name: str) -> Path:
        paths.check_name(name)
        return self.root / name

    def check(self, spec: VMSpec) -> VMSpec:
        if spec.user_data:
            raise InvalidArgument("--user-data is for cloud VMs; a local VM runs its job directly (give it after --)")
        if spec.image or spec.flavor or spec.key:
            raise InvalidArgument("--image, --flavor and --key are for cloud VMs; the local provider runs a process here")
        if self.workdir(spec.name).exists():
            raise AlreadyExists(f"working directory {self.workdir(spec.name)} exists; delete the old VM first")
        return spec

    # -- boot ---------------------------------------------------------------------------------
    def boot(self, specs: list[VMSpec]) -> list[Status]:
        done: list[tuple[VMSpec, Status]] = []
        try:
            for spec in specs:
                done.append((spec, self._boot_one(spec)))
        except BaseException:
            for spec, status in done:
                self._stop(status.extra)
                shutil.rmtree(self.workdir(spec.name), ignore_errors=True)
            raise
        return [status for _, status in done]

    def _new_workdir(self, spec: VMSpec) -> Path:
        """The job's own folder, new (``AlreadyExists`` if an old VM's is there); the caller
        removes it if what follows fails."""
        work = self.workdir(spec.name)
        try:
            work.mkdir(parents=True)
        except FileExistsError:
            raise AlreadyExists(f"working directory {work} exists; delete the old VM first") from None
        return work

    def _fill_workdir(self, spec: VMSpec, work: Path) -> tuple[int, int, dict[str, str]]:
        """Link the data near the job into ``work`` and write its ``env.sh``: (files linked,
        files not on this site, the environment)."""
        linked, elsewhere = self._link_data(work / ROOT, spec.near)
        env = self._env(spec, work)
        (work / "env.sh").write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items()))
        return linked, elsewhere, env

    def _boot_one(self, spec: VMSpec) -> Status:
        work = self._new_workdir(spec)
        try:
            linked, elsewhere, env = self._fill_workdir(spec, work)
            extra: dict[str, Any] = {"workdir": str(work), "linked_files": linked, "not_local_files": elsewhere}
            if not spec.command:
                return Status(state=READY, extra=extra)
            job = work / "job.sh"
            job.write_text("#!/bin/sh\n# written by vdir: the job of local VM " + spec.name + "\n"
                           f'cd "$(dirname "$0")"\n. ./env.sh\n{" ".join(spec.command)}\n')
            job.chmod(0o755)
            # sh runs the job in the background and exits at once, so the job is not our child
            # (nobody has to reap it); its exit code lands in a file when it ends
            launcher = (f"( ./job.sh; echo $? > {EXIT_CODE}.tmp; mv {EXIT_CODE}.tmp {EXIT_CODE} ) "
                        f"</dev/null >{OUTPUT} 2>&1 & echo $!")
            proc = subprocess.run(["/bin/sh", "-c", launcher], cwd=work, capture_output=True, start_new_session=True,
                                  env={**os.environ, **env}, timeout=30, check=False)
            if proc.returncode != 0 or not proc.stdout.strip().isdigit():
                raise VDirError(f"local vm {spec.name}: could not start the job: {proc.stderr.decode(errors='replace').strip()}")
            pid = int(proc.stdout.strip())
            pgid = os.getpgid(pid) if alive(pid) else pid
            extra.update(pid=pid, pgid=pgid, start_ticks=start_ticks(pid))
            return Status(state=RUNNING, instance_id=f"local:{pid}", extra=extra)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise

    def _env(self, spec: VMSpec, work: Path) -> dict[str, str]:
        env = {"VDIR_VM": spec.name, "VDIR_NEAR": " ".join(spec.near), "VDIR_ROOT": str(work / ROOT)}
        config = self.vd.config
        if config is not None:
            env["VDIR_CONFIG"] = str(config.path)
        return env

    def _link_data(self, root: Path, near: list[str]) -> tuple[int, int]:
        """Symlink every file below ``near`` that has a replica in a local folder; return
        (linked, not local)."""
        from vdir.backends.local import LocalBackend

        root.mkdir()
        linked = 0
        missing: list[str] = []
        for top_path in near:
            top = self.vd.catalog.resolve(top_path)
            items = ((paths.join(top_path, rel), e) for rel, e in self.vd.catalog.walk(top.id)) if top.type == DIR \
                else iter([(top_path, top)])
            for path, entry in items:
                target = root / path.lstrip("/")
                if entry.type == DIR:
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                if entry.type != FILE:
                    continue
                source: Path | None = None
                for replica in entry.replicas:
                    if replica.state != OK:
                        continue
                    try:
                        backend = self.vd.backend(replica.backend)
                    except VDirError:
                        continue
                    if isinstance(backend, LocalBackend):
                        candidate = backend.root / replica.key
                        if candidate.is_file():
                            source = candidate
                            break
                if source is None:
                    missing.append(path)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                if not target.exists():
                    target.symlink_to(source)
                    linked += 1
        if missing:
            (root / ".not-local").write_text("".join(p + "\n" for p in missing))
        return linked, len(missing)

    # -- life ---------------------------------------------------------------------------------
    def status(self, vm: VM) -> Status:
        work = Path(vm.extra.get("workdir") or self.workdir(vm.name))
        if not work.is_dir():
            return Status(state=GONE)
        pid = vm.extra.get("pid")
        if pid is None:
            return Status(state=READY)
        if alive(int(pid), vm.extra.get("start_ticks")):
            return Status(state=RUNNING)
        code_file = work / EXIT_CODE
        try:
            return Status(state=EXITED, exit_code=int(code_file.read_text().strip()))
        except (OSError, ValueError):
            return Status(state=STOPPED)

    def ready(self, vm: VM, status: Status) -> bool:
        # waiting on a local VM means waiting for its job to end
        return status.state != RUNNING

    def _stop(self, extra: dict[str, Any]) -> None:
        pgid = extra.get("pgid")
        pid = extra.get("pid")
        if pgid is None or pid is None:
            return
        if not alive(int(pid), extra.get("start_ticks")) and not group_alive(int(pgid)):
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(int(pgid), signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        while time.monotonic() < deadline and group_alive(int(pgid)):
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(int(pgid), signal.SIGKILL)

    def delete(self, vm: VM) -> None:
        self._stop(vm.extra)
        work = Path(vm.extra.get("workdir") or self.workdir(vm.name))
        if work.is_dir() and work.resolve().parent == self.root.resolve():
            shutil.rmtree(work, ignore_errors=True)

    def ssh(self, vm: VM, command: list[str]) -> SSHCommand:
        work = Path(vm.extra.get("workdir") or self.workdir(vm.name))
        if not work.is_dir():
            raise InvalidArgument(f"vm {vm.name}: its working directory {work} is gone")
        env = self._env(VMSpec(name=vm.name, provider=self.name, region=vm.region, near=vm.near), work)
        shell = os.environ.get("SHELL") or "/bin/sh"
        argv = ["/bin/sh", "-c", " ".join(command)] if command else [shell]
        return SSHCommand(argv=argv, cwd=str(work), env=env)

    def logs(self, vm: VM) -> str:
        work = Path(vm.extra.get("workdir") or self.workdir(vm.name))
        try:
            return (work / OUTPUT).read_text(errors="replace")
        except FileNotFoundError:
            return ""
