"""GenAI metrics from ai's `ai.request.completed` events, by model, per org."""

from __future__ import annotations

from coder.shared.events import CloudEvent
from coder.tests.services.observability.factories import API, ok
from coder.tests.support.platform import Platform, wait_until
from coder.tests.support.tokens import TestSigner


def completed(
    org: str, model: str, prompt: int, completion: int, latency: float, ttft: float | None
) -> CloudEvent:
    data = {
        "user_id": "alice",
        "org_id": org,
        "model": model,
        "provider": "openai",
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "cost_usd": "0.01",
        "latency_ms": latency,
        "ttft_ms": ttft,
        "stream": ttft is not None,
        "outcome": "completed",
    }
    return CloudEvent(source="/coder/ai", type="ai.request.completed", orgid=org, data=data)


async def test_tokens_duration_and_time_to_first_token_by_model(
    platform: Platform, signer: TestSigner, org: str
) -> None:
    h = signer.headers(org)
    calls = [
        completed(org, "gpt-4o", 100, 20, 400.0, 50.0),
        completed(org, "gpt-4o", 300, 40, 800.0, 150.0),
        completed(org, "claude", 10, 5, 200.0, None),
        completed(f"{org}-other", "gpt-4o", 999, 999, 1.0, 1.0),
    ]
    assert platform.runtime.bus is not None
    await platform.runtime.bus.publish([*calls, calls[0]])  # delivered twice: counted once

    async def models() -> list[dict[str, object]]:
        found: list[dict[str, object]] = ok(await platform.client.get(f"{API}/genai", headers=h))["models"]
        return found if sum(int(m["calls"]) for m in found) == 3 else []  # type: ignore[call-overload]

    found = {m["model"]: m for m in await wait_until(models, what="the three calls")}
    gpt = found["gpt-4o"]
    assert (gpt["calls"], gpt["streamed"], gpt["input_tokens"], gpt["output_tokens"]) == (2, 2, 400, 60)
    assert gpt["duration_ms"] == {"avg": 600.0, "p50": 600.0, "p95": 780.0}
    assert gpt["time_to_first_token_ms"] == {"avg": 100.0, "p50": 100.0, "p95": 145.0}
    claude = found["claude"]
    assert (claude["calls"], claude["input_tokens"], claude["output_tokens"]) == (1, 10, 5)
    assert claude["time_to_first_token_ms"] == {"avg": None, "p50": None, "p95": None}
