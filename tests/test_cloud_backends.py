"""What only the Azure and GCS backends have to prove (the shared conformance suite covers the
contract): server-side copy, conditional writes of multi-block objects and racing writers,
credential errors, names the stores refuse, retries and error translation under injected faults,
and a 1 GiB round trip in bounded memory.  Against Azurite and fake-gcs-server."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faultproxy import FaultProxy
from tests.helpers import measure_round_trip, race
from tests.servers.azure import Azurite, make_azure_backend
from tests.servers.gcs import FakeGCS, make_gcs_backend
from vdir.backends import open_backend
from vdir.backends.base import Backend, PutMode, ServerSideCopy
from vdir.errors import (
    AlreadyExists,
    AuthenticationError,
    BackendUnavailable,
    ConfigError,
    Conflict,
    InvalidPath,
    NotFound,
    Timeout,
    TransientError,
)

pytest.importorskip("azure.storage.blob", reason="the azure extra is not installed")
pytest.importorskip("google.cloud.storage", reason="the gcs extra is not installed")

ROOT = Path(__file__).resolve().parents[1]
MiB = 1024 * 1024
CLOUDS = ["azure", "gcs"]


class Clouds:
    """Makes fresh backends of either kind, directly or through a fault proxy."""

    def __init__(self, kind: str, request: pytest.FixtureRequest) -> None:
        self.kind = kind
        self.server: Azurite | FakeGCS = request.getfixturevalue("azurite" if kind == "azure" else "fake_gcs")
        self._made: list[Backend] = []

    def make(self, proxy: FaultProxy | None = None, **options: Any) -> Backend:
        if isinstance(self.server, Azurite):
            if proxy is not None:
                options.setdefault("connection_string", Azurite(proxy.port).connection_string())
            backend: Backend = make_azure_backend(self.server, **options)
        else:
            if proxy is not None:
                options.setdefault("endpoint_url", proxy.url)
            backend = make_gcs_backend(self.server, **options)
        self._made.append(backend)
        return backend

    def fresh_url(self) -> str:
        """The URL of a new, empty container or bucket."""
        if isinstance(self.server, Azurite):
            return f"az://{self.server.create_container()}"
        return f"gs://{self.server.create_bucket()}"

    def close(self) -> None:
        for backend in self._made:
            backend.close()


@pytest.fixture(params=CLOUDS)
def clouds(request: pytest.FixtureRequest) -> Iterator[Clouds]:
    made = Clouds(request.param, request)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def cloud(clouds: Clouds) -> Backend:
    return clouds.make()


@pytest.fixture
def proxy(clouds: Clouds) -> Iterator[FaultProxy]:
    with FaultProxy(("127.0.0.1", clouds.server.port)) as p:
        yield p


class Failing(io.RawIOBase):
    """``size`` bytes of data, then an OSError: a source that breaks in the middle of a put."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        if self.left <= 0:
            raise OSError("source broke")
        n = min(len(buf), self.left)
        buf[:n] = b"x" * n
        self.left -= n
        return n


# -- registry, options, location ----------------------------------------------------------------------
def test_registry_opens_both_schemes(azurite: Azurite, fake_gcs: FakeGCS) -> None:
    container = azurite.create_container()
    az = open_backend("myaz", f"az://{container}/p", {"connection_string": azurite.connection_string(), "region": "westeurope"})
    assert type(az).__name__ == "AzureBackend" and isinstance(az, ServerSideCopy)
    assert (az.location.cloud, az.location.region) == ("azure", "westeurope")
    bucket = fake_gcs.create_bucket()
    gs = open_backend("mygs", f"gs://{bucket}", {"endpoint_url": fake_gcs.endpoint})
    assert type(gs).__name__ == "GCSBackend" and isinstance(gs, ServerSideCopy)
    assert gs.location.cloud == "gcp" and gs.location.region  # looked up from the bucket
    gs2 = open_backend("mygs2", f"gs://{bucket}", {"endpoint_url": fake_gcs.endpoint, "region": "europe-west1"})
    assert gs2.location.region == "europe-west1"
    for backend in (az, gs, gs2):
        backend.close()


def test_keys_live_under_the_prefix(clouds: Clouds) -> None:
    root_url = clouds.fresh_url()
    bare = clouds.make(url=root_url)
    backend = clouds.make(url=root_url + "/some/prefix/")
    backend.put_bytes("a/b", b"1")
    assert [m.key for m in backend.list("")] == ["a/b"]
    assert [m.key for m in bare.list("")] == ["some/prefix/a/b"]
    assert bare.get_bytes("some/prefix/a/b") == b"1"
    assert backend.list_with_delimiter("").prefixes == ["a/"]


