"""The MongoDB fault proxy (tests/mongoproxy.py) against the session's real server: each fault as a
pymongo client sees it, with and without pymongo's single retry of a write."""

from __future__ import annotations

import socket
import struct
import uuid
from collections.abc import Iterator
from typing import Any

import bson
import pymongo
import pytest
from pymongo.errors import AutoReconnect, NotPrimaryError, OperationFailure, WriteConcernError

from tests.mongoproxy import OP_COMPRESSED, OP_MSG, OP_QUERY, OP_REPLY, MongoProxy, read_message, reply_docs

Client = pymongo.MongoClient[dict[str, Any]]


@pytest.fixture
def db(mongodb_uri: str) -> Iterator[str]:
    """A fresh database name, dropped afterwards (directly, not through the proxy)."""
    name = f"proxy_{uuid.uuid4().hex[:12]}"
    yield name
    client: Client = pymongo.MongoClient(mongodb_uri, serverSelectionTimeoutMS=5000)
    with client:
        client.drop_database(name)


def connect(proxy: MongoProxy, mongodb_uri: str, **options: Any) -> Client:
    options = {"serverSelectionTimeoutMS": 5000, "connectTimeoutMS": 2000, "socketTimeoutMS": 5000, **options}
    return pymongo.MongoClient(proxy.proxied(mongodb_uri), **options)


def test_pass_through_keeps_the_replica_set_behind_the_proxy(mongo_proxy: MongoProxy, mongodb_uri: str,
                                                              db: str) -> None:
    with connect(mongo_proxy, mongodb_uri) as client:
        coll = client[db]["c"]
        coll.insert_one({"_id": 1, "n": 0})
        coll.update_one({"_id": 1}, {"$inc": {"n": 1}})
        coll.with_options(write_concern=pymongo.WriteConcern(w=0)).insert_one({"_id": 2})  # no reply expected
        with client.start_session() as session:
            session.with_transaction(lambda s: coll.insert_one({"_id": 3}, session=s))
        coll.delete_one({"_id": 2})
        assert [d["_id"] for d in coll.find().sort("_id")] == [1, 3]
        assert coll.find_one({"_id": 1}) == {"_id": 1, "n": 1}
        # hosts/me/primary were rewritten: pymongo discovered the set but only knows the proxy
        assert client.topology_description.topology_type_name == "ReplicaSetWithPrimary"
        assert client.nodes == frozenset({("127.0.0.1", mongo_proxy.port)})
    seen = [name for name, database in mongo_proxy.requests if database == db]
    assert seen[:3] == ["insert", "update", "insert"]
    assert {"delete", "find"} <= set(seen)
    assert ("commitTransaction", "admin") in mongo_proxy.requests  # commit/abort run on admin, not on db
    assert all(name.lower() not in ("hello", "ismaster") for name, _ in mongo_proxy.requests)
    assert mongo_proxy.faults == 0


def test_legacy_handshake_is_rewritten_and_compression_never_negotiated(mongo_proxy: MongoProxy,
                                                                         mongodb_uri: str, db: str) -> None:
    query = bson.encode({"isMaster": 1, "compression": ["zlib", "zstd", "snappy"]})
    payload = struct.pack("<i", 0) + b"admin.$cmd\x00" + struct.pack("<ii", 0, -1) + query
    with socket.create_connection(("127.0.0.1", mongo_proxy.port), timeout=5) as sock:
        sock.sendall(struct.pack("<iiii", 16 + len(payload), 7, 0, OP_QUERY) + payload)
        reply = read_message(sock)
    body = reply_docs(reply)
    assert reply.op_code == OP_REPLY and reply.response_to == 7 and body is not None
    assert body["me"] == body["primary"] == mongo_proxy.address and body["hosts"] == [mongo_proxy.address]
    assert "compression" not in body
    with connect(mongo_proxy, mongodb_uri, compressors="zlib") as client:  # the client offers it: still plain
        client[db]["c"].insert_one({"x": "y" * 10_000})
        assert client[db]["c"].count_documents({}) == 1
    assert mongo_proxy.op_codes[OP_COMPRESSED] == 0 and mongo_proxy.op_codes[OP_MSG] > 0


def test_drop_before_the_server_sees_it(mongo_proxy: MongoProxy, mongodb_uri: str, db: str) -> None:
    with connect(mongo_proxy, mongodb_uri, retryWrites=False) as client:
        coll = client[db]["c"]
        mongo_proxy.drop_before(match="insert", count=1)
        with pytest.raises(AutoReconnect):
            coll.insert_one({"_id": 1})
        assert coll.count_documents({}) == 0  # never reached the server
        coll.insert_one({"_id": 2})  # the fault was used up
    with connect(mongo_proxy, mongodb_uri, retryWrites=True) as client:
        mongo_proxy.drop_before(match="insert", count=1)
        client[db]["c"].insert_one({"_id": 3})  # pymongo's one retry goes through
        assert sorted(d["_id"] for d in client[db]["c"].find()) == [2, 3]
    assert [n for n, d in mongo_proxy.requests if n == "insert" and d == db] == ["insert"] * 4
    assert mongo_proxy.faults == 2


