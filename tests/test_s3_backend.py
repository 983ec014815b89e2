"""What only the S3 backend has to prove (the shared conformance suite covers the contract):
credential and bucket errors, bounded retries and error translation under injected faults,
resumed downloads, multipart uploads that fail cleanly, server-side copy, bounded memory."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.faultproxy import FaultProxy
from tests.helpers import measure_round_trip
from tests.servers.s3 import PART, S3Server, make_s3_backend
from vdir.backends import PutMode, copy_object, open_backend
from vdir.errors import (
    AlreadyExists,
    AuthenticationError,
    BackendUnavailable,
    ConfigError,
    Conflict,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Timeout,
    TransientError,
    VDirError,
)

if TYPE_CHECKING:
    from vdir.backends.s3 import S3Backend

pytest.importorskip("boto3", reason="the s3 extra is not installed")
ROOT = Path(__file__).resolve().parents[1]
MiB = 1024 * 1024


@pytest.fixture(params=["moto", "seaweedfs"])
def s3_server(request: pytest.FixtureRequest) -> S3Server:
    server: S3Server = request.getfixturevalue(f"{request.param}_s3")
    return server


@pytest.fixture(params=["lean", "boto3"])
def proxy(moto_s3: S3Server, request: pytest.FixtureRequest) -> Iterator[FaultProxy]:
    """A fault proxy before moto; each test using it runs on both request paths of the backend."""
    port = int(moto_s3.endpoint.rsplit(":", 1)[1])
    with FaultProxy(("127.0.0.1", port)) as p:
        p.lean = request.param == "lean"  # type: ignore[attr-defined]
        yield p


def through(proxy: FaultProxy, s3: S3Server, **options: Any) -> S3Backend:
    """A backend that talks to ``s3`` through the fault proxy, on the proxy's request path."""
    options.setdefault("lean", getattr(proxy, "lean", True))
    return make_s3_backend(S3Server(s3.name, proxy.url, s3.access_key, s3.secret_key, s3.bucket), **options)


def pending_uploads(s3: S3Server, backend: S3Backend | None = None) -> list[str]:
    """Unfinished multipart uploads in the bucket (under ``backend``'s prefix: other tests share it)."""
    prefix = backend.prefix if backend is not None else ""
    uploads = s3.client().list_multipart_uploads(Bucket=s3.bucket, Prefix=prefix).get("Uploads", [])
    return [u["Key"] for u in uploads]


# -- credentials, bucket, options ---------------------------------------------------------------
@pytest.mark.parametrize("lean", [True, False], ids=["lean", "boto3"])
@pytest.mark.parametrize("wrong", ["secret", "access key"])
def test_wrong_credentials_are_one_line_naming_the_backend(seaweedfs_s3: S3Server, wrong: str, lean: bool) -> None:
    good = make_s3_backend(seaweedfs_s3)
    good.put_bytes("a.txt", b"hello")
    creds = {"secret_access_key": "not-the-secret"} if wrong == "secret" else {"access_key_id": "NOSUCHKEY"}
    bad = make_s3_backend(seaweedfs_s3, prefix=good.prefix.rstrip("/"), lean=lean, **creds)
    assert (bad._lean_client() is not None) == lean  # SeaweedFS checks the lean path's own signatures too
    for call in (lambda: bad.list_with_delimiter(""), lambda: bad.get_bytes("a.txt"), lambda: bad.head("a.txt"),
                 lambda: bad.put_bytes("b.txt", b"x"), lambda: list(bad.list(""))):
        with pytest.raises(AuthenticationError) as info:
            call()
        message = str(info.value)
        assert "\n" not in message
        assert "'s3-seaweedfs'" in message and f"s3://{seaweedfs_s3.bucket}/" in message
        assert "credentials" in message
        assert not info.value.retryable
    assert not good.exists("b.txt")


