"""FAKE plumbing shared by the Box and GitHub fakes: a threaded HTTP server on 127.0.0.1 with a
random port, request-body reading (Content-Length or chunked) and JSON replies."""

from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


class FakeHandler(BaseHTTPRequestHandler):
    """Reads the request, hands it to ``server.fake.dispatch`` and writes what it returns."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes: avoid 40 ms stalls
    server: FakeHTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                line = self.rfile.readline().strip()
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        body = self.read_body()
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        status, headers, payload = self.server.fake.dispatch(self.command, unquote(parts.path), query, self.headers, body)
        data = payload if isinstance(payload, bytes) else (b"" if payload is None else json.dumps(payload).encode())
        self.send_response(status)
        if not isinstance(payload, bytes) and payload is not None:
            self.send_header("Content-Type", "application/json")
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _handle


class FakeHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: FakeService) -> None:
        super().__init__(("127.0.0.1", 0), FakeHandler)
        self.fake = fake


Reply = tuple[int, dict[str, str], Any]


class FakeService:
    """Base of a fake: holds the lock, the request counter and the running server."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.calls: Counter[str] = Counter()
        self._server: FakeHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def dispatch(self, method: str, path: str, query: dict[str, str], headers: Any, body: bytes) -> Reply:
        raise NotImplementedError

    def start(self) -> str:
        self._server = FakeHTTPServer(self)
        self._thread = threading.Thread(target=self._server.serve_forever, name=type(self).__name__, daemon=True)
        self._thread.start()
        return self.url

    @property
    def url(self) -> str:
        assert self._server is not None, "fake not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body or b"{}")
    except ValueError:
        return None
