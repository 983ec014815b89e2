"""S3 transfer benchmark: vdir's S3 backend beside ``rclone copy``, same server, same data, same run.

    .venv/bin/python bench/transfer.py [--large-mib 256] [--files 1000] [--file-kib 16] [--threads 32] [--repeat 3]

Starts a SeaweedFS server of its own (``weed mini`` on free 127.0.0.1 ports, data in a temp
folder), writes the test data to a local folder, then measures:

* put and get of one large file (256 MiB) and of many small files (1,000 x 16 KiB);
* vdir: :class:`vdir.backends.s3.S3Backend` directly (8 MiB parts, 4 parts in flight; small
  files through a pool of ``--threads`` threads), and ``VDir.put`` / ``VDir.get`` (SQLite
  catalog, hashing, commit) of the same data to an S3 backend registered with
  ``vdir.admin.add_backend``;
* rclone: ``rclone copy`` to and from the same bucket, once with the same concurrency as vdir
  (``--transfers``/``--checkers`` = ``--threads``, 8 MiB chunks, 4 chunks in flight) -- the
  ratios are against this run -- and once with rclone's defaults (4 transfers), for reference;
  configured through ``RCLONE_CONFIG_*`` environment variables, with the CA variables of this
  machine unset (Go refuses them for an http endpoint).

Everything runs ``--repeat`` times, in alternating order, and the best time of each figure is
kept (the machine may be busy).  MB/s are 10^6 bytes per second.  Figures are printed with the ratio vdir/rclone and the aims
(small files >= 2x rclone, large >= 1x); nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.servers.s3 import S3Server, seaweedfs  # noqa: E402
from vdir.backends.s3 import S3Backend  # noqa: E402

MiB = 1024 * 1024
CA_VARS = ("AWS_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS")


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def make_data(folder: Path, large_mib: int, files: int, file_kib: int) -> tuple[Path, Path]:
    large = folder / "large" / "large.bin"
    large.parent.mkdir(parents=True)
    with open(large, "wb") as out:
        for _ in range(large_mib):
            out.write(os.urandom(MiB))
    small = folder / "small"
    small.mkdir()
    for i in range(files):
        (small / f"f{i:05d}.bin").write_bytes(os.urandom(file_kib * 1024))
    return large, small


# -- vdir ------------------------------------------------------------------------------------------
def backend_for(s3: S3Server, prefix: str, threads: int) -> S3Backend:
    return S3Backend("bench", f"s3://{s3.bucket}/{prefix}", endpoint_url=s3.endpoint, region="us-east-1",
                     access_key_id=s3.access_key, secret_access_key=s3.secret_key, part_size=8 * MiB,
                     multipart_threshold=8 * MiB, max_concurrency=4, max_pool_connections=max(threads, 10))


def vdir_backend(s3: S3Server, large: Path, small: Path, out: Path, work: Path, threads: int) -> dict[str, float]:
    backend = backend_for(s3, f"vdir-backend-{out.name}", threads)
    names = sorted(p.name for p in small.iterdir())
    results: dict[str, float] = {}

    def put_large() -> None:
        with open(large, "rb") as fh:
            backend.put("large/large.bin", fh, size=large.stat().st_size)

    def get_large() -> None:
        with backend.get("large/large.bin") as stream, open(out / "large.bin", "wb") as dst:
            shutil.copyfileobj(stream, dst, MiB)

    def put_one(name: str) -> None:
        with open(small / name, "rb") as fh:
            backend.put(f"small/{name}", fh, size=os.fstat(fh.fileno()).st_size)

    def get_one(name: str) -> None:
        (out / "small" / name).write_bytes(backend.get_bytes(f"small/{name}"))

    (out / "small").mkdir(parents=True, exist_ok=True)
    results["put_large"] = timed(put_large)
    results["get_large"] = timed(get_large)
    with ThreadPoolExecutor(threads) as pool:
        results["put_small"] = timed(lambda: list(pool.map(put_one, names)))
        results["get_small"] = timed(lambda: list(pool.map(get_one, names)))
    check(large, out / "large.bin", small, out / "small")
    backend.close()
    return results


def vdir_core(s3: S3Server, large: Path, small: Path, out: Path, work: Path, threads: int) -> dict[str, float] | str:
    """``VDir.put``/``get`` with a SQLite catalog: the whole write path (hash, catalog commit)."""
    try:
        from vdir.admin import add_backend
        from vdir.catalog.base import open_catalog
        from vdir.core import VDir
    except ImportError as exc:
        return f"not measured (vdir core unavailable: {exc})"
    os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"] = s3.access_key, s3.secret_key
    vd = VDir(open_catalog(f"sqlite:///{work / (out.name + '-catalog.db')}"))
    try:
        add_backend(vd, "s3", f"s3://{s3.bucket}/vdir-core-{out.name}", endpoint=s3.endpoint, region="us-east-1",
                    options={"part_size": 8 * MiB, "multipart_threshold": 8 * MiB, "max_concurrency": 4,
                             "max_pool_connections": max(threads, 10)})
        results: dict[str, float] = {}
        results["put_large"] = timed(lambda: vd.put(str(large), "/large.bin", backend="s3"))
        results["get_large"] = timed(lambda: vd.get("/large.bin", out / "large.bin"))
        results["put_small"] = timed(lambda: vd.put(str(small), "/small", backend="s3", recursive=True, workers=threads))
        results["get_small"] = timed(lambda: vd.get("/small", out / "small", recursive=True, workers=threads))
        check(large, out / "large.bin", small, out / "small")
        return results
    finally:
        vd.close()


# -- rclone ----------------------------------------------------------------------------------------
def rclone_env(s3: S3Server, work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CA_VARS}
    conf = work / "rclone.conf"
    conf.write_text("")
    env.update({
        "RCLONE_CONFIG": str(conf),
        "RCLONE_CONFIG_BENCH_TYPE": "s3",
        "RCLONE_CONFIG_BENCH_PROVIDER": "Other",
        "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": s3.access_key,
        "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": s3.secret_key,
        "RCLONE_CONFIG_BENCH_ENDPOINT": s3.endpoint,
        "RCLONE_CONFIG_BENCH_REGION": "us-east-1",
        "RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE": "true",
    })
    return env


def rclone(s3: S3Server, large: Path, small: Path, out: Path, work: Path, threads: int | None) -> dict[str, float] | str:
    """``rclone copy`` each way; ``threads`` None: rclone's defaults (4 transfers, 5 MiB chunks)."""
    exe = shutil.which("rclone")
    if not exe:
        return "not measured (rclone is not installed; scripts/setup.sh --bench installs it)"
    env = rclone_env(s3, work)
    common = [exe, "copy"]
    if threads is not None:
        common += ["--s3-chunk-size", "8M", "--s3-upload-concurrency", "4", "--transfers", str(threads),
                   "--checkers", str(threads)]
    remote = f"bench:{s3.bucket}/rclone-{out.name}"

    def run(*args: str) -> None:
        subprocess.run([*common, *args], env=env, check=True, stdout=subprocess.DEVNULL)

    results: dict[str, float] = {}
    results["put_large"] = timed(lambda: run(str(large.parent), f"{remote}/large"))
    results["get_large"] = timed(lambda: run(f"{remote}/large", str(out)))
    results["put_small"] = timed(lambda: run(str(small), f"{remote}/small"))
    results["get_small"] = timed(lambda: run(f"{remote}/small", str(out / "small")))
    check(large, out / large.name, small, out / "small")
    return results


