"""The examples in docs/ really run: every ```sh block and every ```python block starting with
`# runs` is executed in a fresh home directory."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers.vdirs import CLI

DOCS = Path(__file__).resolve().parents[1] / "docs"
FENCE = re.compile(r"^```(sh|python)\n(.*?)^```", re.S | re.M)


def blocks(kind: str) -> list[tuple[str, int, str]]:
    found = []
    for page in sorted(DOCS.glob("*.md")):
        for i, m in enumerate(FENCE.finditer(page.read_text())):
            if m.group(1) == kind and (kind == "sh" or m.group(2).startswith("# runs")):
                found.append((page.name, i, m.group(2)))
    return found


@pytest.mark.parametrize("page, index, script", blocks("sh"), ids=lambda v: str(v) if not isinstance(v, str) or len(v) < 40 else "")
def test_shell_examples_run(cli: CLI, page: str, index: int, script: str) -> None:
    bindir = cli.home / "bin"
    bindir.mkdir(exist_ok=True)
    shim = bindir / "vdir"
    shim.write_text(f"#!/bin/sh\nexec {sys.executable} -m cli \"$@\"\n")
    shim.chmod(0o755)
    env = {**cli.env, "PATH": f"{bindir}:{os.environ['PATH']}"}
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=env, cwd=cli.home, capture_output=True, timeout=300)
    assert proc.returncode == 0, f"{page} block {index} failed:\n{proc.stdout.decode()}\n{proc.stderr.decode()}"


@pytest.mark.parametrize("page, index, script", blocks("python"), ids=lambda v: str(v) if not isinstance(v, str) or len(v) < 40 else "")
def test_python_examples_run(cli: CLI, page: str, index: int, script: str) -> None:
    proc = subprocess.run([sys.executable, "-c", script], env=cli.env, cwd=cli.home, capture_output=True, timeout=300)
    assert proc.returncode == 0, f"{page} block {index} failed:\n{proc.stdout.decode()}\n{proc.stderr.decode()}"
