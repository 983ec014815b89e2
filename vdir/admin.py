"""Setting up and administering a virtual directory: init and the backend registry.

Front ends (CLI, Python) call these; nothing here prints.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from vdir import config as cfg
from vdir.backends import accepts_option, backend_class, scheme_of
from vdir.catalog.base import BackendRecord, open_catalog
from vdir.core import VDir
from vdir.errors import AlreadyExists, ConfigError, InvalidArgument, NotFound, VDirError

DEFAULT_CLOUD = {"file": "local", "memory": "local", "s3": "aws", "az": "azure", "gs": "gcp", "box": "box", "github": "github"}


def ensure_default(path: str | os.PathLike[str] | None = None, catalog: str | None = None) -> tuple[VDir, bool]:
    """``vdir init``: create the config, the catalog and the ``local`` backend where missing.

    The config file is written only after its catalog opened (a catalog that cannot be opened
    or is not a vdir catalog leaves no config behind).  With an existing config, ``catalog``
    must be the one it names: ``init`` never switches a config to another catalog (raises
    ``ConfigError`` saying so).  Only the default data directory is created; the directory of
    an explicit ``catalog`` must exist.  Returns (vdir, created)."""
    p = cfg.config_path(path)
    created = False
    if p.exists():
        conf = cfg.load(p)
        if catalog and catalog != conf.catalog:
            raise ConfigError(f"{p} already names catalog {conf.catalog}; init does not switch catalogs "
                              f"(edit 'catalog:' in it, or use --config NEW-FILE for a second setup)")
        vd = VDir(open_catalog(conf.catalog, create=True), conf)
    else:
        conf = cfg.default_config(p)
        if catalog:
            conf.catalog = catalog
        else:
            os.makedirs(cfg.data_dir(), exist_ok=True)
        vd = VDir(open_catalog(conf.catalog, create=True), conf)
        try:
            cfg.save(conf)
        except BaseException:
            vd.close()
            raise
        created = True
    if conf.default_backend == "local":
        try:
            vd.catalog.get_backend("local")
        except NotFound:
            objects = cfg.data_dir() / "objects"
            objects.mkdir(parents=True, exist_ok=True)
            add_backend(vd, "local", f"file://{objects}", check=False)
            created = True
    return vd, created


def add_backend(
    vd: VDir,
    name: str,
    url: str,
    *,
    region: str | None = None,
    endpoint: str | None = None,
    options: dict[str, Any] | None = None,
    cloud: str | None = None,
    tier: str | None = None,
    cost: float | None = None,
    check: bool = True,
    replace: bool = False,
) -> BackendRecord:
    """Register a backend.  Secret options go to the local config file (0600), never to the
    catalog.  With ``check`` the backend is opened and listed once, so a wrong URL or wrong
    credentials fail here with one line rather than at the first put.  Admin only."""
    vd.require_admin()
    from vdir.backends import Location, open_backend
    from vdir.paths import check_name

    check_name(name)
    if not replace:
        try:
            vd.catalog.get_backend(name)
            raise AlreadyExists(f"backend {name!r} exists (remove it first, or use --replace)")
        except NotFound:
            pass
    url = _normalize_url(url)
    cls = backend_class(url)  # unknown scheme / missing SDK fail here, before anything is stored
    opts = dict(options or {})
    if endpoint:
        if not accepts_option(cls, "endpoint_url"):
            raise InvalidArgument(f"{scheme_of(url)}:// backends take no --endpoint")
        opts["endpoint_url"] = endpoint
    check_backend_root(vd, name, url, opts)
    if region and accepts_option(cls, "region"):
        opts.setdefault("region", region)
    secret = {k: v for k, v in opts.items() if cfg.is_secret_option(k)}
    if secret and vd.config is None:
        raise InvalidArgument(f"secret options {sorted(secret)} need a config file to live in (they never go to the catalog)")
    scheme = scheme_of(url)
    location = Location(cloud=cloud or DEFAULT_CLOUD.get(scheme, scheme), region=region or "", tier=tier or "standard", cost=cost or 0.0)
    if check or not region:
        try:
            opened = open_backend(name, url, opts, location)
            if check:
                opened.list_with_delimiter("")
                probe = getattr(opened, "probe_create_only", None)
                if probe is not None and "create_only" not in opts:
                    # a per-endpoint fact, learnt once and kept with the record
                    opts["create_only"] = bool(probe())
            discovered = opened.location
            opened.close()
        except VDirError as exc:
            raise type(exc)(f"backend {name!r} ({url}) did not answer as expected: {exc}") from exc
        if not region:
            region = discovered.region or ("local" if location.cloud == "local" else "unknown")
    public = {k: v for k, v in opts.items() if not cfg.is_secret_option(k)}
    record = BackendRecord(
        name=name, url=url, options=public, cloud=location.cloud, region=region or "local",
        tier=location.tier, cost=location.cost,
    )
    if secret and vd.config is not None:
        vd.config.secrets[name] = secret
        cfg.save(vd.config)
    vd.catalog.put_backend(record)
    vd.forget_backend(name)
    return record


def remove_backend(vd: VDir, name: str, *, force: bool = False) -> int:
    """Unregister a backend; refuses while replicas live there unless ``force``.  Returns the
    number of replicas that were on it (with ``force``, those catalog records are dropped; the
    objects themselves are left untouched).  Admin only."""
    vd.require_admin()
    vd.backend_record(name)  # NotFound names the known backends
    count = vd.catalog.count_replicas(name)
    if count and not force:
        raise InvalidArgument(f"backend {name!r} still holds {count} replica(s); move them first or use --force")
    if count:
        for entry, _ in list(vd.catalog.iter_replicas(name)):
            for _attempt in range(5):
                fresh = vd.catalog.get(entry.id)
                fresh.replicas = [r for r in fresh.replicas if r.backend != name]
                try:
                    vd.catalog.update(fresh, fresh.version)
                    break
                except VDirError:
                    continue
    vd.catalog.delete_backend(name)
    if vd.config is not None and name in vd.config.secrets:
        del vd.config.secrets[name]
        cfg.save(vd.config)
    vd.forget_backend(name)
    return count


def _normalize_url(url: str) -> str:
    if url.startswith("/"):
        return "file://" + url
    if url.startswith("./") or url.startswith("~") or url == ".":
        return "file://" + os.path.abspath(os.path.expanduser(url))
    return url


SYSTEM_ROOTS = ("/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32", "/media", "/mnt",
                "/opt", "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/usr/local", "/var", "/var/tmp",
                "/Users", "/System", "/Library", "/Applications", "/private")
"""Folders that are never a backend's root themselves (fsck would treat the system as objects)."""


