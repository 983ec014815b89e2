"""Catalog benchmark at scale: the SQLite and MongoDB engines side by side, on one generated tree.

    python -m bench.catalog [--entries 100000] [--engines sqlite,mongo] [--samples 2000]
    python -m bench.catalog --entries 10000000 --keep /var/tmp/vdir-10m     # generate once, keep
    python -m bench.catalog --entries 10000000 --reuse /var/tmp/vdir-10m    # measure again

The catalog of ``N`` entries is generated in bulk straight into each engine's storage (SQLite
``executemany`` in big transactions, MongoDB unordered ``insert_many``), in the engine's own
row/document format (its conversion functions, checked by a round trip before anything is
written), streaming batches so memory stays flat.  The tree (sizes for N = 10 M; smaller N
scales the first two down, see :class:`Shape`):

* ``/ls``: one directory of 100,000 files;
* ``/sub``: one directory with 1,000,000 descendants (``p*/q*/f*``: 100 x 100 dirs of ~100 files);
* ``/deep``: chains ``/deep/cK/l2/.../l8/fJ``, files at depth 10;
* ``/data``: the rest, ~1,000 files per directory ``/data/dA/fB`` (files at depth 3).

Then, through the public :class:`~vdir.catalog.Catalog` API only:

* open: one ``open_catalog`` of the generated catalog;
* resolve p50 / p99 at depth 3 and 10 (random existing paths);
* ls: ``iter_children`` of the 100k-entry directory, all of it;
* create: entries per second with 1 writer and with 4 concurrent writers (processes by
  default, each with its own Catalog), into separate directories and into one shared directory;
* rename of the directory with 1 M descendants, in place and then into another directory: must
  be one write (checked: a descendant keeps its id and version and resolves under the new name);
  it is renamed back afterwards, so a kept catalog can be measured again.

``--keep DIR`` generates into DIR (SQLite file, SecantusDB data, ``manifest.json``) and keeps it;
an interrupted generation resumes from the manifest; ``--reuse DIR`` only measures.  A run adds
``/writes-*`` directories of a few thousand entries to a kept catalog.

Each figure is printed beside the number of round trips it took (MongoDB: commands seen by a
``pymongo.monitoring.CommandListener``; SQLite: statements seen by ``set_trace_callback``), and
for MongoDB an estimate for a real network: measured time + round trips x RTT (0.5 ms, 2 ms).

MongoDB is ``$VDIR_TEST_MONGODB_URI`` when set, otherwise a ``secantusd-py`` (SecantusDB, a
server speaking the MongoDB wire protocol) started here on a free port of 127.0.0.1.
Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import os
import random
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vdir.catalog import DIR, FILE, ROOT_ID, BackendRecord, Entry, Replica, open_catalog

BULK_BACKEND = "bench"
"""The backend every generated file has its one replica on (registered, never opened)."""

# =================================================================================================
# Storage access.  The ONLY code here that knows how an engine lays out its entries: it writes the
# generated tree straight into the storage, bypassing the Catalog API (which would take hours for
# 10 M entries).  Update these functions when an engine's storage changes; everything measured
# goes through the public Catalog API.
# =================================================================================================

_REAL_SQLITE_CONNECT = sqlite3.connect


def _sqlite_row_writer() -> tuple[str, Callable[[Entry], tuple[Any, ...]]]:
    """(INSERT statement, Entry -> row) in the SQLite engine's format, checked by a round trip
    through the engine's own reader."""
    from vdir.catalog import sqlite as engine

    cols = [c.strip() for c in engine._ENTRY_COLS.split(",")]
    special: dict[str, Callable[[Entry], Any]] = {
        "xattrs": lambda e: engine._dump_xattrs(e.xattrs),
        "replicas": lambda e: engine._dump_replicas(e.replicas),
    }
    def plain(col: str) -> Callable[[Entry], Any]:
        return lambda e: getattr(e, col)

    getters = [special.get(c) or plain(c) for c in cols]

    def row(e: Entry) -> tuple[Any, ...]:
        return tuple(g(e) for g in getters)

    probe = _file_entry(2, ROOT_ID, "probe", "probe")
    if engine._row_to_entry(row(probe)) != probe:
        raise SystemExit("bench: the SQLite row format changed; update _sqlite_row_writer in bench/catalog.py")
    # OR IGNORE: a resumed generation may write again the batch that was being written
    return f"INSERT OR IGNORE INTO entries ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", row