def test_drop_after_the_write_applied(mongo_proxy: MongoProxy, mongodb_uri: str, db: str) -> None:
    with connect(mongo_proxy, mongodb_uri, retryWrites=False) as client:
        coll = client[db]["c"]
        mongo_proxy.drop_after(match="insert", count=1)
        with pytest.raises(AutoReconnect):
            coll.insert_one({"_id": 1, "n": 0})
        assert coll.find_one({"_id": 1}) == {"_id": 1, "n": 0}  # applied, though the client was not told
    with connect(mongo_proxy, mongodb_uri, retryWrites=True) as client:
        mongo_proxy.drop_after(match="update", count=1)
        client[db]["c"].update_one({"_id": 1}, {"$inc": {"n": 1}})
        # the retry carried the same txnNumber: the server answered it from the first attempt
        assert client[db]["c"].find_one({"_id": 1}) == {"_id": 1, "n": 1}
    assert [n for n, d in mongo_proxy.requests if n == "update" and d == db] == ["update", "update"]
    assert mongo_proxy.faults == 2


def test_error_answers_for_the_server(mongo_proxy: MongoProxy, mongodb_uri: str, db: str) -> None:
    with connect(mongo_proxy, mongodb_uri, retryWrites=False) as client:
        coll = client[db]["c"]
        mongo_proxy.error(match="insert", count=1)
        with pytest.raises(NotPrimaryError) as raised:
            coll.insert_one({"_id": 1})
        assert isinstance(raised.value.details, dict) and raised.value.details["code"] == 10107
        assert not raised.value.has_error_label("RetryableWriteError")  # no txnNumber: not a retryable write
        assert coll.count_documents({}) == 0
        mongo_proxy.error(11000, "DuplicateKey", match="findAndModify", database="elsewhere")
        coll.find_one_and_update({"_id": 9}, {"$set": {"a": 1}}, upsert=True)  # other database: untouched
        mongo_proxy.reset()
    with connect(mongo_proxy, mongodb_uri, retryWrites=True) as client:
        coll = client[db]["c"]
        mongo_proxy.error(match="insert", count=1)
        coll.insert_one({"_id": 2})  # labelled RetryableWriteError as a server would: retried once
        mongo_proxy.error(match="insert", count=2)
        with pytest.raises(NotPrimaryError) as raised:
            coll.insert_one({"_id": 3})
        assert raised.value.has_error_label("RetryableWriteError")
        # not stale: pymongo marks the server Unknown; the proxy wakes its monitor (the heartbeat is
        # 10 s, longer than serverSelectionTimeoutMS) so the retry finds the primary again
        mongo_proxy.error(match="insert", count=1, stale=False)
        coll.insert_one({"_id": 4})
        assert sorted(d["_id"] for d in coll.find()) == [2, 4, 9]
    assert mongo_proxy.faults == 5


def test_error_inside_a_transaction(mongo_proxy: MongoProxy, mongodb_uri: str, db: str) -> None:
    with connect(mongo_proxy, mongodb_uri) as client:
        coll = client[db]["c"]
        coll.insert_one({"_id": 0})
        calls = []

        def body(session: Any) -> None:
            calls.append(1)
            coll.insert_one({"_id": len(calls)}, session=session)

        with client.start_session() as session:
            mongo_proxy.error(match="insert", count=1)  # TransientTransactionError: the whole callback again
            session.with_transaction(body)
            assert len(calls) == 2
            mongo_proxy.error(match="commitTransaction", count=1)  # RetryableWriteError: the commit again
            session.with_transaction(body)
        assert sorted(d["_id"] for d in coll.find()) == [0, 2, 3]
    commits = [n for n, _ in mongo_proxy.requests if n == "commitTransaction"]
    assert len(commits) == 3 and mongo_proxy.faults == 2


def test_write_concern_error_after_the_write(mongo_proxy: MongoProxy, mongodb_uri: str, db: str) -> None:
    with connect(mongo_proxy, mongodb_uri, retryWrites=False) as client:
        coll = client[db]["c"]
        mongo_proxy.write_concern_error(match="insert", count=1)
        with pytest.raises(WriteConcernError) as raised:
            coll.insert_one({"_id": 1})
        assert raised.value.code == 64
        assert coll.count_documents({}) == 1  # the write itself applied
    with connect(mongo_proxy, mongodb_uri, retryWrites=True) as client:
        mongo_proxy.write_concern_error(91, "ShutdownInProgress", match="insert", count=1)
        client[db]["c"].insert_one({"_id": 2})  # retryable code on a retryable write: retried, deduplicated
        mongo_proxy.write_concern_error(91, "ShutdownInProgress", match="insert", count=1, stale=False)
        client[db]["c"].insert_one({"_id": 3})  # the pool is cleared, the monitor woken: retried too
        assert client[db]["c"].count_documents({}) == 3
    assert mongo_proxy.faults == 3
    assert [n for n, d in mongo_proxy.requests if n == "insert" and d == db] == ["insert"] * 5


