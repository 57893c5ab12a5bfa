"""`coder-platform run` as deployed: a real process on a loopback port, spoken to over sockets."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator

import httpx
import pytest

from coder.shared.devservers import free_port
from coder.tests.support.logscan import LogCapture
from coder.tests.support.process import platform_process
from coder.tests.support.tokens import TestSigner


@pytest.fixture(scope="module")
def metrics_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def served(
    database_url: str,
    signer: TestSigner,
    tmp_path_factory: pytest.TempPathFactory,
    log_capture: LogCapture,
    metrics_port: int,
) -> Iterator[str]:
    """`coder-platform run --target all` on a free port, its metrics on `metrics_port`; its base URL."""
    log = tmp_path_factory.mktemp("cli") / "process.log"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "CODER_JWKS": signer.jwks(),
        "CODER_METRICS_PORT": str(metrics_port),
    }
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


def test_metrics_answer_on_their_own_port_only(served: str, metrics_port: int, signer: TestSigner) -> None:
    """The public port has no /metrics, nor any target's through the gateway; the metrics port has the
    process's, in OpenMetrics with the request's trace as exemplar when the scraper asks for it."""
    for path in ("/metrics", "/api/secrets/metrics", "/api/gateway/metrics"):
        public = httpx.get(f"{served}{path}", headers=signer.headers("org-cli"), timeout=10)
        assert public.status_code == 404, (path, public.text)
        assert public.headers["content-type"] == "application/problem+json"
    trace_id = os.urandom(16).hex()
    asked = httpx.get(
        f"{served}/api/secrets/v1/secrets/some/path",
        headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01", **signer.headers("org-cli")},
        timeout=10,
    )
    assert asked.status_code == 404, asked.text
    scrape = f"http://127.0.0.1:{metrics_port}/metrics"
    text = httpx.get(scrape, timeout=10)
    assert text.status_code == 200 and text.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert 'http_requests_total{method="GET",route="/api/secrets/v1/secrets/{path}"' in text.text
    assert trace_id not in text.text  # exemplars are OpenMetrics only
    open_metrics = httpx.get(
        scrape, headers={"accept": "application/openmetrics-text; version=1.0.0"}, timeout=10
    )
    assert open_metrics.headers["content-type"].startswith("application/openmetrics-text")
    route = 'route="/api/secrets/v1/secrets/{path}"'
    exemplars = [
        line for line in open_metrics.text.splitlines() if route in line and f'trace_id="{trace_id}"' in line
    ]
    assert any(line.startswith("http_request_duration_seconds_bucket{") for line in exemplars), (
        open_metrics.text
    )
    assert any(line.startswith("http_requests_total{") for line in exemplars)
