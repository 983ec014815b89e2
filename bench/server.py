"""Server benchmark: ``vdir serve`` beside ``rclone serve http`` and ``rclone serve webdav``.

    python -m bench.server [--files 500] [--file-kib 16] [--large-mib 64] [--clients 1,8,32] [--workers N] [--rows small,large]

One run, one machine, the same data.  vdir serves the embedded default (SQLite catalog, a
local-folder backend) through ``vdir serve`` with an admin token; rclone serves a plain folder
holding the same files (``rclone serve http`` reads only; ``rclone serve webdav`` reads and
writes).  Each row is measured with 1, 8 and 32 concurrent clients (processes, one pooled HTTP
connection each):

* small GET: every client reads its share of ``--files`` files of ``--file-kib`` KiB;
* small PUT: every client writes its share of new files of that size (vdir: ``PUT /v1/files``,
  stored, hashed and committed before the reply; webdav: ``PUT``, written to the folder);
* large GET / PUT: every client reads (writes) its own file of ``--large-mib`` MiB.

Figures: files/s or MiB/s (MiB = 2^20 bytes) over the whole row, and p50 / p99 latency of one
request, with the ratio vdir ÷ the best rclone of the row (aim: >= 1).  Nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

ROOT = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(url, timeout=1.0)
            return
        time.sleep(0.1)
    raise RuntimeError(f"{url}: not answering after {timeout}s")


@dataclass
class Target:
    """One server under test: how to address a file and which headers to send."""

    name: str
    base: str
    headers: dict[str, str]
    prefix: str
    """The URL of a file is this plus its name."""
    writes: bool


@dataclass
class Row:
    what: str
    clients: int
    target: str
    rate: float
    unit: str
    p50: float
    p99: float


def run_clients(target: Target, clients: int, names: list[str], op: str, payload: bytes | str = b"") -> tuple[float, int, list[float]]:
    """Run ``op`` ("GET" or "PUT" of ``payload``: bytes, or the path of a file) over ``names``
    split between ``clients`` client processes (so the clients' Python does not share one GIL
    with each other); (seconds from the first request to the last reply, bytes, latencies)."""
    shares = [s for s in (names[i::clients] for i in range(clients)) if s]
    with multiprocessing.get_context("fork").Pool(len(shares)) as pool:
        results = pool.map(_client, [(op, target.prefix, target.headers, s, payload) for s in shares])
    start, end = min(r[0] for r in results), max(r[1] for r in results)
    return end - start, sum(r[2] for r in results), [t for r in results for t in r[3]]


def _client(job: tuple[str, str, dict[str, str], list[str], bytes | str]) -> tuple[float, float, int, list[float]]:
    op, prefix, headers, names, payload = job
    latencies: list[float] = []
    total = 0
    with httpx.Client(headers=headers, timeout=600.0) as http:
        start = time.time()
        for name in names:
            t0 = time.perf_counter()
            if op == "GET":
                with http.stream("GET", prefix + name) as r:
                    r.raise_for_status()
                    for chunk in r.iter_bytes(MIB):
                        total += len(chunk)
            elif isinstance(payload, str):
                with open(payload, "rb") as f:
                    http.put(prefix + name, content=_chunks(f)).raise_for_status()
                total += os.path.getsize(payload)
            else:
                http.put(prefix + name, content=payload).raise_for_status()
                total += len(payload)
            latencies.append(time.perf_counter() - t0)
        end = time.time()
    return start, end, total, latencies


def _chunks(f: IO[bytes]) -> Iterator[bytes]:
    while chunk := f.read(MIB):
        yield chunk


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextlib.contextmanager
def servers(work: Path, files: int, file_kib: int, large_mib: int, max_clients: int, workers: int) -> Iterator[tuple[list[Target], Path]]:
    home = work / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VDIR_")}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_DATA_HOME=str(home / ".local" / "share"),
               XDG_STATE_HOME=str(home / ".local" / "state"), XDG_CACHE_HOME=str(home / ".cache"), PYTHONPATH=str(ROOT))
    subprocess.run([sys.executable, "-m", "cli", "init"], env=env, check=True, capture_output=True)

    plain = work / "plain"  # what rclone serves: the same files as a plain folder
    (plain / "small").mkdir(parents=True)
    (plain / "large").mkdir()
    for i in range(files):
        (plain / "small" / f"f{i:05d}").write_bytes(os.urandom(file_kib * 1024))
    large_src = work / "large.bin"
    with open(large_src, "wb") as out:
        for _ in range(large_mib):
            out.write(os.urandom(MIB))
    for c in range(max_clients):
        os.link(large_src, plain / "large" / f"l{c:02d}")
    (plain / "up").mkdir()

    # the same tree in vdir, through the core; an admin token for the benchmark's clients
    setup = (
        "import sys, vdir\n"
        "from vdir.access import Accounts\n"
        "vd = vdir.connect()\n"
        "vd.put(sys.argv[1] + '/small', '/bench/small', recursive=True)\n"
        "vd.put(sys.argv[1] + '/large', '/bench/large', recursive=True)\n"
        "vd.mkdir('/bench/up', parents=True, exist_ok=True)\n"
        "acc = Accounts(vd.catalog)\n"
        "acc.add_user('bench', admin=True)\n"
        "secret, _ = acc.create_token('bench', scopes=('read', 'write', 'admin'))\n"
        "print(secret)\n"
    )
    token = subprocess.run([sys.executable, "-c", setup, str(plain)], env=env, check=True, capture_output=True,
                           text=True).stdout.strip().splitlines()[-1]

    procs: list[subprocess.Popen[bytes]] = []
    try:
        vport, hport, wport = free_port(), free_port(), free_port()
        serve = [sys.executable, "-m", "cli", "serve", "--host", "127.0.0.1", "--port", str(vport)]
        if workers > 1:
            serve += ["--workers", str(workers)]
        log = open(work / "servers.log", "ab")  # noqa: SIM115
        procs.append(subprocess.Popen(serve, env=env, stdout=log, stderr=log, start_new_session=True))
        wait_http(f"http://127.0.0.1:{vport}/openapi.json", procs[-1])
        for kind, port in (("http", hport), ("webdav", wport)):
            procs.append(subprocess.Popen(["rclone", "serve", kind, str(plain), "--addr", f"127.0.0.1:{port}"],
                                          env=env, stdout=log, stderr=log, start_new_session=True))
            wait_http(f"http://127.0.0.1:{port}/", procs[-1])
        vbase, hbase, wbase = (f"http://127.0.0.1:{p}" for p in (vport, hport, wport))
        targets = [
            Target("vdir serve", vbase, {"Authorization": f"Bearer {token}"}, f"{vbase}/v1/files?force=true&path=/bench/",
                   True),
            Target("rclone http", hbase, {}, f"{hbase}/", False),
            Target("rclone webdav", wbase, {}, f"{wbase}/", True),
        ]
        yield targets, large_src
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, 15)
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(10)


ROWS = ("small GET", "small PUT", "large GET", "large PUT")


def measure(targets: list[Target], large: Path, files: int, file_kib: int, clients_list: list[int],
            only: tuple[str, ...] = ROWS) -> list[Row]:
    rows: list[Row] = []
    small_names = [f"small/f{i:05d}" for i in range(files)]
    payload = os.urandom(file_kib * 1024)
    for clients in clients_list:
        for what in (w for w in ROWS if w in only):
            for t in targets:
                if what.endswith("PUT") and not t.writes:
                    continue
                if what == "small GET":
                    secs, _, lat = run_clients(t, clients, small_names, "GET")
                    rate, unit = files / secs, "files/s"
                elif what == "small PUT":
                    names = [f"up/s{clients}-{i:05d}" for i in range(files)]
                    secs, _, lat = run_clients(t, clients, names, "PUT", payload)
                    rate, unit = files / secs, "files/s"
                elif what == "large GET":
                    secs, moved, lat = run_clients(t, clients, [f"large/l{c:02d}" for c in range(clients)], "GET")
                    rate, unit = moved / MIB / secs, "MiB/s"
                else:
                    secs, moved, lat = run_clients(t, clients, [f"up/L{clients}-{c:02d}" for c in range(clients)], "PUT", str(large))
                    rate, unit = moved / MIB / secs, "MiB/s"
                rows.append(Row(what, clients, t.name, rate, unit, pct(lat, 0.5), pct(lat, 0.99)))
                print(f"  {what:10} x{clients:<3} {t.name:14} {rate:10.1f} {unit:8} p50 {pct(lat, 0.5) * 1000:8.1f} ms"
                      f"  p99 {pct(lat, 0.99) * 1000:8.1f} ms", flush=True)
    return rows


def table(rows: list[Row]) -> str:
    out = ["| row | clients | vdir serve | rclone http | rclone webdav | vdir ÷ best rclone | vdir p50 / p99 ms | rclone p50 / p99 ms |",
           "|---|--:|--:|--:|--:|--:|--:|--:|"]
    keys = sorted({(r.what, r.clients) for r in rows}, key=lambda k: (k[0], k[1]))
    for what, clients in keys:
        by = {r.target: r for r in rows if r.what == what and r.clients == clients}
        v = by["vdir serve"]
        peers = [by[n] for n in ("rclone http", "rclone webdav") if n in by]
        best = max(peers, key=lambda r: r.rate)

        cells = [f"{by[n].rate:,.0f} {by[n].unit}" if n in by else "—" for n in ("vdir serve", "rclone http", "rclone webdav")]
        out.append(f"| {what} | {clients} | {' | '.join(cells)} | "
                   f"{v.rate / best.rate:.2f}× | {v.p50 * 1000:.1f} / {v.p99 * 1000:.1f} | "
                   f"{best.p50 * 1000:.1f} / {best.p99 * 1000:.1f} ({best.target}) |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--files", type=int, default=500)
    ap.add_argument("--file-kib", type=int, default=16)
    ap.add_argument("--large-mib", type=int, default=64)
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--workers", type=int, default=1, help="vdir serve --workers (uvicorn processes)")
    ap.add_argument("--rows", default="small,large", help="which rows: small, large, or both (small,large)")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args(argv)
    clients = [int(c) for c in args.clients.split(",")]
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="vdir-bench-server-") as tmp:
        with servers(Path(tmp), args.files, args.file_kib, args.large_mib, max(clients), args.workers) as (targets, large):
            print(f"server benchmark: {args.files} x {args.file_kib} KiB, large {args.large_mib} MiB, clients {clients}, "
                  f"load {os.getloadavg()[0]:.2f}", flush=True)
            kinds = {k.strip() for k in args.rows.split(",")}
            rows = measure(targets, large, args.files, args.file_kib, clients,
                           tuple(w for w in ROWS if w.split()[0] in kinds))
    print()
    print(table(rows))
    print(f"\nmedian vdir ÷ best rclone: {statistics.median(_ratios(rows)):.2f}×")
    return 0


def _ratios(rows: list[Row]) -> list[float]:
    out = []
    for what, clients in {(r.what, r.clients) for r in rows}:
        by = {r.target: r for r in rows if r.what == what and r.clients == clients}
        best = max((by[n] for n in ("rclone http", "rclone webdav") if n in by), key=lambda r: r.rate)
        out.append(by["vdir serve"].rate / best.rate)
    return out


if __name__ == "__main__":
    sys.exit(main())
