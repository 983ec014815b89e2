"""The catalog interface: inode-style entries, replicas, backends, tasks and small records.

Two engines implement it (``catalog/sqlite.py``, ``catalog/mongo.py``) and pass one conformance
suite (``tests/test_catalog_conformance.py``).

Model
-----
* An :class:`Entry` is a directory, file, symlink or special file (FIFO, character or block
  device, unix-domain socket: :data:`SPECIAL`, which hold no bytes and have no replicas; a
  device's number is ``rdev``), identified by an integer ``id``; the root
  has ``id == ROOT_ID`` and ``parent_id is None``.  ``(parent_id, name)`` is unique.
  Listing a directory is an index scan on ``parent_id``; renaming a directory is one write of
  its own row, whatever lies below it.
* Every entry carries a ``version``: :meth:`Catalog.create` sets it to 1 and every successful
  write bumps it by one.  Writes that take ``expected_version`` are compare-and-set: when the
  stored version differs they raise :class:`~vdir.errors.Conflict` and change nothing.
* A file's :class:`Replica` list says where its bytes are.  The catalog never interprets it
  beyond storing, indexing by backend and by ``(backend, key)``, and returning it.
* Schema versions: both engines record the version of the layout they wrote and upgrade an older
  catalog in place when they open it (``SCHEMA_VERSION`` below, migrations in each engine); a
  catalog newer than the code is refused.  Version 2 added ``Entry.blocks`` and the
  ``(backend, key)`` index behind :meth:`Catalog.replica_users`.  Version 3 reshaped the task
  queue (below): a ``due`` time on every unfinished task, an expiry time on every finished one,
  and the indexes that serve dedupe, claim and expiry.  Version 4 added the special file types,
  ``Entry.rdev``, ``Entry.atime`` (filled from ``mtime`` on upgrade) and ``Entry.subdirs``.
  Version 5 added hard links: the ``inodes`` table/collection and pointer names (below); every
  existing entry is its own inline inode with ``nlink`` 1, so the upgrade writes no entry.
* Hard links: names and inodes are separate (as in JuiceFS).  ``Entry.id`` is the *inode* id:
  every name of one file returns the same ``id`` and ``nlink`` (its number of names; 1 for a
  directory, whose ``st_nlink`` comes from ``subdirs``).  :meth:`Catalog.link` gives a
  non-directory a further name; ``parent_id``/``name`` of an entry read are the name it was
  reached through (lookup, list, locate, walk), or for reads by id (:meth:`Catalog.get`,
  :meth:`Catalog.iter_replicas`, ...) one of its names: the name it was created with while that
  one lives, else the same one every time.  :meth:`Catalog.update` changes the inode (every
  name sees it); :meth:`Catalog.rename` and :meth:`Catalog.delete` act on one name, which the
  caller names with ``source=(parent_id, name)`` when the entry has more than one; removing a
  name bumps the inode's version and sets its ctime, and the inode (with its replicas) goes
  with its last name.  The replica index, :meth:`Catalog.replica_users`, task ``entry_id`` and
  :meth:`Catalog.stats` are per inode.
* Storage of links (schema 5, both engines): the entries table/collection holds *names*.  A name
  whose inode has one name holds the inode inline — exactly the row/document of schema 4, its
  id the inode id — so an entry never linked costs what it cost before (every round trip count
  of ``tests/test_round_trips.py`` stands).  When a second name is made, the inode moves to the
  ``inodes`` table/collection (same id, every attribute, ``nlink``), each name becomes a
  *pointer* (``inode`` = the inode id, and ``type``, so resolving a path still reads one row
  per component); a pointer's own id is never exposed.  When ``nlink`` drops back to 1 the
  inode is inlined again into its last name (which takes the inode id): so "inline" and
  "``nlink == 1``" are the same thing, the unlinked code paths (and costs) stay exactly as they
  were, and the inode table only ever holds inodes with two names or more.  Reading a pointer
  joins its inode (SQLite: a LEFT JOIN in the same statement; MongoDB: one more ``find`` by
  ``_id`` for a page that holds pointers).
* A directory's ``subdirs`` counts its child directories (``st_nlink`` is ``2 + subdirs``).
  The engines maintain it in the same atomic write as create, delete and rename; ``update``
  never changes it (whatever the caller's copy says), nor does it change ``atime``'s meaning:
  :meth:`Catalog.touch_atime` moves ``atime`` forward without a new version (a read is not a
  change that compare-and-set writers must notice).
* :class:`Task` rows form the placement queue.  :meth:`Catalog.claim_task` is atomic (a
  compare-and-set on one task): two claimers never get the same task, and a task whose lease
  expired can be claimed again.  Every unfinished task has a ``due`` time on the catalog's clock
  (:meth:`Catalog.now`) — when it may be claimed: its ``not_before`` or the time it was queued
  while pending, its lease expiry while running — and claiming takes the task that is due
  first, an index range scan whose cost does not grow with the number of finished tasks.
  Finished tasks (done or failed) are kept for :attr:`Catalog.task_retention` seconds and then
  removed (a TTL index on MongoDB; on SQLite a few expired ones are removed by each finish).
* Times that decide who holds a task — lease expiry, ``not_before`` of a retry, ``created``,
  ``updated`` — and nodes' heartbeats (``put_record(..., stamp=...)``) are on the catalog's clock:
  the database server's on MongoDB (``$$NOW``), so hosts whose clocks disagree still agree on
  leases; the host's on SQLite (every process sharing the file runs on it).
* Task ids are made by the client (:func:`new_task_id`: no counter, no extra round trip); they
  are unique 63-bit integers, and only their order among tasks queued by one process in the
  same millisecond means anything.
* Small documents (nodes' heartbeats, VMs, policies, settings) live in named record
  collections: :meth:`Catalog.put_record` and friends.

Round trips.  Every method says what it costs; the figures are asserted by
``tests/test_round_trips.py`` (MongoDB commands, SQLite statements).  Opening an up-to-date
catalog reads one schema document; resolving a path of depth *d* costs *d* lookups (the root is
never read; intermediate directories are read as id and type only); listing reads one page per
query and never an empty one at the end; the bulk methods (:meth:`Catalog.delete_entries`,
:meth:`Catalog.replica_users_many`, :meth:`Catalog.put_records`, :meth:`Catalog.delete_records`)
cost one round trip per call in both engines, and have correct (slow) defaults here so that a
new engine works before it is fast.

Thread safety: an engine instance may be used from many threads at once.
"""

