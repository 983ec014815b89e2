"""Placement benchmark: replicate N files between two backends, beside the raw backend copy and
``rclone copy`` of the same files in the same run; then the daemon's peak memory over a
catalog of many entries.

    python -m bench.placement [--files 1000] [--total-mib 2048] [--entries 1000000] [--workers 4]
                              [--store local|s3] [--skip-memory]

Backends are two local folders (on the same disk, so every mover pays the same disk cost).
* raw:    the backends' own get -> put of every object, threaded like the daemon (the ceiling);
* rclone: ``rclone copy SRC DST`` of the source folder (``--transfers`` = workers);
* vdir:   ``placement run --once`` — plan, copy, hash-verify, commit (the daemon's real path).
With ``--store s3`` the two backends are two prefixes of one bucket on a SeaweedFS server of
the bench's own: vdir copies server-side (CopyObject) and checks each copy by its MD5 ETag
(or reads it back to hash it when the ETag is not a plain MD5);
"raw" is then both the streamed get -> put and the bare server-side copy, and rclone copies
server-side too.
Memory: a SQLite catalog with ``--entries`` files already in place; the daemon plans over all
of them (a full catalog walk) in a child process whose peak RSS (VmHWM) is printed beside the
same child's RSS after start-up.  Figures are printed, never asserted.

Queue history (``--queue-history 0,100000,1000000``, alone with ``--queue-only``): a catalog
whose task queue already holds that many finished tasks (written in bulk straight into the
engine's storage: one SQLite transaction, or ``insert_many`` into MongoDB), then ``--queue-ops``
rounds of add -> claim -> finish of one task; claim and finish latency (p50/p99) printed beside
the round trips (MongoDB commands, counted by a pymongo command listener) or SQL statements
(SQLite) each one took.  ``--engines sqlite,mongo``; MongoDB is a SecantusDB server of the
bench's own unless ``--mongodb-uri`` names one.  The generator writes only fields every schema
has (plus the expiry field, which older code ignores), so the same command run on an older
checkout gives the "before" figures.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

MIB = 1024 * 1024


def _make_files(root: Path, files: int, total: int) -> list[Path]:
    size = max(1, total // files)
    block = os.urandom(MIB)
    out = []
    for i in range(files):
        p = root / f"d{i % 10}" / f"f{i:05}.bin"
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "wb") as fh:
            left = size
            fh.write(i.to_bytes(8, "big"))
            left -= 8
            while left > 0:
                fh.write(block[: min(left, MIB)])
                left -= min(left, MIB)
        out.append(p)
    return out


def _drop_caches() -> None:
    try:
        subprocess.run(["sync"], check=False)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        pass


def bench_copy(workdir: Path, files: int, total: int, workers: int) -> dict[str, float]:
    from vdir.admin import add_backend
    from vdir.backends.local import LocalBackend
    from vdir.catalog.base import open_catalog
    from vdir.core import VDir
    from vdir.placement.daemon import Daemon, DaemonOptions
    from vdir.placement.policy import apply_policy

    src = workdir / "src"
    src.mkdir()
    local = _make_files(src, files, total)
    nbytes = sum(p.stat().st_size for p in local)
    results: dict[str, float] = {}

    # raw backend-to-backend copy, threaded like the daemon
    a = LocalBackend("a", f"file://{src}")
    b = LocalBackend("b", f"file://{workdir / 'raw-dst'}")
    keys = [str(p.relative_to(src)) for p in local]
    _drop_caches()
    t0 = time.perf_counter()

    def raw_one(key: str) -> None:
        with a.get(key) as stream:
            b.put(key, stream, size=(src / key).stat().st_size)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(raw_one, keys))
    results["raw"] = time.perf_counter() - t0

    if shutil.which("rclone"):
        _drop_caches()
        t0 = time.perf_counter()
        subprocess.run(["rclone", "copy", str(src), str(workdir / "rclone-dst"), "--transfers", str(workers)], check=True)
        results["rclone"] = time.perf_counter() - t0

    # vdir: files registered on backend "a" (vdir put to a folder backend), replicated to "c"
    vd = VDir(open_catalog(f"sqlite:///{workdir / 'catalog.db'}"), default_backend="a")
    add_backend(vd, "a", f"file://{workdir / 'vdir-a'}", check=False)
    add_backend(vd, "c", f"file://{workdir / 'vdir-c'}", cloud="other", check=False)
    vd.put(src, "/", recursive=True, workers=workers)
    apply_policy(vd.catalog, "rules:\n  - match: /**\n    copies: 2\n    where: name=a | name=c\n")
    _drop_caches()
    t0 = time.perf_counter()
    counters = Daemon(vd, DaemonOptions(once=True, workers=workers)).run()
    results["vdir"] = time.perf_counter() - t0
    assert counters["done"] == files and counters["failed"] == 0, counters
    vd.close()
    results["bytes"] = nbytes
    return results


def bench_copy_s3(workdir: Path, files: int, total: int, workers: int) -> dict[str, float]:
    from bench.transfer import rclone_env
    from tests.servers.s3 import seaweedfs
    from vdir.admin import add_backend
    from vdir.backends.s3 import S3Backend
    from vdir.catalog.base import open_catalog
    from vdir.core import VDir
    from vdir.placement.daemon import Daemon, DaemonOptions
    from vdir.placement.policy import apply_policy

    src = workdir / "src"
    src.mkdir()
    local = _make_files(src, files, total)
    keys = [str(p.relative_to(src)) for p in local]
    results: dict[str, float] = {"bytes": sum(p.stat().st_size for p in local)}
    with seaweedfs(workdir / "seaweedfs", bucket="bench") as s3:
        os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"] = s3.access_key, s3.secret_key

        def store(prefix: str) -> S3Backend:
            return S3Backend(prefix, f"s3://{s3.bucket}/{prefix}", endpoint_url=s3.endpoint, region="us-east-1")

        a = store("src")
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda k: a.put(k, open(src / k, "rb"), size=(src / k).stat().st_size), keys))  # noqa: SIM115
            streamed, copied = store("raw-streamed"), store("raw-copied")

            def stream_one(key: str) -> None:
                with a.get(key) as stream:
                    streamed.put(key, stream, size=(src / key).stat().st_size)

            t0 = time.perf_counter()
            list(pool.map(stream_one, keys))
            results["raw"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            list(pool.map(lambda k: copied.server_copy_from(a, k, k), keys))
            results["raw-copy"] = time.perf_counter() - t0
        if shutil.which("rclone"):
            t0 = time.perf_counter()
            subprocess.run(["rclone", "copy", f"bench:{s3.bucket}/src", f"bench:{s3.bucket}/rclone-dst", "--transfers",
                            str(workers), "--checkers", str(workers)], check=True, env=rclone_env(s3, workdir))
            results["rclone"] = time.perf_counter() - t0

        vd = VDir(open_catalog(f"sqlite:///{workdir / 'catalog.db'}"), default_backend="a")
        for name, cloud in (("a", "aws"), ("c", "aws")):
            add_backend(vd, name, f"s3://{s3.bucket}/vdir-{name}", endpoint=s3.endpoint, region="us-east-1", cloud=cloud,
                        check=False)
        vd.put(src, "/", recursive=True, workers=workers)
        apply_policy(vd.catalog, "rules:\n  - match: /**\n    copies: 2\n    where: name=a | name=c\n")
        t0 = time.perf_counter()
        counters = Daemon(vd, DaemonOptions(once=True, workers=workers)).run()
        results["vdir"] = time.perf_counter() - t0
        assert counters["done"] == files and counters["failed"] == 0, counters
        vd.close()
    return results


MEMORY_CHILD = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
from vdir.catalog.base import open_catalog
from vdir.core import VDir
from vdir.placement.daemon import Daemon, DaemonOptions

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) // 1024
vd = VDir(open_catalog(sys.argv[2]), default_backend="a")
base = rss("VmRSS")
t0 = time.perf_counter()
counters = Daemon(vd, DaemonOptions(once=True, workers=2)).run()
print(base, rss("VmHWM"), f"{time.perf_counter() - t0:.1f}", counters["queued"])
"""


