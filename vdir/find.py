"""Finding paths in the virtual directory: globs and find(1)-style walks, for every front end
(ls, rm, cp, find and tree in the CLI, fsspec, Python).  :class:`~vdir.core.VDir` exposes them as
``vd.glob`` and ``vd.find``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from vdir import paths
from vdir.catalog.base import BLK, CHR, DIR, FIFO, FILE, SOCK, SYMLINK, Entry
from vdir.errors import InvalidArgument, NotADirectory, NotFound
from vdir.units import parse_size

if TYPE_CHECKING:
    from vdir.core import Info, VDir


def glob(vd: VDir, pattern: str) -> list[str]:
    """The paths matching ``pattern``, sorted (byte order).  Within a component ``*`` matches
    any run of characters, ``?`` one, ``[...]`` a set (``[!...]`` negated); a component that
    is ``**`` matches any number of directories (zero or more), and as the last component
    everything below.  A leading ``.`` is matched like any character.

    **Literal names stay reachable**: a pattern that exists as written is that one path (as
    fsspec and gsutil do), and ``[*]``, ``[?]``, ``[[]`` match the characters themselves.
    Only what the pattern needs is read: literal components are looked up, a wildcard
    component lists one directory, only ``**`` walks a subtree.  No match: ``[]``.
    Raises ``InvalidPath`` for a malformed pattern."""
    norm = paths.normalize(pattern)
    try:
        vd.catalog.resolve(norm)
        return [norm]  # exists as written: taken literally
    except (NotFound, NotADirectory):
        if not paths.has_magic(norm):
            return []
    found: set[str] = set()
    parts = paths.components(norm)
    _glob_from(vd, "/", vd.catalog.root(), parts, found)
    return sorted(found, key=lambda p: p.encode("utf-8", "surrogateescape"))


def _glob_from(vd: VDir, base: str, entry: Entry, parts: list[str], found: set[str]) -> None:
    if not parts:
        found.add(base)
        return
    if entry.type != DIR:
        return
    head, rest = parts[0], parts[1:]
    if head == "**":
        if not rest:  # everything below
            for rel, _child in vd._walk(entry.id, base):
                found.add(paths.join(base, rel))
            return
        _glob_from(vd, base, entry, rest, found)  # zero directories
        for rel, child in vd._walk(entry.id, base):
            if child.type == DIR:
                _glob_from(vd, paths.join(base, rel), child, rest, found)
        return
    if not paths.has_magic(head):
        named = vd.catalog.lookup(entry.id, head)
        if named is not None:
            _glob_from(vd, paths.join(base, head), named, rest, found)
        return
    matcher = paths.name_matcher(head.replace("**", "*"))
    for child in vd._children(entry.id, base):
        if matcher.fullmatch(child.name):
            _glob_from(vd, paths.join(base, child.name), child, rest, found)


def find(vd: VDir, path: str = "/", *, name: str | None = None, size: str | int | None = None,
         newer: float | str | None = None, type: str | None = None, maxdepth: int | None = None,
         ) -> Iterator[Info]:
    """Walk ``path`` (itself first, then below it, depth first, by name), yielding what
    passes every filter given, like find(1):

    - ``name``: a glob the last component must match (see :meth:`glob`);
    - ``size``: ``"+100M"`` more than, ``"-1k"`` less than, ``"4k"`` exactly that many bytes
      (suffixes k, M, G, T are binary: KiB, MiB...; an int means exactly);
    - ``newer``: modified after this time (seconds since the epoch) or, for a ``str``, after
      the virtual path it names was modified;
    - ``type``: ``"f"``/``"file"``, ``"d"``/``"dir"``, ``"l"``/``"symlink"``, and as find(1) the
      special files ``"p"``, ``"c"``, ``"b"``, ``"s"``;
    - ``maxdepth``: how far below ``path`` to go (0: ``path`` alone); a walk never reads
      directories below this depth.

    Raises ``NotFound`` for a missing ``path`` (or ``newer`` path), ``InvalidArgument`` for a
    malformed filter."""
    from vdir.core import Info  # core imports this module

    norm, top = vd._resolve(path)
    wanted = _find_type(type)
    matcher = paths.name_matcher(name) if name is not None else None
    size_test = _size_test(size)
    since = newer if not isinstance(newer, str) else vd.stat(newer).mtime

    def keep(entry: Entry) -> bool:
        return ((wanted is None or entry.type == wanted)
                and (matcher is None or bool(matcher.fullmatch(entry.name or "/")))
                and (size_test is None or size_test(entry.size))
                and (since is None or entry.mtime > since))

    if keep(top):
        yield Info.of(norm, top)
    if top.type != DIR or maxdepth == 0:
        return
    stack: list[tuple[str, int, Iterator[Entry]]] = [(norm, 1, vd._children(top.id, norm))]
    while stack:
        base, depth, children = stack[-1]
        child = next(children, None)
        if child is None:
            stack.pop()
            continue
        cpath = paths.join(base, child.name)
        if keep(child):
            yield Info.of(cpath, child)
        if child.type == DIR and (maxdepth is None or depth < maxdepth):
            stack.append((cpath, depth + 1, vd._children(child.id, cpath)))


def _size_test(size: str | int | None) -> Callable[[int], bool] | None:
    if size is None:
        return None
    if isinstance(size, int):
        return lambda n: n == size
    text = size.strip()
    sign = text[:1] if text[:1] in "+-" else ""
    limit = parse_size(text[1:] if sign else text)
    if sign == "+":
        return lambda n: n > limit
    if sign == "-":
        return lambda n: n < limit
    return lambda n: n == limit


def _find_type(kind: str | None) -> str | None:
    if kind is None:
        return None
    types = {"f": FILE, "file": FILE, "d": DIR, "dir": DIR, "l": SYMLINK, "symlink": SYMLINK,
             "p": FIFO, FIFO: FIFO, "c": CHR, CHR: CHR, "b": BLK, BLK: BLK, "s": SOCK, SOCK: SOCK}
    if kind not in types:
        raise InvalidArgument(f"type {kind!r} is not one of f (file), d (dir), l (symlink), p (fifo), c (chr), "
                              "b (blk), s (sock)")
    return types[kind]
