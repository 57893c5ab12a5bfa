"""One model call, end to end: resolve the alias to routes, hold budget in `usage`, try the routes in
order (the platform's only retry loop: a group's deployments, then its fallback groups), answer in
the client's API (streams event by event), then settle: the `ai.request.completed` event names the
reservation, and usage settles it with the real cost (streams cut or abandoned included).

A deployment that fails (429, 5xx, 401/403, no answer) cools down for its Retry-After or the
configured time, shared across replicas (health.py); the next route is tried. Once a byte of an
answer has gone to the client, nothing is retried."""

from __future__ import annotations

import asyncio
import codecs
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import httpx

# The library's SSE decoders, fed per network read (its EventSource yields one event at a time).
from httpx_sse._decoders import SSEDecoder, SSELineDecoder
from starlette.responses import JSONResponse, Response, StreamingResponse

from coder.services.ai import health, metrics
from coder.services.ai.catalog import Resolved, Route, resolve
from coder.services.ai.config import AiSettings
from coder.services.ai.context import ContextQuery, as_system_message, assemble
from coder.services.ai.models import Base, Provider
from coder.services.ai.providers import (
    MILLION,
    Api,
    Protocol,
    Stream,
    Usage,
    answer_for,
    estimate_cost,
    needed,
    outgoing,
    prompt_estimate,
    protocol,
    usage_of,
)
from coder.services.ai.schemas import HealthState
from coder.services.ai.wire import ContextRequest
from coder.shared.auth import Principal
from coder.shared.db import transaction
from coder.shared.errors import InvalidField, NotFound, Problem
from coder.shared.http import ServiceClients
from coder.shared.runtime import Runtime

log = logging.getLogger(__name__)

OVERHEAD_HEADER = "x-coder-overhead-ms"
KEY_CACHE_SECONDS = 30.0
# Resolved routing (group -> deployments -> providers) is kept per process, checked against a version
# every catalogue write bumps in Redis (so every replica sees a change on its next call); the TTL only
# bounds how long a bump that never happened (Redis lost its key) could go unnoticed.
ROUTING_CACHE_SECONDS = 30.0
ROUTING_VERSION_KEY = "ai:routing:version"
RETRYABLE = frozenset({401, 403, 408, 409, 429})
PUBLISH_BATCH = 64  # events in one outbox transaction at most
# A call's event waits this long for others to share its transaction: calls end together under load,
# and the caller's next call (sent as this one's last byte arrived) gets its first token first.
PUBLISH_LINGER_SECONDS = 0.05


class NoDeployment(Problem):
    status, slug, title = 503, "no-deployment", "No deployment available"


class ProviderRefused(Problem):
    status, slug, title = 400, "provider-refused", "The provider refused the request"


class ProviderKeyMissing(Problem):
    status, slug, title = 502, "provider-key", "The provider's API key cannot be read"


@dataclass
class UpstreamError(Exception):
    status: int | None  # None: no answer (connection refused, timeout, broken stream)
    message: str
    retry_after: float | None = None

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status >= 500 or self.status in RETRYABLE


@dataclass
class Call:
    """A request in the client's API, with who makes it."""

    api: Api
    body: dict[str, Any]
    principal: Principal
    feature: str | None = None
    started: float = field(default_factory=time.monotonic)
    context: ContextRequest | None = None
    # Deployments found healthy within the last health interval (plan): a call that succeeds on one
    # leaves its record as it is, rather than writing it again.
    healthy: frozenset[uuid.UUID] = frozenset()

    @property
    def alias(self) -> str:
        return str(self.body["model"])

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))

    @property
    def include_usage(self) -> bool:
        if self.api is Api.MESSAGES:
            return True
        return bool((self.body.get("stream_options") or {}).get("include_usage"))


