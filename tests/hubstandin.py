"""A stand-in for the hub's write side, for tests of uploads: a small HTTP server on 127.0.0.1 that answers the
endpoints ``huggingface_hub`` uses to push files, checks tokens as the hub does, and keeps what it was sent.

The hub twin (olah, ``tests/hubtwin.py``) is a read-only mirror: it has no route to create a repo or commit.
This server implements what ``HfApi.whoami``, ``create_repo``, ``upload_folder`` (both its paths: the pipelined
multi-commit upload and the single ``create_commit``), ``repo_info`` and ``list_repo_files`` send:

- ``GET /api/whoami-v2``; ``POST /api/repos/create`` (409 with the repo's url when it exists);
- ``GET /api/models/<repo>[/revision/<rev>]`` and ``GET /api/models/<repo>/tree/<rev>``;
- ``POST /api/models/<repo>/preupload/<rev>``: each file's upload mode and the oid of the committed file of that
  path (a git blob SHA-1, or the SHA256 of an LFS file), so unchanged files are skipped as on the hub;
- the git LFS batch API ``POST /<repo>.git/info/lfs/objects/batch`` (basic transfer: an upload action only for
  objects it does not hold yet), ``PUT /lfs/<oid>`` (the SHA256 of the body is checked) and ``POST /lfs/verify``;
- ``POST /api/models/<repo>/commit/<rev>``: the NDJSON commit (``file`` base64 contents, ``lfsFile`` references to
  uploaded objects), applied to the repo; ``POST /api/validate-yaml`` (a README's front matter).

Tokens: a request whose ``Authorization`` token is not one of ``tokens`` gets the hub's 401 ``Invalid credentials
in Authorization header``; writes need a valid token. With ``lfs=False`` every file is committed as a regular
file (the pipelined upload sends its large files through Xet storage, which this server does not implement).
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

LFS_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pth", ".pt", ".model")  # the hub's default .gitattributes
LFS_MIN_SIZE = 10 << 20  # and any file from 10 MiB
INVALID = "Invalid credentials in Authorization header"
_REPO = r"(?P<repo>[^/]+/[^/]+)"


def git_blob_sha1(data: bytes) -> str:
    """The git object id of ``data`` as a blob."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class StoredFile:
    """One committed file: its bytes, and whether it went through LFS."""

    data: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def oid(self) -> str:
        """The oid the hub's preupload answer gives for it (what huggingface_hub compares its local file with)."""
        return self.sha256 if self.lfs else git_blob_sha1(self.data)


@dataclass
class Repo:
    """A repo on the stand-in: its files after the last commit, its commits, its visibility."""

    repo_id: str
    private: bool
    files: dict[str, StoredFile] = field(default_factory=dict)
    commits: list[dict] = field(default_factory=list)

    @property
    def sha(self) -> str:
        return hashlib.sha1(json.dumps([c["summary"] for c in self.commits]).encode()).hexdigest()


@dataclass
class Request:
    """One request the server answered: method, path, status, bytes received."""

    method: str
    path: str
    status: int
    received: int


class HubStandIn:
    """The server and what it holds; use as a context manager, or :meth:`start` / :meth:`stop`."""

    def __init__(self, tokens: dict[str, str], *, lfs: bool = True) -> None:
        self.tokens, self.lfs = dict(tokens), lfs
        self.repos: dict[str, Repo] = {}
        self.objects: dict[str, bytes] = {}  # LFS objects by SHA256
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> HubStandIn:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> HubStandIn:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def calls(self, method: str, pattern: str) -> list[Request]:
        """The requests with ``method`` whose path matches the regular expression ``pattern``."""
        return [r for r in self.requests if r.method == method and re.search(pattern, r.path)]


