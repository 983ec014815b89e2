"""The shared catalog engine: MongoDB (or any server speaking its wire protocol).

``MongoCatalog("mongodb://host:27017/vdir")`` keeps everything in one database (named by the
URL's path, ``vdir`` when it has none):

* ``entries`` — one document per entry, integer ``_id`` (ids handed out in small blocks from
  ``counters`` with ``find_one_and_update`` + ``$inc``), unique index ``(parent_id, name)`` so a
  listing is an index range scan, an index on ``replicas.backend``.  Extended attributes are a
  list of ``{k, v}`` pairs with ``v`` as BSON binary (xattr names contain dots, which MongoDB
  field names should not).
* ``backends`` — ``_id`` is the backend name.
* ``tasks`` — integer ``_id`` made by the client (:func:`~vdir.catalog.base.new_task_id`: no
  counter document, no extra round trip).  While a task is unfinished it has ``open_key`` (its
  dedupe key, sparse unique index ``open_key``: "at most one unfinished task per dedupe key",
  and the dedupe lookup is an index point query) and ``due`` (seconds on the server's clock when
  it may be claimed: ``max(not_before, created)`` while pending, the lease expiry while running;
  sparse index ``due``, so finished tasks are not in it and claiming reads the head of a short
  index).  A finished task has ``expire_at`` (a BSON date, ``$$NOW`` + ``task_retention``) under
  a TTL index with ``expireAfterSeconds: 0``: the server deletes it then.  ``state_created`` and
  ``created`` serve ``list_tasks``.  Times written by the task methods come from the server
  (``$$NOW`` in pipeline updates, or read with ``$$NOW`` in the same aggregation that picks the
  task to claim), never from the client's clock.
* ``records`` — ``(collection, key)`` unique, the document as a BSON sub-document.

Atomicity.  Every single-entry write is one ``update_one`` / ``delete_one`` whose filter holds
the version just read (compare-and-set): when it matches, the document is exactly the one read,
so the result is known without reading it back.  A lost race is a :class:`~vdir.errors.Conflict`
when the caller passed ``expected_version`` and a retry when it did not.  (Plain filtered
writes rather than ``find_one_and_*``: same atomicity, and SecantusDB, the server the tests use,
runs ``findAndModify`` in time proportional to the collection.)  Claiming a task is two round
trips for the same reason: one aggregation reads the first few due candidates from the ``due``
index together with the server's ``$$NOW``, then one ``update_one`` compare-and-sets the first of
them still as read (``_id``, ``due``, ``attempts``); a claimer that loses tries the next.

Writes that touch several documents are ordered so that no interleaving leaves an entry whose
parent is gone or a cycle detached from the root: ``create`` inserts first and then checks the
parent (removing its own document if the parent vanished); deleting a directory checks for
children before *and* after the delete, putting the directory back if a child appeared in
between; a move between directories re-checks the new parent chain afterwards and moves back if
a concurrent operation removed it or closed a cycle.  ``rename`` over an existing entry deletes
the destination and moves the source inside one transaction when the server supports them
(replica set or mongos); on a standalone server the two writes are ordered, and for a moment
the destination name is absent.

pymongo and bson are imported here and nowhere else in vdir.  Their errors become vdir errors in
one function, :meth:`MongoCatalog._translate`.
"""

from __future__ import annotations

import builtins
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

try:
    import bson
    import pymongo
    from pymongo import ReturnDocument
    from pymongo.client_session import ClientSession
    from pymongo.errors import (
        AutoReconnect,
        ConfigurationError,
        ConnectionFailure,
        CursorNotFound,
        DuplicateKeyError,
        ExecutionTimeout,
        OperationFailure,
        PyMongoError,
        WTimeoutError,
    )
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    from vdir.errors import MissingDependency

    raise MissingDependency("the MongoDB catalog needs pymongo: pip install 'vdir[mongo]'") from exc

from vdir.catalog.base import (
    DIR,
    DONE,
    FAILED,
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
    new_task_id,
)
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
    Timeout,
    VDirError,
)

T = TypeVar("T")

DEFAULT_DATABASE = "vdir"
ID_BLOCK = 64
"""Entry ids reserved per round trip to ``counters``."""
RETRIES = 20
"""Attempts of a write whose compare-and-set lost against a concurrent writer (no expected_version)."""
PAGE = 500

