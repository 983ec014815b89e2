"""Virtual paths: one normal form, checked once, used by every layer.

A virtual path is absolute, ``/``-separated, with no empty, ``.`` or ``..`` components, no NUL,
valid UTF-8, each name at most :data:`MAX_NAME_BYTES` bytes.  :func:`normalize` is the only
place these rules live; the core calls it on every path a user hands in, so front ends and the
catalog can trust what they get.

There is no limit on a whole path: the catalog stores names, not paths (a path of depth *d* is
*d* names), and object keys longer than a store allows are shortened by :mod:`vdir.objects`.
Linux's ``PATH_MAX`` (4,096 bytes) limits one syscall argument, not where a file may be: a
program that walks with relative paths (``openat``, ``chdir``) goes deeper on a mount too.
"""

from __future__ import annotations

import re

from vdir.errors import InvalidPath, NameTooLong

MAX_NAME_BYTES = 255


def check_name(name: str) -> str:
    """Validate a single path component and return it unchanged."""
    if name == "":
        raise InvalidPath("empty name")
    if name in (".", ".."):
        raise InvalidPath(f"name {name!r} is not allowed (no path traversal)")
    if "/" in name:
        raise InvalidPath(f"name {name!r} contains '/'")
    if "\x00" in name:
        raise InvalidPath(f"name {name!r} contains a NUL byte")
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidPath(f"name {name!r} is not valid UTF-8") from None
    if len(encoded) > MAX_NAME_BYTES:
        raise NameTooLong(
            f"name is {len(encoded)} bytes long, the limit is {MAX_NAME_BYTES}: {name[:40]!r}..."
        )
    return name


def fit(name: str, limit: int) -> str:
    """``name`` cut to at most ``limit`` UTF-8 bytes, at a character boundary: for names made
    from a user's name plus a suffix (temp files, conflict copies), which must stay within
    :data:`MAX_NAME_BYTES` however long the user's name is."""
    data = name.encode("utf-8", "surrogateescape")
    if len(data) <= limit:
        return name
    return data[:limit].decode("utf-8", "ignore")


def normalize(path: str) -> str:
    """Return the normal form of a virtual path, or raise :class:`InvalidPath`.

    Leading ``/`` is optional (``a/b`` means ``/a/b``); a single trailing ``/`` is accepted.
    Empty components (``a//b``), ``.`` and ``..`` are rejected rather than silently folded,
    so a typo or a traversal attempt never lands somewhere unexpected.
    """
    if not isinstance(path, str):
        raise InvalidPath(f"path must be a string, not {type(path).__name__}")
    if path == "":
        raise InvalidPath("empty path")
    if "\x00" in path:
        raise InvalidPath(f"path {path!r} contains a NUL byte")
    body = path[1:] if path.startswith("/") else path
    if body.endswith("/"):
        body = body[:-1]
    if body == "":
        return "/"
    parts = body.split("/")
    for part in parts:
        if part == "":
            raise InvalidPath(f"path {path!r} has an empty component")
        try:
            check_name(part)
        except InvalidPath as exc:
            raise type(exc)(f"path {path!r}: {exc.message}", path=path) from None
    return "/" + "/".join(parts)


def split(path: str) -> tuple[str, str]:
    """Split a normal path into (parent, name); the root's parent is itself with name ''."""
    if path == "/":
        return "/", ""
    parent, _, name = path.rpartition("/")
    return parent or "/", name


def join(parent: str, name: str) -> str:
    return (parent.rstrip("/") + "/" + name) if name else parent


def components(path: str) -> list[str]:
    return [] if path == "/" else path[1:].split("/")


def is_within(path: str, ancestor: str) -> bool:
    """True when ``path`` is ``ancestor`` or lies below it."""
    return ancestor == "/" or path == ancestor or path.startswith(ancestor.rstrip("/") + "/")


_NAMED_ESCAPES = {"\a": "\\a", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\v": "\\v", "\f": "\\f", "\r": "\\r", "\\": "\\\\"}
# C0, DEL and C1 controls; bidi controls, line/paragraph separators and BOM (they would mislead a
# terminal or a reader); lone surrogates (bytes that were not UTF-8, from os.fsdecode)
_UNSAFE = "\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff\ud800-\udfff"
_UNSAFE_RE = re.compile(f"[{_UNSAFE}]")
_UNSAFE_OR_BACKSLASH_RE = re.compile(f"[{_UNSAFE}\\\\]")


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    code = ord(ch)
    if ch in _NAMED_ESCAPES:
        return _NAMED_ESCAPES[ch]
    if code < 0xA0:
        return f"\\x{code:02x}"
    if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's surrogateescape: show the original byte
        return f"\\x{code - 0xDC00:02x}"
    return f"\\u{code:04x}"


def printable(text: str, *, backslash: bool = True) -> str:
    """``text`` safe to show on a terminal: control characters (C0, DEL, C1), bidi controls and
    undecodable bytes become backslash escapes (``\\n``, ``\\x1b``, ``\\u202e``), as ``ls -b``
    does, so a name can neither move the cursor, recolour the screen nor fake a second line.
    With ``backslash`` (names) a backslash is shown as ``\\\\``, so every shown name maps back
    to one real name; messages that merely quote names use ``backslash=False``.  Text with
    nothing to escape is returned as it is."""
    pattern = _UNSAFE_OR_BACKSLASH_RE if backslash else _UNSAFE_RE
    return pattern.sub(_escape, text) if pattern.search(text) else text


# -- globs --------------------------------------------------------------------------------------
_MAGIC_RE = re.compile(r"[*?\[]")


def has_magic(pattern: str) -> bool:
    """True when ``pattern`` holds a glob character (``*``, ``?`` or ``[``)."""
    return _MAGIC_RE.search(pattern) is not None


def name_matcher(pattern: str) -> re.Pattern[str]:
    """One path component's glob as a compiled regex: ``*`` any run of characters, ``?`` one,
    ``[...]`` a set (``[!...]`` negated); case-sensitive.  ``[*]`` stands for a
    literal ``*`` (likewise ``[?]``, ``[[]``).  A leading ``.`` is matched like any character
    (as fsspec and gsutil do, unlike a shell)."""
    import fnmatch

    return re.compile(fnmatch.translate(pattern), re.S)
