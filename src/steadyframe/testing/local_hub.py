"""A loopback Hugging Face Hub for tests and benches: serves folders as model repos (no torch).

Hand-written because no library serves the Hub's REST layout offline. It speaks enough of it for
the real ``huggingface_hub`` client (``HfApi.model_info``, ``list_repo_tree``, ``hf_hub_download``,
``snapshot_download``, ``hf download``): ``/api/models/{repo}[/revision/{rev}]``,
``/api/models/{repo}/tree/{rev}``, and ``GET``/``HEAD /{repo}/resolve/{rev}/{file}`` with ``ETag``,
``X-Repo-Commit``, ``Content-Length`` and ``Range``. Test controls: a bytes-per-second throttle,
a pause, a cut (drop the connection mid-file after N more bytes, then refuse every request until
restored), a token per gated repo, and a count of body bytes sent per file.

    hub = LocalHub(); hub.add_repo("steadyframe/tiny-t2v", folder); hub.start()
    os.environ["HF_ENDPOINT"] = hub.url
"""

from __future__ import annotations

import hashlib
import json
import re
import select
import socket
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

_SLICE = 16 * 1024  # bytes written between throttle checks


@dataclass
class _Blob:
    path: str
    data_path: Path
    size: int
    sha256: str
    git_sha1: str
    lfs: bool


@dataclass
class _Repo:
    repo_id: str
    commit: str
    files: dict[str, _Blob]
    token: str | None = None  # gated: requests must carry "Authorization: Bearer <token>"


@dataclass
class HubStats:
    """What the hub sent: body bytes per (repo, file), and every request (method, path, range)."""

    sent: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)

    def bytes_for(self, repo_id: str) -> int:
        return sum(v for (repo, _), v in self.sent.items() if repo == repo_id)


class LocalHub:
    """The server; ``start()`` binds 127.0.0.1 on a free port, ``stop()`` closes it."""

    def __init__(self, *, bytes_per_second: float | None = None) -> None:
        self.bytes_per_second = bytes_per_second
        self.repos: dict[str, _Repo] = {}
        self.stats = HubStats()
        self._lock = threading.Lock()
        self._running = threading.Event()
        self._running.set()
        self._cut_budget: int | None = None  # bytes left before the connection drops
        self._refusing = False
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- content --------------------------------------------------------------------------

    def add_repo(
        self, repo_id: str, folder: Path, *, token: str | None = None, lfs_suffixes: tuple[str, ...] = (".safetensors", ".bin")
    ) -> str:
        """Serve every file under ``folder`` as ``repo_id``; files with ``lfs_suffixes`` are LFS. -> commit."""
        files: dict[str, _Blob] = {}
        digest = hashlib.sha1(repo_id.encode())
        for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
            relative = path.relative_to(folder).as_posix()
            data = path.read_bytes()
            sha256 = hashlib.sha256(data).hexdigest()
            git_sha1 = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
            files[relative] = _Blob(relative, path, len(data), sha256, git_sha1, path.suffix in lfs_suffixes)
            digest.update(relative.encode() + sha256.encode())
        commit = digest.hexdigest()
        self.repos[repo_id] = _Repo(repo_id, commit, files, token)
        return commit

    # --- controls ---------------------------------------------------------------------------

    def pause(self) -> None:
        """Hold every body mid-way (nothing more is sent) until ``resume()``."""
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def cut_after(self, more_bytes: int) -> None:
        """Drop the connection after ``more_bytes`` more body bytes; refuse requests until ``restore()``."""
        with self._lock:
            self._cut_budget = more_bytes

    def restore(self) -> None:
        with self._lock:
            self._cut_budget = None
            self._refusing = False

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the hub first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "LocalHub":
        hub = self

        class Handler(_HubHandler):
            owner = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="local-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.resume()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> "LocalHub":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- used by the handler ----------------------------------------------------------------

    def _take_budget(self, want: int) -> tuple[int, bool]:
        """(bytes allowed now, whether to drop the connection after them)."""
        with self._lock:
            if self._cut_budget is None:
                return want, False
            allowed = min(want, self._cut_budget)
            self._cut_budget -= allowed
            if self._cut_budget <= 0:
                self._refusing = True
                return allowed, True
            return allowed, False

    def _refuses(self) -> bool:
        with self._lock:
            return self._refusing


_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
_INFO = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?$")
_TREE = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?P<sub>/.*)?$")
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


