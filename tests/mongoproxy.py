"""A fault-injecting proxy for the MongoDB wire protocol, for tests: sits between pymongo and a
MongoDB-compatible server and breaks chosen commands on demand.

::

    with MongoProxy.for_uri(mongodb_uri) as proxy:      # or the ``mongo_proxy`` fixture
        client = pymongo.MongoClient(proxy.proxied(uri), retryWrites=False)
        proxy.drop_before(match="insert", count=1)   # the next insert's connection closes unsent
        proxy.drop_after(match="update", count=1)    # the next update applies; its reply is lost
        proxy.error(match="findAndModify", count=1)  # the next findAndModify gets NotWritablePrimary
        proxy.error(11000, "DuplicateKey", match="insert", database="db1")  # any code/codeName
        proxy.write_concern_error(match="delete")    # deletes apply, their replies carry a writeConcernError
        proxy.outage(2.0)                            # an election: no primary for 2 s
        proxy.outage(2.0, down=True)                 # the server unreachable for 2 s
        proxy.standalone()                           # the server presents itself as a standalone
        proxy.reset()                                # pass everything through again

One thread per client connection relays whole messages: the 16-byte header (messageLength,
requestID, responseTo, opCode) frames them; OP_MSG (2013) bodies are decoded with ``bson`` to
learn the command name (first key) and ``$db``; OP_QUERY (2004, the legacy handshake) and its
answer OP_REPLY (1) are parsed too; OP_COMPRESSED (2012) passes through untouched and cannot be
matched, but does not occur: the proxy removes ``compression`` from hello replies, so a client
never negotiates it even when it offers ``compressors``. Exhaust replies (``moreToCome``: the
streaming hello of pymongo's monitor) and requests that expect no answer (``moreToCome`` on a
request: w:0 writes) are relayed as such.

A fault applies to the next ``count`` commands (all of them when ``count`` is None) whose name is
``match`` (a name, a tuple of names, or "" for any command; compared case-insensitively) and,
when given, whose database (``$db``) is ``database``; it is then replaced by pass-through. One
fault at a time: setting one replaces the last. pymongo's retry of a command is another command
(``count=1`` breaks the first attempt only, ``count=2`` the retry too). Handshake, monitoring and
authentication commands (hello, isMaster, saslStart, ping, buildInfo, endSessions ...) are never
matched unless named in ``match``. ``proxy.requests`` lists ``(command, database)`` of the
commands seen, those exempt ones left out so that the list is deterministic; ``proxy.faults``
counts the faults applied (including the commands an outage refused); ``proxy.op_codes`` counts
requests per opCode. ``reset()`` clears the fault, an outage and standalone mode, not the counters.

hello/isMaster replies always have the server's own address (``me``, ``hosts``, ``primary``)
rewritten to the proxy's, so a client that discovers the replica set keeps talking through the
proxy (no ``directConnection=true`` needed) and real replica-set behaviour (sessions,
transactions, retryable writes) is kept.

Caveats:

- One server behind one proxy. A real multi-node replica set would need a proxy per member (the
  other members' addresses pass through unchanged, so clients would reach them directly).
- Transactions run commitTransaction/abortTransaction on ``admin``: ``database="db"`` does not
  match them (use ``database="admin"`` or none).
- ``drop_after`` with ``retryWrites=true``: pymongo's retry carries the same ``txnNumber`` and the
  server answers it from the first attempt without applying it again (SecantusDB does, as
  MongoDB); without retryable writes the write simply applied unseen.
- A made-up state change (``error(stale=False)``, ``write_concern_error(stale=False)`` with a
  not-primary code, an outage starting or ending) closes the connections of pymongo's streaming
  monitors, which makes pymongo clear its connection pool (a real server's step-down would just
  answer the monitor's pending hello).
- ``standalone()`` must be set before the client connects: SDAM removes a server that turns
  Standalone from a replica-set topology (the client then has no server until serverSelection
  times out). With it pymongo reports topology Single, server type Standalone; sessions still
  work (``logicalSessionTimeoutMinutes`` is kept, as a standalone mongod reports it); retryable
  writes are off (pymongo only sends ``txnNumber`` to RSPrimary/Mongos, so a network error is
  raised, not retried); pymongo does not refuse a transaction itself: the server does, and the
  proxy answers commands with ``txnNumber`` as a standalone mongod would (IllegalOperation, 20).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import bson
from bson.codec_options import CodecOptions, DatetimeConversion

from tests.faultproxy import shut_down

OP_REPLY = 1
OP_QUERY = 2004
OP_COMPRESSED = 2012
OP_MSG = 2013

CHECKSUM_PRESENT = 1 << 0
MORE_TO_COME = 1 << 1

_HEADER = struct.Struct("<iiii")
_CODEC: CodecOptions[dict[str, Any]] = CodecOptions(datetime_conversion=DatetimeConversion.DATETIME_AUTO)

HELLO_COMMANDS = frozenset({"hello", "ismaster"})
# Never faulted, never listed in ``requests`` unless named in ``match``: connection set-up and monitoring.
EXEMPT_COMMANDS = HELLO_COMMANDS | frozenset({
    "saslstart", "saslcontinue", "authenticate", "getnonce", "endsessions", "buildinfo", "ping",
})
# Replica-set fields a standalone server does not report.
_REPLICA_SET_FIELDS = ("setName", "setVersion", "hosts", "passives", "arbiters", "primary", "me", "electionId",
                       "secondary", "arbiterOnly", "hidden", "tags", "lastWrite")
# "Not primary" and "node is recovering" codes: pymongo marks the server Unknown on these.
_NOT_PRIMARY_CODES = frozenset({10058, 10107, 13435, 11602, 13436, 189, 11600, 91})
# Codes on which a MongoDB 4.4+ server labels a retryable write "RetryableWriteError".
_RETRYABLE_CODES = _NOT_PRIMARY_CODES | frozenset({7, 6, 89, 9001, 262, 134})


@dataclass
class Fault:
    kind: str = "pass"  # pass | drop_before | drop_after | error | write_concern_error
    count: int | None = None
    match: tuple[str, ...] = ()  # lower-case command names; () matches any non-exempt command
    database: str | None = None
    reply: dict[str, Any] = field(default_factory=dict)  # error: the reply; write_concern_error: the WCE
    labels: tuple[str, ...] | None = None  # None: the labels a real server would add
    stale: bool = True


@dataclass
class Message:
    """One wire message: header fields and the raw bytes after the header."""

    request_id: int
    response_to: int
    op_code: int
    payload: bytes

    def encode(self) -> bytes:
        return _HEADER.pack(16 + len(self.payload), self.request_id, self.response_to, self.op_code) + self.payload

    @property
    def flags(self) -> int:
        if self.op_code == OP_MSG:
            return int(struct.unpack_from("<I", self.payload)[0])
        return 0


@dataclass
class Command:
    """What the proxy learned from a request."""

    name: str  # as sent ("" when unknown, e.g. OP_COMPRESSED)
    database: str
    body: dict[str, Any]
    more_to_come: bool  # the client expects no answer

    @property
    def key(self) -> str:
        return self.name.lower()


class _Closed(Exception):
    """The peer closed the connection."""


def _read_exact(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        data = sock.recv(min(n, 1 << 20))
        if not data:
            raise _Closed()
        chunks.append(data)
        n -= len(data)
    return b"".join(chunks)


def read_message(sock: socket.socket) -> Message:
    length, request_id, response_to, op_code = _HEADER.unpack(_read_exact(sock, 16))
    if length < 16 or length > 64 * 1024 * 1024:
        raise _Closed()
    return Message(request_id, response_to, op_code, _read_exact(sock, length - 16))


def _cstring(data: bytes, at: int) -> tuple[str, int]:
    end = data.index(b"\x00", at)
    return data[at:end].decode("utf-8", "replace"), end + 1


def _doc_len(data: bytes, at: int) -> int:
    return int(struct.unpack_from("<i", data, at)[0])


def msg_sections(payload: bytes) -> tuple[int, dict[str, Any], list[bytes]]:
    """An OP_MSG payload as (flagBits, kind-0 body, raw kind-1 sections)."""
    flags = struct.unpack_from("<I", payload)[0]
    end = len(payload) - (4 if flags & CHECKSUM_PRESENT else 0)
    at = 4
    body: dict[str, Any] = {}
    sequences: list[bytes] = []
    while at < end:
        kind = payload[at]
        at += 1
        if kind == 0:
            size = _doc_len(payload, at)
            body = bson.decode(payload[at:at + size], codec_options=_CODEC)
            at += size
        elif kind == 1:
            size = _doc_len(payload, at)
            sequences.append(payload[at:at + size])
            at += size
        else:
            raise ValueError(f"unknown OP_MSG section kind {kind}")
    return flags, body, sequences


def build_msg(flags: int, body: Mapping[str, Any], sequences: Iterable[bytes] = ()) -> bytes:
    """An OP_MSG payload (without checksum)."""
    return struct.pack("<I", flags & ~CHECKSUM_PRESENT) + b"\x00" + bson.encode(body) + b"".join(
        b"\x01" + s for s in sequences)


def _query_parts(payload: bytes) -> tuple[int, str, int, int, dict[str, Any], bytes]:
    """An OP_QUERY payload as (flags, fullCollectionName, skip, limit, query, rest)."""
    flags = struct.unpack_from("<i", payload)[0]
    collection, at = _cstring(payload, 4)
    skip, limit = struct.unpack_from("<ii", payload, at)
    at += 8
    size = _doc_len(payload, at)
    query = bson.decode(payload[at:at + size], codec_options=_CODEC)
    return flags, collection, skip, limit, query, payload[at + size:]


def parse_request(msg: Message) -> Command:
    if msg.op_code == OP_MSG:
        flags, body, _ = msg_sections(msg.payload)
        name = next(iter(body), "")
        return Command(name, str(body.get("$db", "")), body, bool(flags & MORE_TO_COME))
    if msg.op_code == OP_QUERY:
        _, collection, _, _, query, _ = _query_parts(msg.payload)
        database, _, coll = collection.partition(".")
        body = query.get("$query", query) if "$query" in query else query
        name = next(iter(body), "") if coll == "$cmd" else "query"
        return Command(name, database, body, False)
    return Command("", "", {}, False)


def reply_docs(msg: Message) -> dict[str, Any] | None:
    """The body of an OP_MSG or OP_REPLY answer (None for anything else)."""
    if msg.op_code == OP_MSG:
        return msg_sections(msg.payload)[1]
    if msg.op_code == OP_REPLY:
        at = 20
        size = _doc_len(msg.payload, at)
        return bson.decode(msg.payload[at:at + size], codec_options=_CODEC)
    return None


def with_body(msg: Message, body: Mapping[str, Any]) -> Message:
    """``msg`` (an answer) with its body replaced."""
    if msg.op_code == OP_MSG:
        flags, _, sequences = msg_sections(msg.payload)
        return Message(msg.request_id, msg.response_to, OP_MSG, build_msg(flags, body, sequences))
    if msg.op_code == OP_REPLY:
        head = bytearray(msg.payload[:20])
        struct.pack_into("<i", head, 16, 1)  # numberReturned
        return Message(msg.request_id, msg.response_to, OP_REPLY, bytes(head) + bson.encode(body))
    return msg


def answer(request: Message, body: Mapping[str, Any], request_id: int) -> Message:
    """A reply to ``request`` made up by the proxy, in the request's protocol."""
    if request.op_code == OP_QUERY:
        payload = struct.pack("<iqii", 0, 0, 0, 1) + bson.encode(body)
        return Message(request_id, request.request_id, OP_REPLY, payload)
    return Message(request_id, request.request_id, OP_MSG, build_msg(0, body))


