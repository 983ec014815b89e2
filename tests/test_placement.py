"""Placement: policies, the planner, the daemon (in-process and as several killed/racing
processes), scrub and repair, read failover with a backend down, and `vdir watch`.

Backends are local folders registered with the attributes of clouds (cloud, region, tier); the
same behaviours on real servers (moto, Azurite, fake-gcs-server) are in test_placement_clouds.py.
Every copy is checked by content."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest

import vdir
from tests.placement_helpers import backends_of, run_once, start_daemons, wait_until_in_place
from tests.servers.vdirs import CLI
from vdir.admin import add_backend
from vdir.catalog.base import CORRUPT, MISSING, OK, open_catalog
from vdir.core import VDir
from vdir.errors import InvalidArgument
from vdir.fsck import fsck
from vdir.placement import planner
from vdir.placement.daemon import Daemon, DaemonOptions
from vdir.placement.policy import PolicyError, apply_policy, glob_match, load_policy, parse_expr, parse_policy
from vdir.placement.repair import repair

POLICY = """\
rules:
  - name: datasets
    match: /datasets/**
    copies: 2
    where: cloud=aws | cloud=azure
    spread: cloud
  - name: archive
    match: /archive/**
    copies: 1
    where: tier=standard & !name=local
    lifecycle: {after: 30d, where: tier=cold}
  - name: scratch
    match: /scratch/**
    copies: 1
    where: cloud=local
"""


def world(tmp_path: Path, catalog_url: str | None = None) -> VDir:
    """A VDir with five folder backends standing for clouds: local, aws (2 regions), azure, cold."""
    url = catalog_url or f"sqlite:///{tmp_path / 'catalog.db'}"
    vd = VDir(open_catalog(url), default_backend="local")
    for name, cloud, region, tier, cost in [
        ("local", "local", "local", "standard", 0.0),
        ("aws1", "aws", "us-east-1", "standard", 1.0),
        ("aws2", "aws", "eu-west-1", "standard", 1.5),
        ("azure", "azure", "westeurope", "standard", 2.0),
        ("glacier", "aws", "us-east-1", "cold", 0.1),
    ]:
        (tmp_path / name).mkdir(exist_ok=True)
        add_backend(vd, name, f"file://{tmp_path / name}", cloud=cloud, region=region, tier=tier, cost=cost, check=False)
    return vd


# -- the policy language -----------------------------------------------------------------------
def test_expressions_select_backends(tmp_path: Path) -> None:
    vd = world(tmp_path)
    recs = vd.catalog.list_backends()

    def sel(text: str) -> list[str]:
        return sorted(b.name for b in recs if parse_expr(text).matches(b))

    assert sel("cloud=aws | cloud=azure") == ["aws1", "aws2", "azure", "glacier"]
    assert sel("tier=cold & !name=github") == ["glacier"]
    assert sel("cloud=aws & !(region=us-*)") == ["aws2"]
    assert sel("cost<1.2 & cloud!=local") == ["aws1", "glacier"]
    assert sel("*") == ["aws1", "aws2", "azure", "glacier", "local"]
    for bad in ["", "cloud=", "colour=red", "cloud=aws |", "(cloud=aws", "region<3", "cost<cheap"]:
        with pytest.raises(PolicyError):
            parse_expr(bad)


def test_globs() -> None:
    assert glob_match("/datasets/**", "/datasets/a/b/c.csv")
    assert glob_match("/datasets/**", "/datasets")
    assert not glob_match("/datasets/**", "/datasets2/x")
    assert glob_match("/d/*.csv", "/d/x.csv") and not glob_match("/d/*.csv", "/d/e/x.csv")
    assert glob_match("/**/*.tmp", "/a/b/c.tmp")


@pytest.mark.parametrize("text, line, words", [
    ("rules:\n  - name: a\n    match: /x/**\n    copies: two\n", 4, "copies"),
    ("rules:\n  - name: a\n    match: /x/**\n    where: cloud=aws |\n", 4, "ends too early"),
    ("rules:\n  - name: a\n    match: x/**\n", 3, "absolute"),
    ("rules:\n  - name: a\n    match: /x\n    colour: red\n", 4, "unknown rule key"),
    ("rules:\n  - name: a\n    match: /x\n  - name: a\n    match: /y\n", 4, "duplicate"),
    ("rules:\n  - name: a\n    match: /x\n    lifecycle: {after: soon, where: tier=cold}\n", 4, "duration"),
    ("rules: [\n", 2, "YAML"),
    ("policy: 1\n", 1, "unknown key"),
])
def test_policy_errors_name_the_line(text: str, line: int, words: str) -> None:
    with pytest.raises(PolicyError, match=rf"p\.yaml:{line}: .*{words}"):
        parse_policy(text, "p.yaml")