class _HubHandler(BaseHTTPRequestHandler):
    owner: LocalHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet: tests read HubStats instead
        return

    # --- routing ----------------------------------------------------------------------------

    def do_HEAD(self) -> None:
        self._route(head=True)

    def do_GET(self) -> None:
        self._route(head=False)

    def _route(self, *, head: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        self.owner.stats.requests.append((self.command, path, self.headers.get("Range")))
        if self.owner._refuses():
            self._drop()
            return
        if match := _RESOLVE.match(path):
            self._resolve(match["repo"], match["rev"], match["file"], head=head)
        elif match := _TREE.match(path):
            self._tree(match["repo"], match["rev"])
        elif match := _INFO.match(path):
            self._info(match["repo"], match["rev"] or "main")
        else:
            self._error(404, "EntryNotFound", "no such route")

    def _repo(self, repo_id: str, revision: str) -> _Repo | None:
        repo = self.owner.repos.get(repo_id)
        if repo is None:
            self._error(401, "RepoNotFound", "Repository not found")
            return None
        if repo.token is not None and self.headers.get("Authorization") != f"Bearer {repo.token}":
            self._error(401, "GatedRepo", "Access to this model is restricted")
            return None
        if revision not in ("main", repo.commit):
            self._error(404, "RevisionNotFound", "Invalid rev id")
            return None
        return repo

    # --- endpoints --------------------------------------------------------------------------

    def _info(self, repo_id: str, revision: str) -> None:
        repo = self._repo(repo_id, revision)
        if repo is None:
            return
        siblings = []
        for blob in repo.files.values():
            sibling: dict[str, object] = {"rfilename": blob.path, "size": blob.size, "blobId": blob.git_sha1}
            if blob.lfs:
                sibling["lfs"] = {"size": blob.size, "sha256": blob.sha256, "pointerSize": 134}
            siblings.append(sibling)
        self._json(
            {
                "_id": repo.commit[:24], "id": repo.repo_id, "modelId": repo.repo_id, "sha": repo.commit,
                "private": False, "gated": "manual" if repo.token else False, "disabled": False,
                "downloads": 0, "likes": 0, "tags": ["diffusers"], "library_name": "diffusers",
                "lastModified": "2026-01-01T00:00:00.000Z", "createdAt": "2026-01-01T00:00:00.000Z",
                "siblings": siblings,
            }  # fmt: skip
        )

    def _tree(self, repo_id: str, revision: str) -> None:
        repo = self._repo(repo_id, revision)
        if repo is None:
            return
        entries: list[dict[str, object]] = []
        folders = sorted({b.path.rsplit("/", 1)[0] for b in repo.files.values() if "/" in b.path})
        entries += [{"type": "directory", "oid": "0" * 40, "size": 0, "path": f} for f in folders]
        for blob in repo.files.values():
            entry: dict[str, object] = {"type": "file", "oid": blob.git_sha1, "size": blob.size, "path": blob.path}
            if blob.lfs:
                entry["lfs"] = {"oid": blob.sha256, "size": blob.size, "pointerSize": 134}
            entries.append(entry)
        self._json(entries)

    def _resolve(self, repo_id: str, revision: str, filename: str, *, head: bool) -> None:
        repo = self._repo(repo_id, revision)
        if repo is None:
            return
        blob = repo.files.get(filename)
        if blob is None:
            self._error(404, "EntryNotFound", f"{filename} does not exist")
            return
        start, end = 0, blob.size - 1
        status = 200
        wanted = self.headers.get("Range")
        if wanted and (match := _RANGE.match(wanted.strip())):
            start = int(match[1])
            end = min(int(match[2]), blob.size - 1) if match[2] else blob.size - 1
            if start >= blob.size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{blob.size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{blob.sha256 if blob.lfs else blob.git_sha1}"')
        self.send_header("X-Repo-Commit", repo.commit)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{blob.size}")
        self.end_headers()
        if not head:
            self._send_body(repo.repo_id, blob, start, end + 1)

    # --- plumbing ---------------------------------------------------------------------------

    def _send_body(self, repo_id: str, blob: _Blob, start: int, stop: int) -> None:
        hub = self.owner
        with open(blob.data_path, "rb") as handle:
            handle.seek(start)
            position = start
            began = time.monotonic()
            sent = 0
            while position < stop:
                if not hub._running.is_set():
                    hub._running.wait()
                    if self._peer_gone():
                        return  # the client died while paused: nothing more can reach it
                piece = handle.read(min(_SLICE, stop - position))
                allowed, drop = hub._take_budget(len(piece))
                piece = piece[:allowed]
                try:
                    self.wfile.write(piece)
                    self.wfile.flush()
                except OSError:
                    return  # the client went away
                with hub._lock:
                    hub.stats.sent[(repo_id, blob.path)] += len(piece)
                position += len(piece)
                sent += len(piece)
                if drop:
                    self._drop()
                    return
                if hub.bytes_per_second:
                    ahead = sent / hub.bytes_per_second - (time.monotonic() - began)
                    if ahead > 0:
                        time.sleep(ahead)

    def _peer_gone(self) -> bool:
        """The client closed its end (a readable socket with nothing to read is end-of-file)."""
        readable, _, _ = select.select([self.connection], [], [], 0)
        if not readable:
            return False
        try:
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _drop(self) -> None:
        """Close the socket without a word (a network cut)."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _json(self, payload: object) -> None:
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, code: str, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        self.end_headers()
        self.wfile.write(body)


def serve_folder_cli() -> None:  # pragma: no cover - manual use: python -m steadyframe.testing.local_hub REPO DIR
    import sys

    hub = LocalHub(bytes_per_second=float(sys.argv[3]) if len(sys.argv) > 3 else None)
    hub.add_repo(sys.argv[1], Path(sys.argv[2]))
    hub.start()
    print(hub.url, flush=True)
    threading.Event().wait()


if __name__ == "__main__":  # pragma: no cover
    serve_folder_cli()
