"""Bounded exponential backoff with jitter, for operations whose errors say they are retryable.

Backends whose SDK has a good retry policy of its own configure it (bounded) instead; this is
for the rest, and for the placement daemon.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from vdir.errors import is_retryable

T = TypeVar("T")
log = logging.getLogger("vdir.retry")


def backoff_delay(attempt: int, base: float = 0.2, cap: float = 10.0) -> float:
    """Delay before retry number ``attempt`` (1-based): full jitter over base * 2**(attempt-1)."""
    return random.uniform(0, min(cap, base * (2 ** (attempt - 1))))


def retrying(fn: Callable[[], T], *, attempts: int = 4, base: float = 0.2, cap: float = 5.0, what: str = "") -> T:
    """Call ``fn`` until it succeeds, a non-retryable error is raised, or ``attempts`` run out
    (then the last error is raised as is)."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as exc:
            if attempt == attempts or not is_retryable(exc):
                raise
            delay = backoff_delay(attempt, base, cap)
            log.debug("retrying %s after %s (attempt %d, %.2fs)", what or fn, exc, attempt, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")