_ENTRY_FIELDS = ("type", "mode", "uid", "gid", "size", "mtime", "ctime", "hash", "target", "blocks")
_AUTH_CODES = {13, 18}  # Unauthorized, AuthenticationFailed


class _Retry(Exception):
    """Internal: a compare-and-set on a version we read (not one the caller gave) lost; read again."""


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


def _to_entry(d: dict[str, Any]) -> Entry:
    return Entry(
        id=d["_id"], parent_id=d.get("parent_id"), name=d["name"], type=d["type"], mode=d["mode"], uid=d["uid"],
        gid=d["gid"], size=d["size"], mtime=d["mtime"], ctime=d["ctime"], hash=d.get("hash"), version=d["version"],
        target=d.get("target"), blocks=d.get("blocks"),
        xattrs={x["k"]: bytes(x["v"]) for x in d.get("xattrs", [])},
        replicas=[Replica(**r) for r in d.get("replicas", [])],
    )


_TASK_FIELDS = ("kind", "entry_id", "entry_version", "source", "destination", "state", "attempts", "last_error",
                "lease_owner", "lease_expires", "not_before", "dedupe_key", "payload", "created", "updated")


_NOW_S: dict[str, Any] = {"$divide": [{"$toLong": "$$NOW"}, 1000]}
"""The server's clock in an aggregation expression: seconds since the epoch (ms precision)."""
CLAIM_CANDIDATES = 8
"""Due tasks read per claim round trip (a claimer that loses the first tries the next)."""


def _lit(value: Any) -> dict[str, Any]:
    """A value inside an update pipeline, never read as a field path or operator (``$x``)."""
    return {"$literal": value}


def _seconds(date: Any) -> float:
    """A BSON date (naive UTC datetime) as seconds since the epoch."""
    import calendar

    return calendar.timegm(date.utctimetuple()) + date.microsecond / 1e6


def _to_task(d: dict[str, Any]) -> Task:
    fields: dict[str, Any] = {f: d[f] for f in _TASK_FIELDS if f in d}
    return Task(id=d["_id"], **fields)


def _to_backend(d: dict[str, Any]) -> BackendRecord:
    return BackendRecord(name=d["_id"], url=d["url"], options=d.get("options", {}), cloud=d["cloud"],
                         region=d["region"], tier=d["tier"], cost=d["cost"], created=d["created"])


