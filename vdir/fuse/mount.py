"""Mount lifecycle: checks, serving in the foreground, starting in the background, unmounting.

This is the only module that imports libfuse (through mfusepy): libfuse3 is preferred
(``FUSE_LIBRARY_PATH`` is set to it when present and not set already), libfuse2 is the
fallback.  Everything that can go wrong before the mount exists is a one-line
:class:`~vdir.errors.VDirError`.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import errno
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from vdir.config import data_dir
from vdir.errors import (
    AlreadyExists,
    CatalogError,
    InvalidArgument,
    MissingDependency,
    NotADirectory,
    NotFound,
    PermissionDenied,
    Timeout,
    VDirError,
)
from vdir.procs import alive

if TYPE_CHECKING:
    from vdir.core import VDir

log = logging.getLogger("vdir.fuse")

FSNAME = "vdir"
FSTYPE = "fuse.vdir"
LIBFUSE3_PATHS = ("/lib/x86_64-linux-gnu/libfuse3.so.3", "/usr/lib/x86_64-linux-gnu/libfuse3.so.3", "/usr/lib/libfuse3.so.3")


@dataclass
class MountOptions:
    """Everything a mount needs besides the VDir; JSON-able, handed to a background process."""

    mountpoint: str
    config: str | None = None
    read_only: bool = False
    cache_dir: str | None = None
    cache_size: int = 10 * 1024**3
    allow_other: bool = False
    attr_timeout: float = 1.0
    entry_timeout: float = 1.0
    xattrs: bool = True
    noatime: bool = False
    """Never move access times (the default is ``relatime``)."""
    write_back: bool = False
    """``close`` returns once the file is in the journal; the write-back commits it (``fsync`` still waits)."""
    write_back_delay: float = 5.0
    """With ``write_back``: seconds from a file's last close to the start of its upload (as
    rclone's ``--vfs-write-back``), so uploads do not compete with a burst of writes."""
    debug: bool = False


# -- libfuse -------------------------------------------------------------------------------------
def load_fuse() -> ModuleType:
    """Import mfusepy on libfuse3 when available, else libfuse2; ``MissingDependency`` if neither."""
    if "mfusepy" in sys.modules:
        return sys.modules["mfusepy"]
    if not os.environ.get("FUSE_LIBRARY_PATH"):
        lib3 = next((p for p in LIBFUSE3_PATHS if os.path.exists(p)), None) or ctypes.util.find_library("fuse3")
        if lib3:
            os.environ["FUSE_LIBRARY_PATH"] = lib3
    try:
        import mfusepy
    except ModuleNotFoundError:
        raise MissingDependency("mounting needs the mfusepy package: pip install 'vdir[fuse]'") from None
    except OSError as exc:
        if os.environ.pop("FUSE_LIBRARY_PATH", None):
            with contextlib.suppress(OSError):
                import mfusepy  # libfuse2 fallback

                return mfusepy
        raise MissingDependency(f"libfuse is not installed ({exc}): apt install fuse3 (or libfuse2)") from None
    return mfusepy


def fuse_major() -> int:
    return int(load_fuse().fuse_version_major)


class KernelCache:
    """Drops the kernel's cached attributes and pages of a path (libfuse3's
    ``fuse_invalidate_path``): the other names of a hard-linked file after a change through one.
    The ``struct fuse`` it needs is taken from the request context in ``init``; on libfuse2 (no
    such call) it does nothing and the attribute timeout bounds staleness."""

    def __init__(self, fuse: ModuleType) -> None:
        self._lib = fuse._libfuse
        self._call = getattr(self._lib, "fuse_invalidate_path", None)
        if self._call is not None:
            self._call.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
            self._call.restype = ctypes.c_int
        self._fuse: int | None = None

    def capture(self) -> None:
        """Called in ``init``, where libfuse's context names this filesystem."""
        ctx = self._lib.fuse_get_context()
        if ctx:
            self._fuse = ctx.contents.fuse or None

    def __call__(self, path: str) -> None:
        if self._call is not None and self._fuse is not None:
            self._call(self._fuse, os.fsencode(path))  # -ENOENT when the kernel holds nothing of it


# -- mount table -----------------------------------------------------------------------------------
def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def mounts() -> dict[str, tuple[str, str]]:
    """Mount point -> (filesystem type, source), from ``/proc/self/mountinfo``."""
    table: dict[str, tuple[str, str]] = {}
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as fh:
        for line in fh:
            left, _, right = line.partition(" - ")
            fields, tail = left.split(), right.split()
            if len(fields) >= 5 and len(tail) >= 2:
                table[_unescape(fields[4])] = (tail[0], _unescape(tail[1]))
    return table