def test_missing_container_or_bucket_is_a_config_error(clouds: Clouds) -> None:
    url = "az://no-such-container" if clouds.kind == "azure" else "gs://no-such-bucket"
    backend = clouds.make(url=url)
    with pytest.raises(ConfigError, match="no-such"):
        backend.put_bytes("k", b"data")
    with pytest.raises(ConfigError, match="no-such"):
        list(backend.list(""))


def test_names_the_store_would_change_are_refused(cloud: Backend) -> None:
    bad = ["a\\b", "dir./x", "x.", "tab\there", "nl\nx"] if cloud.scheme == "az" else ["nl\nx", "cr\rx"]
    for key in bad:
        with pytest.raises(InvalidPath):
            cloud.put_bytes(key, b"x")
        assert list(cloud.list(key)) == []
    assert list(cloud.list("")) == []


def test_listing_is_in_code_point_order_beyond_the_bmp(cloud: Backend) -> None:
    # Azure sorts by UTF-16 code units: U+1F600 (a surrogate pair) before U+FF21; Python does not.
    keys = ["p/\U0001F600", "p/\U0001F600/x", "p/\uFF21", "p/\uE000z", "p/a", "p/z\U00010000", "p/z\uFFFD", "q"]
    for k in keys:
        cloud.put_bytes(k, b"x")
    assert [m.key for m in cloud.list("")] == sorted(keys)
    assert [m.key for m in cloud.list("p/")] == sorted(keys)[:-1]
    top = cloud.list_with_delimiter("p/")
    assert [m.key for m in top.objects] == sorted(k for k in keys if k.count("/") == 1)
    assert top.prefixes == ["p/\U0001F600/"]


def test_listing_across_pages(clouds: Clouds) -> None:
    backend = clouds.make(list_page_size=7)
    keys = [f"d{i % 3}/k{i:03d}" for i in range(40)] + [f"top{i}" for i in range(9)] + ["d1/\U0001F600", "d1/\uFF21"]
    for k in keys:
        backend.put_bytes(k, b"x")
    assert [m.key for m in backend.list("")] == sorted(keys)
    assert [m.key for m in backend.list("d1/")] == sorted(k for k in keys if k.startswith("d1/"))
    top = backend.list_with_delimiter("")
    assert top.prefixes == ["d0/", "d1/", "d2/"] and [m.key for m in top.objects] == [f"top{i}" for i in range(9)]


# -- server-side copy and conditions ------------------------------------------------------------
def test_server_copy(cloud: Backend) -> None:
    assert isinstance(cloud, ServerSideCopy)
    data = os.urandom(3 * MiB + 5)
    cloud.put("src/big", io.BytesIO(data), size=len(data))
    meta = cloud.server_copy("src/big", "dst/big")
    assert meta.size == len(data) and meta.etag == cloud.head("dst/big").etag
    assert cloud.get_bytes("dst/big") == data
    with pytest.raises(AlreadyExists):
        cloud.server_copy("src/big", "dst/big", PutMode.CREATE)  # type: ignore[attr-defined]
    cloud.put_bytes("src/small", b"small")
    with pytest.raises(Conflict):
        cloud.server_copy("src/small", "dst/big", PutMode.update("1" if cloud.scheme == "gs" else '"0x1"'))
    assert cloud.get_bytes("dst/big") == data
    updated = cloud.server_copy("src/small", "dst/big", PutMode.update(meta.etag or ""))
    assert cloud.get_bytes("dst/big") == b"small" and updated.etag != meta.etag
    assert cloud.server_copy("src/small", "dst/new", PutMode.CREATE).size == 5  # type: ignore[attr-defined]
    with pytest.raises(NotFound):
        cloud.server_copy("src/none", "dst/other")
    assert not cloud.exists("dst/other")


def test_conditional_multi_block_writes(cloud: Backend) -> None:
    old = cloud.put_bytes("obj", b"old")
    big = os.urandom(3 * MiB + 1)
    with pytest.raises(AlreadyExists):
        cloud.put("obj", io.BytesIO(big), PutMode.CREATE)  # type: ignore[attr-defined]
    stale = cloud.put_bytes("other", b"x").etag or ""
    with pytest.raises(Conflict):
        cloud.put("obj", io.BytesIO(big), PutMode.update(stale))
    assert cloud.get_bytes("obj") == b"old"
    new = cloud.put("obj", io.BytesIO(big), PutMode.update(old.etag or ""))
    assert new.size == len(big) and new.etag == cloud.head("obj").etag != old.etag
    with pytest.raises(Conflict):
        cloud.put("gone", io.BytesIO(big), PutMode.update(old.etag or ""))
    assert not cloud.exists("gone")
    assert cloud.put("fresh", io.BytesIO(big), PutMode.CREATE).size == len(big)  # type: ignore[attr-defined]