def test_missing_bucket_names_the_bucket(s3_server: S3Server) -> None:
    backend = make_s3_backend(s3_server, bucket="no-such-bucket-here")
    with pytest.raises(ConfigError, match="bucket 'no-such-bucket-here' does not exist"):
        backend.list_with_delimiter("")
    with pytest.raises(ConfigError, match="no-such-bucket-here"):
        backend.get_bytes("x")


def test_options_and_url(moto_s3: S3Server) -> None:
    opened = open_backend("o", f"s3://{moto_s3.bucket}/some/prefix/", moto_s3.options(part_size="6MiB",
                                                                                     multipart_threshold="7M"))
    from vdir.backends.s3 import S3Backend

    assert isinstance(opened, S3Backend)
    assert (opened.bucket, opened.prefix) == (moto_s3.bucket, "some/prefix/")
    assert (opened.part_size, opened.multipart_threshold) == (6 * MiB, 7 * MiB)
    with pytest.raises(ConfigError, match="5 MiB"):
        open_backend("o", f"s3://{moto_s3.bucket}", moto_s3.options(part_size=MiB))
    with pytest.raises(ConfigError, match="bad S3 URL"):
        open_backend("o", "s3:///nobucket", moto_s3.options())


def test_location_region_from_option_or_bucket(moto_s3: S3Server) -> None:
    given = make_s3_backend(moto_s3, region="eu-central-1")
    assert given.location.cloud == "aws" and given.location.region == "eu-central-1"
    asked = make_s3_backend(moto_s3, region=None)
    assert asked.location.region == "us-east-1"  # moto's bucket was made without a location constraint
    assert asked.location.as_dict()["cloud"] == "aws"


def test_keys_live_under_the_prefix(moto_s3: S3Server) -> None:
    backend = make_s3_backend(moto_s3, prefix="deep/er")
    backend.put_bytes("x/y.txt", b"1")
    keys = [o["Key"] for o in moto_s3.client().list_objects_v2(Bucket=moto_s3.bucket, Prefix="deep/").get("Contents", [])]
    assert keys == ["deep/er/x/y.txt"]
    assert [m.key for m in backend.list("")] == ["x/y.txt"]


KEYS = ["a/b/c.txt", "a/b.txt", "a-z.txt", "a/x.txt", "b.txt", "a/b/d/e.txt", "a.txt", "êé/g"]


@pytest.mark.parametrize("listing", ["auto", "walk", "flat"])
def test_listing_is_in_s3_order(s3_server: S3Server, listing: str) -> None:
    """SeaweedFS lists in directory order (``a/b.txt`` before ``a-z.txt``); ``auto`` notices
    (``Server`` header) and builds the listing level by level, ``flat`` refuses to go on."""
    backend = make_s3_backend(s3_server, listing=listing)
    for key in KEYS:
        backend.put_bytes(key, b"x")
    expected = sorted(KEYS, key=str.encode)
    if listing == "flat" and s3_server.name == "seaweedfs":
        with pytest.raises(VDirError, match="listing=walk"):
            list(backend.list(""))
        return
    assert [m.key for m in backend.list("")] == expected
    assert [m.key for m in backend.list("a")] == [k for k in expected if k.startswith("a")]
    assert [m.key for m in backend.list("a/b")] == [k for k in expected if k.startswith("a/b")]


def test_emptied_prefix_disappears(s3_server: S3Server) -> None:
    backend = make_s3_backend(s3_server)
    backend.put_bytes("d/x", b"1")
    backend.put_bytes("d/e/y", b"2")
    backend.put_bytes("keep", b"3")
    assert backend.list_with_delimiter("").prefixes == ["d/"]
    backend.delete("d/e/y")
    assert backend.list_with_delimiter("d/").prefixes == []
    backend.delete("d/x")
    assert backend.list_with_delimiter("") == backend.list_with_delimiter("")  # stable
    assert backend.list_with_delimiter("").prefixes == []
    assert [m.key for m in backend.list_with_delimiter("").objects] == ["keep"]


