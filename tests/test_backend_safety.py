"""Backends that cannot hurt: roots that never overlap (issue 10 item 2), calls that end in
bounded time against a server that never answers (item 10), every temporary findable (item 12,
with the per-backend part in the conformance suite), a full store is ENOSPC (item 15), and
create-only declared per endpoint (item 5)."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.helpers import tmpfs
from tests.servers.vdirs import CLI
from vdir.admin import add_backend
from vdir.backends.local import LocalBackend
from vdir.core import VDir
from vdir.errors import InvalidArgument, NoSpace, VDirError

AZURE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def one_line_error(proc: subprocess.CompletedProcess[bytes]) -> str:
    """The ``vdir: error:`` line of a failed command (warnings may come before it), checked to be the only one."""
    err = proc.stderr.decode()
    assert proc.returncode != 0, err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("vdir: error: ")]
    assert len(errors) == 1 and err.rstrip().endswith(errors[0]), err
    return errors[0]


# -- item 2: backend roots never overlap ---------------------------------------------------------
def test_file_roots_may_not_overlap(vd: VDir, tmp_path: Path) -> None:
    objects = tmp_path / "objects"  # the fixture's "local"; "spare" is its sibling
    for url in (f"file://{objects}", f"file://{objects}/sub", f"file://{tmp_path}", str(objects / "deeper" / "x")):
        with pytest.raises(InvalidArgument, match="may not overlap|contains the catalog"):
            add_backend(vd, "clash", url, check=False)
    (tmp_path / "alias").symlink_to(objects)
    with pytest.raises(InvalidArgument, match="backend 'local'"):
        add_backend(vd, "clash", f"file://{tmp_path / 'alias' / 'in'}", check=False)
    assert [r.name for r in vd.catalog.list_backends()] == ["local", "spare"]
    add_backend(vd, "third", f"file://{tmp_path / 'third'}", check=False)  # a sibling is fine
    add_backend(vd, "local", f"file://{objects}", check=False, replace=True)  # --replace keeps its own root
    with pytest.raises(InvalidArgument, match="backend 'spare'"):
        add_backend(vd, "local", f"file://{tmp_path / 'spare'}", check=False, replace=True)


def test_object_store_prefixes_may_not_overlap(vd: VDir) -> None:
    add_backend(vd, "data", "s3://bucket/data", region="us-east-1", check=False)
    for url in ("s3://bucket/data", "s3://bucket/data/sub", "s3://bucket", "s3://bucket/"):
        with pytest.raises(InvalidArgument, match="backend 'data'"):
            add_backend(vd, "clash", url, region="us-east-1", check=False)
    add_backend(vd, "data2", "s3://bucket/data2", region="us-east-1", check=False)  # not below "data/"
    add_backend(vd, "other", "s3://other-bucket/data", region="us-east-1", check=False)
    add_backend(vd, "elsewhere", "s3://bucket/data", endpoint="http://127.0.0.1:9", region="us-east-1", check=False)
    add_backend(vd, "az1", "az://box/a", check=False, region="westeurope")
    with pytest.raises(InvalidArgument, match="backend 'az1'"):
        add_backend(vd, "az2", "az://box", check=False, region="westeurope")
    add_backend(vd, "gs1", "gs://bucket/a", check=False, region="europe-west1")  # another service, same names
    with pytest.raises(InvalidArgument, match="backend 'gs1'"):
        add_backend(vd, "gs2", "gs://bucket/a/b", check=False, region="europe-west1")


def test_system_home_and_vdir_folders_are_refused(cli: CLI, tmp_path: Path) -> None:
    cli.run("init", check=True)
    data = cli.home / ".local" / "share" / "vdir"
    config = cli.home / ".config" / "vdir"
    refused = ["file:///", "/etc", "file:///usr", "/var", str(cli.home), f"file://{data}", f"file://{data}/mount-cache",
               f"file://{config}", f"file://{cli.home / '.local'}", f"file://{cli.home / '.cache' / 'vdir'}",
               f"file://{data / 'objects' / 'inner'}"]
    for url in refused:
        line = one_line_error(cli.run("backend", "add", "bad", url, "--no-check"))
        assert "backend 'bad'" in line, (url, line)
    listed = cli.run("backend", "list", check=True).stdout.decode()
    assert "bad" not in listed
    assert (data / "catalog.db").exists()
    cli.run("backend", "add", "good", f"file://{cli.home / 'my-objects'}", check=True)


def test_a_config_file_elsewhere_may_have_backends_beside_it_not_above_it(cli: CLI, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    cli.env["VDIR_CONFIG"] = str(project / "vdir.yaml")
    cli.run("init", check=True)
    cli.run("backend", "add", "beside", f"file://{project / 'objects'}", check=True)
    line = one_line_error(cli.run("backend", "add", "above", f"file://{project}"))
    assert "contains the vdir config file's folder" in line
    assert (project / "vdir.yaml").exists()


# -- item 15: a full backend is ENOSPC -----------------------------------------------------------
@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "tiny") as where:
        yield where


def test_full_local_backend_raises_nospace(tiny_fs: Path) -> None:
    backend = LocalBackend("tiny", f"file://{tiny_fs / 'objects'}")
    backend.put_bytes("small", b"fits")
    with pytest.raises(NoSpace) as info:
        backend.put("big", io.BytesIO(b"x" * (2 * 1024 * 1024)))
    assert info.value.errno == errno.ENOSPC
    assert "no space" in str(info.value)
    assert [m.key for m in backend.list("")] == ["small"]
    assert list(backend.list_temporaries()) == []  # the temp file of the failed put is gone too
    assert backend.get_bytes("small") == b"fits"


class _Answer507(BaseHTTPRequestHandler):
    """Every request: 507 Insufficient Storage, with the body each service would send."""

    def _reply(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if self.path.startswith("/devstoreaccount1"):
            body, kind = (b'<?xml version="1.0" encoding="utf-8"?><Error><Code>InsufficientAccountResources</Code>'
                          b"<Message>full</Message></Error>"), "application/xml"
        elif "/storage/v1/" in self.path or "/upload/storage/" in self.path:
            body, kind = b'{"error": {"code": 507, "message": "Insufficient Storage"}}', "application/json"
        else:
            body, kind = (b"<Error><Code>InsufficientStorage</Code><Message>the server is full</Message></Error>",
                          "application/xml")
        self.send_response(507)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        if self.path.startswith("/devstoreaccount1"):
            self.send_header("x-ms-error-code", "InsufficientAccountResources")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _reply

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def full_server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Answer507)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize("kind", ["s3", "az", "gs"])
def test_full_cloud_backend_raises_nospace(kind: str, full_server: str) -> None:
    from vdir.backends import open_backend

    if kind == "s3":
        backend = open_backend("full", "s3://bucket/p", {"endpoint_url": full_server, "region": "us-east-1",
                                                          "access_key_id": "k", "secret_access_key": "s"})
    elif kind == "az":
        conn = (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURE_KEY};"
                f"BlobEndpoint={full_server}/devstoreaccount1;")
        backend = open_backend("full", "az://box/p", {"connection_string": conn, "retry_backoff": 0.01})
    else:
        backend = open_backend("full", "gs://bucket/p", {"endpoint_url": full_server})
    try:
        with pytest.raises(NoSpace) as info:
            backend.put_bytes("k", b"data")
        assert info.value.errno == errno.ENOSPC
    finally:
        backend.close()


# -- item 10: a server that accepts but never answers --------------------------------------------
@pytest.fixture
def silent_server() -> Iterator[str]:
    """Accepts TCP connections, reads what comes, never answers a byte."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                conn, _ = listener.accept()
                held.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        listener.close()


