"""Mount a vdir for a test: ``vdir mount --foreground`` in its own process group, ready within a
deadline, and always unmounted (and the process reaped) when the block ends, whatever happened."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import vdir
from tests.servers.vdirs import CLI
from vdir.core import VDir
from vdir.fuse.mount import FSTYPE, is_mounted


def fuse_usable() -> str | None:
    """Why real mounts cannot run here, or ``None`` when they can."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing"
    if os.geteuid() != 0 and not shutil.which("fusermount3") and not shutil.which("fusermount"):
        return "no fusermount and not root"
    try:
        from vdir.fuse.mount import load_fuse

        load_fuse()
    except OSError as exc:
        return str(exc)
    return None


def wait_for(check: Callable[[], object], timeout: float = 10.0, what: str = "condition", interval: float = 0.02) -> None:
    """Poll ``check`` until it is truthy; ``AssertionError`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not true after {timeout}s")
        time.sleep(interval)


@dataclass
class Mount:
    path: Path
    proc: subprocess.Popen[bytes]
    log: Path
    cache_dir: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def force_unmount(mountpoint: Path, proc: subprocess.Popen[bytes] | None, timeout: float = 30.0) -> None:
    """Unmount (lazily if it is busy or its process is dead) and reap the mount process."""
    for args in (["-u"], ["-uz"]):
        if not is_mounted(mountpoint):
            break
        for tool in ("fusermount3", "fusermount"):
            if shutil.which(tool):
                subprocess.run([tool, *args, str(mountpoint)], capture_output=True, timeout=timeout)
                break
    if proc is not None:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout)


@contextlib.contextmanager
def mounted(cli: CLI, mountpoint: Path, *args: str, cache_dir: Path | None = None, timeout: float = 30.0) -> Iterator[Mount]:
    """``vdir mount MOUNTPOINT --foreground`` for the duration of the block."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    cache_dir = cache_dir or mountpoint.parent / f"{mountpoint.name}.cache"
    log = mountpoint.parent / f"{mountpoint.name}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "mount", str(mountpoint), "--foreground", "--cache-dir", str(cache_dir), *args],
            env=cli.env, cwd=cli.home, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    mount = Mount(mountpoint, proc, log, cache_dir)
    try:
        deadline = time.monotonic() + timeout
        while not is_mounted(mountpoint, FSTYPE):
            if proc.poll() is not None:
                raise RuntimeError(f"vdir mount exited with {proc.returncode}:\n{mount.log_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{mountpoint} not mounted after {timeout}s:\n{mount.log_text()[-3000:]}")
            time.sleep(0.02)
        yield mount
    finally:
        force_unmount(mountpoint, proc)


# -- fixtures shared by the mount test modules (import them there) ---------------------------


@dataclass
class World:
    cli: CLI
    vd: VDir
    tmp: Path


@pytest.fixture
def world(cli: CLI, tmp_path: Path) -> Iterator[World]:
    cli.run("init", check=True)
    vd = vdir.connect(str(cli.home / ".config" / "vdir" / "config.yaml"))
    try:
        yield World(cli, vd, tmp_path)
    finally:
        vd.close()


@pytest.fixture
def mnt(world: World) -> Iterator[Path]:
    with mounted(world.cli, world.tmp / "mnt") as m:
        yield m.path
