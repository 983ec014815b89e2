"""Amazon S3 and S3-compatible servers (``s3://bucket[/prefix]``), via boto3.

This is the only module that imports boto3/botocore.  Keys are stored under the URL's prefix
(``s3://bucket/data`` puts key ``a/b.txt`` at ``data/a/b.txt``), so the bucket stays readable by
any other S3 tool.

* Writes stream.  An object of at most ``multipart_threshold`` bytes is sent with one
  ``PutObject``; a larger one (or a source of unknown size that turns out larger) with a
  multipart upload whose parts are read one at a time and sent by up to ``max_concurrency``
  threads, so memory stays near ``(max_concurrency + 2) * part_size`` whatever the object size.
  Any failure aborts the upload: S3 shows a multipart object only once it is completed, so a
  failed ``put`` leaves nothing visible.  Parts carry a CRC32 checksum the server checks.
* Conditions: ``CREATE`` sends ``If-None-Match: *`` and ``update(etag)`` sends ``If-Match`` on
  ``PutObject``, ``CompleteMultipartUpload`` and ``CopyObject`` (AWS enforces them on all three;
  a missing key under ``If-Match`` is a 404, reported as ``Conflict``).  Some S3-compatible
  servers ignore the header on some calls (moto 5.2 ignores ``If-Match`` on
  ``CompleteMultipartUpload`` and both headers on ``CopyObject``; SeaweedFS 4.48 enforces all
  of them), so multipart uploads and copies also check with ``HeadObject`` first.  That check is
  racy — another writer can slip in between it and the write — and is only a fallback: where
  the server honours the header, the header decides atomically.  Option ``check_conditions``
  adds the same fallback to single-shot puts, for servers that ignore the headers on
  ``PutObject`` too.
* Reads (the streams live in :mod:`vdir.backends.s3_read`): ``get`` is one GET (with a
  ``Range`` header for a part of the object).  If the
  connection breaks mid-body the download resumes from where it stopped (``If-Match`` on the
  first answer's ETag, so a changed object raises ``Conflict`` instead of mixing versions), a
  bounded number of times; a stream never ends early silently.  With ``read_ahead`` = N > 0
  (the default for anything but a server on this machine is 4) a range longer than a part is
  fetched as ranged GETs of ``part_size``, N parts ahead of the reader.
* Listing: ``list`` uses S3's flat listing, which is in UTF-8 byte order.  SeaweedFS lists in
  its directory tree's order instead (``a/b`` before ``a-b``) and keeps a folder after its last
  object is deleted; such a server (recognised by its ``Server`` header, or option
  ``listing=walk``) is listed level by level with the delimiter, which gives S3's order, and
  emptied prefixes are left out.  (SeaweedFS also cannot hold an object ``a`` beside objects
  below ``a/``; vdir's own keys never need that.)
* Lean requests: single-request calls (``PutObject`` up to the threshold, ``GetObject``,
  ``HeadObject``, ``DeleteObject``) are signed and sent by :mod:`vdir.backends.s3_lean`
  (urllib3, about a fifth of botocore's CPU per request), with the same retry rules and the
  same error translation; endpoint, addressing style, region and credentials are boto3's.  Not
  used behind a proxy or with option ``lean=false``; a redirect to another region turns it off
  for the backend (boto3 follows those).
* Retries and timeouts: botocore's ``standard`` mode (5xx, throttling, connection errors),
  bounded by ``max_attempts`` (total tries, default 3), each try waiting at most
  ``connect_timeout`` (5 s) to connect and ``read_timeout`` (8 s) for the server to say
  anything; so a server that accepts connections but never answers fails a call in about
  ``max_attempts * read_timeout`` (24 s) plus short backoffs, with a warning before each retry
  ("no answer from ..., retrying (2/3)").  What is left after that is translated in
  :meth:`S3Backend._translate` (the one place), ``retryable`` where it may pass.
* Create-only (``create_only_atomic``): option ``create_only`` says whether this endpoint
  honours ``If-None-Match: *`` on ``PutObject`` *and* ``CompleteMultipartUpload``, atomically
  (AWS has since 2024; moto 5.2 and SeaweedFS 4.x check the header but two racing multipart
  creators can both win, so they are answered False whatever the probe sees).  Not given, it is False, and ``vdir backend add`` asks the server once
  (:meth:`S3Backend.probe_create_only`) and records the answer in the backend's options.
* Temporaries: unfinished multipart uploads below the prefix (a killed ``put``) are listed by
  ``list_temporaries`` and aborted by ``remove_temporary``.
* A bucket over its quota (HTTP 507, ``InsufficientStorage``, ``QuotaExceeded``) raises
  ``NoSpace``.
* Location: cloud ``aws``; the region comes from option ``region`` or is asked of the bucket
  (``GetBucketLocation``) the first time it is needed.

Credentials come from the SDK's chain (env vars, ``~/.aws``, instance roles...) or option
``profile``; ``access_key_id`` / ``secret_access_key`` / ``session_token`` may be given as secret
options (the config file keeps them, never the catalog).  ``endpoint_url`` points at another
S3 server (path-style addressing is then the default).
"""

from __future__ import annotations

import builtins
import email.utils
import io
import logging
import math
import os
import re
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import IO, Any, TypeVar
from urllib.parse import unquote, urlsplit

import boto3
import urllib3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    PartialCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
    ResponseStreamingError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from vdir.backends.base import Backend, ListResult, Location, ObjectMeta, Presigned, PutMode, TempObject, reader