def _add_args(kind: str, endpoint: str) -> list[str]:
    if kind == "s3":
        return ["s3://bucket/p", "--endpoint", endpoint, "--region", "us-east-1"]
    if kind == "az":
        conn = (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURE_KEY};"
                f"BlobEndpoint={endpoint}/devstoreaccount1;")
        return ["az://box/p", "--option", f"connection_string={conn}", "--region", "westeurope"]
    return ["gs://bucket/p", "--endpoint", endpoint, "--region", "europe-west1"]


SERVICES = ["s3", "az", "gs"]


def test_backend_add_gives_up_on_a_silent_server_in_bounded_time(cli: CLI, silent_server: str) -> None:
    """With the default timeouts (documented: 3 attempts of at most 5 s connect + 8 s answer),
    ``backend add`` of each service ends with a one-line timeout error and warns while retrying."""
    cli.env.update(AWS_ACCESS_KEY_ID="k", AWS_SECRET_ACCESS_KEY="s")
    cli.run("init", check=True)
    procs = {kind: cli.popen("backend", "add", f"silent-{kind}", *_add_args(kind, silent_server)) for kind in SERVICES}
    for kind, proc in procs.items():
        try:
            out, err = proc.communicate(timeout=100)  # generous; the documented bound is ~25 s
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            pytest.fail(f"{kind}: backend add still waiting on a silent server after 100 s")
        done = subprocess.CompletedProcess(proc.args, proc.returncode or 0, out, err)
        line = one_line_error(done)
        assert "timed out" in line, (kind, line)
        assert "retrying (2/3)" in err.decode() and "no answer from" in err.decode(), (kind, err.decode())
    assert "silent" not in cli.run("backend", "list", check=True).stdout.decode()


