"""Bearer tokens → the caller: who they are and the view of the VDir their requests use.

The one place the server meets :mod:`vdir.access`: ``Accounts.authenticate(secret)`` gives a
``Principal`` and ``VDir.as_user(principal)`` a view on which every core call checks the
caller's rights (projects, roles, scopes), so handlers need no permission logic of their own.

What a token stands for is kept between requests and checked with one catalog read, the access
generation (:func:`vdir.access.generation`), which every change of users, tokens, projects or
the trash setting replaces, from this server or from any other process sharing the catalog: a
revoked token is refused at the next request, and a request costs one read instead of four
(token, user, projects, trash setting).  An expiry is checked against the clock every time,
and what is kept is read afresh after :data:`Authenticator.RECHECK` seconds whatever the
generation says (a bound on staleness should a writer not replace it, e.g. an older vdir).
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass

from vdir.access import Accounts, Principal, generation
from vdir.catalog.base import Entry
from vdir.core import VDir
from vdir.errors import AuthenticationError


@dataclass(frozen=True)
class Caller:
    """An authenticated request's identity and its view of the virtual directory."""

    user: str
    admin: bool
    scopes: tuple[str, ...]
    vd: VDir
    principal: Principal
    token_id: str | None = None

    def require_admin(self) -> None:
        """``PermissionDenied`` unless the caller is an administrator (the core's check)."""
        self.vd.require_admin()


@dataclass(frozen=True)
class _Known:
    caller: Caller
    generation: str
    expires: float | None
    recheck: float
    """``time.monotonic()`` after which it is read afresh."""


class Authenticator:
    """Turns a bearer secret into a :class:`Caller` (``AuthenticationError`` when it is unknown,
    expired or revoked, or its user is gone)."""

    MAX_KNOWN = 4096
    """Tokens kept at most (all are forgotten when more come: they are rebuilt on use)."""
    RECHECK = 30.0
    """Seconds after which a kept token is read afresh even if the generation did not change."""

    def __init__(self, vd: VDir) -> None:
        self.vd = vd
        self.accounts = Accounts(vd.catalog)
        self._known: dict[str, _Known] = {}
        self._lock = threading.Lock()

    def __call__(self, secret: str) -> Caller:
        if not secret:
            raise AuthenticationError("missing bearer token")
        key = hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()
        current = generation(self.vd.catalog)  # read before the state it vouches for
        known = self._known.get(key)
        if known is not None and known.generation == current and time.monotonic() < known.recheck:
            if known.expires is not None and known.expires <= time.time():
                raise AuthenticationError("token expired")
            return known.caller
        principal = self.accounts.authenticate(secret)
        caller = Caller(user=principal.user, admin=principal.admin, scopes=tuple(sorted(principal.scopes)),
                        vd=self.vd.as_user(principal), principal=principal, token_id=principal.token_id)
        with self._lock:
            if len(self._known) >= self.MAX_KNOWN:
                self._known.clear()
            self._known[key] = _Known(caller, current, principal.expires, time.monotonic() + self.RECHECK)
        return caller


def check_write(vd: VDir, norm: str, size: int | None, replaced: Entry | None = None) -> None:
    """Refuse now what the core would refuse at the commit of a ``size``-byte file at ``norm``
    (no write permission, over the project's quota), before an upload session takes any bytes
    onto the server's disk: the core's own checks, which run again at the commit."""
    vd._allow(norm, "write")
    vd._check_quota(norm, size, replaced=replaced)


__all__ = ["Authenticator", "Caller", "check_write"]
