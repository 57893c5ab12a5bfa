"""`coder-platform up`: every target in its own process on its own port, talking over HTTP and a real
broker, as the old docker-compose setup did. Driven through the gateway like the IDE would."""

from __future__ import annotations

import base64
import json
import os
import random
import select
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from coder.runner import registry
from coder.runner.cli import METRICS_OFFSET
from coder.shared.devservers import RabbitServer, RedisServer
from coder.tests.support.tokens import TestSigner


def _free_offset() -> int:
    ports = [t.port + metrics for t in registry.descriptors().values() for metrics in (0, METRICS_OFFSET)]
    start = random.randrange(20000, 30000)  # runs side by side rarely pick the same range
    for offset in range(start, start + 10000, 137):
        try:
            for port in ports:
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port + offset))
        except OSError:
            continue
        return offset
    raise RuntimeError("no free port range")


@pytest.fixture
def microservices(
    database_url: str, redis_server: RedisServer, rabbit_server: RabbitServer, signer: TestSigner
) -> Iterator[str]:
    offset = _free_offset()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_server.url,
        "AMQP_URL": rabbit_server.url,
        "CODER_JWKS": signer.jwks(),
        "CODER_ENVIRONMENT": "test",
        "SECRETS_MASTER_KEYS": json.dumps({"k1": base64.b64encode(os.urandom(32)).decode()}),
        "SECRETS_ACTIVE_KEY_ID": "k1",
        "GATEWAY_KEY_ENCRYPTION_KEY": base64.b64encode(os.urandom(32)).decode(),
    }
    cli = str(Path(sys.executable).with_name("coder-platform"))
    process = subprocess.Popen(
        [cli, "up", "--port-offset", str(offset)], env=env, start_new_session=True, stdout=subprocess.PIPE
    )
    gateway = f"http://127.0.0.1:{3000 + offset}"
    try:
        # `up` prints one line on stdout once every target answers /readyz; nothing else goes there.
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 120)
        line = process.stdout.readline().decode() if ready else ""
        assert f"gateway on {gateway}" in line, f"coder-platform up never reported ready: {line!r}"
        for target in registry.descriptors().values():  # what `up` promises: every target is ready
            response = httpx.get(f"http://127.0.0.1:{target.port + offset}/readyz", timeout=5)
            assert response.status_code == 200, (target.name, response.text)
            # Its /metrics on its port + 6000, and not on its public port.
            metrics = httpx.get(
                f"http://127.0.0.1:{target.port + offset + METRICS_OFFSET}/metrics", timeout=5
            )
            assert metrics.status_code == 200 and "coder_outbox_events" in metrics.text, target.name
            assert httpx.get(f"http://127.0.0.1:{target.port + offset}/metrics", timeout=5).status_code == 404
        yield gateway
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    for target in registry.descriptors().values():  # every process it started is gone
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", target.port + offset)) != 0, target.name


def test_each_target_in_its_own_process(microservices: str, signer: TestSigner, org: str) -> None:
    headers = signer.headers(org)
    with httpx.Client(base_url=microservices, timeout=10) as client:
        written = client.put(
            "/api/secrets/v1/secrets/ci/token", json={"data": {"token": "t-1"}}, headers=headers
        )
        assert written.status_code == 200, written.text
        read = client.get("/api/secrets/v1/secrets/ci/token", headers=headers)
        assert read.json()["data"] == {"token": "t-1"}
        # The gateway reached secrets over HTTP: the secrets process answers on its own port too.
        secrets_port = int(microservices.rsplit(":", 1)[1]) - 3000 + 3003
        direct = httpx.get(f"http://127.0.0.1:{secrets_port}/v1/secrets/ci/token", headers=headers)
        assert direct.json()["data"] == {"token": "t-1"}
        assert client.get("/api/secrets/readyz").json()["checks"] == {
            "postgres": "ok",
            "redis": "ok",  # the revocation list
            "rabbitmq": "ok",
        }
        assert client.get("/api/unknown/anything").status_code == 404
