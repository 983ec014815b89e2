"""MongoDB for tests: SecantusDB (``secantusd-py``, a server speaking the MongoDB wire protocol)
started once per session on a free port, or a real server named by ``VDIR_TEST_MONGODB_URI``.

Each test that asks for ``mongo_catalog_url`` gets a database of its own, dropped afterwards.
Not a storage backend, so no ``BACKEND_FIXTURES`` here.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.servers.process import free_port, server, venv_bin

if TYPE_CHECKING:
    from tests.mongoproxy import MongoProxy


def with_database(uri: str, database: str) -> str:
    """``uri`` naming ``database`` (its path replaced; query options kept)."""
    parts = urlsplit(uri)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


@pytest.fixture(scope="session")
def mongodb_uri() -> Iterator[str]:
    """URI of a MongoDB-compatible server for the whole session (no database in it)."""
    given = os.environ.get("VDIR_TEST_MONGODB_URI")
    if given:
        yield given
        return
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="vdir-mongo-") as storage:
        cmd = [venv_bin("secantusd-py"), "--host", "127.0.0.1", "--port", str(port), "--storage-path", storage,
               "--log-level", "WARNING"]
        with server(cmd, port, "secantusd"):
            yield f"mongodb://127.0.0.1:{port}/"


@pytest.fixture
def mongo_catalog_url(mongodb_uri: str) -> Iterator[str]:
    """A catalog URL on a fresh, uniquely named database; the database is dropped afterwards."""
    pymongo = pytest.importorskip("pymongo", reason="the mongo extra is not installed")
    database = f"vdir_test_{uuid.uuid4().hex[:16]}"
    yield with_database(mongodb_uri, database)
    client = pymongo.MongoClient(mongodb_uri, serverSelectionTimeoutMS=5000)
    try:
        client.drop_database(database)
    finally:
        client.close()


@pytest.fixture
def mongo_proxy(mongodb_uri: str) -> Iterator[MongoProxy]:
    """A :class:`tests.mongoproxy.MongoProxy` in front of the session's server (``proxy.proxied(uri)``
    turns a URI of that server into one through the proxy)."""
    pytest.importorskip("bson", reason="the mongo extra is not installed")
    from tests.mongoproxy import MongoProxy  # noqa: F811 (bson is needed only here)

    with MongoProxy.for_uri(mongodb_uri) as proxy:
        yield proxy