@dataclass
class Platform:
    """What a call uses of the process: set up once per process (target.py)."""

    runtime: Runtime
    settings: AiSettings
    # (org, provider, key path) -> (monotonic expiry, the key's read, done or under way).
    keys: dict[tuple[str, uuid.UUID, str], tuple[float, asyncio.Future[str | None]]] = field(
        default_factory=dict
    )
    # (org, alias) -> (routing version, monotonic expiry, the group and its routes).
    routing: dict[tuple[str, str], tuple[str | None, float, Resolved]] = field(default_factory=dict)
    # Settlements of streams still being written when their response ended (awaited on stop).
    pending: set[asyncio.Task[None]] = field(default_factory=set)
    # `ai.request.completed` events waiting for the transaction under way to end (`_publish`).
    _unpublished: list[tuple[dict[str, Any], str, str, asyncio.Future[None]]] = field(default_factory=list)
    _publisher: asyncio.Task[None] | None = None
    _upstream: aiohttp.ClientSession | None = None
    _reads: health.SharedReads | None = None

    @property
    def reads(self) -> health.SharedReads:
        """The routing version and deployments' health, read for the calls of a loop turn at once."""
        if self._reads is None:
            cache = self.runtime.cache
            assert cache is not None, "ai needs redis"
            self._reads = health.SharedReads(cache, ROUTING_VERSION_KEY)
        return self._reads

    @property
    def clients(self) -> ServiceClients:
        return self.runtime.clients

    @property
    def upstream(self) -> aiohttp.ClientSession:
        """One pool to the providers for the process, opened on first use (in the serving loop).
        aiohttp, not httpx: a streamed chunk costs a fraction of the CPU (a C parser, no layers of
        async generators), and a model's answer is hundreds of chunks. An idle connection is dropped
        before a server would close it (uvicorn after 5 s): a call sent on a connection the server is
        closing fails with no answer, and its deployment would cool down for nothing."""
        if self._upstream is None:
            s = self.settings
            self._upstream = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=1000, keepalive_timeout=2.0),
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=s.connect_timeout_seconds, sock_read=s.read_timeout_seconds
                ),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._upstream

    async def close(self) -> None:
        if self.pending:
            await asyncio.gather(*self.pending, return_exceptions=True)
        if self._upstream is not None:
            await self._upstream.close()


# --- budget ---


def _scope(principal: Principal) -> dict[str, str]:
    claims = principal.claims or {}
    scope = {"user_id": principal.subject}
    sid = claims.get("sid")
    if isinstance(sid, str) and sid.startswith("pat:"):
        scope["api_key_id"] = sid.removeprefix("pat:")
    team = claims.get("team")
    if isinstance(team, str) and team:
        scope["team_id"] = team
    return scope


async def reserve(platform: Platform, call: Call, amount: Decimal) -> uuid.UUID:
    """Hold `amount` (USD) in usage for the caller; usage's refusal (402 naming the budget) passes on."""
    usage = platform.clients.client("usage", caller="ai")
    body = {
        "amount": float(amount),
        "ttl_seconds": platform.settings.reservation_ttl_seconds,
        **_scope(call.principal),
    }
    answer = await usage.post("/v1/reservations", json=body)
    if answer.status_code == 201:
        return uuid.UUID(answer.json()["reservation_id"])
    raise _passed_on(answer, "usage")


async def release(platform: Platform, reservation_id: uuid.UUID) -> None:
    """Give the hold back: the call was never made."""
    usage = platform.clients.client("usage", caller="ai")
    answer = await usage.delete(f"/v1/reservations/{reservation_id}")
    if answer.status_code not in (204, 404, 409):
        log.warning("releasing a reservation failed", extra={"status": answer.status_code})


def _passed_on(answer: httpx.Response, target: str) -> Problem:
    try:
        problem = answer.json()
    except ValueError:
        problem = {}
    if not isinstance(problem, dict):
        problem = {}
    slug = str(problem.get("type", "")).rsplit("/", 1)[-1] or None
    known = {"type", "title", "status", "detail", "instance", "errors"}
    extensions = {k: v for k, v in problem.items() if k not in known}
    status = answer.status_code if answer.status_code in (401, 402, 403, 429) else 502
    detail = problem.get("detail") or f"{target} answered {answer.status_code}"
    return Problem(detail, status=status, slug=slug, title=problem.get("title"), **extensions)


async def provider_key(platform: Platform, call: Call, route: Route) -> str | None:
    """The provider's API key, read from `secrets` for the caller (kept briefly: a read is audited).
    Calls that miss at once share one read."""
    provider = route.provider
    if provider.key_path is None:
        return None
    cache_key = (call.principal.org_id, provider.id, f"{provider.key_path}#{provider.key_field}")
    now = time.monotonic()
    cached = platform.keys.get(cache_key)
    if cached is None or cached[0] <= now:
        if len(platform.keys) > 10_000:
            platform.keys.clear()
        read = asyncio.ensure_future(_read_key(platform, provider))

        def forget_failed(done: asyncio.Future[str | None]) -> None:
            failed = done.cancelled() or done.exception() is not None
            if failed and platform.keys.get(cache_key, (0.0, None))[1] is done:
                del platform.keys[cache_key]  # the next call reads again

        read.add_done_callback(forget_failed)
        cached = platform.keys[cache_key] = (now + KEY_CACHE_SECONDS, read)
    # Shielded: a caller that goes away does not cancel the read the others wait for.
    return await asyncio.shield(cached[1])


