"""The small records of the MongoDB catalog engine (nodes, VMs, policies, settings, write
intents): ``records`` holds one document per ``(collection, key)`` (unique index, also the shard
key every query carries), the record as a BSON sub-document, a ``version`` for compare-and-set
and ``op``, the token of the last write, so a write whose reply was lost is recognised when it is
run again.  :class:`~vdir.catalog.mongo.MongoCatalog` inherits it.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from typing import Any

import pymongo
from pymongo import ReturnDocument
from pymongo.errors import BulkWriteError, DuplicateKeyError

from vdir.catalog.mongo_queue import _NOW_S, MongoHost, _lit, _Retry
from vdir.errors import AlreadyExists, Conflict, NotFound


class MongoRecords(MongoHost):
    """The ``Catalog`` record methods on MongoDB; mixed into ``MongoCatalog``, which provides the
    collection, the retry loop and operation tokens (:class:`~vdir.catalog.mongo_queue.MongoHost`)."""

    _records: Any

    def put_record(self, collection: str, key: str, doc: dict[str, Any], expected_version: int | None = None,
                   *, stamp: str | None = None) -> int:
        # every filter holds (collection, key), the shard key; every write sets ``op``, the
        # token that lets a retry recognise its own write when an earlier reply was lost
        where = {"collection": collection, "key": key}
        token = self._new_token()
        change: dict[str, Any] | builtins.list[dict[str, Any]] = {"$set": {"doc": doc, "op": token}, "$inc": {"version": 1}}
        if stamp is not None:  # a pipeline update, so the server's $$NOW is the stamp
            change = [{"$set": {"doc": {"$mergeObjects": [_lit(doc), {stamp: _NOW_S}]}, "op": token,
                                "version": {"$add": [{"$ifNull": ["$version", 0]}, 1]}}}]

        def mine() -> int | None:
            """The version our token wrote, if it is still the latest write."""
            stored = self._records.find_one(where, {"version": 1, "op": 1})
            return int(stored["version"]) if stored is not None and stored.get("op") == token else None

        def once() -> int:
            if expected_version == 0 and stamp is not None:
                try:
                    self._records.update_one({**where, "version": {"$exists": False}}, change, upsert=True)
                except DuplicateKeyError:
                    if mine() is not None:
                        return 1
                    raise AlreadyExists(f"{collection} {key!r} already exists") from None
                return 1
            if expected_version == 0:
                try:
                    self._records.insert_one({**where, "doc": doc, "version": 1, "op": token})
                except DuplicateKeyError:
                    if mine() is not None:
                        return 1
                    raise AlreadyExists(f"{collection} {key!r} already exists") from None
                return 1
            if expected_version is None:
                try:
                    stored = self._records.find_one_and_update(
                        {**where, "op": {"$ne": token}}, change, upsert=True, return_document=ReturnDocument.AFTER,
                    )
                except DuplicateKeyError:
                    version = mine()  # our write applied already, or two upserts raced
                    if version is not None:
                        return version
                    raise _Retry() from None
                if stored is None:  # pragma: no cover - upsert always returns a document
                    raise _Retry()
                return int(stored["version"])
            stored = self._records.find_one_and_update(
                {**where, "version": expected_version}, change, return_document=ReturnDocument.AFTER,
            )
            if stored is not None:
                return int(stored["version"])
            current = self._records.find_one(where, {"version": 1, "op": 1})
            if current is None:
                raise NotFound(f"{collection} {key!r} does not exist")
            if current.get("op") == token and current["version"] == expected_version + 1:
                return expected_version + 1
            raise Conflict(
                f"{collection} {key!r} was changed by another writer (version {current['version']}, expected {expected_version})"
            )

        return self._retrying(once, f"put_record {collection} {key!r}")

    def get_record(self, collection: str, key: str) -> tuple[dict[str, Any], int]:
        stored = self._retrying(lambda: self._records.find_one({"collection": collection, "key": key}),
                                f"reading {collection} {key!r}")
        if stored is None:
            raise NotFound(f"{collection} {key!r} not found")
        return dict(stored["doc"]), int(stored["version"])

    def list_records(self, collection: str) -> builtins.list[tuple[str, dict[str, Any], int]]:
        def once() -> builtins.list[tuple[str, dict[str, Any], int]]:
            cursor = self._records.find({"collection": collection}).sort("key", 1)
            return [(d["key"], dict(d["doc"]), int(d["version"])) for d in cursor]

        return self._retrying(once, f"listing {collection}")

    def delete_record(self, collection: str, key: str) -> bool:
        attempts = [0]

        def once() -> bool:
            attempts[0] += 1
            deleted = bool(self._records.delete_one({"collection": collection, "key": key}).deleted_count)
            # after a lost reply the record is gone either way; the earlier attempt most likely
            # deleted it (a concurrent delete of the same record is the one case told wrongly)
            return deleted or attempts[0] > 1

        return self._retrying(once, f"delete_record {collection} {key!r}")

    def put_records(self, collection: str, docs: dict[str, dict[str, Any]]) -> None:
        if not docs:
            return
        ops = [pymongo.UpdateOne({"collection": collection, "key": key}, {"$set": {"doc": doc}, "$inc": {"version": 1}},
                                 upsert=True) for key, doc in docs.items()]

        def once() -> None:
            try:
                self._records.bulk_write(ops, ordered=False)
            except BulkWriteError as exc:
                # two upserts of one new key raced (E11000): the other writer's insert stands,
                # so that key's update is applied again, now as a plain update
                again = [ops[e["index"]] for e in exc.details.get("writeErrors", []) if e.get("code") == 11000]
                if len(again) != len(exc.details.get("writeErrors", [])):
                    raise
                self._records.bulk_write(again, ordered=False)

        # a retry after a lost reply sets the same documents again (their version moves on once more)
        self._retrying(once, f"put_records {collection}")

    def delete_records(self, collection: str, keys: Iterable[str]) -> int:
        wanted = builtins.list(dict.fromkeys(keys))
        if not wanted:
            return 0
        return self._retrying(
            lambda: int(self._records.delete_many({"collection": collection, "key": {"$in": wanted}}).deleted_count),
            f"delete_records {collection}",
        )
