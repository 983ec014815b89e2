"""Mount benchmark: vdir mount beside ``rclone mount`` of a local folder and the native disk.

    python -m bench.mount [--size-mib 1024] [--files 10000] [--workdir DIR]

Measures, in one run and on the same disk: sequential write and read of one large file (1 MiB
requests), then create / stat / ``ls -l`` of many small files.  vdir uses the embedded default
(SQLite catalog, a local-folder backend); rclone mounts a ``:local:`` remote with
``--vfs-cache-mode writes``.  Reads and the stat / ``ls -l`` phases start from a fresh mount
and with the backing files dropped from the page cache, so they measure the filesystem, not the
kernel's caches.  Writes are timed until ``close`` returns (for vdir that includes the upload
and the catalog commit); the time until the bytes are in rclone's backing folder is printed too.
A small-file workload follows on each: untar a tarball of this repository's sources (made at
run time), ``git status`` in a git repository made of it, ``find -type f | xargs stat`` (both
from a fresh mount).  vdir runs three times: as mounted by default, with ``--no-xattrs``
(metadata phases only) and with ``--write-back`` (``close`` returns once the file is in the
local journal, as rclone's does once it is in its cache; uploads start 5 s after the last close,
as rclone's ``--vfs-write-back`` default).  Before each remount the write-back mount is given
time to store everything pending, so no phase is timed while it uploads.
Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from vdir.fuse.mount import is_mounted

MIB = 1024 * 1024
NOX = "vdir --no-xattrs"
"""A second vdir mount, without extended attributes: the metadata phases only."""
WB = "vdir --write-back"
"""A third vdir mount whose close returns once the file is in the local journal."""


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not ready after {timeout}s")
        time.sleep(0.02)


def _drop_cache(path: Path) -> None:
    """Evict one file from the page cache (no global drop_caches needed)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


class Target:
    """One filesystem under test: a directory, and how to (re)mount it."""

    def __init__(self, name: str, path: Path, start: Callable[[], subprocess.Popen[bytes] | None], backing: Callable[[str], Path],
                 stored: Callable[[], bool] = lambda: True) -> None:
        self.name = name
        self.path = path
        self._start = start
        self.backing = backing
        self.stored = stored
        """Everything written is stored (the write-back has nothing pending)."""
        self.proc: subprocess.Popen[bytes] | None = None

    def mount(self) -> None:
        self.proc = self._start()
        if self.proc is not None:
            _wait(lambda: is_mounted(self.path), 60, f"{self.name} mount")

    def unmount(self) -> None:
        if self.proc is None:
            return
        subprocess.run(["fusermount3", "-u", str(self.path)], capture_output=True)
        if is_mounted(self.path):
            subprocess.run(["fusermount3", "-uz", str(self.path)], capture_output=True)
        try:
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
        self.proc = None

    def remount(self) -> None:
        # a write-back mount would leave what is pending to the next mount, whose phases would
        # then be timed while it uploads: wait until everything is stored
        _wait(self.stored, 600, f"{self.name}: pending uploads")
        self.unmount()
        self.mount()


