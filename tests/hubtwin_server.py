"""The hub twin's server process: olah serving local git mirrors offline, behind a thin ASGI layer.

Run with the Python of the environment olah is installed in (``scripts/setup.sh`` makes ``.venv-hubtwin``), with
olah-cli's own arguments::

    .venv-hubtwin/bin/python tests/hubtwin_server.py --config olah.toml --log-path logs

It imports only olah and its dependencies (not ``helpers``). olah 0.5.4 answers most of what ``huggingface_hub``
asks of a mirrored repo as huggingface.co does; the layer makes it answer like the hub where it does not:

- ``GET /api/models/<org>/<repo>`` (repo info without a revision, ``HfApi().model_info``; the same for
  ``/api/datasets/``): offline, olah answers it only from its proxy cache; it is served as ``.../revision/main``;
- ``?blobs=true`` (``model_info(files_metadata=True)``): olah lists the files by name only; their sizes, blob ids
  and LFS SHA256 are added from the git tree, as the hub sends them;
- ``Range`` on ``/resolve/`` (a resumed download): olah sends the whole file with 200; the layer answers
  206 with the requested bytes (416 past the end);
- a file missing from an existing repo: olah answers 401 ``RepoNotFound``; the hub 404 ``EntryNotFound``.

For tests of interrupted downloads, ``$HUBTWIN_FAULTS`` names a JSON file ``{"<hub id>/<file>": <bytes>}``: the
next full GET of such a file sends that many bytes and drops the connection (the entry is then removed).

For tests of gated repos (Meta's Llama-2/3 on the hub), ``$HUBTWIN_GATED`` names a JSON list of hub ids, read on each
request: their repo info says ``"gated": "manual"``, and their files and ``auth-check`` answer 401 ``GatedRepo``
without an ``Authorization`` header, as the hub answers an anonymous client.
"""
from __future__ import annotations

import json
import os
import re
from urllib.parse import parse_qs

_INFO = re.compile(r"/api/(?P<kind>models|datasets)/(?P<org>[^/]+)/(?P<repo>[^/]+)(?:/revision/(?P<rev>[^/]+))?/?")
_RESOLVE = re.compile(r"/(?:(?P<kind>models|datasets)/)?(?P<org>[^/]+)/(?P<repo>[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)")
_RANGE = re.compile(r"bytes=(\d+)-(\d*)")
_AUTH_CHECK = re.compile(r"/api/models/(?P<org>[^/]+)/(?P<repo>[^/]+)/auth-check/?")
_NOT_REPOS = {"api", "datasets", "spaces", "repos"}


class HubLike:
    """ASGI middleware around olah's app; ``mirrors`` are olah's ``mirrors-path`` folders."""

    def __init__(self, app, mirrors: list[str], faults: str | None = None, gated: str | None = None) -> None:
        self.app, self.mirrors, self.faults, self.gated = app, list(mirrors), faults, gated

    def _is_gated(self, org: str, repo: str) -> bool:
        if not self.gated or not os.path.isfile(self.gated):
            return False
        with open(self.gated) as f:
            return f"{org}/{repo}".lower() in {x.lower() for x in json.load(f)}

    def _repo_dir(self, org: str, repo: str, kind: str | None = "models") -> str | None:
        for root in self.mirrors:
            path = os.path.join(root, kind or "models", org, repo)
            if os.path.isdir(path):
                return path
        return None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        path = scope["path"]
        anonymous = b"authorization" not in dict(scope["headers"])
        check = _AUTH_CHECK.fullmatch(path)
        if check and self._is_gated(check["org"], check["repo"]):
            return await (_gated_reply(send) if anonymous else _reply(send, 200, [], b"{}"))
        info = _INFO.fullmatch(path)
        if info:
            inner = _main_revision(scope, info)
            query = parse_qs(scope.get("query_string", b"").decode())
            blobs = query.get("blobs", [""])[0].lower() in ("true", "1")
            gated = self._is_gated(info["org"], info["repo"])
            if scope["method"] == "GET" and (blobs or gated):
                status, headers, body = await _collect(self.app, inner, receive)
                if status == 200 and blobs:
                    body = self._with_blobs(info["org"], info["repo"], body, info["kind"])
                if status == 200 and gated:
                    body = json.dumps({**json.loads(body), "gated": "manual"}).encode()
                return await _reply(send, status, headers, body)
            return await self.app(inner, receive, send)
        resolve = _RESOLVE.fullmatch(path)
        if resolve and anonymous and resolve["org"] not in _NOT_REPOS and self._is_gated(resolve["org"],
                                                                                        resolve["repo"]):
            return await _gated_reply(send)
        if resolve and resolve["org"] not in _NOT_REPOS:
            status, headers, body = await _collect(self.app, scope, receive)
            if status == 401 and self._repo_dir(resolve["org"], resolve["repo"], resolve["kind"]):
                msg = b'{"error":"Entry not found"}'
                headers = [(b"x-error-code", b"EntryNotFound"), (b"x-error-message", b"Entry not found"),
                           (b"content-type", b"application/json")]
                return await _reply(send, 404, headers, msg if scope["method"] == "GET" else b"", len(msg))
            wanted = dict(scope["headers"]).get(b"range", b"").decode()
            if scope["method"] == "GET" and status == 200 and wanted:
                return await _ranged(send, headers, body, wanted)
            if scope["method"] == "GET" and status == 200:
                cut = self._fault(f"{resolve['org']}/{resolve['repo']}/{resolve['file']}")
                if cut is not None:
                    return await _drop(send, headers, body, cut)
            length = _header(headers, b"content-length")
            return await _reply(send, status, headers, body, int(length) if length else None)
        return await self.app(scope, receive, send)

    def _fault(self, name: str) -> int | None:
        """Bytes to send of ``name`` before dropping the connection (once), or ``None``."""
        if not self.faults or not os.path.isfile(self.faults):
            return None
        with open(self.faults) as f:
            faults = json.load(f)
        cut = faults.pop(name, None)
        if cut is not None:
            with open(self.faults + ".tmp", "w") as f:
                json.dump(faults, f)
            os.replace(self.faults + ".tmp", self.faults)
        return cut

    def _with_blobs(self, org: str, repo: str, body: bytes, kind: str = "models") -> bytes:
        from olah.mirror.repos import LocalMirrorRepo

        meta = json.loads(body)
        path = self._repo_dir(org, repo, kind)
        if path is None or not meta.get("sha"):
            return body
        tree = LocalMirrorRepo(path, kind, org, repo).get_tree(meta["sha"], "", recursive=True) or []
        files = {item["path"]: item for item in tree if item.get("type") == "file"}
        for sibling in meta.get("siblings") or []:
            item = files.get(sibling.get("rfilename"))
            if item is None:
                continue
            sibling["blobId"], sibling["size"] = item["oid"], item["size"]
            if "lfs" in item:
                lfs = item["lfs"]
                sibling["lfs"] = {"sha256": lfs["oid"], "size": lfs["size"], "pointerSize": lfs["pointerSize"]}
        return json.dumps(meta).encode()


