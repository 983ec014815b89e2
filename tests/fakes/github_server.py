"""FAKE: not GitHub; implements only the subset vdir calls, from the public API docs
(docs.github.com/en/rest: repos/contents, git/blobs, git/trees, git/commits, git/refs).

Repositories hold real git objects (blob/tree/commit SHA-1s computed as git does), in memory.
Implemented: ``GET /repos/{o}/{r}``; contents GET (files up to ``contents_get_limit`` carry
base64 content, bigger ones come back with ``content: ""`` and ``encoding: "none"``, as the docs
describe; directories as lists), PUT (``sha`` required to replace: 422 without, 409 on mismatch;
bodies above ``contents_put_limit`` → 422) and DELETE; git blobs (create/get), trees (get, with
``recursive``, by tree/commit sha or branch; create with ``base_tree``), commits (create/get),
refs (get, update with fast-forward check unless ``force``).  Every response carries
``X-RateLimit-*`` headers; ``rate_limited = True`` makes every call a 403 with
``X-RateLimit-Remaining: 0``.  Tokens are checked (401 ``Bad credentials``).  The handle
:class:`FakeGitHub` lets tests create repos, count commits and requests, and flip rate limiting.
"""

from __future__ import annotations

import base64
import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.httpbase import FakeService, Reply, parse_json

EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"


@dataclass
class Repo:
    owner: str
    name: str
    default_branch: str = "main"
    objects: dict[str, tuple[str, Any]] = field(default_factory=dict)  # sha -> (kind, payload)
    refs: dict[str, str] = field(default_factory=dict)  # "heads/main" -> commit sha
    commit_log: list[str] = field(default_factory=list)  # messages, in order


def _msg(status: int, message: str) -> Reply:
    return status, {}, {"message": message, "documentation_url": "https://docs.github.com/rest"}


