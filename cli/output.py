"""Printing for the CLI: data on stdout, errors on stderr, progress bars only on a terminal and
only once a transfer has run for more than a second.

Nothing a user or a catalog named reaches the terminal raw: lines, errors and log records pass
through :func:`vdir.paths.printable` (control characters and escape sequences become backslash
escapes); commands escape the names they list themselves, so a newline in a name shows as
``\n`` rather than as a second entry.  ``--json`` output stays exact (JSON escapes anyway).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from vdir.paths import printable

_JSON_UNSAFE = re.compile("[\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]")
"""Characters json.dumps(ensure_ascii=False) leaves raw that a terminal would act on."""


def safe_lines(text: str) -> str:
    """Each line of ``text`` made printable (its own line breaks kept)."""
    return "\n".join(printable(line, backslash=False) for line in text.split("\n"))


class SafeFormatter(logging.Formatter):
    """Log records (and their tracebacks) with control characters escaped."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        return printable(super().formatMessage(record), backslash=False)  # one record, one line

    def formatException(self, ei: Any) -> str:  # noqa: N802
        return safe_lines(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:  # noqa: N802
        return safe_lines(super().formatStack(stack_info))


def fmt_size(n: int, exact: bool = False) -> str:
    if exact:
        return str(n)
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def progress_columns() -> list[Any]:
    """The progress bar's columns: label, bar, done/total and speed, all in binary units
    (KiB, MiB, GiB: the unit of every size vdir prints)."""
    from rich.progress import BarColumn, DownloadColumn, ProgressColumn, Task
    from rich.text import Text

    class BinarySpeedColumn(ProgressColumn):
        def render(self, task: Task) -> Text:
            speed = task.finished_speed or task.speed
            return Text("?" if speed is None else f"{fmt_size(int(speed))}/s", style="progress.data.speed")

    return ["[progress.description]{task.description}", BarColumn(), DownloadColumn(binary_units=True),
            BinarySpeedColumn()]


def fmt_time(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


class Output:
    def line(self, text: str) -> None:
        print(safe_lines(text), flush=False)

    def say(self, text: str) -> None:
        print(safe_lines(text))

    def json(self, data: Any) -> None:
        text = json.dumps(data, indent=2, ensure_ascii=False, default=lambda o: o.decode("utf-8", "replace") if isinstance(o, bytes) else str(o))
        print(_JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text))

    def error(self, text: str) -> None:
        """One line on stderr: a newline in a name shows as ``\\n``, never as a second line."""
        sys.stdout.flush()
        print(f"vdir: error: {printable(text, backslash=False)}", file=sys.stderr)

    @contextlib.contextmanager
    def progress(self, total: int, label: str) -> Iterator[Callable[[int], None]]:
        """Yield a callback taking byte counts; shows a rich bar after one second on a tty."""
        start = time.monotonic()
        lock = threading.Lock()
        done = [0]
        bar: dict[str, Any] = {}

        def tick(n: int) -> None:
            with lock:
                done[0] += n
                if not bar and sys.stderr.isatty() and time.monotonic() - start > 1.0:
                    from rich.progress import Progress

                    p = Progress(*progress_columns(), transient=True)
                    p.start()
                    bar["p"], bar["t"] = p, p.add_task(label, total=total or None)
                if bar:
                    bar["p"].update(bar["t"], completed=done[0])

        try:
            yield tick
        finally:
            if bar:
                bar["p"].stop()
