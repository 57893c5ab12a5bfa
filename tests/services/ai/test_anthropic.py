"""Claude-style clients: the official anthropic SDK through the gateway (base_url `<gateway>/api/ai`,
api_key a personal token) on an Anthropic deployment (passed through) and on an OpenAI one
(translated both ways); and the openai SDK streaming from an Anthropic deployment."""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest

from coder.tests.services.ai.conftest import Org, World
from coder.tests.support.providers import DEFAULT_REPLY

MESSAGES: list[Any] = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def claude(world: World, shared: Org) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=f"{world.url}/api/ai", api_key=shared.pat, max_retries=0)


@pytest.mark.parametrize(
    ("alias", "provider_path"), [("claude", "/v1/messages"), ("chat", "/v1/chat/completions")]
)
async def test_messages(
    world: World, claude: anthropic.AsyncAnthropic, alias: str, provider_path: str
) -> None:
    message = await claude.messages.create(model=alias, max_tokens=100, system="be brief", messages=MESSAGES)
    assert message.type == "message" and message.role == "assistant" and message.model == alias
    assert message.content[0].type == "text" and message.content[0].text == DEFAULT_REPLY
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == 10
    sent = world.provider.seen(provider_path)[-1].body
    if provider_path == "/v1/messages":
        assert sent["system"] == "be brief" and sent["model"] == "claude-fake"
    else:
        assert sent["messages"][0] == {"role": "system", "content": "be brief"}


@pytest.mark.parametrize("alias", ["claude", "chat"])
async def test_streamed_messages(world: World, claude: anthropic.AsyncAnthropic, alias: str) -> None:
    costs = []
    async with claude.messages.stream(model=alias, max_tokens=5, messages=MESSAGES) as stream:
        async for event in stream:
            if event.type == "message_delta":
                costs.append((event.usage.model_extra or {})["cost"])
        final = await stream.get_final_message()
    assert final.content[0].type == "text" and final.content[0].text == "Hello from the fake provider,"
    assert final.stop_reason == "max_tokens" and final.usage.output_tokens == 5
    assert len(costs) == 1 and costs[0] > 0


async def test_openai_stream_from_an_anthropic_deployment(world: World, shared: Org) -> None:
    client = openai.AsyncOpenAI(base_url=f"{world.url}/api/ai/v1", api_key=shared.pat, max_retries=0)
    stream = await client.chat.completions.create(
        model="claude", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == DEFAULT_REPLY
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    usage = chunks[-1].usage
    assert usage is not None and usage.prompt_tokens == 2 and usage.completion_tokens == 10
    # claude's prices: $3/M in, $15/M out
    assert usage.to_dict()["cost"] == pytest.approx((2 * 3 + 10 * 15) / 1e6)