async def _read_key(platform: Platform, provider: Provider) -> str | None:
    secrets = platform.clients.client("secrets", caller="ai")
    answer = await secrets.get(f"/v1/secrets/{provider.key_path}")
    if answer.status_code != 200:
        if answer.status_code == 404:
            raise ProviderKeyMissing(f"provider {provider.name!r}: no secret at {provider.key_path!r}")
        raise _passed_on(answer, "secrets")
    value = answer.json().get("data", {}).get(provider.key_field)
    if not isinstance(value, str) or not value:
        raise ProviderKeyMissing(
            f"provider {provider.name!r}: the secret at {provider.key_path!r} "
            f"has no field {provider.key_field!r}"
        )
    return value


# --- routing ---


async def routing_changed(platform: Platform) -> None:
    """A catalogue write committed: every replica resolves aliases from the database again."""
    platform.routing.clear()
    cache = platform.runtime.cache
    if cache is not None:
        await cache.incr(ROUTING_VERSION_KEY)


async def _resolved(platform: Platform, org_id: str, alias: str) -> Resolved | None:
    """The group and its routes, from the database; kept with the routing version read before it."""
    cache = platform.runtime.cache
    assert cache is not None, "ai needs redis"
    version: str | None = str(v) if (v := await cache.get(ROUTING_VERSION_KEY)) is not None else None
    async with transaction(platform.runtime.sessions) as session:
        resolved = await resolve(session, org_id, alias)
    if resolved is not None:
        if len(platform.routing) > 10_000:
            platform.routing.clear()
        platform.routing[(org_id, alias)] = (version, time.monotonic() + ROUTING_CACHE_SECONDS, resolved)
    return resolved


def _able(call: Call, routes: list[Route]) -> list[Route]:
    wanted = needed(call.api, call.body)
    return [
        r
        for r in routes
        if protocol(call.api, r.kind) is not None and wanted <= set(r.deployment.capabilities)
    ]


async def plan(platform: Platform, call: Call) -> tuple[bool, list[Route]]:
    """The routes able to serve the call, those cooling down left out, unhealthy ones last; and
    whether the group allows a cheaper deployment when a budget refuses."""
    cache = platform.runtime.cache
    assert cache is not None, "ai needs redis"
    org_id, alias = call.principal.org_id, call.alias
    # The process's routing for the alias, if any, with the routing version and its deployments'
    # health in one round trip (shared with the calls of the same loop turn): a version other than
    # the one it was read at means reading it again.
    resolved: Resolved | None = None
    cached = platform.routing.get((org_id, alias))
    if cached is not None and cached[1] > time.monotonic():
        able = _able(call, cached[2][1])
        version, states = await platform.reads.states_and([r.deployment.id for r in able])
        if version == cached[0]:
            resolved = cached[2]
    if resolved is None:
        resolved = await _resolved(platform, org_id, alias)
        if resolved is None:
            raise NotFound(
                f"no model group {alias!r}", errors=[{"field": "model", "message": "unknown alias"}]
            )
        able = _able(call, resolved[1])
        states = await health.states(cache, [r.deployment.id for r in able])
    group = resolved[0]
    if not able:
        wanted = needed(call.api, call.body)
        need = ", ".join(sorted(w.value for w in wanted)) or "completions"
        raise InvalidField("model", f"no deployment of {alias!r} can serve this request (needs {need})")
    ready = [
        r
        for r, s in zip(able, states, strict=True)
        if s.state is not HealthState.COOLDOWN and s.state is not HealthState.UNHEALTHY
    ]
    sick = [r for r, s in zip(able, states, strict=True) if s.state is HealthState.UNHEALTHY]
    recent = datetime.now(UTC) - timedelta(seconds=platform.settings.health_interval_seconds)
    call.healthy = frozenset(
        r.deployment.id
        for r, s in zip(able, states, strict=True)
        if s.state is HealthState.HEALTHY and s.checked_at is not None and s.checked_at > recent
    )
    if not ready and not sick:
        wait = min((s.cooldown_seconds or 0) for s in states)
        raise NoDeployment(
            f"every deployment of {alias!r} is cooling down",
            headers={"Retry-After": str(max(1, round(wait)))},
        )
    return group.cheaper_on_budget, ready + sick