from __future__ import annotations

import builtins
import os
import secrets
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from vdir.errors import Conflict, InvalidArgument, NotADirectory, NotFound

ROOT_ID = 1
SCHEMA_VERSION = 5
"""The catalog layout this code writes; see the module docstring."""

TASK_RETENTION = 7 * 86400.0
"""Default seconds a finished (done or failed) task is kept before it expires."""

DIR = "dir"
FILE = "file"
SYMLINK = "symlink"
FIFO = "fifo"
CHR = "chr"
BLK = "blk"
SOCK = "sock"
SPECIAL = (FIFO, CHR, BLK, SOCK)
"""Special files: catalog entries only, never any bytes on a backend."""
DEVICES = (CHR, BLK)

# replica states
OK = "ok"
MISSING = "missing"
CORRUPT = "corrupt"


@dataclass
class Replica:
    """One copy of a file's bytes on one backend."""

    backend: str
    key: str
    size: int
    hash: str | None = None
    etag: str | None = None
    state: str = OK
    verified_at: float | None = None


@dataclass
class Entry:
    """One node of the virtual tree."""

    name: str
    type: str = FILE
    parent_id: int | None = ROOT_ID
    id: int = 0
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    size: int = 0
    mtime: float = field(default_factory=time.time)
    ctime: float = field(default_factory=time.time)
    hash: str | None = None
    """xxh3-128 of the content, hex; ``None`` when not yet known (e.g. a lazily linked object)."""
    version: int = 0
    target: str | None = None
    """Symlink target."""
    xattrs: dict[str, bytes] = field(default_factory=dict)
    replicas: list[Replica] = field(default_factory=list)
    blocks: str | None = None
    """Per-block hashes of the content, opaque to the catalog (see :mod:`vdir.hashing`);
    ``None`` when not known (entries written before schema 2, lazily linked objects)."""
    rdev: int = 0
    """Device number (``os.makedev(major, minor)``) of a character or block device; 0 otherwise."""
    atime: float = field(default_factory=time.time)
    """Last access; moved by :meth:`Catalog.touch_atime` (``relatime`` rules are the caller's)."""
    subdirs: int = 0
    """Of a directory: how many child directories it has, maintained by the catalog (read-only
    for callers: ``create`` stores 0, ``update`` keeps the stored count)."""
    nlink: int = 1
    """Of a non-directory: how many names its inode has (:meth:`Catalog.link`); maintained by
    the catalog (read-only for callers).  A directory keeps 1 here (its ``st_nlink`` is
    ``2 + subdirs``).  In what :meth:`Catalog.delete` and :meth:`Catalog.rename` return for a
    removed name: the names left (0: the inode and its replicas are gone)."""

    @property
    def is_dir(self) -> bool:
        return self.type == DIR

    @property
    def is_file(self) -> bool:
        return self.type == FILE

    @property
    def is_special(self) -> bool:
        return self.type in SPECIAL

    def copy(self, **changes: Any) -> Entry:
        """A deep-enough copy (replicas and xattrs are new containers) with ``changes`` applied."""
        base = replace(self, replicas=[replace(r) for r in self.replicas], xattrs=dict(self.xattrs))
        return replace(base, **changes) if changes else base


