"""knowledge's world: the whole platform behind its gateway (real sign-up, workload identity for
knowledge's calls to embeddings, in a request and from its event handler), and a local provider
speaking OpenAI's wire protocol for ai. One per module."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from coder.tests.gateway.conftest import fresh_database, gateway_env, gateway_platform, oidc_provider
from coder.tests.support.oidc_provider import OidcProvider
from coder.tests.support.platform import Platform
from coder.tests.support.providers import FakeProvider

__all__ = ["fresh_database", "oidc_provider"]

KNOWLEDGE_SECRET = "knowledge-workload-secret-of-the-knowledge-tests"
AI_SECRET = "ai-workload-secret-of-the-knowledge-tests"


@dataclass
class World:
    platform: Platform
    provider: FakeProvider

    @property
    def client(self) -> httpx.AsyncClient:
        return self.platform.client


@pytest.fixture(scope="module")
async def world(
    fresh_database: Callable[[], Awaitable[str]], oidc_provider: OidcProvider, redis_server: Any
) -> AsyncIterator[World]:
    provider = await FakeProvider().start()
    env = gateway_env(
        oidc_provider,
        KNOWLEDGE_WORKLOAD_SECRET=KNOWLEDGE_SECRET,
        AI_WORKLOAD_SECRET=AI_SECRET,
        AI_HEALTH_INTERVAL_SECONDS="3600",
        KNOWLEDGE_MAX_UNPACKED_BYTES=str(20 * 1024 * 1024),
    )
    url = await fresh_database()
    async with gateway_platform(url, env, "real", redis_url=redis_server.url) as platform:
        yield World(platform, provider)
    await provider.stop()