def check(large: Path, large_copy: Path, small: Path, small_copy: Path) -> None:
    """The copies are the originals (a benchmark of wrong answers measures nothing)."""
    if large.stat().st_size != large_copy.stat().st_size or not _same(large, large_copy):
        raise SystemExit(f"bench: {large_copy} differs from {large}")
    names = sorted(p.name for p in small.iterdir())
    if sorted(p.name for p in small_copy.iterdir()) != names:
        raise SystemExit(f"bench: {small_copy} does not hold the same files as {small}")
    for name in names[:: max(1, len(names) // 50)]:
        if (small / name).read_bytes() != (small_copy / name).read_bytes():
            raise SystemExit(f"bench: {small_copy / name} differs")


def _same(a: Path, b: Path) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(MiB), fb.read(MiB)
            if x != y:
                return False
            if not x:
                return True


# -- report ------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--large-mib", type=int, default=256)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--file-kib", type=int, default=16)
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3, help="runs of everything; the best time of each is kept")
    parser.add_argument("--workdir", type=Path, default=None, help="where data and the server live (default: a temp dir)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="vdir-bench-transfer-", dir=args.workdir))
    try:
        print(f"data: 1 x {args.large_mib} MiB and {args.files} x {args.file_kib} KiB, threads {args.threads}, "
              f"best of {args.repeat} runs (order alternated), in {work}")
        large, small = make_data(work / "data", args.large_mib, args.files, args.file_kib)
        runners: dict[str, Callable[[S3Server, Path], dict[str, float] | str]] = {
            "rclone": lambda s3, out: rclone(s3, large, small, out, work, args.threads),
            "rclone (its defaults)": lambda s3, out: rclone(s3, large, small, out, work, None),
            "vdir backend": lambda s3, out: vdir_backend(s3, large, small, out, work, args.threads),
            "vdir VDir.put/get": lambda s3, out: vdir_core(s3, large, small, out, work, args.threads),
        }
        runs: dict[str, dict[str, float] | str] = {}
        with seaweedfs(work / "seaweedfs", bucket="bench") as s3:
            print(f"server: SeaweedFS at {s3.endpoint}")
            for rep in range(args.repeat):
                order = list(runners.items()) if rep % 2 == 0 else list(reversed(runners.items()))
                for n, (who, run) in enumerate(order):
                    out = work / f"out-{rep}-{n}"
                    result = run(s3, out)
                    shutil.rmtree(out, ignore_errors=True)
                    best = runs.get(who)
                    if isinstance(result, str) or best is None or isinstance(best, str):
                        runs[who] = result
                    else:
                        runs[who] = {k: min(v, best[k]) for k, v in result.items()}
        report(runs, large.stat().st_size, args.files, args.large_mib, args.file_kib)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(runs: dict[str, dict[str, float] | str], large_bytes: int, files: int, large_mib: int, file_kib: int) -> None:
    rows = [("put_large", f"put 1 x {large_mib} MiB", "MB/s", 1.0), ("get_large", f"get 1 x {large_mib} MiB", "MB/s", 1.0),
            ("put_small", f"put {files} x {file_kib} KiB", "files/s", 2.0),
            ("get_small", f"get {files} x {file_kib} KiB", "files/s", 2.0)]
    peer = runs.get("rclone")
    print()
    print(f"{'':24}{'what':<26}{'rate':>14}{'time':>10}{'vs rclone':>12}{'aim':>8}")
    for who, result in runs.items():
        if isinstance(result, str):
            print(f"{who:<24}{result}")
            continue
        for key, label, unit, aim in rows:
            seconds = result[key]
            rate = large_bytes / seconds / 1e6 if unit == "MB/s" else files / seconds
            ratio, goal = "", ""
            if not who.startswith("rclone") and isinstance(peer, dict):
                peer_rate = large_bytes / peer[key] / 1e6 if unit == "MB/s" else files / peer[key]
                ratio, goal = f"{rate / peer_rate:.2f}x", f">={aim:g}x"
            print(f"{who:<24}{label:<26}{rate:>9.1f} {unit:<7}{seconds:>7.2f} s{ratio:>12}{goal:>8}")
    print("(vs rclone: against rclone with the same concurrency, first block)")


if __name__ == "__main__":
    main()