def _handler(hub: HubStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet; the requests are kept in hub.requests
            pass

        def _serve(self) -> None:
            body = self._body()
            path = unquote(urlparse(self.path).path)
            user, status, reply, headers = self._auth(), 404, {"error": "not found"}, {}
            if user is _BAD_TOKEN:
                status, reply, headers = 401, {"error": INVALID}, {"X-Error-Message": INVALID}
            else:
                for method, pattern, handle in _ROUTES:
                    m = pattern.fullmatch(path)
                    if method == self.command and m:
                        with hub.lock:
                            status, reply = handle(hub, m.groupdict(), user, body)
                        break
            if (status, reply) == _NOT_FOUND:
                headers = {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"}
            with hub.lock:
                hub.requests.append(Request(self.command, path, status, len(body)))
            data = reply if isinstance(reply, bytes) else json.dumps(reply).encode()
            self.send_response(status)
            for key, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = _serve

        def _auth(self):
            value = self.headers.get("Authorization", "")
            if not value:
                return None
            return hub.tokens.get(value.removeprefix("Bearer ").strip(), _BAD_TOKEN)

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    return Handler


_BAD_TOKEN = object()
_NOT_FOUND = (404, {"error": "Repository not found"})  # with the hub's X-Error-Code, added by the handler


def _need(user) -> tuple[int, dict] | None:
    return (401, {"error": "You must be authenticated to write"}) if user is None else None


def _whoami(hub: HubStandIn, m: dict, user, body: bytes) -> tuple[int, dict]:
    return _need(user) or (200, {"type": "user", "name": user, "auth": {"accessToken": {"role": "write"}}})


def _create(hub: HubStandIn, m: dict, user, body: bytes) -> tuple[int, dict]:
    if _need(user):
        return _need(user)
    payload = json.loads(body)
    repo_id = f"{payload.get('organization') or user}/{payload['name']}"
    url = f"{hub.endpoint}/{repo_id}"
    if repo_id.split("/")[0] != user:
        return 403, {"error": f"You don't have the rights to create a model under the namespace {repo_id}"}
    if repo_id in hub.repos:
        return 409, {"error": "You already created this model repo", "url": url}
    hub.repos[repo_id] = Repo(repo_id, private=payload.get("visibility", "public") == "private"
                              or bool(payload.get("private")))
    return 200, {"url": url, "name": repo_id}


def _visible(hub: HubStandIn, repo_id: str, user) -> Repo | None:
    repo = hub.repos.get(repo_id)
    return repo if repo is not None and (not repo.private or repo_id.split("/")[0] == user) else None


def _info(hub: HubStandIn, m: dict, user, body: bytes) -> tuple[int, dict]:
    repo = _visible(hub, m["repo"], user)
    if repo is None:
        return _NOT_FOUND
    return 200, {"id": repo.repo_id, "sha": repo.sha, "private": repo.private,
                 "siblings": [{"rfilename": name} for name in sorted(repo.files)]}


def _tree(hub: HubStandIn, m: dict, user, body: bytes) -> tuple[int, list | dict]:
    repo = _visible(hub, m["repo"], user)
    if repo is None:
        return _NOT_FOUND
    return 200, [{"type": "file", "path": name, "size": len(f.data), "oid": git_blob_sha1(f.data),
                  **({"lfs": {"oid": f.sha256, "size": len(f.data), "pointerSize": 134}} if f.lfs else {})}
                 for name, f in sorted(repo.files.items())]


def _preupload(hub: HubStandIn, m: dict, user, body: bytes) -> tuple[int, dict]:
    repo = _visible(hub, m["repo"], user)
    if _need(user) or repo is None:
        return _need(user) or _NOT_FOUND
    files = []
    for f in json.loads(body)["files"]:
        lfs = hub.lfs and (f["path"].endswith(LFS_SUFFIXES) or f["size"] >= LFS_MIN_SIZE)
        stored = repo.files.get(f["path"])
        files.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                      "oid": stored.oid if stored is not None and stored.lfs == lfs else None})
    return 200, {"files": files}


def _batch(hub: HubStandIn, m: dict, user, body: bytes) -> tuple[int, dict]:
    if _need(user) or _visible(hub, m["repo"], user) is None:
        return _need(user) or _NOT_FOUND
    objects = []
    for obj in json.loads(body)["objects"]:
        actions = None if obj["oid"] in hub.objects else {
            "upload": {"href": f"{hub.endpoint}/lfs/{obj['oid']}"}, "verify": {"href": f"{hub.endpoint}/lfs/verify"}}
        objects.append({"oid": obj["oid"], "size": obj["size"], **({"actions": actions} if actions else {})})
    return 200, {"transfer": "basic", "objects": objects}