def is_mounted(mountpoint: str | os.PathLike[str], fstype: str | None = None) -> bool:
    found = mounts().get(os.path.abspath(os.fspath(mountpoint)))
    return found is not None and (fstype is None or found[0] == fstype)


def is_dead_mount(path: str) -> bool:
    """A FUSE mount whose process is gone: every access fails with ``ENOTCONN``."""
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno in (errno.ENOTCONN, errno.ECONNABORTED)
    return False


def clear_dead_mount(path: str) -> None:
    """Lazily unmount a dead FUSE mount at ``path`` (left by a killed mount process), or say
    exactly what to run."""
    for tool, args in (("fusermount3", ["-uz"]), ("fusermount", ["-uz"]), ("umount", ["-l"])):
        exe = shutil.which(tool)
        if exe is not None and subprocess.run([exe, *args, path], capture_output=True).returncode == 0:
            break
    if path in mounts():
        raise VDirError(f"{path}: a dead mount (its process was killed) is in the way and could not be removed; "
                        f"run 'fusermount3 -uz {path}' (or 'umount -l {path}' as root) and mount again")
    log.warning("%s: removed a dead mount left by a killed mount process", path)


def check_mountpoint(mountpoint: str) -> str:
    """The absolute mount point, or a one-line error saying why it cannot be mounted on.  A
    dead FUSE mount left there by a killed mount process is unmounted (lazily) first."""
    path = os.path.abspath(mountpoint)
    found = mounts().get(path)
    if found is not None and found[0].startswith("fuse") and is_dead_mount(path):
        clear_dead_mount(path)
        found = mounts().get(path)
    if found is not None:
        raise AlreadyExists(f"{path}: already mounted ({found[0]}); unmount it first with 'vdir umount {path}'")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise NotFound(f"{path}: mount point does not exist (create it with mkdir)") from None
    except OSError as exc:
        raise VDirError(f"{path}: cannot use as a mount point: {exc.strerror}") from None
    if not os.path.isdir(path) or not st.st_mode & 0o040000:
        raise NotADirectory(f"{path}: mount point is not a directory", path=path)
    return path


def check_device() -> None:
    if not os.path.exists("/dev/fuse"):
        raise MissingDependency("/dev/fuse does not exist: load the fuse kernel module (modprobe fuse) or pass the device to the container")
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        raise PermissionDenied("/dev/fuse is not readable and writable by this user")


def default_cache_dir(catalog_url: str) -> Path:
    """One cache directory per catalog, so a remount finds what an earlier mount left pending."""
    return data_dir() / "mount-cache" / hashlib.sha256(catalog_url.encode()).hexdigest()[:16]


def _registry(mountpoint: str) -> Path:
    return data_dir() / "mounts" / (hashlib.sha256(mountpoint.encode()).hexdigest()[:16] + ".json")