def test_racing_updates_one_wins(cloud: Backend) -> None:
    base = cloud.put_bytes("doc", b"v0")
    results = race(4, lambda i: cloud.put_bytes("doc", f"v1 by {i}".encode(), PutMode.update(base.etag or "")))
    winners = [i for i, r in enumerate(results) if not isinstance(r, Exception)]
    assert len(winners) == 1, results
    assert all(isinstance(r, Conflict) for i, r in enumerate(results) if i != winners[0]), results
    assert cloud.get_bytes("doc") == f"v1 by {winners[0]}".encode()
    assert cloud.head("doc").etag == results[winners[0]].etag


def test_racing_multi_block_creators_one_wins(azurite: Azurite) -> None:
    # Azure only: fake-gcs-server does not check conditions on resumable uploads (GCS does).
    backend = make_azure_backend(azurite)
    payloads = [bytes([i]) * (3 * MiB + i) for i in range(3)]
    results = race(3, lambda i: backend.put("big", io.BytesIO(payloads[i]), PutMode.CREATE))  # type: ignore[attr-defined]
    winners = [i for i, r in enumerate(results) if not isinstance(r, Exception)]
    assert len(winners) == 1, results
    assert all(isinstance(r, AlreadyExists) for i, r in enumerate(results) if i != winners[0]), results
    assert backend.get_bytes("big") == payloads[winners[0]]
    backend.close()


def test_failed_source_leaves_nothing(cloud: Backend) -> None:
    with pytest.raises(OSError, match="source broke"):
        cloud.put("obj", Failing(2 * MiB + 100))  # type: ignore[arg-type]
    assert not cloud.exists("obj") and list(cloud.list("")) == []
    cloud.put_bytes("obj", b"old")
    with pytest.raises(OSError, match="source broke"):
        cloud.put("obj", Failing(2 * MiB + 100), size=3 * MiB)  # type: ignore[arg-type]
    assert cloud.get_bytes("obj") == b"old"


def test_object_replaced_mid_read_is_a_conflict(cloud: Backend) -> None:
    cloud.put_bytes("big", os.urandom(3 * MiB))
    with cloud.get("big") as stream:
        first = stream.read(64 * 1024)
        cloud.put_bytes("big", os.urandom(3 * MiB))
        with pytest.raises(Conflict):
            stream.read()
    assert len(first) == 64 * 1024


# -- credentials ------------------------------------------------------------------------------------
def test_azure_wrong_account_key_is_one_line_authentication_error(azurite: Azurite) -> None:
    container = azurite.create_container()
    wrong = azurite.connection_string(key="d3Jvbmcga2V5IGZvciB0ZXN0aW5nIG9ubHkgLSBub3QgYSBzZWNyZXQ=")
    backend = open_backend("myaz", f"az://{container}", {"connection_string": wrong, "retry_backoff": 0.05})
    for action in (lambda: backend.head("x"), lambda: backend.put_bytes("x", b"data"), lambda: list(backend.list(""))):
        with pytest.raises(AuthenticationError) as info:
            action()
        message = str(info.value)
        assert "azure backend 'myaz'" in message and "\n" not in message and len(message) < 300
        assert not info.value.retryable
    backend.close()


def test_azure_without_credentials_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    with pytest.raises(ConfigError, match="AZURE_STORAGE_CONNECTION_STRING"):
        open_backend("myaz", "az://container")


def test_azure_connection_string_from_environment(azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> None:
    container = azurite.create_container()
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string())
    backend = open_backend("myaz", f"az://{container}")
    backend.put_bytes("k", b"v")
    assert backend.get_bytes("k") == b"v"
    backend.close()


