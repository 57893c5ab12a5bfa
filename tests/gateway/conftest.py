"""Gateway fixtures: the whole platform with token verification through the gateway's own JWKS (no test
signer), a fresh database (so the first sign-up really is the first user), a local OIDC provider, and
real upstream servers on loopback for the proxy."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from coder.runner import registry
from coder.runner.process import build_process_app
from coder.shared.settings import PlatformSettings
from coder.shared.target import Target, generated_workload_secrets
from coder.tests.gateway.factories import Session, signup
from coder.tests.gateway.upstream import Upstream
from coder.tests.support.databases import create_database, drop_database
from coder.tests.support.oidc_provider import OidcProvider
from coder.tests.support.platform import Platform, target_settings, wait_until


@pytest.fixture(scope="session")
async def fresh_database(database_url: str) -> AsyncIterator[Callable[[], Awaitable[str]]]:
    """Makes databases of their own for gateway runs, migrated to head; drops them afterwards."""
    created: list[str] = []

    async def make() -> str:
        created.append(await create_database(database_url, "coder_gw"))
        return created[-1]

    yield make
    for url in created:
        await drop_database(url)


@pytest.fixture(scope="session")
def oidc_provider() -> Iterator[OidcProvider]:
    provider = OidcProvider().start()
    yield provider
    provider.stop()


@pytest.fixture(scope="session")
def upstream() -> Iterator[Upstream]:
    server = Upstream().start()
    yield server
    server.stop()


TRUSTED_PROXIES = "10.9.0.0/16"


def gateway_env(provider: OidcProvider, **extra: str) -> dict[str, str]:
    return {
        "GATEWAY_OIDC_ISSUER": provider.issuer,
        "GATEWAY_OIDC_CLIENT_ID": provider.client_id,
        "GATEWAY_OIDC_CLIENT_SECRET": provider.client_secret,
        "GATEWAY_OIDC_REDIRECT_URI": "http://testserver/auth/oidc/callback",
        "GATEWAY_OPEN_SIGNUP": "true",
        "GATEWAY_BREAKER_FAILURE_THRESHOLD": "3",
        "GATEWAY_BREAKER_RESET_SECONDS": "0.5",
        "GATEWAY_RETRY_BACKOFF_SECONDS": "0.01",
        "GATEWAY_TARGET_TIMEOUTS": json.dumps({"slowpoke": 0.3}),
        "GATEWAY_MAX_BODY_BYTES": str(256 * 1024),
        # The ingress in front of the gateway, whose X-Forwarded-For is believed.
        "CODER_TRUSTED_PROXIES": f"{TRUSTED_PROXIES}, 192.0.2.1",
        # Just over the verifiers' JWKS refresh interval (10s), so a rotation test need not wait long.
        "GATEWAY_SIGNING_KEY_ACTIVATION_SECONDS": "10.5",
        **extra,
    }


@asynccontextmanager
async def gateway_platform(
    database_url: str,
    env: dict[str, str],
    backend: str = "inprocess",
    extra_targets: Mapping[str, Target] | None = None,
    **overrides: Any,
) -> AsyncIterator[Platform]:
    """The platform with `env` applied to the targets' settings, its lifespan entered; `extra_targets`
    are served beside the registered ones (targets a test defines)."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        settings = PlatformSettings.model_validate(
            {"database_url": database_url, "environment": "test", "outbox_poll_seconds": 0.2, **overrides}
        )
        targets = {**registry.resolve("all"), **(extra_targets or {})}
        secrets = generated_workload_secrets(registry.descriptors(), settings.workload_secrets)
        settings.workload_secrets.update(secrets)
        app = build_process_app(settings, targets, target_settings(targets))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            platform = Platform(app=app, client=client, backend=backend, runtime=app.state.runtime)
            if platform.runtime.bus is not None:
                await wait_until(platform.runtime.bus.is_ready, what="the event bus to connect")
            yield platform


@dataclass
class Gateway:
    """The running platform as the gateway tests see it, with the first user who founded it."""

    platform: Platform
    founder: Session
    founder_signup: dict[str, Any]
    upstream: Upstream
    oidc: OidcProvider

    @property
    def client(self) -> httpx.AsyncClient:
        return self.platform.client

    def client_from(self, ip: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.platform.app, client=(ip, 40000))
        return httpx.AsyncClient(transport=transport, base_url="http://testserver")


@pytest.fixture(scope="session", params=["inprocess", "real"])
async def gw(
    request: pytest.FixtureRequest,
    fresh_database: Callable[[], Awaitable[str]],
    oidc_provider: OidcProvider,
    upstream: Upstream,
) -> AsyncIterator[Gateway]:
    overrides: dict[str, Any] = {}
    if request.param == "real":
        overrides["redis_url"] = request.getfixturevalue("redis_server").url
        overrides["amqp_url"] = request.getfixturevalue("rabbit_server").url
    # Each backend gets a fresh database, so the first sign-up of each run founds the first org.
    url = await fresh_database()
    async with gateway_platform(url, gateway_env(oidc_provider), request.param, **overrides) as platform:
        upstream.register(platform.runtime)
        founder, body = await signup(platform.client, organization="Founders Inc")
        yield Gateway(platform, founder, body, upstream, oidc_provider)
