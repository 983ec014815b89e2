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


def server_env(request: pytest.FixtureRequest, needs: list[str], home: Path) -> dict[str, str]:
    """Connection details of the local servers a block names in its first line
    (``# needs: s3, azure``), as environment variables; each gets a fresh bucket/container/repo."""
    import uuid

    env: dict[str, str] = {}
    tag = uuid.uuid4().hex[:8]
    for need in needs:
        if need == "s3":
            s3 = request.getfixturevalue("moto_s3")
            env.update(S3_ENDPOINT=s3.endpoint, AWS_ACCESS_KEY_ID=s3.access_key, AWS_SECRET_ACCESS_KEY=s3.secret_key,
                       AWS_DEFAULT_REGION="us-east-1", S3_BUCKET=s3.bucket)
        elif need == "azure":
            az = request.getfixturevalue("azurite")
            env.update(AZURE_STORAGE_CONNECTION_STRING=az.connection_string(), AZ_CONTAINER=az.create_container(f"docs-{tag}"))
        elif need == "gcs":
            gcs = request.getfixturevalue("fake_gcs")
            env.update(GCS_ENDPOINT=gcs.endpoint, STORAGE_EMULATOR_HOST=gcs.endpoint, GCS_BUCKET=gcs.create_bucket(f"docs-{tag}"))
        elif need == "box":
            box = request.getfixturevalue("fake_box")
            token = home / "box-token"
            token.write_text(box.token + "\n")
            env.update(BOX_BASE_URL=box.url, BOX_TOKEN_FILE=str(token))
        elif need == "github":
            gh = request.getfixturevalue("fake_github")
            repo = gh.create_repo("docs", f"repo-{tag}")
            token = home / "github-token"
            token.write_text(gh.token + "\n")
            env.update(GITHUB_BASE_URL=gh.url, GITHUB_TOKEN_FILE=str(token), GITHUB_REPO=f"{repo.owner}/{repo.name}")
        else:
            raise AssertionError(f"unknown server {need!r} in a docs block")
    return env


@pytest.mark.parametrize("page, index, script", blocks("sh"), ids=lambda v: str(v) if not isinstance(v, str) or len(v) < 40 else "")
def test_shell_examples_run(cli: CLI, page: str, index: int, script: str, request: pytest.FixtureRequest) -> None:
    # under pipefail, `cmd | grep -q x` fails at random: grep exits at the first match and cmd
    # dies writing to the closed pipe (SIGPIPE); `grep x >/dev/null` reads everything
    assert not re.search(r"\|\s*grep\s+-\w*q", script), f"{page} block {index}: use `| grep ... >/dev/null`, not `| grep -q`"
    bindir = cli.home / "bin"
    bindir.mkdir(exist_ok=True)
    shim = bindir / "vdir"
    shim.write_text(f"#!/bin/sh\nexec {sys.executable} -m cli \"$@\"\n")
    shim.chmod(0o755)
    env = {**cli.env, "PATH": f"{bindir}:{os.environ['PATH']}"}
    first = script.splitlines()[0] if script else ""
    if first.startswith("# needs:"):
        env.update(server_env(request, [n.strip() for n in first[len("# needs:"):].split(",") if n.strip()], cli.home))
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=env, cwd=cli.home, capture_output=True, timeout=300)
    assert proc.returncode == 0, f"{page} block {index} failed:\n{proc.stdout.decode()}\n{proc.stderr.decode()}"


@pytest.mark.parametrize("page, index, script", blocks("python"), ids=lambda v: str(v) if not isinstance(v, str) or len(v) < 40 else "")
def test_python_examples_run(cli: CLI, page: str, index: int, script: str) -> None:
    proc = subprocess.run([sys.executable, "-c", script], env=cli.env, cwd=cli.home, capture_output=True, timeout=300)
    assert proc.returncode == 0, f"{page} block {index} failed:\n{proc.stdout.decode()}\n{proc.stderr.decode()}"