# -- retries and error translation (fault proxy in front of moto) --------------------------------
def test_transient_500s_are_retried(proxy: FaultProxy, moto_s3: S3Server) -> None:
    backend = through(proxy, moto_s3)
    proxy.respond(500, count=2)
    backend.put_bytes("k", b"data")
    assert proxy.faults == 2 and len(proxy.requests) == 3
    proxy.respond(503, count=1)
    assert backend.get_bytes("k") == b"data"


def test_persistent_500_gives_up_after_bounded_attempts(proxy: FaultProxy, moto_s3: S3Server) -> None:
    backend = through(proxy, moto_s3, max_attempts=3)
    backend.put_bytes("k", b"data")
    proxy.requests.clear()
    proxy.respond(500)
    with pytest.raises(BackendUnavailable) as info:
        backend.get_bytes("k")
    assert info.value.retryable and "500" in str(info.value)
    assert len(proxy.requests) == 3


@pytest.mark.parametrize(("status", "code", "error"), [(400, "InvalidRequest", InvalidArgument),
                                                       (403, "AccessDenied", PermissionDenied)])
def test_4xx_is_not_retried(proxy: FaultProxy, moto_s3: S3Server, status: int, code: str, error: type[Exception]) -> None:
    backend = through(proxy, moto_s3)
    body = f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>no</Message></Error>".encode()
    proxy.respond(status, body, headers={"Content-Type": "application/xml"})
    with pytest.raises(error) as info:
        backend.put_bytes("k", b"data")
    assert not getattr(info.value, "retryable", True)
    assert not isinstance(info.value, AuthenticationError)
    assert len(proxy.requests) == 1


def test_dropped_connection_is_retried(proxy: FaultProxy, moto_s3: S3Server) -> None:
    backend = through(proxy, moto_s3)
    proxy.drop(count=1)
    backend.put_bytes("k", b"data")
    assert backend.get_bytes("k") == b"data"
    assert proxy.faults == 1


def test_timeout_surfaces_as_timeout(proxy: FaultProxy, moto_s3: S3Server) -> None:
    backend = through(proxy, moto_s3, read_timeout=0.5, max_attempts=2)
    backend.put_bytes("k", b"data")
    proxy.requests.clear()
    proxy.delay(2.0)
    with pytest.raises(Timeout) as info:
        backend.head("k")
    assert info.value.retryable and isinstance(info.value, TransientError)
    assert len(proxy.requests) == 2
    proxy.reset()
    proxy.delay(1.0, count=1)  # one slow answer: the retry gets through
    assert backend.head("k").size == 4


def test_download_cut_mid_body_is_resumed_or_raises(proxy: FaultProxy, moto_s3: S3Server) -> None:
    backend = through(proxy, moto_s3)
    data = os.urandom(3 * MiB)
    backend.put_bytes("big", data)
    proxy.requests.clear()
    proxy.cut(after=256 * 1024, count=1, match="GET ")
    assert backend.get_bytes("big") == data  # resumed with a ranged GET where the cut happened
    assert any("GET" in r for r in proxy.requests[1:]) and proxy.faults == 1
    assert backend.get_bytes("big", 100, 2 * MiB) == data[100:2 * MiB]

    proxy.cut(after=256 * 1024, match="GET ")  # every answer is cut: an error, never short data
    with pytest.raises(BackendUnavailable):
        backend.get_bytes("big")
    with backend.get("big") as stream, pytest.raises(BackendUnavailable):
        while stream.read(64 * 1024):
            pass


def test_read_ahead_ranges(s3_server: S3Server) -> None:
    backend = make_s3_backend(s3_server, read_ahead=3)
    data = os.urandom(4 * PART + 321)
    backend.put_bytes("big", data)
    assert backend.get_bytes("big") == data
    for start, end in [(0, PART), (1, PART + 1), (PART - 7, 3 * PART + 9), (2 * PART, None), (3 * PART + 5, 10 * PART),
                       (len(data) - 1, None), (len(data), None), (len(data) + 5, len(data) + 9)]:
        assert backend.get_bytes("big", start, end) == data[start:end], (start, end)
    with backend.get("big") as stream:  # closing early stops the read-ahead
        assert stream.read(10) == data[:10]


