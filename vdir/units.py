"""Sizes as people write them, in one place: ``parse_size("10G")`` for every front end, option
and policy (binary units, as ls -h, du -h and rclone print them)."""

from __future__ import annotations

import re

from vdir.errors import InvalidArgument, VDirError

_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgtpc]?)(?:i?b)?\s*", re.IGNORECASE)
_POWER = {"": 0, "c": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}


def parse_size(value: int | str, *, error: type[VDirError] = InvalidArgument, what: str = "") -> int:
    """``8388608``, ``"512k"``, ``"8M"``, ``"8MiB"``, ``"10GB"``, ``"1.5g"``, ``"100c"`` -> bytes.

    k, M, G, T, P are powers of 1024 (with or without ``B``/``iB``; any case); ``c`` or no suffix
    is bytes.  Anything else raises ``error`` naming ``what`` when given."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    m = _SIZE.fullmatch(str(value))
    if m is None:
        raise error(f"{what + '=' if what else ''}{value!r} is not a size (like 512K, 8MiB, 10G)")
    return int(float(m.group(1)) * 1024 ** _POWER[m.group(2).lower()])