@dataclass
class BackendRecord:
    """A registered backend: how to open it and where it is.  Never holds secrets."""

    name: str
    url: str
    options: dict[str, Any] = field(default_factory=dict)
    cloud: str = "local"
    region: str = "local"
    tier: str = "standard"
    cost: float = 0.0
    created: float = field(default_factory=time.time)


# task states
PENDING = "pending"
RUNNING = "running"
DONE = "done"
FAILED = "failed"


def check_finish_state(state: str, retry_at: float | None, retry_in: float | None = None) -> None:
    """A task finishes as done or failed (or goes back to pending with ``retry_at``/``retry_in``)."""
    if retry_at is not None and retry_in is not None:
        raise InvalidArgument("give retry_at or retry_in, not both")
    if retry_at is None and retry_in is None and state not in (DONE, FAILED):
        raise InvalidArgument(f"a task finishes as {DONE!r} or {FAILED!r}, not {state!r}")


_ID_COUNTER_BITS = 24
_id_lock = threading.Lock()
_id_prefix = 0
_id_count = 1 << _ID_COUNTER_BITS  # forces a fresh prefix on first use


def _reset_task_ids() -> None:
    global _id_count
    _id_count = 1 << _ID_COUNTER_BITS  # a forked child must not repeat its parent's ids


os.register_at_fork(after_in_child=_reset_task_ids)


def new_task_id() -> int:
    """A fresh task id, made here without asking the database: 39 random bits (drawn per process,
    and again every 2**24 ids) followed by a 24-bit counter.  The ids one process makes
    increase, which orders the tasks it queues within one millisecond of the catalog's clock;
    two processes collide with negligible probability, and an engine that meets a collision
    retries with a new id.  Positive and below 2**63 (a BSON int64, a SQLite INTEGER)."""
    global _id_prefix, _id_count
    with _id_lock:
        if _id_count >> _ID_COUNTER_BITS:
            _id_prefix = secrets.randbits(39) or 1
            _id_count = secrets.randbits(_ID_COUNTER_BITS - 2)  # room before the next draw
        task_id = (_id_prefix << _ID_COUNTER_BITS) | _id_count
        _id_count += 1
        return task_id


def check_no_dirs(entries: Iterable[Entry]) -> None:
    """:meth:`Catalog.delete_entries` takes files and links only (a directory needs the
    emptiness check of :meth:`Catalog.delete`): ``InvalidArgument`` before anything is deleted."""
    if any(e.type == DIR for e in entries):
        raise InvalidArgument("delete_entries removes files and links only; delete directories one by one")


@dataclass
class Task:
    """One unit of placement work (replicate, verify, trim...)."""

    kind: str
    entry_id: int
    id: int = 0
    """0 asks :meth:`Catalog.add_task` for a new id; a caller may set one from :func:`new_task_id`
    and tell from the returned task whether its own was queued (same id) or an existing one
    with the same dedupe key came back."""
    entry_version: int = 0
    source: str | None = None
    destination: str | None = None
    state: str = PENDING
    attempts: int = 0
    last_error: str | None = None
    lease_owner: str | None = None
    lease_expires: float | None = None
    not_before: float = 0.0
    """Do not claim before this time on the catalog's clock (backoff after a failure)."""
    dedupe_key: str | None = None
    """At most one unfinished (pending/running) task per dedupe key; add_task returns the existing one."""
    payload: dict[str, Any] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    """When it was queued, on the catalog's clock (what the caller sets is replaced)."""
    updated: float = field(default_factory=time.time)
    """Its last change, on the catalog's clock."""


