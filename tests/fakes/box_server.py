"""FAKE: not Box; implements only the subset vdir calls, from the public API docs
(developer.box.com/reference).

Served on one port: the API under ``/2.0/...`` and the upload API under ``/api/2.0/...`` (so
``BaseUrls(base_url=url, upload_url=url + "/api")``).  Implemented: folder get/items (offset
pagination, ``fields``)/create/delete; file get/delete/copy/download (``Range``); small upload
(multipart ``attributes`` then ``file``) and upload of a new version (``If-Match`` → 412);
chunked upload sessions (create, part upload with ``Digest``/``Content-Range``, list parts,
commit with parts list and whole-file ``Digest``, abort); bearer-token check (401); name rules
(case-insensitive uniqueness → 409 ``item_name_in_use``, no ``/``, ``\\``, trailing spaces,
``.``/``..``, non-printable ASCII).  State is in memory; :class:`FakeBox` is the handle tests use
(``calls`` counts requests by route, ``min_chunked_size``/``part_size`` are adjustable,
``fail_next`` injects 429/5xx answers).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import re
import time
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.httpbase import FakeService, Reply, parse_json


@dataclass
class Item:
    id: str
    type: str  # "file" | "folder"
    name: str
    parent: str | None
    data: bytes = b""
    etag: int = 0
    version_id: str = ""
    modified: float = field(default_factory=time.time)


@dataclass
class Session:
    id: str
    folder_id: str | None
    file_id: str | None
    name: str | None
    size: int
    part_size: int
    parts: dict[int, tuple[str, bytes]] = field(default_factory=dict)  # offset -> (part_id, data)


def _err(status: int, code: str, message: str, **context: Any) -> Reply:
    body: dict[str, Any] = {"type": "error", "status": status, "code": code, "message": message, "request_id": "fake"}
    if context:
        body["context_info"] = context
    return status, {}, body


class FakeBox(FakeService):
    """In-memory Box account with one root folder (id ``"0"``)."""

    def __init__(self, token: str = "box-test-token", part_size: int = 8 * 1024 * 1024,
                 min_chunked_size: int = 20 * 1024 * 1024) -> None:
        super().__init__()
        self.token = token
        self.part_size = part_size
        self.min_chunked_size = min_chunked_size
        self.ids = itertools.count(1000)
        self.items: dict[str, Item] = {"0": Item("0", "folder", "All Files", None)}
        self.sessions: dict[str, Session] = {}
        self.fail_next: list[int] = []
        """Statuses (429, 503...) to answer the next requests with, in order, before serving normally."""

    # -- helpers ------------------------------------------------------------------------------
    def _next(self) -> str:
        return str(next(self.ids))

    def _children(self, folder_id: str) -> list[Item]:
        return sorted((i for i in self.items.values() if i.parent == folder_id), key=lambda i: (i.type != "folder", i.name))

    def _conflict(self, parent: str, name: str) -> Item | None:
        return next((i for i in self.items.values() if i.parent == parent and i.name.casefold() == name.casefold()), None)

    @staticmethod
    def _bad_name(name: Any) -> Reply | None:
        if not isinstance(name, str) or not name or name in (".", "..") or name != name.rstrip(" ") \
                or "/" in name or "\\" in name or any(ord(c) < 32 or ord(c) == 127 for c in name):
            return _err(400, "item_name_invalid", f"Item name invalid: {name!r}")
        if len(name) > 255:
            return _err(400, "item_name_too_long", "Item name too long")
        return None

    def _json(self, item: Item) -> dict[str, Any]:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(item.modified))
        out: dict[str, Any] = {"type": item.type, "id": item.id, "etag": str(item.etag), "sequence_id": str(item.etag),
                               "name": item.name, "modified_at": stamp, "created_at": stamp,
                               "parent": {"type": "folder", "id": item.parent} if item.parent else None}
        if item.type == "file":
            sha1 = hashlib.sha1(item.data).hexdigest()
            out.update(size=len(item.data), sha1=sha1, content_modified_at=stamp,
                       file_version={"type": "file_version", "id": item.version_id, "sha1": sha1})
        else:
            out["size"] = 0
        return out

    def _mini(self, item: Item, fields: str | None) -> dict[str, Any]:
        full = self._json(item)
        if not fields:
            return full
        keep = {"type", "id", "etag", "sequence_id", "name"} | set(fields.split(","))
        return {k: v for k, v in full.items() if k in keep}

    def _conflict_reply(self, existing: Item) -> Reply:
        info = self._json(existing)
        return _err(409, "item_name_in_use", "Item with the same name already exists",
                    conflicts=info if existing.type == "file" else [info])

    def _write_file(self, parent: str, name: str, data: bytes, file_id: str | None, if_match: str | None) -> Reply:
        """Create a file (``file_id`` None) or a new version; the caller holds the lock."""
        if file_id is None:
            if parent not in self.items or self.items[parent].type != "folder":
                return _err(404, "not_found", "Parent folder not found")
            bad = self._bad_name(name)
            if bad:
                return bad
            existing = self._conflict(parent, name)
            if existing:
                return self._conflict_reply(existing)
            item = Item(self._next(), "file", name, parent)
            self.items[item.id] = item
        else:
            found = self.items.get(file_id)
            if found is None or found.type != "file":
                return _err(404, "not_found", "File not found")
            item = found
            if if_match is not None and if_match != str(item.etag):
                return _err(412, "precondition_failed", "The resource has been modified. Please retrieve the resource again and retry")
        item.data, item.etag, item.version_id, item.modified = data, item.etag + 1, self._next(), time.time()
        return 201 if file_id is None else 200, {"ETag": str(item.etag)}, {"total_count": 1, "entries": [self._json(item)]}

    @staticmethod
    def _multipart(headers: Any, body: bytes) -> dict[str, bytes]:
        match = re.search(r'boundary="?([^";]+)"?', headers.get("Content-Type", ""))
        if not match:
            return {}
        out: dict[str, bytes] = {}
        for chunk in body.split(b"--" + match.group(1).encode())[1:]:
            if chunk.startswith(b"--"):
                break
            head, _, content = chunk.lstrip(b"\r\n").partition(b"\r\n\r\n")
            name = re.search(rb'name="([^"]*)"', head)
            if name:
                out[name.group(1).decode()] = content[:-2] if content.endswith(b"\r\n") else content
        return out

    # -- routing --------------------------------------------------------------------------------
    def dispatch(self, method: str, path: str, query: dict[str, str], headers: Any, body: bytes) -> Reply:
        if headers.get("Authorization") != f"Bearer {self.token}":
            return 401, {"WWW-Authenticate": 'Bearer realm="Service", error="invalid_token"'}, b""
        upload = path.startswith("/api/2.0/")
        parts = path.removeprefix("/api").removeprefix("/2.0/").split("/")
        route = f"{method} {'upload:' if upload else ''}{parts[0]}" + "".join(f"/{p}" for p in parts[1:] if not p.isdigit())
        if parts[:2] == ["files", "upload_sessions"]:
            route = f"{method} upload_sessions" + ("/" + parts[3] if len(parts) > 3 else "")
        self.calls[route] += 1
        with self.lock:
            if self.fail_next:
                status = self.fail_next.pop(0)
                return status, {"Retry-After": "0"} if status == 429 else {}, {"type": "error", "status": status, "code": "fake_failure"}
            return self._route(method, parts, query, headers, body, upload)

    def _route(self, method: str, parts: list[str], query: dict[str, str], headers: Any, body: bytes, upload: bool) -> Reply:
        kind = parts[0]
        if kind == "folders":
            return self._folders(method, parts, query, body)
        if kind == "files" and upload:
            return self._uploads(method, parts, headers, body)
        if kind == "files":
            return self._files(method, parts, query, headers, body)
        return _err(404, "not_found", "no such endpoint in the fake")

    def _folders(self, method: str, parts: list[str], query: dict[str, str], body: bytes) -> Reply:
        if method == "POST" and len(parts) == 1:
            req = parse_json(body) or {}
            parent = str((req.get("parent") or {}).get("id", ""))
            if parent not in self.items or self.items[parent].type != "folder":
                return _err(404, "not_found", "Parent folder not found")
            name = req.get("name")
            bad = self._bad_name(name)
            if bad:
                return bad
            existing = self._conflict(parent, name)
            if existing:
                return self._conflict_reply(existing)
            item = Item(self._next(), "folder", name, parent)
            self.items[item.id] = item
            return 201, {}, self._json(item)
        folder = self.items.get(parts[1]) if len(parts) > 1 else None
        if folder is None or folder.type != "folder":
            return _err(404, "not_found", "Not Found")
        if method == "GET" and len(parts) == 2:
            return 200, {}, self._json(folder)
        if method == "GET" and parts[2:] == ["items"]:
            children = self._children(folder.id)
            offset, limit = int(query.get("offset") or 0), min(int(query.get("limit") or 100), 1000)
            page = [self._mini(i, query.get("fields")) for i in children[offset:offset + limit]]
            return 200, {}, {"total_count": len(children), "offset": offset, "limit": limit, "entries": page,
                             "order": [{"by": "type", "direction": "ASC"}, {"by": "name", "direction": "ASC"}]}
        if method == "DELETE" and len(parts) == 2:
            if folder.id == "0":
                return _err(403, "access_denied_insufficient_permissions", "cannot delete the root folder")
            if self._children(folder.id) and query.get("recursive") != "true":
                return _err(400, "folder_not_empty", "Cannot delete – folder not empty")
            self._drop(folder.id)
            return 204, {}, None
        return _err(405, "method_not_allowed", "Method Not Allowed")

    def _drop(self, item_id: str) -> None:
        for child in self._children(item_id):
            self._drop(child.id)
        self.items.pop(item_id, None)

    def _files(self, method: str, parts: list[str], query: dict[str, str], headers: Any, body: bytes) -> Reply:
        item = self.items.get(parts[1]) if len(parts) > 1 else None
        if item is None or item.type != "file":
            return _err(404, "not_found", "Not Found")
        rest = parts[2:]
        if method == "GET" and not rest:
            return 200, {}, self._mini(item, query.get("fields"))
        if method == "DELETE" and not rest:
            if headers.get("If-Match") and headers["If-Match"] != str(item.etag):
                return _err(412, "precondition_failed", "The resource has been modified.")
            del self.items[item.id]
            return 204, {}, None
        if method == "GET" and rest == ["content"]:
            data, status, extra = item.data, 200, {}
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", headers.get("Range") or "")
            if match:
                start = int(match.group(1))
                end = int(match.group(2)) + 1 if match.group(2) else len(data)
                if start >= len(data):
                    return 416, {"Content-Range": f"bytes */{len(data)}"}, b""
                data, status = data[start:end], 206
                extra = {"Content-Range": f"bytes {start}-{start + len(data) - 1}/{len(item.data)}"}
            return status, {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes", **extra}, data
        if method == "POST" and rest == ["copy"]:
            req = parse_json(body) or {}
            parent = str((req.get("parent") or {}).get("id", ""))
            return self._write_file(parent, req.get("name") or item.name, item.data, None, None)
        return _err(405, "method_not_allowed", "Method Not Allowed")

    def _uploads(self, method: str, parts: list[str], headers: Any, body: bytes) -> Reply:
        if parts[1] == "upload_sessions":
            return self._session(method, parts[2:], headers, body)
        if method == "POST" and parts[1:] == ["content"]:
            form = self._multipart(headers, body)
            attrs = parse_json(form.get("attributes", b"")) or {}
            if "file" not in form:
                return _err(400, "bad_request", "file part missing (attributes must come first)")
            parent = str((attrs.get("parent") or {}).get("id", ""))
            return self._write_file(parent, attrs.get("name"), form["file"], None, None)
        if method == "POST" and len(parts) == 3 and parts[2] == "content":
            form = self._multipart(headers, body)
            if "file" not in form:
                return _err(400, "bad_request", "file part missing")
            return self._write_file("", "", form["file"], parts[1], headers.get("If-Match"))
        if method == "POST" and len(parts) == 3 and parts[2] == "upload_sessions":
            item = self.items.get(parts[1])
            if item is None or item.type != "file":
                return _err(404, "not_found", "Not Found")
            req = parse_json(body) or {}
            return self._new_session(None, item.id, None, int(req.get("file_size", -1)))
        return _err(405, "method_not_allowed", "Method Not Allowed")

    def _new_session(self, folder_id: str | None, file_id: str | None, name: str | None, size: int) -> Reply:
        if size < self.min_chunked_size:
            return _err(400, "file_size_too_small", f"file_size must be at least {self.min_chunked_size}")
        if folder_id is not None:
            if folder_id not in self.items or self.items[folder_id].type != "folder":
                return _err(404, "not_found", "Parent folder not found")
            bad = self._bad_name(name)
            if bad:
                return bad
            existing = self._conflict(folder_id, name or "")
            if existing:
                return self._conflict_reply(existing)
        sess = Session(f"S{self._next()}", folder_id, file_id, name, size, self.part_size)
        self.sessions[sess.id] = sess
        base = f"{self.url}/api/2.0/files/upload_sessions/{sess.id}"
        return 201, {}, {"type": "upload_session", "id": sess.id, "part_size": sess.part_size,
                         "total_parts": max(1, -(-size // sess.part_size)), "num_parts_processed": 0,
                         "session_expires_at": "2099-01-01T00:00:00Z",
                         "session_endpoints": {"upload_part": base, "commit": base + "/commit", "abort": base,
                                               "list_parts": base + "/parts", "status": base, "log_event": base + "/log"}}

    def _session(self, method: str, rest: list[str], headers: Any, body: bytes) -> Reply:
        if method == "POST" and not rest:
            req = parse_json(body) or {}
            return self._new_session(str(req.get("folder_id", "")), None, req.get("file_name"), int(req.get("file_size", -1)))
        sess = self.sessions.get(rest[0]) if rest else None
        if sess is None:
            return _err(404, "not_found", "Upload session not found")
        if method == "PUT" and len(rest) == 1:
            match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", headers.get("Content-Range", ""))
            if not match:
                return _err(400, "bad_request", "Content-Range missing or malformed")
            start, end, total = map(int, match.groups())
            last = start + sess.part_size >= sess.size
            if total != sess.size or start % sess.part_size or end - start + 1 != len(body) \
                    or (not last and len(body) != sess.part_size) or (last and end != sess.size - 1):
                return _err(416, "range_not_satisfiable", "Part does not match the session's part size")
            digest = "sha=" + base64.b64encode(hashlib.sha1(body).digest()).decode()
            if headers.get("Digest") != digest:
                return _err(412, "precondition_failed", "Digest does not match the part")
            part_id = hashlib.sha1(body).hexdigest()[:8].upper()
            sess.parts[start] = (part_id, body)
            return 200, {}, {"part": {"part_id": part_id, "offset": start, "size": len(body),
                                      "sha1": hashlib.sha1(body).hexdigest()}}
        if method == "GET" and rest[1:] == ["parts"]:
            entries = [{"part_id": pid, "offset": off, "size": len(d), "sha1": hashlib.sha1(d).hexdigest()}
                       for off, (pid, d) in sorted(sess.parts.items())]
            return 200, {}, {"entries": entries, "total_count": len(entries), "limit": 1000, "offset": 0}
        if method == "DELETE" and len(rest) == 1:
            del self.sessions[sess.id]
            return 204, {}, None
        if method == "POST" and rest[1:] == ["commit"]:
            listed = [(int(p.get("offset", -1)), p.get("part_id")) for p in (parse_json(body) or {}).get("parts", [])]
            have = [(off, pid) for off, (pid, _) in sorted(sess.parts.items())]
            if listed != have:
                return _err(400, "bad_request", "parts list does not match the uploaded parts")
            data = b"".join(d for _, (_, d) in sorted(sess.parts.items()))
            if len(data) != sess.size:
                return _err(400, "bad_request", "uploaded parts do not add up to file_size")
            digest = "sha=" + base64.b64encode(hashlib.sha1(data).digest()).decode()
            if headers.get("Digest") != digest:
                return _err(422, "bad_digest", "Digest does not match the file")
            reply = self._write_file(sess.folder_id or "", sess.name or "", data, sess.file_id, headers.get("If-Match"))
            if reply[0] < 300:
                del self.sessions[sess.id]
                return 201, reply[1], reply[2]
            return reply
        return _err(405, "method_not_allowed", "Method Not Allowed")