def write_big(t: Target, size: int, block: bytes) -> tuple[float, float]:
    """(seconds until close returned, seconds until the bytes were in the backing store)."""
    os.sync()
    t0 = time.perf_counter()
    fd = os.open(t.path / "big.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    for _ in range(size // MIB):
        os.write(fd, block)
    os.close(fd)
    closed = time.perf_counter() - t0

    def stored() -> bool:
        target = t.backing("big.bin")
        return target.exists() and target.stat().st_size == size and not _partial(target)

    _wait(stored, 600, "upload")
    return closed, time.perf_counter() - t0


def _object(objects: Path, name: str) -> Path:
    """The local backend's object for ``name``: the name itself, or a fresh ``name.~xxxxxxxx``
    (what vdir picks when the first key may be taken, e.g. for a streamed upload)."""
    found = sorted(objects.glob(f"{name}.~*")) if objects.is_dir() else []
    return found[-1] if found and not (objects / name).exists() else objects / name


def _partial(path: Path) -> bool:
    return any(p.name.startswith(path.name) and p.name != path.name for p in path.parent.iterdir())


def read_big(t: Target, size: int) -> float:
    t.remount()
    _drop_cache(t.backing("big.bin"))
    t0 = time.perf_counter()
    fd = os.open(t.path / "big.bin", os.O_RDONLY)
    n = 0
    while chunk := os.read(fd, MIB):
        n += len(chunk)
    os.close(fd)
    assert n == size, f"{t.name}: read {n} bytes of {size}"
    return time.perf_counter() - t0


def metadata(t: Target, files: int) -> tuple[float, float, float]:
    """(create, stat, ls -l) seconds for ``files`` small files in one directory."""
    d = t.path / ("meta-" + "".join(c for c in t.name if c.isalnum()))  # the two vdir mounts share one catalog
    d.mkdir()
    payload = b"x" * 100
    t0 = time.perf_counter()
    for i in range(files):
        fd = os.open(d / f"f{i:06}.txt", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, payload)
        os.close(fd)
    create = time.perf_counter() - t0
    t.remount()
    t0 = time.perf_counter()
    for i in range(files):
        os.stat(d / f"f{i:06}.txt")
    stat = time.perf_counter() - t0
    t.remount()
    t0 = time.perf_counter()
    out = subprocess.run(["ls", "-l", str(d)], capture_output=True, check=True).stdout
    ls = time.perf_counter() - t0
    lines = out.count(b"\n")
    assert lines == files + 1, f"{t.name}: ls -l listed {lines} lines"
    return create, stat, ls


def source_tarball(work: Path) -> Path:
    """A tarball of this repository's own source files (made now, nothing downloaded)."""
    repo = Path(__file__).resolve().parents[1]
    tar = work / "source.tar"
    members = [d for d in ("vdir", "cli", "tests", "docs", "bench") if (repo / d).is_dir()]
    subprocess.run(["tar", "-cf", str(tar), "--exclude=__pycache__", "-C", str(repo), *members], check=True)
    return tar


def small_files(t: Target, tar: Path) -> tuple[float, float, float, int]:
    """(untar, git status, find -type f | xargs stat) seconds for a source tree; file count."""
    d = t.path / ("src-" + "".join(c for c in t.name if c.isalnum()))
    d.mkdir()
    t0 = time.perf_counter()
    subprocess.run(["tar", "-xf", str(tar), "-C", str(d)], check=True)
    untar = time.perf_counter() - t0
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.invalid", "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "init", "-q"], cwd=d, check=True)
    subprocess.run([*git, "add", "-A"], cwd=d, check=True)
    subprocess.run([*git, "commit", "-qm", "bench"], cwd=d, check=True)
    t.remount()
    t0 = time.perf_counter()
    subprocess.run(["git", "status", "--porcelain"], cwd=d, check=True, capture_output=True)
    status = time.perf_counter() - t0
    t.remount()
    t0 = time.perf_counter()
    found = subprocess.run("find . -type f -print0 | xargs -0 stat --format=%s | wc -l", shell=True, cwd=d, check=True,
                           capture_output=True).stdout
    stat = time.perf_counter() - t0
    return untar, status, stat, int(found.strip())


