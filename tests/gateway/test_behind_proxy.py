"""Behind an ingress, as deployed: `coder-platform run` as a real uvicorn process, reached from several
loopback addresses (the whole of 127.0.0.0/8 is this host) standing for a trusted proxy and for a client
that names itself in X-Forwarded-For."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from coder.shared.devservers import RedisServer
from coder.tests.gateway.factories import PASSWORD, bearer
from coder.tests.support.logscan import LogCapture
from coder.tests.support.process import platform_process

PROXY = "127.0.0.9"  # inside CODER_TRUSTED_PROXIES below, written with host bits (a network all the same)
STRANGER = "127.0.0.20"  # outside it


@pytest.fixture(scope="module")
async def served(
    fresh_database: Callable[[], Awaitable[str]],
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
    log_capture: LogCapture,
) -> AsyncIterator[str]:
    env = {
        **os.environ,
        "DATABASE_URL": await fresh_database(),
        "REDIS_URL": redis_server.url,
        "CODER_TRUSTED_PROXIES": "127.0.0.10/29",
        "GATEWAY_OPEN_SIGNUP": "true",
        "GATEWAY_LOGIN_MAX_FAILURES_PER_IP": "2",
    }
    with platform_process(env, tmp_path_factory.mktemp("proxy") / "process.log", log_capture) as base:
        yield base


def client_from(peer: str, base: str) -> httpx.Client:
    return httpx.Client(base_url=base, transport=httpx.HTTPTransport(local_address=peer), timeout=30)


def fail_login(client: httpx.Client, forwarded_for: str) -> int:
    body = {"email": f"nobody-{uuid.uuid4().hex[:8]}@example.com", "password": "wrong password!"}
    return client.post("/auth/login", json=body, headers={"X-Forwarded-For": forwarded_for}).status_code


def test_the_login_limit_counts_the_client_behind_a_trusted_proxy(served: str) -> None:
    with client_from(PROXY, served) as proxy:
        assert [fail_login(proxy, "198.51.100.1") for _ in range(3)] == [401, 401, 429]
        # Another client of the same proxy is counted on its own.
        assert fail_login(proxy, "198.51.100.2") == 401


def test_a_forwarded_for_from_an_untrusted_peer_is_ignored(served: str) -> None:
    with client_from(STRANGER, served) as stranger:
        # A fresh address in each header does not reset the count: the peer is what counts.
        assert [fail_login(stranger, f"198.51.100.{n}") for n in (11, 12, 13)] == [401, 401, 429]


def test_audit_entries_name_the_client_behind_a_trusted_proxy_only(served: str) -> None:
    seen = {}
    for peer in (PROXY, STRANGER):
        with client_from(peer, served) as client:
            body = {"email": f"fwd-{uuid.uuid4().hex[:8]}@example.com", "password": PASSWORD, "name": "F"}
            created = client.post("/auth/signup", json=body, headers={"X-Forwarded-For": "203.0.113.7"})
            assert created.status_code == 201, created.text
            pair = created.json()
            audit = client.get(f"/api/orgs/{pair['org_id']}/audit", headers=bearer(pair["access_token"]))
            assert audit.status_code == 200, audit.text
            seen[peer] = {entry["ip"] for entry in audit.json()["items"]}
    assert seen == {PROXY: {"203.0.113.7"}, STRANGER: {STRANGER}}