@contextlib.contextmanager
def sqlite_bulk(path: str) -> Iterator[Callable[[list[Entry]], None]]:
    """``write(batch)``: insert entries (ids set) and their replica index rows, one transaction
    per batch.  The catalog must exist (schema and root made by the engine)."""
    insert, row = _sqlite_row_writer()
    conn = _REAL_SQLITE_CONNECT(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")  # generation only; a crash means generating again

    def write(batch: list[Entry]) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(insert, map(row, batch))
        with_replicas = [e for e in batch if e.replicas]
        # the engine's mirrors of the replica lists (see SQLiteCatalog._set_replica_index)
        conn.executemany("INSERT OR IGNORE INTO replica_index VALUES (?, ?)",
                         [(b, e.id) for e in with_replicas for b in {r.backend for r in e.replicas}])
        conn.executemany("INSERT OR IGNORE INTO replica_keys VALUES (?, ?, ?)",
                         [(r.backend, r.key, e.id) for e in with_replicas for r in e.replicas])
        conn.execute("COMMIT")

    try:
        yield write
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def _mongo_doc_writer() -> Callable[[Entry], dict[str, Any]]:
    """Entry -> document in the MongoDB engine's format, checked by a round trip through the
    engine's own reader."""
    from vdir.catalog import mongo as engine

    def doc(e: Entry) -> dict[str, Any]:
        return engine._entry_doc(e, e.id, e.version)

    probe = _file_entry(2, ROOT_ID, "probe", "probe")
    if engine._to_entry(doc(probe)) != probe:
        raise SystemExit("bench: the MongoDB document format changed; update _mongo_doc_writer in bench/catalog.py")
    return doc


@contextlib.contextmanager
def mongo_bulk(url: str) -> Iterator[Callable[[list[Entry]], None]]:
    """``write(batch)``: unordered ``insert_many`` of the entries (ids set) into the catalog
    named by ``url`` (made by the engine first); afterwards the id counter is moved past them."""
    import pymongo

    doc = _mongo_doc_writer()
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(url, serverSelectionTimeoutMS=10_000)
    db = client.get_default_database()
    highest = 0

    def write(batch: list[Entry]) -> None:
        nonlocal highest
        try:
            db["entries"].insert_many([doc(e) for e in batch], ordered=False)
        except pymongo.errors.BulkWriteError as exc:
            # a resumed generation may write again the batch that was being written
            if any(err.get("code") != 11000 for err in exc.details.get("writeErrors", [])) or exc.details.get(
                    "writeConcernErrors"):
                raise
        highest = max(highest, max(e.id for e in batch))

    try:
        yield write
        # ids handed out by MongoCatalog._new_entry_id continue after the generated ones
        # (harmless if the engine no longer uses the counter)
        db["counters"].update_one({"_id": "entries"}, {"$max": {"seq": highest}}, upsert=True)
    finally:
        client.close()


# =================================================================================================
# Round-trip counting (the engines are not touched: a driver listener / a connection hook).
# =================================================================================================


class RoundTrips:
    """Commands (MongoDB) or statements (SQLite) issued by this process (``n``, all threads) and
    by the calling thread (``mine()``; driver listeners and trace callbacks run in the thread
    that issues the command)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._local = threading.local()
        self.n = 0

    def add(self, *_: object) -> None:
        with self._lock:
            self.n += 1
        self._local.n = getattr(self._local, "n", 0) + 1

    def mine(self) -> int:
        return int(getattr(self._local, "n", 0))


TRIPS = RoundTrips()
_HOOKED: set[str] = set()


def count_round_trips(engine: str) -> None:
    """From now on, count what catalogs opened in this process send to their storage."""
    if engine in _HOOKED:
        return
    _HOOKED.add(engine)
    if engine == "sqlite":
        def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
            conn = _REAL_SQLITE_CONNECT(*args, **kwargs)
            conn.set_trace_callback(TRIPS.add)
            return conn

        sqlite3.connect = connect  # type: ignore[assignment]
    else:
        from pymongo import monitoring

        class Listener(monitoring.CommandListener):
            def started(self, event: monitoring.CommandStartedEvent) -> None:
                TRIPS.add()

            def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
                pass

            def failed(self, event: monitoring.CommandFailedEvent) -> None:
                pass

        monitoring.register(Listener())


@contextlib.contextmanager
def counted() -> Iterator[dict[str, float]]:
    """``{"trips": n, "s": seconds}`` of the block, filled in when it ends."""
    out: dict[str, float] = {}
    before = TRIPS.n
    t0 = time.perf_counter()
    try:
        yield out
    finally:
        out["s"] = time.perf_counter() - t0
        out["trips"] = TRIPS.n - before


# =================================================================================================
# The tree.
# =================================================================================================

BASE_TIME = 1_767_225_600.0  # 2026-01-01, fixed so two generations are identical


def _file_entry(entry_id: int, parent_id: int, name: str, path: str) -> Entry:
    size = (entry_id * 7919) % 50_000_000
    digest = f"{(entry_id * 0x9E3779B97F4A7C15) & ((1 << 128) - 1):032x}"
    return Entry(
        id=entry_id, parent_id=parent_id, name=name, type=FILE, mode=0o644, uid=1000, gid=1000, size=size,
        mtime=BASE_TIME + entry_id, ctime=BASE_TIME + entry_id, hash=digest, version=1,
        blocks="20:" + digest[:12],
        replicas=[Replica(backend=BULK_BACKEND, key=path.lstrip("/"), size=size, hash=digest, etag=digest[:16],
                          verified_at=BASE_TIME)],
    )


def _dir_entry(entry_id: int, parent_id: int, name: str) -> Entry:
    return Entry(id=entry_id, parent_id=parent_id, name=name, type=DIR, mode=0o755, uid=1000, gid=1000,
                 mtime=BASE_TIME, ctime=BASE_TIME, version=1)


CHAIN_DIRS = 7
"""``l2``..``l8`` below ``/deep/cK``: files at depth 10."""


@dataclass
class Shape:
    """How ``n`` entries (the root not counted) are laid out; every name is computable, so paths
    to sample are never stored."""

    n: int
    ls: int
    sub_p: int
    sub_q: int
    sub_files: int
    chains: int
    chain_files: int
    data_dirs: int
    data_files: int

    @classmethod
    def for_entries(cls, n: int) -> Shape:
        ls = min(100_000, n // 4)
        sub = min(1_000_000, n // 4)
        side = max(1, math.isqrt(max(1, sub // 100)))
        sub_files = sub - side - side * side
        chains = max(10, min(1000, n // 10_000))
        chain_files = 10
        used = (1 + ls) + (1 + sub) + (1 + chains * (1 + CHAIN_DIRS + chain_files)) + 1
        rest = n - used
        data_dirs = max(1, rest // 1000)
        data_files = rest - data_dirs
        if sub_files < side * side or data_files < data_dirs:
            raise SystemExit(f"--entries {n} is too small for the tree (at least 20000)")
        return cls(n, ls, side, side, sub_files, chains, chain_files, data_dirs, data_files)

    @property
    def sub_descendants(self) -> int:
        return self.sub_p + self.sub_p * self.sub_q + self.sub_files

    @staticmethod
    def _split(total: int, parts: int, i: int) -> int:
        return total // parts + (1 if i < total % parts else 0)

    def data_path(self, rng: random.Random) -> str:
        a = rng.randrange(self.data_dirs)
        return f"/data/d{a:06d}/f{rng.randrange(self._split(self.data_files, self.data_dirs, a)):06d}"

    def deep_path(self, rng: random.Random) -> str:
        chain = "/".join(f"l{i}" for i in range(2, 2 + CHAIN_DIRS))
        return f"/deep/c{rng.randrange(self.chains):04d}/{chain}/f{rng.randrange(self.chain_files):02d}"

    def sub_probe(self, top: str = "/sub") -> str:
        return f"{top}/p0000/q0000/f00000"

    def entries(self) -> Iterator[Entry]:
        """Every entry, parents before children, ids 2, 3, ... in order."""
        ids = iter(range(ROOT_ID + 1, ROOT_ID + 1 + self.n + 1))
        ls = _dir_entry(next(ids), ROOT_ID, "ls")
        yield ls
        for i in range(self.ls):
            yield _file_entry(next(ids), ls.id, f"file-{i:07d}.dat", f"/ls/file-{i:07d}.dat")

        sub = _dir_entry(next(ids), ROOT_ID, "sub")
        yield sub
        leaves = self.sub_p * self.sub_q
        for p in range(self.sub_p):
            pd = _dir_entry(next(ids), sub.id, f"p{p:04d}")
            yield pd
            for q in range(self.sub_q):
                qd = _dir_entry(next(ids), pd.id, f"q{q:04d}")
                yield qd
                prefix = f"/sub/{pd.name}/{qd.name}/"
                for f in range(self._split(self.sub_files, leaves, p * self.sub_q + q)):
                    yield _file_entry(next(ids), qd.id, f"f{f:05d}", f"{prefix}f{f:05d}")

        deep = _dir_entry(next(ids), ROOT_ID, "deep")
        yield deep
        for c in range(self.chains):
            parent = _dir_entry(next(ids), deep.id, f"c{c:04d}")
            yield parent
            path = f"/deep/{parent.name}"
            for level in range(2, 2 + CHAIN_DIRS):
                parent = _dir_entry(next(ids), parent.id, f"l{level}")
                path += f"/l{level}"
                yield parent
            for f in range(self.chain_files):
                yield _file_entry(next(ids), parent.id, f"f{f:02d}", f"{path}/f{f:02d}")

        data = _dir_entry(next(ids), ROOT_ID, "data")
        yield data
        first_dir = next(ids)
        dir_ids = range(first_dir, first_dir + self.data_dirs)
        yield _dir_entry(first_dir, data.id, "d000000")
        for a in range(1, self.data_dirs):
            yield _dir_entry(next(ids), data.id, f"d{a:06d}")
        for a, dir_id in enumerate(dir_ids):
            for f in range(self._split(self.data_files, self.data_dirs, a)):
                yield _file_entry(next(ids), dir_id, f"f{f:06d}", f"/data/d{a:06d}/f{f:06d}")


def generate(shape: Shape, write: Callable[[list[Entry]], None], label: str, batch_size: int,
             after: int = ROOT_ID, written: Callable[[int], None] | None = None) -> float:
    """Stream the tree into ``write`` in batches, skipping ids up to ``after`` (written by an
    interrupted run); ``written(id)`` after each batch; progress on stderr; returns seconds."""
    t0 = time.perf_counter()
    last = t0
    skipped = max(0, after - ROOT_ID)
    done = skipped
    batch: list[Entry] = []

    def flush() -> None:
        nonlocal done, batch, last
        write(batch)
        done += len(batch)
        if written is not None:
            written(batch[-1].id)
        batch = []
        now = time.perf_counter()
        if now - last >= 10:
            rate = (done - skipped) / (now - t0)
            print(f"  {label}: {done:,}/{shape.n:,} entries ({100 * done / shape.n:.0f}%, {rate:,.0f}/s, "
                  f"~{(shape.n - done) / rate:,.0f} s left)", file=sys.stderr, flush=True)
            last = now

    for entry in shape.entries():
        if entry.id <= after:
            continue
        batch.append(entry)
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    if done != shape.n:
        raise RuntimeError(f"generated {done} entries, expected {shape.n}")
    elapsed = time.perf_counter() - t0
    print(f"  {label}: {done - skipped:,} entries in {elapsed:,.1f} s ({(done - skipped) / elapsed:,.0f}/s)",
          file=sys.stderr, flush=True)
    return elapsed


# =================================================================================================
# Servers and places.
# =================================================================================================


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"secantusd-py exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"secantusd-py does not listen on 127.0.0.1:{port} after {timeout}s")


@contextlib.contextmanager
def mongodb_uri(workdir: Path, cache_size: str | None = None) -> Iterator[tuple[str, str]]:
    """(server URI, description): the given server, or a SecantusDB started for this run with
    its data in ``workdir/secantus`` (kept there: a later run on the same directory reopens it)."""
    given = os.environ.get("VDIR_TEST_MONGODB_URI")
    if given:
        yield given, "VDIR_TEST_MONGODB_URI"
        return
    exe = Path(sys.executable).parent / "secantusd-py"
    binary = str(exe) if exe.exists() else shutil.which("secantusd-py")
    if not binary:
        raise SystemExit("secantusd-py is not installed (pip install secantusdb) and VDIR_TEST_MONGODB_URI is not set")
    port = _free_port()
    cmd = [binary, "--host", "127.0.0.1", "--port", str(port), "--storage-path", str(workdir / "secantus"),
           "--log-level", "WARNING"]
    if cache_size:
        cmd += ["--cache-size", cache_size]
    log = open(workdir / "secantusd.log", "ab")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_port(port, proc)
        yield f"mongodb://127.0.0.1:{port}/", f"secantusd-py on 127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(120)
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


MANIFEST = "manifest.json"


def _read_manifest(workdir: Path) -> dict[str, Any]:
    path = workdir / MANIFEST
    return json.loads(path.read_text()) if path.exists() else {"engines": {}}


def _write_manifest(workdir: Path, manifest: dict[str, Any]) -> None:
    tmp = workdir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(workdir / MANIFEST)


def prepare(engine: str, url: str, place: str, shape: Shape, workdir: Path, reuse: bool, batch: int) -> float | None:
    """Make sure ``url`` holds the generated tree: generate it (returns seconds) or reuse the
    one the manifest of ``workdir`` records for ``place`` (returns None)."""
    manifest = _read_manifest(workdir)
    known = manifest["engines"].get(engine)
    if known and known.get("shape") == asdict(shape) and known.get("place") == place and known.get("complete"):
        print(f"{engine}: reusing the {shape.n:,}-entry catalog generated in {known['generate_s']:,.0f} s",
              file=sys.stderr, flush=True)
        return None
    if reuse:
        raise SystemExit(f"--reuse {workdir}: no complete {engine} catalog of {shape.n:,} entries there (use --keep)")
    resumed = known is not None and known.get("shape") == asdict(shape) and known.get("place") == place
    after = int(known.get("written_through", ROOT_ID)) if known and resumed else ROOT_ID
    before_s = float(known.get("partial_s", 0.0)) if known and resumed else 0.0
    print(f"{engine}: generating {shape.n:,} entries in bulk" + (f", resuming after id {after:,}" if resumed else "")
          + " ...", file=sys.stderr, flush=True)
    with open_catalog(url) as cat:  # the engine makes its schema and root
        cat.put_backend(BackendRecord(name=BULK_BACKEND, url="memory://bench"))
        if not resumed and cat.lookup(ROOT_ID, "ls") is not None:
            raise SystemExit(f"{engine}: {url} is not empty; use another --keep directory")
    record = {"place": place, "shape": asdict(shape), "complete": False, "written_through": after, "partial_s": before_s}
    manifest["engines"][engine] = record
    _write_manifest(workdir, manifest)
    t0 = time.perf_counter()

    def written(last_id: int) -> None:  # progress survives an interrupted run
        record.update(written_through=last_id, partial_s=before_s + time.perf_counter() - t0)
        _write_manifest(workdir, manifest)

    if engine == "sqlite":
        with sqlite_bulk(url.removeprefix("sqlite:///")) as write:
            elapsed = before_s + generate(shape, write, engine, batch, after, written)
    else:
        with mongo_bulk(url) as write:
            elapsed = before_s + generate(shape, write, engine, batch, after, written)
    record.update(complete=True, generate_s=elapsed)
    _write_manifest(workdir, manifest)
    return elapsed


# =================================================================================================
# Measurements, through the Catalog API.
# =================================================================================================


def _writer(engine: str, url: str, parent_id: int, prefix: str, count: int,
            start: Any, results: Any) -> None:
    """One concurrent writer (a process or a thread): its own Catalog, ``count`` creates."""
    count_round_trips(engine)
    with open_catalog(url) as cat:
        start.wait()
        before = TRIPS.mine()
        t0 = time.monotonic()
        for i in range(count):
            name = f"{prefix}-{i:06d}"
            cat.create(_file_entry(0, parent_id, name, f"writes/{prefix}/{name}").copy(id=0, version=0))
        t1 = time.monotonic()
        results.put((t0, t1, count, TRIPS.mine() - before))


def concurrent_creates(engine: str, url: str, parents: list[int], count: int, mode: str, tag: str) -> dict[str, float]:
    """``len(parents)`` writers, writer i creating ``count`` files in ``parents[i]``."""
    if mode == "process":
        ctx = multiprocessing.get_context("spawn")
        start: Any = ctx.Barrier(len(parents))
        results: Any = ctx.Queue()
        workers: list[Any] = [ctx.Process(target=_writer, args=(engine, url, p, f"{tag}{i}", count, start, results))
                              for i, p in enumerate(parents)]
    else:
        import queue

        start = threading.Barrier(len(parents))
        results = queue.Queue()
        workers = [threading.Thread(target=_writer, args=(engine, url, p, f"{tag}{i}", count, start, results))
                   for i, p in enumerate(parents)]
    for w in workers:
        w.start()
    got = [results.get(timeout=3600) for _ in workers]
    for w in workers:
        w.join()
    total = sum(g[2] for g in got)
    wall = max(g[1] for g in got) - min(g[0] for g in got)
    return {
        "rate": total / wall,
        "trips": sum(g[3] for g in got) / total,
        "latency": statistics.mean((g[1] - g[0]) / g[2] for g in got),  # one writer's time per create
        "writers": float(len(parents)),
    }


def _percentiles(timings: list[float]) -> tuple[float, float]:
    timings.sort()
    return statistics.median(timings), timings[min(len(timings) - 1, int(len(timings) * 0.99))]


def run_engine(engine: str, url: str, shape: Shape, samples: int, creates: int, mode: str) -> dict[str, dict[str, float]]:
    count_round_trips(engine)
    r: dict[str, dict[str, float]] = {}
    with counted() as c:
        cat = open_catalog(url)
    r["open"] = {"s": c["s"], "trips": c["trips"]}
    try:
        # a previous run stopped between its rename and the rename back
        for top in ("/", "/data"):
            moved = cat.lookup(cat.resolve(top).id, "sub-moved")
            if moved is not None and cat.lookup(ROOT_ID, "sub") is None:
                cat.rename(moved.id, ROOT_ID, "sub")

        rng = random.Random(12)
        for key, pick in (("resolve3", shape.data_path), ("resolve10", shape.deep_path)):
            paths = [pick(rng) for _ in range(samples)]
            for p in paths[:50]:  # warm up: connections, caches of the first pages
                cat.resolve(p)
            timings: list[float] = []
            before = TRIPS.n
            for p in paths:
                t0 = time.perf_counter()
                cat.resolve(p)
                timings.append(time.perf_counter() - t0)
            p50, p99 = _percentiles(timings)
            r[key] = {"p50": p50, "p99": p99, "trips": (TRIPS.n - before) / samples}

        ls_dir = cat.resolve("/ls")
        with counted() as c:
            listed = sum(1 for _ in cat.iter_children(ls_dir.id))
        if listed != shape.ls:
            raise RuntimeError(f"listed {listed} entries of /ls, expected {shape.ls}")
        r["ls"] = {"s": c["s"], "trips": c["trips"]}

        run = cat.create(Entry(name=f"writes-{uuid.uuid4().hex[:8]}", type=DIR, mode=0o755))
        solo = cat.create(Entry(name="solo", type=DIR, parent_id=run.id, mode=0o755))
        r["create1"] = concurrent_creates(engine, url, [solo.id], creates, mode, "solo")
        separate = [cat.create(Entry(name=f"w{i}", type=DIR, parent_id=run.id, mode=0o755)).id for i in range(4)]
        r["create4sep"] = concurrent_creates(engine, url, separate, creates, mode, "sep")
        shared = cat.create(Entry(name="shared", type=DIR, parent_id=run.id, mode=0o755))
        r["create4shared"] = concurrent_creates(engine, url, [shared.id] * 4, creates, mode, "shared")

        sub = cat.resolve("/sub")
        probe = cat.resolve(shape.sub_probe())
        data = cat.resolve("/data")
        # in place (same parent), then into another directory (the engines check for cycles)
        for key, parent_id, moved_to in (("rename", ROOT_ID, "/sub-moved"), ("move", data.id, "/data/sub-moved")):
            with counted() as c:
                cat.rename(sub.id, parent_id, "sub-moved")
            after = cat.resolve(shape.sub_probe(moved_to))
            if (after.id, after.version) != (probe.id, probe.version):
                raise RuntimeError("rename rewrote descendants (or lost them)")
            r[key] = {"s": c["s"], "trips": c["trips"]}
            cat.rename(sub.id, ROOT_ID, "sub")
    finally:
        cat.close()
    return r


# =================================================================================================
# Output.
# =================================================================================================

RTTS = (0.0005, 0.002)


def _ms(s: float) -> str:
    return f"{s * 1000:,.3f} ms" if s < 0.01 else f"{s * 1000:,.1f} ms" if s < 1 else f"{s:,.2f} s"


def _rows(shape: Shape) -> list[tuple[str, str, str]]:
    """(result key, field, label)."""
    return [
        ("open", "s", "open the catalog"),
        ("resolve3", "p50", "resolve depth 3, p50"),
        ("resolve3", "p99", "resolve depth 3, p99"),
        ("resolve10", "p50", "resolve depth 10, p50"),
        ("resolve10", "p99", "resolve depth 10, p99"),
        ("ls", "s", f"ls of a {shape.ls:,}-entry dir"),
        ("create1", "rate", "create, 1 writer (entries/s)"),
        ("create4sep", "rate", "create, 4 writers, separate dirs (entries/s)"),
        ("create4shared", "rate", "create, 4 writers, one shared dir (entries/s)"),
        ("rename", "s", f"rename a dir with {shape.sub_descendants:,} descendants"),
        ("move", "s", "move it into another dir"),
    ]


def _cell(key: str, field: str, m: dict[str, float], rtt: float | None = None) -> str:
    trips = m["trips"]
    if field == "rate":
        if rtt is None:
            return f"{m['rate']:,.0f}"
        # each writer also waits trips x RTT per create; the server is assumed not to be the limit
        return f"{m['rate'] * m['latency'] / (m['latency'] + trips * rtt):,.0f}"
    value = m[field] + (trips * rtt if rtt else 0.0)
    return _ms(value)


def _trips(m: dict[str, float]) -> str:
    t = m["trips"]
    return f"{t:,.0f}" if abs(t - round(t)) < 0.05 else f"{t:,.1f}"


def print_table(shape: Shape, results: dict[str, dict[str, dict[str, float]]], notes: list[str]) -> None:
    head = ["operation"]
    if "sqlite" in results:
        head += ["SQLite", "statements"]
    if "mongo" in results:
        head += ["MongoDB (local)", "round trips", *(f"at {rtt * 1000:g} ms RTT" for rtt in RTTS)]
    rows = [head]
    for key, field, label in _rows(shape):
        row = [label]
        if "sqlite" in results:
            m = results["sqlite"][key]
            row += [_cell(key, field, m), _trips(m)]
        if "mongo" in results:
            m = results["mongo"][key]
            row += [_cell(key, field, m), _trips(m), *(_cell(key, field, m, rtt) for rtt in RTTS)]
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))) + " |"

    print(f"\nCatalog of {shape.n:,} entries (+ root); per-operation round trips (creates: per create, resolve: per call)")
    print(line(rows[0]))
    print("|" + "|".join("-" * (w + 2) if i == 0 else "-" * (w + 1) + ":" for i, w in enumerate(widths)) + "|")
    for row in rows[1:]:
        print(line(row))
    print("MongoDB at an RTT: measured time + round trips x RTT; creates: measured rate x t / (t + trips x RTT), "
          "t = a writer's time per create.")
    for note in notes:
        print(note)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--entries", type=int, default=100_000, help="N, entries generated (default 100000; the issue's figure: 10000000)")
    parser.add_argument("--engines", default="sqlite,mongo", help="comma separated: sqlite, mongo")
    parser.add_argument("--samples", type=int, default=2000, help="resolve samples per depth (default 2000)")
    parser.add_argument("--creates", type=int, default=1000, help="creates per writer (default 1000)")
    parser.add_argument("--writers", choices=("process", "thread"), default="process",
                        help="concurrent writers are processes (default) or threads of one process")
    parser.add_argument("--batch", type=int, default=20_000, help="entries per bulk batch (default 20000)")
    parser.add_argument("--mongo-cache", help="SecantusDB --cache-size (e.g. 4G; default: the server's)")
    kept_group = parser.add_mutually_exclusive_group()
    kept_group.add_argument("--keep", metavar="DIR", help="generate into DIR (or reuse what is there) and keep it")
    kept_group.add_argument("--reuse", metavar="DIR", help="measure the catalog a --keep run left in DIR")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE")
    parser.add_argument("--generate-only", action="store_true", help="generate (or check) the catalog, measure nothing")
    args = parser.parse_args(argv)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = set(engines) - {"sqlite", "mongo"}
    if unknown or not engines:
        parser.error(f"unknown engine(s): {', '.join(sorted(unknown)) or '(none)'}")
    if args.entries < 20_000:
        parser.error("--entries must be at least 20000")
    shape = Shape.for_entries(args.entries)

    results: dict[str, dict[str, dict[str, float]]] = {}
    notes: list[str] = []
    with contextlib.ExitStack() as stack:
        kept = args.keep or args.reuse
        if kept:
            work = Path(kept).absolute()
            if args.reuse and not work.is_dir():
                parser.error(f"--reuse {work}: no such directory")
            work.mkdir(parents=True, exist_ok=True)
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vdir-bench-catalog-")))
        for engine in engines:
            if engine == "sqlite":
                url = f"sqlite:///{work}/catalog.db"
                generated = prepare(engine, url, url, shape, work, bool(args.reuse), args.batch)
                if not args.generate_only:
                    results[engine] = run_engine(engine, url, shape, args.samples, args.creates, args.writers)
            else:
                with mongodb_uri(work, args.mongo_cache) as (uri, where):
                    database = f"vdir_bench_{shape.n}" if kept else f"vdir_bench_{uuid.uuid4().hex[:12]}"
                    url = _with_database(uri, database)
                    # a server started here gets a new port each run: the place is its data directory
                    place = f"secantus:{work / 'secantus'}/{database}" if where.startswith("secantusd") else url
                    try:
                        generated = prepare(engine, url, place, shape, work, bool(args.reuse), args.batch)
                        if not args.generate_only:
                            results[engine] = run_engine(engine, url, shape, args.samples, args.creates, args.writers)
                    finally:
                        if not kept:
                            _drop_database(uri, database)
                    notes.append(f"MongoDB: {where}, on the same machine as the client.")
            if generated is not None:
                notes.append(f"{engine}: generated {shape.n:,} entries in bulk in {generated:,.1f} s "
                             f"({shape.n / generated:,.0f}/s).")
    notes.append(f"Concurrent writers: {args.writers}{'es' if args.writers == 'process' else 's'}, each with its own Catalog; {args.creates:,} creates each; "
                 f"{os.cpu_count()} CPUs shared by clients and server.")
    if args.json:
        Path(args.json).write_text(json.dumps({"shape": asdict(shape), "results": results, "notes": notes}, indent=2) + "\n")
    if results:
        print_table(shape, results, notes)
    else:
        print("\n".join(notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
