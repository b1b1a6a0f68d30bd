"""A local stand-in for the Hugging Face Hub on 127.0.0.1, serving model repos from directories the way the
Hub's API and file endpoints do (what huggingface_hub 2.x reads: the model-info JSON with file sizes, and
HEAD/GET on /{repo}/resolve/{rev}/{file} with ETag, X-Repo-Commit, Content-Length and Range support).

Select it with HF_ENDPOINT (subprocesses) or the `hub=` argument of workbench.core.hub (in-process).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_INFO = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/?]+))?(?:\?.*)?$")
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>[^?]+)(?:\?.*)?$")


@dataclass
class HubStandIn:
    repos: dict[str, Path] = field(default_factory=dict)  # repo id -> directory of its files
    errors: dict[str, tuple[int, str]] = field(default_factory=dict)  # repo id -> (status, X-Error-Code)
    drop_after: dict[str, int] = field(default_factory=dict)  # file name -> bytes sent before one drop
    failing_files: set[str] = field(default_factory=set)  # file names answered with HTTP 403
    stall_after: dict[str, int] = field(default_factory=dict)  # file name -> bytes sent before waiting on `release`
    release: threading.Event = field(default_factory=threading.Event)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # (method, path, Range)

    def commit(self, repo: str) -> str:
        return hashlib.sha1(repo.encode()).hexdigest()

    def start(self) -> str:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:
                stand_in.handle(self, body=False)

            def do_GET(self) -> None:
                stand_in.handle(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- responses ------------------------------------------------------------------------------
    def handle(self, request: BaseHTTPRequestHandler, body: bool) -> None:
        self.requests.append((request.command, request.path, request.headers.get("Range")))
        request.close_connection = True  # no keep-alive: after stop() nothing answers any more
        info, resolve = _INFO.match(request.path), _RESOLVE.match(request.path)
        match = info or resolve
        repo = match.group("repo") if match else None
        if repo in self.errors:
            status, code = self.errors[repo]
            return self._reply(request, status, b'{"error": "denied"}', {"X-Error-Code": code}, body)
        if repo not in self.repos:
            return self._reply(request, 404, b'{"error": "Repository not found"}', {"X-Error-Code": "RepoNotFound"}, body)
        directory = self.repos[repo]
        if info:
            files = sorted(p for p in directory.rglob("*") if p.is_file())
            siblings = [{"rfilename": p.relative_to(directory).as_posix(), "size": p.stat().st_size,
                         "blobId": self._etag(p)} for p in files]
            payload = {"id": repo, "modelId": repo, "sha": self.commit(repo), "private": False, "gated": False,
                       "siblings": siblings}
            return self._reply(request, 200, json.dumps(payload).encode(), {"Content-Type": "application/json"}, body)
        path = directory / resolve.group("file")
        if path.name in self.failing_files:
            return self._reply(request, 403, b"", {}, body)
        if not path.is_file():
            return self._reply(request, 404, b"", {"X-Error-Code": "EntryNotFound",
                                                   "X-Repo-Commit": self.commit(repo)}, body)
        self._send_file(request, repo, path, body)

    @staticmethod
    def _etag(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    def _reply(self, request, status: int, payload: bytes, headers: dict[str, str], body: bool) -> None:
        request.send_response(status)
        request.send_header("Connection", "close")
        for name, value in headers.items():
            request.send_header(name, value)
        request.send_header("Content-Length", str(len(payload)))
        request.end_headers()
        if body:
            request.wfile.write(payload)

    def _send_file(self, request, repo: str, path: Path, body: bool) -> None:
        data = path.read_bytes()
        start = 0
        ranged = request.headers.get("Range")
        if ranged and body:
            start = int(re.match(r"bytes=(\d+)-", ranged).group(1))
        request.send_response(206 if start else 200)
        request.send_header("Connection", "close")
        request.send_header("ETag", f'"{self._etag(path)}"')
        request.send_header("X-Repo-Commit", self.commit(repo))
        request.send_header("Accept-Ranges", "bytes")
        request.send_header("Content-Length", str(len(data) - start))
        if start:
            request.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        request.end_headers()
        if not body:
            return
        drop = self.drop_after.pop(path.name, None)
        if drop is not None and not start:
            request.wfile.write(data[:drop])
            request.wfile.flush()
            request.close_connection = True
            request.connection.shutdown(2)  # the connection drops mid-file
            return
        stall = self.stall_after.pop(path.name, None)
        if stall is not None:
            request.wfile.write(data[start:stall])
            request.wfile.flush()
            self.release.wait(60)  # the client is killed meanwhile
            return
        request.wfile.write(data[start:])
