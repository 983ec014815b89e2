"""Direct transfers (issue 14 item 4): pre-signed URLs made by the S3 and Azure backends (moto,
Azurite), used with real HTTP requests, and the core's direct upload: the object is read back
and its hash checked before the catalog commit; a mismatch leaves nothing.  GCS signs only with
credentials that can sign (a service-account key): with the emulator's anonymous ones it says
it cannot, and a key made here signs locally."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers.azure import Azurite, make_azure_backend
from tests.servers.gcs import FakeGCS, make_gcs_backend
from tests.servers.s3 import S3Server, make_s3_backend
from vdir import objects, presign
from vdir.backends.base import Backend
from vdir.catalog.base import BackendRecord, open_catalog
from vdir.core import VDir
from vdir.errors import AlreadyExists, IntegrityError, IsADirectory, NotFound
from vdir.hashing import hash_bytes

MiB = 1024 * 1024


def vdir_on(tmp_path: Path, backend: Backend) -> VDir:
    """A VDir whose only backend is ``backend`` (opened by the fixture, with emulator credentials)."""
    vd = VDir(open_catalog(f"sqlite:///{tmp_path / 'catalog.db'}"), default_backend=backend.name)
    vd.catalog.put_backend(BackendRecord(backend.name, backend.url, cloud="aws"))
    vd._backends[backend.name] = backend
    return vd


@pytest.fixture(params=["s3", "azure"])
def signing_vd(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VDir]:
    if request.param == "s3":
        backend: Backend = make_s3_backend(request.getfixturevalue("moto_s3"))
    else:
        backend = make_azure_backend(request.getfixturevalue("azurite"))
    vd = vdir_on(tmp_path, backend)
    try:
        yield vd
    finally:
        vd.close()


def put_to(url: dict, data: bytes) -> httpx.Response:
    return httpx.request(url["method"], url["url"], content=data, headers=url["headers"])


def test_backends_sign_get_and_put_urls_that_work_over_http(moto_s3: S3Server, azurite: Azurite) -> None:
    for backend in (make_s3_backend(moto_s3), make_azure_backend(azurite)):
        try:
            backend.put_bytes("a dir/ünï.bin", b"hello world")
            get = backend.presign_get("a dir/ünï.bin", 60)
            assert get is not None and get.method == "GET"
            assert httpx.get(get.url).content == b"hello world"
            assert httpx.get(get.url, headers={"Range": "bytes=6-10"}).content == b"world"
            put = backend.presign_put("new/key.bin", 60)
            assert put is not None and put.method == "PUT"
            assert put_to(put.as_dict(), b"direct bytes").status_code in (200, 201)
            assert backend.get_bytes("new/key.bin") == b"direct bytes"
            # a URL signed for one key does not read another
            assert httpx.get(get.url.replace("a%20dir", "b%20dir", 1)).status_code >= 400
        finally:
            backend.close()


def test_s3_urls_expire(moto_s3: S3Server) -> None:
    backend = make_s3_backend(moto_s3)
    backend.put_bytes("k", b"x")
    signed = backend.presign_get("k", 1)
    assert signed is not None and "X-Amz-Expires=1" in signed.url


def test_gcs_cannot_sign_with_anonymous_credentials(fake_gcs: FakeGCS) -> None:
    backend = make_gcs_backend(fake_gcs)
    assert backend.presign_get("k", 60) is None
    assert backend.presign_put("k", 60) is None


def test_gcs_signs_locally_with_a_service_account_key(fake_gcs: FakeGCS, tmp_path: Path) -> None:
    """A service-account key signs V4 URLs locally; fake-gcs-server serves them (it does not check
    the signature, real GCS does)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    creds = tmp_path / "sa.json"
    creds.write_text(json.dumps({
        "type": "service_account", "project_id": "test", "private_key_id": "1", "private_key": pem.decode(),
        "client_email": "vdir@test.iam.gserviceaccount.com", "client_id": "1", "token_uri": "https://oauth2.googleapis.com/token",
    }))
    anonymous = make_gcs_backend(fake_gcs)
    anonymous.put_bytes("dir/k.bin", b"hello gcs")
    signer = make_gcs_backend(fake_gcs, url=anonymous.url, credentials_file=str(creds))
    signed = signer.presign_get("dir/k.bin", 60)
    assert signed is not None
    assert signed.url.startswith(fake_gcs.endpoint) and "X-Goog-Signature=" in signed.url and "/dir/k.bin?" in signed.url
    assert httpx.get(signed.url).content == b"hello gcs"
    put = signer.presign_put("dir/new.bin", 60)
    assert put is not None
    assert put_to(put.as_dict(), b"put through a URL").status_code == 200
    assert anonymous.get_bytes("dir/new.bin") == b"put through a URL"


def test_download_url_reads_the_file_and_names_its_hash(signing_vd: VDir) -> None:
    data = os.urandom(3 * MiB + 5)
    signing_vd.put(data, "/d/file.bin")
    url = presign.download_url(signing_vd, "/d/file.bin", expires=60)
    assert url is not None
    assert url["size"] == len(data) and url["hash"] == "xxh128:" + hash_bytes(data)
    body = httpx.get(url["url"]).content
    assert body == data
    assert httpx.get(url["url"], headers={"Range": "bytes=10-19"}).content == data[10:20]
    with pytest.raises(NotFound):
        presign.download_url(signing_vd, "/d/missing")
    with pytest.raises(IsADirectory):
        presign.download_url(signing_vd, "/d")