def bench_memory(workdir: Path, entries: int) -> tuple[int, int, str, str]:
    """Peak RSS of a daemon planning over ``entries`` files that are already in place."""
    import sqlite3

    from vdir.admin import add_backend
    from vdir.catalog.base import open_catalog
    from vdir.core import VDir
    from vdir.placement.policy import apply_policy

    url = f"sqlite:///{workdir / 'big.db'}"
    vd = VDir(open_catalog(url), default_backend="a")
    add_backend(vd, "a", f"file://{workdir / 'big-a'}", check=False)
    add_backend(vd, "b", f"file://{workdir / 'big-b'}", check=False)
    apply_policy(vd.catalog, "rules:\n  - match: /**\n    copies: 2\n    where: name=a | name=b\n")
    vd.mkdir("/many", parents=True)
    parent = vd.entry("/many").id
    vd.close()
    # bulk insert in one transaction (the catalog API would take minutes for 1M rows): files that
    # already have both their replicas, so the daemon walks everything and queues nothing
    conn = sqlite3.connect(workdir / "big.db")
    now = time.time()
    reps = '[{"backend":"a","key":"k","size":1,"hash":"h","etag":null,"state":"ok","verified_at":1.0},' \
           '{"backend":"b","key":"k","size":1,"hash":"h","etag":null,"state":"ok","verified_at":1.0}]'
    with conn:
        conn.executemany(
            "INSERT INTO entries (parent_id, name, type, mode, uid, gid, size, mtime, ctime, hash, version, target, xattrs, replicas)"
            " VALUES (?, ?, 'file', 420, 0, 0, 1, ?, ?, 'h', 1, NULL, '{}', ?)",
            ((parent, f"f{i:08}", now, now, reps) for i in range(entries)),
        )
    conn.close()
    root = str(Path(__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, root, url], capture_output=True, text=True, check=True)
    base, peak, seconds, queued = out.stdout.split()
    return int(base), int(peak), seconds, queued