class MongoCatalog(Catalog):
    """Catalog in a MongoDB database; ``url`` is ``mongodb://[user:pass@]host[:port]/[database][?options]``."""

    def __init__(self, url: str, *, server_selection_timeout_ms: int = 5000) -> None:
        self.url = url
        self._safe_url = redact(url)
        self._ids_lock = threading.Lock()
        self._next_id = 0
        self._id_limit = 0
        options: dict[str, Any] = {}
        if "serverselectiontimeoutms" not in url.lower():
            options["serverSelectionTimeoutMS"] = server_selection_timeout_ms
        query = url.partition("?")[2].lower()
        if "w=" not in query and "journal=" not in query:
            # a commit acknowledged by one node can be rolled back by a failover after the core
            # has deleted the objects the old version used: acknowledge only majority-journaled
            # writes (make_durable then has nothing left to do)
            options.update(w="majority", journal=True)
        with self._errors():
            self._client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(url, **options)
        try:
            with self._errors():
                self._db = self._client.get_default_database(DEFAULT_DATABASE)
                self._entries = self._db["entries"]
                self._counters = self._db["counters"]
                self._backends = self._db["backends"]
                self._tasks = self._db["tasks"]
                self._records = self._db["records"]
                try:
                    hello = self._client.admin.command("hello")
                except OperationFailure:  # servers before 4.4.2 only know the legacy name
                    hello = self._client.admin.command("isMaster")
                self._transactions = bool(hello.get("setName") or hello.get("msg") == "isdbgrid") and (
                    hello.get("logicalSessionTimeoutMinutes") is not None
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
        if isinstance(exc, DuplicateKeyError):
            return AlreadyExists(f"{where}: duplicate key ({text})")
        if isinstance(exc, (ExecutionTimeout, WTimeoutError)):
            return Timeout(f"{where}: timed out ({text})")
        if isinstance(exc, (ConnectionFailure, AutoReconnect)):  # incl. ServerSelectionTimeoutError
            return BackendUnavailable(f"{where} is unreachable: {text}")
        if isinstance(exc, OperationFailure) and exc.code in _AUTH_CODES:
            return AuthenticationError(f"{where}: not authorized ({text})")
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

    # -- set-up ------------------------------------------------------------------------------
    def _init_schema(self) -> None:
        meta = self._db["meta"]
        found = meta.find_one({"_id": "schema"})
        # a catalog without the document is either new or was written with schema 1
        version = int(found["version"]) if found else 1
        if version > SCHEMA_VERSION:
            raise CatalogError(
                f"catalog {self._safe_url} has schema {version}, newer than this vdir understands ({SCHEMA_VERSION}); upgrade vdir"
            )
        self._entries.create_index([("parent_id", 1), ("name", 1)], unique=True, name="parent_name")
        self._entries.create_index("replicas.backend", name="replica_backend")
        # schema 2: who uses an object (replica_users); Entry.blocks is a plain optional field
        self._entries.create_index([("replicas.backend", 1), ("replicas.key", 1)], name="replica_key")
        self._records.create_index([("collection", 1), ("key", 1)], unique=True, name="collection_key")
        for counter in ("entries",):
            self._counters.update_one({"_id": counter}, {"$max": {"seq": ROOT_ID}}, upsert=True)
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
        # -----------------------------------------------------------------------------------
        if version < SCHEMA_VERSION:
            meta.update_one({"_id": "schema"}, {"$max": {"version": SCHEMA_VERSION}}, upsert=True)

    def _create_task_indexes(self) -> None:
        self._tasks.create_index("open_key", unique=True, sparse=True, name="open_key")
        self._tasks.create_index("due", sparse=True, name="due")
        self._tasks.create_index("expire_at", sparse=True, expireAfterSeconds=0, name="expire_at")
        self._tasks.create_index([("state", 1), ("created", 1), ("_id", 1)], name="state_created")
        self._tasks.create_index([("created", 1), ("_id", 1)], name="created")

    def _migrate_tasks_to_3(self) -> None:
        """Schema 2 -> 3: unfinished tasks get ``due``, finished ones ``expire_at``; the indexes
        the new queries do not use are dropped (the partial ``dedupe_open`` first, as the sparse
        ``open_key`` index on the same key replaces it).  Every step is idempotent, so two
        processes upgrading at once, or one killed half-way, end in the same state."""
        existing = set(self._tasks.index_information())
        for name in ("claim", "lease", "purge", "dedupe_open"):
            if name in existing:
                self._tasks.drop_index(name)
        self._tasks.update_many({"state": PENDING, "due": {"$exists": False}},
                                [{"$set": {"due": {"$max": ["$not_before", "$created"]}}}])
        self._tasks.update_many({"state": RUNNING, "due": {"$exists": False}},
                                [{"$set": {"due": {"$ifNull": ["$lease_expires", 0]}}}])
        self._tasks.update_many(
            {"state": {"$in": [DONE, FAILED]}, "expire_at": {"$exists": False}},
            [{"$set": {"expire_at": {"$toDate": {"$multiply": [{"$add": ["$updated", TASK_RETENTION]}, 1000]}}}}],
        )
        self._counters.delete_one({"_id": "tasks"})  # task ids no longer come from a counter

    def _new_entry_id(self) -> int:
        with self._ids_lock:
            if self._next_id >= self._id_limit:
                doc = self._counters.find_one_and_update(
                    {"_id": "entries"}, {"$inc": {"seq": ID_BLOCK}}, upsert=True, return_document=ReturnDocument.AFTER
                )
                if doc is None:  # pragma: no cover - upsert always returns a document
                    raise CatalogError(f"catalog {self._safe_url}: the entry id counter is missing")
                self._id_limit = int(doc["seq"]) + 1
                self._next_id = self._id_limit - ID_BLOCK
            self._next_id += 1
            return self._next_id - 1

    def _retrying(self, fn: Callable[[], T], what: str) -> T:
        with self._errors():
            for _ in range(RETRIES):
                try:
                    return fn()
                except _Retry:
                    continue
        raise Conflict(f"{what}: kept changing under concurrent writers; try again")

    # -- entries -----------------------------------------------------------------------------
    def _doc(self, entry_id: int | None, session: ClientSession | None = None) -> dict[str, Any] | None:
        if entry_id is None:
            return None
        return self._entries.find_one({"_id": entry_id}, session=session)

    def _has_children(self, dir_id: int) -> bool:
        return self._entries.find_one({"parent_id": dir_id}, {"_id": 1}) is not None

    def _parent_error(self, parent_id: int | None) -> VDirError | None:
        """Why ``parent_id`` cannot hold entries, or None when it is an existing directory."""
        parent = self._entries.find_one({"_id": parent_id}, {"type": 1, "name": 1}) if parent_id is not None else None
        if parent is None:
            return NotFound(f"parent directory {parent_id} does not exist")
        if parent["type"] != DIR:
            return NotADirectory(f"parent {parent['name']!r} is not a directory")
        return None

    def _current(self, entry_id: int, expected_version: int | None) -> dict[str, Any]:
        doc = self._doc(entry_id)
        if doc is None:
            raise NotFound(f"catalog entry {entry_id} no longer exists")
        if expected_version is not None and doc["version"] != expected_version:
            raise Conflict(
                f"{doc['name']!r} was changed by another writer (version {doc['version']}, expected {expected_version})"
            )
        return doc

    def _lost(self, entry_id: int, expected_version: int | None) -> Exception:
        """A CAS on ``entry_id`` matched nothing: NotFound / Conflict for the caller, or retry."""
        if expected_version is None:
            return _Retry()
        try:
            self._current(entry_id, expected_version)
        except VDirError as exc:
            return exc
        return _Retry()  # changed and changed back to the expected version: try again

    def get(self, entry_id: int) -> Entry:
        with self._errors():
            doc = self._doc(entry_id)
        if doc is None:
            raise NotFound(f"catalog entry {entry_id} not found")
        return _to_entry(doc)

    def lookup(self, parent_id: int, name: str) -> Entry | None:
        with self._errors():
            doc = self._entries.find_one({"parent_id": parent_id, "name": name})
        return _to_entry(doc) if doc else None

    def list(self, parent_id: int, after: str | None = None, limit: int | None = None) -> builtins.list[Entry]:
        # MongoDB compares strings by their UTF-8 bytes (no collation), i.e. byte order.
        query: dict[str, Any] = {"parent_id": parent_id}
        if after is not None:
            query["name"] = {"$gt": after}
        with self._errors():
            cursor = self._entries.find(query).sort([("parent_id", 1), ("name", 1)])
            if limit is not None:
                if limit <= 0:
                    return []
                cursor = cursor.limit(limit)
            return [_to_entry(d) for d in cursor]

    def create(self, entry: Entry) -> Entry:
        with self._errors():
            entry_id = self._new_entry_id()
            doc = _entry_doc(entry, entry_id, 1)
            # Insert first, then check the parent: a directory deleted concurrently either sees
            # this child (and stays), or this check sees the directory gone (and we withdraw).
            try:
                self._entries.insert_one(doc)
            except DuplicateKeyError:
                error = self._parent_error(entry.parent_id)
                raise error or AlreadyExists(f"{entry.name!r} already exists in directory {entry.parent_id}") from None
            error = self._parent_error(entry.parent_id)
            if error is not None:
                self._entries.delete_one({"_id": entry_id})
                raise error
        return entry.copy(id=entry_id, version=1)

    def update(self, entry: Entry, expected_version: int) -> Entry:
        with self._errors():
            current = self._current(entry.id, expected_version)
            result = self._entries.update_one(
                {"_id": entry.id, "version": expected_version},
                {"$set": _entry_fields(entry), "$inc": {"version": 1}},
            )
            if result.matched_count != 1:
                self._current(entry.id, expected_version)
                raise Conflict(f"{current['name']!r} changed while it was being updated; try again")
        return entry.copy(parent_id=current["parent_id"], name=current["name"], version=expected_version + 1)

    def rename(
        self,
        entry_id: int,
        new_parent_id: int,
        new_name: str,
        *,
        replace_existing: bool = False,
        expected_version: int | None = None,
    ) -> tuple[Entry, Entry | None]:
        if entry_id == ROOT_ID:
            raise InvalidArgument("the root directory cannot be moved")
        return self._retrying(
            lambda: self._rename_once(entry_id, new_parent_id, new_name, replace_existing, expected_version),
            f"rename of entry {entry_id}",
        )

    def _rename_once(
        self, entry_id: int, new_parent_id: int, new_name: str, replace_existing: bool, expected_version: int | None
    ) -> tuple[Entry, Entry | None]:
        current = self._current(entry_id, expected_version)
        error = self._parent_error(new_parent_id)
        if error is not None:
            raise error
        is_dir = current["type"] == DIR
        if is_dir and self._in_subtree(new_parent_id, entry_id):
            raise InvalidArgument(f"cannot move directory {current['name']!r} into itself")
        existing = self._entries.find_one({"parent_id": new_parent_id, "name": new_name})
        replaced: dict[str, Any] | None = None
        if existing is not None and existing["_id"] != entry_id:
            if not replace_existing:
                raise AlreadyExists(f"{new_name!r} already exists")
            if existing["type"] == DIR and not is_dir:
                raise IsADirectory(f"cannot replace directory {new_name!r} with a non-directory")
            if existing["type"] != DIR and is_dir:
                raise NotADirectory(f"cannot replace non-directory {new_name!r} with a directory")
            if existing["type"] == DIR and self._has_children(existing["_id"]):
                raise DirectoryNotEmpty(f"directory {new_name!r} is not empty")
            replaced = existing

        changes = {"parent_id": new_parent_id, "name": new_name, "ctime": time.time()}
        moved = {**current, **changes, "version": current["version"] + 1}

        def write(session: ClientSession | None) -> None:
            if replaced is not None:
                gone = self._entries.delete_one({"_id": replaced["_id"], "version": replaced["version"]}, session=session)
                if gone.deleted_count != 1:
                    raise _Retry()  # the destination changed; look again
            try:
                matched = self._entries.update_one(
                    {"_id": entry_id, "version": current["version"]}, {"$set": changes, "$inc": {"version": 1}},
                    session=session,
                ).matched_count
            except DuplicateKeyError:
                matched = 0
                if not replace_existing:
                    raise AlreadyExists(f"{new_name!r} already exists") from None
            if matched != 1:
                if session is None and replaced is not None:
                    self._restore(replaced)
                raise self._lost(entry_id, expected_version)

        if replaced is not None and self._transactions:
            with self._client.start_session() as session:
                session.with_transaction(write)
        else:
            write(None)
        if replaced is not None and replaced["type"] == DIR and self._has_children(replaced["_id"]):
            # a child was created in the replaced directory as it went: undo, like a failed rmdir
            self._undo_move(moved, current, replaced)
            raise DirectoryNotEmpty(f"directory {new_name!r} is not empty")
        if new_parent_id != current["parent_id"] and not self._attached(new_parent_id, entry_id if is_dir else None):
            self._undo_move(moved, current, replaced)
            raise Conflict(f"{new_name!r}: the destination directory was moved or removed concurrently; nothing moved")
        return _to_entry(moved), _to_entry(replaced) if replaced is not None else None

    def _in_subtree(self, node_id: int | None, top_id: int) -> bool:
        """True if ``node_id`` is ``top_id`` or lies below it (walks up the parents)."""
        seen = 0
        while node_id is not None:
            if node_id == top_id:
                return True
            doc = self._entries.find_one({"_id": node_id}, {"parent_id": 1})
            node_id = doc.get("parent_id") if doc else None
            seen += 1
            if seen > 100_000:
                raise CatalogError(f"catalog {self._safe_url}: parent chain of entry {node_id} loops")
        return False

    def _attached(self, dir_id: int, moved_id: int | None) -> bool:
        """True if ``dir_id`` is a directory still reachable from the root without passing
        through ``moved_id`` (a concurrent rename may have closed a cycle)."""
        node: int | None = dir_id
        for _ in range(100_000):
            if node == ROOT_ID:
                return True
            if node is None or node == moved_id:
                return False
            doc = self._entries.find_one({"_id": node}, {"parent_id": 1, "type": 1})
            if doc is None or doc["type"] != DIR:
                return False
            node = doc.get("parent_id")
        return False

    def _restore(self, doc: dict[str, Any]) -> None:
        try:
            self._entries.insert_one(doc)
        except DuplicateKeyError as exc:
            raise CatalogError(
                f"catalog {self._safe_url}: could not put back entry {doc['_id']} ({doc['name']!r}) after a lost race"
            ) from exc

    def _undo_move(self, moved: dict[str, Any], before: dict[str, Any], replaced: dict[str, Any] | None) -> None:
        back = {"$set": {"parent_id": before["parent_id"], "name": before["name"]}, "$inc": {"version": 1}}
        try:
            self._entries.update_one({"_id": moved["_id"], "version": moved["version"]}, back)
        except DuplicateKeyError as exc:
            raise CatalogError(
                f"catalog {self._safe_url}: entry {moved['_id']} could not be moved back after a lost race"
            ) from exc
        if replaced is not None:
            self._restore(replaced)

    def delete(self, entry_id: int, expected_version: int | None = None) -> Entry:
        if entry_id == ROOT_ID:
            raise InvalidArgument("the root directory cannot be deleted")
        return self._retrying(lambda: self._delete_once(entry_id, expected_version), f"delete of entry {entry_id}")

    def _delete_once(self, entry_id: int, expected_version: int | None) -> Entry:
        current = self._current(entry_id, expected_version)
        is_dir = current["type"] == DIR
        if is_dir and self._has_children(entry_id):
            raise DirectoryNotEmpty(f"directory {current['name']!r} is not empty")
        if self._entries.delete_one({"_id": entry_id, "version": current["version"]}).deleted_count != 1:
            raise self._lost(entry_id, expected_version)
        if is_dir and self._has_children(entry_id):
            # a child arrived between the check and the delete: put the directory back
            self._restore(current)
            raise DirectoryNotEmpty(f"directory {current['name']!r} is not empty")
        return _to_entry(current)

    def iter_children(self, parent_id: int, page: int = 1000) -> Iterator[Entry]:
        """All children of a directory from one cursor read in batches of ``page`` (one query,
        not one per page); if the server drops an idle cursor it resumes after the last name."""
        after: str | None = None
        while True:
            query: dict[str, Any] = {"parent_id": parent_id}
            if after is not None:
                query["name"] = {"$gt": after}
            with self._errors():
                cursor = self._entries.find(query).sort([("parent_id", 1), ("name", 1)]).batch_size(page)
            try:
                while True:
                    try:
                        with self._errors():
                            doc = next(cursor, None)
                    except CatalogError as exc:
                        if isinstance(exc.__cause__, CursorNotFound):
                            break  # resume with a new cursor after `after`
                        raise
                    if doc is None:
                        return
                    entry = _to_entry(doc)
                    after = entry.name
                    yield entry
            finally:
                cursor.close()

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
        # Paged by _id rather than one long cursor, so a slow consumer never meets a cursor timeout.
        query: dict[str, Any] = {"replicas.0": {"$exists": True}} if backend is None else {"replicas.backend": backend}
        last = -1
        while True:
            with self._errors():
                batch = [_to_entry(d) for d in self._entries.find({**query, "_id": {"$gt": last}}).sort("_id", 1).limit(PAGE)]
            for entry in batch:
                for replica in entry.replicas:
                    if backend is None or replica.backend == backend:
                        yield entry, replica
            if len(batch) < PAGE:
                return
            last = batch[-1].id

    def replica_users(self, backend: str, key: str) -> builtins.list[int]:
        with self._errors():
            found = self._entries.find({"replicas": {"$elemMatch": {"backend": backend, "key": key}}}, {"_id": 1})
            return [int(d["_id"]) for d in found]

    def make_durable(self) -> None:
        """Every write is acknowledged only once majority-committed and journaled (see
        ``__init__``; a URL that sets ``w``/``journal`` itself takes that choice)."""

    def count_replicas(self, backend: str) -> int:
        # entries with a replica there (as the SQLite engine's replica index counts them)
        with self._errors():
            return int(self._entries.count_documents({"replicas.backend": backend}))

    def stats(self) -> dict[str, int]:
        pipeline: builtins.list[dict[str, Any]] = [
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
    def put_backend(self, record: BackendRecord) -> None:
        doc = {"url": record.url, "options": record.options, "cloud": record.cloud, "region": record.region,
               "tier": record.tier, "cost": record.cost, "created": record.created}
        with self._errors():
            self._backends.replace_one({"_id": record.name}, doc, upsert=True)

    def get_backend(self, name: str) -> BackendRecord:
        with self._errors():
            doc = self._backends.find_one({"_id": name})
        if doc is None:
            raise NotFound(f"unknown backend {name!r}")
        return _to_backend(doc)

    def list_backends(self) -> builtins.list[BackendRecord]:
        with self._errors():
            return [_to_backend(d) for d in self._backends.find().sort("_id", 1)]

    def delete_backend(self, name: str) -> None:
        with self._errors():
            deleted = self._backends.delete_one({"_id": name}).deleted_count
        if not deleted:
            raise NotFound(f"unknown backend {name!r}")

    # -- tasks -------------------------------------------------------------------------------
    def now(self) -> float:
        with self._errors():
            before = time.monotonic()
            hello = self._client.admin.command("hello")
            rtt = time.monotonic() - before
        return _seconds(hello["localTime"]) + rtt / 2

    def add_task(self, task: Task) -> Task:
        values = {f: _lit(getattr(task, f)) for f in ("kind", "entry_id", "entry_version", "source", "destination",
                                                      "not_before", "dedupe_key", "payload")}
        fields: dict[str, Any] = {
            **values, "state": PENDING, "attempts": 0, "last_error": None, "lease_owner": None, "lease_expires": None,
            "created": _NOW_S, "updated": _NOW_S, "due": {"$max": [_lit(task.not_before), _NOW_S]},
        }
        if task.dedupe_key is not None:
            fields["open_key"] = _lit(task.dedupe_key)

        def once() -> Task:
            if task.dedupe_key is not None:
                existing = self._tasks.find_one({"open_key": task.dedupe_key})
                if existing is not None:
                    return _to_task(existing)
            task_id = task.id or new_task_id()
            try:
                # an upsert that can only insert (the filter's second clause is false for every
                # task): the server stamps created/due with its clock, and returns the document
                doc = self._tasks.find_one_and_update(
                    {"_id": task_id, "kind": {"$exists": False}}, [{"$set": fields}], upsert=True,
                    return_document=ReturnDocument.AFTER,
                )
            except DuplicateKeyError as exc:
                if "open_key" not in str(exc.details or exc) and task.id:
                    raise AlreadyExists(f"task {task.id} already exists") from None
                raise _Retry() from None  # an equal task queued at the same moment, or an id collision
            if doc is None:  # pragma: no cover - upsert always returns a document
                raise _Retry()
            return _to_task(doc)

        return self._retrying(once, f"add_task {task.kind}")

    def _claim_filter(self, kinds: builtins.list[str] | None) -> dict[str, Any]:
        """Unfinished tasks (only they have ``due``), in ``due`` order from the ``due`` index."""
        query: dict[str, Any] = {"due": {"$lte": float("inf")}}
        if kinds:
            query["kind"] = {"$in": builtins.list(kinds)}
        return query

    def claim_task(self, owner: str, lease_seconds: float, kinds: builtins.list[str] | None = None) -> Task | None:
        pipeline: builtins.list[dict[str, Any]] = [
            {"$match": self._claim_filter(kinds)}, {"$sort": {"due": 1}}, {"$limit": CLAIM_CANDIDATES},
            {"$addFields": {"_now": "$$NOW"}},
        ]
        with self._errors():
            for _ in range(RETRIES):
                candidates = builtins.list(self._tasks.aggregate(pipeline))
                if not candidates:
                    return None
                for doc in candidates:
                    now = _seconds(doc.pop("_now"))
                    if doc["due"] > now:
                        return None  # in due order: nothing after it is due either
                    lease = now + lease_seconds
                    changes = {"state": RUNNING, "lease_owner": owner, "lease_expires": lease, "due": lease,
                               "updated": now, "attempts": doc["attempts"] + 1}
                    taken = self._tasks.update_one({"_id": doc["_id"], "due": doc["due"], "attempts": doc["attempts"]},
                                                   {"$set": changes})
                    if taken.matched_count == 1:
                        doc.update(changes)
                        return _to_task(doc)
        raise Conflict("claim_task: every due task was taken by other claimers first; try again")

    def renew_lease(self, task_id: int, owner: str, lease_seconds: float) -> bool:
        # renewed only while unexpired on the server's clock: the pipeline changes nothing otherwise
        held = {"$gte": ["$due", _NOW_S]}
        until = {"$add": [_NOW_S, lease_seconds]}
        with self._errors():
            result = self._tasks.update_one(
                {"_id": task_id, "state": RUNNING, "lease_owner": owner},
                [{"$set": {"lease_expires": {"$cond": [held, until, "$lease_expires"]},
                           "updated": {"$cond": [held, _NOW_S, "$updated"]},
                           "renewals": {"$cond": [held, {"$add": [{"$ifNull": ["$renewals", 0]}, 1]}, "$renewals"]}}},
                 {"$set": {"due": "$lease_expires"}}],
            )
        return result.modified_count == 1

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
        changes: dict[str, Any] = {"lease_owner": None, "lease_expires": None, "updated": _NOW_S}
        pipeline: builtins.list[dict[str, Any]]
        if retry_at is not None or retry_in is not None:
            not_before = _lit(retry_at) if retry_at is not None else {"$add": [_NOW_S, retry_in]}
            changes.update(state=PENDING, not_before=not_before, last_error=_lit(error))
            pipeline = [{"$set": changes}, {"$set": {"due": "$not_before"}}]
        else:
            changes.update(state=_lit(state), expire_at={"$add": ["$$NOW", int(self.task_retention * 1000)]})
            if error is not None:
                changes["last_error"] = _lit(error)
            pipeline = [{"$set": changes}, {"$unset": ["open_key", "due", "renewals"]}]
        with self._errors():
            result = self._tasks.update_one({"_id": task_id, "state": RUNNING, "lease_owner": owner}, pipeline)
        return result.matched_count == 1

    def list_tasks(self, state: str | None = None, limit: int | None = None) -> builtins.list[Task]:
        with self._errors():
            cursor = self._tasks.find({} if state is None else {"state": state}).sort([("created", 1), ("_id", 1)])
            if limit is not None:
                if limit <= 0:
                    return []
                cursor = cursor.limit(limit)
            return [_to_task(d) for d in cursor]

    def count_tasks(self) -> dict[str, int]:
        with self._errors():
            rows = self._tasks.aggregate([{"$group": {"_id": "$state", "n": {"$sum": 1}}}])
            return {r["_id"]: int(r["n"]) for r in rows}

    def purge_tasks(self, state: str, older_than: float) -> int:
        with self._errors():
            return int(self._tasks.delete_many({"state": state, "updated": {"$lt": older_than}}).deleted_count)

    # -- records -----------------------------------------------------------------------------
    def put_record(self, collection: str, key: str, doc: dict[str, Any], expected_version: int | None = None,
                   *, stamp: str | None = None) -> int:
        where = {"collection": collection, "key": key}
        change: dict[str, Any] | builtins.list[dict[str, Any]] = {"$set": {"doc": doc}, "$inc": {"version": 1}}
        if stamp is not None:  # a pipeline update, so the server's $$NOW is the stamp
            change = [{"$set": {"doc": {"$mergeObjects": [_lit(doc), {stamp: _NOW_S}]},
                                "version": {"$add": [{"$ifNull": ["$version", 0]}, 1]}}}]

        def once() -> int:
            if expected_version == 0 and stamp is not None:
                try:
                    self._records.update_one({**where, "version": {"$exists": False}}, change, upsert=True)
                except DuplicateKeyError:
                    raise AlreadyExists(f"{collection} {key!r} already exists") from None
                return 1
            if expected_version == 0:
                try:
                    self._records.insert_one({**where, "doc": doc, "version": 1})
                except DuplicateKeyError:
                    raise AlreadyExists(f"{collection} {key!r} already exists") from None
                return 1
            if expected_version is None:
                try:
                    stored = self._records.find_one_and_update(
                        where, change, upsert=True, return_document=ReturnDocument.AFTER,
                    )
                except DuplicateKeyError:
                    raise _Retry() from None  # two upserts raced; the second now updates
                if stored is None:  # pragma: no cover - upsert always returns a document
                    raise _Retry()
                return int(stored["version"])
            stored = self._records.find_one_and_update(
                {**where, "version": expected_version}, change, return_document=ReturnDocument.AFTER,
            )
            if stored is not None:
                return int(stored["version"])
            current = self._records.find_one(where, {"version": 1})
            if current is None:
                raise NotFound(f"{collection} {key!r} does not exist")
            raise Conflict(
                f"{collection} {key!r} was changed by another writer (version {current['version']}, expected {expected_version})"
            )

        return self._retrying(once, f"put_record {collection} {key!r}")

    def get_record(self, collection: str, key: str) -> tuple[dict[str, Any], int]:
        with self._errors():
            stored = self._records.find_one({"collection": collection, "key": key})
        if stored is None:
            raise NotFound(f"{collection} {key!r} not found")
        return dict(stored["doc"]), int(stored["version"])

    def list_records(self, collection: str) -> builtins.list[tuple[str, dict[str, Any], int]]:
        with self._errors():
            cursor = self._records.find({"collection": collection}).sort("key", 1)
            return [(d["key"], dict(d["doc"]), int(d["version"])) for d in cursor]

    def delete_record(self, collection: str, key: str) -> bool:
        with self._errors():
            return bool(self._records.delete_one({"collection": collection, "key": key}).deleted_count)

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        self._client.close()
