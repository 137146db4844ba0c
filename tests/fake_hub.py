"""A local stand-in for the Hugging Face Hub, serving just what huggingface_hub's client asks for.

Endpoints (as read from huggingface_hub 2.x): `GET /api/models/{repo}[/revision/{rev}]` (sha, siblings),
`GET /api/models/{repo}/tree/{rev}` (files with lfs {oid, size}), `HEAD`/`GET /{repo}/resolve/{rev}/{file}`.
Like the real Hub, an LFS file's resolve answers 302 to a CDN on another host name (`localhost` instead of
`127.0.0.1`) and carries the file's metadata in `X-Linked-Etag` / `X-Linked-Size` / `X-Repo-Commit`; the
CDN honours Range requests. Faults are opt-in per file: `drop_once` (close the connection mid-body on the
first GET) and `corrupt` (serve bytes that do not match the advertised sha256).
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".gguf", ".safetensors", ".bin")
TOKEN = "hf_fake_token"


@dataclass
class FakeRepo:
    """Files per branch; `gated` needs the token for file contents, `private` for everything."""

    branches: dict[str, dict[str, bytes]]
    gated: bool = False
    private: bool = False

    def commit(self, repo_id: str, branch: str) -> str:
        return hashlib.sha1(f"{repo_id}@{branch}".encode()).hexdigest()

    def branch_of(self, repo_id: str, revision: str) -> str | None:
        for branch in self.branches:
            if revision in (branch, self.commit(repo_id, branch)):
                return branch
        return None


def is_lfs(path: str) -> bool:
    return path.endswith(LFS_SUFFIXES)


def git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class FakeHub:
    """Register repos, then `start()`; `requests` and `served` record what the client asked for."""

    repos: dict[str, FakeRepo] = field(default_factory=dict)
    drop_once: dict[str, int] = field(default_factory=dict)  # file path -> bytes sent before the drop
    corrupt: set[str] = field(default_factory=set)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    served: list[str] = field(default_factory=list)  # file paths whose bytes were sent (GET)
    _server: ThreadingHTTPServer | None = None

    def add_repo(
        self,
        repo_id: str,
        files: dict[str, bytes],
        *,
        branches: dict[str, dict[str, bytes]] | None = None,
        gated: bool = False,
        private: bool = False,
    ) -> None:
        self.repos[repo_id] = FakeRepo({"main": files, **(branches or {})}, gated, private)

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            fake = hub

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def find_blob(self, sha256: str) -> tuple[str, bytes] | None:
        for repo in self.repos.values():
            for files in repo.branches.values():
                for path, data in files.items():
                    if hashlib.sha256(data).hexdigest() == sha256:
                        return path, data
        return None


class _QuietServer(ThreadingHTTPServer):
    """Clients that cancel close the socket mid-body; that is expected here, not a server error."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        return None


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        return None

    def do_HEAD(self) -> None:
        self._route(head=True)

    def do_GET(self) -> None:
        self._route(head=False)

    # --- routing -------------------------------------------------------------------------------
    def _route(self, head: bool) -> None:
        raw = urlsplit(self.path).path
        self.fake.requests.append((self.command, raw, self.headers.get("Range")))
        seg = [unquote(s) for s in raw.strip("/").split("/")]
        if seg[:1] == ["cdn"] and len(seg) == 2:
            return self._cdn(seg[1], head)
        if seg[:2] == ["api", "models"] and len(seg) >= 4:
            repo_id = f"{seg[2]}/{seg[3]}"
            if len(seg) >= 6 and seg[4] == "tree":
                return self._with_repo(repo_id, seg[5], lambda r, b: self._tree(repo_id, r, b))
            revision = seg[5] if len(seg) == 6 and seg[4] == "revision" else "main"
            return self._with_repo(repo_id, revision, lambda r, b: self._info(repo_id, r, b))
        if len(seg) >= 5 and seg[2] == "resolve":
            repo_id, filename = f"{seg[0]}/{seg[1]}", "/".join(seg[4:])
            return self._with_repo(
                repo_id, seg[3], lambda r, b: self._resolve(repo_id, r, b, filename, head), files=True
            )
        self._error(404, "NotFound", "no such route")

    def _authorized(self) -> bool:
        return self.headers.get("Authorization") == f"Bearer {TOKEN}"

    def _with_repo(self, repo_id: str, revision: str, then: Any, files: bool = False) -> None:
        repo = self.fake.repos.get(repo_id)
        if repo is None or (repo.private and not self._authorized()):
            return self._error(401, "RepoNotFound", "Repository not found")
        if files and repo.gated and not self._authorized():
            return self._error(401, "GatedRepo", "Access to this model is restricted")
        branch = repo.branch_of(repo_id, revision)
        if branch is None:
            return self._error(404, "RevisionNotFound", "Invalid rev id")
        then(repo, branch)

    # --- endpoints -----------------------------------------------------------------------------
    def _info(self, repo_id: str, repo: FakeRepo, branch: str) -> None:
        files = repo.branches[branch]
        self._json(
            {
                "id": repo_id,
                "modelId": repo_id,
                "sha": repo.commit(repo_id, branch),
                "private": repo.private,
                "gated": "auto" if repo.gated else False,
                "tags": [],
                "downloads": 0,
                "likes": 0,
                "siblings": [{"rfilename": p} for p in sorted(files)],
            }
        )

    def _tree(self, repo_id: str, repo: FakeRepo, branch: str) -> None:
        entries = []
        for path, data in sorted(repo.branches[branch].items()):
            entry: dict[str, Any] = {"type": "file", "path": path, "size": len(data), "oid": git_oid(data)}
            if is_lfs(path):
                entry["lfs"] = {
                    "oid": hashlib.sha256(data).hexdigest(),
                    "size": len(data),
                    "pointerSize": 134,
                }
            entries.append(entry)
        self._json(entries)

    def _resolve(self, repo_id: str, repo: FakeRepo, branch: str, filename: str, head: bool) -> None:
        data = repo.branches[branch].get(filename)
        commit = {"X-Repo-Commit": repo.commit(repo_id, branch)}
        if data is None:
            return self._error(404, "EntryNotFound", "Entry not found", commit)
        if is_lfs(filename):
            sha = hashlib.sha256(data).hexdigest()
            self.send_response(302)
            for key, value in {
                **commit,
                "ETag": f'"{git_oid(data)}"',
                "X-Linked-Etag": f'"{sha}"',
                "X-Linked-Size": str(len(data)),
                "Location": f"http://localhost:{self.fake.port}/cdn/{sha}",
                "Content-Length": "0",
            }.items():
                self.send_header(key, value)
            self.end_headers()
            return
        self._bytes(filename, data, head, {**commit, "ETag": f'"{git_oid(data)}"'})

    def _cdn(self, sha: str, head: bool) -> None:
        found = self.fake.find_blob(sha)
        if found is None:
            return self._error(404, "NotFound", "no such blob")
        self._bytes(*found, head, {"ETag": f'"{sha}"'})

    # --- responses -----------------------------------------------------------------------------
    def _bytes(self, path: str, data: bytes, head: bool, headers: dict[str, str]) -> None:
        if path in self.fake.corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match:
            start = int(match.group(1))
        body = data[start:]
        self.send_response(206 if match else 200)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(body)))
        if match:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if head:
            return
        self.fake.served.append(path)
        cut = self.fake.drop_once.pop(path, None)
        if cut is not None:
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)

    def _json(self, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str, extra: dict[str, str] | None = None) -> None:
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        for key, value in {"X-Error-Code": code, "X-Error-Message": message, **(extra or {})}.items():
            self.send_header(key, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
