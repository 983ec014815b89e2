"""Bearer tokens → the caller: who they are and the view of the VDir their requests use.

The one place the server meets :mod:`vdir.access`: ``Accounts.authenticate(secret)`` gives a
``Principal`` and ``VDir.as_user(principal)`` a view on which every core call checks the
caller's rights (projects, roles, scopes), so handlers need no permission logic of their own.
"""

from __future__ import annotations

from dataclasses import dataclass

from vdir.access import Accounts, Principal
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


class Authenticator:
    """Turns a bearer secret into a :class:`Caller` (``AuthenticationError`` when it is unknown,
    expired or revoked, or its user is gone)."""

    def __init__(self, vd: VDir) -> None:
        self.vd = vd
        self.accounts = Accounts(vd.catalog)

    def __call__(self, secret: str) -> Caller:
        if not secret:
            raise AuthenticationError("missing bearer token")
        principal = self.accounts.authenticate(secret)
        return Caller(user=principal.user, admin=principal.admin, scopes=tuple(sorted(principal.scopes)),
                      vd=self.vd.as_user(principal), principal=principal, token_id=principal.token_id)


def check_write(vd: VDir, norm: str, size: int | None, replaced: Entry | None = None) -> None:
    """Refuse now what the core would refuse at the commit of a ``size``-byte file at ``norm``
    (no write permission, over the project's quota), before an upload session takes any bytes
    onto the server's disk: the core's own checks, which run again at the commit."""
    vd._allow(norm, "write")
    vd._check_quota(norm, size, replaced=replaced)


__all__ = ["Authenticator", "Caller", "check_write"]
