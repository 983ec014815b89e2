"""Backend registry: URL scheme -> module, imported on first use.

Each cloud SDK is imported only inside its own module, and only when a backend of that kind is
opened; a missing SDK becomes a one-line :class:`~vdir.errors.MissingDependency` with the pip
command that installs it.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any
from urllib.parse import urlsplit

from vdir.backends.base import (
    Backend,
    ListResult,
    Location,
    ObjectMeta,
    PutMode,
    TempObject,
    Temporaries,
    copy_object,
)
from vdir.errors import ConfigError, MissingDependency

# scheme -> (module, class name, pip extra)
REGISTRY: dict[str, tuple[str, str, str]] = {
    "memory": ("vdir.backends.memory", "MemoryBackend", ""),
    "file": ("vdir.backends.local", "LocalBackend", ""),
    "s3": ("vdir.backends.s3", "S3Backend", "s3"),
    "az": ("vdir.backends.azure", "AzureBackend", "azure"),
    "gs": ("vdir.backends.gcs", "GCSBackend", "gcs"),
    "box": ("vdir.backends.box", "BoxBackend", "box"),
    "github": ("vdir.backends.github", "GitHubBackend", "github"),
}

# which top-level packages each extra provides; a missing one means the extra is missing
_EXTRA_MODULES = {"s3": "boto3", "azure": "azure", "gcs": "google", "box": "box_sdk_gen", "github": "github"}


def scheme_of(url: str) -> str:
    if url.startswith("/") or url.startswith("./") or url.startswith("~"):
        return "file"
    scheme = urlsplit(url).scheme
    if not scheme:
        raise ConfigError(f"backend URL {url!r} has no scheme (try file:///path, s3://bucket/prefix, ...)")
    return scheme


def backend_class(url: str) -> type[Backend]:
    scheme = scheme_of(url)
    if scheme not in REGISTRY:
        known = ", ".join(sorted(REGISTRY))
        raise ConfigError(f"unknown backend scheme {scheme!r} in {url!r}; known schemes: {known}")
    module_name, class_name, extra = REGISTRY[scheme]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = exc.name or ""
        if extra and (missing.split(".")[0] == _EXTRA_MODULES.get(extra) or missing.startswith(module_name) is False):
            raise MissingDependency(
                f"the {scheme}:// backend needs an optional package ({missing or exc}); "
                f"install it with: pip install 'vdir[{extra}]'"
            ) from exc
        raise
    cls: type[Backend] = getattr(module, class_name)
    return cls


def accepts_option(cls: type[Backend], key: str) -> bool:
    return key in inspect.signature(cls.__init__).parameters


def coerce_options(cls: type[Backend], options: dict[str, Any]) -> dict[str, Any]:
    """Options typed as text (``--option part_size=5242880``, config files) become the int,
    float or bool the backend's constructor declares; a bad value is a one-line error."""
    params = inspect.signature(cls.__init__).parameters
    out: dict[str, Any] = {}
    for key, value in options.items():
        param = params.get(key)
        if param is None:
            if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
                known = ", ".join(k for k in params if k not in ("self", "name", "url", "location"))
                raise ConfigError(f"{cls.scheme}:// backends take no option {key!r} (known: {known})")
            out[key] = value
            continue
        annotation = str(param.annotation)
        if isinstance(value, str) and "str" not in annotation:
            try:
                if annotation.startswith("bool"):
                    if value.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                        raise ValueError(value)
                    value = value.lower() in ("1", "true", "yes", "on")
                elif annotation.startswith("int"):
                    value = int(value)
                elif annotation.startswith("float"):
                    value = float(value)
            except ValueError:
                raise ConfigError(f"option {key}={value!r}: expected {annotation.split(' ')[0]}") from None
        out[key] = value
    return out


def open_backend(name: str, url: str, options: dict[str, Any] | None = None, location: Location | None = None) -> Backend:
    """Instantiate the backend for ``url``.  ``options`` are passed as keyword arguments."""
    cls = backend_class(url)
    return cls(name, url, location=location, **coerce_options(cls, options or {}))  # type: ignore[call-arg]


__all__ = [
    "Backend",
    "ListResult",
    "Location",
    "ObjectMeta",
    "PutMode",
    "REGISTRY",
    "TempObject",
    "Temporaries",
    "backend_class",
    "copy_object",
    "open_backend",
    "scheme_of",
]
