"""Budgets: held in usage before the call (with ai's workload identity), settled with the real cost
after it through `ai.request.completed`, streams cut or stopped included; a refusal names the budget."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from coder.services.ai.providers import Api, prompt_estimate
from coder.tests.services.ai.conftest import API, Org, World, chat, created, new_org
from coder.tests.support.platform import wait_until
from coder.tests.support.providers import Step

MESSAGES: list[Any] = [{"role": "user", "content": "hello there"}]
# gpt's prices: $2 per million input tokens, $8 per million output tokens.
IN, OUT = Decimal(2) / 1_000_000, Decimal(8) / 1_000_000


async def budget(world: World, org: Org, limit: float, name: str = "AI cap") -> str:
    body = {"name": name, "scope": "org", "metric": "cost_usd", "limit": limit, "period": "month"}
    return str((await created(world.client, "/api/usage/v1/budgets", body, org.headers))["id"])


async def spent(world: World, org: Org, budget_id: str) -> dict[str, Any]:
    response = await world.client.get(f"/api/usage/v1/budgets/{budget_id}", headers=org.headers)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def settled(world: World, org: Org, budget_id: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        read = await spent(world, org, budget_id)
        return read if read["spent"] > 0 and read["reserved"] == 0 else None

    result: dict[str, Any] = await wait_until(check, what="usage to settle the call")
    return result


async def test_a_refusal_names_the_budget_and_calls_no_provider(world: World) -> None:
    org = await new_org(world)
    await budget(world, org, 0.001, "Team cap")
    refused = await chat(world, org)
    assert refused.status_code == 402, refused.text
    problem = refused.json()
    assert problem["type"].endswith("/budget-exceeded") and problem["budget"]["name"] == "Team cap"
    assert world.provider.requests == []


async def test_a_call_is_settled_with_its_real_cost(world: World) -> None:
    org = await new_org(world)
    budget_id = await budget(world, org, 10)
    answer = await chat(world, org)
    assert answer.status_code == 200, answer.text
    cost = answer.json()["usage"]["cost"]
    assert cost == float(2 * IN + 10 * OUT)  # the provider counted 2 prompt and 10 completion tokens
    assert (await settled(world, org, budget_id))["spent"] == pytest.approx(cost)


async def test_near_its_cap_a_group_may_route_to_a_cheaper_deployment(world: World) -> None:
    org = await new_org(world, {"chat": {"deployments": ["gpt", "gpt-mini"], "cheaper_on_budget": True}})
    # gpt's whole output allowance (4096 tokens at $8/M) does not fit; gpt-mini's ($0.4/M) does.
    await budget(world, org, 0.01)
    answer = await chat(world, org)
    assert answer.status_code == 200, answer.text
    assert [r.body["model"] for r in world.provider.requests] == ["gpt-fake-mini"]


async def test_a_budget_running_out_mid_stream_stops_the_stream_and_refuses_the_next_call(
    world: World,
) -> None:
    org = await new_org(world, {"chat": {"deployments": ["gpt"]}})
    patched = await world.client.patch(
        f"{API}/deployments/{org.deployments['gpt']}", json={"max_output_tokens": 4}, headers=org.headers
    )
    assert patched.status_code == 200, patched.text
    prompt = prompt_estimate(Api.CHAT, {"messages": MESSAGES})
    one_call = prompt * IN + 4 * OUT
    budget_id = await budget(world, org, float(one_call * Decimal("1.5")))
    client = openai.AsyncOpenAI(base_url=f"{world.url}/api/ai/v1", api_key=org.pat, max_retries=0)
    world.provider.script(Step(token_delay=0.05))  # still writing when the platform stops reading
    stream = await client.chat.completions.create(
        model="chat", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the fake"  # 4 tokens of 10: what the hold paid for
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == 4
    assert usage.to_dict()["cost"] == float(one_call)
    # The provider's stream was closed, not read to its end.
    await wait_until(lambda: world.provider.abandoned == 1, what="the provider's stream to be closed")
    assert (await settled(world, org, budget_id))["spent"] == pytest.approx(float(one_call))

    refused = await chat(world, org)
    assert refused.status_code == 402 and refused.json()["budget"]["id"] == budget_id


async def test_a_stream_the_provider_cuts_is_settled_with_what_arrived(world: World) -> None:
    org = await new_org(world)
    budget_id = await budget(world, org, 10)
    world.provider.script(Step(cut_after=3))
    body = {"model": "chat", "messages": MESSAGES, "stream": True}
    async with httpx.AsyncClient(base_url=world.url) as client:
        response = await client.post(f"{API}/chat/completions", json=body, headers=org.key)
    events = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1]["error"]["code"] == "stream_cut"
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1]) == "Hello from the"
    prompt = prompt_estimate(Api.CHAT, {"messages": MESSAGES})
    assert (await settled(world, org, budget_id))["spent"] == pytest.approx(float(prompt * IN + 3 * OUT))


async def test_calls_ending_together_are_each_settled_once(world: World) -> None:
    # Streams that end together share an outbox transaction in ai and a settling one in usage.
    org = await new_org(world)
    budget_id = await budget(world, org, 10)
    body = {"model": "chat", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}
    async with httpx.AsyncClient(base_url=world.url, timeout=30) as client:

        async def cost() -> Decimal:
            response = await client.post(f"{API}/chat/completions", json=body, headers=org.key)
            assert response.status_code == 200, response.text
            last = [
                json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: {")
            ][-1]
            return Decimal(str(last["usage"]["cost"]))

        costs = await asyncio.gather(*(cost() for _ in range(12)))

    async def all_settled() -> dict[str, Any] | None:
        read = await spent(world, org, budget_id)
        return read if read["reserved"] == 0 and read["spent"] >= float(sum(costs)) * 0.999 else None

    read = await wait_until(all_settled, what="usage to settle every call")
    assert read["spent"] == pytest.approx(float(sum(costs)))