@pytest.mark.parametrize("kind", SERVICES)
def test_put_and_fsck_give_up_on_a_silent_server(kind: str, cli: CLI, silent_server: str, tmp_path: Path) -> None:
    """The timeouts and attempts are options of the backend; ``put`` ends with a one-line timeout
    error, ``fsck`` reports the backend unreachable (timed out)."""
    cli.env.update(AWS_ACCESS_KEY_ID="k", AWS_SECRET_ACCESS_KEY="s")
    cli.run("init", check=True)
    quick = ["--option", "connect_timeout=1", "--option", "read_timeout=1", "--option", "max_attempts=2"]
    if kind == "s3":
        quick += ["--option", "create_only=false"]
    cli.run("backend", "add", "silent", *_add_args(kind, silent_server), *quick, "--no-check", check=True)
    src = tmp_path / "f.txt"
    src.write_bytes(b"hello")
    proc = cli.run("put", str(src), "/f.txt", "--backend", "silent", timeout=60)
    line = one_line_error(proc)
    assert "timed out" in line, line
    assert "retrying (2/2)" in proc.stderr.decode(), proc.stderr.decode()
    assert cli.run("ls", "/").stdout.decode().strip() == ""  # nothing half-written
    proc = cli.run("fsck", "--backend", "silent", timeout=60)  # reports the backend unreachable, exit 2
    report = proc.stdout.decode()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr.decode(), proc.stderr.decode()
    assert [row for row in report.splitlines() if row.startswith("unreachable") and "timed out" in row], report
    assert "retrying (2/2)" in proc.stderr.decode(), proc.stderr.decode()


# -- item 12: a killed put leaves a temp file that the local backend lists ----------------------
def test_killed_local_put_leaves_a_listed_temporary(tmp_path: Path) -> None:
    root = tmp_path / "objects"
    code = (
        "import sys, io\n"
        "from vdir.backends.local import LocalBackend\n"
        "class Slow(io.RawIOBase):\n"
        "    sent = 0\n"
        "    def readable(self): return True\n"
        "    def readinto(self, b):\n"
        "        if self.sent >= 12 << 20:\n"
        "            print('stalled', flush=True); import time; time.sleep(600)\n"
        "        n = min(len(b), 1 << 20); b[:n] = b'x' * n; self.sent += n; return n\n"
        f"LocalBackend('l', 'file://{root}').put('dir/big.bin', io.BufferedReader(Slow()))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"stalled"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    backend = LocalBackend("l", f"file://{root}")
    assert list(backend.list("")) == []  # never an object
    temps = list(backend.list_temporaries())
    assert len(temps) == 1 and temps[0].kind == "tempfile" and temps[0].key.startswith("dir/.vdir-tmp-")
    assert temps[0].size >= 8 << 20 and temps[0].mtime is not None and temps[0].mtime <= time.time()
    backend.remove_temporary(temps[0])
    assert list(backend.list_temporaries()) == []
    assert not any(p.name.startswith(".vdir-tmp-") for p in root.rglob("*"))
    backend.put_bytes("dir/real", b"1")
    with pytest.raises(VDirError):  # only temp files may be removed this way
        backend.remove_temporary(type(temps[0])(key="dir/real", size=1, mtime=None, kind="tempfile", handle="dir/real"))
    assert backend.get_bytes("dir/real") == b"1"


# -- item 5: create-only is probed per S3 endpoint and kept with the record ----------------------
@pytest.mark.parametrize("server", ["moto_s3", "seaweedfs_s3"])
def test_s3_create_only_is_probed_once_and_recorded(server: str, vd: VDir, request: pytest.FixtureRequest,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.servers.s3 import S3Server, make_s3_backend

    s3: S3Server = request.getfixturevalue(server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret_key)
    prefix = f"probe{os.getpid()}-{server}"
    record = add_backend(vd, "s3", f"s3://{s3.bucket}/{prefix}", endpoint=s3.endpoint, region="us-east-1", check=True)
    declared = record.options["create_only"]
    # moto and SeaweedFS check If-None-Match, but racily (two multipart creators can both win:
    # SeaweedFS about one race in 40 under load), so neither is declared create-only
    assert declared is False
    assert vd.catalog.get_backend("s3").options["create_only"] is declared
    backend = vd.backend("s3")
    try:
        assert backend.create_only_atomic is declared
        assert not [m.key for m in backend.list("") if ".vdir-probe" in m.key]  # the probe cleaned up
        assert list(backend.list_temporaries()) == []  # type: ignore[attr-defined]
    finally:
        vd.forget_backend("s3")
    # given explicitly, the option is kept and nothing is probed
    record = add_backend(vd, "s3b", f"s3://{s3.bucket}/{prefix}-b", endpoint=s3.endpoint, region="us-east-1",
                         options={"create_only": "false"}, check=True)
    assert record.options["create_only"] == "false"
    assert vd.backend("s3b").create_only_atomic is False
    if declared:  # what the probe promised holds for the multipart path too
        racer = make_s3_backend(s3, prefix=f"{prefix}-race", create_only=True)
        try:
            assert [race_create(racer, 6 * 1024 * 1024, f"race{n}") for n in range(3)] == [1, 1, 1]
        finally:
            racer.close()


def race_create(backend: object, size: int, key: str = "race") -> int:
    from tests.test_backend_conformance import Source
    from vdir.backends.base import Backend, PutMode
    from vdir.errors import AlreadyExists

    assert isinstance(backend, Backend)
    wins: list[int] = []
    barrier = threading.Barrier(2)

    def writer(seed: int) -> None:
        barrier.wait()
        with contextlib.suppress(AlreadyExists):
            backend.put(key, Source(size, seed), PutMode.CREATE, size=size)  # type: ignore[attr-defined]
            wins.append(seed)

    threads = [threading.Thread(target=writer, args=(n,)) for n in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(wins)
