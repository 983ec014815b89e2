"""Bearer tokens → the caller: who they are and the view of the VDir their requests use.

The one place the server meets :mod:`vdir.access`: ``Accounts.authenticate(secret)`` gives a
``Principal`` and ``VDir.as_user(principal)`` a view on which every core call checks the
caller's rights (projects, roles, scopes), so handlers need no permission logic of their own.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

from vdir.core import VDir
from vdir.errors import AuthenticationError, NotSupported, PermissionDenied

DEV_TOKEN_ENV = "VDIR_SERVER_TOKEN"


@dataclass(frozen=True)
class Caller:
    """An authenticated request's identity and its view of the virtual directory."""

    user: str
    admin: bool
    scopes: tuple[str, ...]
    vd: VDir
    principal: Any = None
    token_id: str | None = None

    def require_admin(self) -> None:
        require = getattr(self.vd, "require_admin", None)
        if require is not None:
            require()
        elif not self.admin:
            raise PermissionDenied("this needs an administrator")


class Authenticator:
    """Turns a bearer secret into a :class:`Caller` (``AuthenticationError`` when it is unknown,
    expired or revoked)."""

    def __init__(self, vd: VDir) -> None:
        self.vd = vd
        self._accounts: Any = None
        self._lock = threading.Lock()

    def accounts(self) -> Any:
        """The core's account registry (users, tokens, projects)."""
        with self._lock:
            if self._accounts is None:
                try:
                    from vdir.access import Accounts  # type: ignore[import-not-found,unused-ignore]
                except ModuleNotFoundError as exc:
                    if exc.name != "vdir.access":
                        raise
                    raise NotSupported("this server's vdir has no accounts (vdir.access)") from None

                self._accounts = Accounts(self.vd.catalog)
            return self._accounts

    def __call__(self, secret: str) -> Caller:
        if not secret:
            raise AuthenticationError("missing bearer token")
        try:
            import vdir.access  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
        except ModuleNotFoundError as exc:
            if exc.name != "vdir.access":
                raise
            return self._stand_in(secret)
        principal = self.accounts().authenticate(secret)
        view: VDir = self.vd.as_user(principal)  # type: ignore[attr-defined,unused-ignore]
        return Caller(user=principal.user, admin=principal.admin, scopes=tuple(sorted(principal.scopes)), vd=view,
                      principal=principal, token_id=principal.token_id)

    def _stand_in(self, secret: str) -> Caller:
        """Until vdir.access exists: one administrator token from the environment."""
        expected = os.environ.get(DEV_TOKEN_ENV)
        if not expected or secret != expected:
            raise AuthenticationError("unknown token")
        return Caller(user="admin", admin=True, scopes=("admin", "read", "write"), vd=self.vd)


def check_write(vd: VDir, norm: str, size: int | None, replaced: Any = None) -> None:
    """Refuse now what the core would refuse at the commit of a ``size``-byte file at ``norm``
    (no write permission, over the project's quota), before an upload session takes any bytes
    onto the server's disk.  The core's own checks (:meth:`VDir._allow`, :meth:`VDir._check_quota`);
    they run again at the commit."""
    allow = getattr(vd, "_allow", None)
    if allow is not None:
        allow(norm, "write")
    check_quota = getattr(vd, "_check_quota", None)
    if check_quota is not None:
        check_quota(norm, size, replaced=replaced)