class MongoProxy:
    """A threaded MongoDB wire-protocol proxy on a free 127.0.0.1 port, forwarding to ``target``."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._lock = threading.Lock()
        self._fault = Fault()
        self._standalone = False
        self._outage_until = 0.0
        self._outage_timer: threading.Timer | None = None
        self._outage_down = False
        self.requests: list[tuple[str, str]] = []
        self.faults = 0
        self.op_codes: Counter[int] = Counter()  # requests seen per opCode (OP_MSG, OP_QUERY, ...)
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._open: set[socket.socket] = set()
        self._clients: set[socket.socket] = set()
        self._monitors: set[socket.socket] = set()  # client sockets that sent an awaitable (streaming) hello
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._next_id = 1 << 30
        # The server's topologyVersion (latest seen in a hello reply) and how far the proxy has moved
        # its counter on: each state change the proxy makes up (a not-primary error, an outage
        # starting or ending) adds one, as a real server's does; clients see counter + bump.
        self._server_tv: dict[str, Any] | None = None
        self._bump = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def uri(self) -> str:
        return f"mongodb://{self.address}/"

    @classmethod
    def for_uri(cls, uri: str) -> MongoProxy:
        """A proxy in front of the (single) server named by a ``mongodb://`` URI."""
        parts = urlsplit(uri)
        hosts = parts.netloc.rsplit("@", 1)[-1]
        if parts.scheme != "mongodb" or "," in hosts:
            raise ValueError(f"MongoProxy needs a mongodb:// URI naming one server, not {uri!r}")
        host, _, port = hosts.rpartition(":") if hosts.rpartition(":")[2].isdigit() else (hosts, "", "27017")
        return cls((host.strip("[]"), int(port)))

    def proxied(self, uri: str) -> str:
        """``uri`` with its host:port replaced by the proxy's (credentials, database, options kept)."""
        parts = urlsplit(uri)
        auth = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
        return urlunsplit((parts.scheme, auth + self.address, parts.path, parts.query, parts.fragment))

    # -- control ------------------------------------------------------------------------------
    def set(self, fault: Fault) -> None:
        with self._lock:
            self._fault = fault

    def reset(self) -> None:
        """Pass everything through again: no fault, no outage, not standalone. Counters are kept."""
        with self._lock:
            self._fault = Fault()
            self._standalone = False
            was_out = self._outage_until > time.monotonic() and not self._outage_down
            self._outage_until = 0.0
            timer, self._outage_timer = self._outage_timer, None
        if timer is not None:
            timer.cancel()
        if was_out:
            self._bump_topology()

    @staticmethod
    def _count(count: int | None) -> int | None:
        if count is not None and count < 1:
            raise ValueError(f"count must be None (all) or at least 1, not {count}")
        return count

    @staticmethod
    def _names(match: str | Iterable[str]) -> tuple[str, ...]:
        names = (match,) if isinstance(match, str) else tuple(match)
        return tuple(n.lower() for n in names if n)

    def drop_before(self, *, match: str | Iterable[str] = "", count: int | None = None,
                    database: str | None = None) -> None:
        """Close the client's connection instead of forwarding: the command never reaches the server."""
        self.set(Fault("drop_before", self._count(count), self._names(match), database))

    def drop_after(self, *, match: str | Iterable[str] = "", count: int | None = None,
                   database: str | None = None) -> None:
        """Forward the command, wait for the server's answer, then close the client's connection
        without relaying it: the command took effect but the client cannot know (unknown outcome)."""
        self.set(Fault("drop_after", self._count(count), self._names(match), database))

    def error(self, code: int = 10107, code_name: str = "NotWritablePrimary", *, errmsg: str = "",
              labels: Iterable[str] | None = None, match: str | Iterable[str] = "", count: int | None = None,
              database: str | None = None, stale: bool = True, **extra: Any) -> None:
        """Answer the command with ``{ok: 0, errmsg, code, codeName, errorLabels}`` instead of forwarding.

        ``labels=None`` gives the labels a MongoDB 4.4+ server would: RetryableWriteError for a
        retryable code on a retryable write (one with ``txnNumber``) or on commit/abortTransaction,
        TransientTransactionError for a not-primary code inside a transaction.

        The reply carries a ``topologyVersion``. ``stale=True``: the current one, which pymongo
        takes as an outdated error: the server stays selectable and a retry goes out at once (a
        step-down that is already over). ``stale=False`` (not-primary codes only): a newer one, as a
        real step-down: pymongo marks the server Unknown (and, for the shutdown codes 91/11600,
        clears its pool) until its monitor's next hello; the proxy closes the monitor's streaming
        connection (which clears the pool too) and answers any awaitable hello from a client that
        has not seen the newer topologyVersion at once, so the client re-checks at once rather than
        after heartbeatFrequencyMS. ``extra`` fields go into the reply.
        """
        reply = {"ok": 0.0, "errmsg": errmsg or f"{code_name} (injected by MongoProxy)", "code": code,
                 "codeName": code_name, **extra}
        self.set(Fault("error", self._count(count), self._names(match), database, reply,
                       None if labels is None else tuple(labels), stale))

    def write_concern_error(self, code: int = 64, code_name: str = "WriteConcernFailed", *, errmsg: str = "",
                            labels: Iterable[str] | None = None, match: str | Iterable[str] = "",
                            count: int | None = None, database: str | None = None, stale: bool = True) -> None:
        """Forward the command (it applies) and add a ``writeConcernError`` to the server's answer
        (e.g. code 64 WriteConcernFailed = wtimeout, or 91 ShutdownInProgress, which is retryable).
        ``labels=None``: RetryableWriteError when ``code`` is retryable and the write is (txnNumber).
        ``stale`` as for :meth:`error` (the topologyVersion goes into the writeConcernError)."""
        wce = {"code": code, "codeName": code_name, "errmsg": errmsg or f"{code_name} (injected by MongoProxy)"}
        self.set(Fault("write_concern_error", self._count(count), self._names(match), database, wce,
                       None if labels is None else tuple(labels), stale))

    def standalone(self, on: bool = True) -> None:
        """Present the server as a standalone mongod: hello replies lose setName, hosts, me, primary,
        electionId... (pymongo's topology becomes Single, it sends no retryable writes), and commands
        that carry ``txnNumber`` (transactions) get the standalone's IllegalOperation (code 20)."""
        with self._lock:
            self._standalone = on

    def outage(self, seconds: float, *, down: bool = False) -> None:
        """An election lasting ``seconds`` (``reset()`` ends it early): hello replies say "secondary,
        no primary" and every other command gets NotWritablePrimary (TransientTransactionError inside
        a transaction, RetryableWriteError on retryable writes). pymongo's streaming monitor
        connections are closed at the start and at the end so the client notices each change at once
        instead of after a heartbeat; pymongo then clears its pool and waits in server selection
        (up to serverSelectionTimeoutMS) for a primary.

        ``down=True``: the server is unreachable instead: every open client connection is closed,
        new ones are closed as soon as they are accepted (pymongo: AutoReconnect / server
        selection timeout), until the time is up."""
        with self._lock:
            self._outage_until = time.monotonic() + seconds
            self._outage_down = down
            old, self._outage_timer = self._outage_timer, threading.Timer(seconds, self._outage_over)
            self._outage_timer.daemon = True
            self._outage_timer.start()
        if old is not None:
            old.cancel()
        if down:
            self.close_clients()
        else:
            self._bump_topology()

    @property
    def in_outage(self) -> bool:
        return time.monotonic() < self._outage_until

    def _outage_over(self) -> None:
        with self._lock:
            self._outage_until = 0.0
            self._outage_timer = None
            down = self._outage_down
        if not down:
            self._bump_topology()

    def close_monitors(self) -> None:
        """Close the client connections of pymongo's streaming monitors (it reconnects and re-checks)."""
        with self._lock:
            sockets = list(self._monitors)
        self._shutdown(sockets)

    def close_clients(self) -> None:
        """Close every client connection open now (the server side follows)."""
        with self._lock:
            sockets = list(self._clients)
        self._shutdown(sockets)

    @staticmethod
    def _shutdown(sockets: Iterable[socket.socket]) -> None:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _take(self, cmd: Command) -> Fault:
        """The fault for this command (and count it down)."""
        with self._lock:
            exempt = cmd.key in EXEMPT_COMMANDS or not cmd.key
            if not exempt:
                self.requests.append((cmd.name, cmd.database))
            fault = self._fault
            if fault.kind == "pass":
                return Fault()
            if fault.match:
                if cmd.key not in fault.match:
                    return Fault()
            elif exempt:
                return Fault()
            if fault.database is not None and cmd.database != fault.database:
                return Fault()
            if fault.count is not None:
                fault.count -= 1
                if fault.count <= 0:
                    self._fault = Fault()
            self.faults += 1
            return Fault(fault.kind, None, fault.match, fault.database, dict(fault.reply), fault.labels, fault.stale)

    def _new_id(self) -> int:
        with self._lock:
            self._next_id += 1
            return self._next_id

    # -- replies ---------------------------------------------------------------------------------
    @staticmethod
    def _labels(cmd: Command, code: int, given: tuple[str, ...] | None) -> list[str]:
        if given is not None:
            return list(given)
        labels = []
        in_txn = cmd.body.get("autocommit") is False
        ends_txn = cmd.key in ("committransaction", "aborttransaction")
        if code in _RETRYABLE_CODES and (ends_txn or ("txnNumber" in cmd.body and not in_txn)):
            labels.append("RetryableWriteError")
        if in_txn and not ends_txn and code in _RETRYABLE_CODES:
            labels.append("TransientTransactionError")
        return labels

    def _error_reply(self, cmd: Command, reply: dict[str, Any], labels: tuple[str, ...] | None) -> dict[str, Any]:
        reply = dict(reply)
        found = self._labels(cmd, int(reply.get("code", 0)), labels)
        if found:
            reply["errorLabels"] = found
        tv = self._topology_version()
        if tv is not None:
            reply["topologyVersion"] = tv
        return reply

    def _rewrite_hello(self, body: dict[str, Any]) -> dict[str, Any]:
        body = dict(body)
        body.pop("compression", None)
        if isinstance(body.get("topologyVersion"), dict):
            with self._lock:
                self._server_tv = dict(body["topologyVersion"])
            body["topologyVersion"] = self._topology_version()
        server = f"{self.target[0]}:{self.target[1]}"
        own = {server, str(body.get("me", server))}

        def swap(value: Any) -> Any:
            return self.address if value in own else value

        for key in ("me", "primary"):
            if key in body:
                body[key] = swap(body[key])
        for key in ("hosts", "passives", "arbiters"):
            if key in body:
                body[key] = [swap(h) for h in body[key]]
        if self.in_outage and not self._outage_down and body.get("ok"):
            for key in ("isWritablePrimary", "ismaster"):
                if key in body:
                    body[key] = False
            if "setName" in body:
                body["secondary"] = True
            body.pop("primary", None)
            body.pop("electionId", None)
        if self._standalone:
            for key in _REPLICA_SET_FIELDS:
                body.pop(key, None)
        return body

    # -- life cycle -----------------------------------------------------------------------------
    def start(self) -> MongoProxy:
        self._listener.listen(64)
        self._thread = threading.Thread(target=self._accept, name=f"mongoproxy-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping = True
        with self._lock:
            timer, self._outage_timer = self._outage_timer, None
        if timer is not None:
            timer.cancel()
        shut_down(self._listener, self._lock, self._open, self._thread)

    def __enter__(self) -> MongoProxy:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def _accept(self) -> None:
        while not self._stopping:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _track(self, sock: socket.socket, add: bool) -> None:
        with self._lock:
            (self._open.add if add else self._open.discard)(sock)

    def _serve(self, client: socket.socket) -> None:
        self._track(client, True)
        with self._lock:
            self._clients.add(client)
        upstream: list[socket.socket] = []
        try:
            if not (self.in_outage and self._outage_down):
                self._relay(client, upstream)
        except (_Closed, OSError, ValueError, bson.errors.BSONError):
            pass
        finally:
            for sock in [client, *upstream]:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()
                self._track(sock, False)
            with self._lock:
                self._monitors.discard(client)
                self._clients.discard(client)

    def _relay(self, client: socket.socket, upstream: list[socket.socket]) -> None:
        while True:
            request = read_message(client)
            cmd = parse_request(request)
            with self._lock:
                self.op_codes[request.op_code] += 1
            if cmd.key in HELLO_COMMANDS and "topologyVersion" in cmd.body and "maxAwaitTimeMS" in cmd.body:
                with self._lock:
                    self._monitors.add(client)
                request = self._hello_request(request, cmd)
            fault = self._take(cmd)
            if fault.kind == "pass" and not (cmd.key in EXEMPT_COMMANDS or not cmd.key):
                fault = self._implicit_fault(cmd)
            if fault.kind == "drop_before":
                return
            changes = (fault.kind in ("error", "write_concern_error") and not fault.stale
                       and fault.reply.get("code") in _NOT_PRIMARY_CODES and not self.in_outage)
            if fault.kind == "error":
                if not cmd.more_to_come:
                    if changes:
                        with self._lock:
                            self._bump += 1
                    made_up = self._error_reply(cmd, fault.reply, fault.labels)
                    client.sendall(answer(request, made_up, self._new_id()).encode())
                    if changes:
                        self.close_monitors()
                continue
            if not upstream:
                sock = socket.create_connection(self.target, timeout=None)
                self._track(sock, True)
                upstream.append(sock)
            server = upstream[0]
            server.sendall(request.encode())
            if cmd.more_to_come:  # no answer will come (w:0)
                if fault.kind == "drop_after":
                    return
                continue
            while True:  # one answer, or several while the server sets moreToCome (exhaust)
                reply = read_message(server)
                if fault.kind == "drop_after":
                    return
                body = reply_docs(reply) if cmd.key in HELLO_COMMANDS or fault.kind == "write_concern_error" else None
                if body is not None and cmd.key in HELLO_COMMANDS:
                    reply = with_body(reply, self._rewrite_hello(body))
                elif body is not None and body.get("ok"):  # write_concern_error
                    if changes:
                        with self._lock:
                            self._bump += 1
                    reply = with_body(reply, self._add_write_concern_error(cmd, body, fault))
                client.sendall(reply.encode())
                if changes:
                    self.close_monitors()
                if not (reply.flags & MORE_TO_COME):
                    break

    def _add_write_concern_error(self, cmd: Command, body: dict[str, Any], fault: Fault) -> dict[str, Any]:
        wce = dict(fault.reply)
        tv = self._topology_version()
        if tv is not None:
            wce["topologyVersion"] = tv  # pymongo looks for it in the writeConcernError
        body = {**body, "writeConcernError": wce}
        found = self._labels(cmd, int(wce["code"]), fault.labels)
        if found:
            body["errorLabels"] = found  # top level, as a server puts them
        return body

    def _topology_version(self) -> dict[str, Any] | None:
        """The topologyVersion clients are shown: the server's, its counter moved on by the proxy's changes."""
        with self._lock:
            if self._server_tv is None:
                return None
            return {**self._server_tv, "counter": bson.int64.Int64(int(self._server_tv["counter"]) + self._bump)}

    def _bump_topology(self) -> None:
        """A state change made up by the proxy: a newer topologyVersion, and pymongo's monitors told at once."""
        with self._lock:
            self._bump += 1
        self.close_monitors()

    def _hello_request(self, request: Message, cmd: Command) -> Message:
        """An awaitable hello (pymongo's streaming monitor) on its way to the server: answered at once
        when the client has not seen the latest topologyVersion (as a server does), else given the
        server's own counter back."""
        tv = cmd.body.get("topologyVersion")
        if request.op_code != OP_MSG or not isinstance(tv, dict) or "maxAwaitTimeMS" not in cmd.body:
            return request
        shown = self._topology_version()
        with self._lock:
            server, bump = self._server_tv, self._bump
        if shown is None or server is None or tv.get("processId") != shown["processId"]:
            return request
        body = dict(cmd.body)
        if int(tv["counter"]) < int(shown["counter"]):
            del body["topologyVersion"], body["maxAwaitTimeMS"]
        else:
            body["topologyVersion"] = {**tv, "counter": bson.int64.Int64(int(tv["counter"]) - bump)}
        flags, _, sequences = msg_sections(request.payload)
        return Message(request.request_id, request.response_to, OP_MSG, build_msg(flags, body, sequences))

    def _implicit_fault(self, cmd: Command) -> Fault:
        """Faults that come from a mode rather than from a counted fault: outage, standalone."""
        if self.in_outage:
            with self._lock:
                self.faults += 1
            if self._outage_down:
                return Fault("drop_before")
            return Fault("error", reply={"ok": 0.0, "errmsg": "not primary (election in progress, MongoProxy)",
                                         "code": 10107, "codeName": "NotWritablePrimary"}, stale=False)
        if self._standalone and "txnNumber" in cmd.body:
            with self._lock:
                self.faults += 1
            return Fault("error", reply={"ok": 0.0, "errmsg": "Transaction numbers are only allowed on a replica "
                                         "set member or mongos", "code": 20, "codeName": "IllegalOperation"},
                         labels=(), stale=False)
        return Fault()
