"""Test configuration: loads every server plugin in tests/servers/ and builds the list of
backends the shared conformance suite runs against."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tests.servers as _servers  # noqa: E402

pytest_plugins = [
    f"tests.servers.{m.name}" for m in pkgutil.iter_modules(_servers.__path__) if m.name not in ("process",)
] + ["tests.mounts", "tests.catalogs"]  # fixtures shared by the mount and the catalog test modules


def backend_fixture_names() -> list[str]:
    names: list[str] = []
    for plugin in pytest_plugins:
        names.extend(getattr(importlib.import_module(plugin), "BACKEND_FIXTURES", []))
    return names


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Any test that asks for `any_backend` runs once per registered backend fixture.
    if "any_backend" in metafunc.fixturenames:
        names = backend_fixture_names()
        metafunc.parametrize("any_backend", names, indirect=True, ids=[n.removeprefix("backend_") for n in names])


@pytest.fixture
def any_backend(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """A fresh, empty backend of each registered kind (see tests/servers/__init__.py)."""
    return request.getfixturevalue(request.param)
