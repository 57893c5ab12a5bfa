"""The official openai SDK, unmodified, through the gateway: base_url `<gateway>/api/ai/v1`, api_key a
personal access token."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from coder.tests.services.ai.conftest import Org, World
from coder.tests.support.providers import DEFAULT_REPLY


@pytest.fixture(scope="module")
def client(world: World, shared: Org) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{world.url}/api/ai/v1", api_key=shared.pat, max_retries=0)


async def test_chat_completion(world: World, client: openai.AsyncOpenAI) -> None:
    answer = await client.chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "say hello"}]
    )
    assert float(answer.headers["x-coder-overhead-ms"]) >= 0
    completion = answer.parse()
    assert completion.choices[0].message.content == DEFAULT_REPLY
    assert completion.model == "chat"
    assert completion.usage is not None and completion.usage.completion_tokens == 10
    # cost: 2 prompt tokens at $2/M + 10 completion tokens at $8/M
    assert completion.usage.model_extra == {
        "cost": pytest.approx((2 * 2 + 10 * 8) / 1e6)
    } or completion.usage.to_dict()["cost"] == pytest.approx((2 * 2 + 10 * 8) / 1e6)
    sent = world.provider.seen("/v1/chat/completions")[-1]
    assert sent.body["model"] == "gpt-fake"
    assert sent.headers["authorization"] == f"Bearer {world.provider.openai_key}"


async def test_streaming_with_usage_and_cost(world: World, client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="chat",
        messages=[{"role": "user", "content": "say hello"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage = [], None
    async for chunk in stream:
        if chunk.choices:
            text.append(chunk.choices[0].delta.content or "")
        else:
            usage = chunk.usage
    assert "".join(text) == DEFAULT_REPLY
    assert usage is not None and usage.prompt_tokens == 2 and usage.completion_tokens == 10
    assert usage.to_dict()["cost"] == pytest.approx((2 * 2 + 10 * 8) / 1e6)


async def test_stream_without_include_usage_has_no_usage_chunk(
    world: World, client: openai.AsyncOpenAI
) -> None:
    stream = await client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "x"}], stream=True
    )
    chunks = [c async for c in stream]
    assert all(c.choices for c in chunks)
    # The provider was asked for usage all the same: the platform bills by it.
    assert world.provider.seen("/v1/chat/completions")[-1].body["stream_options"] == {"include_usage": True}


async def test_fill_in_the_middle_completion(world: World, client: openai.AsyncOpenAI) -> None:
    answer = await client.completions.create(
        model="autocomplete", prompt="def add(a, b):\n    return ", suffix="\n\nprint(add(1, 2))"
    )
    assert answer.choices[0].text == "<fim 26|18>"
    sent = world.provider.seen("/v1/completions")[-1].body
    assert sent["model"] == "codestral-fake" and sent["suffix"] == "\n\nprint(add(1, 2))"
    stream = await client.completions.create(model="autocomplete", prompt="x = ", suffix="\n", stream=True)
    assert "".join([c.choices[0].text async for c in stream if c.choices]) == "<fim 4|1>"


async def test_models_lists_the_orgs_aliases(world: World, client: openai.AsyncOpenAI) -> None:
    assert [m.id async for m in client.models.list()] == ["autocomplete", "chat", "claude"]


async def test_tools_and_response_format_pass_through(world: World, client: openai.AsyncOpenAI) -> None:
    tools: list[Any] = [
        {
            "type": "function",
            "function": {
                "name": "search",
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
            },
        }
    ]
    answer = await client.chat.completions.create(
        model="chat",
        messages=[{"role": "user", "content": "find"}],
        tools=tools,
        response_format={"type": "json_object"},
    )
    calls = answer.choices[0].message.tool_calls
    assert calls is not None and calls[0].type == "function"
    call = calls[0]
    assert call.function.name == "search" and json.loads(call.function.arguments) == {"q": "fake"}
    sent = world.provider.seen("/v1/chat/completions")[-1].body
    assert sent["tools"] == tools and sent["response_format"] == {"type": "json_object"}


async def test_an_unknown_alias_is_a_404_naming_the_model(world: World, client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        await client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    body: Any = raised.value.body
    assert body["errors"][0]["field"] == "model"
