"""Include/exclude filters with rclone's semantics, for put, get, rm, cp and sync.

A filter is an ordered list of rules, each ``+ GLOB`` (include) or ``- GLOB`` (exclude),
matched against a path *relative to the root of the transfer* (``sub/a.txt``, no leading
``/``).  The first rule that matches decides; a path no rule matches is included, unless
there are ``include=`` rules (``--include``), which end the list with an implicit "exclude
everything else", as rclone's ``--include`` does (``+`` rules in ``rules=`` do not).

Glob syntax (rclone's):

* ``*`` matches any run of characters within one path component, ``?`` one character,
  ``[abc]``/``[!abc]`` a class, ``{a,b}`` alternatives, ``\\*`` a literal ``*``;
* ``**`` matches anything, ``/`` included (``dir/**`` is everything below ``dir``);
* a pattern starting with ``/`` is anchored at the root of the transfer; any other pattern
  matches the end of the path (``*.tmp`` matches ``a.tmp`` and ``x/y/a.tmp``);
* a pattern ending with ``/`` matches directories only.

Directories: a directory is left out (and nothing below it is looked at, or matches) when the
first rule matching ``dir/`` is an exclude rule ending in ``/`` or ``**``.  Each include rule
also includes the directories its matches lie in (``+ a/b/*.txt`` includes ``a/`` and
``a/b/``), so an include is not cut off by a later directory exclude — as in rclone.

``Filter.from_rules(include=[...], exclude=[...])`` puts the includes first, then the
excludes (rclone's order for ``--include`` and ``--exclude``); ``rules=["- *.tmp", "+ *"]``
gives any order explicitly (rclone's ``--filter``).  Bad patterns raise ``InvalidArgument``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from vdir.errors import InvalidArgument


@dataclass(frozen=True)
class Rule:
    """One rule: ``include`` or exclude, its glob, and the regex it became."""

    include: bool
    glob: str
    regex: re.Pattern[str]
    dirs_only: bool = False

    def __str__(self) -> str:
        return f"{'+' if self.include else '-'} {self.glob}"


def glob_to_regex(glob: str) -> re.Pattern[str]:
    """rclone's glob syntax (see the module docstring) as a compiled regex over relative paths
    (a directory is matched with a trailing ``/``)."""
    if not glob or glob == "/":
        raise InvalidArgument(f"empty filter pattern {glob!r}")
    out = ["^" if glob.startswith("/") else "(?:^|/)"]
    i = 1 if glob.startswith("/") else 0
    depth = 0  # inside {a,b}
    n = len(glob)
    while i < n:
        c = glob[i]
        if c == "\\":
            if i + 1 >= n:
                raise InvalidArgument(f"filter pattern {glob!r} ends with a lone backslash")
            out.append(re.escape(glob[i + 1]))
            i += 2
            continue
        if c == "*":
            if i + 1 < n and glob[i + 1] == "*":
                out.append(".*")
                i += 2
            else:
                out.append("[^/]*")
                i += 1
            continue
        if c == "?":
            out.append("[^/]")
        elif c == "[":
            end = glob.find("]", i + 2 if i + 1 < n and glob[i + 1] in "!^" else i + 1)
            if end < 0:
                raise InvalidArgument(f"filter pattern {glob!r} has an unclosed '['")
            body = glob[i + 1 : end]
            if body[:1] in ("!", "^"):
                body = "^" + body[1:].replace("\\", "\\\\")
            else:
                body = body.replace("\\", "\\\\")
            out.append(f"[{body}]")
            i = end + 1
            continue
        elif c == "{":
            depth += 1
            out.append("(?:")
        elif c == "}" and depth:
            depth -= 1
            out.append(")")
        elif c == "," and depth:
            out.append("|")
        else:
            out.append(re.escape(c))
        i += 1
    if depth:
        raise InvalidArgument(f"filter pattern {glob!r} has an unclosed '{{'")
    out.append("$")
    try:
        return re.compile("".join(out))
    except re.error as exc:
        raise InvalidArgument(f"bad filter pattern {glob!r}: {exc}") from None


def _parent_globs(glob: str) -> list[str]:
    """The directories an include glob's matches lie in, as directory globs (``a/b/*.txt`` ->
    ``a/``, ``a/b/``; a ``**`` component includes every directory below it)."""
    anchored = glob.startswith("/")
    parts = glob.strip("/").split("/")
    out: list[str] = []
    for k in range(1, len(parts)):
        prefix = "/".join(parts[:k])
        if "**" in parts[k - 1]:
            out.append(("/" if anchored else "") + prefix + "/")
            break
        out.append(("/" if anchored else "") + prefix + "/")
    if "**" in parts[-1] and len(parts) >= 1:
        out.append(("/" if anchored else "") + "/".join(parts) + "/")
    return out


@dataclass
class Filter:
    """Ordered include/exclude rules (see the module docstring).  Thread-safe."""

    rules: list[Rule] = field(default_factory=list)
    dir_rules: list[Rule] = field(default_factory=list)
    implicit_exclude: bool = False
    _dir_cache: dict[str, bool] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def from_rules(cls, include: Iterable[str] = (), exclude: Iterable[str] = (), rules: Iterable[str] = ()) -> Filter:
        """Includes first, then excludes, then the ordered ``rules`` (``"+ GLOB"``/``"- GLOB"``);
        with any include, everything no rule matches is excluded."""
        f = cls()
        for g in include:
            f.add(True, g)
            f.implicit_exclude = True
        for g in exclude:
            f.add(False, g)
        for text in rules:
            sign, _, g = text.partition(" ")
            if sign not in ("+", "-") or not g.strip():
                raise InvalidArgument(f"filter rule {text!r} is not '+ PATTERN' or '- PATTERN'")
            f.add(sign == "+", g.strip())
        return f

    def add(self, include: bool, glob: str) -> None:
        """Append one rule (and, for an include, the directory rules for its parents)."""
        rule = Rule(include, glob, glob_to_regex(glob), dirs_only=glob.endswith("/"))
        self.rules.append(rule)
        if include:
            for parent in _parent_globs(glob):
                self.dir_rules.append(Rule(True, parent, glob_to_regex(parent), dirs_only=True))
        if glob.endswith("/") or glob.endswith("**") or include:
            self.dir_rules.append(rule)
        self._dir_cache.clear()

    @property
    def empty(self) -> bool:
        return not self.rules

    def _dir_included(self, rel: str) -> bool:
        """Whether the directory ``rel`` (not its ancestors) is traversed."""
        probe = rel + "/"
        for r in self.dir_rules:
            if r.regex.search(probe):
                return r.include or not (r.glob.endswith("/") or r.glob.endswith("**"))
        return True

    def dir_included(self, rel: str) -> bool:
        """Whether the directory ``rel`` and every directory above it are traversed (cached)."""
        rel = rel.strip("/")
        if not rel:
            return True
        with self._lock:
            known = self._dir_cache.get(rel)
        if known is not None:
            return known
        parent = rel.rpartition("/")[0]
        result = (not parent or self.dir_included(parent)) and self._dir_included(rel)
        with self._lock:
            self._dir_cache[rel] = result
        return result

    def matches(self, relpath: str, is_dir: bool) -> bool:
        """Whether ``relpath`` (relative to the transfer's root, ``/``-separated) is taken.

        A directory: whether it is traversed.  A file: no directory above it is left out, and
        the first rule matching it includes it (or none matches and there is no include rule)."""
        rel = relpath.strip("/")
        if not self.rules:
            return True
        if is_dir:
            return self.dir_included(rel)
        parent = rel.rpartition("/")[0]
        if parent and not self.dir_included(parent):
            return False
        for r in self.rules:
            if r.dirs_only:
                continue
            if r.regex.search(rel):
                return r.include
        return not self.implicit_exclude

    def __str__(self) -> str:
        return "\n".join(str(r) for r in self.rules) + ("\n- **" if self.implicit_exclude else "")


def allows(flt: Filter | None, relpath: str, is_dir: bool) -> bool:
    """``flt.matches`` where ``None`` (no filter) takes everything."""
    return flt is None or flt.matches(relpath, is_dir)