def test_read_ahead_part_cut_is_resumed(proxy: FaultProxy, moto_s3: S3Server) -> None:
    backend = through(proxy, moto_s3, read_ahead=2)
    data = os.urandom(4 * PART)
    backend.put_bytes("big", data)
    proxy.cut(after=100_000, count=1, match=f"bytes={2 * PART}-")
    assert backend.get_bytes("big") == data
    assert proxy.faults == 1


def test_read_ahead_refuses_a_changed_object(s3_server: S3Server) -> None:
    backend = make_s3_backend(s3_server, read_ahead=1)
    backend.put_bytes("big", os.urandom(5 * PART))
    with backend.get("big") as stream:
        stream.read(1000)
        backend.put_bytes("big", os.urandom(5 * PART))  # replaced meanwhile: later parts must not mix in
        with pytest.raises(Conflict):
            while stream.read(MiB):
                pass


def test_resumed_download_refuses_a_changed_object(proxy: FaultProxy, moto_s3: S3Server) -> None:
    backend = through(proxy, moto_s3)
    backend.put_bytes("big", os.urandom(2 * MiB))
    proxy.cut(after=256 * 1024, count=1, match="GET ")
    with backend.get("big") as stream:
        first = stream.read(128 * 1024)
        backend.put_bytes("big", os.urandom(2 * MiB))  # replaced meanwhile
        with pytest.raises(Conflict):
            stream.read()
    assert len(first) == 128 * 1024


def test_failed_multipart_upload_leaves_nothing(proxy: FaultProxy, moto_s3: S3Server) -> None:
    backend = through(proxy, moto_s3, max_attempts=2)
    data = os.urandom(3 * PART + 123)
    proxy.cut_request(after=100_000, match="partNumber=2 ")  # part 2 never arrives whole
    with pytest.raises(BackendUnavailable):
        backend.put("obj", io.BytesIO(data), size=len(data))
    proxy.reset()
    assert not backend.exists("obj")
    assert list(backend.list("")) == []
    assert pending_uploads(moto_s3, backend) == []  # aborted, not left behind

    backend.put_bytes("obj", b"old")  # a failed overwrite keeps the old object
    proxy.respond(500, match="&partNumber=")
    with pytest.raises(BackendUnavailable):
        backend.put("obj", io.BytesIO(data))  # size unknown: multipart chosen after the first part
    proxy.reset()
    assert backend.get_bytes("obj") == b"old"
    assert pending_uploads(moto_s3, backend) == []


class _Exploding(io.RawIOBase):
    """A source that fails after ``good`` bytes (the caller's disk went away, say)."""

    def __init__(self, good: int) -> None:
        self.left = good

    def readable(self) -> bool:
        return True

    def readinto(self, buf: bytearray | memoryview) -> int:  # type: ignore[override]
        if self.left <= 0:
            raise OSError("source broke")
        n = min(len(buf), self.left)
        buf[:n] = b"x" * n
        self.left -= n
        return n


def test_source_failure_aborts_multipart(s3_server: S3Server) -> None:
    backend = make_s3_backend(s3_server)
    with pytest.raises(OSError, match="source broke"):
        backend.put("obj", io.BufferedReader(_Exploding(2 * PART + 10)), size=4 * PART)
    assert not backend.exists("obj")
    assert [k for k in pending_uploads(s3_server) if k.startswith(backend.prefix)] == []


