"""Users, tokens, projects and the one permission check (:class:`Access`) of the hosted mode.

Everything is kept in the catalog's generic records (both engines, no schema change):

* ``users/<name>``: ``{name, admin, created}``;
* ``tokens/<id>``: ``{id, user, name, scopes, created, expires, revoked, hash}``: only the
  SHA-256 of the secret is stored; the secret (``vdir_<id>_<random>``) is shown once;
* ``projects/<name>``: ``{name, prefixes, members: {user: role}, quota_bytes, quota_files,
  created}``; the prefixes of all projects never overlap;
* ``settings/access``: ``{generation}``, a fresh random value written after every change of
  users, tokens, projects or the trash setting (:func:`changed`), so that a server can keep
  what a token stands for and check with one read that nothing changed since
  (:func:`generation`), in this process or in any other sharing the catalog.

Rules (:class:`Access`): an admin principal may do everything.  Otherwise a path is readable when
it lies in (or is) a prefix of a project where the user has a role and the token has the scope
``read``; writable when the role is editor or owner and the token has ``write``.  Ancestors of a
readable prefix (``/``, ``/projects``) can be listed and stat'ed, showing only the visible
children, and are never writable.  Everything else is invisible: :class:`NotFound` with exactly
the message a missing path gets, decided from the path alone before the catalog is asked, so
nothing tells an existing hidden path from a missing one.

Standalone use (``VDir.principal is None``) never builds an :class:`Access`: nothing changes.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from vdir import paths
from vdir.catalog.base import DIR, ROOT_ID, Catalog, Entry
from vdir.errors import (
    AlreadyExists,
    AuthenticationError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)

ROLES = ("viewer", "editor", "owner")
"""viewer: read; editor: read and write; owner: editor, and sees members and usage."""
SCOPES = ("read", "write", "admin")
WRITE_ROLES = ("editor", "owner")

USERS = "users"
TOKENS = "tokens"
PROJECTS = "projects"
SETTINGS = "settings"
TOKEN_PREFIX = "vdir_"


@dataclass(frozen=True)
class Principal:
    """Who is asking: a user, through one token."""

    user: str
    admin: bool
    """The user's admin flag and the token's scope ``admin``, both."""
    scopes: frozenset[str]
    token_id: str | None = None
    expires: float | None = None
    """When the token expires (epoch seconds), if it does."""


ACCESS_GENERATION = "access"
"""The ``settings`` record whose value changes with every change of who may do what."""


def generation(catalog: Catalog) -> str:
    """The current access generation ("" before the first change)."""
    try:
        return str(catalog.get_record(SETTINGS, ACCESS_GENERATION)[0].get("generation", ""))
    except NotFound:
        return ""


def changed(catalog: Catalog) -> None:
    """Record that users, tokens, projects or the trash setting changed (after the change is
    committed: whoever reads the new generation then reads the new state)."""
    catalog.put_record(SETTINGS, ACCESS_GENERATION, {"generation": secrets.token_hex(8), "at": time.time()})


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _missing(path: str) -> NotFound:
    """What a path that does not exist raises (the catalog's own message)."""
    return NotFound(f"{path}: no such file or directory", path=path)


class Accounts:
    """Users, tokens and projects in one catalog.  Who may call what is the caller's business
    (the CLI and the server ask :meth:`vdir.core.VDir.require_admin` first)."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    # -- users ------------------------------------------------------------------------------
    def add_user(self, name: str, *, admin: bool = False) -> dict[str, Any]:
        if not name or "/" in name or name != name.strip():
            raise InvalidArgument(f"{name!r} is not a valid user name")
        doc = {"name": name, "admin": bool(admin), "created": time.time()}
        try:
            self.catalog.put_record(USERS, name, doc, expected_version=0)
        except AlreadyExists:
            raise AlreadyExists(f"user {name!r} exists") from None
        changed(self.catalog)
        return doc

    def get_user(self, name: str) -> dict[str, Any]:
        try:
            return self.catalog.get_record(USERS, name)[0]
        except NotFound:
            raise NotFound(f"unknown user {name!r} (see 'vdir user list')") from None

    def list_users(self) -> list[dict[str, Any]]:
        return [doc for _, doc, _ in self.catalog.list_records(USERS)]

    def remove_user(self, name: str) -> None:
        """Remove a user: their tokens are revoked and their memberships dropped."""
        self.get_user(name)
        for token in self.list_tokens(name):
            if not token["revoked"]:
                self.revoke_token(token["id"])
        for key, doc, _ in self.catalog.list_records(PROJECTS):
            if name in doc.get("members", {}):
                doc["members"].pop(name)
                self.catalog.put_record(PROJECTS, key, doc)
        self.catalog.delete_record(USERS, name)
        changed(self.catalog)

    # -- tokens -----------------------------------------------------------------------------
    def create_token(self, user: str, *, scopes: Iterable[str] = ("read", "write"),
                     expires_in: float | None = 90 * 86400, name: str = "") -> tuple[str, dict[str, Any]]:
        """A new token for ``user``: (the secret, shown only now; the token's info).  Only the
        secret's SHA-256 is stored."""
        self.get_user(user)
        wanted = sorted(set(scopes))
        bad = [s for s in wanted if s not in SCOPES]
        if bad or not wanted:
            raise InvalidArgument(f"scopes must be some of {', '.join(SCOPES)} (got {', '.join(bad) or 'none'})")
        if expires_in is not None and expires_in <= 0:
            raise InvalidArgument("a token's lifetime must be positive (or none)")
        token_id = secrets.token_hex(6)
        secret = f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
        now = time.time()
        doc = {"id": token_id, "user": user, "name": name, "scopes": wanted, "created": now,
               "expires": now + expires_in if expires_in is not None else None, "revoked": False,
               "hash": _hash(secret)}
        self.catalog.put_record(TOKENS, token_id, doc, expected_version=0)
        return secret, _public(doc)

    def list_tokens(self, user: str | None = None) -> list[dict[str, Any]]:
        return [_public(doc) for _, doc, _ in self.catalog.list_records(TOKENS) if user is None or doc["user"] == user]

    def get_token(self, token_id: str) -> dict[str, Any]:
        try:
            return _public(self.catalog.get_record(TOKENS, token_id)[0])
        except NotFound:
            raise NotFound(f"unknown token {token_id!r}") from None

    def revoke_token(self, token_id: str) -> None:
        try:
            doc = self.catalog.get_record(TOKENS, token_id)[0]
        except NotFound:
            raise NotFound(f"unknown token {token_id!r}") from None
        doc["revoked"] = True
        self.catalog.put_record(TOKENS, token_id, doc)
        changed(self.catalog)

    def authenticate(self, secret: str) -> Principal:
        """The principal a token secret stands for; ``AuthenticationError`` ("unknown token",
        "token revoked", "token expired") otherwise."""
        if not isinstance(secret, str) or not secret.startswith(TOKEN_PREFIX):
            raise AuthenticationError("unknown token")
        token_id = secret[len(TOKEN_PREFIX):].split("_", 1)[0]
        try:
            doc = self.catalog.get_record(TOKENS, token_id)[0]
        except NotFound:
            raise AuthenticationError("unknown token") from None
        if not hmac.compare_digest(str(doc.get("hash", "")), _hash(secret)):
            raise AuthenticationError("unknown token")
        if doc.get("revoked"):
            raise AuthenticationError("token revoked")
        if doc.get("expires") is not None and float(doc["expires"]) <= time.time():
            raise AuthenticationError("token expired")
        try:
            user = self.catalog.get_record(USERS, doc["user"])[0]
        except NotFound:
            raise AuthenticationError("unknown token") from None
        scopes = frozenset(doc.get("scopes", ()))
        return Principal(user=doc["user"], admin=bool(user.get("admin")) and "admin" in scopes, scopes=scopes,
                         token_id=token_id, expires=float(doc["expires"]) if doc.get("expires") is not None else None)

    # -- projects ---------------------------------------------------------------------------
    def create_project(self, name: str, prefixes: list[str], *, quota_bytes: int | None = None,
                       quota_files: int | None = None) -> dict[str, Any]:
        """A project owning ``prefixes`` (which must not overlap another project's); their
        directories are created."""
        if not name or "/" in name:
            raise InvalidArgument(f"{name!r} is not a valid project name")
        norms = sorted({paths.normalize(p) for p in prefixes})
        if not norms:
            raise InvalidArgument("a project needs at least one path prefix")
        from vdir.trash import is_hidden

        for p in norms:
            if p == "/" or is_hidden(p):
                raise InvalidArgument(f"{p}: cannot be a project's prefix")
        for a in norms:
            for b in norms:
                if a != b and paths.is_within(a, b):
                    raise InvalidArgument(f"prefixes {a} and {b} overlap")
        for other in self.list_projects():
            for p in norms:
                for q in other["prefixes"]:
                    if paths.is_within(p, q) or paths.is_within(q, p):
                        raise AlreadyExists(f"{p}: overlaps {q} of project {other['name']!r}")
        _check_quota_values(quota_bytes, quota_files)
        doc: dict[str, Any] = {"name": name, "prefixes": norms, "members": {}, "quota_bytes": quota_bytes,
               "quota_files": quota_files, "created": time.time()}
        try:
            self.catalog.put_record(PROJECTS, name, doc, expected_version=0)
        except AlreadyExists:
            raise AlreadyExists(f"project {name!r} exists") from None
        for p in norms:
            _ensure_dir(self.catalog, p)
        changed(self.catalog)
        return doc

    def list_projects(self) -> list[dict[str, Any]]:
        return [doc for _, doc, _ in self.catalog.list_records(PROJECTS)]

    def get_project(self, name: str) -> dict[str, Any]:
        try:
            return self.catalog.get_record(PROJECTS, name)[0]
        except NotFound:
            raise NotFound(f"unknown project {name!r} (see 'vdir project list')") from None

    def delete_project(self, name: str) -> None:
        """Forget the project (its files stay, visible to admins only)."""
        self.get_project(name)
        self.catalog.delete_record(PROJECTS, name)
        changed(self.catalog)

    def _change(self, name: str, change: Any) -> None:
        try:
            doc, version = self.catalog.get_record(PROJECTS, name)
        except NotFound:
            raise NotFound(f"unknown project {name!r} (see 'vdir project list')") from None
        change(doc)
        self.catalog.put_record(PROJECTS, name, doc, expected_version=version)
        changed(self.catalog)

    def grant(self, project: str, user: str, role: str) -> None:
        if role not in ROLES:
            raise InvalidArgument(f"role {role!r} is not one of {', '.join(ROLES)}")
        self.get_user(user)
        self._change(project, lambda doc: doc.setdefault("members", {}).__setitem__(user, role))

    def revoke(self, project: str, user: str) -> None:
        def drop(doc: dict[str, Any]) -> None:
            if user not in doc.get("members", {}):
                raise NotFound(f"{user!r} is not a member of project {project!r}")
            doc["members"].pop(user)

        self._change(project, drop)

    def set_quota(self, project: str, *, bytes: int | None, files: int | None) -> None:
        _check_quota_values(bytes, files)
        self._change(project, lambda doc: doc.update(quota_bytes=bytes, quota_files=files))

    def usage(self, project: str) -> dict[str, Any]:
        """``{"bytes", "files", "quota_bytes", "quota_files"}``: bytes count once per copy the
        placement policy asks for (at least one); the prefixes are walked (always correct)."""
        from vdir.quota import project_usage

        doc = self.get_project(project)
        used_bytes, used_files = project_usage(self.catalog, doc)
        return {"project": project, "bytes": used_bytes, "files": used_files,
                "quota_bytes": doc.get("quota_bytes"), "quota_files": doc.get("quota_files")}


def _check_quota_values(nbytes: int | None, files: int | None) -> None:
    for what, value in (("bytes", nbytes), ("files", files)):
        if value is not None and (not isinstance(value, int) or value < 0):
            raise InvalidArgument(f"quota of {what} must be a whole number >= 0 (or none)")


def _public(doc: dict[str, Any]) -> dict[str, Any]:
    """A token's info without its hash."""
    return {k: v for k, v in doc.items() if k != "hash"}


def _ensure_dir(catalog: Catalog, path: str) -> None:
    parent = ROOT_ID
    for name in paths.components(path):
        found = catalog.lookup_id(parent, name)
        if found is None:
            try:
                found = (catalog.create(Entry(name=name, type=DIR, parent_id=parent, mode=0o755)).id, DIR)
            except AlreadyExists:
                found = catalog.lookup_id(parent, name)
        if found is None or found[1] != DIR:
            raise InvalidArgument(f"{path}: {name} exists and is not a directory")
        parent = found[0]


class Access:
    """The one permission check for a principal, over the projects as they were read."""

    def __init__(self, principal: Principal, projects: list[dict[str, Any]]) -> None:
        self.principal = principal
        self.projects = projects
        # (prefix, project name, role) of every prefix the user has a role in
        self._mine = [(p, doc["name"], doc.get("members", {})[principal.user])
                      for doc in projects if principal.user in doc.get("members", {}) for p in doc["prefixes"]]

    def _inside(self, path: str) -> tuple[str, str] | None:
        """(project, role) of the user's prefix that ``path`` lies in, or None."""
        for prefix, project, role in self._mine:
            if paths.is_within(path, prefix):
                return project, role
        return None

    def _ancestor(self, path: str) -> bool:
        return any(paths.is_within(prefix, path) for prefix, _, _ in self._mine)

    def visible(self, path: str) -> bool:
        """Whether ``path`` may appear at all (in a listing, a stat, an error message)."""
        if self.principal.admin:
            return True
        return self._inside(path) is not None or self._ancestor(path)

    def whole(self, path: str) -> bool:
        """Whether everything below ``path`` is visible (no listing below it needs filtering)."""
        return self.principal.admin or self._inside(path) is not None

    def check(self, path: str, need: str) -> None:
        """Allow ``need`` (``read``, ``write`` or ``admin``) on ``path``, or raise:
        ``NotFound`` for an invisible path (the message of a missing one), ``PermissionDenied``
        for a visible one."""
        if self.principal.admin:
            return
        inside = self._inside(path)
        if inside is None:
            if not self._ancestor(path):
                raise _missing(path)
            if need == "read" and "read" in self.principal.scopes:
                return
            raise PermissionDenied(f"{path}: permission denied", path=path)
        project, role = inside
        if need == "admin":
            raise PermissionDenied(f"{path}: permission denied (admin only)", path=path)
        if need == "write" and role not in WRITE_ROLES:
            raise PermissionDenied(f"{path}: permission denied ({role} in project {project})", path=path)
        if need not in self.principal.scopes:
            raise PermissionDenied(f"{path}: permission denied (the token lacks the scope {need})", path=path)

    def may(self, path: str, need: str) -> bool:
        try:
            self.check(path, need)
            return True
        except (NotFound, PermissionDenied):
            return False

    def project_of(self, path: str) -> dict[str, Any] | None:
        """The project (any, whoever's) whose prefix ``path`` lies in."""
        for doc in self.projects:
            if any(paths.is_within(path, p) for p in doc["prefixes"]):
                return doc
        return None

    def role(self, project: str) -> str | None:
        for doc in self.projects:
            if doc["name"] == project:
                return doc.get("members", {}).get(self.principal.user)
        return None
