"""Read-verification benchmark: what checking every block costs on sequential and random reads.

    python -m bench.verify [--size-mib 1024] [--random 2000] [--rounds 3] [--warm] [--workdir DIR]

One file of ``--size-mib`` random bytes is written with ``vdir put`` (embedded default: SQLite
catalog, a local-folder backend), then read with the same patterns through:

* ``VDir.open`` with verification (what vdir does: every block checked before it is returned);
* ``VDir.open`` with verification off (``RangedReader(verify=False)``, a switch that exists only
  for this benchmark — the cost of the check is the difference);
* the vdir mount (verified; 4 MiB mount blocks, read-ahead);
* ``rclone mount`` of the backend's folder (``:local:``, ``--vfs-cache-mode off``), the same file;
* the native file, for reference.

Patterns: sequential 1 MiB reads of the whole file; ``--random`` reads of 4 KiB at random
offsets; ``--random``/8 reads of 1 MiB at random offsets (the same seeded offsets for every
target).  Before each pattern the backing file (and the mounted file, whose pages the kernel
also caches) is dropped from the page cache, unless ``--warm`` (then disk speed is out of the
picture and the check's CPU cost shows fully).  Each pattern runs ``--rounds`` times on every
target, the targets taking turns, and the best round is printed.
Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from bench.mount import _drop_cache, _wait
from vdir.fuse.mount import is_mounted

MIB = 1024 * 1024
KIB = 1024

Opener = Callable[[], IO[bytes]]


def sequential(open_: Opener, size: int) -> float:
    """MiB/s reading the whole file in 1 MiB reads."""
    t0 = time.perf_counter()
    n = 0
    with open_() as f:
        while chunk := f.read(MIB):
            n += len(chunk)
    assert n == size, f"read {n} bytes of {size}"
    return size / MIB / (time.perf_counter() - t0)


def scattered(open_: Opener, offsets: list[int], length: int) -> float:
    """Reads per second of ``length`` bytes at each offset (seek + read on one open file)."""
    t0 = time.perf_counter()
    with open_() as f:
        for off in offsets:
            f.seek(off)
            got = f.read(length)
            assert len(got) == length, f"short read at {off}"
    return len(offsets) / (time.perf_counter() - t0)


@contextlib.contextmanager
def setup(work: Path, size: int) -> Iterator[dict[str, tuple[Opener, list[Path]]]]:
    """The targets: name -> (open the file, the files whose page cache holds its bytes)."""
    import vdir
    from vdir.streams import RangedReader

    home = work / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VDIR_") and k != "AWS_CA_BUNDLE"}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_DATA_HOME=str(home / ".local" / "share"),
               PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    subprocess.run([sys.executable, "-m", "cli", "init"], env=env, check=True, capture_output=True)
    objects = home / ".local" / "share" / "vdir" / "objects"
    src = work / "big.src"
    with open(src, "wb") as f:
        for _ in range(size // MIB):
            f.write(os.urandom(MIB))
    subprocess.run([sys.executable, "-m", "cli", "put", str(src), "/big.bin"], env=env, check=True, capture_output=True)
    src.unlink()
    backing = objects / "big.bin"
    assert backing.stat().st_size == size
    vd = vdir.connect(str(home / ".config" / "vdir" / "config.yaml"))
    vmnt, rmnt = work / "vdir-mnt", work / "rclone-mnt"
    vmnt.mkdir()
    rmnt.mkdir()
    procs: list[tuple[Path, subprocess.Popen[bytes]]] = []
    try:
        with open(work / "mounts.log", "ab") as log:
            procs.append((vmnt, subprocess.Popen(
                [sys.executable, "-m", "cli", "mount", str(vmnt), "--foreground", "--cache-dir", str(work / "vdir-cache")],
                env=env, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True,
            )))
            procs.append((rmnt, subprocess.Popen(
                ["rclone", "mount", f":local:{objects}", str(rmnt), "--vfs-cache-mode", "off", "--read-only"],
                env=env, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True,
            )))
        for mnt, _ in procs:
            _wait(lambda mnt=mnt: is_mounted(mnt), 60, f"mount {mnt}")  # type: ignore[misc]
        entry = vd.entry("/big.bin")

        def unverified() -> IO[bytes]:
            return io.BufferedReader(RangedReader(vd, "/big.bin", entry, verify=False), buffer_size=MIB)

        openers: dict[str, tuple[Opener, list[Path]]] = {
            "vdir open (verified)": (lambda: vd.open("/big.bin"), [backing]),
            "vdir open (unverified)": (unverified, [backing]),
            "vdir mount (verified)": (lambda: open(vmnt / "big.bin", "rb", buffering=0), [backing, vmnt / "big.bin"]),
            "rclone mount": (lambda: open(rmnt / "big.bin", "rb", buffering=0), [backing, rmnt / "big.bin"]),
            "native file": (lambda: open(backing, "rb", buffering=0), [backing]),
        }
        yield openers
    finally:
        vd.close()
        for mnt, proc in procs:
            subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
            if is_mounted(mnt):
                subprocess.run(["fusermount3", "-uz", str(mnt)], capture_output=True)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.verify", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="size of the file (MiB)")
    parser.add_argument("--random", type=int, default=2000, help="number of random 4 KiB reads (1 MiB reads: an eighth)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each pattern on each target; the best is printed")
    parser.add_argument("--warm", action="store_true", help="leave the file in the page cache between patterns")
    parser.add_argument("--workdir", default=None, help="where to put everything (default: a temp dir, removed after)")
    args = parser.parse_args(argv)
    if not shutil.which("rclone"):
        print("rclone is not installed (apt install rclone)", file=sys.stderr)
        return 2
    work = Path(args.workdir or tempfile.mkdtemp(prefix="vdir-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    size = args.size_mib * MIB
    rng = random.Random(42)
    small = [rng.randrange(0, size - 4 * KIB) for _ in range(args.random)]
    large = [rng.randrange(0, size - MIB) for _ in range(max(1, args.random // 8))]
    patterns: list[tuple[str, Callable[[Opener], float]]] = [
        ("sequential 1 MiB reads, MiB/s", lambda o: sequential(o, size)),
        ("random 4 KiB reads, reads/s", lambda o: scattered(o, small, 4 * KIB)),
        ("random 1 MiB reads, reads/s", lambda o: scattered(o, large, MIB)),
    ]
    results: dict[str, dict[str, float]] = {}
    try:
        with setup(work, size) as openers:
            results = {name: {} for name in openers}
            for pattern, run in patterns:
                for _ in range(args.rounds):  # targets interleaved, best round kept: the machine is shared
                    for name, (open_, cached) in openers.items():
                        if not args.warm:
                            for path in cached:
                                _drop_cache(path)
                        results[name][pattern] = max(results[name].get(pattern, 0.0), run(open_))
                print(f"{pattern}: done", file=sys.stderr, flush=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    cache = "page cache warm" if args.warm else "files dropped from the page cache before each pattern"
    print(f"\nread verification: {args.size_mib} MiB file on a local-folder backend; {cache}; best of {args.rounds}\n")
    names = list(results)
    print(f"{'pattern':32}" + "".join(f"{n:>24}" for n in names) + f"{'verified/unverified':>22}")
    for pattern, _ in patterns:
        row = [results[n][pattern] for n in names]
        ratio = results["vdir open (verified)"][pattern] / results["vdir open (unverified)"][pattern]
        print(f"{pattern:32}" + "".join(f"{v:24.0f}" for v in row) + f"{ratio:21.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