def check_catalog(vd: VDir) -> None:
    try:
        vd.stat("/")
    except VDirError as exc:
        raise CatalogError(f"catalog unreachable: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - any failure here means we cannot serve
        raise CatalogError(f"catalog unreachable: {type(exc).__name__}: {exc}") from exc


SWITCH_INTERVAL = 0.0005
"""Seconds a thread may hold the GIL while others wait (Python's default is 0.005)."""
FUSE_READDIR_PLUS = 1
FUSE_FILL_DIR_PLUS = 2


# -- serving -------------------------------------------------------------------------------------
def _fuse_class(fuse: ModuleType) -> type:
    class VDirFUSE(fuse.FUSE):  # type: ignore[name-defined,misc]
        """mfusepy drops rename(2) flags on libfuse3 (RENAME_NOREPLACE matters) and never answers
        READDIRPLUS with attributes; both are added here, with a fast answer to the xattr probes
        of other namespaces."""

        def readdir_fuse_3(self, path: bytes | None, buf: Any, filler: Any, offset: int, fip: Any, flags: int) -> int:
            if not flags & FUSE_READDIR_PLUS:
                return int(self._readdir(path, buf, filler, offset, fip))
            decoded = None if path is None else path.decode(self.encoding, self.errors)
            for name, attrs, off in self.operations.readdir_with_offset(decoded, offset, fip.contents.fh):
                st = fuse.c_stat()
                if "st_size" in attrs:
                    fuse.set_st_attrs(st, attrs, use_ns=self.use_ns)
                    fill = FUSE_FILL_DIR_PLUS
                else:
                    st.st_mode = attrs["st_mode"]
                    st.st_ino = attrs.get("st_ino", 0)
                    fill = 0
                if filler(buf, name.encode(self.encoding, self.errors), st, off, fill) != 0:
                    break
            return 0

        def getxattr(self, path: bytes, name: bytes, value: Any, size: int, *args: Any) -> int:
            # The kernel asks for security.capability on every write and ls -l for an SELinux
            # label and a POSIX ACL of every file: answered here, before any decoding or lookup.
            if not name.startswith(b"user."):
                return -(errno.EOPNOTSUPP if self.operations.xattrs else errno.ENOSYS)
            return int(super().getxattr(path, name, value, size, *args))

        def rename_fuse_3(self, old: bytes, new: bytes, flags: int) -> int:
            return int(self.operations.rename(old.decode(self.encoding, self.errors), new.decode(self.encoding, self.errors), flags) or 0)

    return VDirFUSE


def serve(vd: VDir, opts: MountOptions) -> None:
    """Mount and serve in this process until unmounted (``vdir umount``, SIGTERM or SIGINT).

    Files left pending by an earlier mount are taken up first (catalog look-ups only: listed and
    readable from the cache at once) and uploaded in the background while the mount serves."""
    from vdir.fuse.ops import VDirOperations
    from vdir.vfs.cache import CacheDir

    fuse = load_fuse()
    check_device()
    mountpoint = check_mountpoint(opts.mountpoint)
    check_catalog(vd)
    cache_root = Path(opts.cache_dir) if opts.cache_dir else default_cache_dir(vd.catalog_url or str(opts.config))
    cache = CacheDir(cache_root, opts.cache_size)
    ops = VDirOperations(vd, cache, read_only=opts.read_only, attr_timeout=opts.attr_timeout, context=fuse.fuse_get_context,
                         xattrs=opts.xattrs, noatime=opts.noatime, sync_close=not opts.write_back, write_back_delay=opts.write_back_delay,
                         kernel_cache=KernelCache(fuse))
    report = ops.writeback.adopt(cache.journal.records())
    if report.pending:
        log.warning("journal: %d upload(s) left pending by an earlier mount, resumed in the background", report.pending)
    _write_status(cache_root, {"pid": os.getpid(), "pending": report.pending, "parked": report.parked})
    ops.writeback.start()
    # Background commits run Python code; a FUSE request waiting for the GIL would wait up to the
    # switch interval (5 ms by default) each time.  Requests are short: hand the GIL over sooner.
    sys.setswitchinterval(SWITCH_INTERVAL)
    # hard_remove off: an unlinked file that is still open is renamed to .fuse_hiddenNNNN and
    # removed at its last close, so fstat and reads through its handles keep working; use_ino:
    # st_ino is the catalog's inode id, the same through every hard link of a file (tar, rsync -H,
    # cp -a, du and find -samefile tell the names of one file by it)
    kwargs: dict[str, Any] = dict(
        foreground=True, nothreads=False, fsname=FSNAME, subtype="vdir", default_permissions=True,
        attr_timeout=opts.attr_timeout, entry_timeout=opts.entry_timeout, negative_timeout=opts.entry_timeout,
        hard_remove=False, auto_cache=True, debug=opts.debug, use_ino=True,
    )
    if opts.read_only:
        kwargs["ro"] = True
    if opts.allow_other:
        kwargs["allow_other"] = True
    if fuse.fuse_version_major == 2:
        kwargs["big_writes"] = True
        kwargs["max_read"] = 1 << 20
    else:
        kwargs["max_idle_threads"] = 16  # libfuse 3.14 warns about its own default otherwise
    threading.Thread(target=_tune_readahead, args=(mountpoint,), daemon=True, name="vdir-readahead-tuning").start()
    registry = _registry(mountpoint)
    registry.parent.mkdir(parents=True, exist_ok=True)
    registry.write_text(json.dumps({"pid": os.getpid(), "mountpoint": mountpoint, "cache_dir": str(cache_root)}))
    try:
        _fuse_class(fuse)(ops, mountpoint, **kwargs)
    except RuntimeError as exc:
        raise VDirError(f"mounting {mountpoint} failed (libfuse error {exc}; its message is above)") from None
    finally:
        ops.pool.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(OSError):
            if json.loads(registry.read_text()).get("pid") == os.getpid():
                registry.unlink()
        cache.close()


STATUS = "status.json"
"""In the cache directory: what the mount found in its journal when it started (read by ``start``)."""


def _write_status(cache_root: Path, status: dict[str, Any]) -> None:
    tmp = cache_root / f".{STATUS}.tmp"
    tmp.write_text(json.dumps(status), encoding="utf-8")
    os.replace(tmp, cache_root / STATUS)


def startup_report(cache_dir: str | os.PathLike[str], pid: int) -> list[str]:
    """Lines for the user about the journal the mount process ``pid`` started with: uploads
    resumed in the background, records parked (each reported this once)."""
    try:
        status = json.loads((Path(cache_dir) / STATUS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if status.get("pid") != pid:
        return []
    lines = [f"parked: {line}" for line in status.get("parked", [])]
    if status.get("pending"):
        lines.append(f"{status['pending']} upload(s) left pending by an earlier mount continue in the background (see {Path(cache_dir) / 'mount.log'})")
    return lines


def _tune_readahead(mountpoint: str, kib: int = 1024, timeout: float = 30.0) -> None:
    """Raise the kernel's read-ahead for the new mount from 128 KiB to ``kib``, so sequential
    reads arrive as 1 MiB requests (8x fewer round trips).  Needs root; skipped otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as fh:
            for line in fh:
                fields = line.split()
                if len(fields) > 4 and _unescape(fields[4]) == mountpoint and " - fuse" in line:
                    try:
                        Path(f"/sys/class/bdi/{fields[2]}/read_ahead_kb").write_text(str(kib))
                    except OSError as exc:
                        log.debug("cannot raise read-ahead: %s", exc)
                    return
        time.sleep(0.02)


def start(opts: MountOptions, timeout: float = 60.0) -> int:
    """Mount in a background process and return its pid once the mount point is a vdir mount.

    The process logs to ``mount.log`` in the cache directory; if it exits before the mount is
    ready, its last error line is raised here."""
    mountpoint = check_mountpoint(opts.mountpoint)
    opts = MountOptions(**{**asdict(opts), "mountpoint": mountpoint})
    assert opts.cache_dir is not None, "start() needs an explicit cache_dir"
    Path(opts.cache_dir).mkdir(parents=True, exist_ok=True)
    logfile = Path(opts.cache_dir) / "mount.log"
    with open(logfile, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vdir.fuse", json.dumps(asdict(opts))],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_mounted(mountpoint, FSTYPE):
            return proc.pid
        if proc.poll() is not None:
            raise VDirError(_last_error(logfile) or f"the mount process exited with code {proc.returncode} (see {logfile})")
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    raise Timeout(f"{mountpoint}: not mounted after {timeout:.0f}s (see {logfile})")


def _last_error(logfile: Path) -> str | None:
    with contextlib.suppress(OSError):
        for line in reversed(logfile.read_text(errors="replace").splitlines()[-50:]):
            if line.startswith("vdir: error: "):
                return line.removeprefix("vdir: error: ")
    return None


def unmount(mountpoint: str, timeout: float = 60.0) -> None:
    """Unmount a vdir mount and wait for its process to finish (it commits nothing late:
    every file was committed when it was closed)."""
    path = os.path.abspath(mountpoint)
    found = mounts().get(path)
    if found is None:
        raise InvalidArgument(f"{path}: not mounted")
    if not found[0].startswith("fuse"):
        raise InvalidArgument(f"{path}: not a vdir mount ({found[0]})")
    pid: int | None = None
    with contextlib.suppress(OSError, ValueError):
        pid = int(json.loads(_registry(path).read_text())["pid"])
    errors = []
    for tool in ("fusermount3", "fusermount", "umount"):
        exe = shutil.which(tool)
        if exe is None:
            continue
        proc = subprocess.run([exe, path] if tool == "umount" else [exe, "-u", path], capture_output=True, text=True)
        if proc.returncode == 0:
            break
        message = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        if "busy" in message[0].lower():
            raise VDirError(f"{path}: busy (a file or directory on it is in use); close it and try again")
        errors.append(f"{tool}: {message[0]}")
    else:
        raise VDirError(f"{path}: could not unmount ({'; '.join(errors) or 'no fusermount or umount found'})")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = pid is not None and alive(pid)
        if not is_mounted(path) and not running:
            return
        time.sleep(0.02)
    raise Timeout(f"{path}: the mount process {pid} did not finish within {timeout:.0f}s")


def main(argv: list[str] | None = None) -> int:
    """``python -m vdir.fuse OPTIONS-JSON``: the background mount process."""
    import vdir

    args = sys.argv[1:] if argv is None else argv
    opts = MountOptions(**json.loads(args[0]))
    logging.basicConfig(level=logging.DEBUG if opts.debug else logging.WARNING, format="vdir: %(levelname)s: %(message)s")
    try:
        with vdir.connect(opts.config) as vd:
            serve(vd, opts)
    except VDirError as exc:
        print(f"vdir: error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0
