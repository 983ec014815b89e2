"""SLURM for tests: a real one-node cluster (Debian ``slurmctld`` + ``slurmd`` + ``munged``),
started once per session.  Not a storage backend: no BACKEND_FIXTURES.

Everything lives in a private directory: its own ``slurm.conf`` (free ports, state, spool, pid
and log files), its own munge key and munge socket.  Slurm's daemons (and ``srun``) listen on
every address of their network namespace and have no option to bind one address, so the
cluster runs in a **network namespace of its own** holding only a loopback interface: nothing
it opens is reachable from outside this machine, nor from the host's own network.  The client
commands reach it through the same namespace: :attr:`SlurmCluster.wrapper` is
``nsenter --net=/proc/PID/ns/net``, which the compute provider's ``compute.slurm.wrapper``
setting puts in front of ``sbatch``/``squeue``/``scancel``/``srun`` (on a real site it is empty).

The node declares 8 CPUs whatever the machine has (``SlurmdParameters=config_overrides``), so
a cluster of several tasks fits on it; ``proctrack/linuxproc`` and ``task/none``: no cgroups.
``scripts/setup.sh --test`` installs the packages (slurmctld, slurmd, slurm-client, munge).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.servers.process import CACHE, free_port

PARTITION = "hpcq"
"""The cluster's one partition (deliberately not the usual ``debug``, so a test sees that the
provider submits to the partition declared for the site, not to a default)."""
CPUS = 8
NEEDED = ("slurmctld", "slurmd", "sbatch", "squeue", "scancel", "srun", "sinfo", "munged", "mungekey", "unshare", "nsenter")


@dataclass(frozen=True)
class SlurmCluster:
    root: Path
    conf: Path
    node: str
    partition: str
    wrapper: list[str] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a SLURM client command against this cluster."""
        proc = subprocess.run([*self.wrapper, *args], env={**os.environ, **self.env}, capture_output=True, text=True,
                              timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def jobs(self) -> dict[str, str]:
        """Job id -> SLURM state of every job the controller still remembers."""
        out = self.run("squeue", "-h", "--states=all", "-o", "%i|%T").stdout
        return dict(line.split("|", 1) for line in out.split())

    def live_jobs(self) -> dict[str, str]:
        return {j: s for j, s in self.jobs().items() if s in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED")}

    def cancel_all(self, timeout: float = 30) -> None:
        """Cancel every job and wait (with a deadline) until none is alive."""
        live = self.live_jobs()
        if live:
            self.run("scancel", *live, check=False)
        deadline = time.monotonic() + timeout
        while self.live_jobs():
            if time.monotonic() > deadline:
                raise AssertionError(f"jobs still alive after scancel: {self.live_jobs()}")
            time.sleep(0.1)


def _conf(root: Path, node: str, ctld_port: int, slurmd_port: int) -> str:
    return f"""# written by tests/servers/slurm.py: a private one-node cluster
ClusterName=vdirtest
SlurmctldHost={node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
AuthInfo=socket={root}/munge.socket
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
JobCompType=jobcomp/filetxt
JobCompLoc={root}/jobcomp.log
ReturnToService=2
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
NodeName={node} NodeAddr=127.0.0.1 CPUs={CPUS} RealMemory=1000 State=UNKNOWN
PartitionName={PARTITION} Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


def _stop(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


@contextlib.contextmanager
def slurm_cluster_in(root: Path) -> Iterator[SlurmCluster]:
    """Start the cluster with its files in ``root``; stop it (by pid) when the block ends."""
    missing = [n for n in NEEDED if shutil.which(n) is None]
    if missing:
        raise RuntimeError(f"{', '.join(missing)} not installed; run scripts/setup.sh --test")
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)  # munged wants its socket's directory searchable by all
    for sub in ("state", "spool"):
        (root / sub).mkdir(exist_ok=True)
    logdir = CACHE / "test-logs"
    logdir.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        with open(logdir / f"slurm-{name}-{os.getpid()}.log", "wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                    env={**os.environ, "SLURM_CONF": str(root / "slurm.conf")})
        procs.append(proc)
        return proc

    try:
        # a network namespace with only a loopback interface, held open by a sleeping process
        holder = start("netns", ["unshare", "--net", "sleep", "infinity"])
        own = os.readlink("/proc/self/ns/net")
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{holder.pid}/ns/net") != own:
                    break
            if holder.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("could not create a network namespace for the SLURM cluster (unshare --net)")
            time.sleep(0.02)
        wrapper = ["nsenter", f"--net=/proc/{holder.pid}/ns/net"]
        subprocess.run([*wrapper, "ip", "link", "set", "lo", "up"], check=True, timeout=30)
        # Slurm resolves with AI_ADDRCONFIG, which finds nothing in a namespace holding only
        # loopback addresses; a link-local address on lo (it leads nowhere) satisfies it
        subprocess.run([*wrapper, "ip", "addr", "add", "169.254.77.1/32", "dev", "lo"], check=True, timeout=30)

        key = root / "munge.key"
        if not key.exists():
            subprocess.run(["mungekey", "--create", "--keyfile", str(key)], check=True, timeout=30, capture_output=True)
        key.chmod(0o400)
        node = socket.gethostname().split(".")[0]
        conf = root / "slurm.conf"
        conf.write_text(_conf(root, node, free_port(), free_port()))
        start("munged", [*wrapper, "munged", "--foreground", "--force", f"--socket={root}/munge.socket",
                         f"--key-file={key}", f"--pid-file={root}/munged.pid", f"--log-file={root}/munged.log",
                         f"--seed-file={root}/munged.seed"])
        deadline = time.monotonic() + 30
        while not (root / "munge.socket").exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"munged did not create its socket in {root}")
            time.sleep(0.02)
        start("slurmctld", [*wrapper, "slurmctld", "-D", "-f", str(conf)])
        start("slurmd", [*wrapper, "slurmd", "-D", "-f", str(conf)])
        cluster = SlurmCluster(root=root, conf=conf, node=node, partition=PARTITION, wrapper=wrapper)
        deadline = time.monotonic() + 60
        while True:
            proc = cluster.run("sinfo", "-h", "-p", PARTITION, "-o", "%T", check=False)
            if proc.returncode == 0 and proc.stdout.strip() == "idle":
                break
            dead = [p.args for p in procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                logs = "".join((root / f).read_text(errors="replace")[-1500:] for f in ("slurmctld.log", "slurmd.log")
                               if (root / f).exists())
                raise RuntimeError(f"the SLURM node did not become idle ({proc.stdout.strip() or proc.stderr.strip()}; "
                                   f"exited: {dead})\n{logs}")
            time.sleep(0.1)
        yield cluster
        cluster.cancel_all()
    finally:
        for proc in reversed(procs):
            _stop(proc)


@pytest.fixture(scope="session")
def slurm_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """The session's one-node SLURM cluster (see the module docstring)."""
    with slurm_cluster_in(tmp_path_factory.mktemp("slurm")) as cluster:
        yield cluster


@pytest.fixture
def slurm(slurm_session: SlurmCluster) -> Iterator[SlurmCluster]:
    """The session's cluster with no job alive before and after the test."""
    slurm_session.cancel_all()
    yield slurm_session
    slurm_session.cancel_all()
