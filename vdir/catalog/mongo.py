"""The shared catalog engine: MongoDB (or any server speaking its wire protocol).

``MongoCatalog("mongodb://host:27017/vdir")`` keeps everything in one database (named by the
URL's path, ``vdir`` when it has none):

* ``entries`` — one document per name, integer ``_id`` (random 63-bit, drawn by the client:
  no counter round trip, no hot document), unique index ``(parent_id, name)`` so a
  listing is an index range scan, an index on ``replicas.backend``.  Extended attributes are a
  list of ``{k, v}`` pairs with ``v`` as BSON binary (xattr names contain dots, which MongoDB
  field names should not).  A name whose inode has one name holds it inline (its ``_id`` is the
  inode id); a name of a linked inode is a pointer ``{_id, parent_id, name, type, inode, op}``
  (no ``version``, so no compare-and-set on the inline shape ever matches it; partial index on
  ``inode``).
* ``inodes`` — the inodes with two names or more (``_id`` the inode id, every attribute,
  ``nlink``), indexed on their replicas like ``entries``; an inode moves here with its second
  name and back into its last name when ``nlink`` drops to 1 (see the model in
  :mod:`vdir.catalog.base`).  A read of a page holding pointers costs one more ``find`` by
  ``_id $in``; the replica queries read both collections (``$unionWith``: one command).
* ``backends`` — ``_id`` is the backend name.
* ``tasks`` — the placement queue: see :mod:`vdir.catalog.mongo_queue`.
* ``records`` — ``(collection, key)`` unique, the document as a BSON sub-document: see
  :mod:`vdir.catalog.mongo_records`.

Atomicity.  A replica set (or mongos) is required; a standalone server is refused at open.
``update`` and the record writes are one filtered document write (compare-and-set on the
version; of a linked inode, on its ``inodes`` document); delete, rmdir, rename (also over an
existing entry) and link are each one transaction;
create (and mkdir) is one ordered ``update`` command with no transaction, the child's insert
being its commit point (the ordering that keeps it safe against rmdir is in :meth:`create`).
MongoDB transactions are snapshot-isolated, so operations that must exclude each other are made
to *write* a common document: create/remove/rename touch the directory they change (mtime/ctime
forward, version unchanged, operation token into its ``ops`` list), and a directory move also
writes every ancestor of its destination (below the root) filtered on the parent it read.  rmdir
vs create, rename into a directory being removed, crossed directory moves: one of the two gets
a write conflict and runs again, seeing the other's result.  (Plain filtered writes rather than
``find_one_and_*`` for entries: SecantusDB, the server the tests use, runs ``findAndModify`` in
time proportional to the collection.)
The task queue (``tasks``, claiming, leases on the server's clock) is in
:mod:`vdir.catalog.mongo_queue`, which this class inherits.

Failover.  Majority/journaled write concern, primary reads for every read that decides a write,
and one retry loop (:meth:`MongoCatalog._retrying`) that runs an operation again after a
step-down, a not-primary answer, a transient transaction error or a dropped connection, with
backoff, until the operation's deadline.  A write whose reply was lost is recognised by its
token when it runs again (the entry's ``op`` field for update and rename — a linked inode's
``op`` in ``inodes`` for those of a linked name —, the parent's ``ops`` for create and delete of
any name, the new pointer's ``op`` for link, the record's ``op``), so it is neither applied twice
nor misreported.

pymongo and bson are imported here and in the two modules this class inherits from
(:mod:`vdir.catalog.mongo_queue`, :mod:`vdir.catalog.mongo_records`), nowhere else in vdir.  Their errors become vdir errors in
one function, :meth:`MongoCatalog._translate`.
"""

from __future__ import annotations

import builtins
import functools
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import parse_qsl

try:
    import bson
    import pymongo
    from pymongo import ReadPreference, UpdateOne
    from pymongo.client_session import ClientSession
    from pymongo.errors import (
        AutoReconnect,
        BulkWriteError,
        ConfigurationError,
        ConnectionFailure,
        DuplicateKeyError,
        ExecutionTimeout,
        OperationFailure,
        PyMongoError,
        ServerSelectionTimeoutError,
        WTimeoutError,
    )
    from pymongo.read_concern import ReadConcern
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    from vdir.errors import MissingDependency

    raise MissingDependency("the MongoDB catalog needs pymongo: pip install 'vdir[mongo]'") from exc

from vdir.catalog.base import (
    DIR,
    ROOT_ID,
    SCHEMA_VERSION,
    BackendRecord,
    Catalog,
    Entry,
    Replica,
    check_no_dirs,
)
from vdir.catalog.mongo_queue import MongoTaskQueue, _Retry
from vdir.catalog.mongo_records import MongoRecords
from vdir.errors import (
    AlreadyExists,
    AuthenticationError,
    BackendUnavailable,
    CatalogError,
    ConfigError,
    Conflict,
    DirectoryNotEmpty,
    InvalidArgument,
    IsADirectory,
    NotADirectory,
    NotFound,
    NotPermitted,
    Timeout,
    VDirError,
)

T = TypeVar("T")

DEFAULT_DATABASE = "vdir"
RETRIES = 20
"""Attempts of a write whose compare-and-set lost against a concurrent writer (no expected_version)."""
PAGE = 500
UPGRADE_TIMEOUT_S = 6 * 3600
"""Deadline of a schema upgrade (index builds and migrations of a big catalog take long)."""

SERVER_SELECTION_TIMEOUT_MS = 45_000
"""How long an operation waits for a primary (``serverSelectionTimeoutMS``): longer than an
election (typically 10-30 s), so a step-down is a pause."""
CONNECT_TIMEOUT_MS = 10_000
"""``connectTimeoutMS``: opening one TCP/TLS connection."""
SOCKET_TIMEOUT_MS = 60_000
"""``socketTimeoutMS``: the longest one command may wait for its reply (a half-open connection
to a dead primary fails after this, and is retried)."""
DEADLINE_MS = 60_000
"""The overall budget of one catalog operation, all retries included; ``timeoutMS`` in the URL
sets it (and then also turns on pymongo's own per-operation timeout)."""
OPS_KEPT = 32
"""Operation tokens a directory remembers (``ops``): how a retried create/delete/rename whose
first reply was lost tells "my write applied" from "it did not"."""
_RETRY_CODES = {
    91,  # ShutdownInProgress
    112,  # WriteConflict
    189,  # PrimarySteppedDown
    251,  # NoSuchTransaction (the server forgot a transaction, e.g. after a step-down)
    10107,  # NotWritablePrimary
    11600,  # InterruptedAtShutdown
    11602,  # InterruptedDueToReplStateChange
    13435,  # NotPrimaryNoSecondaryOk
    13436,  # NotPrimaryOrSecondary
}
_RETRY_LABELS = ("RetryableWriteError", "TransientTransactionError", "UnknownTransactionCommitResult")

_ENTRY_FIELDS = ("type", "mode", "uid", "gid", "size", "mtime", "ctime", "hash", "target", "blocks", "rdev", "atime")
# ``subdirs`` is not among them: only create/delete/rename change it (with ``$inc`` in ``_touch``)
_AUTH_CODES = {13, 18}  # Unauthorized, AuthenticationFailed


