"""Catalog benchmark: the SQLite and MongoDB engines side by side, in one run.

    python bench/catalog.py [--entries 100000] [--engines sqlite,mongo] [--samples 2000]

For each engine it builds a tree of ``N`` entries twice over — one directory holding ``N``
files, and one directory with ``N`` descendants spread over a chain of nested subdirectories —
and measures:

* create: entries per second, ``N`` calls of ``Catalog.create`` into the flat directory (one
  thread, one call per entry, as the core does);
* resolve: p50 / p99 of ``Catalog.resolve`` of a path ``DEPTH + 3`` components deep;
* list: seconds to iterate the flat directory with ``iter_children`` (paged);
* rename: seconds to rename the directory with ``N`` descendants, which must be one write of
  its own row (checked: a descendant keeps its version and resolves under the new name).

MongoDB is ``$VDIR_TEST_MONGODB_URI`` when set, otherwise a ``secantusd-py`` (SecantusDB, a
server speaking the MongoDB wire protocol) started here on a free port of 127.0.0.1.
Figures are printed, never asserted; the aims are printed beside them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from vdir.catalog import DIR, FILE, ROOT_ID, Catalog, Entry, open_catalog

DEPTH = 8
"""Nested subdirectories below the deep directory."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"secantusd-py exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"secantusd-py does not listen on 127.0.0.1:{port} after {timeout}s")