def test_standalone(mongo_proxy: MongoProxy, mongodb_uri: str, db: str) -> None:
    mongo_proxy.standalone()
    with connect(mongo_proxy, mongodb_uri, retryWrites=True) as client:
        coll = client[db]["c"]
        coll.insert_one({"_id": 1})
        assert client.topology_description.topology_type_name == "Single"
        assert client.topology_description.server_descriptions()[("127.0.0.1", mongo_proxy.port)].server_type_name \
            == "Standalone"
        with client.start_session() as session, pytest.raises(OperationFailure) as raised:  # sessions: yes
            session.with_transaction(lambda s: coll.insert_one({"_id": 2}, session=s))
        assert raised.value.code == 20  # transactions: no (what a standalone mongod answers)
        mongo_proxy.drop_before(match="insert", count=1)
        with pytest.raises(AutoReconnect):  # no retryable writes on a standalone: not retried
            coll.insert_one({"_id": 3})
        assert [d["_id"] for d in coll.find()] == [1]
    mongo_proxy.reset()
    with connect(mongo_proxy, mongodb_uri) as client:
        client.admin.command("ping")
        assert client.topology_description.topology_type_name == "ReplicaSetWithPrimary"


def test_outage_is_an_election(mongo_proxy: MongoProxy, mongodb_uri: str, db: str) -> None:
    with connect(mongo_proxy, mongodb_uri, retryWrites=True, serverSelectionTimeoutMS=10_000) as client:
        coll = client[db]["c"]
        coll.insert_one({"_id": 1})
        mongo_proxy.outage(1.0)
        coll.insert_one({"_id": 2})  # waits for a primary (or is retried once), then goes through
        assert client.topology_description.topology_type_name == "ReplicaSetWithPrimary"
        mongo_proxy.outage(60)
        with connect(mongo_proxy, mongodb_uri, retryWrites=False, serverSelectionTimeoutMS=300) as raw:
            with pytest.raises(AutoReconnect):  # no primary to select (ServerSelectionTimeoutError)
                raw[db]["c"].insert_one({"_id": 3})
            assert raw.topology_description.topology_type_name == "ReplicaSetNoPrimary"
        mongo_proxy.reset()  # the election is over
        coll.insert_one({"_id": 4})
        assert sorted(d["_id"] for d in coll.find()) == [1, 2, 4]


def test_hello_is_never_faulted_unless_named(mongo_proxy: MongoProxy, mongodb_uri: str, db: str) -> None:
    mongo_proxy.drop_before()  # every command, for ever
    with connect(mongo_proxy, mongodb_uri, retryReads=False) as client:
        client.admin.command("ping")  # handshake, heartbeats and ping are exempt
        with pytest.raises(AutoReconnect):
            client[db]["c"].find_one()
        mongo_proxy.reset()
        assert client[db]["c"].find_one() is None
    assert mongo_proxy.requests.count(("find", db)) == 2 and mongo_proxy.faults == 1


def test_outage_down_refuses_connections(mongo_proxy: MongoProxy, mongodb_uri: str, db: str) -> None:
    with connect(mongo_proxy, mongodb_uri, retryWrites=False, serverSelectionTimeoutMS=2000) as client:
        coll = client[db]["c"]
        coll.insert_one({"_id": 1})
        mongo_proxy.outage(60, down=True)
        with pytest.raises(AutoReconnect):  # its pooled connection was closed (or no server to select)
            coll.insert_one({"_id": 2})
        with connect(mongo_proxy, mongodb_uri, serverSelectionTimeoutMS=300) as late:
            with pytest.raises(AutoReconnect):  # cannot even connect
                late.admin.command("ping")
            assert late.topology_description.topology_type_name == "Unknown"
        mongo_proxy.reset()  # back up
        coll.insert_one({"_id": 3})
        assert sorted(d["_id"] for d in coll.find()) == [1, 3]
    with connect(mongo_proxy, mongodb_uri, retryWrites=True, serverSelectionTimeoutMS=10_000) as client:
        client.admin.command("ping")
        mongo_proxy.outage(0.5, down=True)
        client[db]["c"].insert_one({"_id": 4})  # first attempt fails, the retry waits for the server
        assert client[db]["c"].count_documents({}) == 3