def _put_object(hub: HubStandIn, m: dict, user, body: bytes) -> tuple[int, dict]:
    if hashlib.sha256(body).hexdigest() != m["oid"]:
        return 400, {"error": "the uploaded bytes do not match the oid"}
    hub.objects[m["oid"]] = body
    return 200, {}


def _verify(hub: HubStandIn, m: dict, user, body: bytes) -> tuple[int, dict]:
    obj = json.loads(body)
    ok = obj["oid"] in hub.objects and len(hub.objects[obj["oid"]]) == obj["size"]
    return (200, {}) if ok else (404, {"error": "object not found"})


def _commit(hub: HubStandIn, m: dict, user, body: bytes) -> tuple[int, dict]:
    repo = _visible(hub, m["repo"], user)
    if _need(user) or repo is None:
        return _need(user) or _NOT_FOUND
    lines = [json.loads(line) for line in body.splitlines() if line.strip()]
    header = next(item["value"] for item in lines if item["key"] == "header")
    changes: dict[str, StoredFile | None] = {}
    for item in lines:
        value = item["value"]
        if item["key"] == "file":
            changes[value["path"]] = StoredFile(base64.b64decode(value["content"]), lfs=False)
        elif item["key"] == "lfsFile":
            if value["oid"] not in hub.objects:
                return 400, {"error": f"LFS object {value['oid']} of {value['path']} was never uploaded"}
            changes[value["path"]] = StoredFile(hub.objects[value["oid"]], lfs=True)
        elif item["key"] == "deletedFile":
            changes[value["path"]] = None
    for path, stored in changes.items():
        repo.files.pop(path, None) if stored is None else repo.files.__setitem__(path, stored)
    repo.commits.append({"summary": header["summary"], "paths": sorted(changes)})
    return 200, {"success": True, "commitOid": repo.sha, "commitUrl": f"{hub.endpoint}/{repo.repo_id}/commit/"
                 f"{repo.sha}", "pullRequestUrl": None}


def _validate_yaml(hub: HubStandIn, m: dict, user, body: bytes) -> tuple[int, dict]:
    """A README's front matter must be a YAML mapping (the hub checks more: its fields' types and values)."""
    import yaml

    text = json.loads(body)["content"]
    front = re.match(r"---\n(.*?)\n---\n", text, re.S)
    try:
        meta = yaml.safe_load(front.group(1)) if front else {}
    except yaml.YAMLError as exc:
        return 400, {"errors": [{"message": f"invalid YAML: {exc}"}]}
    if not isinstance(meta, dict):
        return 400, {"errors": [{"message": "the metadata is not a mapping"}]}
    return 200, {"errors": [], "warnings": []}


_ROUTES = [  # method, path, handler(hub, path groups, user, body) -> (status, reply)
    ("GET", re.compile(r"/api/whoami-v2"), _whoami),
    ("POST", re.compile(r"/api/repos/create"), _create),
    ("GET", re.compile(rf"/api/models/{_REPO}(?:/revision/[^/]+)?"), _info),
    ("GET", re.compile(rf"/api/models/{_REPO}/tree/[^/]+(?:/.*)?"), _tree),
    ("POST", re.compile(rf"/api/models/{_REPO}/preupload/[^/]+"), _preupload),
    ("POST", re.compile(rf"/{_REPO}\.git/info/lfs/objects/batch"), _batch),
    ("PUT", re.compile(r"/lfs/(?P<oid>[0-9a-f]{64})"), _put_object),
    ("POST", re.compile(r"/lfs/verify"), _verify),
    ("POST", re.compile(rf"/api/models/{_REPO}/commit/[^/]+"), _commit),
    ("POST", re.compile(r"/api/validate-yaml"), _validate_yaml),
]


def tree(folder: str | Path) -> dict[str, bytes]:
    """``{relative path: bytes}`` of every file under ``folder`` (to compare with :attr:`Repo.files`)."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