@dataclass(frozen=True)
class Hold:
    reservation_id: uuid.UUID
    amount: Decimal

    def allowance(self, call: Call, route: Route) -> int | None:
        """How many output tokens the held amount pays for on this route, its prompt paid first."""
        price = route.deployment.output_price
        if price <= 0:
            return None
        prompt = prompt_estimate(call.api, call.body)
        left = self.amount * MILLION - prompt * route.deployment.input_price
        return max(0, int(left / price))


async def hold(
    platform: Platform, call: Call, routes: list[Route], cheaper: bool
) -> tuple[Hold, list[Route]]:
    """Reserve the most the call may cost on any of its routes; when that is refused and the group
    allows it, the cheapest route's cost instead, keeping the routes within it."""
    estimates = [estimate_cost(call.api, call.body, r) for r in routes]
    most = max(estimates)
    try:
        return Hold(await reserve(platform, call, most), most), routes
    except Problem as refusal:
        cheapest = min(estimates)
        if refusal.status != 402 or not cheaper or cheapest == most:
            raise
    held = Hold(await reserve(platform, call, cheapest), cheapest)
    return held, [r for r, e in zip(routes, estimates, strict=True) if e <= cheapest]


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


async def send(platform: Platform, call: Call, route: Route) -> tuple[aiohttp.ClientResponse, Protocol]:
    """The provider's answer, opened (its body not read yet)."""
    key = await provider_key(platform, call, route)
    out = outgoing(call.api, call.body, route, key)
    try:
        response = await platform.upstream.post(out.url, json=out.body, headers=out.headers)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise UpstreamError(None, f"{type(exc).__name__}: no answer") from None
    if response.status >= 400:
        try:
            text = (await response.read()).decode(errors="replace")[:500]
        except (aiohttp.ClientError, TimeoutError):
            text = ""
        finally:
            response.release()
        raise UpstreamError(response.status, text, _retry_after(response.headers))
    return response, out.protocol


async def _failed(platform: Platform, route: Route, error: UpstreamError) -> None:
    cache = platform.runtime.cache
    assert cache is not None
    seconds = error.retry_after if error.retry_after is not None else platform.settings.cooldown_seconds
    reason = f"answered {error.status}" if error.status is not None else error.message
    if seconds > 0:
        await health.cool_down(cache, route.deployment.id, seconds, reason)
    log.warning(
        "deployment failed; trying the next route",
        extra={"deployment": route.deployment.name, "status": error.status, "cooldown_seconds": seconds},
    )


async def with_context(clients: ServiceClients, call: Call, routes: list[Route]) -> None:
    """Put the requested context in a system message first; private parts only if no route is external."""
    asked = call.context
    if asked is None:
        return
    messages = call.body["messages"]
    query = asked.query
    if query is None:
        users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        query = _text(users[-1].get("content")) if users else ""
    read = await assemble(
        call.principal,
        ContextQuery(
            query=query,
            items=asked.items,
            sources=asked.sources,
            max_tokens=asked.max_tokens,
            external=any(r.provider.external for r in routes),
        ),
        clients,
    )
    if read.pieces:
        call.body["messages"] = [{"role": "system", "content": as_system_message(read)}, *messages]


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


async def call_model(platform: Platform, call: Call) -> Response:
    cheaper, routes = await plan(platform, call)
    await with_context(platform.clients, call, routes)
    held, routes = await hold(platform, call, routes, cheaper)
    reservation = held.reservation_id
    failures: list[str] = []
    waited = 0.0  # time spent on providers that failed: theirs, not the platform's overhead
    try:
        for route in routes:
            began = time.monotonic()
            try:
                response, proto = await send(platform, call, route)
            except UpstreamError as error:
                if not error.retryable:
                    raise ProviderRefused(
                        f"{route.deployment.name}: {error.status} {error.message}",
                        provider_status=error.status,
                    ) from None
                failures.append(f"{route.deployment.name}: {error.status or error.message}")
                await _failed(platform, route, error)
                waited += time.monotonic() - began
                continue
            platform_time = began - call.started - waited
            if call.stream:
                return _streamed(platform, call, route, proto, response, held, platform_time)
            return await _answered(platform, call, route, proto, response, reservation, platform_time)
    except BaseException:
        await release(platform, reservation)
        raise
    await release(platform, reservation)
    raise NoDeployment(f"every deployment of {call.alias!r} failed: {'; '.join(failures)}")


