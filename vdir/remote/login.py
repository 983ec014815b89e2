"""Where remote mode finds its server: ``vdir login`` stores ``{url, token, user}`` in
``$XDG_CONFIG_HOME/vdir/remote.yaml`` (created with mode 0600, written atomically: a reader
never sees half a file, and the token is never readable by others, not even for a moment);
``VDIR_REMOTE=URL`` with ``VDIR_TOKEN=SECRET`` in the environment wins over the file."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from vdir.config import config_dir
from vdir.errors import ConfigError, InvalidArgument


@dataclass(frozen=True)
class Login:
    url: str
    token: str
    user: str = ""
    source: str = ""
    """Where it came from: the file's path, or ``"environment"``."""


def login_path() -> Path:
    return config_dir() / "remote.yaml"


def normalize_url(url: str) -> str:
    """``http(s)://host[:port][/prefix]`` without a trailing slash; a bare ``host:port`` gets http://."""
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidArgument(f"{url!r} is not a server URL (http://host:port or https://host)")
    if parts.query or parts.fragment:
        raise InvalidArgument(f"{url!r}: a server URL has no query or fragment")
    return url.rstrip("/")


def current() -> Login | None:
    """The login remote mode uses, or None (standalone)."""
    env_url = os.environ.get("VDIR_REMOTE")
    if env_url:
        token = os.environ.get("VDIR_TOKEN")
        if not token:
            raise ConfigError("VDIR_REMOTE is set but VDIR_TOKEN is not: set both, or neither")
        return Login(normalize_url(env_url), token, os.environ.get("VDIR_USER", ""), "environment")
    path = login_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the login: {exc.strerror}") from None
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc}); run 'vdir logout' and log in again") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("url"), str) or not isinstance(doc.get("token"), str):
        raise ConfigError(f"{path}: needs 'url' and 'token'; run 'vdir logout' and log in again")
    return Login(doc["url"], doc["token"], str(doc.get("user") or ""), str(path))


def save(url: str, token: str, user: str) -> Path:
    """Write the login file: a new file of mode 0600 beside it, then renamed over it."""
    path = login_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yaml.safe_dump({"url": url, "token": token, "user": user}, f, sort_keys=False)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)  # whatever the umask did
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return path


def remove() -> bool:
    """Forget the stored login; False when there was none."""
    try:
        login_path().unlink()
        return True
    except FileNotFoundError:
        return False
