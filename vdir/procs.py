"""Whether a process (or process group) still runs: the one check the job records, the mount's
unmount wait and the local compute provider use (Linux ``/proc`` where it exists, else
``kill(pid, 0)``)."""

from __future__ import annotations

import os
from pathlib import Path


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw.rpartition(")")[2].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def alive(pid: int, ticks: int | None = None) -> bool:
    """True when ``pid`` still runs (a zombie does not) and, with ``ticks`` (from
    :func:`start_ticks`), is the process that was started then, not a later one given its pid."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return _signal_reaches(os.kill, pid)
    after = raw.rpartition(")")[2].split()
    if not after or after[0] in ("Z", "X"):
        return False
    return ticks is None or start_ticks(pid) == ticks


def group_alive(pgid: int) -> bool:
    """True while any process of the group ``pgid`` exists."""
    return _signal_reaches(os.killpg, pgid)


def _signal_reaches(kill: object, target: int) -> bool:
    try:
        kill(target, 0)  # type: ignore[operator]
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
