"""Helpers shared by the placement tests (folder backends and real servers): run the daemon
once in-process, start daemon processes, wait until reality matches the policy."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from vdir.catalog.base import OK
from vdir.core import VDir
from vdir.placement import planner
from vdir.placement.daemon import Daemon, DaemonOptions
from vdir.placement.policy import load_policy


def run_once(vd: VDir, **opts: object) -> dict[str, int]:
    return Daemon(vd, DaemonOptions(once=True, workers=2, retry_base=0.01, **opts)).run()  # type: ignore[arg-type]


def backends_of(vd: VDir, path: str) -> list[str]:
    return sorted(r.backend for r in vd.entry(path).replicas if r.state == OK)


def start_daemons(cli_env: dict[str, str], config: Path, n: int, journal: Path, *extra: str,
                  first: int = 0) -> list[subprocess.Popen[bytes]]:
    """``n`` daemon processes (nodes node{first}..) logging beside the journal (a file, not a
    pipe nobody reads: a chatty daemon would block on a full pipe)."""
    procs = []
    for i in range(first, first + n):
        with open(journal.with_name(f"{journal.stem}-node{i}.log"), "ab") as log:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "cli", "--config", str(config), "placement", "run", "--workers", "2", "--lease", "3",
                 "--plan-interval", "0.5", "--retry-base", "0.1", "--node", f"node{i}", "--journal", str(journal), *extra],
                env=cli_env, stdout=log, stderr=subprocess.STDOUT))
    return procs


def wait_until_in_place(vd: VDir, timeout: float = 120) -> None:
    policy = load_policy(vd.catalog)
    assert policy is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not list(planner.plan(vd, policy)) and not vd.catalog.count_tasks().get("running"):
            return
        time.sleep(0.3)
    raise AssertionError(f"not in place after {timeout}s: {[a.describe() for a in planner.plan(vd, policy)][:5]}")
