"""Box- and GitHub-specific behaviour, against the FAKE servers in tests/fakes/ (no emulator exists
for either service; the fakes implement the documented API subset vdir uses)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

pytest.importorskip("box_sdk_gen", reason="the box extra is not installed")
pytest.importorskip("github", reason="the github extra is not installed")

from tests.fakes.box_server import FakeBox  # noqa: E402
from tests.fakes.github_server import FakeGitHub  # noqa: E402
from tests.helpers import measure_round_trip, race  # noqa: E402
from tests.servers.box import CHUNKED_THRESHOLD  # noqa: E402
from tests.servers.github import make_github_backend  # noqa: E402
from vdir.backends import open_backend  # noqa: E402
from vdir.backends.base import Backend, PutMode  # noqa: E402
from vdir.backends.box import BoxBackend, decode_name, encode_name  # noqa: E402
from vdir.backends.github import GitHubBackend  # noqa: E402
from vdir.errors import (  # noqa: E402
    AlreadyExists,
    AuthenticationError,
    Conflict,
    IsADirectory,
    NotADirectory,
    NotFound,
    TransientError,
)


# -- both ------------------------------------------------------------------------------------------
def test_box_wrong_token_is_authentication_error(fake_box: FakeBox, tmp_path: Path) -> None:
    bad = tmp_path / "bad-token"
    bad.write_text("not-the-token")
    backend = open_backend("mybox", "box://somewhere", {"token_file": str(bad), "base_url": fake_box.url})
    with pytest.raises(AuthenticationError, match="box backend 'mybox'"):
        backend.head("x")
    with pytest.raises(AuthenticationError):
        backend.put_bytes("x", b"data")


def test_github_wrong_token_is_authentication_error(fake_github: FakeGitHub, tmp_path: Path) -> None:
    fake_github.create_repo("o", "authrepo")
    bad = tmp_path / "bad-token"
    bad.write_text("not-the-token")
    backend = open_backend("myhub", "github://o/authrepo@main", {"token_file": str(bad), "base_url": fake_github.url,
                                                                 "seconds_between_writes": None})
    with pytest.raises(AuthenticationError, match="github backend 'myhub'"):
        backend.head("x")
    with pytest.raises(AuthenticationError, match="token"):
        backend.put_bytes("x", b"data")


def test_registry_opens_both_schemes(fake_box: FakeBox, fake_github: FakeGitHub, box_token_file: Path,
                                     github_token_file: Path) -> None:
    fake_github.create_repo("o", "registry")
    gh = open_backend("g", "github://o/registry/sub", {"token_file": str(github_token_file), "base_url": fake_github.url,
                                                       "seconds_between_writes": None})
    assert isinstance(gh, GitHubBackend) and gh.branch == "main" and gh.prefix == "sub/"
    bx = open_backend("b", "box://id:0/reg", {"token_file": str(box_token_file), "base_url": fake_box.url})
    assert isinstance(bx, BoxBackend)
    for backend in (gh, bx):
        backend.put_bytes("k/v", b"1")
        assert backend.get_bytes("k/v") == b"1"


@pytest.mark.parametrize("fixture", ["backend_box", "backend_github"])
def test_one_namespace_for_files_and_folders(request: pytest.FixtureRequest, fixture: str) -> None:
    """Box and git cannot hold an object 'a' and an object 'a/b': the error says so, nothing is lost."""
    backend: Backend = request.getfixturevalue(fixture)
    backend.put_bytes("a", b"file")
    with pytest.raises(NotADirectory, match="'a' is an object"):
        backend.put_bytes("a/b", b"below")
    backend.put_bytes("d/e", b"x")
    with pytest.raises(IsADirectory):
        backend.put_bytes("d", b"over a folder")
    assert backend.get_bytes("a") == b"file" and backend.get_bytes("d/e") == b"x"
    assert [m.key for m in backend.list()] == ["a", "d/e"]


def test_box_transient_errors_are_retried(fake_box: FakeBox, backend_box: BoxBackend) -> None:
    backend_box.put_bytes("t", b"1")
    fake_box.fail_next = [503, 429]
    assert backend_box.put_bytes("t", b"2").size == 1
    assert backend_box.get_bytes("t") == b"2" and fake_box.fail_next == []
    fake_box.fail_next = [500] * 10
    try:
        with pytest.raises(TransientError):
            backend_box.head("t")
    finally:
        fake_box.fail_next = []


def test_github_transient_errors_are_retried(fake_github: FakeGitHub, backend_github: GitHubBackend) -> None:
    fake_github.fail_next = [502, 503]
    backend_github.put_bytes("t", b"1")
    assert backend_github.get_bytes("t") == b"1" and fake_github.fail_next == []
    assert fake_github.commits(*_owner_repo(backend_github)) == ["vdir: put t"]


# -- GitHub ----------------------------------------------------------------------------------------
def _owner_repo(backend: GitHubBackend) -> tuple[str, str]:
    owner, repo = backend.full_name.split("/")
    return owner, repo


def test_github_each_write_is_one_commit_with_message(fake_github: FakeGitHub, backend_github: GitHubBackend) -> None:
    backend_github.put_bytes("a.txt", b"one")
    backend_github.put_bytes("dir/b.txt", b"two")
    backend_github.put_bytes("a.txt", b"three")
    backend_github.delete("a.txt")
    backend_github.delete("a.txt")  # missing: no commit
    assert fake_github.commits(*_owner_repo(backend_github)) == [
        "vdir: put a.txt", "vdir: put dir/b.txt", "vdir: put a.txt", "vdir: delete a.txt"]


def test_github_etag_is_blob_sha(backend_github: GitHubBackend) -> None:
    meta = backend_github.put_bytes("x", b"hello\n")
    assert meta.etag == "ce013625030ba8dba906f756967f9e9ca394464a"  # `echo hello | git hash-object --stdin`
    assert backend_github.head("x").etag == meta.etag


def test_github_large_file_goes_through_git_data_api(fake_github: FakeGitHub, github_token_file: Path) -> None:
    backend = make_github_backend(fake_github, github_token_file, contents_limit=64 * 1024)
    data = bytes(range(256)) * (6 * 1024)  # 1.5 MiB: above the contents API's 1 MB read limit too
    before = fake_github.calls.copy()
    meta = backend.put_bytes("big/blob.bin", data)
    calls = fake_github.calls - before
    assert calls["POST git/blobs"] == 1 and calls["POST git/trees"] == 1 and calls["POST git/commits"] == 1
    assert calls["PATCH git/refs"] == 1 and calls["PUT contents/data"] == 0
    before = fake_github.calls.copy()
    assert backend.get_bytes("big/blob.bin") == data
    assert backend.get_bytes("big/blob.bin", 1000, 1010) == data[1000:1010]
    assert (fake_github.calls - before)["GET git/blobs"] == 2
    assert backend.head("big/blob.bin") == meta.__class__(key="big/blob.bin", size=len(data), etag=meta.etag)
    assert fake_github.commits(*_owner_repo(backend)) == ["vdir: put big/blob.bin"]
    backend.put_bytes("small", b"s")  # small ones still use the contents API
    assert fake_github.calls["PUT contents/data"] >= 1


def test_github_too_big_fails_clearly(fake_github: FakeGitHub, github_token_file: Path) -> None:
    backend = make_github_backend(fake_github, github_token_file, max_size=1000)
    with pytest.raises(OSError, match="limit"):
        backend.put_bytes("huge", b"x" * 1001)
    assert not backend.exists("huge")


def test_github_rate_limit_is_reported_with_reset_time(fake_github: FakeGitHub, backend_github: GitHubBackend) -> None:
    backend_github.put_bytes("a", b"1")
    fake_github.rate_limited = True
    try:
        with pytest.raises(TransientError, match=r"rate limit exceeded; it resets at \d\d:\d\d:\d\d UTC") as info:
            backend_github.head("a")
        assert info.value.retryable
    finally:
        fake_github.rate_limited = False
    assert backend_github.get_bytes("a") == b"1"


def test_github_sha_conflict(fake_github: FakeGitHub, backend_github: GitHubBackend, github_token_file: Path) -> None:
    first = backend_github.put_bytes("f", b"v1")
    other = GitHubBackend("other", backend_github.url, token_file=str(github_token_file), base_url=fake_github.url,
                          seconds_between_writes=None)
    other.put_bytes("f", b"v2 by someone else")
    with pytest.raises(Conflict):
        backend_github.put_bytes("f", b"v3", PutMode.update(first.etag or ""))
    assert backend_github.get_bytes("f") == b"v2 by someone else"
    current = backend_github.head("f").etag or ""
    backend_github.put_bytes("f", b"v3", PutMode.update(current))
    with pytest.raises(AlreadyExists):
        other.put_bytes("f", b"x", PutMode.CREATE)
    with pytest.raises(Conflict):
        backend_github.put_bytes("missing", b"x", PutMode.update(current))


@pytest.mark.parametrize("contents_limit", [1024 * 1024, 16], ids=["contents-api", "git-data-api"])
def test_github_concurrent_writers_serialize(fake_github: FakeGitHub, github_token_file: Path, contents_limit: int) -> None:
    """Separate instances (no shared lock): the server-side checks keep every write and one CREATE."""
    first = make_github_backend(fake_github, github_token_file, contents_limit=contents_limit)
    backends = [first] + [GitHubBackend(f"w{i}", first.url, token_file=str(github_token_file), base_url=fake_github.url,
                                        seconds_between_writes=None, contents_limit=contents_limit) for i in range(5)]
    results = race(6, lambda i: backends[i].put_bytes("same", f"writer {i}".encode(), PutMode.CREATE))
    assert sum(not isinstance(r, Exception) for r in results) == 1
    assert all(isinstance(r, AlreadyExists) for r in results if isinstance(r, Exception))
    race(6, lambda i: backends[i].put_bytes(f"own/{i}", b"x" * 40))
    assert [m.key for m in first.list("own/")] == [f"own/{i}" for i in range(6)]


# -- Box -------------------------------------------------------------------------------------------
def test_box_chunked_upload_above_threshold(fake_box: FakeBox, backend_box: BoxBackend) -> None:
    before = fake_box.calls.copy()
    backend_box.put_bytes("small.bin", b"s" * (CHUNKED_THRESHOLD - 1))
    assert (fake_box.calls - before)["POST upload_sessions"] == 0
    data = bytes(range(256)) * (CHUNKED_THRESHOLD // 256 * 3 // 2)  # 1.5 MiB = 6 parts of 256 KiB
    before = fake_box.calls.copy()
    meta = backend_box.put("big.bin", io.BytesIO(data), size=len(data))
    calls = fake_box.calls - before
    assert calls["POST upload_sessions"] == 1 and calls["PUT upload_sessions"] == 6
    assert calls["POST upload_sessions/commit"] == 1 and calls["POST upload:files/content"] == 0
    assert backend_box.get_bytes("big.bin") == data and meta.size == len(data)
    # unknown size: spooled, then chunked too; and a new version of an existing file
    before = fake_box.calls.copy()
    backend_box.put("big.bin", io.BytesIO(data[::-1]))
    assert (fake_box.calls - before)["POST upload:files/upload_sessions"] == 1
    assert backend_box.get_bytes("big.bin", 10, 20) == data[::-1][10:20]


def test_box_folder_ids_are_cached(fake_box: FakeBox, backend_box: BoxBackend) -> None:
    backend_box.put_bytes("d/e/f/one", b"1")
    before = fake_box.calls.copy()
    backend_box.head("d/e/f/one")
    backend_box.put_bytes("d/e/f/two", b"2")
    calls = fake_box.calls - before
    # one listing of d/e/f per lookup; no walk from the root, no folder creation
    assert calls["GET folders/items"] == 2 and calls["POST folders"] == 0


def test_box_etag_conflict(fake_box: FakeBox, backend_box: BoxBackend, box_token_file: Path) -> None:
    first = backend_box.put_bytes("doc", b"v1")
    other = BoxBackend("other", backend_box.url, token_file=str(box_token_file), base_url=fake_box.url)
    other.put_bytes("doc", b"v2 by someone else")
    with pytest.raises(Conflict):
        backend_box.put_bytes("doc", b"v3", PutMode.update(first.etag or ""))
    assert backend_box.get_bytes("doc") == b"v2 by someone else"
    backend_box.put_bytes("doc", b"v3", PutMode.update(backend_box.head("doc").etag or ""))
    with pytest.raises(AlreadyExists):
        other.put_bytes("doc", b"x", PutMode.CREATE)
    # deleted and recreated: a new file id, so the old etag does not match
    etag = backend_box.head("doc").etag or ""
    other.delete("doc")
    other.put_bytes("doc", b"new file")
    with pytest.raises(Conflict):
        backend_box.put_bytes("doc", b"x", PutMode.update(etag))


def test_box_if_match_reaches_the_server(fake_box: FakeBox, backend_box: BoxBackend) -> None:
    """A stale etag of the same file is refused by Box itself (412), not only by our pre-check."""
    meta = backend_box.put_bytes("p", b"1")
    file_id, _, etag = (meta.etag or "").partition(":")
    stale = f"{file_id}:{int(etag) - 1}"
    with pytest.raises(Conflict, match="etag mismatch"):
        backend_box.put_bytes("p", b"2", PutMode.update(stale))


def test_box_names_box_refuses_round_trip(backend_box: BoxBackend) -> None:
    keys = ["trailing space /x", "back\\slash", "dots/..", "dots/.", "pct%41", "tab\there", "ok name"]
    for key in keys:
        backend_box.put_bytes(key, key.encode())
    assert [m.key for m in backend_box.list()] == sorted(keys)
    for key in keys:
        assert backend_box.get_bytes(key) == key.encode()
    assert all(decode_name(encode_name(k)) == k for k in keys)


def test_box_delete_prunes_empty_folders(backend_box: BoxBackend) -> None:
    backend_box.put_bytes("a/b/c", b"1")
    backend_box.put_bytes("a/keep", b"2")
    backend_box.delete("a/b/c")
    assert backend_box.list_with_delimiter("a/").prefixes == []
    with pytest.raises(NotFound):
        backend_box.head("a/b/c")
    backend_box.put_bytes("a/b/again", b"3")  # the cached id of a/b is stale: resolved again
    assert backend_box.get_bytes("a/b/again") == b"3"


def test_box_concurrent_create_one_wins(fake_box: FakeBox, backend_box: BoxBackend, box_token_file: Path) -> None:
    backends: list[Backend] = [backend_box] + [BoxBackend(f"w{i}", backend_box.url, token_file=str(box_token_file),
                                                          base_url=fake_box.url) for i in range(5)]
    results = race(6, lambda i: backends[i].put_bytes("deep/er/same", f"writer {i}".encode(), PutMode.CREATE))
    assert sum(not isinstance(r, Exception) for r in results) == 1
    assert all(isinstance(r, AlreadyExists) for r in results if isinstance(r, Exception))


@pytest.mark.slow
def test_box_one_gib_round_trip_in_bounded_memory(tmp_path: Path) -> None:
    # Box's own sizes (8 MiB parts, upload sessions from 20 MB); the fake keeps the bytes in
    # this process, the backend runs in a child whose peak RSS is measured.
    fake = FakeBox()
    fake.start()
    token = tmp_path / "token"
    token.write_text(fake.token)
    setup = ("from vdir.backends.box import BoxBackend\n"
             "backend = BoxBackend('box', 'box://vdir-tests/huge', token_file=args[0], base_url=args[1])")
    try:
        peak_kib, _, _ = measure_round_trip(setup, 1 << 30, str(token), fake.url)
    finally:
        fake.stop()
    print(f"1 GiB through box: peak RSS {peak_kib // 1024} MiB")
    assert peak_kib < 200 * 1000