async def _answered(
    platform: Platform,
    call: Call,
    route: Route,
    proto: Protocol,
    response: aiohttp.ClientResponse,
    reservation: uuid.UUID,
    platform_time: float,
) -> Response:
    try:
        answer = await response.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise NoDeployment(f"{route.deployment.name}: the answer broke off ({type(exc).__name__})") from None
    finally:
        response.release()
    answered = time.monotonic()
    body = json.loads(answer)
    usage = usage_of(proto, body)
    cost = usage.cost(route)
    out = answer_for(call.api, proto, body, usage, cost, call.alias)
    await record(platform, call, route, usage, cost, reservation, None, "completed")
    overhead_ms = (platform_time + time.monotonic() - answered) * 1000
    return JSONResponse(out, headers={OVERHEAD_HEADER: f"{overhead_ms:.2f}"})


async def _events(response: aiohttp.ClientResponse, stream: Stream) -> AsyncIterator[bytes]:
    """The client's bytes for the provider's SSE events, all those one read brought in one piece: a
    busy process sends fewer, larger pieces (each goes through the gateway's and ai's middleware), an
    idle one still sends each event as it comes. Stops when the stream has spent its hold.

    A stream that passes through (OpenAI to OpenAI) is split into events on its bytes, and an event
    that is one `data:` line goes on as it is (`Stream.feed_data`); the others, and every stream once
    a carriage return shows up in it, go through the SSE decoders."""
    if "text/event-stream" not in response.headers.get("content-type", ""):
        return  # not an event stream: nothing of it reaches the client, the stream counts as cut
    lines, decoder = SSELineDecoder(), SSEDecoder()
    text = codecs.getincrementaldecoder("utf-8")(errors="replace")
    raw, pending = stream.passes_through, b""
    async for data in response.content.iter_any():
        out: list[bytes] = []
        if raw and b"\r" in data:
            raw, data, pending = False, pending + data, b""
        if raw:
            *blocks, pending = (pending + data).split(b"\n\n")
            for block in blocks:
                if block.startswith(b"data: ") and b"\n" not in block:
                    out += stream.feed_data(block[6:])
                else:  # a split at a blank line leaves UTF-8 whole
                    for line in [*block.decode(errors="replace").split("\n"), ""]:
                        if (event := decoder.decode(line)) is not None:
                            out += stream.feed(event.event, event.data)
                if stream.over_budget:
                    break
        else:
            for line in lines.decode(text.decode(data)):
                event = decoder.decode(line)
                if event is not None:
                    out += stream.feed(event.event, event.data)
                    if stream.over_budget:
                        break
        if out:
            yield b"".join(out)
        if stream.over_budget:
            return


def _streamed(
    platform: Platform,
    call: Call,
    route: Route,
    proto: Protocol,
    response: aiohttp.ClientResponse,
    held: Hold,
    platform_time: float,
) -> Response:
    reservation = held.reservation_id
    allowance = held.allowance(call, route)
    stream = Stream(call.api, proto, call.alias, lambda u: u.cost(route), call.include_usage, allowance)
    # Until the provider counts the prompt (OpenAI does in its last chunk), the estimate stands.
    stream.usage.prompt_tokens = prompt_estimate(call.api, call.body)

    async def body() -> AsyncIterator[bytes]:
        outcome = "cancelled"
        try:
            try:
                async for pieces in _events(response, stream):
                    yield pieces
            except (aiohttp.ClientError, TimeoutError):
                pass  # the provider's connection broke: what arrived is what was spent
            if stream.over_budget:
                # The hold is spent: stop here (closing the provider's stream below) as at max_tokens.
                outcome = "budget"
                for piece in stream.budget_end():
                    yield piece
            elif stream.complete:
                outcome = "completed"
            else:
                outcome = "cut"
                for piece in stream.cut():
                    yield piece
        finally:
            # A client that went away cancels this generator: releasing a response not read to its
            # end closes its connection, which ends the provider's call (one read to its end serves
            # the next call). The settlement runs as its own task, so the cancellation cannot
            # interrupt it.
            response.release()
            ttft = stream.first_token_at
            task = asyncio.create_task(
                record(
                    platform, call, route, stream.usage, stream.usage.cost(route), reservation, ttft, outcome
                )
            )
            platform.pending.add(task)
            task.add_done_callback(platform.pending.discard)

    headers = {OVERHEAD_HEADER: f"{platform_time * 1000:.2f}", "x-accel-buffering": "no"}
    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)


