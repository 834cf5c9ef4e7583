"""A small Hugging Face Hub-compatible HTTP server for tests, on loopback only.

It speaks the endpoints ``huggingface_hub`` uses to create a repository, pre-upload, commit
and resolve files, so that ``push_to_hub`` / ``from_pretrained`` run over real HTTP against
``HF_ENDPOINT=http://127.0.0.1:PORT``. Every file is committed as a regular (base64) blob;
there is no LFS / Xet storage. ``fail_next_commit`` injects a rejected push (401, 413) or a
dropped connection.

>>> with LocalHubServer(token="hf_test") as hub:  # doctest: +SKIP
...     os.environ["HF_ENDPOINT"] = hub.endpoint
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit


@dataclass
class _Repo:
    repo_type: str
    private: bool
    files: dict[str, bytes] = field(default_factory=dict)
    sha: str = "0" * 40
    commits: int = 0


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # keep test output quiet
        pass

    # ---- helpers -------------------------------------------------------------------------
    def _send_json(self, status: int, payload, headers: dict | None = None):
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, message: str, code: str | None = None):
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._send_json(status, {"error": message}, headers)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _authorized(self) -> bool:
        token = self.server.token
        return token is None or self.headers.get("Authorization") == f"Bearer {token}"

    def _repo(self, repo_type: str, repo_id: str) -> _Repo | None:
        repo = self.server.repos.get((repo_type, repo_id))
        if repo is not None and repo.private and not self._authorized():
            return None
        return repo

    # ---- routing -------------------------------------------------------------------------
    def do_POST(self):
        path = unquote(urlsplit(self.path).path)
        self.server.requests.append(("POST", path))
        if path == "/api/repos/create":
            return self._create_repo()
        if path == "/api/validate-yaml":
            return self._validate_yaml()
        parts = path.strip("/").split("/")
        # /api/{type}s/{ns}/{name}/{preupload|commit}/{revision}
        if len(parts) >= 6 and parts[0] == "api" and parts[4] in ("preupload", "commit"):
            repo_type, repo_id = parts[1][:-1], f"{parts[2]}/{parts[3]}"
            if not self._authorized():
                return self._error(401, "Invalid credentials in Authorization header")
            repo = self.server.repos.get((repo_type, repo_id))
            if repo is None:
                return self._error(404, f"Repository {repo_id} not found", "RepoNotFound")
            return self._preupload(repo) if parts[4] == "preupload" else self._commit(repo, repo_id, repo_type)
        return self._error(404, f"no route for POST {path}")

    def do_GET(self):
        self._get_or_head()

    def do_HEAD(self):
        self._get_or_head()

    def _get_or_head(self):
        path = unquote(urlsplit(self.path).path)
        self.server.requests.append((self.command, path))
        parts = path.strip("/").split("/")
        if parts[0] == "api" and len(parts) >= 4 and parts[1] in ("models", "datasets", "spaces"):
            # /api/{type}s/{ns}/{name}[/revision/{rev}]
            repo_type, repo_id = parts[1][:-1], f"{parts[2]}/{parts[3]}"
            repo = self._repo(repo_type, repo_id)
            if repo is None:
                return self._error(404, f"Repository {repo_id} not found", "RepoNotFound")
            if len(parts) >= 6 and parts[4] == "tree":  # /api/{type}s/{ns}/{name}/tree/{rev}[/{path}]
                prefix = "/".join(parts[6:])
                return self._send_json(200, self._tree(repo, prefix))
            return self._send_json(200, self._info(repo_id, repo))
        # /{ns}/{name}/resolve/{rev}/{path...}  (models; datasets are prefixed with datasets/)
        repo_type = "model"
        if parts[0] in ("datasets", "spaces"):
            repo_type, parts = parts[0][:-1], parts[1:]
        if len(parts) >= 5 and parts[2] == "resolve":
            repo_id, filename = f"{parts[0]}/{parts[1]}", "/".join(parts[4:])
            repo = self._repo(repo_type, repo_id)
            if repo is None:
                return self._error(404, f"Repository {repo_id} not found", "RepoNotFound")
            if filename not in repo.files:
                return self._error(404, f"Entry {filename} not found", "EntryNotFound")
            data = repo.files[filename]
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
            self.send_header("X-Repo-Commit", repo.sha)
            self.end_headers()
            if self.command == "GET":
                self.wfile.write(data)
            return None
        return self._error(404, f"no route for {self.command} {path}")

    # ---- endpoints -----------------------------------------------------------------------
    def _create_repo(self):
        if not self._authorized():
            return self._error(401, "Invalid credentials in Authorization header")
        payload = json.loads(self._body() or b"{}")
        name, org = payload.get("name"), payload.get("organization")
        repo_type = payload.get("type") or "model"
        repo_id = f"{org}/{name}" if org else f"user/{name}"
        key = (repo_type, repo_id)
        url = f"{self.server.endpoint}/{repo_id}" if repo_type == "model" else f"{self.server.endpoint}/{repo_type}s/{repo_id}"
        if key in self.server.repos:
            return self._send_json(409, {"error": "You already created this model repo", "url": url})
        # huggingface_hub >= 1.0 sends "visibility"; older clients send "private".
        private = bool(payload.get("private")) or payload.get("visibility") in ("private", "protected")
        self.server.repos[key] = _Repo(repo_type=repo_type, private=private)
        return self._send_json(200, {"url": url, "name": repo_id})

    def _validate_yaml(self):
        # The README front matter must be a YAML mapping (the real Hub checks far more).
        import yaml

        content = json.loads(self._body() or b"{}").get("content", "")
        if content.startswith("---"):  # the whole README: keep only its front matter
            content = content.split("---", 2)[1] if content.count("---") >= 2 else ""
        try:
            meta = yaml.safe_load(content)
        except yaml.YAMLError as e:
            return self._send_json(400, {"errors": [{"message": f"invalid YAML: {e}"}], "warnings": []})
        if meta is not None and not isinstance(meta, dict):
            return self._send_json(400, {"errors": [{"message": "metadata must be a YAML mapping"}], "warnings": []})
        return self._send_json(200, {"errors": [], "warnings": []})

    def _preupload(self, repo: _Repo):
        payload = json.loads(self._body() or b"{}")
        files = [
            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
            for f in payload.get("files", [])
        ]
        return self._send_json(200, {"files": files, "commitOid": repo.sha})

    def _commit(self, repo: _Repo, repo_id: str, repo_type: str):
        failure = self.server.take_failure()
        if failure == "drop":
            self._body()
            self.close_connection = True
            self.connection.shutdown(2)  # drop without any response
            return None
        if failure == 401:
            self._body()
            return self._error(401, "Invalid credentials in Authorization header")
        if failure == 413:
            self._body()
            return self._error(413, "Payload Too Large")
        added: dict[str, bytes] = {}
        deleted: list[str] = []
        summary = ""
        for line in self._body().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item.get("key"), item.get("value", {})
            if key == "header":
                summary = value.get("summary", "")
            elif key == "file":
                content = value.get("content", "")
                added[value["path"]] = base64.b64decode(content) if value.get("encoding") == "base64" else content.encode()
            elif key in ("deletedFile", "deletedFolder"):
                deleted.append(value["path"])
            elif key == "lfsFile":
                return self._error(400, "this test server stores regular files only (no LFS)")
        for p in deleted:
            for f in [f for f in repo.files if f == p or f.startswith(p.rstrip("/") + "/")]:
                del repo.files[f]
        repo.files.update(added)
        repo.commits += 1
        digest = hashlib.sha1(repo.sha.encode() + summary.encode())
        for p in sorted(repo.files):
            digest.update(p.encode() + hashlib.sha1(repo.files[p]).digest())
        repo.sha = digest.hexdigest()
        prefix = self.server.endpoint if repo_type == "model" else f"{self.server.endpoint}/{repo_type}s"
        return self._send_json(200, {"commitUrl": f"{prefix}/{repo_id}/commit/{repo.sha}", "commitOid": repo.sha, "success": True})

    @staticmethod
    def _tree(repo: _Repo, prefix: str) -> list[dict]:
        # Recursive listing (the only form snapshot_download asks for), files only.
        return [
            {"type": "file", "path": p, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
            for p, b in sorted(repo.files.items())
            if not prefix or p.startswith(prefix.rstrip("/") + "/")
        ]

    def _info(self, repo_id: str, repo: _Repo) -> dict:
        return {
            "id": repo_id,
            "modelId": repo_id,
            "sha": repo.sha,
            "private": repo.private,
            "siblings": [{"rfilename": p, "size": len(b)} for p, b in sorted(repo.files.items())],
            "tags": [],
            "downloads": 0,
            "likes": 0,
        }


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr, token):
        super().__init__(addr, _Handler)
        self.token = token
        self.repos: dict[tuple[str, str], _Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self._failures: list = []
        self._lock = threading.Lock()
        self.endpoint = f"http://{addr[0]}:{self.server_address[1]}"

    def take_failure(self):
        with self._lock:
            return self._failures.pop(0) if self._failures else None


class LocalHubServer:
    """Run the test Hub on ``127.0.0.1`` in a background thread (a context manager).

    Args:
        token: the bearer token write requests (and private reads) must carry; ``None`` accepts any.
        port: 0 picks a free port.
    """

    def __init__(self, token: str | None = "hf_local_test_token", port: int = 0):
        self._server = _Server(("127.0.0.1", port), token)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return self._server.endpoint

    @property
    def requests(self) -> list[tuple[str, str]]:
        return self._server.requests

    def files(self, repo_id: str, repo_type: str = "model") -> dict[str, bytes]:
        """The files currently committed to a repository (empty if it does not exist)."""
        repo = self._server.repos.get((repo_type, repo_id))
        return dict(repo.files) if repo else {}

    def fail_next_commit(self, failure: int | str, times: int = 1) -> None:
        """Make the next ``times`` commits answer 401 or 413, or ``"drop"`` the connection.

        (``huggingface_hub`` retries some failures, so a persistent failure needs ``times`` > 1.)
        """
        if failure not in (401, 413, "drop"):
            raise ValueError(f"failure must be 401, 413 or 'drop'; got {failure!r}")
        with self._server._lock:
            self._server._failures.extend([failure] * times)

    def clear_failures(self) -> None:
        with self._server._lock:
            self._server._failures.clear()

    def start(self) -> LocalHubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> LocalHubServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