class FakeGitHub(FakeService):
    def __init__(self, token: str = "gh-test-token", contents_get_limit: int = 1024 * 1024,
                 contents_put_limit: int = 100 * 1024 * 1024) -> None:
        super().__init__()
        self.token = token
        self.contents_get_limit = contents_get_limit
        self.contents_put_limit = contents_put_limit
        self.rate_limited = False
        self.rate_reset = int(time.time()) + 3600
        self.remaining = 5000
        self.repos: dict[str, Repo] = {}
        self.fail_next: list[int] = []
        """Statuses (502, 503...) to answer the next requests with, in order, before serving normally."""

    # -- handle for tests ---------------------------------------------------------------------
    def create_repo(self, owner: str, name: str, branch: str = "main") -> Repo:
        """A repository with one initial commit of the empty tree (like ``auto_init`` minus README)."""
        with self.lock:
            repo = Repo(owner, name, branch)
            self._put(repo, "tree", b"", {})
            root = self._commit(repo, EMPTY_TREE, [], "Initial commit")
            repo.refs[f"heads/{branch}"] = root
            repo.commit_log.clear()
            self.repos[f"{owner}/{name}".lower()] = repo
            return repo

    def commits(self, owner: str, name: str) -> list[str]:
        """Messages of the commits made through the API since the repo was created."""
        return list(self.repos[f"{owner}/{name}".lower()].commit_log)

    # -- git objects ---------------------------------------------------------------------------
    @staticmethod
    def _put(repo: Repo, kind: str, raw: bytes, payload: Any) -> str:
        sha = hashlib.sha1(f"{kind} {len(raw)}\0".encode() + raw).hexdigest()
        repo.objects.setdefault(sha, (kind, payload))
        return sha

    def _blob(self, repo: Repo, data: bytes) -> str:
        return self._put(repo, "blob", data, data)

    def _tree(self, repo: Repo, entries: dict[str, tuple[str, str, str]]) -> str:
        """entries: name -> (mode, type, sha); sorted as git sorts (trees compare as name + '/')."""
        order = sorted(entries, key=lambda n: (n + "/" if entries[n][1] == "tree" else n).encode())
        raw = b"".join(f"{entries[n][0]} {n}".encode() + b"\0" + bytes.fromhex(entries[n][2]) for n in order)
        return self._put(repo, "tree", raw, {n: entries[n] for n in order})

    def _commit(self, repo: Repo, tree: str, parents: list[str], message: str) -> str:
        raw = f"tree {tree}\n" + "".join(f"parent {p}\n" for p in parents) + f"\n{message}\n"
        sha = self._put(repo, "commit", f"{raw}{time.time_ns()}".encode(),
                        {"tree": tree, "parents": parents, "message": message})
        repo.commit_log.append(message)
        return sha

    def _flatten(self, repo: Repo, tree: str, prefix: str = "") -> dict[str, tuple[str, str]]:
        out: dict[str, tuple[str, str]] = {}
        for name, (mode, kind, sha) in repo.objects[tree][1].items():
            if kind == "tree":
                out.update(self._flatten(repo, sha, f"{prefix}{name}/"))
            else:
                out[prefix + name] = (mode, sha)
        return out

    def _build(self, repo: Repo, flat: dict[str, tuple[str, str]]) -> str:
        direct: dict[str, tuple[str, str, str]] = {}
        subdirs: dict[str, dict[str, tuple[str, str]]] = {}
        for path, (mode, sha) in flat.items():
            head, sep, rest = path.partition("/")
            if sep:
                subdirs.setdefault(head, {})[rest] = (mode, sha)
            else:
                direct[head] = (mode, "blob", sha)
        for name, sub in subdirs.items():
            direct[name] = ("040000", "tree", self._build(repo, sub))
        return self._tree(repo, direct)

    def _resolve_tree(self, repo: Repo, ish: str) -> str | None:
        sha = repo.refs.get(f"heads/{ish}", ish)
        obj = repo.objects.get(sha)
        if obj and obj[0] == "commit":
            return str(obj[1]["tree"])
        return sha if obj and obj[0] == "tree" else None

    def _head(self, repo: Repo, branch: str | None) -> tuple[str, dict[str, tuple[str, str]]] | None:
        commit = repo.refs.get(f"heads/{branch or repo.default_branch}")
        if commit is None:
            return None
        return commit, self._flatten(repo, repo.objects[commit][1]["tree"])

    def _advance(self, repo: Repo, branch: str | None, parent: str, flat: dict[str, tuple[str, str]], message: str) -> str:
        commit = self._commit(repo, self._build(repo, flat), [parent], message)
        repo.refs[f"heads/{branch or repo.default_branch}"] = commit
        return commit

    # -- HTTP ---------------------------------------------------------------------------------
    def dispatch(self, method: str, path: str, query: dict[str, str], headers: Any, body: bytes) -> Reply:
        auth = headers.get("Authorization") or ""
        if auth.split(" ", 1)[-1] != self.token:
            return _msg(401, "Bad credentials")
        parts = path.strip("/").split("/")
        self.calls[f"{method} {'/'.join(parts[3:5]) if len(parts) > 3 else 'repo'}"] += 1
        limit = {"X-RateLimit-Limit": "5000", "X-RateLimit-Reset": str(self.rate_reset), "X-RateLimit-Resource": "core"}
        if self.rate_limited:
            limit.update({"X-RateLimit-Remaining": "0", "X-RateLimit-Used": "5000"})
            return 403, limit, {"message": "API rate limit exceeded for user ID 1.",
                                "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"}
        self.remaining = max(0, self.remaining - 1)
        limit.update({"X-RateLimit-Remaining": str(self.remaining), "X-RateLimit-Used": str(5000 - self.remaining)})
        if self.fail_next:
            with self.lock:
                if self.fail_next:
                    return self.fail_next.pop(0), limit, {"message": "Server Error (fake)"}
        if parts[0] != "repos" or len(parts) < 3:
            return _msg(404, "Not Found")
        with self.lock:
            repo = self.repos.get(f"{parts[1]}/{parts[2]}".lower())
            if repo is None:
                return _msg(404, "Not Found")
            status, extra, payload = self._route(repo, method, parts[3:], query, parse_json(body) or {})
        return status, {**limit, **extra}, payload

    def _route(self, repo: Repo, method: str, rest: list[str], query: dict[str, str], req: Any) -> Reply:
        base = f"{self.url}/repos/{repo.owner}/{repo.name}"
        if not rest:
            return 200, {}, {"name": repo.name, "full_name": f"{repo.owner}/{repo.name}", "default_branch": repo.default_branch,
                             "url": base, "owner": {"login": repo.owner}}
        if rest[0] == "contents":
            return self._contents(repo, method, "/".join(rest[1:]), query, req, base)
        if rest[0] != "git" or len(rest) < 2:
            return _msg(404, "Not Found")
        kind, args = rest[1], rest[2:]
        if kind == "blobs":
            if method == "POST":
                if req.get("encoding") == "base64":
                    data = base64.b64decode(req.get("content", ""))
                else:
                    data = str(req.get("content", "")).encode()
                sha = self._blob(repo, data)
                return 201, {}, {"sha": sha, "url": f"{base}/git/blobs/{sha}"}
            obj = repo.objects.get(args[0]) if args else None
            if obj is None or obj[0] != "blob":
                return _msg(404, "Not Found")
            return 200, {}, {"sha": args[0], "size": len(obj[1]), "url": f"{base}/git/blobs/{args[0]}",
                             "encoding": "base64", "content": base64.encodebytes(obj[1]).decode()}
        if kind == "trees":
            return self._trees(repo, method, args, query, req, base)
        if kind == "commits":
            if method == "POST":
                tree, parents = req.get("tree"), list(req.get("parents") or [])
                if repo.objects.get(tree, ("",))[0] != "tree" or any(p not in repo.objects for p in parents):
                    return _msg(422, "Tree SHA does not exist or parent SHA is not a commit")
                sha = self._commit(repo, tree, parents, str(req.get("message", "")))
                return 201, {}, self._commit_json(repo, sha, base)
            obj = repo.objects.get(args[0]) if args else None
            if obj is None or obj[0] != "commit":
                return _msg(404, "Not Found")
            return 200, {}, self._commit_json(repo, args[0], base)
        if kind in ("ref", "refs"):
            name = "/".join(args)
            if name not in repo.refs:
                return _msg(404, "Not Found")
            if method == "PATCH":
                new = str(req.get("sha", ""))
                if repo.objects.get(new, ("",))[0] != "commit":
                    return _msg(422, "Object does not exist")
                if not req.get("force") and not self._descends(repo, new, repo.refs[name]):
                    return _msg(422, "Update is not a fast forward")
                repo.refs[name] = new
            sha = repo.refs[name]
            return 200, {}, {"ref": f"refs/{name}", "url": f"{base}/git/refs/{name}",
                             "object": {"type": "commit", "sha": sha, "url": f"{base}/git/commits/{sha}"}}
        return _msg(404, "Not Found")

    @staticmethod
    def _descends(repo: Repo, commit: str, ancestor: str) -> bool:
        todo = [commit]
        while todo:
            sha = todo.pop()
            if sha == ancestor:
                return True
            todo.extend(repo.objects[sha][1]["parents"])
        return False

    @staticmethod
    def _commit_json(repo: Repo, sha: str, base: str) -> dict[str, Any]:
        c = repo.objects[sha][1]
        return {"sha": sha, "url": f"{base}/git/commits/{sha}", "message": c["message"],
                "tree": {"sha": c["tree"], "url": f"{base}/git/trees/{c['tree']}"},
                "parents": [{"sha": p, "url": f"{base}/git/commits/{p}"} for p in c["parents"]]}

    def _trees(self, repo: Repo, method: str, args: list[str], query: dict[str, str], req: Any, base: str) -> Reply:
        if method == "POST":
            flat: dict[str, tuple[str, str]] = {}
            if req.get("base_tree"):
                if repo.objects.get(req["base_tree"], ("",))[0] != "tree":
                    return _msg(422, "base_tree is not a valid tree oid")
                flat = self._flatten(repo, req["base_tree"])
            for entry in req.get("tree", []):
                path = str(entry.get("path", ""))
                if not path or path.startswith("/") or "//" in path or any(p in (".", "..", ".git") for p in path.split("/")):
                    return _msg(422, f"tree.path contains a malformed path component: {path!r}")
                if entry.get("sha") is None and "content" not in entry:
                    flat = {p: v for p, v in flat.items() if p != path and not p.startswith(path + "/")}
                    continue
                sha = entry.get("sha") or self._blob(repo, str(entry.get("content", "")).encode())
                if repo.objects.get(sha, ("",))[0] != "blob":
                    return _msg(422, "tree.sha is not a valid blob")
                flat[path] = (str(entry.get("mode", "100644")), sha)
            dirs = {p[:i] for p in flat for i in range(len(p)) if p[i] == "/"}
            if dirs & flat.keys():
                return _msg(422, "tree has a path that is both a file and a directory")
            sha = self._build(repo, flat)
            return 201, {}, self._tree_json(repo, sha, False, base)
        tree = self._resolve_tree(repo, "/".join(args))
        if tree is None:
            return _msg(404, "Not Found")
        return 200, {}, self._tree_json(repo, tree, query.get("recursive") not in (None, "", "0", "false"), base)

    def _tree_json(self, repo: Repo, sha: str, recursive: bool, base: str) -> dict[str, Any]:
        entries: list[dict[str, Any]] = []

        def walk(tree: str, prefix: str) -> None:
            for name, (mode, kind, child) in repo.objects[tree][1].items():
                entry: dict[str, Any] = {"path": prefix + name, "mode": mode, "type": kind, "sha": child,
                                         "url": f"{base}/git/{kind}s/{child}"}
                if kind == "blob":
                    entry["size"] = len(repo.objects[child][1])
                entries.append(entry)
                if kind == "tree" and recursive:
                    walk(child, f"{prefix}{name}/")

        walk(sha, "")
        return {"sha": sha, "url": f"{base}/git/trees/{sha}", "tree": entries, "truncated": False}

    def _contents(self, repo: Repo, method: str, path: str, query: dict[str, str], req: Any, base: str) -> Reply:
        branch = query.get("ref") if method == "GET" else req.get("branch")
        head = self._head(repo, branch)
        if head is None:
            return _msg(404, "No commit found for the ref")
        parent, flat = head
        if method == "GET":
            if path in flat:
                data = repo.objects[flat[path][1]][1]
                big = len(data) > self.contents_get_limit
                return 200, {}, {"type": "file", "name": path.rsplit("/", 1)[-1], "path": path, "sha": flat[path][1],
                                 "size": len(data), "url": f"{base}/contents/{path}",
                                 "encoding": "none" if big else "base64",
                                 "content": "" if big else base64.encodebytes(data).decode()}
            below = {p[len(path) + 1:] if path else p: v for p, v in flat.items() if not path or p.startswith(path + "/")}
            if not below:
                return _msg(404, "Not Found")
            names = sorted({p.split("/")[0] for p in below})
            return 200, {}, [{"type": "dir" if n not in below else "file", "name": n, "path": f"{path}/{n}".lstrip("/"),
                              "sha": below[n][1] if n in below else "", "size": len(repo.objects[below[n][1]][1]) if n in below else 0}
                             for n in names]
        current = flat.get(path, ("", None))[1]
        message = str(req.get("message") or "")
        if not message:
            return _msg(422, "Invalid request.\n\n\"message\" wasn't supplied.")
        if method == "PUT":
            data = base64.b64decode(req.get("content", ""))
            if len(data) > self.contents_put_limit:
                return _msg(422, "content is too large for the contents API")
            if current is not None and not req.get("sha"):
                return _msg(422, "Invalid request.\n\n\"sha\" wasn't supplied.")
            if req.get("sha") and req["sha"] != current:
                return _msg(409, f"{path} does not match {req['sha']}")
            if any(p.startswith(path + "/") for p in flat) or any(path.startswith(p + "/") for p in flat):
                return _msg(422, "path conflicts with an existing file or directory")
            blob = self._blob(repo, data)
            flat[path] = ("100644", blob)
            commit = self._advance(repo, branch, parent, flat, message)
            content = {"type": "file", "name": path.rsplit("/", 1)[-1], "path": path, "sha": blob, "size": len(data),
                       "url": f"{base}/contents/{path}"}
            return (201 if current is None else 200), {}, {"content": content, "commit": self._commit_json(repo, commit, base)}
        if method == "DELETE":
            if current is None:
                return _msg(404, "Not Found")
            if not req.get("sha"):
                return _msg(422, "Invalid request.\n\n\"sha\" wasn't supplied.")
            if req["sha"] != current:
                return _msg(409, f"{path} does not match {req['sha']}")
            del flat[path]
            commit = self._advance(repo, branch, parent, flat, message)
            return 200, {}, {"content": None, "commit": self._commit_json(repo, commit, base)}
        return _msg(405, "Method Not Allowed")
