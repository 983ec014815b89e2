"""Who may do what in a :class:`vdir.core.VDir`: the principal's view, the one permission check
every path-taking method goes through, the listings filtered for it, quotas and the trash.

A mixin of ``VDir`` (kept apart so the core's data paths stay readable); standalone (no
principal) every check here costs nothing.
"""

from __future__ import annotations

import copy as copy_mod
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Self, cast

from vdir import paths, quota
from vdir import trash as trash_mod
from vdir.access import Access, Accounts, Principal
from vdir.catalog.base import DIR, Catalog, Entry
from vdir.errors import InvalidArgument, InvalidPath, NotFound, PermissionDenied

if TYPE_CHECKING:
    from vdir.core import Usage, VDir


class Guarded:
    """The access half of ``VDir`` (see the module docstring)."""

    catalog: Catalog
    principal: Principal | None
    _access: Access | None
    _trash_keep: float
    _view: bool

    if TYPE_CHECKING:
        def du(self, path: str = "/") -> Usage: ...

    @property
    def _vdir(self) -> VDir:
        return cast("VDir", self)

    # -- who is asking (vdir/access.py) ------------------------------------------------------
    def as_user(self, principal: Principal) -> Self:
        """A view of this VDir for ``principal``: it shares the catalog, the configuration and
        the opened backends, and every public method checks the principal's access (one
        helper, :meth:`_allow`).  The projects and the trash setting are read now (two catalog
        reads); closing the view closes nothing."""
        view = copy_mod.copy(self)
        view.principal = principal
        view._access = Access(principal, Accounts(self.catalog).list_projects())
        view._trash_keep = trash_mod.load_keep(self.catalog)
        view._view = True
        return view

    def require_admin(self) -> None:
        """``PermissionDenied`` unless standalone or an admin principal."""
        if self.principal is not None and not self.principal.admin:
            raise PermissionDenied("permission denied (admin only)")

    def _allow(self, norm: str, need: str = "read") -> None:
        """The one check of every path-taking method, on the normal path: the trash is hidden
        from everyone; a principal needs ``need`` there (:meth:`vdir.access.Access.check`).
        Standalone it costs nothing."""
        if trash_mod.is_hidden(norm):
            if need == "read":
                raise NotFound(f"{norm}: no such file or directory", path=norm)
            raise InvalidPath(f"{norm}: the name {trash_mod.TRASH_DIR} is reserved", path=norm)
        if self._access is not None:
            self._access.check(norm, need)

    def _shown(self, norm: str) -> bool:
        """Whether ``norm`` may appear in a listing."""
        if trash_mod.is_hidden(norm):
            return False
        return self._access is None or self._access.visible(norm)

    def _walk(self, top_id: int, top: str) -> Iterator[tuple[str, Entry]]:
        """:meth:`Catalog.walk` below the directory ``top`` without what the caller may not see
        (the trash, other projects): the same stream, unfiltered, standalone below ``/``."""
        walk = self.catalog.walk(top_id)
        if top != "/" and (self._access is None or self._access.whole(top)):
            return walk
        return ((rel, e) for rel, e in walk if self._shown(paths.join(top, rel)))

    def _children(self, parent_id: int, parent: str) -> Iterator[Entry]:
        """:meth:`Catalog.iter_children` of the directory ``parent``, filtered as :meth:`_walk`."""
        children = self.catalog.iter_children(parent_id)
        if parent != "/" and (self._access is None or self._access.whole(parent)):
            return children
        return (c for c in children if self._shown(paths.join(parent, c.name)))

    def _check_quota(self, norm: str, size: int | None, *, files: int = 1, replaced: Entry | None = None) -> None:
        """``NoSpace`` when storing ``size`` more bytes at ``norm`` would pass its project's
        quota (principals only: standalone is the catalog's owner, unlimited and free)."""
        if self._access is None or size is None:
            return
        project = self._access.project_of(norm)
        if quota.has_quota(project):
            assert project is not None
            quota.check(self.catalog, project, norm, size, files=files, replaced=replaced)

    # -- trash (vdir/trash.py) ---------------------------------------------------------------
    def trash_list(self) -> list[dict[str, Any]]:
        """The trashed items (records, oldest first) the principal could read at their
        original paths."""
        return sorted(trash_mod.items(self._vdir), key=lambda d: (d["deleted_at"], d["id"]))

    def trash_restore(self, trash_id: str, to: str | None = None) -> Entry:
        return trash_mod.restore(self._vdir, trash_id, to)

    trash_restore.__doc__ = trash_mod.restore.__doc__

    def trash_empty(self, *, all: bool = False) -> int:
        return trash_mod.empty(self._vdir, all=all)

    trash_empty.__doc__ = trash_mod.empty.__doc__

    def set_trash_keep(self, seconds: float) -> None:
        """Keep removed entries in the trash for ``seconds`` (0: off, ``rm`` deletes).  Admin."""
        self.require_admin()
        if seconds < 0:
            raise InvalidArgument("the trash keeps items for 0 seconds or more")
        trash_mod.store_keep(self.catalog, seconds)
        self._trash_keep = float(seconds)

    @property
    def trash_keep(self) -> float:
        """Seconds removed entries stay in the trash (as read at open); 0 when it is off."""
        return self._trash_keep

    def _check_move_quota(self, snorm: str, sentry: Entry, dnorm: str) -> None:
        """A move into another project is charged to that project's quota."""
        if self._access is None:
            return
        target = self._access.project_of(dnorm)
        if not quota.has_quota(target) or target is self._access.project_of(snorm):
            return
        if sentry.type == DIR:
            usage = self.du(snorm)
            size, files = usage.bytes, usage.files
        else:
            size, files = sentry.size, 1
        self._check_quota(dnorm, size, files=files)
