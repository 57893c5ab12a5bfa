"""The router: retries within a group, then its fallback groups in order; a failed deployment cools
down for the provider's Retry-After (or the configured time), shared through Redis and readable as
its health; a client that disconnects cancels the provider's call."""

from __future__ import annotations

import httpx

from coder.tests.services.ai.conftest import API, World, chat, health_of, new_org
from coder.tests.support.platform import wait_until
from coder.tests.support.providers import DEFAULT_REPLY, Step


async def test_an_outage_falls_back_to_the_next_group_and_cools_down(world: World) -> None:
    org = await new_org(
        world,
        {"chat": {"deployments": ["gpt"], "fallbacks": ["backup"]}, "backup": {"deployments": ["claude"]}},
    )
    world.provider.script(Step(status=429, retry_after=120))
    answer = await chat(world, org)
    assert answer.status_code == 200, answer.text
    # The fallback is an Anthropic deployment: its answer comes back in OpenAI's shape.
    assert answer.json()["choices"][0]["message"]["content"] == DEFAULT_REPLY
    assert [r.path for r in world.provider.requests] == ["/v1/chat/completions", "/v1/messages"]
    health = await health_of(world, org, "gpt")
    assert health["state"] == "cooldown" and health["detail"] == "answered 429"
    assert 60 < health["cooldown_seconds"] <= 120  # the provider's Retry-After, not the default 30 s

    # While it cools down, the deployment is not even tried.
    world.provider.requests.clear()
    assert (await chat(world, org)).status_code == 200
    assert [r.path for r in world.provider.requests] == ["/v1/messages"]


async def test_a_server_error_retries_within_the_group(world: World) -> None:
    org = await new_org(world, {"chat": {"deployments": ["gpt", "gpt-mini"]}})
    world.provider.script(Step(status=503))
    answer = await chat(world, org)
    assert answer.status_code == 200, answer.text
    models = [r.body["model"] for r in world.provider.seen("/v1/chat/completions")]
    assert models == ["gpt-fake", "gpt-fake-mini"]
    cooling = await health_of(world, org, "gpt")
    assert cooling["state"] == "cooldown" and 0 < cooling["cooldown_seconds"] <= 30
    assert (await health_of(world, org, "gpt-mini"))["state"] == "healthy"


async def test_when_every_deployment_fails_the_answer_names_them_then_says_when_to_return(
    world: World,
) -> None:
    org = await new_org(world, {"chat": {"deployments": ["gpt", "gpt-mini"]}})
    world.provider.script(Step(status=500), Step(status=429, retry_after=7))
    failed = await chat(world, org)
    assert failed.status_code == 503, failed.text
    assert failed.headers["content-type"] == "application/problem+json"
    assert "gpt: 500" in failed.json()["detail"] and "gpt-mini: 429" in failed.json()["detail"]
    cooling = await chat(world, org)
    assert cooling.status_code == 503 and cooling.json()["type"].endswith("/no-deployment")
    assert 1 <= int(cooling.headers["retry-after"]) <= 7
    assert len(world.provider.requests) == 2  # the second call reached no provider


async def test_a_refusal_by_the_provider_is_not_retried(world: World) -> None:
    org = await new_org(world, {"chat": {"deployments": ["gpt", "gpt-mini"]}})
    world.provider.script(Step(status=400))
    refused = await chat(world, org)
    assert refused.status_code == 400 and refused.json()["provider_status"] == 400
    assert len(world.provider.requests) == 1
    assert (await health_of(world, org, "gpt"))["state"] != "cooldown"


async def test_background_checks_write_health_every_replica_reads(world: World) -> None:
    from coder.services.ai.calls import Platform
    from coder.services.ai.health import check_once

    org = await new_org(world, {"chat": {"deployments": ["gpt"]}})
    platform: Platform = world.platform.runtime.local_apps["ai"].state.ai  # type: ignore[attr-defined]
    runtime = world.platform.runtime
    assert runtime.cache is not None
    world.provider.down = True
    async with httpx.AsyncClient() as client:
        await check_once(runtime, client, platform.settings)
        assert (await health_of(world, org, "gpt"))["state"] == "unhealthy"
        # Another replica, this interval, leaves the deployment alone (the lock in Redis).
        world.provider.down = False
        for key in [k async for k in runtime.cache.scan_iter("ai:health-lock:*")]:
            await runtime.cache.delete(key)
        await check_once(runtime, client, platform.settings)
    health = await health_of(world, org, "gpt")
    assert health["state"] == "healthy" and health["checked_at"] is not None


async def test_a_client_that_disconnects_cancels_the_providers_call(world: World) -> None:
    org = await new_org(world)
    world.provider.script(Step(token_delay=0.2, text=" ".join(["tok"] * 200)))
    body = {"model": "chat", "messages": [{"role": "user", "content": "long"}], "stream": True}
    async with (
        httpx.AsyncClient(base_url=world.url) as client,
        client.stream("POST", f"{API}/chat/completions", json=body, headers=org.key) as response,
    ):
        assert response.status_code == 200
        lines = response.aiter_lines()
        while "tok" not in await anext(lines):
            pass
    await wait_until(lambda: world.provider.abandoned == 1, what="the provider's stream to be abandoned")


async def test_a_catalogue_change_routes_the_next_call_at_once(world: World) -> None:
    # Routing is cached per process; a committed write must be seen by the very next call.
    org = await new_org(world, {"chat": {"deployments": ["gpt"]}})
    assert (await chat(world, org)).status_code == 200
    patched = await world.client.patch(
        f"{API}/groups/{org.groups['chat']}",
        json={"deployments": [org.deployments["gpt-mini"]]},
        headers=org.headers,
    )
    assert patched.status_code == 200, patched.text
    world.provider.requests.clear()
    assert (await chat(world, org)).status_code == 200
    assert [r.body["model"] for r in world.provider.requests] == ["gpt-fake-mini"]
    renamed = await world.client.patch(
        f"{API}/deployments/{org.deployments['gpt-mini']}", json={"model": "gpt-fake"}, headers=org.headers
    )
    assert renamed.status_code == 200, renamed.text
    world.provider.requests.clear()
    assert (await chat(world, org)).status_code == 200
    assert [r.body["model"] for r in world.provider.requests] == ["gpt-fake"]
