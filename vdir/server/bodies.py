"""Request bodies streamed into the core's blocking writers without holding them in memory.

The event loop receives the body; a worker thread runs the core's writer, pulling each chunk
from the loop as it reads (:class:`BodyReader`).  At most one chunk is in flight, so a slow
backend slows the client down (TCP back-pressure) instead of filling the server's memory."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import anyio
import anyio.from_thread
import anyio.to_thread
from starlette.requests import ClientDisconnect, Request

from vdir.errors import InvalidArgument, TransientError

T = TypeVar("T")
IDLE_SECONDS = 300.0
"""A body that sends nothing for this long is given up (its worker thread is freed)."""


class ClientGone(TransientError):
    """The client closed the connection before its body was complete."""


class BodyReader(io.RawIOBase):
    """A blocking, read-only file over an async byte stream; used from a worker thread."""

    def __init__(self, stream: AsyncIterator[bytes], limit: int | None = None, idle: float | None = None) -> None:
        super().__init__()
        self.idle = IDLE_SECONDS if idle is None else idle
        self._stream = stream
        self._buf = b""
        self._done = False
        self.received = 0
        self.limit = limit

    def readable(self) -> bool:
        return True

    async def _next(self) -> bytes:
        try:
            with anyio.fail_after(self.idle):
                return await self._stream.__anext__()
        except StopAsyncIteration:
            return b""
        except ClientDisconnect:
            raise ClientGone("the client closed the connection mid-body") from None
        except TimeoutError:
            raise ClientGone(f"no byte of the body arrived for {self.idle:g} s") from None

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        while not self._buf and not self._done:
            chunk = anyio.from_thread.run(self._next)
            if not chunk:
                self._done = True
                break
            self.received += len(chunk)
            if self.limit is not None and self.received > self.limit:
                raise InvalidArgument(f"request body is longer than the declared {self.limit} bytes")
            self._buf = chunk
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


async def receive_body(request: Request) -> bytes:
    """The whole body of a (small) request."""
    try:
        return await request.body()
    except ClientDisconnect:
        raise ClientGone("the client closed the connection mid-body") from None


async def run_with_body(stream: AsyncIterator[bytes], work: Callable[[BodyReader], T], limit: int | None = None) -> T:
    """Run ``work(reader)`` in a worker thread, ``reader`` yielding the request body."""
    reader = BodyReader(stream, limit)
    return await anyio.to_thread.run_sync(lambda: work(reader))