# -- conditions and copy, on both servers ---------------------------------------------------------
def test_multipart_conditions(s3_server: S3Server) -> None:
    backend = make_s3_backend(s3_server)
    data = os.urandom(2 * PART + 1)
    meta = backend.put("m", io.BytesIO(data), PutMode.CREATE, size=len(data))  # type: ignore[attr-defined]
    assert meta.etag == backend.head("m").etag and meta.size == len(data)
    with pytest.raises(AlreadyExists):
        backend.put("m", io.BytesIO(data), PutMode.CREATE)  # type: ignore[attr-defined]
    with pytest.raises(Conflict):
        backend.put("m", io.BytesIO(data), PutMode.update('"0123"'))
    with pytest.raises(Conflict):
        backend.put("never", io.BytesIO(data), PutMode.update(meta.etag or ""))
    new = backend.put("m", io.BytesIO(data[::-1]), PutMode.update(meta.etag or ""))
    assert backend.get_bytes("m") == data[::-1] and new.etag == backend.head("m").etag
    assert [k for k in pending_uploads(s3_server) if k.startswith(backend.prefix)] == []


def test_server_copy(s3_server: S3Server) -> None:
    from vdir.backends.base import ServerSideCopy

    backend = make_s3_backend(s3_server)
    assert isinstance(backend, ServerSideCopy)
    data = os.urandom(PART + 5)
    backend.put_bytes("src/a.bin", data)
    meta = copy_object(backend, "src/a.bin", "dst/b.bin")
    assert meta.size == len(data) and meta.etag == backend.head("dst/b.bin").etag
    assert backend.get_bytes("dst/b.bin") == data
    with pytest.raises(AlreadyExists):
        backend.server_copy("src/a.bin", "dst/b.bin", PutMode.CREATE)  # type: ignore[attr-defined]
    with pytest.raises(Conflict):
        backend.server_copy("src/a.bin", "dst/b.bin", PutMode.update('"nope"'))
    backend.server_copy("src/a.bin", "dst/b.bin", PutMode.update(meta.etag or ""))
    with pytest.raises(NotFound):
        backend.server_copy("src/missing", "dst/c.bin")
    assert not backend.exists("dst/c.bin")
    # from another prefix of the same server: CopyObject; from another kind of store: not here
    other = make_s3_backend(s3_server)
    assert other.server_copy_from(backend, "src/a.bin", "copied.bin") is not None
    assert other.get_bytes("copied.bin") == data
    from vdir.backends.memory import MemoryBackend

    assert other.server_copy_from(MemoryBackend("m", "memory://s3-copy-test"), "x", "y") is None


def test_unknown_size_small_and_large(s3_server: S3Server) -> None:
    backend = make_s3_backend(s3_server)

    class Trickle(io.RawIOBase):  # short reads, no size, not seekable
        def __init__(self, data: bytes) -> None:
            self.data = memoryview(data)

        def readable(self) -> bool:
            return True

        def readinto(self, buf: bytearray | memoryview) -> int:  # type: ignore[override]
            n = min(len(buf), 100_003, len(self.data))
            buf[:n] = self.data[:n]
            self.data = self.data[n:]
            return n

    for size in (0, PART, PART + 1, 2 * PART + 77):
        data = os.urandom(size)
        meta = backend.put(f"t{size}", Trickle(data))  # type: ignore[arg-type]
        assert meta.size == size
        assert backend.get_bytes(f"t{size}") == data


# -- memory -----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_one_gib_round_trip_in_bounded_memory(seaweedfs_s3: S3Server) -> None:
    s3 = seaweedfs_s3
    setup = ("from tests.servers.s3 import S3Server, make_s3_backend\n"
             "backend = make_s3_backend(S3Server('seaweedfs', *args), part_size=8 << 20, multipart_threshold=8 << 20,"
             " max_concurrency=4)")
    peak_kib, up, down = measure_round_trip(setup, 1024 * MiB, s3.endpoint, s3.access_key, s3.secret_key, s3.bucket,
                                            timeout=300)
    print(f"1 GiB through SeaweedFS: put {up}s, get {down}s, peak RSS {peak_kib // 1024} MiB")
    assert peak_kib * 1024 < 200e6, f"peak RSS {peak_kib // 1024} MiB"
