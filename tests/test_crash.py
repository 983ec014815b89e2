"""Crash safety: `vdir put` killed with SIGKILL at random moments never leaves the catalog
pointing at missing or wrong bytes; fsck finds the orphans and unfinished uploads, nothing else, and cleans them."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest

import vdir
from tests.servers.vdirs import CLI
from vdir.fsck import fsck


@pytest.mark.slow
def test_sigkill_during_put_leaves_only_orphans(cli: CLI, tmp_path: Path) -> None:
    cli.run("init", check=True)
    src = tmp_path / "many"
    src.mkdir()
    rng = random.Random(42)
    for i in range(300):
        size = rng.choice([0, 10, 4096, 100_000, 1_500_000])
        (src / f"f{i:03}.bin").write_bytes(os.urandom(size))
    # One uninterrupted run says how long a put takes here; the killed runs die at random
    # moments inside that window (a fraction of a measured duration, not a fixed sleep).
    began = time.monotonic()
    cli.run("put", "-r", "--jobs", "4", str(src), "/complete/", check=True)
    duration = time.monotonic() - began
    killed = 0
    for run in range(6):
        proc = cli.popen("put", "-r", "--force", "--jobs", "4", str(src), f"/run{run}/")
        deadline = time.monotonic() + rng.uniform(0.15, 0.85) * duration
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.005)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait(60)
    assert killed >= 3, "put finished before it could be killed; make the data bigger"

    vd = vdir.connect(str(cli.home / ".config" / "vdir" / "config.yaml"))
    try:
        listed = 0
        for info in vd.iter_ls("/", recursive=True):
            if info.type != "file":
                continue
            listed += 1
            data = vd.cat(info.path)  # verified against the recorded hash, or raises
            assert (src / info.name).read_bytes() == data
        assert listed > 0
        report = fsck(vd, deep=True)
        kinds = {p.kind for p in report.problems}
        assert kinds <= {"orphan", "temporary"}, report.problems  # only what vdir wrote, nothing missing or wrong
        proc = cli.run("fsck")
        assert proc.returncode in (0, 1)
        cleaned = fsck(vd, gc=True, min_age=0)  # and fsck can clean all of it
        assert cleaned.deleted_orphans == len(report.problems)
        assert fsck(vd, deep=True).problems == []
    finally:
        vd.close()
