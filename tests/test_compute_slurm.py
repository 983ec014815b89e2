"""The SLURM compute provider against a real one-node cluster (Debian slurmctld + slurmd + munge,
tests/servers/slurm.py): ``vdir vm boot --near`` a folder registered as the site's backend
submits there, ``vm wait/logs/ssh/delete`` use squeue/sacct/srun/scancel."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tests.servers.slurm import SlurmCluster
from tests.servers.vdirs import CLI, fails, ok
from vdir.compute import Compute, Settings
from vdir.compute.placement import decide
from vdir.core import VDir

SITE = "hpc1"


def configure(cli: CLI, slurm: SlurmCluster, **site: Any) -> Path:
    """``vdir init``, a scratch folder registered as site hpc1's backend, and the site's settings."""
    ok(cli, "init")
    config = cli.home / ".config" / "vdir" / "config.yaml"
    doc = yaml.safe_load(config.read_text())
    doc["compute"] = {"user": "ann", "poll_interval": 0.1,
                      "slurm": {"wrapper": slurm.wrapper, "conf": str(slurm.conf),
                                "regions": {SITE: {"partition": slurm.partition, **site}}}}
    config.write_text(yaml.safe_dump(doc))
    scratch = cli.home / "scratch"
    scratch.mkdir()
    ok(cli, "backend", "add", "scratch", f"file://{scratch}", "--cloud", "slurm", "--region", SITE)
    return scratch


def put_data(cli: CLI) -> None:
    """4 files on the HPC site's scratch, 1 smaller file on this machine's default folder."""
    src = cli.home / "src"
    src.mkdir()
    for name, text in (("a.txt", "alpha\n"), ("b.txt", "beta\n"), ("c.txt", "gamma\n"), ("d.txt", "delta\n")):
        (src / name).write_text(text)
    ok(cli, "put", "-r", str(src), "/data/", "--backend", "scratch")
    (cli.home / "x.txt").write_text("x\n")
    ok(cli, "put", str(cli.home / "x.txt"), "/data/x.txt")


def vms(cli: CLI) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in json.loads(ok(cli, "vm", "list", "--json"))}


def test_boot_near_hpc_data_runs_the_job_on_the_site(cli: CLI, slurm: SlurmCluster) -> None:
    scratch = configure(cli, slurm)
    put_data(cli)
    before = slurm.jobs()
    dry = ok(cli, "vm", "boot", "--near", "/data", "--dry-run")
    assert "decision: slurm in hpc1" in dry and "slurm/hpc1 holds the most" in dry
    # every candidate is shown, with the provider that could serve it
    assert "slurm/hpc1" in dry and "candidate for slurm" in dry and "local/" in dry and "candidate for local" in dry
    assert slurm.jobs() == before

    booted = ok(cli, "vm", "boot", "--near", "/data", "--name", "count", "--",
                "cat vdir/data/src/*.txt; echo vm=$VDIR_VM on=$(hostname -s) part=$SLURM_JOB_PARTITION; "
                "test -L vdir/data/src/a.txt && echo linked; exit 0")
    assert "booted count on slurm in hpc1" in booted
    vm = vms(cli)["count"]
    job = vm["instance_id"]
    assert job.isdigit() and job in slurm.jobs()
    assert vm["extra"]["partition"] == slurm.partition and vm["cloud"] == "slurm"

    waited = ok(cli, "vm", "wait", "count", "--timeout", "120")
    assert "count: exited, exit code 0" in waited
    assert slurm.jobs()[job] == "COMPLETED"
    logs = ok(cli, "vm", "logs", "count")
    assert "alpha\nbeta\ngamma\ndelta\n" in logs
    assert f"vm=count on={slurm.node} part={slurm.partition}" in logs and "linked" in logs
    # the links point at the stored objects on the site's scratch, read in place
    workdir = Path(vm["extra"]["workdir"])
    assert (workdir / "vdir" / "data" / "src" / "a.txt").resolve().is_relative_to(scratch.resolve())
    assert (workdir / "hosts").read_text().split() == [slurm.node]
    status = ok(cli, "vm", "status", "count")
    assert "state: exited" in status and "exit code: 0" in status

    ok(cli, "vm", "delete", "count")
    assert not workdir.exists() and vms(cli) == {}


def test_failed_job_and_cancel(cli: CLI, slurm: SlurmCluster) -> None:
    configure(cli, slurm)
    put_data(cli)
    ok(cli, "vm", "boot", "--near", "/data", "--name", "bad", "--", "echo oops >&2; exit 3")
    err = fails(cli, "vm", "wait", "bad", "--timeout", "120")
    assert "exited with code 3" in err
    assert "oops" in ok(cli, "vm", "logs", "bad")
    job = vms(cli)["bad"]["instance_id"]
    assert slurm.jobs()[job] == "FAILED"

    ok(cli, "vm", "boot", "--near", "/data", "--name", "long", "--", "sleep 600")
    waited = json.loads(ok(cli, "vm", "status", "long", "--json"))
    long_job = waited["instance_id"]
    assert slurm.live_jobs()[long_job] in ("PENDING", "RUNNING")
    gone = ok(cli, "vm", "delete", "--all-near", "/data")
    assert "deleted bad" in gone and "deleted long" in gone
    assert slurm.jobs()[long_job] == "CANCELLED" and slurm.live_jobs() == {}
    assert vms(cli) == {}


def test_held_allocation_ssh_runs_inside_it(cli: CLI, slurm: SlurmCluster) -> None:
    configure(cli, slurm)
    put_data(cli)
    ok(cli, "vm", "boot", "--near", "/data", "--name", "shell")
    waited = ok(cli, "vm", "wait", "shell", "--timeout", "120")
    assert "shell: running" in waited
    job = vms(cli)["shell"]["instance_id"]
    out = ok(cli, "vm", "ssh", "shell", "--", "echo job=$SLURM_JOB_ID; cat vdir/data/src/b.txt")
    assert out == f"job={job}\nbeta\n"
    printed = ok(cli, "vm", "ssh", "shell", "--print")
    assert f"srun --jobid={job} --overlap" in printed and "--pty" in printed
    ok(cli, "vm", "delete", "shell")
    assert slurm.live_jobs() == {}


def test_unknown_partition_is_one_line_and_leaves_nothing(cli: CLI, slurm: SlurmCluster) -> None:
    configure(cli, slurm, partition="nosuch")
    put_data(cli)
    before = slurm.jobs()
    err = fails(cli, "vm", "boot", "--near", "/data")
    assert "partition 'nosuch' does not exist at SLURM site hpc1" in err and slurm.partition in err
    err = fails(cli, "vm", "boot", "--near", "/data", "--provider", "slurm", "--flavor", "big")
    assert "for cloud VMs" in err
    assert vms(cli) == {} and slurm.jobs() == before
    assert not (cli.home / ".local" / "share" / "vdir" / "slurm").exists() or \
        list((cli.home / ".local" / "share" / "vdir" / "slurm").iterdir()) == []


def test_placement_picks_the_slurm_site_for_its_data(vd: VDir, tmp_path: Path) -> None:
    from vdir.admin import add_backend

    (tmp_path / "scratch").mkdir()
    add_backend(vd, "scratch", f"file://{tmp_path / 'scratch'}", cloud="slurm", region=SITE, check=False)
    vd.put(b"x" * 3000, "/d/big", backend="scratch")
    vd.put(b"y" * 1000, "/d/small")
    d = decide(vd, ["/d"])
    assert (d.provider, d.cloud, d.region) == ("slurm", "slurm", SITE)
    assert {s.label: s.provider for s in d.sites} == {f"slurm/{SITE}": "slurm", "local/local": "local"}
    plan = Compute(vd, settings=Settings.from_section({"user": "ann"})).plan(["/d"])
    assert plan.provider == "slurm" and plan.blocker is None


# -- clusters: one job of N tasks ---------------------------------------------------------------
def clusters(cli: CLI) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in json.loads(ok(cli, "cluster", "list", "--json"))}


def test_cluster_runs_one_job_of_n_tasks_with_a_host_list(cli: CLI, slurm: SlurmCluster) -> None:
    configure(cli, slurm)
    put_data(cli)
    dry = ok(cli, "cluster", "create", "mpi", "--near", "/data", "--count", "3", "--dry-run")
    assert "decision: slurm in hpc1" in dry and "one job of 3 tasks" in dry and "nothing was started" in dry
    assert clusters(cli) == {}

    # the job's command runs once, on the first node, and starts the tasks itself (as mpirun would)
    started = ok(cli, "cluster", "create", "mpi", "--near", "/data", "--count", "3", "--",
                 "srun --ntasks=3 sh -c 'echo task=$SLURM_PROCID $(cat vdir/data/src/a.txt)' | sort; "
                 "echo hosts=$(wc -l < $VDIR_HOSTS)")
    assert "started cluster mpi on slurm in hpc1: one SLURM job of 3 tasks (mpi)" in started
    [job] = [j for j, s in slurm.jobs().items() if j == vms(cli)["mpi"]["instance_id"]]
    ok(cli, "vm", "wait", "mpi", "--timeout", "120")
    logs = ok(cli, "vm", "logs", "mpi")
    assert "task=0 alpha\ntask=1 alpha\ntask=2 alpha\n" in logs and "hosts=3" in logs
    status = json.loads(ok(cli, "cluster", "status", "mpi", "--json"))
    assert status["hosts"] == [slurm.node] * 3 and status["state"] == "exited" and status["members"] == ["mpi"]
    assert Path(status["hosts_file"]).read_text() == f"{slurm.node}\n" * 3
    assert slurm.jobs()[job] == "COMPLETED"
    ok(cli, "cluster", "delete", "mpi")
    assert clusters(cli) == {} and vms(cli) == {}


def test_held_cluster_list_ssh_delete(cli: CLI, slurm: SlurmCluster) -> None:
    configure(cli, slurm)
    put_data(cli)
    ok(cli, "cluster", "create", "dask", "--near", "/data", "--count", "4")
    waited = ok(cli, "cluster", "wait", "dask", "--timeout", "120")
    assert f"dask: running, hosts {', '.join([slurm.node] * 4)}" in waited
    listed = ok(cli, "cluster", "list")
    assert "dask" in listed and "slurm" in listed and "running" in listed and "/data" in listed
    assert ok(cli, "cluster", "hosts", "dask").split() == [slurm.node] * 4
    job = vms(cli)["dask"]["instance_id"]
    assert ok(cli, "cluster", "ssh", "dask", "--", "echo $SLURM_JOB_ID $SLURM_NTASKS") == f"{job} 1\n"
    # the allocation holds all four tasks at once
    assert slurm.run("squeue", "-h", f"--jobs={job}", "-o", "%C").stdout.strip() == "4"
    ok(cli, "cluster", "delete", "dask")
    assert slurm.live_jobs() == {} and clusters(cli) == {} and vms(cli) == {}
    err = fails(cli, "cluster", "delete", "dask")
    assert "no cluster named 'dask'" in err


def test_cluster_too_big_for_the_site_leaves_nothing(cli: CLI, slurm: SlurmCluster) -> None:
    """Two whole nodes on a one-node site: SLURM would queue the job for ever, so vdir cancels it
    at once; no job left, no records, no workdir."""
    configure(cli, slurm, cluster="nodes")
    put_data(cli)
    before = slurm.jobs()
    err = fails(cli, "cluster", "create", "huge", "--near", "/data", "--count", "2")
    assert "slurm site hpc1: 2 tasks can never start there (PartitionConfig" in err
    assert slurm.live_jobs() == {} and [s for j, s in slurm.jobs().items() if j not in before] == ["CANCELLED"]
    assert clusters(cli) == {} and vms(cli) == {}
    work = cli.home / ".local" / "share" / "vdir" / "slurm"
    assert not work.exists() or list(work.iterdir()) == []
    ok(cli, "cluster", "create", "huge", "--near", "/data", "--count", "1")  # the name is free again
    err = fails(cli, "cluster", "create", "huge", "--near", "/data", "--count", "1")
    assert "a cluster named 'huge' exists" in err
    ok(cli, "cluster", "delete", "huge")


# -- records: repair and forgotten jobs (Python API, same real cluster) ---------------------------
def slurm_compute(vd: VDir, slurm: SlurmCluster, tmp_path: Path) -> Compute:
    from vdir.admin import add_backend

    (tmp_path / "scratch").mkdir()
    add_backend(vd, "scratch", f"file://{tmp_path / 'scratch'}", cloud="slurm", region=SITE, check=False)
    vd.put(b"payload\n", "/d/f", backend="scratch")
    section = {"user": "ann", "poll_interval": 0.1, "slurm": {
        "wrapper": slurm.wrapper, "conf": str(slurm.conf), "workdir": str(tmp_path / "jobs"),
        "regions": {SITE: {"partition": slurm.partition}}}}
    return Compute(vd, settings=Settings.from_section(section))


def test_refresh_finds_a_job_whose_record_was_left_booting(vd: VDir, slurm: SlurmCluster, tmp_path: Path) -> None:
    """A crash after sbatch but before the record was filled in: --refresh finds the job by name."""
    from vdir.compute.base import COLLECTION

    c = slurm_compute(vd, slurm, tmp_path)
    plan = c.plan(["/d"], name="lost", command=["sleep 300"])
    prov = c.provider("slurm")
    [status] = prov.boot([prov.check(plan.specs[0])])
    vd.catalog.put_record(COLLECTION, "lost", {"name": "lost", "provider": "slurm", "cloud": "slurm", "region": SITE,
                                               "near": ["/d"], "state": "booting", "command": ["sleep 300"]})
    [vm] = c.list(refresh=True)
    assert vm.instance_id == status.instance_id and vm.state in ("pending", "running")
    c.delete("lost")
    assert slurm.live_jobs() == {} and not (tmp_path / "jobs" / "lost").exists()


def test_a_job_the_controller_forgot_reads_its_exit_code_file(vd: VDir, slurm: SlurmCluster, tmp_path: Path) -> None:
    """Once squeue no longer knows the job and accounting is off (as on this cluster: sacct says
    so), the state comes from the job's own exit_code file."""
    from vdir.compute.base import COLLECTION

    c = slurm_compute(vd, slurm, tmp_path)
    [vm] = c.boot(c.plan(["/d"], name="old", command=["exit 7"]))
    assert c.wait("old", timeout=120, interval=0.1).exit_code == 7
    doc, version = vd.catalog.get_record(COLLECTION, "old")
    vd.catalog.put_record(COLLECTION, "old", {**doc, "instance_id": "999999"}, expected_version=version)
    status = c.status("old")
    assert (status.state, status.exit_code) == ("exited", 7)
    c.delete("old")
    assert not (tmp_path / "jobs" / "old").exists()