class _Mismatch(Exception):
    """Internal: a write in a transaction matched fewer documents than it must; the transaction
    is aborted and the caller reads to learn why."""


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages)."""
    return re.sub(r"^(mongodb(?:\+srv)?://)([^@/]*?):([^@/]*)@", r"\1\2:***@", url)


# -- documents <-> dataclasses ---------------------------------------------------------------


def _replica_doc(r: Replica) -> dict[str, Any]:
    return {"backend": r.backend, "key": r.key, "size": r.size, "hash": r.hash, "etag": r.etag,
            "state": r.state, "verified_at": r.verified_at}


def _entry_fields(e: Entry) -> dict[str, Any]:
    """The fields ``update`` replaces (all but id, parent_id, name and version)."""
    doc: dict[str, Any] = {f: getattr(e, f) for f in _ENTRY_FIELDS}
    doc["xattrs"] = [{"k": k, "v": bson.Binary(bytes(v))} for k, v in e.xattrs.items()]
    doc["replicas"] = [_replica_doc(r) for r in e.replicas]
    return doc


def _entry_doc(e: Entry, entry_id: int, version: int) -> dict[str, Any]:
    return {"_id": entry_id, "parent_id": e.parent_id, "name": e.name, "version": version, **_entry_fields(e)}


def _to_entry(d: dict[str, Any], inode: dict[str, Any] | None = None) -> Entry:
    """An entry from its inline name document, or from a pointer name ``d`` and its ``inode``."""
    if inode is not None:
        d = {**inode, "parent_id": d.get("parent_id"), "name": d["name"]}
    return Entry(
        id=d["_id"], parent_id=d.get("parent_id"), name=d["name"], type=d["type"], mode=d["mode"], uid=d["uid"],
        gid=d["gid"], size=d["size"], mtime=d["mtime"], ctime=d["ctime"], hash=d.get("hash"), version=d["version"],
        target=d.get("target"), blocks=d.get("blocks"), rdev=d.get("rdev", 0), atime=d.get("atime", d["mtime"]),
        subdirs=d.get("subdirs", 0), nlink=d.get("nlink", 1),
        xattrs={x["k"]: bytes(x["v"]) for x in d.get("xattrs", [])},
        replicas=[Replica(**r) for r in d.get("replicas", [])],
    )


def _to_backend(d: dict[str, Any]) -> BackendRecord:
    return BackendRecord(name=d["_id"], url=d["url"], options=d.get("options", {}), cloud=d["cloud"],
                         region=d["region"], tier=d["tier"], cost=d["cost"], created=d["created"])


def _url_options(url: str) -> dict[str, str]:
    """The URL's query options, names lower-cased (MongoDB URI option names are case-insensitive)."""
    query = url.partition("?")[2].partition("#")[0]
    return {k.lower(): v for k, v in parse_qsl(query, keep_blank_values=True)}


def _retryable(exc: BaseException) -> bool:
    """True for the errors of a failover or a dropped connection: worth trying again (the write
    may or may not have been applied; every write below can tell)."""
    if isinstance(exc, ServerSelectionTimeoutError):
        return False  # already waited serverSelectionTimeoutMS for a primary
    if isinstance(exc, (AutoReconnect, ConnectionFailure)):  # incl. NetworkTimeout, NotPrimaryError
        return True
    if isinstance(exc, PyMongoError) and any(exc.has_error_label(label) for label in _RETRY_LABELS):
        return True
    if isinstance(exc, BulkWriteError):
        errors = exc.details.get("writeErrors") or []
        return bool(errors) and errors[0].get("code") in _RETRY_CODES
    return isinstance(exc, OperationFailure) and exc.code in _RETRY_CODES


def _duplicate_index(exc: PyMongoError) -> str | None:
    """For a duplicate-key error (plain or inside a bulk write): which unique index, ``"_id"`` or
    ``"parent_name"`` (``None`` if it is not a duplicate-key error)."""
    details: dict[str, Any] = getattr(exc, "details", None) or {}
    if isinstance(exc, BulkWriteError):
        errors = details.get("writeErrors") or []
        details = errors[0] if errors else {}
    elif not isinstance(exc, DuplicateKeyError):
        return None
    if details.get("code", 11000) != 11000:
        return None
    pattern = details.get("keyPattern") or {}
    text = str(details.get("errmsg", exc))
    if "_id" in pattern or "index: _id_" in text:
        return "_id"
    return "parent_name"


def _touch_parts(parent_id: int, token: int, now: float, subdirs: int = 0) -> tuple[dict[str, Any], dict[str, Any]]:
    """The write every create/remove/rename makes to the directory it changes: mtime/ctime move
    forward (the version does not change), its count of subdirectories moves by ``subdirs``, and
    the operation's token joins ``ops`` (so a retried write never counts twice).  Filtered on
    "is a directory" and "token not yet there", so a match count of 1 means the parent exists,
    holds entries, and this operation was not applied before.  It also makes two operations on
    one directory *write* a common document, which is what turns MongoDB's snapshot isolation
    into serialisable outcomes here (rmdir vs create, crossed moves: see the module docstring)."""
    change: dict[str, Any] = {"$max": {"mtime": now, "ctime": now}, "$push": {"ops": {"$each": [token], "$slice": -OPS_KEPT}}}
    if subdirs:
        change["$inc"] = {"subdirs": subdirs}
    return {"_id": parent_id, "type": DIR, "ops": {"$ne": token}}, change


def _touch(parent_id: int, token: int, now: float, subdirs: int = 0) -> UpdateOne:
    """``_touch_parts`` as a bulk-write operation."""
    return UpdateOne(*_touch_parts(parent_id, token, now, subdirs))


def _reads(method: Callable[..., T]) -> Callable[..., T]:
    """A read (or an idempotent write) run again, like every write, when a failover or a dropped
    connection outlasts pymongo's one retry: until the operation's deadline, with backoff."""

    @functools.wraps(method)
    def wrapper(self: MongoCatalog, *args: Any, **kwargs: Any) -> T:
        deadline = time.monotonic() + self._deadline
        delay = 0.05
        while True:
            try:
                return method(self, *args, **kwargs)
            except VDirError as exc:  # translated by _errors(); the driver's error is its cause
                cause = exc.__cause__
                if not isinstance(cause, PyMongoError) or not _retryable(cause) or time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    return wrapper


