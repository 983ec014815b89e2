"""Configuration: one small YAML file per user, found the XDG way.

``$VDIR_CONFIG`` or ``$XDG_CONFIG_HOME/vdir/config.yaml`` (default ``~/.config/vdir/config.yaml``)::

    catalog: sqlite:////home/me/.local/share/vdir/catalog.db   # or mongodb://host/vdir
    default_backend: local
    secrets:            # per backend, never copied into the catalog; the file is kept 0600
      azure1: {connection_string: "..."}

Backends themselves (name, URL, options, location) live in the catalog, so every host that
shares a catalog sees the same list.  Secrets never do: they stay here, in env vars, or in
files named by options such as ``token_file``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vdir.errors import ConfigError

SECRET_WORDS = ("secret", "password", "token", "key", "connection_string", "credential", "sas")
"""Option names containing one of these are secrets (except ``*_file`` / ``*_env`` pointers)."""


def is_secret_option(name: str) -> bool:
    low = name.lower()
    if low.endswith("_file") or low.endswith("_env") or low.endswith("_path") or low in ("key_name", "keyname"):
        return False
    return any(word in low for word in SECRET_WORDS)


def config_dir() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "vdir"


def data_dir() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "vdir"


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vdir"


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("VDIR_CONFIG")
    return Path(env).expanduser() if env else config_dir() / "config.yaml"


@dataclass
class Config:
    path: Path
    catalog: str
    default_backend: str | None = None
    secrets: dict[str, dict[str, Any]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    """Other sections (mount, placement, compute...) as read, kept on save."""

    def section(self, name: str) -> dict[str, Any]:
        value = self.extra.get(name) or {}
        if not isinstance(value, dict):
            raise ConfigError(f"{self.path}: section {name!r} must be a mapping")
        return value

    def as_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"catalog": self.catalog}
        if self.default_backend:
            doc["default_backend"] = self.default_backend
        doc.update(self.extra)
        if self.secrets:
            doc["secrets"] = self.secrets
        return doc


def load(path: str | os.PathLike[str] | None = None) -> Config:
    """Read the config; ``ConfigError`` (one line) when missing or malformed."""
    p = config_path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"no configuration at {p}; run 'vdir init' first (or set VDIR_CONFIG)") from None
    except OSError as exc:
        raise ConfigError(f"cannot read configuration {p}: {exc.strerror}") from exc
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p}{where}: not valid YAML") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("catalog"), str):
        raise ConfigError(f"{p}: needs a 'catalog:' URL (sqlite:///path or mongodb://...)")
    secrets = doc.pop("secrets", None) or {}
    if not isinstance(secrets, dict):
        raise ConfigError(f"{p}: 'secrets' must be a mapping of backend name to options")
    catalog = doc.pop("catalog")
    default_backend = doc.pop("default_backend", None)
    return Config(path=p, catalog=catalog, default_backend=default_backend, secrets=secrets, extra=doc)


def save(config: Config) -> None:
    """Write atomically (temp file + rename), mode 0600 because it may hold secrets."""
    config.path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".config-", dir=config.path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            yaml.safe_dump(config.as_dict(), out, sort_keys=False, allow_unicode=True)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, config.path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def default_config(path: Path) -> Config:
    data = data_dir()
    return Config(path=path, catalog=f"sqlite:///{data / 'catalog.db'}", default_backend="local")
