"""The task queue of the MongoDB catalog engine (:class:`~vdir.catalog.mongo.MongoCatalog`
inherits it), and the server-side helpers it shares with the record writes.

``tasks`` documents: integer ``_id`` made by the client (:func:`~vdir.catalog.base.new_task_id`:
no counter round trip, no hot document); ``open_key`` holds the dedupe key while a task is
unfinished (unique sparse index: at most one unfinished task per key, a point query); ``due`` is
when an unfinished task may be claimed (``max(not_before, created)`` while pending, the lease
expiry while running; sparse index, so finished tasks are not in it and a claim reads the head of
a short index); a finished task has ``expire_at`` (``$$NOW`` + ``task_retention``) under a TTL
index.  Times come from the server's clock (``$$NOW``), never the client's.  Claiming is two
round trips: one aggregation reads the first few due candidates with the server's ``$$NOW``, one
``update_one`` compare-and-sets the first still as read (``_id``, ``due``, ``attempts``).
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from vdir.catalog.base import (
    DONE,
    FAILED,
    PENDING,
    RUNNING,
    TASK_RETENTION,
    Task,
    check_finish_state,
    new_task_id,
)
from vdir.errors import AlreadyExists

T = TypeVar("T")


class _Retry(Exception):
    """Internal: a compare-and-set on a version we read (not one the caller gave) lost; read again."""


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


class MongoHost:
    """What ``MongoCatalog`` gives the mixins it inherits (the task queue, the records): the retry
    loop, the error translation and operation tokens.  Declared for the type checker only; the
    methods are ``MongoCatalog``'s."""

    if TYPE_CHECKING:
        def _retrying(self, fn: Callable[[], T], what: str) -> T: ...

        def _errors(self) -> Any: ...

        @staticmethod
        def _new_token() -> int: ...


class MongoTaskQueue(MongoHost):
    """The ``Catalog`` task methods on MongoDB; mixed into ``MongoCatalog``, which provides the
    collections, the retry loop and operation tokens (:class:`MongoHost`)."""

    _tasks: Any
    _client: Any
    _db: Any
    task_retention: float

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
        self._db["counters"].delete_one({"_id": "tasks"})  # task ids no longer come from a counter

    def now(self) -> float:
        def once() -> float:
            before = time.monotonic()
            hello = self._client.admin.command("hello")
            rtt = time.monotonic() - before
            return _seconds(hello["localTime"]) + rtt / 2

        return self._retrying(once, "reading the server's clock")

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
        def once() -> Task | None:
            # after a failover the loop runs again: a claim whose reply was lost leaves that task
            # leased to us until its lease expires, then it is claimable again (never lost)
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
            raise _Retry()  # every candidate was taken by other claimers first: read the head again

        return self._retrying(once, "claim_task")

    def renew_lease(self, task_id: int, owner: str, lease_seconds: float) -> bool:
        # renewed only while unexpired on the server's clock: the pipeline changes nothing otherwise
        held = {"$gte": ["$due", _NOW_S]}
        until = {"$add": [_NOW_S, lease_seconds]}
        def once() -> bool:  # repeating a renewal is harmless: it extends from the server's now
            result = self._tasks.update_one(
                {"_id": task_id, "state": RUNNING, "lease_owner": owner},
                [{"$set": {"lease_expires": {"$cond": [held, until, "$lease_expires"]},
                           "updated": {"$cond": [held, _NOW_S, "$updated"]},
                           "renewals": {"$cond": [held, {"$add": [{"$ifNull": ["$renewals", 0]}, 1]}, "$renewals"]}}},
                 {"$set": {"due": "$lease_expires"}}],
            )
            return result.modified_count == 1

        return self._retrying(once, f"renew_lease of task {task_id}")

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
        token = self._new_token()  # tells a retry that its earlier, unanswered attempt applied
        changes: dict[str, Any] = {"lease_owner": None, "lease_expires": None, "updated": _NOW_S, "op": token}
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
        def once() -> bool:
            result = self._tasks.update_one({"_id": task_id, "state": RUNNING, "lease_owner": owner}, pipeline)
            return result.matched_count == 1 or self._tasks.find_one({"_id": task_id, "op": token}, {"_id": 1}) is not None

        return self._retrying(once, f"finish_task {task_id}")

    def list_tasks(self, state: str | None = None, limit: int | None = None) -> builtins.list[Task]:
        if limit is not None and limit <= 0:
            return []

        def once() -> builtins.list[Task]:
            cursor = self._tasks.find({} if state is None else {"state": state}).sort([("created", 1), ("_id", 1)])
            if limit is not None:
                cursor = cursor.limit(limit)
            return [_to_task(d) for d in cursor]

        return self._retrying(once, "listing tasks")

    def count_tasks(self) -> dict[str, int]:
        def once() -> dict[str, int]:
            rows = self._tasks.aggregate([{"$group": {"_id": "$state", "n": {"$sum": 1}}}])
            return {r["_id"]: int(r["n"]) for r in rows}

        return self._retrying(once, "counting tasks")

    def purge_tasks(self, state: str, older_than: float) -> int:
        with self._errors():
            return int(self._tasks.delete_many({"state": state, "updated": {"$lt": older_than}}).deleted_count)