def test_policy_apply_is_versioned(tmp_path: Path) -> None:
    vd = world(tmp_path)
    assert load_policy(vd.catalog) is None
    assert apply_policy(vd.catalog, POLICY, "p.yaml") == 1
    assert apply_policy(vd.catalog, POLICY.replace("copies: 2", "copies: 3"), "p.yaml") == 2
    policy = load_policy(vd.catalog)
    assert policy is not None and policy.version == 2 and policy.rules[0].copies == 3
    assert [k for k, _, _ in vd.catalog.list_records("policy-history")] == ["00000001", "00000002"]
    with pytest.raises(InvalidArgument):
        apply_policy(vd.catalog, "rules: []\n")
    assert load_policy(vd.catalog).version == 2  # type: ignore[union-attr]


# -- planner and daemon ------------------------------------------------------------------------
def test_each_rule_kind_is_carried_out(tmp_path: Path) -> None:
    vd = world(tmp_path)
    apply_policy(vd.catalog, POLICY)
    data = {p: os.urandom(50_000 + i) for i, p in enumerate(["/datasets/a.bin", "/datasets/sub/b.bin", "/archive/old.tar",
                                                              "/archive/new.tar", "/scratch/tmp.bin", "/other/free.bin"])}
    for p, d in data.items():
        vd.put(d, p)
    old = vd.entry("/archive/old.tar")
    vd.catalog.update(old.copy(mtime=time.time() - 40 * 86400), old.version)  # 40 days old

    policy = load_policy(vd.catalog)
    assert policy is not None
    actions = list(planner.plan(vd, policy))
    reasons = {a.path: a.reason for a in actions}
    assert "rule 'datasets' (line 2)" in reasons["/datasets/a.bin"]
    assert "lifecycle" in reasons["/archive/old.tar"]
    assert "/scratch/tmp.bin" not in reasons and "/other/free.bin" not in reasons
    new, existing = planner.queue(vd, iter(actions))
    assert new == len(actions) and existing == 0
    assert planner.queue(vd, planner.plan(vd, policy)) == (0, len(actions))  # idempotent

    result = run_once(vd)
    assert result["failed"] == 0
    run_once(vd)  # trims become due once the new copies are verified
    # datasets: two copies on two distinct clouds among aws/azure, the local copy trimmed
    ds = backends_of(vd, "/datasets/a.bin")
    assert len(ds) == 2 and {vd.location_of(b).cloud for b in ds} == {"aws", "azure"}
    assert backends_of(vd, "/archive/old.tar") == ["glacier"]  # moved to the cold tier
    assert backends_of(vd, "/archive/new.tar") == ["aws1"]  # cheapest standard, not local
    assert backends_of(vd, "/scratch/tmp.bin") == ["local"]  # stays local
    assert backends_of(vd, "/other/free.bin") == ["local"]  # no rule: untouched
    for p, d in data.items():
        assert vd.cat(p) == d
    report = fsck(vd, deep=True)
    assert report.problems == []  # trimmed objects were deleted, nothing missing or corrupt
    assert list(planner.plan(vd, policy)) == []  # reality matches the policy
    assert vd.catalog.count_tasks().get("done", 0) >= len(actions)


def test_corrupt_source_is_detected_and_another_copy_used(tmp_path: Path) -> None:
    vd = world(tmp_path)
    apply_policy(vd.catalog, "rules:\n  - match: /**\n    copies: 3\n    where: (cloud=aws & tier=standard) | cloud=local\n")
    data = os.urandom(100_000)
    vd.put(data, "/f.bin")
    run_once(vd)
    assert backends_of(vd, "/f.bin") == ["aws1", "aws2", "local"]
    # flip a byte in one stored replica
    r = next(r for r in vd.entry("/f.bin").replicas if r.backend == "aws1")
    obj = tmp_path / "aws1" / r.key
    raw = bytearray(obj.read_bytes())
    raw[500] ^= 0xFF
    obj.write_bytes(bytes(raw))
    assert vd.cat("/f.bin") == data  # reads fail over to a good copy
    # the scrub finds it; the planner re-replicates; the bad record is trimmed
    d = Daemon(vd, DaemonOptions(once=True, scrub_interval=1, scrub_age=0, retry_base=0.01))
    d.run()
    states = {(r.backend, r.state) for r in vd.entry("/f.bin").replicas}
    assert states == {("aws1", CORRUPT), ("aws2", OK), ("local", OK)}  # the scrub found the flipped byte
    run_once(vd)
    run_once(vd)
    assert backends_of(vd, "/f.bin") == ["aws1", "aws2", "local"]
    assert all(r.state == OK for r in vd.entry("/f.bin").replicas)
    for r in vd.entry("/f.bin").replicas:
        assert (tmp_path / r.backend / r.key).read_bytes() == data


