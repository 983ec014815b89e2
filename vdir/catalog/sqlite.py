"""The embedded catalog engine: one SQLite file in WAL mode.

* ``entries`` holds the tree's names (unique ``(parent_id, name)``; listing is an index range
  scan).  A name whose inode has one name holds it inline, with the file's replicas as a JSON
  column read together with the row; a name of a linked inode (``nlink`` >= 2) is a pointer row
  (``inode`` = the inode id, ``type``, placeholder attributes) and the inode a row of
  ``inodes`` (same columns, plus ``nlink``), read with a LEFT JOIN in the same statement (see
  the model in :mod:`vdir.catalog.base`).  Ids are assigned in the INSERT itself as one more
  than the largest id of either table: SQLite would reuse a deleted maximal rowid, which an
  inode that outlived its first name may still carry.  ``replica_index`` mirrors
  ``(backend, entry_id)`` so "what lives on backend X" is an index lookup, and ``replica_keys``
  mirrors ``(backend, key, entry_id)`` so "who uses this object" is one too; both are keyed by
  inode id, wherever the inode lives.
* ``meta.schema`` is the layout version; an older file is upgraded in place when opened
  (:func:`_migrate`, one transaction).
* ``tasks``: ``due`` is set while a task is unfinished (``max(not_before, created)`` while
  pending, the lease expiry while running) and indexed where not null, so claiming is one probe
  of that index; ``expire_at`` is set when a task finishes (now + ``task_retention``) and
  indexed, and every finish deletes up to :data:`PURGE_BATCH` expired tasks, so the history
  stays bounded at the cost of one index probe per finish.  The dedupe lookup uses the partial
  unique index on ``dedupe_key`` of unfinished tasks.  The clock is the host's
  (``time.time()``): every process sharing the file runs on this host.
* Every write runs in one ``BEGIN IMMEDIATE`` transaction, so compare-and-set checks and the
  change they guard are atomic across threads *and* processes (placement daemons, CLI runs and
  mounts may share the file).
* One connection per thread (SQLite connections are not shared between threads).

Names compare with SQLite's BINARY collation, i.e. by their UTF-8 bytes.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from vdir.catalog.base import (
    DIR,
    PENDING,
    ROOT_ID,
    RUNNING,
    SCHEMA_VERSION,
    TASK_RETENTION,
    BackendRecord,
    Catalog,
    Entry,
    Replica,
    Task,
    check_finish_state,
    check_no_dirs,
    new_task_id,
)
from vdir.errors import (
    AlreadyExists,
    CatalogError,
    Conflict,
    DirectoryNotEmpty,
    InvalidArgument,
    IsADirectory,
    NoSpace,
    NotADirectory,
    NotFound,
    NotPermitted,
    TransientError,
)

T = TypeVar("T")

MAX_IDLE = 8
"""Idle connections kept open for reuse."""
PURGE_BATCH = 64
"""Expired finished tasks deleted (at most) by each finish_task."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY,
    parent_id INTEGER,
    name TEXT NOT NULL,
    type TEXT NOT NULL,
    mode INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    gid INTEGER NOT NULL,
    size INTEGER NOT NULL,
    mtime REAL NOT NULL,
    ctime REAL NOT NULL,
    hash TEXT,
    version INTEGER NOT NULL,
    target TEXT,
    xattrs TEXT NOT NULL DEFAULT '{}',
    replicas TEXT NOT NULL DEFAULT '[]',
    blocks TEXT,
    rdev INTEGER NOT NULL DEFAULT 0,
    atime REAL,
    subdirs INTEGER NOT NULL DEFAULT 0,
    inode INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS entries_parent_name ON entries(parent_id, name);
