"""Reading objects from S3 for :mod:`vdir.backends.s3`: the body of one GET that resumes where
a broken connection stopped, and parallel ranged GETs ahead of the reader for large ranges.
Every piece of a read is pinned to the first answer's ETag, so an object replaced meanwhile is a
``Conflict``, never a mix of two versions."""

from __future__ import annotations

import io
import logging
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import urllib3
from botocore.exceptions import BotoCoreError, IncompleteReadError

from vdir.errors import Conflict
from vdir.retry import backoff_delay

if TYPE_CHECKING:
    from vdir.backends.s3 import S3Backend

log = logging.getLogger("vdir.backends.s3")

READ_PIECE = 1024 * 1024
RESUMES = 3
"""How often a broken download is resumed before the error is raised."""


@dataclass
class Opened:
    body: Any
    length: int
    etag: str | None
    total: int
    """Size of the whole object."""


class LeanBody:
    """A lean GET's body: its connection goes back to the pool when it was read to the end."""

    def __init__(self, answer: urllib3.BaseHTTPResponse) -> None:
        self._answer = answer

    def read(self, n: int = -1) -> bytes:
        return self._answer.read(None if n < 0 else n)

    def close(self) -> None:
        if self._answer.length_remaining:  # left mid-body: this connection cannot carry another request
            self._answer.close()
        self._answer.release_conn()


class Download(io.RawIOBase):
    """The body of one GET, resumed with a ranged GET (same ETag) when the connection breaks."""

    def __init__(self, backend: S3Backend, key: str, start: int, end: int | None, etag: str | None = None) -> None:
        self._backend = backend
        self._key = key
        self._pos = start
        self._end = end
        self.etag = etag
        self.total: int | None = None
        self._body: Any = None
        self._left = 0
        self._resumes = 0
        self._open()

    def _open(self) -> None:
        opened = self._backend._open(self._key, self._pos, self._end, self.etag)
        if opened is None:
            self._body, self._left = None, 0
            return
        self._body, self._left = opened.body, opened.length
        self.etag = self.etag or opened.etag
        self.total = opened.total

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        view = memoryview(buf).cast("B")
        while True:
            if self._left <= 0 or self._body is None:
                return 0
            want = min(len(view), self._left, READ_PIECE)
            try:
                data = self._body.read(want)
                if not data:
                    raise IncompleteReadError(actual_bytes=0, expected_bytes=self._left)
            except (BotoCoreError, OSError, urllib3.exceptions.HTTPError) as exc:
                self._broken(exc)
                continue
            n = len(data)
            view[:n] = data
            self._pos += n
            self._left -= n
            return n

    def _broken(self, exc: BaseException) -> None:
        error = self._backend._translate(exc, "read", self._key)
        self._close_body()
        if not error.retryable or self._resumes >= RESUMES:
            raise error from exc
        self._resumes += 1
        log.debug("%s; resuming at byte %d (attempt %d)", error, self._pos, self._resumes)
        time.sleep(backoff_delay(self._resumes, base=0.1, cap=2.0))
        self._open()

    def _close_body(self) -> None:
        body, self._body = self._body, None
        if body is not None:
            try:
                body.close()
            except Exception:  # noqa: S110 - a broken connection may fail to close; it is dropped anyway
                pass

    def close(self) -> None:
        self._close_body()
        super().close()


class ReadAhead(io.RawIOBase):
    """A large range: the first answer's body, then parts fetched by ranged GETs in parallel,
    at most ``read_ahead`` parts ahead of the reader (memory stays bounded)."""

    def __init__(self, backend: S3Backend, key: str, first: Download, start: int, stop: int) -> None:
        self._backend = backend
        self._key = key
        self._first: Download | None = first
        self._etag = first.etag
        step = backend.part_size
        self._ranges = deque((s, min(s + step, stop)) for s in range(start, stop, step))
        self._pool = ThreadPoolExecutor(backend.read_ahead, thread_name_prefix=f"s3-get-{backend.name}")
        self._window: deque[Future[bytearray]] = deque()
        self._chunk = memoryview(b"")
        self._fill()

    def _fill(self) -> None:
        while self._ranges and len(self._window) < self._backend.read_ahead:
            s, e = self._ranges.popleft()
            self._window.append(self._pool.submit(self._fetch, s, e))

    def _fetch(self, start: int, end: int) -> bytearray:
        buf = bytearray(end - start)
        view = memoryview(buf)
        got = 0
        part = Download(self._backend, self._key, start, end, self._etag)
        try:
            while got < len(buf):
                n = part.readinto(view[got:])
                if n == 0:
                    raise Conflict(f"{self._backend._where('read', self._key)}: the object ended at byte {start + got}, "
                                   f"before {end}: it changed while it was read", path=self._key)
                got += n
        finally:
            part.close()
        return buf

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        while True:
            if self._first is not None:
                n = self._first.readinto(buf)
                if n:
                    return n
                self._first.close()
                self._first = None
            if self._chunk:
                n = min(len(buf), len(self._chunk))
                memoryview(buf).cast("B")[:n] = self._chunk[:n]
                self._chunk = self._chunk[n:]
                return n
            if not self._window:
                return 0
            future = self._window.popleft()
            self._fill()
            self._chunk = memoryview(future.result())

    def close(self) -> None:
        if not self.closed:
            for future in self._window:
                future.cancel()
            self._window.clear()
            self._pool.shutdown(wait=False, cancel_futures=True)
            if self._first is not None:
                self._first.close()
            self._chunk = memoryview(b"")
        super().close()
