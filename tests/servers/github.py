"""GitHub for tests: the in-process FAKE server of ``tests/fakes/github_server.py`` (no GitHub
emulator exists), and a fresh repository per test for the conformance suite."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.fakes.github_server import FakeGitHub

if TYPE_CHECKING:
    from vdir.backends.github import GitHubBackend

BACKEND_FIXTURES = ["backend_github"]
_repo_ids = itertools.count(1)


@pytest.fixture(scope="session")
def fake_github() -> Iterator[FakeGitHub]:
    fake = FakeGitHub()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def github_token_file(tmp_path: Path, fake_github: FakeGitHub) -> Path:
    path = tmp_path / "github-token"
    path.write_text(fake_github.token + "\n")
    path.chmod(0o600)
    return path


def make_github_backend(fake: FakeGitHub, token_file: Path, prefix: str = "data", **options: object) -> GitHubBackend:
    """A backend on a new, empty repository of the fake (one initial commit of the empty tree)."""
    pytest.importorskip("github", reason="the github extra is not installed")
    from vdir.backends.github import GitHubBackend

    repo = fake.create_repo("vdir-test", f"repo{next(_repo_ids)}")
    url = f"github://{repo.owner}/{repo.name}@main/{prefix}".rstrip("/")
    options = {"token_file": str(token_file), "base_url": fake.url, "seconds_between_writes": None, **options}
    return GitHubBackend("gh", url, **options)  # type: ignore[arg-type]


@pytest.fixture
def backend_github(fake_github: FakeGitHub, github_token_file: Path) -> Iterator[GitHubBackend]:
    backend = make_github_backend(fake_github, github_token_file)
    try:
        yield backend
    finally:
        backend.close()