def test_fsck_repair_restores_missing_and_corrupt(tmp_path: Path) -> None:
    vd = world(tmp_path)
    for i in range(3):
        vd.put(f"file {i} ".encode() * 1000, f"/r/{i}.txt")
    apply_policy(vd.catalog, "rules:\n  - match: /**\n    copies: 2\n    where: name=local | name=azure\n")
    run_once(vd)
    e0, e1, e2 = (vd.entry(f"/r/{i}.txt") for i in range(3))
    (tmp_path / "azure" / next(r.key for r in e0.replicas if r.backend == "azure")).unlink()  # missing
    bad = tmp_path / "local" / next(r.key for r in e1.replicas if r.backend == "local")
    bad.write_bytes(b"X" + bad.read_bytes()[1:])  # corrupt, same size
    for r in e2.replicas:  # both copies gone: lost
        (tmp_path / r.backend / r.key).unlink()
    report = fsck(vd, deep=True)
    assert {p.kind for p in report.problems} == {"missing", "corrupt"}
    result = repair(vd, report)
    assert len(result.repaired) == 2 and len(result.lost) == 1 and "/r/2.txt" in result.lost[0]
    assert vd.cat("/r/0.txt") == b"file 0 " * 1000 and vd.cat("/r/1.txt") == b"file 1 " * 1000
    assert backends_of(vd, "/r/0.txt") == ["azure", "local"] and backends_of(vd, "/r/1.txt") == ["azure", "local"]
    assert {r.state for r in vd.entry("/r/2.txt").replicas} == {MISSING}
    after = fsck(vd, deep=True)
    assert {p.path for p in after.problems if p.kind not in ("orphan", "temporary")} == {"/r/2.txt"}


def test_failed_tasks_retry_with_backoff_and_keep_the_error(tmp_path: Path) -> None:
    vd = world(tmp_path)
    apply_policy(vd.catalog, "rules:\n  - match: /**\n    copies: 2\n    where: name=local | name=azure\n")
    vd.put(b"x" * 1000, "/a.bin")
    shutil.rmtree(tmp_path / "azure")
    (tmp_path / "azure").write_text("not a folder any more")  # the backend is broken
    vd.forget_backend("azure")
    run_once(vd, max_attempts=2)
    tasks = vd.catalog.list_tasks()
    assert tasks and tasks[0].last_error
    run_once(vd, max_attempts=2)
    time.sleep(0.1)
    run_once(vd, max_attempts=2)
    failed = vd.catalog.list_tasks("failed")
    assert failed and "azure" in (failed[0].last_error or "") and failed[0].attempts == 2
    assert backends_of(vd, "/a.bin") == ["local"]  # nothing committed


def test_a_changed_file_discards_the_stale_copy(tmp_path: Path) -> None:
    vd = world(tmp_path)
    apply_policy(vd.catalog, "rules:\n  - match: /**\n    copies: 2\n    where: name=local | name=aws1\n")
    vd.put(b"old" * 1000, "/c.bin")
    planner.queue(vd, planner.plan(vd, load_policy(vd.catalog)))  # type: ignore[arg-type]
    vd.put(b"new" * 999, "/c.bin", force=True)  # changed before the daemon ran
    run_once(vd)
    run_once(vd)
    entry = vd.entry("/c.bin")
    assert vd.cat("/c.bin") == b"new" * 999
    for r in entry.replicas:
        assert (tmp_path / r.backend / r.key).read_bytes() == b"new" * 999


