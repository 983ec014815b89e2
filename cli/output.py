"""Printing for the CLI: data on stdout, errors on stderr, progress bars only on a terminal and
only once a transfer has run for more than a second."""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any


def fmt_size(n: int, exact: bool = False) -> str:
    if exact:
        return str(n)
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def fmt_time(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


class Output:
    def line(self, text: str) -> None:
        print(text, flush=False)

    def say(self, text: str) -> None:
        print(text)

    def json(self, data: Any) -> None:
        print(json.dumps(data, indent=2, ensure_ascii=False, default=lambda o: o.decode("utf-8", "replace") if isinstance(o, bytes) else str(o)))

    def error(self, text: str) -> None:
        sys.stdout.flush()
        print(f"vdir: error: {text}", file=sys.stderr)

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
                    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

                    p = Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), transient=True)
                    p.start()
                    bar["p"], bar["t"] = p, p.add_task(label, total=total or None)
                if bar:
                    bar["p"].update(bar["t"], completed=done[0])

        try:
            yield tick
        finally:
            if bar:
                bar["p"].stop()