QUEUE_BULK = 10_000


def _fill_history(url: str, n: int) -> None:
    """``n`` finished tasks written straight into the engine's storage (the API would take hours)."""
    import datetime
    import json

    now = time.time()
    expire = now + 30 * 86400  # far enough that no TTL pass removes them during the bench
    first_id = 10**12  # clear of ids from an old counter

    def fields(i: int) -> dict[str, object]:
        return {"kind": "verify", "entry_id": i, "entry_version": 1, "source": None, "destination": "b",
                "state": "done" if i % 10 else "failed", "attempts": 1, "last_error": None, "lease_owner": None,
                "lease_expires": None, "not_before": 0.0, "dedupe_key": f"verify:{i}", "payload": {"path": f"/f{i}"},
                "created": now - n + i, "updated": now - n + i}

    if url.startswith("sqlite"):
        import sqlite3

        conn = sqlite3.connect(url.split("sqlite:///", 1)[1])
        columns = [r[1] for r in conn.execute("PRAGMA table_info(tasks)")]
        names = [c for c in columns if c in fields(0) or c in ("id", "expire_at")]
        sql = f"INSERT INTO tasks ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"

        def row(i: int) -> tuple[object, ...]:
            f = {**fields(i), "id": first_id + i, "expire_at": expire}
            f["payload"] = json.dumps(f["payload"])
            return tuple(f[c] for c in names)

        with conn:
            conn.executemany(sql, (row(i) for i in range(n)))
        conn.close()
        return
    import pymongo

    client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(url)
    tasks = client.get_default_database()["tasks"]
    expire_date = datetime.datetime.fromtimestamp(expire, datetime.UTC)
    for start in range(0, n, QUEUE_BULK):
        tasks.insert_many([{"_id": first_id + i, **fields(i), "expire_at": expire_date}
                           for i in range(start, min(n, start + QUEUE_BULK))], ordered=False)
    client.close()


