"""The AI gateway's streaming cost, side by side on loopback: 64 concurrent chat streams sent straight
to a local OpenAI-style provider, and the same streams through the platform (`coder-platform run
--target all` as its own process: gateway with a personal token, ai resolving the alias, reading the
provider key from secrets, holding budget in usage against an org budget, passing SSE through,
recording the call and settling the hold). Prints time to first token (p50, p99) and tokens per
second, and their ratios (goals: TTFT at most 1.1x, throughput at least 0.9x)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from coder.bench.support import percentile, process, ready, report, scratch_database
from coder.runner import registry
from coder.shared import db, migrations
from coder.shared.devservers import RedisServer, free_port

STREAMS = 64  # concurrent
ROUNDS = 3
SINGLE = 20  # streams one at a time
REPLY_TOKENS = 64
TOKEN_DELAY = 0.01  # seconds between the provider's tokens, as a fast model streams
MESSAGES = [{"role": "user", "content": "write a short poem about caching"}]


async def _stream(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], model: str
) -> tuple[float, int, float]:
    """One stream: (time to first token, tokens, seconds from first to last token)."""
    body = {"model": model, "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    first = last = 0.0
    tokens = 0
    async with client.stream("POST", url, json=body, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            if line.startswith("data: {") and '"content": "' in line and '"content": ""' not in line:
                last = time.perf_counter()
                first = first or last
                tokens += 1
    assert tokens == REPLY_TOKENS, tokens
    return first - started, tokens, last - first


async def _load(url: str, headers: dict[str, str], model: str) -> tuple[list[float], float, list[float]]:
    """TTFTs of every concurrent stream, tokens per second over all of them (total tokens / wall
    time), and TTFTs of streams one at a time (the platform's own latency, without queueing)."""
    # Idle connections are dropped after 2 s, before the servers drop them (uvicorn: 5 s): on a loaded
    # machine a round outlasts that, and a POST sent on a connection the server is closing fails.
    limits = httpx.Limits(max_connections=STREAMS, max_keepalive_connections=STREAMS, keepalive_expiry=2)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        await _stream(client, url, headers, model)  # warm the path and its connections
        alone = [(await _stream(client, url, headers, model))[0] for _ in range(SINGLE)]
        ttfts: list[float] = []
        total_tokens, wall = 0, 0.0
        for _ in range(ROUNDS):
            started = time.perf_counter()
            results = await asyncio.gather(*(_stream(client, url, headers, model) for _ in range(STREAMS)))
            wall += time.perf_counter() - started
            ttfts += [r[0] for r in results]
            total_tokens += sum(r[1] for r in results)
    return ttfts, total_tokens / wall, alone


async def _setup_platform(base: str, provider_url: str, provider_key: str) -> str:
    """An org with the provider as the `chat` alias; a personal token for ai."""
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
        signup = await client.post(
            "/auth/signup",
            json={
                "email": email,
                "password": "correct horse battery staple",
                "name": "bench",
                "organization": "Bench",
            },
        )
        assert signup.status_code == 201, signup.text
        h = {"Authorization": f"Bearer {signup.json()['access_token']}"}

        async def post(path: str, body: dict[str, object], method: str = "POST") -> dict[str, str]:
            answer = await client.request(method, path, json=body, headers=h)
            assert answer.status_code in (200, 201), answer.text
            created: dict[str, str] = answer.json()
            return created

        await post("/api/secrets/v1/secrets/providers/fake", {"data": {"api_key": provider_key}}, "PUT")
        provider = await post(
            "/api/ai/v1/providers",
            {
                "name": "fake",
                "kind": "openai",
                "base_url": provider_url + "/v1",
                "key_path": "providers/fake",
            },
        )
        deployment = await post(
            "/api/ai/v1/deployments",
            {
                "name": "fake",
                "provider_id": provider["id"],
                "model": "gpt-fake",
                "input_price": 1,
                "output_price": 2,
            },
        )
        await post("/api/ai/v1/groups", {"alias": "chat", "deployments": [deployment["id"]]})
        # A budget that covers every call: each one holds against it and settles, as in production.
        await post(
            "/api/usage/v1/budgets",
            {"name": "bench", "scope": "org", "metric": "cost_usd", "limit": 1_000_000, "period": "month"},
        )
        token = await post("/auth/tokens", {"name": "bench", "scopes": ["ai:use"], "expires_in_days": 1})
        return token["token"]


async def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="coder-bench-ai-"))
    python = sys.executable
    key = f"sk-bench-{uuid.uuid4().hex}"
    provider_port, platform_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "CODER_", "AI_"))}
    async with scratch_database() as database_url:
        engine = db.create_engine(database_url, pool_size=1)
        await migrations.upgrade(engine, list(registry.resolve("all").values()))
        await engine.dispose()
        with contextlib.ExitStack() as stack:
            redis = RedisServer().start()
            stack.callback(redis.stop)
            provider_env = {
                **env,
                "FAKE_OPENAI_KEY": key,
                "FAKE_REPLY_TOKENS": str(REPLY_TOKENS),
                "FAKE_TOKEN_DELAY": str(TOKEN_DELAY),
            }
            provider_argv = [
                python,
                "-P",
                "-m",
                "uvicorn",
                "--factory",
                "coder.tests.support.providers:from_environment",
            ]
            provider_argv += ["--host", "127.0.0.1", "--port", str(provider_port), "--log-level", "warning"]
            provider = stack.enter_context(process(provider_argv, provider_env, work / "provider.log"))
            platform_env = {
                **env,
                "DATABASE_URL": database_url,
                "REDIS_URL": redis.url,
                "CODER_LOG_LEVEL": "WARNING",
                "GATEWAY_OPEN_SIGNUP": "true",
                "GATEWAY_RATE_LIMIT_PER_TOKEN": str(10**7),
                "GATEWAY_RATE_LIMIT_PER_IP": str(10**7),
                "AI_WORKLOAD_SECRET": uuid.uuid4().hex,
                "AI_HEALTH_INTERVAL_SECONDS": "3600",
            }
            cli = str(Path(python).with_name("coder-platform"))
            platform_argv = [
                cli,
                "run",
                "--target",
                "all",
                "--port",
                str(platform_port),
                "--metrics-port",
                "0",
            ]
            platform = stack.enter_context(process(platform_argv, platform_env, work / "platform.log"))
            provider_url, base = f"http://127.0.0.1:{provider_port}", f"http://127.0.0.1:{platform_port}"
            await ready(f"{provider_url}/v1/models", provider, work / "provider.log", up=range(200, 500))
            await ready(f"{base}/healthz", platform, work / "platform.log")
            pat = await _setup_platform(base, provider_url, key)
            direct = await _load(
                f"{provider_url}/v1/chat/completions", {"Authorization": f"Bearer {key}"}, "gpt-fake"
            )
            through = await _load(
                f"{base}/api/ai/v1/chat/completions", {"Authorization": f"Bearer {pat}"}, "chat"
            )
    print(
        f"{ROUNDS} rounds of {STREAMS} concurrent streams, "
        f"{REPLY_TOKENS} tokens {TOKEN_DELAY * 1000:g} ms apart"
    )
    for label, p in (("p50", 50), ("p99", 99)):
        report(
            f"  time to first token, {label}",
            [
                ("direct", percentile(direct[0], p) * 1000, "ms"),
                ("platform", percentile(through[0], p) * 1000, "ms"),
            ],
            baseline="direct",
        )
    report(
        f"  time to first token, p50 of {SINGLE} streams one at a time",
        [
            ("direct", percentile(direct[2], 50) * 1000, "ms"),
            ("platform", percentile(through[2], 50) * 1000, "ms"),
        ],
        baseline="direct",
    )
    report(
        "  tokens per second, all streams",
        [("direct", direct[1], "tokens/s"), ("platform", through[1], "tokens/s")],
        baseline="direct",
    )
    from coder.bench.support import result

    ttft = percentile(through[0], 50) / percentile(direct[0], 50)
    result("ttft_p50_vs_direct", ttft, goal=1.1, higher_is_better=False)
    result("tokens_vs_direct", through[1] / direct[1], goal=0.9)