class Catalog(ABC):
    """Abstract catalog; see the module docstring for the model and guarantees."""

    url: str = ""
    task_retention: float = TASK_RETENTION
    """Seconds a task finished by this instance is kept (done or failed) before it expires; set it
    per process (``vdir placement run --task-retention``).  The expiry time is fixed when the task
    finishes."""

    # -- entries ----------------------------------------------------------------------------
    @abstractmethod
    def get(self, entry_id: int) -> Entry:
        """The entry with this id; ``NotFound`` if none."""

    @abstractmethod
    def lookup(self, parent_id: int, name: str) -> Entry | None:
        """The child ``name`` of ``parent_id``, or ``None``."""

    @abstractmethod
    def list(self, parent_id: int, after: str | None = None, limit: int | None = None) -> builtins.list[Entry]:
        """Children of ``parent_id`` ordered by name (byte order), starting after ``after``.

        With ``limit`` it returns at most that many, so a caller can page through a huge
        directory without holding it all in memory.
        """

    @abstractmethod
    def create(self, entry: Entry) -> Entry:
        """Insert a new entry and return it with its new ``id`` and ``version == 1``.

        ``AlreadyExists`` if ``(parent_id, name)`` is taken; ``NotFound`` if the parent does not
        exist; ``NotADirectory`` if the parent is not a directory.
        """

    @abstractmethod
    def update(self, entry: Entry, expected_version: int) -> Entry:
        """Replace the stored fields of the inode ``entry.id`` (all but id, parent_id, name,
        subdirs and nlink; every name of it sees the change) if its version is
        ``expected_version``; return it with the version bumped.  ``Conflict`` otherwise (also
        when another writer linked or unlinked it since: that bumps the version), ``NotFound`` if
        the entry is gone."""

    @abstractmethod
    def link(self, entry_id: int, new_parent_id: int, new_name: str) -> Entry:
        """Give the non-directory ``entry_id`` (file, symlink, special file) one more name,
        ``new_name`` in ``new_parent_id``; return the entry as seen through the new name: same
        ``id``, ``nlink`` + 1, version + 1, ctime now.  The new parent is touched as
        :meth:`create` touches it (mtime/ctime forward, version unchanged).  Atomic.

        ``AlreadyExists`` if the name is taken, ``NotFound`` if the entry or the parent is gone,
        ``NotADirectory`` if the parent is not a directory, ``NotPermitted`` for a directory.
        Costs: SQLite one transaction; MongoDB one transaction (a read of the entry, then the
        writes: the inode, the new name, the parent's touch) — the first link of an entry also
        moves its inode out of the name (see the module docstring)."""

    @abstractmethod
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
        """Move an entry in one atomic write; return (moved entry, replaced entry or None).

        ``source=(parent_id, name)`` says which name of the entry moves: required when it has
        more than one name (``InvalidArgument`` without it), ``NotFound`` when it is not a name
        of ``entry_id``; optional (and checked) otherwise.  Moving a name onto another name of
        the same inode succeeds and changes nothing (both names stay; POSIX).  When the replaced
        destination is one name of a linked inode, only that name goes: the replaced entry's
        ``nlink`` is the names it has left, 0 when its inode (and its use of its replicas) went.

        If the destination name exists: ``AlreadyExists`` unless ``replace_existing``; with it,
        a file/symlink destination is removed atomically with the move, a directory
        destination only when it is empty (``DirectoryNotEmpty`` otherwise) and only by a
        directory (``IsADirectory``/``NotADirectory`` on type mismatch).  Moving a directory
        into itself or its own descendant raises ``InvalidArgument``.  The moved entry's
        version is bumped; ``expected_version`` makes it a compare-and-set.
        """

    @abstractmethod
    def touch_atime(self, entry: Entry, atime: float) -> None:
        """Move the access time of ``entry`` (by id; its ``parent_id`` is the shard key) forward
        to ``atime``: never backward, no version bump, no effect on a vanished entry.  One write."""

    @abstractmethod
    def delete(self, entry_id: int, expected_version: int | None = None, *,
               source: tuple[int, str] | None = None) -> Entry:
        """Remove one name of an entry and return what was removed, its ``nlink`` the names
        left: 0 when this was the last and the inode (with its replicas) is gone.  Removing a
        name that is not the last bumps the inode's version and sets its ctime (POSIX).
        ``source=(parent_id, name)`` names the name, as for :meth:`rename` (required when the
        entry has several; ``expected_version`` is compared with the inode's version).  A
        directory with children raises ``DirectoryNotEmpty``; the root cannot be deleted
        (``InvalidArgument``)."""

    @abstractmethod
    def walk(self, top_id: int) -> Iterator[tuple[str, Entry]]:
        """Every entry below ``top_id`` (not itself), depth first, with its path relative to
        the top (``"a/b.txt"``); a linked file once per name (same id).  Streams: memory does
        not grow with the size of the tree."""

    @abstractmethod
    def iter_replicas(self, backend: str | None = None) -> Iterator[tuple[Entry, Replica]]:
        """(file entry, replica) for every replica, or only those on ``backend``; streams.  Per
        inode: a linked file's replicas come once, through one of its names."""

    @abstractmethod
    def count_replicas(self, backend: str) -> int:
        """How many inodes have a replica on ``backend`` (index-backed)."""

    @abstractmethod
    def replica_users(self, backend: str, key: str) -> builtins.list[int]:
        """Ids of the inodes with a replica at ``key`` on ``backend`` (index-backed).  The core
        asks before it deletes an object: bytes any entry still uses are never deleted."""

    @abstractmethod
    def make_durable(self) -> None:
        """Return once every write this process has committed survives a power loss.  The core
        calls it before deleting objects that a commit made unused, so a commit lost in a crash
        can never leave an entry pointing at deleted bytes."""

    @abstractmethod
    def stats(self) -> dict[str, int]:
        """Counts for status displays: ``entries``, ``files``, ``dirs``, ``bytes``, per inode
        (a file with several names counts once, its bytes once)."""

    # -- backends ---------------------------------------------------------------------------
    @abstractmethod
    def put_backend(self, record: BackendRecord) -> None:
        """Insert or replace the backend record named ``record.name``."""

    @abstractmethod
    def get_backend(self, name: str) -> BackendRecord:
        """``NotFound`` if unknown."""

    @abstractmethod
    def list_backends(self) -> builtins.list[BackendRecord]:
        """All backends, sorted by name."""

    @abstractmethod
    def delete_backend(self, name: str) -> None:
        """``NotFound`` if unknown."""

    # -- tasks ------------------------------------------------------------------------------
    @abstractmethod
    def add_task(self, task: Task) -> Task:
        """Queue a task (state pending) and return it as stored: with its id (``task.id`` when
        the caller set one, else a new one), ``created``/``updated`` stamped with the catalog's
        clock, and due at ``max(not_before, created)``.  When ``task.dedupe_key`` is set and an
        unfinished (pending or running) task with that key exists, return that one instead (an
        index lookup, whatever the number of tasks).  ``AlreadyExists`` if a caller-given id is
        taken by another task."""

    @abstractmethod
    def claim_task(self, owner: str, lease_seconds: float, kinds: builtins.list[str] | None = None) -> Task | None:
        """Atomically take one claimable task: pending with ``not_before <= now``, or running
        with an expired lease (``now`` on the catalog's clock).  Sets state running, owner,
        lease expiry (now + ``lease_seconds``), attempts += 1.  The task due first is taken:
        oldest first among tasks queued to run at once, a retried task at its retry time.
        ``None`` when there is nothing to do.  Its cost does not grow with finished tasks."""

    @abstractmethod
    def renew_lease(self, task_id: int, owner: str, lease_seconds: float) -> bool:
        """Extend the lease to now + ``lease_seconds`` if ``owner`` still holds it (and it has not
        expired); False if the lease was lost."""

    @abstractmethod
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
        """Record the outcome if ``owner`` still holds the lease (False otherwise, no change).

        ``state`` is ``done`` or ``failed``; the finished task expires :attr:`task_retention`
        seconds later.  With ``retry_at`` (a time on the catalog's clock) or ``retry_in`` (seconds
        from the catalog's now: backoff without reading any clock here) a failed task goes back
        to pending with that ``not_before`` and ``last_error = error``."""

    @abstractmethod
    def list_tasks(self, state: str | None = None, limit: int | None = None) -> builtins.list[Task]:
        """Tasks, optionally of one state, oldest (``created``, then id) first."""

    @abstractmethod
    def count_tasks(self) -> dict[str, int]:
        """Number of tasks per state."""

    @abstractmethod
    def purge_tasks(self, state: str, older_than: float) -> int:
        """Delete tasks in ``state`` last updated before ``older_than``; return how many."""

    @abstractmethod
    def now(self) -> float:
        """The catalog's clock, seconds since the epoch: the database server's on MongoDB (one
        round trip), the host's on SQLite.  Leases, ``not_before``, ``created``/``updated`` and
        stamped record fields are on it; compare them with this, not with ``time.time()``."""

    # -- small records (nodes, vms, policies, settings) -------------------------------------
    @abstractmethod
    def put_record(self, collection: str, key: str, doc: dict[str, Any], expected_version: int | None = None,
                   *, stamp: str | None = None) -> int:
        """Store a JSON-able ``doc``; return its new version (1 on insert).  With
        ``expected_version`` it is compare-and-set (``Conflict``); ``expected_version=0`` means
        create-only (``AlreadyExists`` if present).  With ``stamp`` the stored document's field
        of that name is set to the catalog's clock as it is written (a heartbeat on the server's
        clock, not the writer's)."""

    @abstractmethod
    def get_record(self, collection: str, key: str) -> tuple[dict[str, Any], int]:
        """(doc, version); ``NotFound`` if absent."""

    @abstractmethod
    def list_records(self, collection: str) -> builtins.list[tuple[str, dict[str, Any], int]]:
        """(key, doc, version) for every record of the collection, sorted by key."""

    @abstractmethod
    def delete_record(self, collection: str, key: str) -> bool:
        """True if something was deleted."""

    # -- lifecycle --------------------------------------------------------------------------
    @abstractmethod
    def close(self) -> None: ...

    # -- derived ----------------------------------------------------------------------------
    def root(self) -> Entry:
        return self.get(ROOT_ID)

    def lookup_id(self, parent_id: int, name: str) -> tuple[int, str] | None:
        """``(id, type)`` of the child ``name`` of ``parent_id``, or ``None`` (the inode id for
        a linked name): one probe of the name, engines read only those fields."""
        entry = self.lookup(parent_id, name)
        return (entry.id, entry.type) if entry is not None else None

    def _step(self, parent_id: int, name: str) -> tuple[int, str] | None:
        """What :meth:`locate` reads of an intermediate component: only a directory's id
        matters there (a directory is never linked, so its name holds its inode), a
        non-directory raises ``NotADirectory`` whatever its id."""
        return self.lookup_id(parent_id, name)

    def locate(self, path: str) -> tuple[int | None, Entry | None]:
        """``(id of the parent directory, entry at path or None)`` for a normalized absolute
        path; ``(None, root)`` for ``/``.  ``NotFound`` when a directory on the way is missing,
        ``NotADirectory`` when a component on the way is not a directory.

        One lookup per component: a path of depth *d* costs *d* round trips (the root is never
        read: its id is :data:`ROOT_ID`), the first *d - 1* reading only id and type."""
        if path == "/":
            return None, self.root()
        names = path[1:].split("/")
        parent = ROOT_ID
        for i, name in enumerate(names[:-1]):
            found = self._step(parent, name)
            if found is None:
                raise NotFound(f"{path}: no such file or directory", path=path)
            if found[1] != DIR:
                raise NotADirectory(f"{path}: {'/'.join(names[:i + 1])} is not a directory", path=path)
            parent = found[0]
        return parent, self.lookup(parent, names[-1])

    def resolve(self, path: str) -> Entry:
        """Entry of a normalized absolute path; ``NotFound`` / ``NotADirectory`` on the way.
        Costs what :meth:`locate` costs."""
        entry = self.locate(path)[1]
        if entry is None:
            raise NotFound(f"{path}: no such file or directory", path=path)
        return entry

    def path_of(self, entry_id: int) -> str:
        """Absolute path of an entry (of one of its names: the one :meth:`get` reads), walking up
        its parents."""
        names: builtins.list[str] = []
        entry = self.get(entry_id)
        while entry.parent_id is not None:
            names.append(entry.name)
            entry = self.get(entry.parent_id)
        return "/" + "/".join(reversed(names))

    def iter_children(self, parent_id: int, page: int = 1000) -> Iterator[Entry]:
        """All children of a directory by name, one :meth:`list` call per ``page`` entries.

        Each call asks for one entry more than it yields, so the last page is known to be the
        last without a further (empty) query: *n* children cost ``max(1, ceil(n / page))``
        queries, and no server cursor stays open between pages (a slow consumer never meets a
        cursor timeout)."""
        after: str | None = None
        while True:
            batch = self.list(parent_id, after=after, limit=page + 1)
            yield from batch[:page]
            if len(batch) <= page:
                return
            after = batch[page - 1].name

    # -- bulk operations (one round trip each in both engines) ------------------------------
    def delete_entries(self, entries: Sequence[Entry]) -> builtins.list[Entry]:
        """Remove the name ``(e.parent_id, e.name)`` of each of these files and symbolic links;
        return the entries kept because they changed.  The last name of an inode goes (and the
        inode with it) only if the inode's stored version is still ``e.version``, counting the
        versions this call's own removals of its other names added (compare-and-set): several
        names of one inode in one batch all go.  A name whose inode keeps other names goes
        whatever the version (its content stays reachable).  An entry already gone counts as
        deleted.  Directories raise ``InvalidArgument`` and nothing is deleted (they need
        :meth:`delete`'s emptiness check).  Not atomic as a whole: each name is deleted or kept
        on its own.  Entries never linked cost one round trip per call in both engines."""
        check_no_dirs(entries)
        kept: builtins.list[Entry] = []
        bumps: dict[int, int] = {}
        for e in entries:
            try:
                removed = self._delete_name(e, bumps.get(e.id, 0))
            except NotFound:
                continue
            except (Conflict, InvalidArgument):
                kept.append(e)
                continue
            if removed.nlink:
                bumps[e.id] = bumps.get(e.id, 0) + 1
        return kept

    def _delete_name(self, e: Entry, bumped: int) -> Entry:
        """:meth:`delete_entries` for one entry: its name goes, compare-and-set on
        ``e.version + bumped`` only when it is the inode's last (read, then delete; an engine
        may do better)."""
        current = self.lookup(e.parent_id or 0, e.name)
        if current is None or current.id != e.id:
            raise NotFound(f"{e.name!r} is gone")
        expected = e.version + bumped if current.nlink <= 1 else None
        return self.delete(e.id, expected_version=expected, source=(e.parent_id or 0, e.name))

    def replica_users_many(self, objects: Iterable[tuple[str, str]]) -> dict[tuple[str, str], builtins.list[int]]:
        """:meth:`replica_users` of many ``(backend, key)`` objects at once: every object asked
        about is a key of the result (an empty list when no entry uses it)."""
        return {obj: self.replica_users(*obj) for obj in dict.fromkeys(objects)}

    def put_records(self, collection: str, docs: dict[str, dict[str, Any]]) -> None:
        """Store many records (key → doc) of one collection, inserting or replacing each
        unconditionally (versions bump as with :meth:`put_record`)."""
        for key, doc in docs.items():
            self.put_record(collection, key, doc)

    def delete_records(self, collection: str, keys: Iterable[str]) -> int:
        """Delete these records of one collection; return how many there were."""
        return sum(1 for key in keys if self.delete_record(collection, key))

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_catalog(url: str, *, create: bool = True) -> Catalog:
    """Open the catalog named by ``url``: ``sqlite:///path/to/catalog.db`` or ``mongodb://...``.

    With ``create=False`` a SQLite file that does not exist is a ``CatalogError`` instead of a
    new, empty catalog (the front ends open the configured catalog this way; only ``init``
    creates)."""
    from vdir.errors import ConfigError

    if url.startswith("sqlite:"):
        from vdir.catalog.sqlite import SQLiteCatalog

        return SQLiteCatalog(url, create=create)
    if url.startswith("mongodb://") or url.startswith("mongodb+srv://"):
        from vdir.catalog.mongo import MongoCatalog

        return MongoCatalog(url)
    raise ConfigError(f"unknown catalog URL {url!r}: use sqlite:///path or mongodb://host/db")
