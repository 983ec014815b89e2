"""Sync benchmark: ``vdir sync`` beside ``rclone sync`` on the same tree, same server, same run.

    .venv/bin/python -m bench.sync [--files 10000] [--changed 0.01] [--file-kib 4] [--repeat 3] [--targets local,s3]

Writes a local tree of ``--files`` files (``--file-kib`` KiB each, 100 per directory), then,
for each target:

* ``local``: vdir's local-folder backend (SQLite catalog) beside ``rclone sync`` into a plain
  local folder;
* ``s3``: a SeaweedFS server of its own (``weed mini``, as in :mod:`bench.transfer`), vdir's S3
  backend beside ``rclone sync`` into a prefix of the same bucket (rclone configured through
  ``RCLONE_CONFIG_*`` variables, the machine's CA variables unset).

Both tools first get the whole tree (not timed).  Then, ``--repeat`` times, ``--changed`` of the
files (1%) get new content and a new modification time, and both ``vdir sync TREE vdir:/tree``
and ``rclone sync TREE DEST`` are timed as whole commands (process start included), in
alternating order; the best time of each is kept.  Both use 8 transfers (``-j 8``;
``--transfers 8 --checkers 8``).  rclone runs with its defaults (size + modification time,
which on S3 it keeps in object metadata) and, for reference, with ``--checksum`` (S3: the MD5
the listing returns).  After each run the changed files are checked on both sides.  The ratio
is rclone's time / vdir's time (> 1: vdir is faster), against the faster of the two rclone
runs.  Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.transfer import rclone_env  # noqa: E402
from tests.servers.s3 import S3Server, seaweedfs  # noqa: E402

PER_DIR = 100


def make_tree(root: Path, files: int, kib: int) -> list[Path]:
    out = []
    for i in range(files):
        p = root / f"d{i // PER_DIR:04d}" / f"f{i:06d}.bin"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(kib * 1024))
        out.append(p)
    return out


def change(paths: list[Path], fraction: float, rng: random.Random) -> list[Path]:
    """New content (and so a new modification time) for ``fraction`` of the files."""
    picked = rng.sample(paths, max(1, int(len(paths) * fraction)))
    later = time.time() + 1
    for p in picked:
        p.write_bytes(os.urandom(p.stat().st_size))
        os.utime(p, (later, later))
    return picked


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class Vdir:
    """The ``vdir`` command in a private world (its own config, catalog and data dirs)."""

    def __init__(self, home: Path, extra_env: dict[str, str]) -> None:
        home.mkdir(parents=True)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("VDIR_")}
        self.env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / "config"), XDG_DATA_HOME=str(home / "data"),
                        PYTHONPATH=str(ROOT), **extra_env)

    def run(self, *args: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "cli", *args], env=self.env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"bench: vdir {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc.stdout


def rclone_cmd(env: dict[str, str], *args: str) -> None:
    proc = subprocess.run(["rclone", "sync", "--transfers", "8", "--checkers", "8", *args], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"bench: rclone sync {' '.join(args)} failed: {proc.stderr.strip()}")


def bench_target(name: str, tree: Path, paths: list[Path], work: Path, repeat: int, fraction: float,
                 rng: random.Random, s3: S3Server | None) -> dict[str, float]:
    vd_env: dict[str, str] = {}
    if s3 is not None:
        vd_env = {"AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key}
    vd = Vdir(work / f"vdir-{name}", vd_env)
    vd.run("init")
    backend: list[str] = []
    if s3 is not None:
        vd.run("backend", "add", "s3", f"s3://{s3.bucket}/vdir", "--endpoint", s3.endpoint, "--region", "us-east-1")
        backend = ["--backend", "s3"]
        env = rclone_env(s3, work)
        dest = f"bench:{s3.bucket}/rclone"
    else:
        env = {k: v for k, v in os.environ.items()}
        env["RCLONE_CONFIG"] = str(work / "rclone.conf")
        Path(env["RCLONE_CONFIG"]).write_text("")
        dest = str(work / f"rclone-{name}")
    start = time.perf_counter()
    vd.run("sync", "-j", "8", *backend, str(tree), "vdir:/tree")
    first_vdir = time.perf_counter() - start
    first_rclone = timed(lambda: rclone_cmd(env, str(tree), dest))
    print(f"  [{name}] initial full sync: vdir {first_vdir:.1f} s, rclone {first_rclone:.1f} s (not compared)")
    best = {"vdir": float("inf"), "rclone": float("inf"), "rclone --checksum": float("inf")}
    runners: dict[str, Callable[[], object]] = {
        "vdir": lambda: vd.run("sync", "-j", "8", *backend, str(tree), "vdir:/tree"),
        "rclone": lambda: rclone_cmd(env, str(tree), dest),
        "rclone --checksum": lambda: rclone_cmd(env, "--checksum", str(tree), dest),
    }
    for rep in range(repeat):
        order = list(runners.items()) if rep % 2 == 0 else list(reversed(runners.items()))
        for who, run in order:
            changed = change(paths, fraction, rng)
            took = timed(run)
            best[who] = min(best[who], took)
            check(name, who, tree, changed, vd, dest, env)
            # the other tool catches up (untimed), so each timed run sees exactly the fresh 1%
            (runners["rclone"] if who == "vdir" else runners["vdir"])()
    return best


def check(name: str, who: str, tree: Path, changed: list[Path], vd: Vdir, dest: str, env: dict[str, str]) -> None:
    """The changed files arrived (a benchmark of wrong answers measures nothing)."""
    for p in changed[:: max(1, len(changed) // 5)]:
        rel = p.relative_to(tree).as_posix()
        if who == "vdir":
            got = subprocess.run([sys.executable, "-m", "cli", "cat", f"/tree/{rel}"], env=vd.env, capture_output=True).stdout
        else:
            got = subprocess.run(["rclone", "cat", f"{dest}/{rel}"], env=env, capture_output=True).stdout
        if got != p.read_bytes():
            raise SystemExit(f"bench: [{name}] {who} did not send {rel}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--changed", type=float, default=0.01, help="fraction of the files changed before each timed sync")
    parser.add_argument("--file-kib", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each; the best is kept")
    parser.add_argument("--targets", default="local,s3", help="comma-separated: local, s3")
    parser.add_argument("--workdir", type=Path, default=None, help="where data and servers live (default: a temp dir)")
    args = parser.parse_args()
    if not shutil.which("rclone"):
        raise SystemExit("bench: rclone is not installed (apt-get install rclone)")
    work = Path(tempfile.mkdtemp(prefix="vdir-bench-sync-", dir=args.workdir))
    rng = random.Random(11)
    results: dict[str, dict[str, float]] = {}
    try:
        tree = work / "tree"
        paths = make_tree(tree, args.files, args.file_kib)
        print(f"tree: {args.files} files x {args.file_kib} KiB in {args.files // PER_DIR} directories; "
              f"{args.changed:.0%} changed before each timed sync; best of {args.repeat}; in {work}")
        for target in [t.strip() for t in args.targets.split(",") if t.strip()]:
            if target == "local":
                results["local folder"] = bench_target("local", tree, paths, work, args.repeat, args.changed, rng, None)
            elif target == "s3":
                with seaweedfs(work / "seaweedfs", bucket="bench") as s3:
                    print(f"server: SeaweedFS at {s3.endpoint}")
                    results["SeaweedFS S3"] = bench_target("s3", tree, paths, work, args.repeat, args.changed, rng, s3)
            else:
                raise SystemExit(f"bench: unknown target {target!r}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(f"{'target':16}{'vdir sync':>12}{'rclone sync':>14}{'rclone -c':>12}{'ratio':>8}   (ratio: best rclone / vdir; aim >= 2)")
    for target, r in results.items():
        peer = min(r["rclone"], r["rclone --checksum"])
        print(f"{target:16}{r['vdir']:>10.2f} s{r['rclone']:>12.2f} s{r['rclone --checksum']:>10.2f} s{peer / r['vdir']:>7.2f}x")


if __name__ == "__main__":
    main()
