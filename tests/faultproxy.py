"""A small fault-injecting proxy for tests: sits between a client and a local server and breaks
requests on demand.

::

    with FaultProxy(("127.0.0.1", server_port)) as proxy:
        client = make_client(proxy.url)
        proxy.respond(500, count=2)          # the next two requests get a 500
        proxy.cut(after=64 * 1024, match="GET ")   # responses to GETs stop after 64 KiB of body
        proxy.delay(3.0)                     # every request waits 3 s before it is forwarded
        proxy.drop(count=1)                  # the next request's connection is closed unanswered
        proxy.cut_request(after=1000, match="partNumber=2")  # upload bodies break after 1000 bytes
        proxy.reset()                        # pass everything through again

In HTTP mode (the default) it parses HTTP/1.1 just enough to handle each request of a
keep-alive connection on its own: ``Content-Length`` and chunked bodies, ``Expect:
100-continue`` (answered by the proxy itself), responses without a body.  A fault applies to the
next ``count`` requests whose request line and headers contain ``match`` (all of them when
``count`` is None) and is then replaced by pass-through.  ``proxy.requests`` lists the request
lines seen, ``proxy.faults`` counts the faults applied.

With ``raw=True`` it is a plain TCP relay (for non-HTTP protocols): a "request" is a
connection; ``drop``, ``delay`` and ``cut`` (after N bytes of the server's answer) apply,
``respond`` does not.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

BUF = 64 * 1024


@dataclass
class Fault:
    kind: str = "pass"  # pass | drop | delay | respond | cut | cut_request
    count: int | None = None
    match: str = ""
    seconds: float = 0.0
    status: int = 500
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    after: int = 0


class _Closed(Exception):
    """The peer closed the connection."""


class _Conn:
    """A socket with a read buffer, for line- and length-based HTTP parsing."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def fill(self) -> None:
        data = self.sock.recv(BUF)
        if not data:
            raise _Closed()
        self.buf += data

    def read_head(self) -> bytes:
        while b"\r\n\r\n" not in self.buf:
            if len(self.buf) > 1024 * 1024:
                raise _Closed()
            self.fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        return head + b"\r\n\r\n"

    def read_line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self.fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line + b"\r\n"

    def read_some(self, limit: int) -> bytes:
        if not self.buf:
            self.fill()
        data, self.buf = self.buf[:limit], self.buf[limit:]
        return data

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()


def _headers(head: bytes) -> dict[str, str]:
    lines = head.decode("latin-1").split("\r\n")[1:]
    out: dict[str, str] = {}
    for line in lines:
        if ":" in line:
            name, value = line.split(":", 1)
            out[name.strip().lower()] = value.strip()
    return out


class _Budget:
    """How many more body bytes may pass before a cut (None: no cut)."""

    def __init__(self, limit: int | None) -> None:
        self.left = limit

    def take(self, data: bytes) -> tuple[bytes, bool]:
        if self.left is None:
            return data, False
        if len(data) >= self.left:
            data, self.left = data[: self.left], 0
            return data, True
        self.left -= len(data)
        return data, False


class _Sink:
    """Where a request body goes when the proxy answers by itself."""

    def sendall(self, data: bytes) -> None:
        pass


class _CutHere(Exception):
    """The cut point was reached: close both connections."""


def _relay_body(src: _Conn, dst: socket.socket | _Sink, headers: dict[str, str], budget: _Budget, until_close: bool) -> None:
    """Copy one message body (Content-Length, chunked, or until close) from ``src`` to ``dst``."""

    def send(data: bytes) -> None:
        data, cut = budget.take(data)
        if data:
            dst.sendall(data)
        if cut:
            raise _CutHere()

    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            line = src.read_line()
            send(line)
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers, then the empty line
                    trailer = src.read_line()
                    send(trailer)
                    if trailer == b"\r\n":
                        return
            left = size + 2  # the data and its CRLF
            while left:
                data = src.read_some(min(left, BUF))
                send(data)
                left -= len(data)
    elif "content-length" in headers:
        left = int(headers["content-length"])
        while left:
            data = src.read_some(min(left, BUF))
            send(data)
            left -= len(data)
    elif until_close:
        while True:
            try:
                data = src.read_some(BUF)
            except _Closed:
                return
            send(data)


def shut_down(listener: socket.socket, lock: threading.Lock, open_sockets: set[socket.socket],
              thread: threading.Thread | None) -> None:
    """Stop a proxy: close its listening socket (shutdown first: it wakes the accept(), which
    close alone does not on Linux), then every connection it holds, then wait for its thread."""
    with contextlib.suppress(OSError):
        listener.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        listener.close()
    with lock:
        sockets = list(open_sockets)
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()
    if thread is not None:
        thread.join(5)