def test_read_failover_with_a_backend_down(tmp_path: Path) -> None:
    vd = world(tmp_path)
    apply_policy(vd.catalog, "rules:\n  - match: /**\n    copies: 2\n    where: name=local | name=aws1\n")
    files = {f"/d/{i}.bin": os.urandom(20_000) for i in range(5)}
    for p, d in files.items():
        vd.put(d, p)
    run_once(vd)
    os.rename(tmp_path / "local", tmp_path / "local-offline")  # the default backend is down
    for p, d in files.items():
        assert vd.cat(p) == d


# -- several daemon processes ------------------------------------------------------------------
@pytest.mark.parametrize("engine", ["sqlite", "mongo"])
def test_three_daemons_share_the_queue_and_survive_kill_9(cli: CLI, tmp_path: Path, engine: str,
                                                          request: pytest.FixtureRequest) -> None:
    catalog_url = f"sqlite:///{tmp_path / 'catalog.db'}" if engine == "sqlite" else request.getfixturevalue("mongo_catalog_url")
    vd = world(tmp_path, catalog_url)
    config = tmp_path / "config.yaml"
    config.write_text(f"catalog: {catalog_url}\ndefault_backend: local\n")
    files = {f"/datasets/{i:03}.bin": os.urandom(200_000 + i) for i in range(60)}
    for p, d in files.items():
        vd.put(d, p)
    apply_policy(vd.catalog, "rules:\n  - match: /datasets/**\n    copies: 3\n    where: name=local | name=aws1 | name=azure\n")
    journal = tmp_path / "journal.txt"
    # node0 starts alone, so it surely holds work when it is killed (with all three started at
    # once, the other two could empty the queue before node0's first claim)
    procs = start_daemons(cli.env, config, 1, journal)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(t.lease_owner == "node0" for t in vd.catalog.list_tasks("running")):
            time.sleep(0.01)
        procs += start_daemons(cli.env, config, 2, journal, first=1)
        # kill it with SIGKILL while it holds work; its tasks come back after the lease
        procs[0].send_signal(signal.SIGKILL)
        held = {t.id for t in vd.catalog.list_tasks("running") if t.lease_owner == "node0"}
        wait_until_in_place(vd)
    finally:
        for p in procs[1:]:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(60)
    for p, d in files.items():
        assert backends_of(vd, p) == ["aws1", "azure", "local"], p
        assert vd.cat(p) == d
        for r in vd.entry(p).replicas:
            assert (tmp_path / r.backend / r.key).read_bytes() == d
    done = [line.split() for line in journal.read_text().splitlines()]
    ids = [d[0] for d in done]
    assert len(ids) == len(set(ids)), "a task was completed twice"
    assert held, "node0 was killed while holding no task"
    by = {int(d[0]): d[2] for d in done}
    for task_id in held:  # what the killed daemon held, another one finished after the lease expired
        assert by.get(task_id) not in (None, "node0"), (task_id, by.get(task_id))
        assert vd.catalog.list_tasks() and all(t.state == "done" for t in vd.catalog.list_tasks() if t.id == task_id)
    assert {k for k, _, _ in vd.catalog.list_records("nodes")} == {"node0", "node1", "node2"}
    report = fsck(vd, deep=True)
    assert {p.kind for p in report.problems} <= {"orphan", "temporary"}  # at most the killed daemon's partial copies
    fsck(vd, gc=True, min_age=0)  # and those are all vdir's own: fsck cleans them
    assert fsck(vd, deep=True).problems == []
    vd.close()