class _Counter:
    """Round trips (MongoDB commands) or SQL statements (SQLite) since the last ``take``."""

    def __init__(self) -> None:
        self.n = 0

    def take(self) -> int:
        n, self.n = self.n, 0
        return n


def _instrument(counter: _Counter) -> None:
    from pymongo import monitoring

    from vdir.catalog.sqlite import SQLiteCatalog

    class Listener(monitoring.CommandListener):
        def started(self, event: monitoring.CommandStartedEvent) -> None:
            if event.command_name not in ("hello", "isMaster", "ismaster", "endSessions"):
                counter.n += 1

        def succeeded(self, event: monitoring.CommandSucceededEvent) -> None: ...

        def failed(self, event: monitoring.CommandFailedEvent) -> None: ...

    monitoring.register(Listener())
    connect = SQLiteCatalog._connect

    def traced(self: SQLiteCatalog) -> object:
        conn = connect(self)

        def count(sql: str) -> None:
            if sql.split(None, 1)[0].upper() not in ("BEGIN", "COMMIT", "ROLLBACK", "PRAGMA"):
                counter.n += 1

        conn.set_trace_callback(count)
        return conn

    SQLiteCatalog._connect = traced  # type: ignore[method-assign]


def bench_queue(url: str, history: int, ops: int, counter: _Counter, budget: float = 60.0) -> dict[str, float]:
    """Latency and round trips of claim and finish over a queue with ``history`` finished tasks."""
    from vdir.catalog.base import Task, open_catalog

    open_catalog(url).close()  # the engine's own layout first
    t0 = time.perf_counter()
    _fill_history(url, history)
    fill = time.perf_counter() - t0
    claims: list[float] = []
    finishes: list[float] = []
    trips = {"claim": 0, "finish": 0}
    with open_catalog(url) as cat:
        start = time.perf_counter()
        for i in range(ops):
            cat.add_task(Task(kind="replicate", entry_id=i, dedupe_key=f"replicate:{i}"))
            counter.take()
            t0 = time.perf_counter()
            task = cat.claim_task("bench", 60)
            claims.append(time.perf_counter() - t0)
            trips["claim"] = counter.take()
            assert task is not None and task.entry_id == i, task
            t0 = time.perf_counter()
            assert cat.finish_task(task.id, "bench", "done")
            finishes.append(time.perf_counter() - t0)
            trips["finish"] = counter.take()
            if time.perf_counter() - start > budget:
                break

    def pct(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {"fill": fill, "n": len(claims), "claim_p50": pct(claims, 0.5), "claim_p99": pct(claims, 0.99),
            "finish_p50": pct(finishes, 0.5), "finish_p99": pct(finishes, 0.99),
            "claim_trips": trips["claim"], "finish_trips": trips["finish"]}


def run_queue_history(workdir: Path, sizes: list[int], engines: list[str], ops: int, mongodb_uri: str | None) -> None:
    import contextlib
    import uuid

    counter = _Counter()
    _instrument(counter)
    with contextlib.ExitStack() as stack:
        if "mongo" in engines and not mongodb_uri:
            from tests.servers.process import free_port, server, venv_bin

            port = free_port()
            (workdir / "mongo").mkdir()
            stack.enter_context(server([venv_bin("secantusd-py"), "--host", "127.0.0.1", "--port", str(port),
                                        "--storage-path", str(workdir / "mongo"), "--log-level", "WARNING"],
                                       port, "secantusd"))
            mongodb_uri = f"mongodb://127.0.0.1:{port}/"
        print(f"\nqueue history: add -> claim -> finish of one task, {ops} rounds (or 60 s) per size\n")
        print(f"{'engine':7} {'finished':>10} {'fill s':>7} {'rounds':>6} {'claim p50':>10} {'p99':>8} {'finish p50':>11} "
              f"{'p99':>8} {'trips/claim':>12} {'trips/finish':>13}")
        for engine in engines:
            for size in sizes:
                if engine == "sqlite":
                    url = f"sqlite:///{workdir / f'queue-{size}.db'}"
                else:
                    assert mongodb_uri is not None
                    base, _, query = mongodb_uri.partition("?")
                    url = f"{base.rstrip('/')}/vdir_bench_{uuid.uuid4().hex[:8]}" + (f"?{query}" if query else "")
                r = bench_queue(url, size, ops, counter)
                unit = "stmts" if engine == "sqlite" else "RTs"
                print(f"{engine:7} {size:>10,} {r['fill']:7.1f} {r['n']:>6} {r['claim_p50']:8.2f}ms {r['claim_p99']:6.2f}ms "
                      f"{r['finish_p50']:9.2f}ms {r['finish_p99']:6.2f}ms {r['claim_trips']:>6} {unit:5} "
                      f"{r['finish_trips']:>7} {unit:5}", flush=True)
                if engine == "mongo":
                    import pymongo

                    pymongo.MongoClient(url).drop_database(url.rsplit("/", 1)[1].split("?")[0])
        print("aim: claim and finish flat in the number of finished tasks (real MongoDB: latency ~ round trips x RTT)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--total-mib", type=int, default=2048)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--store", choices=["local", "s3"], default="local",
                        help="local folders, or two prefixes of a SeaweedFS bucket")
    parser.add_argument("--skip-memory", action="store_true", help="only the copy figures")
    parser.add_argument("--queue-history", default="0,100000,1000000",
                        help="finished tasks already in the queue, comma-separated ('' to skip)")
    parser.add_argument("--queue-ops", type=int, default=200, help="add/claim/finish rounds per history size")
    parser.add_argument("--engines", default="sqlite,mongo", help="catalog engines for the queue-history case")
    parser.add_argument("--mongodb-uri", default=None, help="a MongoDB server (default: a SecantusDB of the bench's own)")
    parser.add_argument("--queue-only", action="store_true", help="only the queue-history case")
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="vdir-bench-placement-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        sizes = [int(x) for x in args.queue_history.split(",") if x.strip()]
        if args.queue_only:
            run_queue_history(workdir, sizes, args.engines.split(","), args.queue_ops, args.mongodb_uri)
            return
        s3 = args.store == "s3"
        r = (bench_copy_s3 if s3 else bench_copy)(workdir, args.files, args.total_mib * MIB, args.workers)
        mb = r["bytes"] / 1e6
        where = "two prefixes of one SeaweedFS S3 bucket" if s3 else "two local-folder backends"
        print(f"\nreplicate {args.files} files / {r['bytes'] / MIB:.0f} MiB between {where}, {args.workers} workers\n")
        print(f"{'mover':40} {'seconds':>8} {'MB/s':>8} {'vdir/x':>8}")
        movers = (("raw", "raw backend get->put" + ("" if s3 else " (ceiling)")),
                  ("raw-copy", "raw server-side copy (ceiling)"), ("rclone", "rclone copy"),
                  ("vdir", "vdir placement run --once"))
        for name, label in movers:
            if name in r:
                print(f"{label:40} {r[name]:8.2f} {mb / r[name]:8.1f} {r[name] / r['vdir'] if name != 'vdir' else 1:7.2f}x")
        print("aim: vdir >= 0.9x raw bandwidth (vdir also hashes every byte and commits each copy"
              + (", and checks each server-side copy by the store's MD5 or by reading it back)" if s3 else ")"))
        if args.skip_memory:
            return
        base, peak, seconds, queued = bench_memory(workdir, args.entries)
        print(f"\ndaemon over {args.entries:,} catalog entries: RSS after start {base} MiB, peak {peak} MiB "
              f"(plan walked everything in {seconds}s, queued {queued})")
        print("aim: memory flat in the number of entries (compare runs with different --entries)")
        if sizes:
            run_queue_history(workdir, sizes, args.engines.split(","), args.queue_ops, args.mongodb_uri)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