def _main_revision(scope, info) -> dict:
    """The scope of a repo-info request, asked of revision ``main`` when it names none (olah answers only that)."""
    inner = dict(scope)
    if not info["rev"]:
        inner["path"] = scope["path"].rstrip("/") + "/revision/main"
        inner["raw_path"] = inner["path"].encode()
    return inner


async def _gated_reply(send) -> None:
    """The hub's answer to an anonymous client asking for a gated repo's files."""
    msg = b'{"error":"Access to this model is restricted: you must have access to it and be authenticated"}'
    headers = [(b"x-error-code", b"GatedRepo"), (b"x-error-message", b"Access to this model is restricted"),
               (b"content-type", b"application/json")]
    await _reply(send, 401, headers, msg)


def _header(headers: list, name: bytes) -> bytes | None:
    return next((v for k, v in headers if k.lower() == name), None)


async def _collect(app, scope, receive) -> tuple[int, list, bytes]:
    """Run ``app`` and keep its whole response (the twin's files are tiny)."""
    start: dict = {}
    chunks: list[bytes] = []

    async def send(message) -> None:
        if message["type"] == "http.response.start":
            start.update(message)
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return start.get("status", 500), list(start.get("headers", [])), b"".join(chunks)


async def _reply(send, status: int, headers: list, body: bytes, length: int | None = None) -> None:
    drop = {b"content-length", b"transfer-encoding"}
    out = [(k, v) for k, v in headers if k.lower() not in drop]
    out.append((b"content-length", str(len(body) if length is None else length).encode()))
    await send({"type": "http.response.start", "status": status, "headers": out})
    await send({"type": "http.response.body", "body": body})


async def _drop(send, headers: list, body: bytes, cut: int) -> None:
    """Start a full answer, send ``cut`` bytes, then break the connection (an interrupted download)."""
    out = [(k, v) for k, v in headers if k.lower() not in (b"content-length", b"transfer-encoding")]
    out.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": 200, "headers": out})
    await send({"type": "http.response.body", "body": body[:cut], "more_body": True})
    raise ConnectionAbortedError("hub twin: connection dropped on purpose (HUBTWIN_FAULTS)")


async def _ranged(send, headers: list, body: bytes, wanted: str) -> None:
    """Answer ``Range: bytes=a-[b]`` like the hub: 206 with those bytes, or 416 past the end."""
    m = _RANGE.fullmatch(wanted.strip())
    if m is None:
        return await _reply(send, 200, headers, body)
    size = len(body)
    first = int(m[1])
    last = min(int(m[2]) if m[2] else size - 1, size - 1)
    if first >= size or last < first:
        return await _reply(send, 416, [(b"content-range", f"bytes */{size}".encode())], b"")
    ranged = [(k, v) for k, v in headers if k.lower() != b"content-range"]
    ranged.append((b"content-range", f"bytes {first}-{last}/{size}".encode()))
    return await _reply(send, 206, ranged, body[first:last + 1])


def _exit_with_parent() -> None:
    """End this server when the process that started it is gone (a test run killed before its teardown)."""
    import threading
    import time

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def main() -> None:
    """Start olah (its own argument parsing and configuration) with the hub-like layer, until interrupted."""
    import uvicorn
    from olah import server

    _exit_with_parent()

    args = server.init()
    mirrors = server.app.state.app_settings.config.mirrors_path
    app = HubLike(server.app, mirrors, faults=os.environ.get("HUBTWIN_FAULTS"), gated=os.environ.get("HUBTWIN_GATED"))
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", reload=False)


if __name__ == "__main__":
    main()