@contextlib.contextmanager
def mongodb_uri(workdir: Path) -> Iterator[tuple[str, str]]:
    """(server URI, description): the given server, or a SecantusDB started for this run."""
    given = os.environ.get("VDIR_TEST_MONGODB_URI")
    if given:
        yield given, "VDIR_TEST_MONGODB_URI"
        return
    exe = Path(sys.executable).parent / "secantusd-py"
    binary = str(exe) if exe.exists() else shutil.which("secantusd-py")
    if not binary:
        raise SystemExit("secantusd-py is not installed (pip install secantusdb) and VDIR_TEST_MONGODB_URI is not set")
    port = _free_port()
    storage = workdir / "secantus"
    log = open(workdir / "secantusd.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [binary, "--host", "127.0.0.1", "--port", str(port), "--storage-path", str(storage), "--log-level", "WARNING"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        _wait_port(port, proc)
        yield f"mongodb://127.0.0.1:{port}/", f"secantusd-py on 127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(15)
        log.close()


def _with_database(uri: str, database: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


def _drop_database(uri: str, database: str) -> None:
    import pymongo

    client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000)
    try:
        client.drop_database(database)
    finally:
        client.close()


def _progress(label: str, done: int, total: int) -> None:
    if sys.stderr.isatty():
        print(f"\r  {label}: {done}/{total}", end="" if done < total else "\n", file=sys.stderr, flush=True)


def _create_many(cat: Catalog, parent_id: int, names: Iterator[str] | list[str], total: int, label: str) -> float:
    """Create files under ``parent_id``; returns elapsed seconds."""
    start = time.perf_counter()
    for i, name in enumerate(names, 1):
        cat.create(Entry(name=name, type=FILE, parent_id=parent_id, size=i))
        if i % 5000 == 0:
            _progress(label, i, total)
    _progress(label, total, total)
    return time.perf_counter() - start


def run_engine(cat: Catalog, n: int, samples: int) -> dict[str, float]:
    results: dict[str, float] = {}
    # 1. one directory with N files
    flat = cat.create(Entry(name="flat", type=DIR, mode=0o755))
    elapsed = _create_many(cat, flat.id, [f"file-{i:07d}.dat" for i in range(n)], n, "flat")
    results["create_per_s"] = n / elapsed

    # 2. one directory with N descendants over a chain of DEPTH nested subdirectories
    deep = cat.create(Entry(name="deep", type=DIR, mode=0o755))
    level = deep
    chain = [deep]
    for d in range(DEPTH):
        level = cat.create(Entry(name=f"level-{d}", type=DIR, parent_id=level.id, mode=0o755))
        chain.append(level)
    remaining = n - DEPTH
    per_level = max(1, remaining // len(chain))
    made = 0
    for i, directory in enumerate(chain):
        count = per_level if i < len(chain) - 1 else remaining - made
        _create_many(cat, directory.id, [f"f-{j:07d}" for j in range(count)], count, f"deep level {i}")
        made += count
    deep_path = "/deep/" + "/".join(f"level-{d}" for d in range(DEPTH)) + "/f-0000000"
    target = cat.resolve(deep_path)

    # 3. resolve a deep path
    timings: list[float] = []
    for _ in range(samples):
        start_ns = time.perf_counter_ns()
        cat.resolve(deep_path)
        timings.append((time.perf_counter_ns() - start_ns) / 1000)
    timings.sort()
    results["resolve_p50_us"] = statistics.median(timings)
    results["resolve_p99_us"] = timings[min(len(timings) - 1, int(len(timings) * 0.99))]

    # 4. list the flat directory
    t0 = time.perf_counter()
    count = sum(1 for _ in cat.iter_children(flat.id))
    results["list_s"] = time.perf_counter() - t0
    if count != n:
        raise RuntimeError(f"listed {count} entries, expected {n}")

    # 5. rename the directory with N descendants: one write
    t0 = time.perf_counter()
    cat.rename(deep.id, ROOT_ID, "deep-renamed")
    results["rename_s"] = time.perf_counter() - t0
    moved = cat.resolve(deep_path.replace("/deep/", "/deep-renamed/", 1))
    if moved.id != target.id or moved.version != target.version:
        raise RuntimeError("rename rewrote descendants (or lost them)")
    results["descendants"] = float(n)
    return results


ROWS: list[tuple[str, str, Callable[[float], str], str]] = [
    ("create_per_s", "create (entries/s)", lambda v: f"{v:,.0f}", ""),
    ("resolve_p50_us", f"resolve depth {DEPTH + 3}, p50 (µs)", lambda v: f"{v:,.1f}", "< 50 on SQLite"),
    ("resolve_p99_us", f"resolve depth {DEPTH + 3}, p99 (µs)", lambda v: f"{v:,.1f}", ""),
    ("list_s", "list N-entry dir (s)", lambda v: f"{v:.3f}", "< 0.5 for 100k"),
    ("rename_s", "rename dir, N below (s)", lambda v: f"{v:.4f}", "one write"),
]


def print_table(n: int, results: dict[str, dict[str, float]], notes: list[str]) -> None:
    engines = list(results)
    head = [f"metric (N = {n:,})", *engines, "aim"]
    rows = [[label, *(fmt(results[e][key]) for e in engines), aim] for key, label, fmt, aim in ROWS]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    line = "  ".join("-" * w for w in widths)
    print(line)
    print("  ".join(h.ljust(w) if i in (0, len(head) - 1) else h.rjust(w) for i, (h, w) in enumerate(zip(head, widths, strict=True))))
    print(line)
    for row in rows:
        print("  ".join(c.ljust(w) if i in (0, len(row) - 1) else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))))
    print(line)
    print("rename: one update of the moved directory's own row/document; descendants keep their version.")
    for note in notes:
        print(note)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--entries", type=int, default=100_000, help="N (default 100000)")
    parser.add_argument("--engines", default="sqlite,mongo", help="comma separated: sqlite, mongo")
    parser.add_argument("--samples", type=int, default=2000, help="resolve samples (default 2000)")
    parser.add_argument("--workdir", help="where to put the SQLite file and the server's data (default: a temp dir)")
    args = parser.parse_args(argv)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = set(engines) - {"sqlite", "mongo"}
    if unknown or not engines:
        parser.error(f"unknown engine(s): {', '.join(sorted(unknown)) or '(none)'}")
    n = args.entries
    if n < DEPTH + 2:
        parser.error(f"--entries must be at least {DEPTH + 2}")

    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, float]] = {}
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="vdir-bench-catalog-", dir=args.workdir) as tmp:
        work = Path(tmp)
        for engine in engines:
            print(f"{engine}: building 2 x {n:,} entries ...", file=sys.stderr, flush=True)
            if engine == "sqlite":
                with open_catalog(f"sqlite:///{work}/bench.db") as cat:
                    results["SQLite"] = run_engine(cat, n, args.samples)
            else:
                with mongodb_uri(work) as (uri, where):
                    print(f"mongo: {where}", file=sys.stderr, flush=True)
                    notes.append(f"MongoDB: {where}, one client thread, server on the same machine.")
                    database = f"vdir_bench_{uuid.uuid4().hex[:12]}"
                    try:
                        with open_catalog(_with_database(uri, database)) as cat:
                            results["MongoDB"] = run_engine(cat, n, args.samples)
                    finally:
                        _drop_database(uri, database)
    print_table(n, results, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