def test_policy_file_change_is_picked_up_by_a_running_daemon(cli: CLI, tmp_path: Path) -> None:
    vd = world(tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text(f"catalog: sqlite:///{tmp_path / 'catalog.db'}\ndefault_backend: local\n")
    vd.put(b"payload" * 100, "/p/x.bin")
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text("rules:\n  - match: /p/**\n    copies: 1\n    where: name=local\n")
    proc = start_daemons(cli.env, config, 1, tmp_path / "j.txt", "--policy-file", str(policy_file))[0]
    try:
        deadline = time.monotonic() + 30
        while load_policy(vd.catalog) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert backends_of(vd, "/p/x.bin") == ["local"]
        policy_file.write_text("rules:\n  - match: /p/**\n    copies: 2\n    where: name=local | name=aws2\n")
        deadline = time.monotonic() + 60
        while backends_of(vd, "/p/x.bin") != ["aws2", "local"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert backends_of(vd, "/p/x.bin") == ["aws2", "local"]
        assert load_policy(vd.catalog).version == 2  # type: ignore[union-attr]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


# -- the CLI -----------------------------------------------------------------------------------
def test_cli_policy_plan_run_status(cli: CLI, tmp_path: Path) -> None:
    cli.run("init", check=True)
    for name in ("aws", "azure"):
        (tmp_path / name).mkdir()
        cli.run("backend", "add", name, f"file://{tmp_path / name}", "--cloud", name, "--region", "r1", check=True)
    (tmp_path / "data.bin").write_bytes(os.urandom(10_000))
    cli.run("put", str(tmp_path / "data.bin"), "/datasets/", check=True)
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - match: /datasets/**\n    copies: 2\n    where: cloud=aws |\n")
    proc = cli.run("policy", "check", str(bad))
    assert proc.returncode != 0 and b"bad.yaml:4:" in proc.stderr and b"Traceback" not in proc.stderr
    good = tmp_path / "good.yaml"
    good.write_text("rules:\n  - name: ds\n    match: /datasets/**\n    copies: 2\n    where: cloud=aws | cloud=azure\n    spread: cloud\n")
    assert b"valid" in cli.run("policy", "check", str(good), check=True).stderr + cli.run("policy", "check", str(good)).stdout
    cli.run("policy", "apply", str(good), check=True)
    assert b"copies: 2" in cli.run("policy", "show", check=True).stdout
    dry = cli.run("placement", "plan", "--dry-run", check=True).stdout.decode()
    assert "replicate /datasets/data.bin" in dry and "rule 'ds'" in dry
    assert cli.run("placement", "status", "--json", check=True).stdout.count(b'"pending": 0') == 1
    cli.run("placement", "plan", check=True)
    cli.run("placement", "run", "--once", check=True)
    cli.run("placement", "run", "--once", check=True)
    import json

    status = json.loads(cli.run("placement", "status", "--json", check=True).stdout)
    assert status["tasks"]["failed"] == 0 and status["tasks"]["done"] >= 3
    assert set(status["backends"]) == {"aws", "azure"}  # the local copy was trimmed
    assert b"aws" in cli.run("ls", "-l", "/datasets", check=True).stdout
    assert cli.run("fsck", "--deep").returncode == 0


def test_watch_ingests_settled_files_and_deletions(tmp_path: Path) -> None:
    from vdir.placement.watch import Watcher

    vd = world(tmp_path)
    src = tmp_path / "incoming"
    src.mkdir()
    (src / "first.txt").write_text("already here\n")
    w = Watcher(vd, src, "/in", delete=True, settle=0.3)
    import threading

    t = threading.Thread(target=w.run, kwargs={"duration": 6.0})
    t.start()
    time.sleep(1.0)
    (src / "sub").mkdir()
    with open(src / "sub" / "growing.bin", "wb") as fh:  # written slowly: must not be ingested half-way
        for _ in range(5):
            fh.write(b"x" * 1000)
            fh.flush()
            time.sleep(0.1)
    (src / "first.txt").write_text("changed\n")
    time.sleep(1.5)
    (src / "first.txt").unlink()
    t.join()
    assert vd.cat("/in/sub/growing.bin") == b"x" * 5000
    assert not vd.exists("/in/first.txt")
    assert w.ingested >= 2 and w.removed == 1


def test_connect_api_reads_through_failover(cli: CLI, tmp_path: Path) -> None:
    # the same failover through vdir.connect() (the Python API users call)
    cli.run("init", check=True)
    (tmp_path / "b2").mkdir()
    cli.run("backend", "add", "b2", f"file://{tmp_path / 'b2'}", check=True)
    (tmp_path / "f.txt").write_bytes(b"two copies\n")
    cli.run("put", str(tmp_path / "f.txt"), "/f.txt", check=True)
    policy = tmp_path / "p.yaml"
    policy.write_text("rules:\n  - match: /**\n    copies: 2\n")
    cli.run("policy", "apply", str(policy), check=True)
    cli.run("placement", "run", "--once", check=True)
    vd = vdir.connect(str(cli.home / ".config" / "vdir" / "config.yaml"))
    try:
        assert len(vd.entry("/f.txt").replicas) == 2
        shutil.rmtree(tmp_path / "b2")
        assert vd.cat("/f.txt") == b"two copies\n"
    finally:
        vd.close()
    assert cli.run("cat", "/f.txt", check=True).stdout == b"two copies\n"