def _real(path: str | Path) -> Path:
    return Path(os.path.realpath(os.path.expanduser(str(path))))


def _within(inner: Path, outer: Path) -> bool:
    """``inner`` is ``outer`` or below it (whole path components)."""
    return inner == outer or outer in inner.parents


def _root_key(url: str, options: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """(store identity, prefix components) of a backend URL; two backends overlap when the
    identities are equal and one prefix starts with the other.  ``file://``: the resolved real
    path; object stores: scheme, endpoint and bucket/container, then the key prefix."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        return ("file",), _real(unquote(parts.path)).parts
    endpoint = str(options.get("endpoint_url") or options.get("account_url") or options.get("account_name") or "")
    endpoint = endpoint.rstrip("/").lower()
    prefix = tuple(p for p in unquote(parts.path).split("/") if p)
    return (parts.scheme, endpoint, parts.netloc), prefix


def _same_store(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    if a[0] != b[0] or (len(a) > 2 and a[2] != b[2]):
        return False
    if a[0] == "az" and (not a[1] or not b[1]):  # account not named (a connection string): assume the same
        return True
    return a[1:] == b[1:]


def check_backend_root(vd: VDir, name: str, url: str, options: dict[str, Any]) -> None:
    """Refuse a backend root that would let vdir treat other things as its objects: a root equal
    to, inside or containing another registered backend's root (``--replace`` of the same name
    may keep its own), vdir's data, config and cache folders or the catalog file, a system folder
    (``/``, ``/etc``, ``/usr``...) or the home folder itself.  Raises ``InvalidArgument`` (one line)."""
    mine = _root_key(url, options)
    if mine is None:
        return
    if mine[0] == ("file",):
        root = Path(*mine[1])
        home = _real(Path.home())
        if str(root) in SYSTEM_ROOTS or root == home:
            raise InvalidArgument(f"backend {name!r}: {root} is a system or home folder, not a place for objects; "
                                  "use a folder of its own (e.g. file://{root}/vdir-objects)".replace("{root}", str(root).rstrip("/")))
        owned: list[tuple[str, Path]] = [("vdir data folder", _real(cfg.data_dir())), ("vdir config folder", _real(cfg.config_dir())),
                                         ("vdir cache folder", _real(cfg.cache_dir()))]
        if vd.config is not None:
            owned.append(("vdir config file's folder", _real(vd.config.path).parent))
        catalog_path = getattr(vd.catalog, "path", None)
        if isinstance(catalog_path, str) and catalog_path.startswith("/"):
            owned.append(("catalog's folder", _real(catalog_path).parent))
        default_objects = _real(cfg.data_dir() / "objects")
        for what, folder in owned:
            if _within(folder, root):
                raise InvalidArgument(f"backend {name!r}: {root} is or contains the {what} {folder}; "
                                      "a backend needs a folder of its own")
            # the catalog's and a VDIR_CONFIG file's folder may be any folder: only covering them is refused
            inside_ok = what in ("catalog's folder", "vdir config file's folder") or root == default_objects
            if _within(root, folder) and not inside_ok:
                raise InvalidArgument(f"backend {name!r}: {root} is inside the {what} {folder}; "
                                      "a backend needs a folder of its own")
    for other in vd.catalog.list_backends():
        if other.name == name:
            continue  # --replace keeps or moves its own root
        theirs = _root_key(other.url, other.options)
        if theirs is None or not _same_store(mine[0], theirs[0]):
            continue
        a, b = mine[1], theirs[1]
        if a[:len(b)] == b or b[:len(a)] == a:
            how = "is the same as" if a == b else "is inside" if len(a) > len(b) else "contains"
            raise InvalidArgument(f"backend {name!r}: {url} {how} the root of backend {other.name!r} ({other.url}); "
                                  "backends may not overlap (fsck and placement would see each other's objects)")