CREATE TABLE IF NOT EXISTS inodes (
    id INTEGER PRIMARY KEY,
    type TEXT NOT NULL,
    mode INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    gid INTEGER NOT NULL,
    size INTEGER NOT NULL,
    mtime REAL NOT NULL,
    ctime REAL NOT NULL,
    hash TEXT,
    version INTEGER NOT NULL,
    target TEXT,
    xattrs TEXT NOT NULL DEFAULT '{}',
    replicas TEXT NOT NULL DEFAULT '[]',
    blocks TEXT,
    rdev INTEGER NOT NULL DEFAULT 0,
    atime REAL,
    nlink INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS replica_index (
    backend TEXT NOT NULL,
    entry_id INTEGER NOT NULL,
    PRIMARY KEY (backend, entry_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS replica_index_entry ON replica_index(entry_id);
CREATE TABLE IF NOT EXISTS replica_keys (
    backend TEXT NOT NULL,
    key TEXT NOT NULL,
    entry_id INTEGER NOT NULL,
    PRIMARY KEY (backend, key, entry_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS replica_keys_entry ON replica_keys(entry_id);
CREATE TABLE IF NOT EXISTS backends (
    name TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    options TEXT NOT NULL,
    cloud TEXT NOT NULL,
    region TEXT NOT NULL,
    tier TEXT NOT NULL,
    cost REAL NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    entry_id INTEGER NOT NULL,
    entry_version INTEGER NOT NULL,
    source TEXT,
    destination TEXT,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    last_error TEXT,
    lease_owner TEXT,
    lease_expires REAL,
    not_before REAL NOT NULL,
    dedupe_key TEXT,
    payload TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    due REAL,
    expire_at REAL
);
CREATE UNIQUE INDEX IF NOT EXISTS tasks_dedupe ON tasks(dedupe_key)
    WHERE dedupe_key IS NOT NULL AND state IN ('pending', 'running');
CREATE TABLE IF NOT EXISTS records (
    collection TEXT NOT NULL,
    key TEXT NOT NULL,
    doc TEXT NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (collection, key)
);
"""

# schema 3: created after _migrate (an older tasks table gets its columns there first)
_TASK_INDEXES = """
CREATE INDEX IF NOT EXISTS tasks_due ON tasks(due) WHERE due IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_expire ON tasks(expire_at) WHERE expire_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_state_created ON tasks(state, created);
CREATE INDEX IF NOT EXISTS entries_inode ON entries(inode) WHERE inode IS NOT NULL;
"""

_ENTRY_COLS = ("id, parent_id, name, type, mode, uid, gid, size, mtime, ctime, hash, version, target, xattrs, replicas, blocks,"
               " rdev, atime, subdirs")
_ATTRS = ("type", "mode", "uid", "gid", "size", "mtime", "ctime", "hash", "version", "target", "xattrs", "replicas",
          "blocks", "rdev", "atime")
"""The inode's columns: in ``entries`` for an inline name, in ``inodes`` for a linked one."""
_COLS = ("coalesce(e.inode, e.id), e.parent_id, e.name, " + ", ".join(f"iif(e.inode IS NULL, e.{c}, i.{c})" for c in _ATTRS)
         + ", e.subdirs, coalesce(i.nlink, 1)")
"""An entry as seen through the name row ``e`` (its inode ``i`` joined when it is a pointer)."""
_JOIN = "LEFT JOIN inodes i ON i.id = e.inode"
_SEL = f"SELECT {_COLS} FROM entries e {_JOIN}"
_SEL_ROW = f"SELECT {_COLS}, e.id, e.inode FROM entries e {_JOIN}"
"""``_SEL`` and the name row's own id and inode pointer."""
_NEW_ID = "(SELECT max(coalesce((SELECT max(id) FROM entries), 0), coalesce((SELECT max(id) FROM inodes), 0)) + 1)"
"""A fresh id, never one an inode or a name has (max(id) of a rowid table is one b-tree probe)."""
_POINTER = ("mode=0, uid=0, gid=0, size=0, mtime=0, ctime=0, hash=NULL, version=0, target=NULL, xattrs='{}', replicas='[]',"
            " blocks=NULL, rdev=0, atime=NULL, subdirs=0")
"""The placeholder attributes of a pointer row (version 0 never matches a compare-and-set)."""
_TASK_COLS = (
    "id, kind, entry_id, entry_version, source, destination, state, attempts, last_error, lease_owner, "
    "lease_expires, not_before, dedupe_key, payload, created, updated"
)


DEDUPE_SQL = f"SELECT {_TASK_COLS} FROM tasks WHERE dedupe_key=? AND state IN ('pending','running')"
"""The unfinished task with a dedupe key (the partial unique index tasks_dedupe)."""
CLAIM_SQL = f"SELECT {_TASK_COLS} FROM tasks WHERE due <= ?{{kinds}} ORDER BY due LIMIT 1"
"""The task due first (the partial index tasks_due); ``{kinds}`` is empty or ``AND kind IN (...)``."""


def _dump_replicas(replicas: builtins.list[Replica]) -> str:
    return json.dumps([r.__dict__ for r in replicas], separators=(",", ":"))


def _dump_xattrs(xattrs: dict[str, bytes]) -> str:
    return json.dumps({k: bytes(v).hex() for k, v in xattrs.items()}, separators=(",", ":"))


def _row_to_entry(row: tuple[Any, ...]) -> Entry:
    (id_, parent_id, name, type_, mode, uid, gid, size, mtime, ctime, hash_, version, target, xattrs, replicas, blocks,
     rdev, atime, subdirs, nlink) = row[:20]
    return Entry(
        id=id_, parent_id=parent_id, name=name, type=type_, mode=mode, uid=uid, gid=gid, size=size,
        mtime=mtime, ctime=ctime, hash=hash_, version=version, target=target, blocks=blocks,
        rdev=rdev, atime=mtime if atime is None else atime, subdirs=subdirs, nlink=nlink,
        xattrs={k: bytes.fromhex(v) for k, v in json.loads(xattrs).items()} if xattrs != "{}" else {},
        replicas=[Replica(**r) for r in json.loads(replicas)] if replicas != "[]" else [],
    )


_TASK_FIELDS = [c.strip() for c in _TASK_COLS.split(",")]


def _row_to_task(row: tuple[Any, ...]) -> Task:
    data = dict(zip(_TASK_FIELDS, row, strict=True))
    data["payload"] = json.loads(data["payload"])
    return Task(**data)


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back what is open; never let a second error hide the first one."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _migrate(conn: sqlite3.Connection, found: int) -> None:
    """Upgrade a catalog written with schema ``found`` to :data:`SCHEMA_VERSION`, in the
    transaction that opens it (all or nothing)."""
    if found < 2:  # 2: Entry.blocks, and the (backend, key) index behind replica_users
        columns = {row[1] for row in conn.execute("PRAGMA table_info(entries)")}
        if "blocks" not in columns:
            conn.execute("ALTER TABLE entries ADD COLUMN blocks TEXT")
        rows = conn.execute("SELECT id, replicas FROM entries WHERE replicas != '[]'")
        conn.executemany(
            "INSERT OR IGNORE INTO replica_keys VALUES (?, ?, ?)",
            ((r["backend"], r["key"], entry_id) for entry_id, replicas in rows for r in json.loads(replicas)),
        )
    if found < 3:  # 3: the task queue's due/expire_at columns and their indexes
        columns = {row[1] for row in conn.execute("PRAGMA table_info(tasks)")}
        for column in ("due", "expire_at"):
            if column not in columns:
                conn.execute(f"ALTER TABLE tasks ADD COLUMN {column} REAL")
        conn.execute("UPDATE tasks SET due = max(not_before, created) WHERE state = 'pending'")
        conn.execute("UPDATE tasks SET due = coalesce(lease_expires, 0) WHERE state = 'running'")
        conn.execute("UPDATE tasks SET expire_at = updated + ? WHERE state IN ('done', 'failed')", (TASK_RETENTION,))
        conn.execute("DROP INDEX IF EXISTS tasks_claim")  # replaced by tasks_due
        conn.execute("DROP INDEX IF EXISTS tasks_lease")
    if found < 4:  # 4: special files (rdev), atime (from mtime), each directory's count of subdirectories
        columns = {row[1] for row in conn.execute("PRAGMA table_info(entries)")}
        for column, decl in (("rdev", "INTEGER NOT NULL DEFAULT 0"), ("atime", "REAL"),
                             ("subdirs", "INTEGER NOT NULL DEFAULT 0")):
            if column not in columns:
                conn.execute(f"ALTER TABLE entries ADD COLUMN {column} {decl}")
        conn.execute("UPDATE entries SET atime = mtime WHERE atime IS NULL")
        conn.execute("UPDATE entries SET subdirs = (SELECT count(*) FROM entries c WHERE c.parent_id = entries.id"
                     " AND c.type = 'dir') WHERE type = 'dir'")
    if found < 5:  # 5: hard links: the inodes table (made by _SCHEMA), the pointer column; every entry stays inline
        columns = {row[1] for row in conn.execute("PRAGMA table_info(entries)")}
        if "inode" not in columns:
            conn.execute("ALTER TABLE entries ADD COLUMN inode INTEGER")


def _translate(path: str, exc: sqlite3.Error) -> Exception:
    """The one place SQLite errors become vdir errors."""
    text = str(exc)
    if "database or disk is full" in text:
        return NoSpace(f"catalog {path}: the disk is full ({text}); nothing was written")
    if isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text):
        return TransientError(f"catalog {path} is busy (another writer holds it): {text}")
    if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.IntegrityError):
        return CatalogError(f"catalog {path} is not a usable SQLite database ({text})")
    return CatalogError(f"catalog {path}: {text}")


class SQLiteCatalog(Catalog):
    """Catalog in one SQLite file; ``url`` is ``sqlite:///absolute/path.db`` (or ``sqlite:///:memory:``)."""

    def __init__(self, url: str, timeout: float = 30.0, *, create: bool = True) -> None:
        """Open the catalog file; with ``create`` a missing file is made and set up.

        Raises ``CatalogError`` (one line) when the file is missing and ``create`` is false, when
        its directory is missing, and when the file is not a vdir catalog (another program's
        SQLite database, or not SQLite at all): such a file is never extended with our tables."""
        self.url = url
        parts = urlsplit(url)
        raw = unquote(parts.netloc + parts.path) if parts.netloc else unquote(parts.path)
        if not raw or raw == "/":
            raise CatalogError(f"catalog URL {url!r} names no file (use sqlite:///path/to/catalog.db)")
        self.path = raw if raw == ":memory:" or raw == "/:memory:" else os.path.expanduser(raw)
        if self.path == "/:memory:":
            self.path = ":memory:"
        self._timeout = timeout
        self._lock = threading.RLock()  # serializes use of the one :memory: connection
        self._shared: sqlite3.Connection | None = None
        self._idle: builtins.list[sqlite3.Connection] = []
        self._pool_lock = threading.Lock()
        # writers of this process queue here: SQLite's own busy handler sleeps in steps of up to
        # 100 ms when another connection holds the write lock, which with a few threads writing
        # (placement workers, put -j, FUSE) cost more than the writes; other processes still
        # meet busy_timeout
        self._write_lock = threading.RLock()
        if self.path != ":memory:":
            parent = Path(self.path).parent
            if not create and not os.path.lexists(self.path):
                raise CatalogError(f"catalog {self.path} does not exist (check 'catalog:' in the config, "
                                   "or run 'vdir init' to create one)")
            if not parent.is_dir():
                raise CatalogError(f"catalog {self.path}: directory {parent} does not exist")
            if Path(self.path).is_dir():
                raise CatalogError(f"catalog {self.path} is a directory, not a SQLite file")
        self._init_schema()

    # -- connections -------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        # One statement per connection: the busy timeout is set by connect's ``timeout``,
        # foreign keys are off by default, and WAL mode is a property of the file (set once, by
        # _set_up); synchronous is per connection.
        try:
            conn = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.DatabaseError as exc:
            if "not a database" in str(exc):
                raise CatalogError(f"catalog {self.path} is not a vdir catalog (not a SQLite database)") from exc
            raise _translate(self.path, exc) from exc
        return conn

    @contextmanager
    def _borrow(self) -> Iterator[sqlite3.Connection]:
        """A connection for one operation.  Connections are pooled, not bound to threads: FUSE
        and thread pools come and go, and a connection per short-lived thread would leak."""
        if self.path == ":memory:":
            with self._lock:
                if self._shared is None:
                    self._shared = self._connect()
                yield self._shared
            return
        with self._pool_lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._connect()
        try:
            yield conn
        finally:
            with self._pool_lock:
                if len(self._idle) < MAX_IDLE:
                    self._idle.append(conn)
                    conn = None
            if conn is not None:
                conn.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: holds the write lock from the start, so reads inside it
        (compare-and-set checks) see what the write will change."""
        with self._write_lock, self._borrow() as conn:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise _translate(self.path, exc) from exc
            try:
                yield conn
            except BaseException:
                _rollback(conn)
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                _rollback(conn)  # a failed COMMIT may already have ended the transaction
                raise _translate(self.path, exc) from exc

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._borrow() as conn:
            try:
                return fn(conn)
            except sqlite3.Error as exc:
                raise _translate(self.path, exc) from exc

    def _init_schema(self) -> None:
        """One statement when the catalog is up to date (the schema row, written in the
        transaction that creates everything else); anything else runs :meth:`_set_up`."""
        def schema(c: sqlite3.Connection) -> str | None:
            try:
                row = c.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            except sqlite3.OperationalError as exc:
                if "no such table" not in str(exc):
                    raise
                return None
            except sqlite3.DatabaseError as exc:
                if "not a database" in str(exc):
                    raise CatalogError(f"catalog {self.path} is not a vdir catalog (not a SQLite database)") from exc
                raise
            return str(row[0]) if row else None

        found = self._read(schema)
        if found is not None and int(found) > SCHEMA_VERSION:
            raise CatalogError(
                f"catalog {self.path} has schema {found}, newer than this vdir understands ({SCHEMA_VERSION}); upgrade vdir"
            )
        if found is None or int(found) < SCHEMA_VERSION:
            self._set_up()

    def _set_up(self) -> None:
        """Create or upgrade the catalog, refusing a database of another program (checked by
        reading only, before anything, not even the WAL switch, touches the file)."""
        try:
            with self._borrow() as conn:
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                schema = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone() if "meta" in tables else None
                if tables and (schema is None or "entries" not in tables):
                    raise CatalogError(f"catalog {self.path} is not a vdir catalog (a SQLite database of another "
                                       f"program; tables: {', '.join(sorted(tables)[:5])})")
                conn.execute("PRAGMA journal_mode=WAL")
            with self._write() as conn:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                row = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
                if row is None:
                    conn.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
                elif int(row[0]) > SCHEMA_VERSION:
                    raise CatalogError(
                        f"catalog {self.path} has schema {row[0]}, newer than this vdir understands ({SCHEMA_VERSION}); upgrade vdir"
                    )
                elif int(row[0]) < SCHEMA_VERSION:
                    _migrate(conn, int(row[0]))
                    conn.execute("UPDATE meta SET value=? WHERE key='schema'", (str(SCHEMA_VERSION),))
                # -- task queue indexes (schema 3) --
                for statement in _TASK_INDEXES.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                if conn.execute("SELECT 1 FROM entries WHERE id=?", (ROOT_ID,)).fetchone() is None:
                    now = time.time()
                    conn.execute(
                        f"INSERT INTO entries ({_ENTRY_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        (ROOT_ID, None, "", DIR, 0o755, os.getuid(), os.getgid(), 0, now, now, None, 1, None, "{}", "[]", None,
                         0, now, 0),
                    )
        except sqlite3.Error as exc:
            raise _translate(self.path, exc) from exc

    # -- entries -----------------------------------------------------------------------------
    def _get(self, conn: sqlite3.Connection, entry_id: int) -> Entry | None:
        # the inline name, or the oldest name of a linked inode (the smallest row id: the name it
        # was created with while that one lives, as later names get larger ids)
        row = conn.execute(f"{_SEL} WHERE (e.id = ?1 AND e.inode IS NULL) OR e.inode = ?1 ORDER BY e.id LIMIT 1",
                           (entry_id,)).fetchone()
        return _row_to_entry(row) if row else None

    def _lookup(self, conn: sqlite3.Connection, parent_id: int, name: str) -> Entry | None:
        row = conn.execute(f"{_SEL} WHERE e.parent_id=? AND e.name=?", (parent_id, name)).fetchone()
        return _row_to_entry(row) if row else None

    @staticmethod
    def _lookup_row(conn: sqlite3.Connection, parent_id: int, name: str) -> tuple[Entry, int, int | None] | None:
        """(entry, the name row's own id, its inode pointer or None when inline)."""
        row = conn.execute(f"{_SEL_ROW} WHERE e.parent_id=? AND e.name=?", (parent_id, name)).fetchone()
        return (_row_to_entry(row), int(row[20]), row[21]) if row else None

    def get(self, entry_id: int) -> Entry:
        entry = self._read(lambda c: self._get(c, entry_id))
        if entry is None:
            raise NotFound(f"catalog entry {entry_id} not found")
        return entry

    def lookup(self, parent_id: int, name: str) -> Entry | None:
        return self._read(lambda c: self._lookup(c, parent_id, name))

    def list(self, parent_id: int, after: str | None = None, limit: int | None = None) -> builtins.list[Entry]:
        sql = f"{_SEL} WHERE e.parent_id=?"
        args: builtins.list[Any] = [parent_id]
        if after is not None:
            sql += " AND e.name > ?"
            args.append(after)
        sql += " ORDER BY e.name"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return self._read(lambda c: [_row_to_entry(r) for r in c.execute(sql, args)])

    def _check_parent(self, conn: sqlite3.Connection, parent_id: int | None) -> None:
        # (a linked file's first name keeps its id and type: NotADirectory, as for any file)
        row = conn.execute("SELECT type, name FROM entries WHERE id=?", (parent_id,)).fetchone() \
            if parent_id is not None else None
        if row is None:
            raise NotFound(f"parent directory {parent_id} does not exist")
        if row[0] != DIR:
            raise NotADirectory(f"parent {row[1]!r} is not a directory")

    @staticmethod
    def _touch(conn: sqlite3.Connection, dir_id: int | None, now: float, subdirs: int = 0) -> None:
        """A directory's mtime/ctime move forward when an entry is created, removed or renamed in
        it (its version does not change: it is not a compare-and-set write of the directory), and
        its count of subdirectories moves by ``subdirs``."""
        conn.execute("UPDATE entries SET mtime=max(mtime, ?), ctime=max(ctime, ?), subdirs=subdirs+? WHERE id=?",
                     (now, now, subdirs, dir_id))

    def _set_replica_index(self, conn: sqlite3.Connection, entry: Entry) -> None:
        self._drop_replica_index(conn, entry.id)
        conn.executemany(
            "INSERT OR IGNORE INTO replica_index VALUES (?, ?)", [(b, entry.id) for b in {r.backend for r in entry.replicas}]
        )
        conn.executemany("INSERT OR IGNORE INTO replica_keys VALUES (?, ?, ?)", [(r.backend, r.key, entry.id) for r in entry.replicas])

    @staticmethod
    def _drop_replica_index(conn: sqlite3.Connection, entry_id: int) -> None:
        conn.execute("DELETE FROM replica_index WHERE entry_id=?", (entry_id,))
        conn.execute("DELETE FROM replica_keys WHERE entry_id=?", (entry_id,))

    def create(self, entry: Entry) -> Entry:
        with self._write() as conn:
            self._check_parent(conn, entry.parent_id)
            if conn.execute("SELECT 1 FROM entries WHERE parent_id=? AND name=?", (entry.parent_id, entry.name)).fetchone():
                raise AlreadyExists(f"{entry.name!r} already exists in directory {entry.parent_id}")
            new = entry.copy(version=1, subdirs=0, nlink=1)
            cur = conn.execute(
                "INSERT INTO entries (id, parent_id, name, type, mode, uid, gid, size, mtime, ctime, hash, version, target,"
                f" xattrs, replicas, blocks, rdev, atime) VALUES ({_NEW_ID},?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (new.parent_id, new.name, new.type, new.mode, new.uid, new.gid, new.size, new.mtime, new.ctime,
                 new.hash, 1, new.target, _dump_xattrs(new.xattrs), _dump_replicas(new.replicas), new.blocks,
                 new.rdev, new.atime),
            )
            new.id = int(cur.lastrowid or 0)
            if new.replicas:
                self._set_replica_index(conn, new)
            self._touch(conn, new.parent_id, time.time(), 1 if new.type == DIR else 0)
            return new

    def _current(self, conn: sqlite3.Connection, entry_id: int, expected_version: int | None) -> Entry:
        current = self._get(conn, entry_id)
        if current is None:
            raise NotFound(f"catalog entry {entry_id} no longer exists")
        if expected_version is not None and current.version != expected_version:
            raise Conflict(
                f"{current.name!r} was changed by another writer (version {current.version}, expected {expected_version})"
            )
        return current

    def update(self, entry: Entry, expected_version: int) -> Entry:
        with self._write() as conn:
            current = self._current(conn, entry.id, expected_version)
            linked = current.nlink > 1  # the inode lives in ``inodes`` (see the module docstring)
            new = entry.copy(version=current.version + 1, subdirs=current.subdirs, nlink=current.nlink)
            if not linked:
                new.parent_id, new.name = current.parent_id, current.name
            conn.execute(
                f"UPDATE {'inodes' if linked else 'entries'} SET type=?, mode=?, uid=?, gid=?, size=?, mtime=?, ctime=?,"
                " hash=?, version=?, target=?, xattrs=?, replicas=?, blocks=?, rdev=?, atime=?"
                f" WHERE id=?{'' if linked else ' AND inode IS NULL'}",
                (new.type, new.mode, new.uid, new.gid, new.size, new.mtime, new.ctime, new.hash, new.version, new.target,
                 _dump_xattrs(new.xattrs), _dump_replicas(new.replicas), new.blocks, new.rdev, new.atime, new.id),
            )
            self._set_replica_index(conn, new)
            return new

    def link(self, entry_id: int, new_parent_id: int, new_name: str) -> Entry:
        with self._write() as conn:
            current = self._current(conn, entry_id, None)
            if current.type == DIR:
                raise NotPermitted(f"{current.name!r} is a directory: directories cannot be hard-linked")
            self._check_parent(conn, new_parent_id)
            if conn.execute("SELECT 1 FROM entries WHERE parent_id=? AND name=?", (new_parent_id, new_name)).fetchone():
                raise AlreadyExists(f"{new_name!r} already exists in directory {new_parent_id}")
            now = time.time()
            if current.nlink == 1:  # the first link: the inode moves out of its name, which becomes a pointer
                attrs = ", ".join(_ATTRS)
                conn.execute(f"INSERT INTO inodes (id, {attrs}, nlink) SELECT id, {attrs}, 1 FROM entries"
                             " WHERE id=? AND inode IS NULL", (entry_id,))
                conn.execute(f"UPDATE entries SET inode=id, {_POINTER} WHERE id=?", (entry_id,))
            conn.execute("UPDATE inodes SET nlink=nlink+1, version=version+1, ctime=? WHERE id=?", (now, entry_id))
            conn.execute(f"INSERT INTO entries (id, parent_id, name, type, mode, uid, gid, size, mtime, ctime, version, inode)"
                         f" VALUES ({_NEW_ID}, ?, ?, ?, 0, 0, 0, 0, 0, 0, 0, ?)", (new_parent_id, new_name, current.type, entry_id))
            self._touch(conn, new_parent_id, now)
            return current.copy(parent_id=new_parent_id, name=new_name, nlink=current.nlink + 1,
                                version=current.version + 1, ctime=now)

    def _name_row(self, conn: sqlite3.Connection, current: Entry, source: tuple[int, str] | None) -> tuple[int, int, str]:
        """(row id, parent_id, name) of the name of ``current`` that ``source`` names (see
        :meth:`Catalog.rename`): no statement for an entry with one name."""
        if current.nlink <= 1:
            if source is not None and source != (current.parent_id, current.name):
                raise NotFound(f"{source[1]!r} in directory {source[0]} is not a name of entry {current.id}")
            return current.id, current.parent_id or 0, current.name
        if source is None:
            raise InvalidArgument(f"entry {current.id} has {current.nlink} names: say which one (source)")
        row = conn.execute("SELECT id, inode FROM entries WHERE parent_id=? AND name=?", source).fetchone()
        if row is None or row[1] != current.id:
            raise NotFound(f"{source[1]!r} in directory {source[0]} is not a name of entry {current.id}")
        return int(row[0]), source[0], source[1]

    def _remove_name(self, conn: sqlite3.Connection, inode_id: int, row_id: int, nlink: int, now: float) -> int:
        """Remove one name row of ``inode_id``, which has ``nlink`` names; return the names left.
        The last name takes the inode (and its replica index) with it; a name that leaves one
        name behind inlines the inode into that name, which takes the inode id."""
        conn.execute("DELETE FROM entries WHERE id=?", (row_id,))
        if nlink <= 1:
            self._drop_replica_index(conn, inode_id)
            return 0
        if nlink > 2:
            conn.execute("UPDATE inodes SET nlink=nlink-1, version=version+1, ctime=? WHERE id=?", (now, inode_id))
            return nlink - 1
        attrs = ", ".join(c for c in _ATTRS if c not in ("version", "ctime"))
        conn.execute(f"UPDATE entries SET id=?1, inode=NULL, ({attrs}) = (SELECT {attrs} FROM inodes WHERE id=?1),"
                     " version=(SELECT version + 1 FROM inodes WHERE id=?1), ctime=?2 WHERE inode=?1", (inode_id, now))
        conn.execute("DELETE FROM inodes WHERE id=?", (inode_id,))
        return 1

    def rename(
        self,
        entry_id: int,
        new_parent_id: int,
        new_name: str,
        *,
        replace_existing: bool = False,
        expected_version: int | None = None,
        source: tuple[int, str] | None = None,
    ) -> tuple[Entry, Entry | None]:
        with self._write() as conn:
            if entry_id == ROOT_ID:
                raise InvalidArgument("the root directory cannot be moved")
            current = self._current(conn, entry_id, expected_version)
            row_id, old_parent, old_name = self._name_row(conn, current, source)
            current = current.copy(parent_id=old_parent, name=old_name)
            self._check_parent(conn, new_parent_id)
            if current.type == DIR:
                ancestor: int | None = new_parent_id
                while ancestor is not None:
                    if ancestor == entry_id:
                        raise InvalidArgument(f"cannot move directory {current.name!r} into itself")
                    found = conn.execute("SELECT parent_id FROM entries WHERE id=?", (ancestor,)).fetchone()
                    ancestor = found[0] if found else None
            replaced: Entry | None = None
            now = time.time()
            existing = self._lookup_row(conn, new_parent_id, new_name)
            if existing is not None and existing[0].id == entry_id and existing[1] != row_id:
                return current, None  # another name of the same inode: nothing changes (POSIX)
            if existing is not None and existing[0].id != entry_id:
                target, target_row, _ = existing
                if not replace_existing:
                    raise AlreadyExists(f"{new_name!r} already exists")
                if target.type == DIR and current.type != DIR:
                    raise IsADirectory(f"cannot replace directory {new_name!r} with a non-directory")
                if target.type != DIR and current.type == DIR:
                    raise NotADirectory(f"cannot replace non-directory {new_name!r} with a directory")
                if target.type == DIR and conn.execute("SELECT 1 FROM entries WHERE parent_id=? LIMIT 1", (target.id,)).fetchone():
                    raise DirectoryNotEmpty(f"directory {new_name!r} is not empty")
                left = self._remove_name(conn, target.id, target_row, target.nlink, now)
                replaced = target.copy(nlink=left, **({"version": target.version + 1, "ctime": now} if left else {}))
            if current.nlink > 1:
                conn.execute("UPDATE entries SET parent_id=?, name=? WHERE id=?", (new_parent_id, new_name, row_id))
                conn.execute("UPDATE inodes SET version=version+1, ctime=? WHERE id=?", (now, entry_id))
            else:
                conn.execute(
                    "UPDATE entries SET parent_id=?, name=?, version=version+1, ctime=? WHERE id=?",
                    (new_parent_id, new_name, now, entry_id),
                )
            moved_dir = 1 if current.type == DIR and current.parent_id != new_parent_id else 0
            self._touch(conn, new_parent_id, now, moved_dir - (1 if replaced is not None and replaced.type == DIR else 0))
            if current.parent_id != new_parent_id:
                self._touch(conn, current.parent_id, now, -moved_dir)
            moved = current.copy(parent_id=new_parent_id, name=new_name, version=current.version + 1, ctime=now)
            return moved, replaced

    def delete(self, entry_id: int, expected_version: int | None = None, *,
               source: tuple[int, str] | None = None) -> Entry:
        with self._write() as conn:
            if entry_id == ROOT_ID:
                raise InvalidArgument("the root directory cannot be deleted")
            current = self._current(conn, entry_id, expected_version)
            return self._delete_in(conn, current, source)

    def _delete_in(self, conn: sqlite3.Connection, current: Entry, source: tuple[int, str] | None) -> Entry:
        """:meth:`delete` of the name ``source`` of ``current`` (as just read), in ``conn``'s transaction."""
        row_id, parent_id, name = self._name_row(conn, current, source)
        if current.type == DIR and conn.execute("SELECT 1 FROM entries WHERE parent_id=? LIMIT 1", (current.id,)).fetchone():
            raise DirectoryNotEmpty(f"directory {current.name!r} is not empty")
        now = time.time()
        left = self._remove_name(conn, current.id, row_id, current.nlink, now)
        self._touch(conn, parent_id, now, -1 if current.type == DIR else 0)
        if not left:
            return current.copy(parent_id=parent_id, name=name, nlink=0)
        return current.copy(parent_id=parent_id, name=name, nlink=left, version=current.version + 1, ctime=now)

    def touch_atime(self, entry: Entry, atime: float) -> None:
        with self._write() as conn:
            if not conn.execute("UPDATE entries SET atime=max(coalesce(atime, mtime), ?) WHERE id=? AND inode IS NULL",
                                (atime, entry.id)).rowcount:
                conn.execute("UPDATE inodes SET atime=max(coalesce(atime, mtime), ?) WHERE id=?", (atime, entry.id))

    def walk(self, top_id: int) -> Iterator[tuple[str, Entry]]:
        # Depth first, a stack of paged child iterators: memory grows with depth, not width.
        stack: builtins.list[tuple[str, Iterator[Entry]]] = [("", self.iter_children(top_id))]
        while stack:
            prefix, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                continue
            rel = f"{prefix}{child.name}"
            yield rel, child
            if child.type == DIR:
                stack.append((rel + "/", self.iter_children(child.id)))

    def lookup_id(self, parent_id: int, name: str) -> tuple[int, str] | None:
        row = self._read(lambda c: c.execute("SELECT coalesce(inode, id), type FROM entries WHERE parent_id=? AND name=?",
                                             (parent_id, name)).fetchone())
        return (int(row[0]), str(row[1])) if row else None

    def locate(self, path: str) -> tuple[int | None, Entry | None]:
        # the base class's statements (one narrow indexed query per intermediate component,
        # no JSON to decode, the full row only for the last), on one borrowed connection
        if path == "/":
            return None, self.get(ROOT_ID)
        names = path[1:].split("/")

        def q(c: sqlite3.Connection) -> tuple[int | None, Entry | None]:
            parent = ROOT_ID
            for i, name in enumerate(names[:-1]):
                row = c.execute("SELECT id, type FROM entries WHERE parent_id=? AND name=?", (parent, name)).fetchone()
                if row is None:
                    raise NotFound(f"{path}: no such file or directory", path=path)
                if row[1] != DIR:
                    raise NotADirectory(f"{path}: {'/'.join(names[:i + 1])} is not a directory", path=path)
                parent = row[0]
            return parent, self._lookup(c, parent, names[-1])

        return self._read(q)

    def iter_replicas(self, backend: str | None = None) -> Iterator[tuple[Entry, Replica]]:
        # a page of inode ids (inline names and the inodes table, or the replica index), each
        # read through one name: the inline one, or the oldest pointer
        if backend is None:
            page = ("SELECT id FROM (SELECT id FROM entries WHERE id > ?2 AND replicas != '[]' ORDER BY id LIMIT 500)"
                    " UNION ALL SELECT id FROM (SELECT id FROM inodes WHERE id > ?2 AND replicas != '[]' ORDER BY id LIMIT 500)"
                    " ORDER BY 1 LIMIT 500")
        else:
            page = "SELECT entry_id FROM replica_index WHERE backend=?1 AND entry_id > ?2 ORDER BY entry_id LIMIT 500"
        sql = (f"WITH page(x) AS ({page}) SELECT {_COLS} FROM page JOIN entries e ON e.id = coalesce("
               "(SELECT id FROM entries WHERE id = page.x AND inode IS NULL), (SELECT min(id) FROM entries WHERE inode = page.x))"
               f" {_JOIN} ORDER BY page.x")
        last = 0
        while True:
            batch = self._read(lambda c, a=(backend, last): [_row_to_entry(r) for r in c.execute(sql, a)])  # type: ignore[misc]
            if not batch:
                return
            for entry in batch:
                for replica in entry.replicas:
                    if backend is None or replica.backend == backend:
                        yield entry, replica
            last = batch[-1].id

    def count_replicas(self, backend: str) -> int:
        return int(self._read(lambda c: c.execute("SELECT count(*) FROM replica_index WHERE backend=?", (backend,)).fetchone()[0]))

    def replica_users(self, backend: str, key: str) -> builtins.list[int]:
        return self._read(lambda c: [r[0] for r in c.execute(
            "SELECT entry_id FROM replica_keys WHERE backend=? AND key=?", (backend, key))])

    def replica_users_many(self, objects: Iterable[tuple[str, str]]) -> dict[tuple[str, str], builtins.list[int]]:
        # one statement: the pairs travel as one JSON parameter (no bound-variable limit)
        wanted = builtins.list(dict.fromkeys(objects))
        result: dict[tuple[str, str], builtins.list[int]] = {obj: [] for obj in wanted}
        if not wanted:
            return result
        rows = self._read(lambda c: c.execute(
            "SELECT k.backend, k.key, k.entry_id FROM json_each(?) j JOIN replica_keys k"
            " ON k.backend = json_extract(j.value, '$[0]') AND k.key = json_extract(j.value, '$[1]')",
            (json.dumps(wanted),)).fetchall())
        for backend, key, entry_id in rows:
            result[(backend, key)].append(int(entry_id))
        return result

    def delete_entries(self, entries: Sequence[Entry]) -> builtins.list[Entry]:
        # One transaction of four statements, whatever the number: the (id, version) pairs
        # travel as one JSON parameter; directories are never matched (they need delete's check),
        # nor are pointer names (``inode IS NULL``): the names of linked inodes, and entries that
        # changed, are looked at one by one afterwards, in the same transaction.
        check_no_dirs(entries)
        if not entries:
            return []
        pairs = json.dumps([[e.id, e.version] for e in entries])
        with self._write() as conn:
            deleted = {r[0] for r in conn.execute(
                "DELETE FROM entries WHERE (id, version) IN"
                " (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?))"
                " AND type != 'dir' AND inode IS NULL RETURNING id", (pairs,)).fetchall()}
            if deleted:
                gone = json.dumps(sorted(deleted))
                conn.execute("DELETE FROM replica_index WHERE entry_id IN (SELECT value FROM json_each(?))", (gone,))
                conn.execute("DELETE FROM replica_keys WHERE entry_id IN (SELECT value FROM json_each(?))", (gone,))
                # the directories emptied move their mtime/ctime forward, as _touch does for one
                now, parents = time.time(), json.dumps(sorted({e.parent_id for e in entries if e.id in deleted}))
                conn.execute("UPDATE entries SET mtime=max(mtime, ?), ctime=max(ctime, ?)"
                             " WHERE id IN (SELECT value FROM json_each(?))", (now, now, parents))
            if len(deleted) == len(entries):
                return []
            return self._delete_names(conn, [e for e in entries if e.id not in deleted])

    def _delete_names(self, conn: sqlite3.Connection, entries: Sequence[Entry]) -> builtins.list[Entry]:
        """The rest of :meth:`delete_entries`, one name at a time: a pointer name of the entry goes
        whatever the version; its last name only with the version the caller read plus the
        bumps of this call's own removals; an entry whose name no longer leads to it is kept if
        it still exists (it changed), else counted as deleted."""
        kept: builtins.list[Entry] = []
        bumps: dict[int, int] = {}
        for e in entries:
            found = self._lookup_row(conn, e.parent_id or 0, e.name)
            if found is not None and found[0].id == e.id and e.type != DIR:
                current, _, inode = found
                if inode is not None or current.version == e.version + bumps.get(e.id, 0):
                    removed = self._delete_in(conn, current, (e.parent_id or 0, e.name))
                    if removed.nlink:
                        bumps[e.id] = bumps.get(e.id, 0) + 1
                    continue
            if self._get(conn, e.id) is not None:
                kept.append(e)
        return kept

    def make_durable(self) -> None:
        # WAL mode with synchronous=NORMAL: a commit is in the -wal file but fsynced only at
        # checkpoints; syncing that file makes every commit so far durable (its frames are
        # appended in commit order), at the cost of one fsync instead of one per commit
        if self.path == ":memory:":
            return
        try:
            fd = os.open(self.path + "-wal", os.O_RDONLY)
        except FileNotFoundError:
            return  # checkpointed and removed: everything is in the database file, synced
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def stats(self) -> dict[str, int]:
        def q(c: sqlite3.Connection) -> dict[str, int]:
            # per inode: the inline names, and the inodes of linked names (counted once)
            entries, files, dirs, total = c.execute(
                "SELECT count(*), sum(type='file'), sum(type='dir'), coalesce(sum(CASE WHEN type='file' THEN size END), 0)"
                " FROM (SELECT type, size FROM entries WHERE inode IS NULL UNION ALL SELECT type, size FROM inodes)"
            ).fetchone()
            return {"entries": entries, "files": files or 0, "dirs": dirs or 0, "bytes": total or 0}

        return self._read(q)

    # -- backends ----------------------------------------------------------------------------
    def put_backend(self, record: BackendRecord) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO backends VALUES (?,?,?,?,?,?,?,?)",
                (record.name, record.url, json.dumps(record.options), record.cloud, record.region, record.tier,
                 record.cost, record.created),
            )

    @staticmethod
    def _backend(row: tuple[Any, ...]) -> BackendRecord:
        name, url, options, cloud, region, tier, cost, created = row
        return BackendRecord(name=name, url=url, options=json.loads(options), cloud=cloud, region=region, tier=tier,
                             cost=cost, created=created)

    def get_backend(self, name: str) -> BackendRecord:
        row = self._read(lambda c: c.execute("SELECT * FROM backends WHERE name=?", (name,)).fetchone())
        if row is None:
            raise NotFound(f"unknown backend {name!r}")
        return self._backend(row)

    def list_backends(self) -> builtins.list[BackendRecord]:
        return self._read(lambda c: [self._backend(r) for r in c.execute("SELECT * FROM backends ORDER BY name")])

    def delete_backend(self, name: str) -> None:
        with self._write() as conn:
            if conn.execute("DELETE FROM backends WHERE name=?", (name,)).rowcount == 0:
                raise NotFound(f"unknown backend {name!r}")

    # -- tasks -------------------------------------------------------------------------------
    def now(self) -> float:
        return time.time()

    def add_task(self, task: Task) -> Task:
        with self._write() as conn:
            if task.dedupe_key is not None:
                row = conn.execute(DEDUPE_SQL, (task.dedupe_key,)).fetchone()
                if row is not None:
                    return _row_to_task(row)
            task_id = task.id
            if task_id and conn.execute("SELECT 1 FROM tasks WHERE id=?", (task_id,)).fetchone():
                raise AlreadyExists(f"task {task_id} already exists")
            while not task_id or conn.execute("SELECT 1 FROM tasks WHERE id=?", (task_id,)).fetchone():
                task_id = new_task_id()
            now = time.time()
            conn.execute(
                "INSERT INTO tasks (id, kind, entry_id, entry_version, source, destination, state, attempts, last_error,"
                " lease_owner, lease_expires, not_before, dedupe_key, payload, created, updated, due)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (task_id, task.kind, task.entry_id, task.entry_version, task.source, task.destination, PENDING, 0, None,
                 None, None, task.not_before, task.dedupe_key, json.dumps(task.payload), now, now,
                 max(task.not_before, now)),
            )
            return Task(**{**task.__dict__, "id": task_id, "state": PENDING, "attempts": 0, "last_error": None,
                           "lease_owner": None, "lease_expires": None, "created": now, "updated": now})

    def claim_task(self, owner: str, lease_seconds: float, kinds: builtins.list[str] | None = None) -> Task | None:
        with self._write() as conn:
            now = time.time()
            args: builtins.list[Any] = [now, *(kinds or [])]
            sql = CLAIM_SQL.format(kinds=f" AND kind IN ({','.join('?' * len(kinds))})" if kinds else "")
            row = conn.execute(sql, args).fetchone()
            if row is None:
                return None
            task = _row_to_task(row)
            task.state, task.lease_owner, task.lease_expires = RUNNING, owner, now + lease_seconds
            task.attempts += 1
            task.updated = now
            conn.execute(
                "UPDATE tasks SET state=?, lease_owner=?, lease_expires=?, due=?, attempts=?, updated=? WHERE id=?",
                (RUNNING, owner, task.lease_expires, task.lease_expires, task.attempts, now, task.id),
            )
            return task

    def renew_lease(self, task_id: int, owner: str, lease_seconds: float) -> bool:
        with self._write() as conn:
            now = time.time()
            cur = conn.execute(
                "UPDATE tasks SET lease_expires=?, due=?, updated=? WHERE id=? AND state='running' AND lease_owner=?"
                " AND lease_expires >= ?",
                (now + lease_seconds, now + lease_seconds, now, task_id, owner, now),
            )
            return cur.rowcount == 1

    def finish_task(
        self,
        task_id: int,
        owner: str,
        state: str,
        error: str | None = None,
        retry_at: float | None = None,
        *,
        retry_in: float | None = None,
    ) -> bool:
        check_finish_state(state, retry_at, retry_in)
        with self._write() as conn:
            row = conn.execute("SELECT state, lease_owner FROM tasks WHERE id=?", (task_id,)).fetchone()
            if row is None or row[0] != RUNNING or row[1] != owner:
                return False
            now = time.time()
            if retry_at is not None or retry_in is not None:
                not_before = retry_at if retry_at is not None else now + (retry_in or 0.0)
                conn.execute(
                    "UPDATE tasks SET state='pending', lease_owner=NULL, lease_expires=NULL, not_before=?, due=?,"
                    " last_error=?, updated=? WHERE id=?",
                    (not_before, not_before, error, now, task_id),
                )
            else:
                conn.execute(
                    "UPDATE tasks SET state=?, lease_owner=NULL, lease_expires=NULL, last_error=coalesce(?, last_error),"
                    " updated=?, due=NULL, expire_at=? WHERE id=?",
                    (state, error, now, now + self.task_retention, task_id),
                )
                # the history stays bounded: a few expired tasks go with every finish (one index probe
                # when there are none)
                conn.execute(
                    "DELETE FROM tasks WHERE id IN (SELECT id FROM tasks WHERE expire_at <= ? ORDER BY expire_at LIMIT ?)",
                    (now, PURGE_BATCH),
                )
            return True

    def list_tasks(self, state: str | None = None, limit: int | None = None) -> builtins.list[Task]:
        sql = f"SELECT {_TASK_COLS} FROM tasks"
        args: builtins.list[Any] = []
        if state is not None:
            sql += " WHERE state=?"
            args.append(state)
        sql += " ORDER BY created, id"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return self._read(lambda c: [_row_to_task(r) for r in c.execute(sql, args)])

    def count_tasks(self) -> dict[str, int]:
        return self._read(lambda c: {s: n for s, n in c.execute("SELECT state, count(*) FROM tasks GROUP BY state")})

    def purge_tasks(self, state: str, older_than: float) -> int:
        with self._write() as conn:
            return conn.execute("DELETE FROM tasks WHERE state=? AND updated < ?", (state, older_than)).rowcount

    # -- records -----------------------------------------------------------------------------
    def put_record(self, collection: str, key: str, doc: dict[str, Any], expected_version: int | None = None,
                   *, stamp: str | None = None) -> int:
        if stamp is not None:
            doc = {**doc, stamp: time.time()}
        with self._write() as conn:
            row = conn.execute("SELECT version FROM records WHERE collection=? AND key=?", (collection, key)).fetchone()
            current = row[0] if row else 0
            if expected_version == 0 and row is not None:
                raise AlreadyExists(f"{collection} {key!r} already exists")
            if expected_version is not None and current != expected_version:
                if row is None:
                    raise NotFound(f"{collection} {key!r} does not exist")
                raise Conflict(f"{collection} {key!r} was changed by another writer (version {current}, expected {expected_version})")
            conn.execute(
                "INSERT OR REPLACE INTO records VALUES (?,?,?,?)", (collection, key, json.dumps(doc), current + 1)
            )
            return int(current + 1)

    def get_record(self, collection: str, key: str) -> tuple[dict[str, Any], int]:
        row = self._read(
            lambda c: c.execute("SELECT doc, version FROM records WHERE collection=? AND key=?", (collection, key)).fetchone()
        )
        if row is None:
            raise NotFound(f"{collection} {key!r} not found")
        return json.loads(row[0]), int(row[1])

    def list_records(self, collection: str) -> builtins.list[tuple[str, dict[str, Any], int]]:
        return self._read(
            lambda c: [
                (k, json.loads(d), v)
                for k, d, v in c.execute("SELECT key, doc, version FROM records WHERE collection=? ORDER BY key", (collection,))
            ]
        )

    def delete_record(self, collection: str, key: str) -> bool:
        with self._write() as conn:
            return conn.execute("DELETE FROM records WHERE collection=? AND key=?", (collection, key)).rowcount > 0

    def put_records(self, collection: str, docs: dict[str, dict[str, Any]]) -> None:
        # one statement (atomic on its own, so no BEGIN/COMMIT around it)
        if not docs:
            return
        rows = json.dumps([[key, json.dumps(doc)] for key, doc in docs.items()])
        with self._write_lock, self._borrow() as conn:
            try:
                conn.execute(
                    "INSERT INTO records (collection, key, doc, version)"
                    " SELECT ?, json_extract(value, '$[0]'), json_extract(value, '$[1]'), 1 FROM json_each(?) WHERE true"
                    " ON CONFLICT (collection, key) DO UPDATE SET doc = excluded.doc, version = version + 1",
                    (collection, rows),
                )
            except sqlite3.Error as exc:
                raise _translate(self.path, exc) from exc

    def delete_records(self, collection: str, keys: Iterable[str]) -> int:
        wanted = json.dumps(builtins.list(dict.fromkeys(keys)))
        with self._write_lock, self._borrow() as conn:
            try:
                return int(conn.execute("DELETE FROM records WHERE collection=? AND key IN (SELECT value FROM json_each(?))",
                                        (collection, wanted)).rowcount)
            except sqlite3.Error as exc:
                raise _translate(self.path, exc) from exc

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        with self._pool_lock:
            idle, self._idle = self._idle, []
        with self._lock:
            if self._shared is not None:
                idle.append(self._shared)
                self._shared = None
        for conn in idle:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