class FaultProxy:
    """A threaded proxy on a free 127.0.0.1 port that forwards to ``target`` and injects faults."""

    def __init__(self, target: tuple[str, int], *, raw: bool = False) -> None:
        self.target = target
        self.raw = raw
        self._lock = threading.Lock()
        self._fault = Fault()
        self.requests: list[str] = []
        self.faults = 0
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._open: set[socket.socket] = set()
        self._stopping = False
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- control ------------------------------------------------------------------------------
    def set(self, fault: Fault) -> None:
        with self._lock:
            self._fault = fault

    def reset(self) -> None:
        self.set(Fault())

    def drop(self, *, count: int | None = None, match: str = "") -> None:
        self.set(Fault("drop", count, match))

    def delay(self, seconds: float, *, count: int | None = None, match: str = "") -> None:
        self.set(Fault("delay", count, match, seconds=seconds))

    def respond(self, status: int, body: bytes = b"", *, headers: dict[str, str] | None = None,
                count: int | None = None, match: str = "") -> None:
        if self.raw:
            raise ValueError("respond() needs HTTP mode")
        self.set(Fault("respond", count, match, status=status, body=body, headers=tuple((headers or {}).items())))

    def cut(self, after: int, *, count: int | None = None, match: str = "") -> None:
        """Close the connection after ``after`` bytes of the response body (raw: of the answer)."""
        self.set(Fault("cut", count, match, after=after))

    def cut_request(self, after: int, *, count: int | None = None, match: str = "") -> None:
        """Close the connection after forwarding ``after`` bytes of the request body."""
        self.set(Fault("cut_request", count, match, after=after))

    def _take(self, request: str) -> Fault:
        """The fault for this request (and count it down)."""
        with self._lock:
            self.requests.append(request.split("\r\n", 1)[0])
            fault = self._fault
            if fault.kind == "pass" or fault.match not in request:
                return Fault()
            if fault.count is not None:
                fault.count -= 1
                if fault.count <= 0:
                    self._fault = Fault()
            self.faults += 1
            return Fault(fault.kind, None, fault.match, fault.seconds, fault.status, fault.body, fault.headers,
                         fault.after)

    # -- life cycle -----------------------------------------------------------------------------
    def start(self) -> FaultProxy:
        self._listener.listen(64)
        self._thread = threading.Thread(target=self._accept, name=f"faultproxy-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping = True
        shut_down(self._listener, self._lock, self._open, self._thread)

    def refuse(self) -> None:
        """Stop answering: every open connection is closed and new ones are refused, while the port
        stays bound to this proxy until ``stop`` (a closed port could be taken by another listener
        at once, and a test of "unreachable" would then reach it)."""
        self._stopping = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # no longer listening, still bound: RST to connects
        with self._lock:
            sockets = list(self._open)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def _accept(self) -> None:
        while not self._stopping:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            handler = self._raw if self.raw else self._http
            threading.Thread(target=self._serve, args=(handler, client), daemon=True).start()

    def _track(self, sock: socket.socket, add: bool) -> None:
        with self._lock:
            (self._open.add if add else self._open.discard)(sock)

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(self.target, timeout=60)
        self._track(sock, True)
        return sock

    def _serve(self, handler: Callable[[_Conn, list[_Conn]], None], client: socket.socket) -> None:
        self._track(client, True)
        upstream: list[_Conn] = []
        try:
            handler(_Conn(client), upstream)
        except (_Closed, _CutHere, OSError, ValueError):
            pass
        finally:
            for conn in [_Conn(client), *upstream]:
                conn.close()
                self._track(conn.sock, False)

    # -- raw TCP ----------------------------------------------------------------------------------
    def _raw(self, client: _Conn, upstream: list[_Conn]) -> None:
        fault = self._take("CONNECT")
        if fault.kind == "drop":
            return
        if fault.kind == "delay":
            time.sleep(fault.seconds)
        server = _Conn(self._connect())
        upstream.append(server)

        def forward() -> None:
            with contextlib.suppress(OSError, _Closed):
                while True:
                    server.sock.sendall(client.read_some(BUF))
            server.close()

        threading.Thread(target=forward, daemon=True).start()
        budget = _Budget(fault.after if fault.kind == "cut" else None)
        while True:
            data, cut = budget.take(server.read_some(BUF))
            client.sock.sendall(data)
            if cut:
                return

    # -- HTTP ---------------------------------------------------------------------------------------
    def _http(self, client: _Conn, upstream: list[_Conn]) -> None:
        while True:
            head = client.read_head()
            text = head.decode("latin-1")
            headers = _headers(head)
            fault = self._take(text)
            if fault.kind == "drop":
                return
            if fault.kind == "delay":
                time.sleep(fault.seconds)
            if headers.get("expect", "").lower() == "100-continue":
                client.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                head = b"\r\n".join(line for line in head.split(b"\r\n") if not line.lower().startswith(b"expect:"))
            if fault.kind == "respond":
                _relay_body(client, _Sink(), headers, _Budget(None), until_close=False)
                reason = {500: "Internal Server Error", 503: "Service Unavailable"}.get(fault.status, "Fault")
                extra = "".join(f"{k}: {v}\r\n" for k, v in fault.headers)
                client.sock.sendall(f"HTTP/1.1 {fault.status} {reason}\r\nContent-Length: {len(fault.body)}\r\n"
                                    f"{extra}Connection: close\r\n\r\n".encode("latin-1") + fault.body)
                return
            if not upstream:
                upstream.append(_Conn(self._connect()))
            server = upstream[0]
            server.sock.sendall(head)
            _relay_body(client, server.sock, headers, _Budget(fault.after if fault.kind == "cut_request" else None),
                        until_close=False)
            method = text.split(" ", 1)[0].upper()
            while True:  # skip interim 1xx answers
                answer = server.read_head()
                status = int(answer.split(b" ", 2)[1])
                client.sock.sendall(answer)
                if status >= 200:
                    break
            answer_headers = _headers(answer)
            if method != "HEAD" and status not in (204, 304):
                _relay_body(server, client.sock, answer_headers, _Budget(fault.after if fault.kind == "cut" else None),
                            until_close=True)
            closing = "close" in answer_headers.get("connection", "").lower() or "close" in headers.get("connection", "").lower()
            if closing or (method != "HEAD" and "content-length" not in answer_headers
                           and "chunked" not in answer_headers.get("transfer-encoding", "").lower()
                           and status not in (204, 304)):
                return

