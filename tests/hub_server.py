"""A minimal Hugging Face Hub served on loopback, for tests of the real download/upload code paths.

It implements the HTTP endpoints ``huggingface_hub`` uses to create a model repo, commit small
files (sent inline, base64) and download them with ``hf_hub_download`` (``HEAD``/``GET`` on
``/{repo}/resolve/{revision}/{file}``), with commit ids so that revision pinning can be tested.
Only 127.0.0.1 is ever bound.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit


@dataclass
class Repo:
    commits: list[tuple[str, dict[str, bytes]]] = field(default_factory=list)  # (oid, files) oldest first
    private: bool = False

    def files_at(self, revision: str) -> tuple[str, dict[str, bytes]] | None:
        if not self.commits:
            return None
        if revision == "main":
            return self.commits[-1]
        for oid, files in self.commits:
            if oid == revision:
                return oid, files
        return None


class LoopbackHub:
    """Start with ``hub = LoopbackHub(); hub.start()``; ``hub.endpoint`` is ``http://127.0.0.1:PORT``."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.validated_cards: list[str] = []
        self.fail_next: list[int] = []  # status codes to return for the next resolve requests
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> LoopbackHub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def commit(self, repo_id: str, files: dict[str, bytes]) -> str:
        """Add a commit directly (as if pushed); returns its oid."""
        with self._lock:
            repo = self.repos.setdefault(repo_id, Repo())
            previous = dict(repo.commits[-1][1]) if repo.commits else {}
            previous.update(files)
            oid = hashlib.sha1(f"{repo_id}:{len(repo.commits)}".encode()).hexdigest()
            repo.commits.append((oid, previous))
            return oid

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def _send(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _json(self, status: int, payload, headers: dict | None = None) -> None:
                self._send(
                    status,
                    json.dumps(payload).encode(),
                    {"Content-Type": "application/json", **(headers or {})},
                )

            def _body(self) -> bytes:
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def do_HEAD(self) -> None:
                self._resolve()

            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                hub.requests.append(("GET", path))
                if "/resolve/" in path:
                    self._resolve()
                    return
                match = re.match(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?$", path)
                if match:
                    repo = hub.repos.get(match["repo"])
                    state = repo.files_at(unquote(match["rev"] or "main")) if repo else None
                    if state is None:
                        self._json(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                        return
                    oid, files = state
                    self._json(
                        200,
                        {
                            "id": match["repo"],
                            "sha": oid,
                            "private": repo.private,
                            "siblings": [{"rfilename": name} for name in files],
                        },
                    )
                    return
                self._json(404, {"error": f"unknown endpoint {path}"})

            def _resolve(self) -> None:
                path = urlsplit(self.path).path
                if self.command == "HEAD":
                    hub.requests.append(("HEAD", path))
                match = re.match(
                    r"^/(?:models/)?(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$", path
                )
                if not match:
                    self._json(404, {"error": "bad resolve url"})
                    return
                if hub.fail_next:
                    self._json(hub.fail_next.pop(0), {"error": "injected failure"})
                    return
                repo = hub.repos.get(match["repo"])
                if repo is None:
                    self._json(401, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                    return
                state = repo.files_at(unquote(match["rev"]))
                if state is None:
                    self._json(404, {"error": "Revision not found"}, {"X-Error-Code": "RevisionNotFound"})
                    return
                oid, files = state
                name = unquote(match["file"])
                if name not in files:
                    self._json(
                        404,
                        {"error": "Entry not found"},
                        {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": oid},
                    )
                    return
                content = files[name]
                etag = hashlib.sha256(content).hexdigest()
                self._send(
                    200,
                    content,
                    {"X-Repo-Commit": oid, "ETag": f'"{etag}"', "Content-Type": "application/octet-stream"},
                )

            def do_POST(self) -> None:
                path = urlsplit(self.path).path
                hub.requests.append(("POST", path))
                body = self._body()
                if path == "/api/repos/create":
                    payload = json.loads(body or b"{}")
                    org = payload.get("organization")
                    repo_id = f"{org}/{payload['name']}" if org else payload["name"]
                    with hub._lock:
                        exists = repo_id in hub.repos
                        hub.repos.setdefault(repo_id, Repo(private=bool(payload.get("private"))))
                    if exists:
                        self._json(
                            409,
                            {
                                "error": "You already created this model repo",
                                "url": f"{hub.endpoint}/{repo_id}",
                            },
                        )
                    else:
                        self._json(200, {"url": f"{hub.endpoint}/{repo_id}", "name": repo_id})
                    return
                if path == "/api/validate-yaml":
                    import yaml

                    payload = json.loads(body or b"{}")
                    content = payload.get("content", "")
                    front = content.split("---")[1] if content.startswith("---") else ""
                    try:
                        yaml.safe_load(front)
                    except yaml.YAMLError as exc:
                        self._json(400, {"error": f"invalid YAML front matter: {exc}"})
                        return
                    hub.validated_cards.append(content)
                    self._json(200, {"errors": [], "warnings": []})
                    return
                match = re.match(r"^/api/models/(?P<repo>[^/]+/[^/]+)/preupload/(?P<rev>[^/]+)$", path)
                if match:
                    files = json.loads(body)["files"]
                    self._json(
                        200,
                        {
                            "files": [
                                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                for f in files
                            ],
                            "commitOid": None,
                        },
                    )
                    return
                match = re.match(r"^/api/models/(?P<repo>[^/]+/[^/]+)/commit/(?P<rev>[^/]+)$", path)
                if match:
                    files: dict[str, bytes] = {}
                    for line in body.decode().splitlines():
                        if not line.strip():
                            continue
                        item = json.loads(line)
                        if item.get("key") == "file":
                            value = item["value"]
                            files[value["path"]] = base64.b64decode(value["content"])
                    repo_id = match["repo"]
                    if repo_id not in hub.repos:
                        self._json(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                        return
                    oid = hub.commit(repo_id, files)
                    self._json(
                        200,
                        {
                            "commitUrl": f"{hub.endpoint}/{repo_id}/commit/{oid}",
                            "commitOid": oid,
                            "pullRequestUrl": None,
                        },
                    )
                    return
                self._json(404, {"error": f"unknown endpoint {path}"})

        return Handler