from vdir.backends.s3_lean import Creds, LeanS3
from vdir.backends.s3_parts import read_head, split_parts
from vdir.backends.s3_read import Download, LeanBody, Opened, ReadAhead
from vdir.errors import (
    AlreadyExists,
    AuthenticationError,
    BackendUnavailable,
    ConfigError,
    Conflict,
    InvalidArgument,
    NameTooLong,
    NoSpace,
    NotFound,
    PermissionDenied,
    Timeout,
    TransientError,
    VDirError,
)
from vdir.retry import backoff_delay
from vdir.units import parse_size

T = TypeVar("T")
log = logging.getLogger("vdir.backends.s3")

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
MIN_PART = 5 * MiB
"""S3's smallest part (all but the last)."""
MAX_PARTS = 10_000
MAX_COPY = 5 * GiB
"""Largest object ``CopyObject`` copies (and ``PutObject`` takes) in one request."""
MAX_KEY_BYTES = 1024

AUTH_CODES = {
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "TokenRefreshRequired",
    "InvalidClientTokenId", "UnrecognizedClientException", "AuthorizationHeaderMalformed", "MissingSecurityHeader",
    "InvalidSecurity", "AccountProblem", "NotSignedUp",
}
RETRY_CODES = {"RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete", "InternalError"}
"""Error codes botocore's ``standard`` retry mode retries (besides 5xx and throttling); the lean path does too."""
THROTTLE_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests",
                  "RequestThrottled", "ServiceUnavailable"}
RACY_CONDITION_SERVERS = ("werkzeug", "seaweedfs")
"""``Server`` headers of S3 servers that check ``If-None-Match`` but not atomically, so never
create-only: moto 5.2 (serves as Werkzeug) — two racing multipart creators of one key both win;
SeaweedFS 4.x — the same, about one race in 40 when the machine is busy (two CPU hogs beside 40
races of two 6 MiB multipart creators), never when it is idle, which is why a sequential probe
cannot tell."""
FILER_SERVERS = ("seaweedfs",)
"""``Server`` headers of S3 servers that list in directory order and keep empty folders."""
def parse_number(value: float | str, what: str, kind: type[int] | type[float] = int) -> Any:
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"s3 option {what}={value!r} is not a number") from None


def parse_bool(value: bool | str, what: str) -> bool:
    if isinstance(value, bool):
        return value
    low = str(value).strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"s3 option {what}={value!r} is not true/false")


def _quoted(etag: str | None) -> str | None:
    """ETags in one form, quoted as S3 sends them in headers (some servers leave copies unquoted)."""
    return None if not etag else '"' + etag.strip('"') + '"'


def _error_fields(body: bytes, status: int) -> tuple[str, str]:
    """Code and message of an S3 error answer (a HEAD answer has no body: the status says it)."""
    code = re.search(rb"<Code>([^<]*)</Code>", body or b"")
    message = re.search(rb"<Message>([^<]*)</Message>", body or b"")
    default = {304: "NotModified", 403: "Forbidden", 404: "NotFound", 412: "PreconditionFailed"}.get(status, str(status))
    return (code.group(1).decode("utf-8", "replace") if code else default,
            message.group(1).decode("utf-8", "replace") if message else "")


def _total(start: int, length: int, content_range: str) -> int:
    """Size of the whole object from a GET answer (``Content-Range: bytes a-b/total`` if ranged)."""
    if "/" in content_range and content_range.rsplit("/", 1)[1].isdigit():
        return int(content_range.rsplit("/", 1)[1])
    return start + length


def _local(endpoint_url: str | None) -> bool:
    host = (urlsplit(endpoint_url).hostname or "") if endpoint_url else ""
    return host == "localhost" or host == "::1" or host.startswith("127.")


def _order(key: str) -> bytes:
    """S3's listing order: UTF-8 bytes."""
    return key.encode("utf-8", "surrogatepass")


class _RangeNotSatisfiable(InvalidArgument):
    """416: the range starts at or past the end of the object (``get`` returns empty)."""


