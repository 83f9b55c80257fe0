"""An offline stand-in for the Hugging Face Hub, on 127.0.0.1, for tests of the upload path.

This is NOT the Hub. It implements only the endpoints that `huggingface_hub`'s
`HfApi.create_repo`, `create_commit` (legacy LFS transfer) `list_repo_tree` and
`repo_info` call for a dataset repo, closely enough that the real client runs against it
unchanged, and it records what arrived so a test can check it:

    POST /api/repos/create                               make a repo (409 if it exists)
    POST /api/validate-yaml                              parse a README's front matter
    POST /api/datasets/<repo>/preupload/<rev>            which files go by LFS, their remote oid
    POST /datasets/<repo>.git/info/lfs/objects/batch     where to PUT each LFS object
    PUT  /lfs-objects/<sha256>                           the object's bytes (hash checked)
    POST /api/datasets/<repo>/commit/<rev>               the NDJSON commit
    GET  /api/datasets/<repo>/tree/<rev>[/<path>]        the file list (with LFS sha256)
    GET  /api/datasets/<repo>[/revision/<rev>]           repo info (head commit)

Like the Hub: every API call must carry `Authorization: Bearer <token>` (else 401); the
LFS PUT goes to a storage URL and must NOT carry it; an object already stored is not
asked for again; a new repo starts with one commit holding `.gitattributes`; Parquet and
PNG files are LFS, small text files go inline (base64) in the commit.

Fault injection: `fail_commits={2}` answers the 2nd commit request with a 500, once. The
failure message echoes the request's Authorization header on purpose, the way a careless
proxy might, so a test can prove the client side scrubs the token from its errors.

Left out: Xet storage (the tests set `huggingface_hub.constants.HF_HUB_DISABLE_XET`, so the client uses
LFS), multipart LFS, pagination, branches and PRs, deletes of folders, gitignore.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

MAX_BODY = 256 * 1024 * 1024  # bounded: a runaway client fails the test instead of eating memory
LFS_SUFFIXES = (".parquet", ".png", ".arrow", ".bin")
REPO = r"(?P<repo>[^/]+/[^/]+)"


@dataclass
class StoredFile:
    size: int
    data: bytes | None = None  # inline (regular) files
    lfs_oid: str | None = None  # LFS files: sha256 of the content

    def blob_id(self) -> str:
        if self.lfs_oid is None:
            return hashlib.sha1(b"blob %d\0" % self.size + (self.data or b"")).hexdigest()
        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.lfs_oid}\nsize {self.size}\n"
        return hashlib.sha1(b"blob %d\0" % len(pointer) + pointer.encode()).hexdigest()


@dataclass
class Repo:
    repo_id: str
    private: bool
    files: dict[str, StoredFile] = field(default_factory=dict)
    commits: list[dict[str, Any]] = field(default_factory=list)  # {oid, summary, paths, deleted, files}
    tags: dict[str, str] = field(default_factory=dict)  # tag -> commit oid

    def files_at(self, revision: str) -> dict[str, StoredFile]:
        """The files at a commit, a tag or `main`."""
        oid = self.tags.get(revision, self.head if revision == "main" else revision)
        return next(c["files"] for c in self.commits if c["oid"] == oid)

    @property
    def head(self) -> str:
        return self.commits[-1]["oid"]


class HubStub:
    def __init__(self, token: str, fail_commits: set[int] | None = None) -> None:
        self.token = token
        self.fail_commits = set(fail_commits or ())
        self.repos: dict[str, Repo] = {}
        self.lfs: dict[str, bytes] = {}  # sha256 -> content
        self.lfs_puts: list[str] = []  # every LFS object PUT, in order (a re-sent shard shows twice)
        self.preuploaded: list[str] = []  # every path the client announced for upload, in order
        self.requests: list[tuple[str, str]] = []  # (method, path)
        self.unhandled: list[str] = []  # requests no route answered: the client used an endpoint we lack
        self.unauthorized: list[str] = []
        self.put_with_auth: list[str] = []  # LFS PUTs that carried the token (must stay empty)
        self.commit_requests = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- life --------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "HubStub":
        stub = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 30

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                stub._serve(self)

            def do_POST(self) -> None:
                stub._serve(self)

            def do_PUT(self) -> None:
                stub._serve(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="hub-stub", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # -- views for tests ---------------------------------------------------------------------

    def file_bytes(self, repo_id: str, path: str) -> bytes:
        stored = self.repos[repo_id].files[path]
        return stored.data if stored.lfs_oid is None else self.lfs[stored.lfs_oid]

    # -- routing -----------------------------------------------------------------------------

    def _serve(self, http: BaseHTTPRequestHandler) -> None:
        length = int(http.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            return self._send(http, 413, {"error": "body too large for the stub"})
        body = http.rfile.read(length) if length else b""
        parts = urlsplit(http.path)
        path, query = unquote(parts.path), parse_qs(parts.query)
        auth = http.headers.get("Authorization", "")
        with self._lock:
            self.requests.append((http.command, path))
            status, payload, headers = self._route(http.command, path, query, body, auth)
        self._send(http, status, payload, headers)

    def _route(self, method: str, path: str, query: dict, body: bytes, auth: str):
        if method == "PUT" and (m := re.fullmatch(r"/lfs-objects/(?P<oid>[0-9a-f]{64})", path)):
            return self._lfs_put(m["oid"], body, auth)
        if auth != f"Bearer {self.token}":
            self.unauthorized.append(f"{method} {path}")
            return 401, {"error": "Invalid credentials in Authorization header"}, {"X-Error-Code": "Unauthorized"}
        routes = [
            ("POST", r"/api/repos/create", self._create),
            ("POST", r"/api/validate-yaml", self._validate_yaml),
            ("POST", rf"/api/datasets/{REPO}/preupload/(?P<rev>[^/]+)", self._preupload),
            ("POST", rf"/datasets/{REPO}\.git/info/lfs/objects/batch", self._lfs_batch),
            ("POST", rf"/api/datasets/{REPO}/commit/(?P<rev>[^/]+)", self._commit),
            ("GET", rf"/api/datasets/{REPO}/tree/(?P<rev>[^/]+)(?:/(?P<sub>.*))?", self._tree),
            ("POST", rf"/api/datasets/{REPO}/tag/(?P<rev>[^/]+)", self._tag),
            ("GET", rf"/api/datasets/{REPO}/refs", self._refs),
            ("GET", rf"/api/datasets/{REPO}(?:/revision/(?P<rev>[^/]+))?", self._info),
        ]
        for verb, pattern, handler in routes:
            if verb == method and (m := re.fullmatch(pattern, path)):
                args = m.groupdict()
                if "repo" in args and handler is not self._create and args["repo"] not in self.repos:
                    return 404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}
                return handler(body=body, query=query, auth=auth, **args)
        self.unhandled.append(f"{method} {path}")
        return 404, {"error": f"the hub stub has no route for {method} {path}"}, {}

    # -- endpoints ---------------------------------------------------------------------------

    def _create(self, body: bytes, **_: Any):
        data = json.loads(body)
        repo_id = f"{data['organization']}/{data['name']}" if data.get("organization") else f"user/{data['name']}"
        if data.get("type") != "dataset":
            return 400, {"error": "the stub only holds dataset repos"}, {}
        if repo_id in self.repos:
            return 409, {"error": "You already created this dataset repo", "url": self._repo_url(repo_id)}, {}
        repo = Repo(repo_id, private=data.get("visibility") == "private" or bool(data.get("private")))
        attributes = b"*.parquet filter=lfs diff=lfs merge=lfs -text\n"
        repo.files[".gitattributes"] = StoredFile(len(attributes), data=attributes)
        repo.commits.append({"oid": hashlib.sha1(repo_id.encode()).hexdigest(), "summary": "initial commit",
                             "paths": [".gitattributes"], "deleted": [], "files": dict(repo.files)})
        self.repos[repo_id] = repo
        return 200, {"url": self._repo_url(repo_id), "name": repo_id, "id": repo_id}, {}

    def _validate_yaml(self, body: bytes, **_: Any):
        content = json.loads(body)["content"]
        match = re.match(r"^---\n(.*?)\n---\n", content, re.DOTALL)
        if not match:
            return 200, {"errors": [], "warnings": [{"message": "empty or missing yaml metadata"}]}, {}
        try:
            yaml.safe_load(match.group(1))
        except yaml.YAMLError as exc:
            return 400, {"errors": [{"message": str(exc)}], "warnings": []}, {}
        return 200, {"errors": [], "warnings": []}, {}

    def _preupload(self, repo: str, body: bytes, **_: Any):
        files = []
        for item in json.loads(body)["files"]:
            self.preuploaded.append(item["path"])
            stored = self.repos[repo].files.get(item["path"])
            lfs = item["path"].endswith(LFS_SUFFIXES)
            oid = None
            if stored is not None:
                oid = stored.lfs_oid if lfs else hashlib.sha1(
                    b"blob %d\0" % stored.size + (stored.data or b"")).hexdigest()
            files.append({"path": item["path"], "uploadMode": "lfs" if lfs else "regular",
                          "shouldIgnore": False, "oid": oid})
        return 200, {"files": files, "commitOid": self.repos[repo].head}, {}

    def _lfs_batch(self, repo: str, body: bytes, **_: Any):
        objects = []
        for obj in json.loads(body)["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in self.lfs:  # the Hub asks only for objects it does not hold
                entry["actions"] = {"upload": {"href": f"{self.url}/lfs-objects/{obj['oid']}"}}
            objects.append(entry)
        return 200, {"transfer": "basic", "objects": objects, "hash_algo": "sha256"}, {}

    def _lfs_put(self, oid: str, body: bytes, auth: str):
        if auth:
            self.put_with_auth.append(oid)
        if hashlib.sha256(body).hexdigest() != oid:
            return 400, {"error": "content does not match its sha256"}, {}
        self.lfs[oid] = body
        self.lfs_puts.append(oid)
        return 200, {}, {}

    def _commit(self, repo: str, body: bytes, auth: str, **_: Any):
        self.commit_requests += 1
        if self.commit_requests in self.fail_commits:
            self.fail_commits.discard(self.commit_requests)
            # deliberately careless: echo the credential, as some proxies do
            return 500, {"error": f"internal error while committing (request had {auth})"}, {}
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not lines or lines[0]["key"] != "header":
            return 400, {"error": "the first NDJSON line must be the header"}, {}
        target = self.repos[repo]
        added, deleted = [], []
        staged = dict(target.files)
        for line in lines[1:]:
            value = line["value"]
            if line["key"] == "file":
                data = base64.b64decode(value["content"])
                staged[value["path"]] = StoredFile(len(data), data=data)
                added.append(value["path"])
            elif line["key"] == "lfsFile":
                if value["oid"] not in self.lfs:
                    return 422, {"error": f"LFS object {value['oid']} for {value['path']} was never uploaded"}, {}
                staged[value["path"]] = StoredFile(value["size"], lfs_oid=value["oid"])
                added.append(value["path"])
            elif line["key"] == "deletedFile":
                if value["path"] not in staged:
                    return 404, {"error": "A file with this name doesn't exist"}, {"X-Error-Code": "EntryNotFound"}
                del staged[value["path"]]
                deleted.append(value["path"])
            else:
                return 400, {"error": f"the stub does not handle {line['key']}"}, {}
        oid = hashlib.sha1(target.head.encode() + body).hexdigest()
        target.files = staged
        target.commits.append({"oid": oid, "summary": lines[0]["value"]["summary"], "paths": added,
                               "deleted": deleted, "files": dict(staged)})
        return 200, {"commitUrl": f"{self._repo_url(repo)}/commit/{oid}", "commitOid": oid,
                     "success": True}, {}

    def _tree(self, repo: str, sub: str | None, query: dict, **_: Any):
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        prefix = f"{sub.rstrip('/')}/" if sub else ""
        entries, folders = [], set()
        for path, stored in sorted(self.repos[repo].files.items()):
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix):]
            if "/" in rest and not recursive:
                folders.add(prefix + rest.split("/", 1)[0])
                continue
            for i in range(rest.count("/")):
                folders.add(prefix + "/".join(rest.split("/")[:i + 1]))
            entry = {"type": "file", "oid": stored.blob_id(), "size": stored.size, "path": path}
            if stored.lfs_oid is not None:
                entry["lfs"] = {"oid": stored.lfs_oid, "size": stored.size, "pointerSize": 134}
            entries.append(entry)
        entries += [{"type": "directory", "oid": hashlib.sha1(f.encode()).hexdigest(), "size": 0, "path": f}
                    for f in sorted(folders)]
        return 200, entries, {}

    def _tag(self, repo: str, rev: str, body: bytes, **_: Any):
        target, tag = self.repos[repo], json.loads(body)["tag"]
        oid = target.head if rev == "main" else rev
        if not any(c["oid"] == oid for c in target.commits):
            return 404, {"error": f"revision {rev} not found"}, {"X-Error-Code": "RevisionNotFound"}
        if tag in target.tags:
            return 409, {"error": f"tag {tag} already exists"}, {}
        target.tags[tag] = oid
        return 200, {}, {}

    def _refs(self, repo: str, **_: Any):
        target = self.repos[repo]
        ref = lambda kind, name, oid: {"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": oid}  # noqa: E731
        return 200, {"branches": [ref("heads", "main", target.head)], "converts": [],
                     "tags": [ref("tags", name, oid) for name, oid in sorted(target.tags.items())]}, {}

    def _info(self, repo: str, **_: Any):
        target = self.repos[repo]
        return 200, {"id": repo, "sha": target.head, "private": target.private,
                     "siblings": [{"rfilename": p} for p in sorted(target.files)]}, {}

    # -- plumbing ----------------------------------------------------------------------------

    def _repo_url(self, repo_id: str) -> str:
        return f"{self.url}/datasets/{repo_id}"

    @staticmethod
    def _send(http: BaseHTTPRequestHandler, status: int, payload: Any, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        http.send_response(status)
        http.send_header("Content-Type", "application/json")
        http.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            http.send_header(name, value)
        http.end_headers()
        http.wfile.write(data)