def rclone_mount(src: Path, mnt: Path, cache_dir: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``rclone mount`` of the local folder ``src`` on ``mnt`` as the benchmarks compare against:
    ``--vfs-cache-mode writes`` (a file written is kept in ``cache_dir``, uploaded after close)."""
    return subprocess.Popen(
        ["rclone", "mount", f":local:{src}", str(mnt), "--vfs-cache-mode", "writes", "--cache-dir", str(cache_dir)],
        env=env, stdout=subprocess.DEVNULL, stderr=open(log, "ab"), start_new_session=True,  # noqa: SIM115
    )


@contextlib.contextmanager
def setup(work: Path) -> Iterator[list[Target]]:
    home = work / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VDIR_") and k != "AWS_CA_BUNDLE"}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_DATA_HOME=str(home / ".local" / "share"),
               PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    subprocess.run([sys.executable, "-m", "cli", "init"], env=env, check=True, capture_output=True)
    objects = home / ".local" / "share" / "vdir" / "objects"
    native = work / "native"
    native.mkdir()
    rsrc, rmnt, vmnt, nmnt = work / "rclone-src", work / "rclone-mnt", work / "vdir-mnt", work / "vdir-nox-mnt"
    wmnt = work / "vdir-wb-mnt"
    for d in (rsrc, rmnt, vmnt, nmnt, wmnt):
        d.mkdir()

    def rclone() -> subprocess.Popen[bytes]:
        return rclone_mount(rsrc, rmnt, work / "rclone-cache", env, work / "rclone.log")

    def vdir(mnt: Path, *extra: str) -> Callable[[], subprocess.Popen[bytes]]:
        return lambda: subprocess.Popen(
            [sys.executable, "-m", "cli", "mount", str(mnt), "--foreground", "--cache-dir", str(work / f"{mnt.name}-cache"),
             *extra],
            env=env, stdout=subprocess.DEVNULL, stderr=open(work / "vdir.log", "ab"), start_new_session=True,  # noqa: SIM115
        )

    targets = [
        Target("native", native, lambda: None, lambda name: native / name),
        Target("rclone", rmnt, rclone, lambda name: rsrc / name),
        Target("vdir", vmnt, vdir(vmnt), lambda name: _object(objects, name)),
        Target(NOX, nmnt, vdir(nmnt, "--no-xattrs"), lambda name: _object(objects, name)),
        Target(WB, wmnt, vdir(wmnt, "--write-back"), lambda name: _object(objects, name),
               lambda: not any((work / f"{wmnt.name}-cache" / "pending").glob("*.json"))),
    ]
    try:
        for t in targets:
            t.mount()
        yield targets
    finally:
        for t in targets:
            with contextlib.suppress(Exception):
                t.unmount()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mount", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="size of the large file (MiB)")
    parser.add_argument("--files", type=int, default=10_000, help="number of small files")
    parser.add_argument("--workdir", default=None, help="where to put everything (default: a temp dir, removed after)")
    args = parser.parse_args(argv)
    if not shutil.which("rclone"):
        print("rclone is not installed (apt install rclone)", file=sys.stderr)
        return 2
    work = Path(args.workdir or tempfile.mkdtemp(prefix="vdir-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    size = args.size_mib * MIB
    block = os.urandom(MIB)
    results: dict[str, dict[str, float]] = {}
    try:
        with setup(work) as targets:
            tar = source_tarball(work)
            for t in targets:
                results[t.name] = {}
                if t.name != NOX:
                    closed, stored = write_big(t, size, block)
                    read = read_big(t, size)
                    results[t.name] = {
                        "write MiB/s (until close)": args.size_mib / closed,
                        "write MiB/s (until stored)": args.size_mib / stored,
                        "read MiB/s": args.size_mib / read,
                    }
                create, st, ls = metadata(t, args.files)
                results[t.name].update({
                    "create files/s": args.files / create,
                    "stat files/s": args.files / st,
                    "ls -l files/s": args.files / ls,
                })
                if t.name != NOX:
                    untar, status, st, n = small_files(t, tar)
                    results[t.name].update({
                        f"untar ({n} files) files/s": n / untar,
                        "git status files/s": n / status,
                        "find|xargs stat files/s": n / st,
                    })
                print(f"{t.name}: done", file=sys.stderr, flush=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nvdir mount vs rclone mount (--vfs-cache-mode writes, :local:) vs native disk; "
          f"{args.size_mib} MiB file, {args.files} small files\n")
    print(f"{'metric':28} {'native':>10} {'rclone':>10} {'vdir':>10} {'vdir/rclone':>12} {'vdir/native':>12}")
    for metric in results["vdir"]:
        nat, r, v = (results[k][metric] for k in ("native", "rclone", "vdir"))
        print(f"{metric:28} {nat:10.0f} {r:10.0f} {v:10.0f} {v / r:11.2f}x {v / nat:11.2f}x")
    for other, title in ((NOX, "with --no-xattrs (no extended attributes; the kernel stops asking for them, as with rclone)"),
                         (WB, "with --write-back (close returns once the file is in the local journal; fsync waits)")):
        print(f"\n{title}:")
        for metric, v in results[other].items():
            r = results["rclone"][metric]
            print(f"{metric:28} {'':10} {r:10.0f} {v:10.0f} {v / r:11.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
