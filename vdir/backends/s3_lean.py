"""A lean HTTP path for S3's single-request calls (PUT, GET, HEAD of one object).

botocore spends about a millisecond of CPU per request building, signing and parsing it (its
event hooks, models and parsers), and under the GIL that -- not the network -- bounds how many
small objects a process moves per second.  This module signs requests itself (AWS Signature
Version 4, the ``AWS4-HMAC-SHA256`` header form) and sends them on a urllib3 pool, at a fraction
of the cost.  It is used by :mod:`vdir.backends.s3` for objects below the multipart threshold;
everything else (multipart, copy, listing, errors it does not understand) stays with boto3.

It knows nothing about vdir's errors: it returns the status, headers and body of the answer and
raises urllib3's exceptions; :mod:`vdir.backends.s3` turns those into vdir errors in its one
translation function.  Credentials come from the boto3 session (so its chain and refreshes
apply); the endpoint and addressing style from the boto3 client (so they are the ones boto3
would use).
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import urllib3

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


@dataclass(frozen=True)
class Creds:
    access_key: str
    secret_key: str
    token: str | None


class LeanS3:
    """Signs and sends requests for the objects below ``base`` (``scheme://host[:port]/path-prefix``)."""

    def __init__(self, base: str, region: str, credentials: Callable[[], Creds], *, pool_size: int,
                 connect_timeout: float, read_timeout: float, ca_certs: str | None) -> None:
        parts = urlsplit(base)
        self.scheme = parts.scheme
        self.host = parts.netloc
        self.path = parts.path.rstrip("/")
        self.region = region
        self._credentials = credentials
        self._timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)
        kwargs: dict[str, Any] = {"maxsize": pool_size, "block": False, "retries": False, "timeout": self._timeout}
        if self.scheme == "https":
            kwargs["cert_reqs"] = "CERT_REQUIRED"
            if ca_certs:
                kwargs["ca_certs"] = ca_certs
        self._pool = urllib3.connection_from_url(f"{self.scheme}://{self.host}", **kwargs)
        self._keys: dict[tuple[str, str], bytes] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        self._pool.close()

    def _signing_key(self, secret: str, day: str) -> bytes:
        cached = self._keys.get((secret, day))
        if cached is None:
            k = hmac.digest(("AWS4" + secret).encode(), day.encode(), "sha256")
            k = hmac.digest(k, self.region.encode(), "sha256")
            k = hmac.digest(k, b"s3", "sha256")
            cached = hmac.digest(k, b"aws4_request", "sha256")
            with self._lock:
                if len(self._keys) > 8:
                    self._keys.clear()
                self._keys[(secret, day)] = cached
        return cached

    def request(self, method: str, key: str, body: bytes | None = None,
                headers: dict[str, str] | None = None, *, stream: bool = False) -> urllib3.BaseHTTPResponse:
        """One signed request for object ``key`` (the full key, prefix included)."""
        path = self.path + "/" + quote(key, safe="/~")
        payload = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        day = stamp[:8]
        creds = self._credentials()
        signed = {"host": self.host, "x-amz-content-sha256": payload, "x-amz-date": stamp}
        if creds.token:
            signed["x-amz-security-token"] = creds.token
        for name, value in (headers or {}).items():
            signed[name.lower()] = value
        names = sorted(signed)
        canonical = "\n".join([
            method, path, "",
            "".join(f"{n}:{' '.join(str(signed[n]).split())}\n" for n in names),
            ";".join(names), payload,
        ])
        scope = f"{day}/{self.region}/s3/aws4_request"
        to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.digest(self._signing_key(creds.secret_key, day), to_sign.encode(), "sha256").hex()
        signed["authorization"] = (f"AWS4-HMAC-SHA256 Credential={creds.access_key}/{scope}, "
                                   f"SignedHeaders={';'.join(names)}, Signature={signature}")
        del signed["host"]
        return self._pool.urlopen(method, path, body=body, headers=signed, preload_content=not stream,
                                  decode_content=False, redirect=False, retries=False, timeout=self._timeout)