async def record(
    platform: Platform,
    call: Call,
    route: Route,
    usage: Usage,
    cost: Decimal,
    reservation: uuid.UUID,
    first_token_at: float | None,
    outcome: str,
) -> None:
    """Metrics, and the event that tells usage what was spent (it settles the reservation)."""
    now = time.monotonic()
    if not usage.reported and usage.prompt_tokens == 0:
        usage.prompt_tokens = prompt_estimate(call.api, call.body)
    labels = {
        "gen_ai_operation_name": "text_completion" if call.api is Api.COMPLETIONS else "chat",
        "gen_ai_provider_name": route.provider.kind,
        "gen_ai_request_model": call.alias,
        "gen_ai_response_model": route.deployment.model,
    }
    metrics.TOKENS.labels(**labels, gen_ai_token_type="input")  # noqa: S106 - a label.observe(usage.prompt_tokens)
    metrics.TOKENS.labels(**labels, gen_ai_token_type="output")  # noqa: S106 - a label.observe(usage.completion_tokens)
    metrics.DURATION.labels(**labels, error_type="" if outcome == "completed" else outcome).observe(
        now - call.started
    )
    ttft_ms = None
    if first_token_at is not None:
        metrics.TTFT.labels(**labels).observe(first_token_at - call.started)
        ttft_ms = round((first_token_at - call.started) * 1000, 3)
    principal = call.principal
    scope = _scope(principal)
    data = {
        "user_id": principal.subject,
        "team_id": scope.get("team_id"),
        "api_key_id": scope.get("api_key_id"),
        "org_id": principal.org_id,
        "model": call.alias,
        "feature": call.feature,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "cached_tokens": usage.cached_tokens,
        "cost_usd": str(cost),
        "reservation_id": str(reservation),
        "deployment": route.deployment.name,
        "provider": route.provider.name,
        "latency_ms": round((now - call.started) * 1000, 3),
        "ttft_ms": ttft_ms,
        "stream": call.stream,
        "outcome": outcome,
    }
    try:
        await _publish(platform, data, principal.org_id, call.alias)
        cache = platform.runtime.cache
        if cache is not None and outcome != "cut" and route.deployment.id not in call.healthy:
            await health.mark(
                cache,
                route.deployment.id,
                HealthState.HEALTHY,
                None,
                ttl=platform.settings.health_interval_seconds * health.HEALTH_TTL_FACTOR,
            )
    except Exception:
        # The reservation lapses at its expiry: the hold is given back, only this spend goes unrecorded.
        log.exception("recording a model call failed", extra={"deployment": route.deployment.name})


async def _publish(platform: Platform, data: dict[str, Any], org_id: str, alias: str) -> None:
    """The call's event, committed to the outbox. Calls that end while a transaction writes others'
    share the next one: streams end together, and a transaction each would cost more than its row."""
    done = asyncio.get_running_loop().create_future()
    platform._unpublished.append((data, org_id, alias, done))
    if platform._publisher is None or platform._publisher.done():
        platform._publisher = asyncio.create_task(_publish_waiting(platform), name="ai.calls.publish")
    # Shielded: a settlement cancelled part way leaves the others' transaction alone.
    await asyncio.shield(done)


async def _publish_waiting(platform: Platform) -> None:
    await asyncio.sleep(PUBLISH_LINGER_SECONDS)
    while platform._unpublished:
        taken = platform._unpublished[:PUBLISH_BATCH]
        del platform._unpublished[:PUBLISH_BATCH]
        try:
            await _publish_taken(platform, taken)
        finally:  # cancelled part way (the process stopping): the callers fail, not wait
            for *_, done in taken:
                if not done.done():
                    done.set_exception(ConnectionAbortedError("the outbox transaction was abandoned"))


async def _publish_taken(
    platform: Platform, taken: list[tuple[dict[str, Any], str, str, asyncio.Future[None]]]
) -> None:
    try:
        async with transaction(platform.runtime.sessions) as session:
            for data, org_id, alias, _ in taken:
                await Base.events.publish(session, "ai.request.completed", data, org_id=org_id, subject=alias)
    except Exception as exc:
        if len(taken) > 1:  # one transaction each: only the failing event is lost
            for one in taken:
                await _publish_taken(platform, [one])
        elif not taken[0][3].done():
            taken[0][3].set_exception(exc)
    else:
        for *_, done in taken:
            if not done.done():
                done.set_result(None)
