"""Local HTTP servers the workflow tests point targets at, on loopback, in threads (so they serve a
separate `coder-platform` process as well as the test's own):

- `Recorder`: a target with side effects, counting each request: `/v1/echo` answers what it got,
  `/v1/flaky/<key>/<n>` fails 503 n times per key then answers, `/v1/refuse` answers 403 and
  `/v1/hold/<key>` holds its first request until `release(key)`;
- the same server speaks execution's job API (tests TASKS.md shape): `POST /v1/jobs` queues a job that
  is `running` at its first poll and `finished` at the next, with the exit code of a command ending in
  `exit N` (else 0).
"""

from __future__ import annotations

import contextlib
import json
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Recorder:
    requests: list[Seen] = field(default_factory=list)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    _failures: Counter[str] = field(default_factory=Counter)
    _holds: dict[str, threading.Event] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> Recorder:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                status, answer = recorder.handle(self.command, self.path, dict(self.headers), body)
                with contextlib.suppress(OSError):  # the client went away (a killed process)
                    self._answer(status, answer)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle  # noqa: N815

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        for event in self._holds.values():
            event.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # --- behaviour ---

    def handle(self, method: str, path: str, headers: dict[str, str], body: Any) -> tuple[int, Any]:
        with self._lock:
            self.requests.append(Seen(method, path, {k.lower(): v for k, v in headers.items()}, body))
            count = sum(1 for r in self.requests if r.path == path)
        parts = path.strip("/").split("/")
        if parts[:2] == ["v1", "echo"]:
            return 200, {"echo": body, "n": count}
        if parts[:2] == ["v1", "refuse"]:
            return 403, {"detail": "not yours"}
        if parts[:2] == ["v1", "flaky"]:
            key, times = parts[2], int(parts[3])
            with self._lock:
                self._failures[key] += 1
                failing = self._failures[key] <= times
            return (503, {"detail": "try later"}) if failing else (200, {"ok": True})
        if parts[:2] == ["v1", "hold"]:
            with self._lock:
                event = self._holds.setdefault(parts[2], threading.Event())
            if count == 1:
                event.wait(60)
            return 200, {"held": parts[2], "n": count}
        if parts[:2] == ["v1", "jobs"]:
            return self._jobs(method, parts, body)
        return 404, {"detail": f"no {path}"}

    def _jobs(self, method: str, parts: list[str], body: Any) -> tuple[int, Any]:
        if method == "POST" and len(parts) == 2:
            job_id = str(uuid.uuid4())
            command = " ".join(body["command"])
            code = int(command.rsplit("exit ", 1)[1]) if "exit " in command else 0
            with self._lock:
                self.jobs[job_id] = {"id": job_id, "status": "queued", "polls": 0, "code": code}
            return 201, {"id": job_id, "status": "queued"}
        with self._lock:
            job = self.jobs.get(parts[2])
            if job is None:
                return 404, {"detail": "no such job"}
            job["polls"] += 1
            if job["polls"] < 2:
                return 200, {"id": job["id"], "status": "running", "exit_code": None}
            return 200, {
                "id": job["id"],
                "status": "finished",
                "exit_code": job["code"],
                "outcome": "exited",
                "reason": f"exited with {job['code']}",
                "sandbox": "test",
            }

    def hold_seen(self, key: str) -> bool:
        return any(r.path == f"/v1/hold/{key}" for r in self.requests)

    def release(self, key: str) -> None:
        with self._lock:
            self._holds.setdefault(key, threading.Event()).set()

    def count(self, path: str) -> int:
        return sum(1 for r in self.requests if r.path == path)

    def seen(self, path: str) -> list[Seen]:
        return [r for r in self.requests if r.path == path]