def test_gcs_without_credentials_is_one_line_authentication_error(tmp_path: Path) -> None:
    # in a child process: google.auth reads NO_GCE_CHECK at import (no metadata-server probe)
    env = {k: v for k, v in os.environ.items() if k not in ("GOOGLE_APPLICATION_CREDENTIALS", "STORAGE_EMULATOR_HOST")}
    env.update(NO_GCE_CHECK="true", CLOUDSDK_CONFIG=str(tmp_path), HOME=str(tmp_path))
    script = textwrap.dedent("""
        import sys
        sys.path.insert(0, sys.argv[1])
        from vdir.backends import open_backend
        from vdir.errors import AuthenticationError
        try:
            open_backend("mygs", "gs://bucket")
        except AuthenticationError as exc:
            print(exc)
    """)
    out = subprocess.run([sys.executable, "-c", script, str(ROOT)], capture_output=True, text=True, env=env, timeout=60,
                         check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1 and "gcs backend 'mygs'" in lines[0] and "credentials" in lines[0], out.stdout


def test_gcs_unreadable_credentials_file_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "creds.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="gcs backend 'mygs'"):
        open_backend("mygs", "gs://bucket", {"credentials_file": str(bad)})


# -- retries and error translation (fault proxy in front of the emulator) ---------------------------
def test_transient_500s_are_retried(clouds: Clouds, proxy: FaultProxy) -> None:
    backend = clouds.make(proxy)
    proxy.respond(500, count=2)
    backend.put_bytes("k", b"data")
    assert proxy.faults == 2
    proxy.respond(503, count=1)
    assert backend.get_bytes("k") == b"data"
    assert proxy.faults == 3


def test_persistent_500_surfaces_as_retryable_error(clouds: Clouds, proxy: FaultProxy) -> None:
    backend = clouds.make(proxy, **({"retries": 2} if clouds.kind == "azure" else {"retry_timeout": 1.0}))
    backend.put_bytes("k", b"data")
    proxy.requests.clear()
    proxy.respond(500)
    with pytest.raises(BackendUnavailable) as info:
        backend.head("k")
    assert info.value.retryable and "500" in str(info.value) and "\n" not in str(info.value)
    assert 2 <= len(proxy.requests) <= (3 if clouds.kind == "azure" else 20)  # retried, but bounded
    proxy.reset()
    assert backend.head("k").size == 4


def test_unreachable_store_is_retryable(clouds: Clouds) -> None:
    with FaultProxy(("127.0.0.1", clouds.server.port)) as p:
        backend = clouds.make(p, **({"retries": 1} if clouds.kind == "azure" else {"retry_timeout": 0.5}))
        backend.put_bytes("k", b"x")
        p.refuse()
        with pytest.raises(TransientError) as info:  # nothing listens on the store's port: connection refused
            backend.head("k")
    assert info.value.retryable


def test_slow_answers_time_out(clouds: Clouds, proxy: FaultProxy) -> None:
    options = {"retries": 1, "read_timeout": 0.5} if clouds.kind == "azure" else {"retry_timeout": 1.0, "timeout": 0.5}
    backend = clouds.make(proxy, **options)
    backend.put_bytes("k", b"data")
    proxy.delay(2.0)
    with pytest.raises(TransientError) as info:
        backend.head("k")
    assert isinstance(info.value, Timeout) and info.value.retryable
    proxy.reset()
    proxy.delay(1.0, count=1)  # one slow answer: the retry gets through
    assert backend.head("k").size == 4


def test_download_cut_mid_body_is_retried_or_raises(clouds: Clouds, proxy: FaultProxy) -> None:
    backend = clouds.make(proxy)
    data = os.urandom(3 * MiB)
    backend.put_bytes("big", data)
    proxy.cut(after=200 * 1024, count=1, match="GET ")
    assert backend.get_bytes("big") == data
    assert proxy.faults == 1
    proxy.cut(after=200 * 1024, match="GET ")  # every answer cut: the whole object or an error, never less
    try:
        got = backend.get_bytes("big")
    except TransientError as exc:  # Azure: a chunk is re-read 3 times, then this
        assert exc.retryable and clouds.kind == "azure"
    else:  # GCS: each retry asks for the rest of the range, so it gets there
        assert got == data and clouds.kind == "gcs"


def test_failed_block_upload_leaves_nothing(clouds: Clouds, proxy: FaultProxy) -> None:
    backend = clouds.make(proxy, **({"retries": 1} if clouds.kind == "azure" else {"retry_timeout": 0.5}))
    data = os.urandom(3 * MiB + 7)
    backend.put_bytes("obj", b"old")
    match = "comp=block&" if clouds.kind == "azure" else "upload_id="
    proxy.respond(500, match=match)
    with pytest.raises(BackendUnavailable):
        backend.put("obj", io.BytesIO(data))
    with pytest.raises(BackendUnavailable):
        backend.put("new", io.BytesIO(data), size=len(data))
    proxy.reset()
    assert backend.get_bytes("obj") == b"old"
    assert not backend.exists("new")


# -- memory -----------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("kind", CLOUDS)
def test_one_gib_round_trip_in_bounded_memory(kind: str, request: pytest.FixtureRequest) -> None:
    server: Azurite | FakeGCS = request.getfixturevalue("azurite" if kind == "azure" else "fake_gcs")
    setup = {  # the product's default sizes; the size is not announced: streamed block by block
        "azure": "from tests.servers.azure import Azurite, make_azure_backend\n"
                 "backend = make_azure_backend(Azurite(int(args[0])), block_size=8 << 20)",
        "gcs": "from tests.servers.gcs import FakeGCS, make_gcs_backend\n"
               "backend = make_gcs_backend(FakeGCS(int(args[0])), chunk_size=8 << 20)",
    }[kind]
    peak_kib, up, down = measure_round_trip(setup, 1024 * MiB, str(server.port), announce_size=False, timeout=540)
    print(f"1 GiB through {kind}: put {up}s, get {down}s, peak RSS {peak_kib // 1024} MiB")
    assert peak_kib < 200 * 1000, f"peak RSS {peak_kib // 1024} MiB"