def test_download_url_is_none_where_no_backend_signs(tmp_path: Path) -> None:
    from vdir.backends.local import LocalBackend

    (tmp_path / "objects").mkdir()
    vd = vdir_on(tmp_path, LocalBackend("local", f"file://{tmp_path / 'objects'}"))
    with vd:
        vd.put(b"abc", "/f")
        assert presign.download_url(vd, "/f") is None
        assert presign.start_direct_upload(vd, "/g", 3) is None
        assert objects.load_intents(vd.catalog) == []


def test_direct_upload_commits_after_reading_it_back(signing_vd: VDir) -> None:
    data = os.urandom(2 * MiB + 1)
    up = presign.start_direct_upload(signing_vd, "/up/new.bin", len(data), mode=0o600, mtime=1234.0)
    assert up is not None
    assert [i.token for i in objects.load_intents(signing_vd.catalog)] == [up["intent"]]  # named before any byte
    assert not signing_vd.exists("/up/new.bin")
    response = put_to(up, data)
    assert response.status_code in (200, 201), response.text
    entry = presign.finish_direct_upload(signing_vd, json.loads(json.dumps(up)),
                                         "xxh128:" + hash_bytes(data))
    assert entry.size == len(data) and entry.hash == hash_bytes(data) and entry.mode == 0o600 and entry.mtime == 1234.0
    assert entry.replicas[0].key == up["key"]  # the staged key is the object's: no copy
    assert signing_vd.cat("/up/new.bin") == data
    with signing_vd.open("/up/new.bin") as f:  # block hashes recorded: ranged reads verify
        f.seek(MiB)
        assert f.read(10) == data[MiB:MiB + 10]
    assert objects.load_intents(signing_vd.catalog) == []


def test_direct_upload_replaces_with_force_and_releases_the_old_object(signing_vd: VDir) -> None:
    signing_vd.put(b"old", "/f")
    old_key = signing_vd.entry("/f").replicas[0].key
    with pytest.raises(AlreadyExists):
        presign.start_direct_upload(signing_vd, "/f", 3, force=False)
    up = presign.start_direct_upload(signing_vd, "/f", 3)  # force unknown yet: decided at the finish
    assert up is not None
    put_to(up, b"new")
    with pytest.raises(AlreadyExists):
        presign.finish_direct_upload(signing_vd, dict(up), "xxh128:" + hash_bytes(b"new"), force=False)
    up = presign.start_direct_upload(signing_vd, "/f", 3, force=True)
    assert up is not None
    put_to(up, b"new")
    presign.finish_direct_upload(signing_vd, up, "xxh128:" + hash_bytes(b"new"))
    assert signing_vd.cat("/f") == b"new"
    assert not signing_vd.backend(up["backend"]).exists(old_key)
    assert objects.load_intents(signing_vd.catalog) == []


def test_a_hash_mismatch_deletes_the_staged_object_and_writes_nothing(signing_vd: VDir) -> None:
    up = presign.start_direct_upload(signing_vd, "/bad.bin", 4)
    assert up is not None
    put_to(up, b"evil")
    with pytest.raises(IntegrityError, match="claimed"):
        presign.finish_direct_upload(signing_vd, up, "xxh128:" + hash_bytes(b"good"))
    assert not signing_vd.exists("/bad.bin")
    assert not signing_vd.backend(up["backend"]).exists(up["key"])
    assert objects.load_intents(signing_vd.catalog) == []


def test_a_size_mismatch_is_refused_too(signing_vd: VDir) -> None:
    up = presign.start_direct_upload(signing_vd, "/short.bin", 10)
    assert up is not None
    put_to(up, b"only7by")
    with pytest.raises(IntegrityError, match="announced"):
        presign.finish_direct_upload(signing_vd, up)
    assert not signing_vd.exists("/short.bin")


def test_finishing_before_the_put_arrives_changes_nothing(signing_vd: VDir) -> None:
    up = presign.start_direct_upload(signing_vd, "/later.bin", 2)
    assert up is not None
    with pytest.raises(NotFound, match="not arrived"):
        presign.finish_direct_upload(signing_vd, up)
    put_to(up, b"ok")
    assert presign.finish_direct_upload(signing_vd, up).size == 2


def test_abort_removes_the_object_and_the_intent(signing_vd: VDir) -> None:
    up = presign.start_direct_upload(signing_vd, "/gone.bin", 2)
    assert up is not None
    put_to(up, b"ab")
    presign.abort_direct_upload(signing_vd, up)
    assert not signing_vd.backend(up["backend"]).exists(up["key"])
    assert objects.load_intents(signing_vd.catalog) == []
    assert not signing_vd.exists("/gone.bin")


def test_a_name_taken_meanwhile_is_refused_at_finish(signing_vd: VDir) -> None:
    up = presign.start_direct_upload(signing_vd, "/race.bin", 2)
    assert up is not None
    put_to(up, b"ab")
    signing_vd.put(b"theirs", "/race.bin")
    with pytest.raises(AlreadyExists):
        presign.finish_direct_upload(signing_vd, up)
    assert signing_vd.cat("/race.bin") == b"theirs"
    assert not signing_vd.backend(up["backend"]).exists(up["key"])


def test_wire_hashes() -> None:
    digest = hash_bytes(b"x")
    assert presign.bare_hash("xxh128:" + digest) == digest == presign.bare_hash(digest.upper())
    assert presign.bare_hash(None) is None
    for bad in ("md5:" + digest, "xxh128:zz", "xxh128:" + digest[:-1]):
        with pytest.raises(Exception, match="hash|digest"):
            presign.bare_hash(bad)
