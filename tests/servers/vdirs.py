"""Fixtures for whole virtual directories: a ``VDir`` on the embedded default (SQLite catalog,
local-folder backends) and an isolated CLI environment (its own config and data dirs)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from vdir.admin import add_backend
from vdir.catalog.base import open_catalog
from vdir.core import VDir


@pytest.fixture
def vd(tmp_path: Path) -> Iterator[VDir]:
    """A VDir with a SQLite catalog and two local-folder backends, ``local`` (default) and ``spare``."""
    (tmp_path / "objects").mkdir()
    (tmp_path / "spare").mkdir()
    v = VDir(open_catalog(f"sqlite:///{tmp_path / 'catalog.db'}"), default_backend="local")
    add_backend(v, "local", f"file://{tmp_path / 'objects'}", check=False)
    add_backend(v, "spare", f"file://{tmp_path / 'spare'}", check=False, region="elsewhere")
    try:
        yield v
    finally:
        v.close()


@dataclass
class CLI:
    env: dict[str, str]
    home: Path

    def run(self, *args: str | bytes, input: bytes | None = None, check: bool = False, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
        proc = subprocess.run(
            [sys.executable, "-m", "cli", *[os.fsdecode(a) if isinstance(a, bytes) else a for a in args]],
            env=self.env, capture_output=True, input=input, timeout=timeout, cwd=self.home,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"vdir {' '.join(map(str, args))} failed ({proc.returncode}): {proc.stderr.decode(errors='replace')}")
        return proc

    def popen(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "cli", *args], env=self.env, cwd=self.home,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.fixture
def cli(tmp_path: Path) -> CLI:
    """Runs ``vdir`` in a private world: XDG dirs and VDIR_CONFIG under tmp_path."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VDIR_")}
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        PYTHONPATH=str(Path(__file__).resolve().parents[2]),
        COLUMNS="200",
    )
    return CLI(env=env, home=home)


def ok(cli: CLI, *args: str | bytes, input: bytes | None = None) -> str:
    """Run ``vdir ARGS``; it must succeed; its standard output."""
    proc = cli.run(*args, input=input)
    assert proc.returncode == 0, (args, proc.stderr.decode(errors="replace"))
    return proc.stdout.decode()


def fails(cli: CLI, *args: str | bytes, code: int = 1) -> str:
    """Run ``vdir ARGS``; it must fail with ``code`` and one ``vdir: error:`` line, no traceback."""
    proc = cli.run(*args)
    err = proc.stderr.decode()
    assert proc.returncode == code, (args, proc.returncode, err)
    assert err.startswith("vdir: error: "), err
    assert len(err.strip().splitlines()) == 1, err  # one line
    assert "Traceback" not in err
    return err
