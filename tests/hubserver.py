"""A loopback server that answers the part of the Hugging Face Hub's HTTP API that `avdata push hf://...`
(huggingface_hub's HfFileSystem) and the hf:// readers use, keeping dataset repositories in memory.

    with hub_server() as hub:              # hub: the base URL, with .repos and .requests
        hub.create("lab/syn")             # a dataset repository with a branch "main"
        ...HF_ENDPOINT=hub...

What it answers (the shapes huggingface_hub parses):
- GET  /api/datasets/{repo}[/revision/{rev}]      repository info (id, sha, siblings); 404 + X-Error-Code
- POST /api/datasets/{repo}/paths-info/{rev}       files and folders at the given paths
- GET  /api/datasets/{repo}/tree/{rev}[/{path}]    a folder's entries (recursive=1: all below it)
- POST /api/datasets/{repo}/preupload/{rev}        every file "regular": its bytes come inline in the commit
- POST /api/datasets/{repo}/commit/{rev}           ndjson: header, file (base64), deletedFile, deletedFolder
- GET/HEAD /datasets/{repo}/resolve/{rev}/{path}   a file's bytes, with Range, ETag and X-Repo-Commit

No LFS or Xet transfer: the preupload answer sends every file inline, which the real Hub does for small
files; the client's own code decides everything else. Nothing here touches the network beyond 127.0.0.1.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

from tests.httpserver import send_whole


class Hub(str):
    """The server's base URL, with its repositories (repo id -> {revision: {path: bytes}}), their commit
    shas, the request log (method, path, headers, status) and the server. `lfs = True`: files are listed as
    the Hub lists files kept in LFS (with the content's sha256), as it does for shards of real size."""

    lfs: bool
    repos: dict[str, dict[str, dict[str, bytes]]]
    shas: dict[tuple[str, str], str]
    requests: list[dict[str, Any]]
    server: ThreadingHTTPServer

    def create(self, repo_id: str, files: dict[str, bytes] | None = None) -> None:
        self.repos[repo_id] = {"main": dict(files or {})}
        self.shas[repo_id, "main"] = hashlib.sha1(repo_id.encode()).hexdigest()


def _oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # git's blob id


class _Handler(BaseHTTPRequestHandler):
    hub: Hub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json") -> None:
        self.hub.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                  "status": status})
        send_whole(self, status, body, {"Content-Type": content_type, **(headers or {})})

    def _json(self, value: Any, status: int = 200) -> None:
        self._send(status, json.dumps(value).encode())

    def _missing(self, code: str, what: str) -> None:
        self._send(404, json.dumps({"error": what}).encode(), {"X-Error-Code": code, "X-Error-Message": what})

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _repo(self, repo_id: str, rev: str) -> dict[str, bytes] | None:
        if repo_id not in self.hub.repos:
            self._missing("RepoNotFound", f"Repository {repo_id} not found")
            return None
        if rev not in self.hub.repos[repo_id]:
            self._missing("RevisionNotFound", f"Revision {rev} not found")
            return None
        return self.hub.repos[repo_id][rev]

    def _entries(self, files: dict[str, bytes], prefix: str, recursive: bool) -> list[dict[str, Any]]:
        prefix = prefix.strip("/")
        out: dict[str, dict[str, Any]] = {}
        for path, data in sorted(files.items()):
            if prefix and not path.startswith(prefix + "/"):
                continue
            rest = path[len(prefix) + 1:] if prefix else path
            parts = rest.split("/")
            for depth in range(1, len(parts)):
                if not recursive and depth > 1:
                    break
                folder = "/".join(([prefix] if prefix else []) + parts[:depth])
                out.setdefault(folder, {"type": "directory", "oid": _oid(folder.encode()), "path": folder})
            if recursive or len(parts) == 1:
                out[path] = self._file(path, data)
        return list(out.values())

    def _file(self, path: str, data: bytes) -> dict[str, Any]:
        entry: dict[str, Any] = {"type": "file", "oid": _oid(data), "size": len(data), "path": path}
        if self.hub.lfs:  # the git blob is then the LFS pointer; the content's hash is the LFS oid
            entry["oid"] = _oid(b"lfs pointer " + hashlib.sha256(data).hexdigest().encode())
            entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return entry

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        path, query = urllib.parse.unquote(url.path), urllib.parse.parse_qs(url.query)
        m = re.fullmatch(r"/datasets/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", url.path)
        if m:
            repo_id, rev, file = m[1], urllib.parse.unquote(m[2]), urllib.parse.unquote(m[3])
            files = self._repo(repo_id, rev)
            if files is None:
                return
            if file not in files:
                self._missing("EntryNotFound", f"{file} not found")
                return
            data = files[file]
            headers = {"ETag": f'"{_oid(data)}"', "X-Repo-Commit": self.hub.shas[repo_id, rev],
                       "Accept-Ranges": "bytes"}
            rng = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
            if rng and int(rng[1]) < len(data):
                start = int(rng[1])
                end = min(int(rng[2]) if rng[2] else len(data) - 1, len(data) - 1)
                headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                self._send(206, data[start:end + 1], headers, "application/octet-stream")
            else:
                self._send(200, data, headers, "application/octet-stream")
            return
        m = re.fullmatch(r"/api/datasets/([^/]+/[^/]+)(?:/revision/(.+))?", path)
        if m:
            rev = m[2] or "main"
            files = self._repo(m[1], rev)
            if files is not None:
                self._json({"id": m[1], "sha": self.hub.shas[m[1], rev], "private": False,
                            "siblings": [{"rfilename": p} for p in sorted(files)]})
            return
        m = re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?", url.path)
        if m:
            files = self._repo(m[1], urllib.parse.unquote(m[2]))
            if files is not None:
                recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
                self._json(self._entries(files, urllib.parse.unquote(m[3] or ""), recursive))
            return
        self._missing("NotFound", f"no route for GET {path}")

    def do_POST(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        m = re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/(paths-info|preupload|commit)/([^/]+)", url.path)
        if not m:
            self._body()
            self._missing("NotFound", f"no route for POST {url.path}")
            return
        repo_id, what, rev = m[1], m[2], urllib.parse.unquote(m[3])
        body = self._body()
        files = self._repo(repo_id, rev)
        if files is None:
            return
        if what == "paths-info":
            if self.headers.get("Content-Type", "").startswith("application/json"):
                paths = json.loads(body)["paths"]
            else:
                paths = urllib.parse.parse_qs(body.decode())["paths"]
            out = []
            for p in paths:
                p = p.strip("/")
                if p in files:
                    out.append(self._file(p, files[p]))
                elif any(f.startswith(p + "/") for f in files):
                    out.append({"type": "directory", "oid": _oid(p.encode()), "path": p})
            self._json(out)
        elif what == "preupload":
            asked = json.loads(body)["files"]
            self._json({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                                  for f in asked]})
        else:
            for line in body.decode().splitlines():
                if not line.strip():
                    continue
                op = json.loads(line)
                key, value = op["key"], op["value"]
                if key == "file":
                    if value.get("encoding") != "base64":
                        self._json({"error": "only base64 content"}, 400)
                        return
                    files[value["path"]] = base64.b64decode(value["content"])
                elif key == "deletedFile":
                    files.pop(value["path"], None)
                elif key == "deletedFolder":
                    for p in [p for p in files if p.startswith(value["path"].rstrip("/") + "/")]:
                        del files[p]
                elif key != "header":
                    self._json({"error": f"unsupported operation {key}"}, 400)
                    return
            sha = hashlib.sha1(self.hub.shas[repo_id, rev].encode() + body).hexdigest()
            self.hub.shas[repo_id, rev] = sha
            self._json({"commitUrl": f"{self.hub}/datasets/{repo_id}/commit/{sha}", "commitOid": sha,
                        "pullRequestUrl": None, "success": True})


@contextlib.contextmanager
def hub_server() -> Iterator[Hub]:
    handler = type("HubHandler", (_Handler,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    hub = Hub(f"http://127.0.0.1:{server.server_address[1]}")
    hub.lfs, hub.repos, hub.shas, hub.requests, hub.server = False, {}, {}, [], server
    handler.hub = hub
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