class MongoCatalog(MongoTaskQueue, MongoRecords, Catalog):
    """Catalog in a MongoDB database; ``url`` is ``mongodb://[user:pass@]host[:port]/[database][?options]``.

    Needs a replica set (a one-node one will do) or a sharded cluster: every multi-document
    change is a transaction.  Standard URI options tune it (``w``, ``journal``,
    ``serverSelectionTimeoutMS``, ``connectTimeoutMS``, ``socketTimeoutMS``, ``timeoutMS``,
    ``readPreference``); see docs/operations.md for the defaults."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._safe_url = redact(url)
        given = _url_options(url)
        options: dict[str, Any] = {}
        defaults = {"serverselectiontimeoutms": ("serverSelectionTimeoutMS", SERVER_SELECTION_TIMEOUT_MS),
                    "connecttimeoutms": ("connectTimeoutMS", CONNECT_TIMEOUT_MS),
                    "sockettimeoutms": ("socketTimeoutMS", SOCKET_TIMEOUT_MS)}
        for key, (name, value) in defaults.items():
            if key not in given:
                options[name] = value
        if "w" not in given and "journal" not in given:
            # a commit acknowledged by one node can be rolled back by a failover after the core
            # has deleted the objects the old version used: acknowledge only majority-journaled
            # writes (make_durable then has nothing left to do)
            options.update(w="majority", journal=True)
        try:
            self._deadline = float(given["timeoutms"]) / 1000 if given.get("timeoutms") else DEADLINE_MS / 1000
        except ValueError:
            raise ConfigError(f"catalog {self._safe_url}: timeoutMS must be a number of milliseconds") from None
        if self._deadline <= 0:
            self._deadline = DEADLINE_MS / 1000
        with self._errors():
            self._client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(url, **options)
        try:
            with self._errors():
                self._db = self._client.get_default_database(DEFAULT_DATABASE)
                self._entries = self._db["entries"]
                # reads that decide a write go to the primary whatever readPreference the URL
                # sets for plain reads (a secondary may be behind)
                self._primary = self._db.get_collection("entries", read_preference=ReadPreference.PRIMARY)
                self._inodes = self._db["inodes"]
                self._pinodes = self._db.get_collection("inodes", read_preference=ReadPreference.PRIMARY)
                self._backends = self._db["backends"]
                self._tasks = self._db["tasks"]
                self._records = self._db.get_collection("records", read_preference=ReadPreference.PRIMARY)
                try:
                    hello = self._client.admin.command("hello")
                except OperationFailure:  # servers before 4.4.2 only know the legacy name
                    hello = self._client.admin.command("isMaster")
                self._transactions = bool(hello.get("setName") or hello.get("msg") == "isdbgrid") and (
                    hello.get("logicalSessionTimeoutMinutes") is not None
                )
                if not self._transactions:
                    raise ConfigError(
                        f"catalog {self._safe_url} is a standalone MongoDB server; vdir needs a replica set (one node is"
                        " enough: start mongod with --replSet rs0, then run rs.initiate() once in mongosh)"
                    )
                self._init_schema()
        except BaseException:
            self._client.close()
            raise

    # -- errors ------------------------------------------------------------------------------
    def _translate(self, exc: Exception) -> VDirError:
        """The one place pymongo / bson errors become vdir errors."""
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        text = text.split(", Timeout:")[0].split(", full error:")[0][:300]
        where = f"catalog {self._safe_url}"
        if isinstance(exc, DuplicateKeyError) or (isinstance(exc, BulkWriteError) and _duplicate_index(exc)):
            return AlreadyExists(f"{where}: duplicate key ({text})")
        if isinstance(exc, (ExecutionTimeout, WTimeoutError)):
            return Timeout(f"{where}: timed out ({text})")
        if isinstance(exc, (ConnectionFailure, AutoReconnect)):  # incl. ServerSelectionTimeoutError
            return BackendUnavailable(f"{where} is unreachable: {text}")
        if isinstance(exc, OperationFailure) and exc.code in _AUTH_CODES:
            return AuthenticationError(f"{where}: not authorized ({text})")
        if isinstance(exc, OperationFailure) and exc.code in _RETRY_CODES:
            return BackendUnavailable(f"{where} has no primary to write to: {text}")
        if isinstance(exc, ConfigurationError):
            return ConfigError(f"{where}: {text}")
        if isinstance(exc, bson.errors.BSONError):
            return InvalidArgument(f"{where}: value cannot be stored ({text})")
        return CatalogError(f"{where}: {text}")

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (PyMongoError, bson.errors.BSONError) as exc:
            raise self._translate(exc) from exc

    def _retrying(self, fn: Callable[[], T], what: str) -> T:
        """Run ``fn`` until it returns: again after a lost compare-and-set (``_Retry``, at most
        ``RETRIES`` times), and again after a failover or dropped connection, with backoff, until
        the operation's deadline (``timeoutMS``, default 60 s).  The one retry loop of this
        engine; ``fn`` must be safe to repeat when its previous attempt's outcome is unknown
        (each write carries a token for that, see ``_touch``)."""
        deadline = time.monotonic() + self._deadline
        lost = 0
        delay = 0.05
        while True:
            try:
                return fn()
            except _Retry:
                lost += 1
                if lost >= RETRIES:
                    raise Conflict(f"{what}: kept changing under concurrent writers; try again") from None
            except (PyMongoError, bson.errors.BSONError) as exc:
                if not _retryable(exc) or time.monotonic() + delay > deadline:
                    raise self._translate(exc) from exc
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def _transaction(self, body: Callable[[ClientSession], T]) -> T:
        """One attempt at ``body`` inside a transaction (snapshot reads, the client's majority
        write concern), committed if it returns, aborted if it raises.  Retrying is
        ``_retrying``'s job: a transient error here is raised to it."""
        with self._client.start_session() as session:
            session.start_transaction(read_concern=ReadConcern("snapshot"), read_preference=ReadPreference.PRIMARY)
            try:
                result = body(session)
            except BaseException:
                if session.in_transaction:
                    try:
                        session.abort_transaction()
                    except PyMongoError:
                        pass  # the server aborts a transaction whose statement failed, or forgets it
                raise
            session.commit_transaction()
            return result

    # -- set-up ------------------------------------------------------------------------------
    def _init_schema(self) -> None:
        """One read when the catalog is up to date: the ``meta`` document ``schema`` is written
        last, after the indexes and the root, so its version says all of them exist.  Anything
        else (a new database, an older layout) runs :meth:`_set_up`, which is idempotent (two
        processes opening a new catalog at once both run it harmlessly).  Adding an index or
        any other schema change therefore means bumping ``SCHEMA_VERSION``."""
        found = self._db["meta"].find_one({"_id": "schema"})
        # a catalog without the document is either new or was written with schema 1
        version = int(found["version"]) if found else 1
        if version > SCHEMA_VERSION:
            raise CatalogError(
                f"catalog {self._safe_url} has schema {version}, newer than this vdir understands ({SCHEMA_VERSION}); upgrade vdir"
            )
        if version < SCHEMA_VERSION:
            # an upgrade scans big collections: not bound by socketTimeoutMS (60 s by default)
            # but by its own deadline (pymongo's client-side operation timeout)
            with pymongo.timeout(UPGRADE_TIMEOUT_S):
                self._set_up(version)

    def _set_up(self, version: int) -> None:
        """Indexes, the root and migrations from ``version``; then the schema version, last."""
        self._entries.create_index([("parent_id", 1), ("name", 1)], unique=True, name="parent_name")
        self._entries.create_index("replicas.backend", name="replica_backend")
        # schema 2: who uses an object (replica_users); Entry.blocks is a plain optional field
        self._entries.create_index([("replicas.backend", 1), ("replicas.key", 1)], name="replica_key")
        self._records.create_index([("collection", 1), ("key", 1)], unique=True, name="collection_key")
        now = time.time()
        root = Entry(name="", type=DIR, parent_id=None, mode=0o755, uid=os.getuid(), gid=os.getgid(), mtime=now, ctime=now)
        try:
            fields = {k: v for k, v in _entry_doc(root, ROOT_ID, 1).items() if k != "_id"}
            self._entries.update_one({"_id": ROOT_ID}, {"$setOnInsert": fields}, upsert=True)
        except DuplicateKeyError:
            pass  # another process created it at the same moment
        # -- task queue (schema 3) ----------------------------------------------------------
        if version < 3:
            self._migrate_tasks_to_3()
        self._create_task_indexes()
        # -- special files, atime, subdirectory counts (schema 4) ----------------------------
        if version < 4:
            self._migrate_entries_to_4()
        # -- hard links (schema 5): every existing entry is an inline inode, nothing to write --
        self._entries.create_index("inode", name="inode", partialFilterExpression={"inode": {"$exists": True}})
        self._inodes.create_index("replicas.backend", name="replica_backend")
        self._inodes.create_index([("replicas.backend", 1), ("replicas.key", 1)], name="replica_key")
        # -----------------------------------------------------------------------------------
        self._db["meta"].update_one({"_id": "schema"}, {"$max": {"version": SCHEMA_VERSION}}, upsert=True)

    def _migrate_entries_to_4(self) -> None:
        """Schema 3 -> 4: ``rdev``, ``atime`` and ``subdirs`` are optional fields, read as 0,
        ``mtime`` and 0 when absent (``$max``/``$inc`` treat an absent field the same way), so
        only directories that hold subdirectories are written: their ``subdirs``, counted by one
        aggregation.  Cost: O(directories), not O(entries).  Idempotent (counts are set, not added)."""
        counts = {d["_id"]: int(d["n"]) for d in self._entries.aggregate(
            [{"$match": {"type": DIR}}, {"$group": {"_id": "$parent_id", "n": {"$sum": 1}}}]) if d["_id"] is not None}
        ops = [UpdateOne({"_id": dir_id}, {"$set": {"subdirs": n}}) for dir_id, n in counts.items()]
        for i in range(0, len(ops), 1000):
            self._entries.bulk_write(ops[i:i + 1000], ordered=False)

    @staticmethod
    def _new_entry_id() -> int:
        """A random positive 63-bit id (never the root's): no round trip to a counter, no hot
        document, and a re-sent insert can recognise its own id.  A collision (about one in
        2**63 per pair) shows up as a duplicate ``_id`` and the create draws again."""
        while True:
            entry_id = secrets.randbits(63)
            if entry_id > ROOT_ID:
                return entry_id

    @staticmethod
    def _new_token() -> int:
        """The identity of one logical write, the same in every attempt of it."""
        return secrets.randbits(63)

    # -- entries -----------------------------------------------------------------------------
    def _doc(self, entry_id: int | None, session: ClientSession | None = None) -> dict[str, Any] | None:
        if entry_id is None:
            return None
        return self._entries.find_one({"_id": entry_id}, session=session)

    def _has_children(self, dir_id: int, session: ClientSession | None = None) -> bool:
        return self._primary.find_one({"parent_id": dir_id}, {"_id": 1}, session=session) is not None

    def _parent_error(self, parent_id: int | None) -> VDirError | None:
        """Why ``parent_id`` cannot hold entries, or None when it is an existing directory."""
        parent = self._primary.find_one({"_id": parent_id}, {"type": 1, "name": 1}) if parent_id is not None else None
        if parent is None:
            return NotFound(f"parent directory {parent_id} does not exist")
        if parent["type"] != DIR:
            return NotADirectory(f"parent {parent['name']!r} is not a directory")
        return None

    def _applied(self, dir_id: int | None, token: int) -> bool:
        """True if the operation ``token`` changed directory ``dir_id`` (see ``_touch``): the
        question a retry asks when an earlier attempt's reply was lost."""
        return dir_id is not None and self._primary.find_one({"_id": dir_id, "ops": token}, {"_id": 1}) is not None

    def _current(self, entry_id: int, expected_version: int | None) -> dict[str, Any]:
        """The inline document of ``entry_id`` (or, for a linked inode, its ``inodes`` document
        with the name it was read through), checked against ``expected_version``."""
        doc = self._primary.find_one({"_id": entry_id})
        if doc is not None and "inode" in doc:
            inode = self._pinodes.find_one({"_id": entry_id})
            doc = {**inode, "parent_id": doc["parent_id"], "name": doc["name"]} if inode is not None else None
        elif doc is None:
            doc = self._pinodes.find_one({"_id": entry_id})
            if doc is not None:
                doc = {**doc, "parent_id": None, "name": ""}
        if doc is None:
            raise NotFound(f"catalog entry {entry_id} no longer exists")
        if expected_version is not None and doc["version"] != expected_version:
            raise Conflict(
                f"{doc['name']!r} was changed by another writer (version {doc['version']}, expected {expected_version})"
            )
        return doc

    def _lost(self, entry_id: int, expected_version: int | None) -> Exception:
        """A CAS on ``entry_id`` matched nothing: NotFound / Conflict for the caller, or retry."""
        try:
            self._current(entry_id, expected_version)
        except VDirError as exc:
            if expected_version is not None or isinstance(exc, NotFound):
                return exc
        return _Retry()  # changed (and, with expected_version, changed back): try again

    def _with_inodes(self, docs: builtins.list[dict[str, Any]]) -> builtins.list[Entry] | None:
        """Entries of name documents: the inodes of pointers fetched in one ``find`` (none when
        the page holds no pointer); ``None`` when one of them vanished as we read (it was being
        inlined again: read the names again)."""
        wanted = [d["inode"] for d in docs if "inode" in d]
        if not wanted:
            return [_to_entry(d) for d in docs]
        inodes = {d["_id"]: d for d in self._inodes.find({"_id": {"$in": wanted}})}
        if any(i not in inodes for i in wanted):
            return None
        return [_to_entry(d, inodes[d["inode"]]) if "inode" in d else _to_entry(d) for d in docs]

    def _names(self, read: Callable[[], builtins.list[dict[str, Any]]]) -> builtins.list[Entry]:
        """``_with_inodes`` of what ``read`` returns, read again if an inode moved meanwhile."""
        for _ in range(RETRIES):
            entries = self._with_inodes(read())
            if entries is not None:
                return entries
        raise Conflict("catalog entries kept changing under concurrent links; try again")

    @_reads
    def get(self, entry_id: int) -> Entry:
        def read() -> builtins.list[dict[str, Any]]:
            doc = self._doc(entry_id)
            if doc is not None and doc.get("inode", entry_id) == entry_id:  # (a pointer's own _id is no entry id)
                return [doc]
            # the inode outlived its first name: read it through its name with the smallest _id
            return builtins.list(self._entries.find({"inode": entry_id}).sort("_id", 1).limit(1))

        with self._errors():
            found = self._names(read)
        if not found:
            raise NotFound(f"catalog entry {entry_id} not found")
        return found[0]

    @_reads
    def lookup(self, parent_id: int, name: str) -> Entry | None:
        def read() -> builtins.list[dict[str, Any]]:
            doc = self._entries.find_one({"parent_id": parent_id, "name": name})
            return [doc] if doc else []

        with self._errors():
            found = self._names(read)
        return found[0] if found else None

    @_reads
    def lookup_id(self, parent_id: int, name: str) -> tuple[int, str] | None:
        with self._errors():
            doc = self._entries.find_one({"parent_id": parent_id, "name": name}, {"_id": 1, "type": 1, "inode": 1})
        return (int(doc.get("inode", doc["_id"])), str(doc["type"])) if doc else None

    @_reads
    def _step(self, parent_id: int, name: str) -> tuple[int, str] | None:
        # intermediate components of a path: only a directory's id is used, and a directory is
        # never a pointer, so _id and type are all there is to read
        with self._errors():
            doc = self._entries.find_one({"parent_id": parent_id, "name": name}, {"_id": 1, "type": 1})
        return (int(doc["_id"]), str(doc["type"])) if doc else None

    @_reads
    def list(self, parent_id: int, after: str | None = None, limit: int | None = None) -> builtins.list[Entry]:
        # MongoDB compares strings by their UTF-8 bytes (no collation), i.e. byte order.
        # With a limit, the first batch holds all of it (one round trip, the server closes the
        # cursor; only a reply over 16 MiB needs a getMore).  Without one, batches of PAGE.
        query: dict[str, Any] = {"parent_id": parent_id}
        if after is not None:
            query["name"] = {"$gt": after}
        if limit is not None and limit <= 0:
            return []

        def read() -> builtins.list[dict[str, Any]]:
            cursor = self._entries.find(query).sort([("parent_id", 1), ("name", 1)])
            if limit is not None:
                cursor = cursor.limit(limit).batch_size(limit)
            else:
                cursor = cursor.batch_size(PAGE)
            return builtins.list(cursor)

        with self._errors():
            return self._names(read)

    def create(self, entry: Entry) -> Entry:
        """One round trip: one ordered ``update`` command of two statements, no transaction.

        First the child is inserted (an upsert on a fresh id, filtered on the shard key
        ``parent_id`` and this operation's token), then the parent is touched (filtered on "is a
        directory").  The insert is the commit point; the touch proves the parent still exists
        *after* it.  Against rmdir, which is one transaction that reads "no children" and deletes
        the directory: if rmdir's snapshot predates the child, then either the touch commits
        before rmdir does (rmdir's delete of that directory then meets a write conflict and runs
        again, seeing the child) or after (the touch matches nothing, and the create withdraws its
        child and reports the parent gone).  A withdrawn child was never reachable from the root,
        since its parent was already gone."""
        parent_id = entry.parent_id
        if parent_id is None:
            raise NotFound("parent directory None does not exist")
        token = self._new_token()
        entry_id = [self._new_entry_id()]

        def once() -> Entry:
            now = time.time()
            doc = _entry_doc(entry, entry_id[0], 1)
            doc["op"] = token
            if entry.type == DIR:
                doc["subdirs"] = 0
            fields = {k: v for k, v in doc.items() if k not in ("_id", "parent_id")}
            child = {"_id": entry_id[0], "parent_id": parent_id, "op": token}
            writes = [UpdateOne(child, {"$setOnInsert": fields}, upsert=True),
                      _touch(parent_id, token, now, 1 if entry.type == DIR else 0)]
            try:
                result = self._primary.bulk_write(writes, ordered=True)
            except BulkWriteError as exc:
                index = _duplicate_index(exc)
                if index is None:
                    raise
                if index == "_id":
                    entry_id[0] = self._new_entry_id()
                    raise _Retry() from None
                error = self._parent_error(parent_id)
                if error is not None:
                    raise error from None
                raise AlreadyExists(f"{entry.name!r} already exists in directory {parent_id}") from None
            if result.matched_count + result.upserted_count >= 2 or self._applied(parent_id, token):
                return entry.copy(id=entry_id[0], version=1, subdirs=0, nlink=1)  # or an earlier attempt's reply was lost
            # the parent is gone or is not a directory: take the child back
            self._primary.delete_one(child)
            raise self._parent_error(parent_id) or _Retry()

        return self._retrying(once, f"create of {entry.name!r}")

    def update(self, entry: Entry, expected_version: int) -> Entry:
        """One ``update_one`` whose filter holds the version, and the parent and name the caller's
        entry names (the shard key): one round trip.  A linked inode: one filtered write of its
        ``inodes`` document (after the inline write matched nothing and a read found a pointer)."""
        token = self._new_token()
        where = {"parent_id": entry.parent_id, "name": entry.name}
        linked = [False]

        def once() -> Entry:
            fields = _entry_fields(entry)
            fields["op"] = token
            if not linked[0]:
                result = self._primary.update_one(
                    {"_id": entry.id, **where, "version": expected_version}, {"$set": fields, "$inc": {"version": 1}}
                )
                if result.matched_count == 1:
                    return entry.copy(version=expected_version + 1, nlink=1, **where)
                doc = self._primary.find_one({"_id": entry.id})
                if doc is not None and "inode" not in doc:
                    if doc.get("op") == token:  # an earlier attempt applied it and its reply was lost
                        return entry.copy(parent_id=doc["parent_id"], name=doc["name"], version=expected_version + 1, nlink=1)
                    if doc["version"] != expected_version:
                        raise Conflict(f"{doc['name']!r} was changed by another writer (version {doc['version']},"
                                       f" expected {expected_version})")
                    where.update(parent_id=doc["parent_id"], name=doc["name"])  # the caller's copy was not current
                    raise _Retry()
                linked[0] = True  # a pointer, or no name with the inode's id: the inode lives in ``inodes``
            stored = self._pinodes.find_one_and_update(
                {"_id": entry.id, "version": expected_version}, {"$set": fields, "$inc": {"version": 1}},
                projection={"nlink": 1},
            )
            if stored is not None:
                return entry.copy(version=expected_version + 1, nlink=int(stored["nlink"]))
            inode = self._pinodes.find_one({"_id": entry.id}, {"op": 1, "version": 1, "nlink": 1})
            if inode is None:
                linked[0] = False  # inlined again meanwhile (its version moved on), or gone: look there
                if self._primary.find_one({"_id": entry.id}, {"_id": 1}) is None:
                    raise NotFound(f"catalog entry {entry.id} no longer exists")
                raise _Retry()
            if inode.get("op") == token:
                return entry.copy(version=expected_version + 1, nlink=int(inode["nlink"]))
            if inode["version"] != expected_version:
                raise Conflict(f"entry {entry.id} was changed by another writer (version {inode['version']},"
                               f" expected {expected_version})")
            raise _Retry()

        return self._retrying(once, f"update of entry {entry.id}")

    def _inode_of(self, entry_id: int) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """(inline document, None) or (None, ``inodes`` document) of ``entry_id``, read from the
        primary; (None, None) when it is gone."""
        doc = self._primary.find_one({"_id": entry_id})
        if doc is not None and "inode" not in doc:
            return doc, None
        return None, self._pinodes.find_one({"_id": entry_id})

    def _named(self, entry_id: int, source: tuple[int, str] | None, nlink: int) -> dict[str, Any]:
        """The pointer document of the name ``source`` of the linked inode ``entry_id``."""
        if source is None:
            raise InvalidArgument(f"entry {entry_id} has {nlink} names: say which one (source)")
        name = self._primary.find_one({"parent_id": source[0], "name": source[1]})
        if name is None or name.get("inode") != entry_id:
            raise NotFound(f"{source[1]!r} in directory {source[0]} is not a name of entry {entry_id}")
        return name

    def _unlink_in(self, session: ClientSession, name: dict[str, Any], inode: dict[str, Any], token: int,
                   now: float) -> int:
        """In a transaction: remove the pointer ``name`` of the linked ``inode`` (as read); return
        the names left.  Its version moves on and its ctime to ``now``; with one name left the
        inode is inlined again into that name, under the inode id.  ``_Mismatch`` when what was
        read changed."""
        inode_id, version, nlink = inode["_id"], inode["version"], int(inode["nlink"])
        gone = self._primary.delete_one({"_id": name["_id"], "parent_id": name["parent_id"], "inode": inode_id},
                                        session=session)
        if gone.deleted_count != 1:
            raise _Mismatch()
        if nlink > 2:
            changed = self._pinodes.update_one({"_id": inode_id, "version": version},
                                               {"$inc": {"nlink": -1, "version": 1}, "$set": {"ctime": now, "op": token}},
                                               session=session)
            if changed.matched_count != 1:
                raise _Mismatch()
            return nlink - 1
        other = self._primary.find_one({"inode": inode_id, "_id": {"$ne": name["_id"]}}, session=session)
        if other is None or self._pinodes.delete_one({"_id": inode_id, "version": version}, session=session).deleted_count != 1:
            raise _Mismatch()
        fields = {k: v for k, v in inode.items() if k not in ("_id", "nlink", "op")}
        inline = {"parent_id": other["parent_id"], "name": other["name"], **fields, "version": version + 1, "ctime": now,
                  "op": token}
        if other["_id"] == inode_id:
            if self._primary.replace_one({"_id": inode_id, "inode": inode_id}, inline, session=session).matched_count != 1:
                raise _Mismatch()
        else:
            if self._primary.delete_one({"_id": other["_id"], "inode": inode_id}, session=session).deleted_count != 1:
                raise _Mismatch()
            self._primary.insert_one({"_id": inode_id, **inline}, session=session)
        return 1

    def link(self, entry_id: int, new_parent_id: int, new_name: str) -> Entry:
        """One transaction: [move the inode out of its inline name, which becomes a pointer] or
        count one more name on its ``inodes`` document (compare-and-set on the version either
        way), insert the new pointer, touch the new parent; then the commit.  The new pointer's
        ``_id`` and ``op`` token are the same in every attempt: a retry whose earlier commit's
        reply was lost finds it."""
        token = self._new_token()
        row_id = [self._new_entry_id()]
        memo: dict[str, Any] = {}

        def once() -> Entry:
            mine = self._primary.find_one({"_id": row_id[0]}, {"op": 1}) if "result" in memo else None
            if mine is not None and mine.get("op") == token:
                return memo["result"]  # type: ignore[no-any-return]
            inline, inode = self._inode_of(entry_id)
            current = inline or inode
            if current is None:
                raise NotFound(f"catalog entry {entry_id} no longer exists")
            if current["type"] == DIR:
                raise NotPermitted(f"{current['name']!r} is a directory: directories cannot be hard-linked")
            now, version = time.time(), current["version"]
            nlink = int(inode["nlink"]) if inode is not None else 1

            def body(session: ClientSession) -> None:
                if inline is not None:  # the first link: the inode moves out of its name
                    fields = {k: v for k, v in inline.items() if k not in ("_id", "parent_id", "name", "op", "ops", "subdirs")}
                    self._pinodes.insert_one({"_id": entry_id, **fields, "version": version + 1, "nlink": 2, "ctime": now,
                                              "op": token}, session=session)
                    pointer = {"parent_id": inline["parent_id"], "name": inline["name"], "type": inline["type"],
                               "inode": entry_id, "op": token}
                    if self._primary.replace_one({"_id": entry_id, "parent_id": inline["parent_id"], "version": version},
                                                 pointer, session=session).matched_count != 1:
                        raise _Mismatch()
                else:
                    changed = self._pinodes.update_one(
                        {"_id": entry_id, "version": version},
                        {"$inc": {"nlink": 1, "version": 1}, "$set": {"ctime": now, "op": token}}, session=session)
                    if changed.matched_count != 1:
                        raise _Mismatch()
                self._primary.insert_one({"_id": row_id[0], "parent_id": new_parent_id, "name": new_name,
                                          "type": current["type"], "inode": entry_id, "op": token}, session=session)
                if self._primary.update_one(*_touch_parts(new_parent_id, token, now), session=session).matched_count != 1:
                    raise _Mismatch()
                memo["result"] = _to_entry({"parent_id": new_parent_id, "name": new_name},
                                           {**current, "version": version + 1, "nlink": nlink + 1, "ctime": now})

            try:
                self._transaction(body)
            except (_Mismatch, DuplicateKeyError) as exc:
                memo.pop("result", None)
                error = self._parent_error(new_parent_id)
                if error is not None:
                    raise error from None
                if isinstance(exc, DuplicateKeyError):
                    if self._primary.find_one({"parent_id": new_parent_id, "name": new_name}, {"_id": 1}) is not None:
                        raise AlreadyExists(f"{new_name!r} already exists in directory {new_parent_id}") from None
                    row_id[0] = self._new_entry_id()  # the inode moved out meanwhile, or (rarely) our _id is taken
                raise _Retry() from None
            return memo["result"]  # type: ignore[no-any-return]

        return self._retrying(once, f"link of entry {entry_id}")

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
        if entry_id == ROOT_ID:
            raise InvalidArgument("the root directory cannot be moved")
        token = self._new_token()
        memo: dict[str, Any] = {}
        return self._retrying(
            lambda: self._rename_once(entry_id, new_parent_id, new_name, replace_existing, expected_version, source,
                                      token, memo),
            f"rename of entry {entry_id}",
        )

    def _replaced(self, existing: dict[str, Any] | None, new_name: str, is_dir: bool) -> dict[str, Any] | None:
        """The ``inodes`` document of a destination that is a pointer (None for an inline one),
        after the type checks of a replacing rename."""
        if existing is None:
            return None
        if existing["type"] == DIR and not is_dir:
            raise IsADirectory(f"cannot replace directory {new_name!r} with a non-directory")
        if existing["type"] != DIR and is_dir:
            raise NotADirectory(f"cannot replace non-directory {new_name!r} with a directory")
        if "inode" not in existing:
            return None
        inode = self._pinodes.find_one({"_id": existing["inode"]})
        if inode is None:
            raise _Retry()  # being inlined again: read again
        return inode

    def _replace_in(self, session: ClientSession, existing: dict[str, Any], inode: dict[str, Any] | None, new_parent_id: int,
                    new_name: str, token: int, now: float) -> int:
        """In a rename's transaction: remove the destination name; the names its inode has left."""
        if inode is not None:
            return self._unlink_in(session, existing, inode, token, now)
        if existing["type"] == DIR and self._has_children(existing["_id"], session):
            raise DirectoryNotEmpty(f"directory {new_name!r} is not empty")
        gone = self._primary.delete_one(
            {"_id": existing["_id"], "parent_id": new_parent_id, "version": existing["version"]}, session=session
        )
        if gone.deleted_count != 1:
            raise _Retry()  # the destination changed; look again
        return 0

    def _rename_once(
        self, entry_id: int, new_parent_id: int, new_name: str, replace_existing: bool, expected_version: int | None,
        source: tuple[int, str] | None, token: int, memo: dict[str, Any],
    ) -> tuple[Entry, Entry | None]:
        """One transaction: [delete the replaced entry], then one ``update`` command that
        touches the new and old parents, pins the new parent's ancestors (directory moves) and
        moves the entry with compare-and-set; then the commit."""
        current = self._primary.find_one({"_id": entry_id})
        if current is not None and current.get("op") == token and "inode" not in current:
            return _to_entry(current), memo.get("replaced")  # an earlier attempt applied, its reply was lost
        if current is None or "inode" in current:
            return self._rename_linked_once(entry_id, new_parent_id, new_name, replace_existing, expected_version, source,
                                            token, memo)
        if expected_version is not None and current["version"] != expected_version:
            self._current(entry_id, expected_version)  # raises Conflict
        if source is not None and source != (current["parent_id"], current["name"]):
            raise NotFound(f"{source[1]!r} in directory {source[0]} is not a name of entry {entry_id}")
        is_dir = current["type"] == DIR
        old_parent = current["parent_id"]
        chain: builtins.list[tuple[int, int | None]] = []
        if is_dir and new_parent_id != old_parent:
            chain = self._ancestors(new_parent_id, entry_id, current["name"])
        existing: dict[str, Any] | None = None
        if replace_existing:
            existing = self._primary.find_one({"parent_id": new_parent_id, "name": new_name})
            if existing is not None and existing["_id"] == entry_id:
                existing = None
        existing_inode = self._replaced(existing, new_name, is_dir)
        memo["replaced"] = _to_entry(existing, existing_inode) if existing is not None else None

        now = time.time()
        changes = {"parent_id": new_parent_id, "name": new_name, "ctime": now, "op": token}
        moved = {**current, **changes, "version": current["version"] + 1}
        moved_dir = 1 if is_dir and old_parent != new_parent_id else 0
        writes = [_touch(new_parent_id, token, now, moved_dir - (1 if existing is not None and existing["type"] == DIR else 0))]
        if old_parent != new_parent_id:
            writes.append(_touch(old_parent, token, now, -moved_dir))
        # the ancestors read for the cycle check are written too, with the parent each had: a
        # concurrent move of any of them makes one of the two transactions fail (no write skew)
        writes += [UpdateOne({"_id": node, "parent_id": parent, "type": DIR}, {"$inc": {"lock": 1}}) for node, parent in chain]
        writes.append(UpdateOne({"_id": entry_id, "parent_id": old_parent, "version": current["version"]},
                                {"$set": changes, "$inc": {"version": 1}}))

        def body(session: ClientSession) -> None:
            if existing is not None:
                left = self._replace_in(session, existing, existing_inode, new_parent_id, new_name, token, now)
                memo["replaced"] = self._left(memo["replaced"], left, now)
            if self._primary.bulk_write(writes, ordered=True, session=session).matched_count != len(writes):
                raise _Mismatch()

        try:
            self._transaction(body)
        except (_Mismatch, BulkWriteError, DuplicateKeyError) as exc:
            if isinstance(exc, BulkWriteError) and _duplicate_index(exc) is None:
                raise
            again = self._primary.find_one({"_id": entry_id}, {"op": 1})
            if again is not None and again.get("op") == token:
                return _to_entry(moved), memo["replaced"]
            error = self._parent_error(new_parent_id)
            if error is not None:
                raise error from None
            if not isinstance(exc, _Mismatch) and not replace_existing:
                raise AlreadyExists(f"{new_name!r} already exists") from None
            raise self._lost(entry_id, expected_version) from None
        return _to_entry(moved), memo["replaced"]

    @staticmethod
    def _left(replaced: Entry, left: int, now: float) -> Entry:
        """A removed name as the caller learns of it: ``nlink`` the names left (a version and
        ctime moved on when some are)."""
        if not left:
            return replaced.copy(nlink=0)
        return replaced.copy(nlink=left, version=replaced.version + 1, ctime=now)

    def _rename_linked_once(
        self, entry_id: int, new_parent_id: int, new_name: str, replace_existing: bool, expected_version: int | None,
        source: tuple[int, str] | None, token: int, memo: dict[str, Any],
    ) -> tuple[Entry, Entry | None]:
        """:meth:`rename` of one name of a linked inode, one transaction: [remove the replaced
        name], move the pointer, bump the inode's version (compare-and-set, and its ``op`` token
        tells a retry that the move applied), touch the parents."""
        inode = self._pinodes.find_one({"_id": entry_id})
        if inode is None:
            if self._primary.find_one({"_id": entry_id}, {"_id": 1}) is None:
                raise NotFound(f"catalog entry {entry_id} no longer exists")
            raise _Retry()  # inlined again as we read
        if inode.get("op") == token and "moved" in memo:
            return memo["moved"], memo.get("replaced")  # an earlier attempt applied, its reply was lost
        if expected_version is not None and inode["version"] != expected_version:
            raise Conflict(f"entry {entry_id} was changed by another writer (version {inode['version']},"
                           f" expected {expected_version})")
        name = self._named(entry_id, source, int(inode["nlink"]))
        here = _to_entry(name, inode)
        existing = self._primary.find_one({"parent_id": new_parent_id, "name": new_name})
        if existing is not None and existing["_id"] != name["_id"] and existing.get("inode") == entry_id:
            return here, None  # another name of the same inode: nothing changes (POSIX)
        if existing is not None and existing["_id"] == name["_id"]:
            existing = None
        if existing is not None and not replace_existing:
            raise AlreadyExists(f"{new_name!r} already exists")
        existing_inode = self._replaced(existing, new_name, False)
        replaced = _to_entry(existing, existing_inode) if existing is not None else None
        now = time.time()
        moved = here.copy(parent_id=new_parent_id, name=new_name, version=here.version + 1, ctime=now)

        def body(session: ClientSession) -> None:
            memo["replaced"] = replaced
            if existing is not None and replaced is not None:
                left = self._replace_in(session, existing, existing_inode, new_parent_id, new_name, token, now)
                memo["replaced"] = self._left(replaced, left, now)
            renamed = self._primary.update_one(
                {"_id": name["_id"], "parent_id": name["parent_id"], "name": name["name"], "inode": entry_id},
                {"$set": {"parent_id": new_parent_id, "name": new_name, "op": token}}, session=session)
            bumped = self._pinodes.update_one({"_id": entry_id, "version": inode["version"]},
                                              {"$inc": {"version": 1}, "$set": {"ctime": now, "op": token}}, session=session)
            touched = self._primary.update_one(*_touch_parts(new_parent_id, token, now), session=session)
            if renamed.matched_count + bumped.matched_count + touched.matched_count != 3:
                raise _Mismatch()
            if name["parent_id"] != new_parent_id:
                self._primary.update_one(*_touch_parts(name["parent_id"], token, now), session=session)
            memo["moved"] = moved

        try:
            self._transaction(body)
        except (_Mismatch, DuplicateKeyError):
            memo.pop("moved", None)
            error = self._parent_error(new_parent_id)
            if error is not None:
                raise error from None
            if expected_version is not None:
                self._current(entry_id, expected_version)  # raises Conflict if it changed
            raise _Retry() from None
        return moved, memo["replaced"]

    def _ancestors(self, dir_id: int, moved_id: int, moved_name: str) -> builtins.list[tuple[int, int | None]]:
        """(id, parent_id) of ``dir_id`` and each ancestor below the root, read from the primary;
        ``InvalidArgument`` if ``moved_id`` is among them (a move into itself)."""
        chain: builtins.list[tuple[int, int | None]] = []
        node: int | None = dir_id
        while node is not None and node != ROOT_ID:
            if node == moved_id:
                raise InvalidArgument(f"cannot move directory {moved_name!r} into itself")
            doc = self._primary.find_one({"_id": node}, {"parent_id": 1, "type": 1, "name": 1})
            if doc is None or doc["type"] != DIR:
                if node == dir_id:
                    raise self._parent_error(dir_id) or _Retry()
                raise _Retry()  # an ancestor moved or went away as we read: read again
            chain.append((node, doc.get("parent_id")))
            node = doc.get("parent_id")
            if len(chain) > 100_000:
                raise CatalogError(f"catalog {self._safe_url}: parent chain of entry {dir_id} loops")
        if node is None:
            raise _Retry()  # reached a detached entry: a concurrent move; read again
        return chain

    def delete(self, entry_id: int, expected_version: int | None = None, *,
               source: tuple[int, str] | None = None) -> Entry:
        """One transaction: [look for a child], delete with compare-and-set, touch the parent;
        then the commit.  A name of a linked inode: remove the pointer and count one name less
        on the inode (or inline it again into its last name), touch the parent."""
        return self._delete(entry_id, expected_version, source, None)

    def _delete(self, entry_id: int, expected_version: int | None, source: tuple[int, str] | None,
                last_version: int | None) -> Entry:
        """:meth:`delete`; with ``last_version`` the compare-and-set applies only to a last name
        (:meth:`delete_entries`)."""
        if entry_id == ROOT_ID:
            raise InvalidArgument("the root directory cannot be deleted")
        token = self._new_token()
        memo: dict[str, Any] = {}
        return self._retrying(lambda: self._delete_once(entry_id, expected_version, source, last_version, token, memo),
                              f"delete of entry {entry_id}")

    def _delete_once(self, entry_id: int, expected_version: int | None, source: tuple[int, str] | None,
                     last_version: int | None, token: int, memo: dict[str, Any]) -> Entry:
        if "doc" in memo and self._applied(memo["doc"]["parent_id"], token):
            return memo["result"]  # type: ignore[no-any-return]  # an earlier attempt applied it, its reply was lost
        current = self._primary.find_one({"_id": entry_id})
        if current is None or "inode" in current:
            return self._unlink_once(entry_id, expected_version, source, token, memo)
        if last_version is not None:
            expected_version = last_version
        if expected_version is not None and current["version"] != expected_version:
            current = self._current(entry_id, expected_version)  # raises Conflict
        if source is not None and source != (current["parent_id"], current["name"]):
            raise NotFound(f"{source[1]!r} in directory {source[0]} is not a name of entry {entry_id}")
        memo["doc"] = current
        memo["result"] = _to_entry(current).copy(nlink=0)
        parent_id = current["parent_id"]

        def body(session: ClientSession) -> None:
            if current["type"] == DIR and self._has_children(entry_id, session):
                raise DirectoryNotEmpty(f"directory {current['name']!r} is not empty")
            gone = self._primary.delete_one(
                {"_id": entry_id, "parent_id": parent_id, "version": current["version"]}, session=session
            )
            if gone.deleted_count != 1:
                raise _Mismatch()
            self._primary.update_one(*_touch_parts(parent_id, token, time.time(), -1 if current["type"] == DIR else 0),
                                     session=session)

        try:
            self._transaction(body)
        except _Mismatch:
            memo.pop("doc", None)
            raise self._lost(entry_id, expected_version) from None
        return memo["result"]  # type: ignore[no-any-return]

    def _unlink_once(self, entry_id: int, expected_version: int | None, source: tuple[int, str] | None, token: int,
                     memo: dict[str, Any]) -> Entry:
        """:meth:`delete` of one name of a linked inode: one transaction (``_unlink_in`` and the
        parent's touch, whose token tells a retry that it applied)."""
        inode = self._pinodes.find_one({"_id": entry_id})
        if inode is None:
            if self._primary.find_one({"_id": entry_id}, {"_id": 1}) is None:
                raise NotFound(f"catalog entry {entry_id} no longer exists")
            raise _Retry()  # inlined again as we read
        if expected_version is not None and inode["version"] != expected_version:
            raise Conflict(f"entry {entry_id} was changed by another writer (version {inode['version']},"
                           f" expected {expected_version})")
        name = self._named(entry_id, source, int(inode["nlink"]))
        now = time.time()
        removed = _to_entry(name, inode)

        def body(session: ClientSession) -> None:
            left = self._unlink_in(session, name, inode, token, now)
            if self._primary.update_one(*_touch_parts(name["parent_id"], token, now), session=session).matched_count != 1:
                raise _Mismatch()
            memo["doc"], memo["result"] = name, self._left(removed, left, now)

        try:
            self._transaction(body)
        except _Mismatch:
            memo.pop("doc", None)
            raise _Retry() from None
        return memo["result"]  # type: ignore[no-any-return]

    @_reads
    def touch_atime(self, entry: Entry, atime: float) -> None:
        where: dict[str, Any] = {"_id": entry.id, "inode": {"$exists": False}}
        if entry.parent_id is not None:
            where["parent_id"] = entry.parent_id  # the shard key
        with self._errors():
            if not self._primary.update_one(where, {"$max": {"atime": atime}}).matched_count:
                self._pinodes.update_one({"_id": entry.id}, {"$max": {"atime": atime}})

    def walk(self, top_id: int) -> Iterator[tuple[str, Entry]]:
        # Depth first (each directory is followed by everything below it), one paged iterator
        # per level: memory grows with the depth of the tree, not its size.
        stack: builtins.list[tuple[str, Iterator[Entry]]] = [("", self.iter_children(top_id))]
        while stack:
            prefix, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                continue
            rel = prefix + child.name
            yield rel, child
            if child.type == DIR:
                stack.append((rel + "/", self.iter_children(child.id)))

    def iter_replicas(self, backend: str | None = None) -> Iterator[tuple[Entry, Replica]]:
        # Paged by _id rather than one long cursor, so a slow consumer never meets a cursor
        # timeout: a page of inline names and one of linked inodes (read through one name each:
        # the one with the inode's id, else the smallest), merged by _id.
        query: dict[str, Any] = {"replicas.0": {"$exists": True}} if backend is None else {"replicas.backend": backend}
        last = -1
        while True:
            with self._errors():
                inline = builtins.list(self._entries.find({**query, "_id": {"$gt": last}}).sort("_id", 1).limit(PAGE))
                inodes = builtins.list(self._inodes.find({**query, "_id": {"$gt": last}}).sort("_id", 1).limit(PAGE))
                page = sorted(inline + inodes, key=lambda d: d["_id"])[:PAGE]
                names: dict[int, dict[str, Any]] = {}
                linked = [d["_id"] for d in page if "nlink" in d]
                if linked:
                    for n in self._entries.find({"inode": {"$in": linked}}, {"parent_id": 1, "name": 1, "inode": 1}):
                        best = names.get(n["inode"])
                        if best is None or (best["_id"] != n["inode"] and (n["_id"] == n["inode"] or n["_id"] < best["_id"])):
                            names[n["inode"]] = n
            for doc in page:
                if "nlink" in doc and doc["_id"] not in names:
                    continue  # its last names went as we read
                entry = _to_entry(names[doc["_id"]], doc) if "nlink" in doc else _to_entry(doc)
                for replica in entry.replicas:
                    if backend is None or replica.backend == backend:
                        yield entry, replica
            if len(inline) < PAGE and len(inodes) < PAGE and len(inline) + len(inodes) <= PAGE:
                return
            last = page[-1]["_id"]

    def _users(self, query: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Inline names and linked inodes whose replicas match ``query``: one aggregation over
        both collections (``$unionWith``), one round trip for up to 100,000 of them."""
        project = {"$project": {"_id": 1, "replicas.backend": 1, "replicas.key": 1}}
        pipeline: builtins.list[dict[str, Any]] = [
            {"$match": query}, project, {"$unionWith": {"coll": self._inodes.name, "pipeline": [{"$match": query}, project]}}]
        return self._entries.aggregate(pipeline, batchSize=100_000)  # type: ignore[no-any-return]

    @_reads
    def replica_users(self, backend: str, key: str) -> builtins.list[int]:
        with self._errors():
            return [int(d["_id"]) for d in self._users({"replicas": {"$elemMatch": {"backend": backend, "key": key}}})]

    @_reads
    def replica_users_many(self, objects: Iterable[tuple[str, str]]) -> dict[tuple[str, str], builtins.list[int]]:
        # one query: per backend, an $elemMatch on (backend, key $in [...]) (the replica_key index)
        wanted = dict.fromkeys(objects)
        result: dict[tuple[str, str], builtins.list[int]] = {obj: [] for obj in wanted}
        if not wanted:
            return result
        by_backend: dict[str, builtins.list[str]] = {}
        for backend, key in wanted:
            by_backend.setdefault(backend, []).append(key)
        clauses = [{"replicas": {"$elemMatch": {"backend": b, "key": {"$in": keys}}}} for b, keys in by_backend.items()]
        query = clauses[0] if len(clauses) == 1 else {"$or": clauses}
        with self._errors():
            for doc in self._users(query):
                for r in doc.get("replicas", []):
                    users = result.get((r["backend"], r["key"]))
                    if users is not None and doc["_id"] not in users:
                        users.append(int(doc["_id"]))
        return result

    def delete_entries(self, entries: Sequence[Entry]) -> builtins.list[Entry]:
        # One unordered bulk of filtered deletes (compare-and-set on the version; parent_id for a
        # shard key; never a directory, which needs delete's emptiness check; never a pointer,
        # which has no version).  Only when some matched nothing, a second query tells changed
        # entries (kept) from vanished ones, and finds the names of linked inodes, removed one
        # by one (a transaction each).
        check_no_dirs(entries)
        if not entries:
            return []
        # The same bulk touches each directory it empties (mtime/ctime, as delete does); safe to
        # run again after a lost reply: deletes of vanished entries count as done, and the touch
        # is filtered on its token.
        token, now = self._new_token(), time.time()
        ops: builtins.list[Any] = [
            pymongo.DeleteOne({"_id": e.id, "parent_id": e.parent_id, "version": e.version, "type": {"$ne": DIR}})
            for e in entries]
        ops += [_touch(parent_id, token, now) for parent_id in sorted({e.parent_id for e in entries if e.parent_id})]
        ids = [e.id for e in entries]

        def once() -> builtins.list[dict[str, Any]]:
            deleted = self._primary.bulk_write(ops, ordered=False).deleted_count
            if deleted == len(entries):
                return []
            return builtins.list(self._primary.find({"$or": [{"_id": {"$in": ids}}, {"inode": {"$in": ids}}]},
                                                    {"_id": 1, "parent_id": 1, "name": 1, "inode": 1}))

        docs = self._retrying(once, "delete of a batch of entries")
        if not docs:
            return []
        alive = {int(d.get("inode", d["_id"])) for d in docs}
        pointers = {(d["parent_id"], d["name"]): d["inode"] for d in docs if "inode" in d}
        kept: builtins.list[Entry] = []
        bumps: dict[int, int] = {}
        for e in entries:
            if pointers.get((e.parent_id, e.name)) == e.id:
                try:
                    removed = self._delete(e.id, None, (e.parent_id or 0, e.name), e.version + bumps.get(e.id, 0))
                except NotFound:
                    continue
                except Conflict:
                    kept.append(e)
                    continue
                if removed.nlink:
                    bumps[e.id] = bumps.get(e.id, 0) + 1
            elif e.id in alive:
                kept.append(e)
        return kept

    def make_durable(self) -> None:
        """Every write is acknowledged only once majority-committed and journaled (see
        ``__init__``; a URL that sets ``w``/``journal`` itself takes that choice)."""

    @_reads
    def count_replicas(self, backend: str) -> int:
        # inodes with a replica there (as the SQLite engine's replica index counts them)
        with self._errors():
            return int(self._entries.count_documents({"replicas.backend": backend})
                       + self._inodes.count_documents({"replicas.backend": backend}))

    @_reads
    def stats(self) -> dict[str, int]:
        # per inode: inline names, and the inodes of linked names (each once)
        project = {"$project": {"type": 1, "size": 1}}
        pipeline: builtins.list[dict[str, Any]] = [
            {"$match": {"inode": {"$exists": False}}}, project,
            {"$unionWith": {"coll": self._inodes.name, "pipeline": [project]}},
            {"$group": {
                "_id": None,
                "entries": {"$sum": 1},
                "files": {"$sum": {"$cond": [{"$eq": ["$type", "file"]}, 1, 0]}},
                "dirs": {"$sum": {"$cond": [{"$eq": ["$type", DIR]}, 1, 0]}},
                "bytes": {"$sum": {"$cond": [{"$eq": ["$type", "file"]}, "$size", 0]}},
            }},
        ]
        with self._errors():
            result = builtins.list(self._entries.aggregate(pipeline))
        row = result[0] if result else {}
        return {k: int(row.get(k, 0)) for k in ("entries", "files", "dirs", "bytes")}

    # -- backends ----------------------------------------------------------------------------
    @_reads
    def put_backend(self, record: BackendRecord) -> None:
        doc = {"url": record.url, "options": record.options, "cloud": record.cloud, "region": record.region,
               "tier": record.tier, "cost": record.cost, "created": record.created}
        with self._errors():
            self._backends.replace_one({"_id": record.name}, doc, upsert=True)

    @_reads
    def get_backend(self, name: str) -> BackendRecord:
        with self._errors():
            doc = self._backends.find_one({"_id": name})
        if doc is None:
            raise NotFound(f"unknown backend {name!r}")
        return _to_backend(doc)

    @_reads
    def list_backends(self) -> builtins.list[BackendRecord]:
        with self._errors():
            return [_to_backend(d) for d in self._backends.find().sort("_id", 1)]

    def delete_backend(self, name: str) -> None:
        with self._errors():
            deleted = self._backends.delete_one({"_id": name}).deleted_count
        if not deleted:
            raise NotFound(f"unknown backend {name!r}")

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        self._client.close()