class S3Backend(Backend):
    """A bucket (and optional key prefix) of Amazon S3 or of an S3-compatible server."""

    scheme = "s3"

    def __init__(
        self,
        name: str,
        url: str,
        location: Location | None = None,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        profile: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        part_size: int | str = 8 * MiB,
        multipart_threshold: int | str = 8 * MiB,
        max_concurrency: int | str = 4,
        max_attempts: int | str = 3,
        connect_timeout: float | str = 5.0,
        read_timeout: float | str = 8.0,
        max_pool_connections: int | str = 32,
        addressing_style: str | None = None,
        check_conditions: bool | str = False,
        listing: str = "auto",
        read_ahead: int | str | None = None,
        lean: bool | str = True,
        create_only: bool | str | None = None,
    ) -> None:
        self._location = location or Location(cloud="aws", region=region or "")
        self._region_known = bool(self._location.region and self._location.region != "unknown")
        super().__init__(name, url, self._location)
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ConfigError(f"bad S3 URL {url!r}; expected s3://bucket or s3://bucket/prefix")
        self.bucket = parts.netloc
        prefix = unquote(parts.path).strip("/")
        self.prefix = prefix + "/" if prefix else ""
        self.region = region
        self.part_size = parse_size(part_size, error=ConfigError, what="s3 option part_size")
        self.multipart_threshold = parse_size(multipart_threshold, error=ConfigError, what="s3 option multipart_threshold")
        if self.part_size < MIN_PART:
            raise ConfigError(f"s3 backend {name!r}: part_size must be at least 5 MiB (S3's minimum part size)")
        self.multipart_threshold = min(max(self.multipart_threshold, 1), MAX_COPY)  # PutObject takes 5 GiB at most
        self.max_concurrency = max(1, parse_number(max_concurrency, "max_concurrency"))
        # parallel ranged reads pay off over real networks; from a server on this machine one
        # stream is faster (measured: the extra copies and threads cost more than they win)
        if read_ahead is None:
            read_ahead = 0 if _local(endpoint_url) else 4
        self.read_ahead = max(0, parse_number(read_ahead, "read_ahead"))
        self.check_conditions = parse_bool(check_conditions, "check_conditions")
        self.create_only_atomic = False if create_only is None else parse_bool(create_only, "create_only")
        if listing not in ("auto", "flat", "walk"):
            raise ConfigError(f"s3 backend {name!r}: option listing must be auto, flat or walk, not {listing!r}")
        self.listing = listing
        self._walk: bool | None = None
        self.max_attempts = max(1, parse_number(max_attempts, "max_attempts"))
        self.connect_timeout = parse_number(connect_timeout, "connect_timeout", float)
        self.read_timeout = parse_number(read_timeout, "read_timeout", float)
        self.max_pool_connections = parse_number(max_pool_connections, "max_pool_connections")
        self._lean: LeanS3 | None = None
        self._lean_decided = not parse_bool(lean, "lean")
        self._lean_lock = threading.Lock()
        config = Config(
            retries={"mode": "standard", "total_max_attempts": self.max_attempts},
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            max_pool_connections=self.max_pool_connections,
            s3={"addressing_style": addressing_style or ("path" if endpoint_url else "auto")},
            user_agent_extra="vdir",
        )
        try:
            session = boto3.session.Session(
                profile_name=profile,
                aws_access_key_id=access_key_id,
                aws_secret_access_key=secret_access_key,
                aws_session_token=session_token,
                region_name=region,
            )
            self.client: Any = session.client("s3", endpoint_url=endpoint_url, config=config)
        except (BotoCoreError, ValueError) as exc:
            raise self._translate(exc, "open") from exc
        self._session = session
        self._endpoint_url, self._config = endpoint_url, config
        self._signer: Any = None
        self.client.meta.events.register("needs-retry.s3", self._say_retry)

    def _say_retry(self, attempts: int = 0, caught_exception: BaseException | None = None,
                   response: Any = None, **_: Any) -> None:
        """botocore event hook: a warning before each retry of a call that got no (good) answer."""
        if attempts >= self.max_attempts:
            return
        status = 0
        if response is not None:
            status = int((response[1] or {}).get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if caught_exception is None and status < 500:
            return
        self._warn_retry(caught_exception, status, attempts)

    def _warn_retry(self, exc: BaseException | None, status: int, attempt: int) -> None:
        endpoint = self.client.meta.endpoint_url
        if isinstance(exc, (ReadTimeoutError, urllib3.exceptions.ReadTimeoutError)):
            why = f"no answer from {endpoint} within {self.read_timeout:g}s"
        elif isinstance(exc, (ConnectTimeoutError, urllib3.exceptions.ConnectTimeoutError)):
            why = f"cannot connect to {endpoint} within {self.connect_timeout:g}s"
        elif exc is not None:
            why = f"no answer from {endpoint} ({type(exc).__name__})"
        else:
            why = f"{endpoint} answered {status}"
        log.warning("s3 backend %r: %s, retrying (%d/%d)", self.name, why, attempt + 1, self.max_attempts)

    # -- the lean path ------------------------------------------------------------------------------
    def _lean_client(self) -> LeanS3 | None:
        """The lean request path (:mod:`vdir.backends.s3_lean`), set up on first use; None where
        it does not apply (option ``lean=false``, no region or credentials, a proxy), and then
        boto3 serves every request."""
        if not self._lean_decided:
            with self._lean_lock:
                if not self._lean_decided:
                    self._lean = self._make_lean()
                    self._lean_decided = True
        return self._lean

    def _make_lean(self) -> LeanS3 | None:
        region = self.client.meta.region_name
        probe = "vdir-lean-probe"
        try:
            credentials = self._session.get_credentials()
            if not region or region == "aws-global" or credentials is None:
                return None
            # the URL boto3 itself would use for a key (endpoint, addressing style, region)
            url = self.client.generate_presigned_url("get_object", Params={"Bucket": self.bucket, "Key": probe},
                                                     ExpiresIn=60)
        except (BotoCoreError, ClientError, ValueError) as exc:
            log.debug("s3 backend %r: lean requests off: %s", self.name, exc)
            return None
        base = url.split("?", 1)[0]
        parts = urlsplit(base)
        if not base.endswith("/" + probe) or parts.scheme not in ("http", "https"):
            return None
        if urllib.request.getproxies().get(parts.scheme) and not urllib.request.proxy_bypass(parts.hostname or ""):
            return None  # boto3 knows how to go through the proxy

        def frozen() -> Creds:
            now = credentials.get_frozen_credentials()  # refreshes temporary credentials when due
            return Creds(now.access_key, now.secret_key, now.token)

        return LeanS3(base[: -len(probe) - 1], region, frozen, pool_size=self.max_pool_connections,
                      connect_timeout=self.connect_timeout, read_timeout=self.read_timeout,
                      ca_certs=os.environ.get("AWS_CA_BUNDLE") or None)

    def _lean_request(self, method: str, key: str, what: str, *, body: bytes | None = None,
                      headers: dict[str, str] | None = None, mode: PutMode | None = None,
                      stream: bool = False) -> urllib3.BaseHTTPResponse | None:
        """One request on the lean path with botocore's retry rules (5xx, throttling, broken
        connections; ``max_attempts`` tries in all): the 2xx answer, a vdir error, or None when
        the lean path does not apply here (the caller then asks boto3)."""
        lean = self._lean_client()
        if lean is None:
            return None
        full = self._full(key)
        attempt = 0
        while True:
            attempt += 1
            try:
                answer = lean.request(method, full, body, headers, stream=stream)
            except urllib3.exceptions.HTTPError as exc:
                if attempt >= self.max_attempts:
                    raise self._translate(exc, what, key, mode) from exc
                self._warn_retry(exc, 0, attempt)
                time.sleep(backoff_delay(attempt, base=0.1, cap=5.0))
                continue
            if answer.status < 300:
                return answer
            data = answer.read() if stream else answer.data
            answer.release_conn()
            code, message = _error_fields(data, answer.status)
            if answer.status in (301, 307) or code == "AuthorizationHeaderMalformed":
                log.debug("s3 backend %r: %s %s: lean requests off, boto3 follows the bucket's region", self.name,
                          answer.status, code)
                self._lean = None  # the bucket lives in another region: boto3 finds and follows it
                return None
            error = ClientError({"Error": {"Code": code, "Message": message},
                                 "ResponseMetadata": {"HTTPStatusCode": answer.status, "HTTPHeaders": dict(answer.headers)}},
                                method)
            again = answer.status >= 500 or answer.status == 429 or code in THROTTLE_CODES or code in RETRY_CODES
            if not again or attempt >= self.max_attempts:
                raise self._translate(error, what, key, mode) from None
            self._warn_retry(None, answer.status, attempt)
            time.sleep(backoff_delay(attempt, base=0.1, cap=5.0))

    # -- location ---------------------------------------------------------------------------
    @property  # type: ignore[override]
    def location(self) -> Location:
        """Where the bucket is; the region is asked of S3 once when the catalog did not know it."""
        if not self._region_known:
            self._region_known = True
            region = self.region or self._bucket_region()
            if region:
                loc = self._location
                self._location = Location(cloud=loc.cloud, region=region, tier=loc.tier, cost=loc.cost, extra=loc.extra)
        return self._location

    @location.setter
    def location(self, value: Location) -> None:
        self._location = value

    def _bucket_region(self) -> str | None:
        try:
            answer = self._call(lambda: self.client.get_bucket_location(Bucket=self.bucket), "locate bucket")
        except VDirError as exc:
            log.debug("s3 backend %r: region of bucket %s unknown: %s", self.name, self.bucket, exc)
            return None
        constraint = answer.get("LocationConstraint")
        return {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}.get(constraint, constraint)

    # -- errors -------------------------------------------------------------------------------
    def _where(self, what: str, key: str | None) -> str:
        target = f"s3://{self.bucket}/{self.prefix}{key}" if key is not None else f"s3://{self.bucket}"
        return f"s3 backend {self.name!r}: {what} {target}"

    def _translate(self, exc: BaseException, what: str, key: str | None = None, mode: PutMode | None = None) -> VDirError:
        """The one place SDK exceptions become vdir errors (the caller raises ``from exc``)."""
        where = self._where(what, key)
        if isinstance(exc, VDirError):
            return exc
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {}) or {}
            code = str(error.get("Code") or "")
            message = str(error.get("Message") or "").strip()
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if not status and code.isdigit():
                status = int(code)
            detail = f"{code}: {message}" if message and message != code else code or str(status)
            if code == "NoSuchBucket":
                return ConfigError(f"{where}: bucket {self.bucket!r} does not exist (check the backend URL)", path=key)
            if code in ("InvalidBucketName", "PermanentRedirect"):
                return ConfigError(f"{where}: the server refuses bucket {self.bucket!r} ({detail})", path=key)
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status == 412 or (
                    status == 404 and mode is not None and mode.kind == "update"):
                if mode is not None and mode.kind == "create":
                    return AlreadyExists(f"{where}: already exists", path=key)
                if mode is not None and mode.kind == "update":
                    return Conflict(f"{where}: changed by someone else (not at etag {mode.etag})", path=key)
                return Conflict(f"{where}: changed by someone else while it was read ({detail})", path=key)
            if status == 404 or code in ("NoSuchKey", "NotFound", "NoSuchUpload"):
                return NotFound(f"{where}: not found", path=key)
            if code == "RequestTimeTooSkewed":
                return AuthenticationError(f"{where}: the server refuses our signature because this machine's clock "
                                           "is off; set the clock (NTP)", path=key)
            if code in AUTH_CODES:
                return AuthenticationError(f"{where}: the server refused our credentials ({code}); check the access key "
                                           "and secret (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws)",
                                           path=key)
            if status == 403:
                return PermissionDenied(f"{where}: access denied ({detail})", path=key)
            if status == 416 or code == "InvalidRange":
                return _RangeNotSatisfiable(f"{where}: range not satisfiable", path=key)
            if code == "KeyTooLongError":
                return NameTooLong(f"{where}: key too long for S3 (at most {MAX_KEY_BYTES} bytes)", path=key)
            if status == 507 or code in ("InsufficientStorage", "QuotaExceeded", "StorageQuotaExceeded",
                                         "XAmzContentSHA256Mismatch-NoSpace", "EntityTooLargeForQuota"):
                return NoSpace(f"{where}: the storage is full or over its quota ({detail})", path=key)
            if code == "RequestTimeout" or status == 408:
                return Timeout(f"{where}: the server timed out waiting for us ({detail})", path=key)
            if code in THROTTLE_CODES or status == 429:
                return TransientError(f"{where}: throttled by the server ({detail})", path=key)
            if status >= 500:
                return BackendUnavailable(f"{where}: server error {status} ({detail})", path=key)
            return InvalidArgument(f"{where}: refused by the server ({status} {detail})", path=key)
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            return AuthenticationError(f"{where}: no usable AWS credentials ({exc}); set AWS_ACCESS_KEY_ID and "
                                       "AWS_SECRET_ACCESS_KEY, AWS_PROFILE or option profile", path=key)
        if isinstance(exc, ProfileNotFound):
            return ConfigError(f"{where}: {exc}", path=key)
        if isinstance(exc, NoRegionError):
            return ConfigError(f"{where}: no region configured (set option region or AWS_REGION)", path=key)
        if isinstance(exc, (ParamValidationError, ValueError)):
            return InvalidArgument(f"{where}: {exc}".replace("\n", " "), path=key)
        if isinstance(exc, urllib3.exceptions.NewConnectionError):
            return BackendUnavailable(f"{where}: cannot reach the server ({exc})", path=key)
        if isinstance(exc, (ConnectTimeoutError, ReadTimeoutError, TimeoutError, urllib3.exceptions.TimeoutError)):
            return Timeout(f"{where}: timed out after {self.max_attempts} attempt(s) (connect_timeout "
                           f"{self.connect_timeout:g}s, read_timeout {self.read_timeout:g}s): {exc}", path=key)
        if isinstance(exc, (BotoConnectionError, HTTPClientError, IncompleteReadError, ResponseStreamingError, OSError,
                            urllib3.exceptions.HTTPError)):
            return BackendUnavailable(f"{where}: cannot reach the server ({exc})", path=key)
        if isinstance(exc, BotoCoreError):
            return VDirError(f"{where}: {exc}", path=key)
        raise exc  # not an SDK error: a bug, keep its traceback

    def _call(self, fn: Callable[[], T], what: str, key: str | None = None, mode: PutMode | None = None) -> T:
        try:
            return fn()
        except VDirError:
            raise
        except (BotoCoreError, ClientError, OSError) as exc:
            raise self._translate(exc, what, key, mode) from exc

    def _full(self, key: str) -> str:
        if not key:
            raise InvalidArgument(f"s3 backend {self.name!r}: empty key")
        full = self.prefix + key
        if len(full.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
            raise NameTooLong(f"s3 backend {self.name!r}: key too long for S3 (at most {MAX_KEY_BYTES} bytes with "
                              f"the prefix): {key[:60]}...", path=key)
        return full

    def _meta(self, key: str, size: int, etag: str | None, modified: Any = None) -> ObjectMeta:
        stamp = modified.timestamp() if hasattr(modified, "timestamp") else None
        return ObjectMeta(key=key, size=int(size), etag=_quoted(etag), mtime=stamp)

    # -- reads ----------------------------------------------------------------------------------
    def head(self, key: str) -> ObjectMeta:
        full = self._full(key)
        try:
            lean = self._lean_request("HEAD", key, "head")
            if lean is not None:
                modified = lean.headers.get("Last-Modified")
                return self._meta(key, int(lean.headers.get("Content-Length") or 0), lean.headers.get("ETag"),
                                  email.utils.parsedate_to_datetime(modified) if modified else None)
            answer = self._call(lambda: self.client.head_object(Bucket=self.bucket, Key=full), "head", key)
        except PermissionDenied as exc:
            if isinstance(exc, AuthenticationError):
                raise
            self._explain_403(key)
            raise
        return self._meta(key, answer["ContentLength"], answer.get("ETag"), answer.get("LastModified"))

    def _explain_403(self, key: str) -> None:
        """A HEAD answer has no body, so a 403 does not say whether the credentials are wrong;
        ask once more with a one-byte GET, whose answer does (raises AuthenticationError then)."""
        full = self._full(key)
        try:
            self._call(lambda: self.client.get_object(Bucket=self.bucket, Key=full, Range="bytes=0-0"), "head", key)
        except AuthenticationError:
            raise
        except VDirError:
            return

    def get(self, key: str, start: int = 0, end: int | None = None) -> IO[bytes]:
        """Bytes ``[start, end)`` as one resumable GET; with ``read_ahead`` > 0, a range longer than
        a part is read as ranged GETs of ``part_size``, up to ``read_ahead`` parts ahead of the
        reader, all pinned to the first answer's ETag."""
        if start < 0 or (end is not None and end < 0):
            raise InvalidArgument(f"s3 backend {self.name!r}: negative range [{start}, {end}) for {key!r}", path=key)
        if end is not None and end <= start:
            self.head(key)  # a missing key is still NotFound
            return io.BytesIO(b"")
        if not self.read_ahead:
            return reader(Download(self, key, start, end))
        first_end = start + self.part_size if end is None else min(end, start + self.part_size)
        first = Download(self, key, start, first_end)  # its answer also tells the object's size
        stop = first.total if end is None or first.total is None else min(end, first.total)
        if stop is None or stop <= first_end:
            return reader(first)
        return reader(ReadAhead(self, key, first, first_end, stop))

    def _open(self, key: str, start: int, end: int | None, etag: str | None) -> Opened | None:
        """GET ``[start, end)``, or None when ``start`` is at or past the end of the object."""
        full = self._full(key)
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": full}
        headers: dict[str, str] = {}
        if start > 0 or end is not None:
            args["Range"] = headers["Range"] = f"bytes={start}-" + ("" if end is None else str(end - 1))
        if etag:
            args["IfMatch"] = headers["If-Match"] = etag
        try:
            lean = self._lean_request("GET", key, "read", headers=headers, stream=True)
            if lean is not None:
                length = int(lean.headers.get("Content-Length") or 0)
                return Opened(LeanBody(lean), length, lean.headers.get("ETag"),
                               _total(start, length, lean.headers.get("Content-Range") or ""))
            answer = self._call(lambda: self.client.get_object(**args), "read", key)
        except _RangeNotSatisfiable:
            return None
        length = int(answer.get("ContentLength") or 0)
        return Opened(answer["Body"], length, answer.get("ETag"), _total(start, length, str(answer.get("ContentRange") or "")))

    def _pages(self, prefix: str, delimiter: bool, first_only: bool = False) -> Iterator[dict[str, Any]]:
        """Pages of ListObjectsV2 below the backend prefix + ``prefix``, errors translated."""
        args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix + prefix}
        if delimiter:
            args["Delimiter"] = "/"
        if first_only:
            args["PaginationConfig"] = {"PageSize": 1, "MaxItems": 1}
        iterator = iter(self.client.get_paginator("list_objects_v2").paginate(**args))
        while True:
            page = self._call(lambda: next(iterator, None), "list", prefix)
            if page is None:
                return
            if self._walk is None:  # first answer: does this server list like a filesystem?
                server = str(page.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("server", ""))
                self._walk = server.lower().startswith(FILER_SERVERS)
            yield page

    def _level(self, prefix: str) -> tuple[builtins.list[ObjectMeta], builtins.list[str]]:
        """Objects and sub-prefixes directly below ``prefix``, each sorted by UTF-8 bytes."""
        cut = len(self.prefix)
        objects: builtins.list[ObjectMeta] = []
        prefixes: set[str] = set()
        for page in self._pages(prefix, delimiter=True):
            for item in page.get("Contents", ()):
                objects.append(self._meta(item["Key"][cut:], item["Size"], item.get("ETag"), item.get("LastModified")))
            prefixes.update(p["Prefix"][cut:] for p in page.get("CommonPrefixes", ()))
        objects.sort(key=lambda m: _order(m.key))
        return objects, sorted(prefixes, key=_order)

    def _walking(self) -> bool:
        """Whether listings are built level by level (see :meth:`_walk_level`)."""
        if self.listing == "auto" and self._walk is None:
            for _ in self._pages("", delimiter=False, first_only=True):
                pass  # one small request tells which kind of server this is
        return self.listing == "walk" or (self.listing == "auto" and bool(self._walk))

    def list(self, prefix: str = "") -> Iterator[ObjectMeta]:
        if self._walking():
            yield from self._walk_level(prefix)
            return
        cut = len(self.prefix)
        last: bytes | None = None
        for page in self._pages(prefix, delimiter=False):
            for item in page.get("Contents", ()):
                key = item["Key"][cut:]
                if last is not None and _order(key) < last:
                    self._walk = True
                    raise VDirError(f"{self._where('list', prefix)}: the server lists keys out of order ({key!r} after "
                                    f"an earlier key); open the backend with option listing=walk")
                last = _order(key)
                yield self._meta(key, item["Size"], item.get("ETag"), item.get("LastModified"))

    def _walk_level(self, prefix: str) -> Iterator[ObjectMeta]:
        """Byte-ordered listing from delimiter listings, level by level, for servers whose flat
        listing follows their directory tree (SeaweedFS puts ``a/b`` before ``a-b``).  All keys
        below ``a/`` sort together exactly where ``a/`` sorts among its siblings, so merging each
        level's sorted objects and prefixes and descending into the prefixes gives S3's order."""
        objects, prefixes = self._level(prefix)
        subs = iter(prefixes)
        sub = next(subs, None)
        for meta in objects:
            while sub is not None and _order(sub) < _order(meta.key):
                yield from self._walk_level(sub)
                sub = next(subs, None)
            yield meta
        while sub is not None:
            yield from self._walk_level(sub)
            sub = next(subs, None)

    def list_with_delimiter(self, prefix: str = "") -> ListResult:
        objects, prefixes = self._level(prefix)
        if self._walking():
            # a filer keeps a folder after its last object is deleted; S3 shows a prefix only
            # while objects are below it
            prefixes = [p for p in prefixes if self._any_below(p)]
        return ListResult(objects, prefixes)

    def _any_below(self, prefix: str) -> bool:
        return any(page.get("Contents") for page in self._pages(prefix, delimiter=False, first_only=True))

    # -- writes ---------------------------------------------------------------------------------
    def _conditions(self, mode: PutMode) -> dict[str, str]:
        if mode.kind == "create":
            return {"IfNoneMatch": "*"}
        if mode.kind == "update":
            if not mode.etag:
                raise InvalidArgument(f"s3 backend {self.name!r}: update needs an etag")
            return {"IfMatch": _quoted(mode.etag) or ""}
        return {}

    def _check_condition(self, key: str, mode: PutMode) -> None:
        """Fallback for servers that ignore If-None-Match/If-Match on a call (racy; see the module doc)."""
        if mode.kind == "overwrite":
            return
        try:
            current: ObjectMeta | None = self.head(key)
        except NotFound:
            current = None
        where = self._where("write", key)
        if mode.kind == "create" and current is not None:
            raise AlreadyExists(f"{where}: already exists", path=key)
        if mode.kind == "update" and (current is None or current.etag != _quoted(mode.etag)):
            raise Conflict(f"{where}: changed by someone else (not at etag {mode.etag})", path=key)

    def put(self, key: str, src: IO[bytes], mode: PutMode = PutMode("overwrite"), size: int | None = None) -> ObjectMeta:
        full = self._full(key)
        conditions = self._conditions(mode)
        part_size = self.part_size
        if size is not None:
            part_size = max(part_size, math.ceil(size / MAX_PARTS))
        head = read_head(src, self.multipart_threshold, size)
        if len(head) == self.multipart_threshold:  # maybe more: multipart (one part, if that was all)
            parts = split_parts(head, src, part_size)
            del head  # the parts generator owns it now
            return self._put_multipart(key, full, parts, mode, part_size)
        if self.check_conditions:
            self._check_condition(key, mode)
        headers = {"If-None-Match": "*"} if mode.kind == "create" else {"If-Match": conditions["IfMatch"]} if conditions else {}
        lean = self._lean_request("PUT", key, "write", body=bytes(head), headers=headers, mode=mode)
        if lean is not None:
            return self._meta(key, len(head), lean.headers.get("ETag"))
        answer = self._call(lambda: self.client.put_object(Bucket=self.bucket, Key=full, Body=head, **conditions),
                            "write", key, mode)
        return self._meta(key, len(head), answer.get("ETag"))

    def _put_multipart(self, key: str, full: str, parts: Iterator[bytes | bytearray], mode: PutMode, part_size: int) -> ObjectMeta:
        self._check_condition(key, mode)  # fail before sending gigabytes; the condition header decides at the end
        created = self._call(lambda: self.client.create_multipart_upload(
            Bucket=self.bucket, Key=full, ChecksumAlgorithm="CRC32"), "start upload of", key)
        upload_id = created["UploadId"]
        slots = threading.BoundedSemaphore(self.max_concurrency)
        failures: builtins.list[BaseException] = []
        cancelled = threading.Event()
        total = 0

        def send(number: int, data: bytes | bytearray) -> dict[str, Any]:
            try:
                if cancelled.is_set():
                    raise InvalidArgument("upload cancelled")
                answer = self._call(lambda: self.client.upload_part(
                    Bucket=self.bucket, Key=full, UploadId=upload_id, PartNumber=number, Body=data,
                    ChecksumAlgorithm="CRC32"), f"upload part {number} of", key)
                part = {"PartNumber": number, "ETag": answer["ETag"]}
                if answer.get("ChecksumCRC32"):
                    part["ChecksumCRC32"] = answer["ChecksumCRC32"]
                return part
            except BaseException as exc:
                failures.append(exc)
                raise
            finally:
                slots.release()

        pool = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix=f"s3-{self.name}")
        futures: builtins.list[Future[dict[str, Any]]] = []
        try:
            number = 0
            while True:
                slots.acquire()
                if failures:
                    slots.release()
                    raise failures[0]
                data = next(parts, None)
                if data is None:
                    slots.release()
                    break
                number += 1
                if number > MAX_PARTS:
                    slots.release()
                    raise InvalidArgument(f"{self._where('write', key)}: more than {MAX_PARTS} parts of {part_size} bytes; "
                                          "pass the size to put() or raise the part_size option")
                total += len(data)
                futures.append(pool.submit(send, number, data))
                del data
            done = [f.result() for f in futures]
            if mode.kind != "overwrite":
                self._check_condition(key, mode)
            conditions = self._conditions(mode)
            answer = self._call(lambda: self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=full, UploadId=upload_id, MultipartUpload={"Parts": done}, **conditions),
                "complete upload of", key, mode)
        except BaseException:
            cancelled.set()
            pool.shutdown(wait=True, cancel_futures=True)
            self._abort(key, full, upload_id)
            raise
        finally:
            pool.shutdown(wait=False)
        return self._meta(key, total, answer.get("ETag"))

    def _abort(self, key: str, full: str, upload_id: str) -> None:
        try:
            self._call(lambda: self.client.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload_id),
                       "abort upload of", key)
        except VDirError as exc:  # the parts stay invisible; a bucket lifecycle rule reclaims them
            log.warning("%s (the object was not written; its parts wait for the bucket's cleanup)", exc)

    # -- direct transfers ---------------------------------------------------------------------------
    presign_put_max = MAX_COPY  # one PutObject

    def _presign(self, operation: str, method: str, key: str, expires: float) -> Presigned | None:
        """A SigV4 query-string signature made locally by boto3 (no request; at most 7 days, as
        S3 allows); None when the
        session has no credentials to sign with (anonymous access, an empty profile)."""
        full = self._full(key)
        seconds = min(max(1, int(expires)), 7 * 86400)
        try:
            if self._session.get_credentials() is None:
                return None
            if self._signer is None:  # SigV4 always (boto3 may pick SigV2 for query strings; AWS wants V4)
                self._signer = self._session.client("s3", endpoint_url=self._endpoint_url,
                                                    config=self._config.merge(Config(signature_version="s3v4")))
            url = self._signer.generate_presigned_url(operation, Params={"Bucket": self.bucket, "Key": full},
                                                     ExpiresIn=seconds, HttpMethod=method)
        except (NoCredentialsError, PartialCredentialsError):
            return None
        except (BotoCoreError, ClientError) as exc:
            raise self._translate(exc, "sign a URL for", key) from exc
        return Presigned(url=url, method=method, expires=time.time() + seconds)

    def presign_get(self, key: str, expires: float) -> Presigned | None:
        return self._presign("get_object", "GET", key, expires)

    def presign_put(self, key: str, expires: float) -> Presigned | None:
        return self._presign("put_object", "PUT", key, expires)

    # -- create-only probe and temporaries ----------------------------------------------------------
    def probe_create_only(self) -> bool:
        """Ask the server once whether it honours ``If-None-Match: *`` on both ``PutObject`` and
        ``CompleteMultipartUpload``: write a probe key create-only, then try again both ways (the
        second writes must be refused), and delete it.  Used by ``vdir backend add``.  A probe
        cannot see a server that checks the header racily: those known to (``Server`` header in
        :data:`RACY_CONDITION_SERVERS`) are answered False."""
        key = f".vdir-probe-{uuid.uuid4().hex}"
        full = self._full(key)
        honoured = False
        try:
            first = self._call(lambda: self.client.put_object(Bucket=self.bucket, Key=full, Body=b"1", IfNoneMatch="*"),
                               "probe", key, PutMode.CREATE)  # type: ignore[attr-defined]
            server = str(first.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("server", ""))
            if server.lower().startswith(RACY_CONDITION_SERVERS):
                log.info("s3 backend %r: server %r checks create-only writes racily; not relying on them",
                         self.name, server)
                return False
            try:
                self._call(lambda: self.client.put_object(Bucket=self.bucket, Key=full, Body=b"2", IfNoneMatch="*"),
                           "probe", key, PutMode.CREATE)  # type: ignore[attr-defined]
                return False
            except AlreadyExists:
                pass
            upload_id = self._call(lambda: self.client.create_multipart_upload(Bucket=self.bucket, Key=full),
                                   "probe", key)["UploadId"]
            try:
                part = self._call(lambda: self.client.upload_part(Bucket=self.bucket, Key=full, UploadId=upload_id,
                                                                  PartNumber=1, Body=b"3"), "probe", key)
                self._call(lambda: self.client.complete_multipart_upload(
                    Bucket=self.bucket, Key=full, UploadId=upload_id, IfNoneMatch="*",
                    MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]}),
                    "probe", key, PutMode.CREATE)  # type: ignore[attr-defined]
            except AlreadyExists:
                honoured = True
                self._abort(key, full, upload_id)
            return honoured
        except VDirError as exc:
            if isinstance(exc, (TransientError, AuthenticationError, ConfigError)):
                raise
            log.warning("s3 backend %r: cannot tell whether the server honours create-only writes (%s); "
                        "assuming it does not", self.name, exc)
            return False
        finally:
            try:
                self.delete(key)
            except VDirError as exc:
                log.warning("s3 backend %r: probe object %s left behind: %s", self.name, full, exc)

    def list_temporaries(self) -> Iterator[TempObject]:
        """Unfinished multipart uploads below the prefix (kind ``multipart``, ``handle`` the
        UploadId); ``size`` is the sum of the parts uploaded so far."""
        marker: dict[str, str] = {}
        while True:
            page = self._call(lambda m=marker: self.client.list_multipart_uploads(  # type: ignore[misc]
                Bucket=self.bucket, Prefix=self.prefix, **m), "list unfinished uploads in")
            for upload in page.get("Uploads", []) or []:
                full, upload_id = upload["Key"], upload["UploadId"]
                if not full.startswith(self.prefix):
                    continue
                key = full[len(self.prefix):]
                size = 0
                try:
                    parts = self._call(lambda f=full, u=upload_id: self.client.list_parts(  # type: ignore[misc]
                        Bucket=self.bucket, Key=f, UploadId=u), "list parts of", key)
                    size = sum(int(p.get("Size") or 0) for p in parts.get("Parts", []) or [])
                except NotFound:
                    continue  # finished or aborted meanwhile
                initiated = upload.get("Initiated")
                yield TempObject(key=key, size=size, mtime=initiated.timestamp() if initiated is not None else None,
                                 kind="multipart", handle=upload_id)
            if not page.get("IsTruncated"):
                return
            marker = {"KeyMarker": page.get("NextKeyMarker") or "", "UploadIdMarker": page.get("NextUploadIdMarker") or ""}

    def remove_temporary(self, t: TempObject) -> None:
        """Abort one unfinished multipart upload (its parts are freed; the key's object, if any, stays)."""
        if t.kind != "multipart" or not t.handle:
            raise InvalidArgument(f"s3 backend {self.name!r}: not a multipart upload: {t}")
        full = self._full(t.key)
        try:
            self._call(lambda: self.client.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=t.handle),
                       "abort upload of", t.key)
        except NotFound:
            return

    def server_copy(self, src_key: str, dst_key: str, mode: PutMode = PutMode("overwrite")) -> ObjectMeta:
        """``CopyObject`` within the bucket; objects above 5 GiB (CopyObject's limit) are streamed."""
        meta = self.server_copy_from(self, src_key, dst_key, mode)
        assert meta is not None  # the same backend is always the same service
        return meta

    def server_copy_from(self, source: Backend, src_key: str, dst_key: str, mode: PutMode = PutMode("overwrite"),
                         source_etag: str | None = None) -> ObjectMeta | None:
        """``CopyObject`` from another bucket or prefix on the same S3 service (None for any
        other kind of backend, or another endpoint).  The source is read with this backend's
        credentials: where they may not, the server says 403 (``PermissionDenied``).

        With ``source_etag`` the copy is made only from that version of the source
        (``x-amz-copy-source-if-match``), and when that ETag is a single-part one (the MD5 of
        the content) and the copy's ETag equals it, the result is marked ``same_as_source``:
        the server computed the same MD5 over the bytes it stored."""
        if not isinstance(source, S3Backend) or source.client.meta.endpoint_url != self.client.meta.endpoint_url:
            return None
        meta = source.head(src_key)
        wanted = _quoted(source_etag)
        if wanted is not None and meta.etag != wanted:
            raise Conflict(f"{source._where('copy', src_key)}: changed (not at etag {source_etag})", path=src_key)
        if meta.size > MAX_COPY:
            with source.get(src_key) as stream:
                return self.put(dst_key, stream, mode, size=meta.size)
        full = self._full(dst_key)
        self._check_condition(dst_key, mode)  # moto ignores the headers on CopyObject
        conditions = self._conditions(mode)
        if wanted is not None:
            conditions["CopySourceIfMatch"] = wanted
        answer = self._call(lambda: self.client.copy_object(
            Bucket=self.bucket, Key=full, CopySource={"Bucket": source.bucket, "Key": source._full(src_key)}, **conditions),
            "copy to", dst_key, mode)
        result = answer.get("CopyObjectResult", {})
        copied = self._meta(dst_key, meta.size, result.get("ETag"), result.get("LastModified"))
        if wanted is not None and "-" not in wanted and copied.etag == wanted:
            copied = replace(copied, same_as_source=True)
        return copied

    def delete(self, key: str) -> None:
        full = self._full(key)
        try:
            if self._lean_request("DELETE", key, "delete") is None:
                self._call(lambda: self.client.delete_object(Bucket=self.bucket, Key=full), "delete", key)
        except NotFound:
            return

    def close(self) -> None:
        if self._lean is not None:
            self._lean.close()
        if self._signer is not None:
            self._signer.close()
        self.client.close()
