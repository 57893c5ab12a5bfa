"""ai's world: the whole platform behind its gateway (real sign-up, personal tokens, workload identity),
served over loopback HTTP so SDKs stream through it, and a local provider speaking OpenAI's and
Anthropic's wire protocols. One per module; each test builds what it routes on its own org."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

# The gateway's fixtures, shared here: a fresh database per platform and the local OIDC provider.
from coder.tests.gateway.conftest import fresh_database, gateway_env, gateway_platform, oidc_provider
from coder.tests.gateway.factories import Session, bearer, owner
from coder.tests.support.oidc_provider import OidcProvider
from coder.tests.support.platform import Platform
from coder.tests.support.providers import FakeProvider, serve, stop

__all__ = ["fresh_database", "oidc_provider"]

WORKLOAD_SECRET = "ai-workload-secret-" + uuid.uuid4().hex
API = "/api/ai/v1"


@dataclass
class World:
    platform: Platform
    provider: FakeProvider
    url: str  # the gateway over loopback HTTP

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
        AI_WORKLOAD_SECRET=WORKLOAD_SECRET,
        AI_HEALTH_INTERVAL_SECONDS="3600",
        AI_COOLDOWN_SECONDS="30",
    )
    url = await fresh_database()
    # Real Redis: health and cooldowns are what replicas share.
    async with gateway_platform(url, env, "real", redis_url=redis_server.url) as platform:
        server, task, port = await serve(platform.app)
        try:
            yield World(platform, provider, f"http://127.0.0.1:{port}")
        finally:
            await stop(server, task)
    await provider.stop()


@dataclass
class Org:
    """An organization with the provider wired in: its owner, a personal token for ai, and ids."""

    owner: Session
    pat: str
    providers: dict[str, str]
    deployments: dict[str, str]
    groups: dict[str, str]

    @property
    def headers(self) -> dict[str, str]:
        return self.owner.headers

    @property
    def key(self) -> dict[str, str]:
        return bearer(self.pat)


async def created(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], headers: dict[str, str]
) -> dict[str, Any]:
    response = await client.post(path, json=body, headers=headers)
    assert response.status_code == 201, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def put_secret(world: World, who: Session, path: str, value: str) -> None:
    response = await world.client.put(
        f"/api/secrets/v1/secrets/{path}", json={"data": {"api_key": value}}, headers=who.headers
    )
    assert response.status_code == 200, response.text


DEPLOYMENTS: dict[str, dict[str, Any]] = {
    # name -> (provider, body)
    "gpt": {
        "provider": "openai",
        "model": "gpt-fake",
        "capabilities": ["chat", "tools", "vision"],
        "input_price": 2,
        "output_price": 8,
    },
    "gpt-mini": {
        "provider": "openai",
        "model": "gpt-fake-mini",
        "capabilities": ["chat", "tools"],
        "input_price": 0.1,
        "output_price": 0.4,
    },
    "claude": {
        "provider": "anthropic",
        "model": "claude-fake",
        "capabilities": ["chat", "tools", "vision"],
        "input_price": 3,
        "output_price": 15,
    },
    "local": {"provider": "ollama", "model": "gpt-fake", "capabilities": ["chat"]},
    "codestral": {
        "provider": "openai",
        "model": "codestral-fake",
        "capabilities": ["fim"],
        "input_price": 0.3,
        "output_price": 0.9,
    },
}


async def new_org(world: World, groups: dict[str, dict[str, Any]] | None = None) -> Org:
    """A fresh org with providers openai, anthropic and ollama (openai_compatible) on the local server,
    the deployments above, and `groups` (alias -> body with deployment names); by default `chat`
    (gpt then claude), `autocomplete` (codestral) and `claude` (claude)."""
    boss = await owner(world.client)
    h = boss.headers
    await put_secret(world, boss, "providers/openai", world.provider.openai_key)
    await put_secret(world, boss, "providers/anthropic", world.provider.anthropic_key)
    base = world.provider.base_url
    providers = {}
    for name, kind, url, path in (
        ("openai", "openai", base + "/v1", "providers/openai"),
        ("anthropic", "anthropic", base, "providers/anthropic"),
        ("ollama", "openai_compatible", base + "/v1", "providers/openai"),
    ):
        provider = {"name": name, "kind": kind, "base_url": url, "key_path": path}
        providers[name] = (await created(world.client, f"{API}/providers", provider, h))["id"]
    deployments = {}
    for name, spec in DEPLOYMENTS.items():
        body = {k: v for k, v in spec.items() if k != "provider"}
        body.update(name=name, provider_id=providers[spec["provider"]])
        deployments[name] = (await created(world.client, f"{API}/deployments", body, h))["id"]
    wanted = groups or {
        "chat": {"deployments": ["gpt", "claude"], "roles": ["chat", "edit"]},
        "autocomplete": {"deployments": ["codestral"], "roles": ["autocomplete"]},
        "claude": {"deployments": ["claude"]},
    }
    made: dict[str, str] = {}
    for alias, spec in wanted.items():
        group: dict[str, Any] = {**spec, "alias": alias}
        group["deployments"] = [deployments[d] for d in spec["deployments"]]
        made[alias] = (await created(world.client, f"{API}/groups", group, h))["id"]
    token = await world.client.post(
        "/auth/tokens", json={"name": "ide", "scopes": ["ai:use"], "expires_in_days": 1}, headers=h
    )
    assert token.status_code == 201, token.text
    return Org(boss, token.json()["token"], providers, deployments, made)


@pytest.fixture(scope="module")
async def shared(world: World) -> Org:
    """An org with the default groups, for the tests that change nothing of its catalogue."""
    return await new_org(world)


@pytest.fixture(autouse=True)
def _fresh_script(world: World) -> None:
    """Each test starts with the provider answering normally and an empty record."""
    world.provider.reset()


async def health_of(world: World, org: Org, deployment: str) -> dict[str, Any]:
    response = await world.client.get(
        f"{API}/deployments/{org.deployments[deployment]}/health", headers=org.headers
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def chat(world: World, org: Org, alias: str = "chat", **extra: Any) -> httpx.Response:
    body = {"model": alias, "messages": [{"role": "user", "content": "hello there"}], **extra}
    return await world.client.post(f"{API}/chat/completions", json=body, headers=org.key)
