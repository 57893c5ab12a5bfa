"""`coder-platform run` as deployed: a real process on a loopback port, spoken to over sockets."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator

import httpx
import pytest

from coder.tests.support.logscan import LogCapture
from coder.tests.support.process import platform_process
from coder.tests.support.tokens import TestSigner


@pytest.fixture(scope="module")
def served(
    database_url: str, signer: TestSigner, tmp_path_factory: pytest.TempPathFactory, log_capture: LogCapture
) -> Iterator[str]:
    """`coder-platform run --target all` on a free port; its base URL."""
    log = tmp_path_factory.mktemp("cli") / "process.log"
    env = {**os.environ, "DATABASE_URL": database_url, "CODER_JWKS": signer.jwks()}
    with platform_process(env, log, log_capture) as base:
        yield base


def raw_exchange(base: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are (no client library would send these) and read the answer to its end."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def test_an_unparsable_content_length_is_a_problem(served: str) -> None:
    status, headers, body = raw_exchange(
        served,
        b"POST /auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"Content-Length: 99999999999999999999999\r\n\r\n{}",
    )
    assert status == 400
    assert headers["content-type"] == "application/problem+json"
    assert headers["x-content-type-options"] == "nosniff"
    assert "server" not in headers
    problem = json.loads(body)
    assert problem["status"] == 400 and problem["type"].endswith("/bad-request")


def test_no_server_banner_and_the_common_headers(served: str) -> None:
    for path in ("/healthz", "/api/secrets/v1/secrets/a", "/auth/providers"):
        response = httpx.get(served + path)
        assert "server" not in response.headers, path
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