def test_cluster_as_a_job_array(cli: CLI, slurm: SlurmCluster) -> None:
    """cluster: array — one sbatch --array submission; every task runs the command; the job's
    exit code is the highest of its tasks'."""
    configure(cli, slurm, cluster="array")
    put_data(cli)
    ok(cli, "cluster", "create", "arr", "--near", "/data", "--count", "3", "--",
       "echo task=$SLURM_ARRAY_TASK_ID $(cat vdir/data/src/b.txt); exit $SLURM_ARRAY_TASK_ID")
    job = vms(cli)["arr"]["instance_id"]
    err = fails(cli, "vm", "wait", "arr", "--timeout", "120")
    assert "exited with code 2" in err  # the highest of 0, 1, 2
    tasks = {j: s for j, s in slurm.jobs().items() if j.startswith(f"{job}_")}
    assert tasks == {f"{job}_0": "COMPLETED", f"{job}_1": "FAILED", f"{job}_2": "FAILED"}
    logs = ok(cli, "vm", "logs", "arr")
    for n in range(3):
        assert f"== task {n} ==\ntask={n} beta\n" in logs
    status = json.loads(ok(cli, "cluster", "status", "arr", "--json"))
    assert status["hosts"] == [slurm.node] * 3 and status["state"] == "exited"
    assert Path(status["hosts_file"]).read_text() == f"{slurm.node}\n" * 3
    ok(cli, "cluster", "delete", "arr")
    assert clusters(cli) == {} and vms(cli) == {} and slurm.live_jobs() == {}
