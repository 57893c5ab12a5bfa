"""The AI gateway's streaming cost, side by side on loopback: 64 concurrent chat streams sent straight
to a local OpenAI-style provider; the same streams through a bare Python proxy that only passes them
on (bare_proxy.py: the floor for any proxy on this stack); and through the platform (`coder-platform
run --target all` as its own process: gateway with a personal token, ai resolving the alias, reading
the provider key from secrets, holding budget in usage against an org budget, passing SSE through,
recording the call and settling the hold). Prints time to first token (p50, p99) and tokens per
second, and their ratios (goals: TTFT at most 1.1x, throughput at least 0.9x); and, independent of the
machine's load, the CPU the proxies spend per stream and per token.

The client is aiohttp's, which spends a fraction of the CPU httpx's does on a stream: the load
generator shares the machine with the servers, and one that takes a core of its own queues its own
streams, which hides the servers' latency in every column."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx

from coder.bench.support import cpu_seconds, percentile, process, ready, report, result, scratch_database
from coder.runner import registry
from coder.shared import db, migrations
from coder.shared.devservers import RedisServer, free_port

STREAMS = 64  # concurrent
ROUNDS = 3
SINGLE = 20  # streams one at a time
REPLY_TOKENS = 64
TOKEN_DELAY = 0.01  # seconds between the provider's tokens, as a fast model streams
SETTLE_SECONDS = 1.0  # after the last round, for the settlements still running
IDLE_SECONDS = 3.0  # each process's CPU at rest is measured over this
MESSAGES = [{"role": "user", "content": "write a short poem about caching"}]
# A chunk that brings text (the provider writes `"content": "`, some proxies `"content":"`).
TOKEN = re.compile(rb'"content": ?"[^"]')


async def _stream(
    client: aiohttp.ClientSession, url: str, headers: dict[str, str], model: str
) -> tuple[float, int, float]:
    """One stream: (time to first token, tokens, seconds from first to last token)."""
    body = {"model": model, "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    first = last = 0.0
    tokens = 0
    async with client.post(url, json=body, headers=headers) as response:
        assert response.status == 200, await response.read()
        async for line in response.content:  # line by line
            if line.startswith(b"data: {") and TOKEN.search(line):
                last = time.perf_counter()
                first = first or last
                tokens += 1
    assert tokens == REPLY_TOKENS, tokens
    return first - started, tokens, last - first


@dataclass
class Load:
    ttfts: list[float]  # of every concurrent stream
    tokens_per_second: float  # over all of them: total tokens / wall time
    alone: list[float]  # TTFTs of streams one at a time (the platform's own latency, without queueing)
    cpu: dict[str, float]  # CPU seconds each process spent over the concurrent rounds, less its idle rate


async def _load(url: str, headers: dict[str, str], model: str, pids: dict[str, int]) -> Load:
    # Idle connections are dropped after 2 s, before the servers drop them (uvicorn: 5 s): on a loaded
    # machine a round outlasts that, and a POST sent on a connection the server is closing fails.
    connector = aiohttp.TCPConnector(limit=STREAMS, keepalive_timeout=2)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as client:
        await _stream(client, url, headers, model)  # warm the path and its connections
        alone = [(await _stream(client, url, headers, model))[0] for _ in range(SINGLE)]
        ttfts: list[float] = []
        total_tokens, wall = 0, 0.0
        # What each process spends doing nothing (pollers, relays): taken off the rounds' CPU below,
        # in proportion to their wall time, which a loaded machine stretches.
        idle = {name: -cpu_seconds(pid) for name, pid in pids.items()}
        await asyncio.sleep(IDLE_SECONDS)
        idle = {name: (spent + cpu_seconds(pids[name])) / IDLE_SECONDS for name, spent in idle.items()}
        cpu = {name: -cpu_seconds(pid) for name, pid in pids.items()}
        began = time.perf_counter()
        for _ in range(ROUNDS):
            started = time.perf_counter()
            results = await asyncio.gather(*(_stream(client, url, headers, model) for _ in range(STREAMS)))
            wall += time.perf_counter() - started
            ttfts += [r[0] for r in results]
            total_tokens += sum(r[1] for r in results)
        # Settlement runs after a stream's last byte: let it finish, so its cost counts.
        await asyncio.sleep(SETTLE_SECONDS)
        elapsed = time.perf_counter() - began
        cpu = {name: spent + cpu_seconds(pids[name]) - idle[name] * elapsed for name, spent in cpu.items()}
    return Load(ttfts, total_tokens / wall, alone, cpu)


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
    provider_port, bare_port, platform_port = free_port(), free_port(), free_port()
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
            bare_env = {
                **env,
                "BARE_PROXY_UPSTREAM": f"http://127.0.0.1:{provider_port}/v1/chat/completions",
                "BARE_PROXY_KEY": key,
            }
            bare_argv = [python, "-P", "-m", "uvicorn", "coder.bench.bare_proxy:app", "--no-access-log"]
            bare_argv += ["--host", "127.0.0.1", "--port", str(bare_port), "--log-level", "warning"]
            bare = stack.enter_context(process(bare_argv, bare_env, work / "bare.log"))
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
            bare_url = f"http://127.0.0.1:{bare_port}/v1/chat/completions"
            await ready(f"{provider_url}/v1/models", provider, work / "provider.log", up=range(200, 500))
            await ready(bare_url, bare, work / "bare.log", up=range(200, 500))
            await ready(f"{base}/healthz", platform, work / "platform.log")
            pat = await _setup_platform(base, provider_url, key)
            assert redis.process is not None
            pids = {"provider": provider.pid, "platform": platform.pid, "redis": redis.process.pid}
            direct = await _load(
                f"{provider_url}/v1/chat/completions", {"Authorization": f"Bearer {key}"}, "gpt-fake", pids
            )
            passed = await _load(bare_url, {}, "gpt-fake", {**pids, "bare": bare.pid})
            through = await _load(
                f"{base}/api/ai/v1/chat/completions", {"Authorization": f"Bearer {pat}"}, "chat", pids
            )
    print(
        f"{ROUNDS} rounds of {STREAMS} concurrent streams, "
        f"{REPLY_TOKENS} tokens {TOKEN_DELAY * 1000:g} ms apart"
    )
    for label, p in (("p50", 50), ("p99", 99)):
        report(
            f"  time to first token, {label}",
            [
                ("direct", percentile(direct.ttfts, p) * 1000, "ms"),
                ("bare proxy", percentile(passed.ttfts, p) * 1000, "ms"),
                ("platform", percentile(through.ttfts, p) * 1000, "ms"),
            ],
            baseline="direct",
        )
    report(
        f"  time to first token, p50 of {SINGLE} streams one at a time",
        [
            ("direct", percentile(direct.alone, 50) * 1000, "ms"),
            ("bare proxy", percentile(passed.alone, 50) * 1000, "ms"),
            ("platform", percentile(through.alone, 50) * 1000, "ms"),
        ],
        baseline="direct",
    )
    report(
        "  tokens per second, all streams",
        [
            ("direct", direct.tokens_per_second, "tokens/s"),
            ("bare proxy", passed.tokens_per_second, "tokens/s"),
            ("platform", through.tokens_per_second, "tokens/s"),
        ],
        baseline="direct",
    )
    # Load-independent: CPU each process spent per stream over the concurrent rounds, beyond what it
    # spends at rest. The provider does the same work either way; the platform's is what a stream
    # through it costs on top.
    streams = ROUNDS * STREAMS
    per_stream = {name: seconds * 1000 / streams for name, seconds in through.cpu.items()}
    report(
        "  CPU per stream over the concurrent rounds (beyond each process's idle rate)",
        [
            ("provider, direct", direct.cpu["provider"] * 1000 / streams, "ms"),
            ("provider, through the platform", per_stream["provider"], "ms"),
            ("bare proxy process", passed.cpu["bare"] * 1000 / streams, "ms"),
            ("platform process", per_stream["platform"], "ms"),
            ("redis, through the platform", per_stream["redis"], "ms"),
        ],
        baseline="provider, direct",
    )
    print(f"  platform process CPU per token: {per_stream['platform'] * 1000 / REPLY_TOKENS:,.1f} us")
    ttft = percentile(through.ttfts, 50) / percentile(direct.ttfts, 50)
    result("ttft_p50_vs_direct", ttft, goal=1.1, higher_is_better=False)
    result("tokens_vs_direct", through.tokens_per_second / direct.tokens_per_second, goal=0.9)
    # What the bare proxy scores against the same goals: the floor any proxy on this stack starts from.
    floor = percentile(passed.ttfts, 50) / percentile(direct.ttfts, 50)
    result("bare_proxy_ttft_p50_vs_direct", floor, goal=1.1, higher_is_better=False)
    result("bare_proxy_tokens_vs_direct", passed.tokens_per_second / direct.tokens_per_second, goal=0.9)
    result("platform_cpu_per_stream", per_stream["platform"], unit="ms")
