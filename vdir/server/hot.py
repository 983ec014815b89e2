"""The hot path: a file's bytes in and out without the framework's per-request machinery.

``GET /v1/files`` and ``PUT /v1/files`` are most of a busy server's requests, and with small files
the framework's routing, dependency solving and middleware layers took as much CPU as vdir's own
work.  :class:`VDirAPI` is the FastAPI app with one addition: a request for a *hot route*
whose arguments are plain (a bearer token, each of its query parameters at most once, values
the route reads as they are; other parameters are ignored, as the framework ignores them) is
handed straight to the route's own function, the one FastAPI calls too, so the behaviour is
the same by construction (``tests/test_server_hot.py`` compares the two ways).  Anything else
(no token, a repeated parameter, a value to validate) goes the framework's way, which answers
with its usual validation and errors.  The OpenAPI spec is FastAPI's, from the routes as
declared.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI
from fastapi.security import HTTPAuthorizationCredentials
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

Parse = Callable[[str], Any]
Handler = Callable[..., Awaitable[Response]]
_NOT = object()


def text(value: str) -> str:
    return value


def flag(value: str) -> Any:
    """``true``/``1`` and ``false``/``0`` (any case); anything else is the framework's to judge."""
    v = value.lower()
    return True if v in ("true", "1") else False if v in ("false", "0") else _NOT


def mode_bits(value: str) -> Any:
    """A decimal number 0..0o7777 written plainly; anything else is the framework's to judge."""
    if not value.isascii() or not value.isdigit() or len(value) > 5:
        return _NOT
    n = int(value)
    return n if n <= 0o7777 else _NOT


@dataclass(frozen=True)
class HotRoute:
    """A route's plain form: its query parameters (name → parser; ``required`` must be there)
    and the function that answers, called as ``handler(credentials, request, **arguments)``."""

    handler: Handler
    params: dict[str, Parse]
    required: frozenset[str]
    on_error: Callable[[BaseException], Response]

    def arguments(self, scope: Scope) -> tuple[HTTPAuthorizationCredentials, dict[str, Any]] | None:
        """The credentials and arguments of a plain request, else ``None``."""
        auth = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                if auth is not None:
                    return None
                auth = value
        if auth is None:
            return None
        scheme, _, secret = auth.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not secret or " " in secret:
            return None
        found: dict[str, Any] = {}
        for name, value in parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True):
            parse = self.params.get(name)
            if parse is None:
                continue  # not the route's: ignored, as the framework ignores it
            if name in found:
                return None
            parsed = parse(value)
            if parsed is _NOT:
                return None
            found[name] = parsed
        if not self.required <= found.keys():
            return None
        return HTTPAuthorizationCredentials(scheme=scheme, credentials=secret), found

    async def __call__(self, scope: Scope, receive: Receive, send: Send,
                       cred: HTTPAuthorizationCredentials, args: dict[str, Any]) -> None:
        request = Request(scope, receive)
        try:
            response = await self.handler(cred, request=request, **args)
        except Exception as exc:  # the app's one mapping (which logs what is unexpected)
            response = self.on_error(exc)
        await response(scope, receive, send)


class VDirAPI(FastAPI):
    """FastAPI with :class:`HotRoute` s for its busiest routes (``hot[(method, path)]``)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.hot: dict[tuple[str, str], HotRoute] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.root_path and not scope.get("root_path"):
            route = self.hot.get((scope["method"], scope["path"]))
            if route is not None:
                plain = route.arguments(scope)
                if plain is not None:
                    scope["app"] = self  # as Starlette sets it: request.app
                    await route(scope, receive, send, *plain)
                    return
        await super().__call__(scope, receive, send)


__all__ = ["HotRoute", "VDirAPI", "flag", "mode_bits", "text"]
