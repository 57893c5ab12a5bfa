"""Deployment health and cooldowns, in Redis so every replica routes alike.

`ai:cooldown:<deployment>` exists while a deployment rests after a failure (its TTL is the cooldown,
the provider's Retry-After when it gave one); `ai:health:<deployment>` holds the last background
check or routed call. The background checker probes each deployment once per interval across
replicas (`ai:health-lock:<deployment>`, SET NX with the interval as TTL)."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from redis.asyncio import Redis
from sqlalchemy import select

from coder.services.ai.config import AiSettings
from coder.services.ai.models import Deployment, Provider
from coder.services.ai.schemas import HealthRead, HealthState, ProviderKind
from coder.shared.runtime import Runtime

log = logging.getLogger(__name__)

HEALTH_TTL_FACTOR = 10  # a health record outlives this many intervals, then reads as unknown


def _cooldown_key(deployment_id: uuid.UUID) -> str:
    return f"ai:cooldown:{deployment_id}"


def _health_key(deployment_id: uuid.UUID) -> str:
    return f"ai:health:{deployment_id}"


@dataclass(frozen=True)
class Health:
    state: HealthState
    checked_at: datetime | None
    detail: str | None
    cooldown_seconds: float | None


async def cool_down(cache: Redis, deployment_id: uuid.UUID, seconds: float, reason: str) -> None:
    await cache.set(_cooldown_key(deployment_id), reason, px=max(1, int(seconds * 1000)))
    await mark(cache, deployment_id, HealthState.UNHEALTHY, reason, ttl=seconds * HEALTH_TTL_FACTOR)


async def mark(
    cache: Redis, deployment_id: uuid.UUID, state: HealthState, detail: str | None, *, ttl: float
) -> None:
    record = {"state": state.value, "checked_at": datetime.now(UTC).isoformat(), "detail": detail}
    await cache.set(_health_key(deployment_id), json.dumps(record), px=max(1, int(ttl * 1000)))


async def states(cache: Redis, deployment_ids: Sequence[uuid.UUID]) -> list[Health]:
    """Each deployment's health: cooling down, else its last record, else unknown."""
    if not deployment_ids:
        return []
    return (await states_and(cache, deployment_ids, None))[1]


async def states_and(
    cache: Redis, deployment_ids: Sequence[uuid.UUID], key: str | None
) -> tuple[str | None, list[Health]]:
    """The value at `key` and the deployments' health, in one round trip."""
    async with cache.pipeline(transaction=False) as pipe:
        if key is not None:
            pipe.get(key)
        for deployment_id in deployment_ids:
            pipe.pttl(_cooldown_key(deployment_id))
            pipe.get(_health_key(deployment_id))
        replies = await pipe.execute()
    value = replies.pop(0) if key is not None else None
    out = []
    for index in range(len(deployment_ids)):
        left_ms, raw = replies[2 * index], replies[2 * index + 1]
        record = json.loads(raw) if raw else {}
        checked = datetime.fromisoformat(record["checked_at"]) if record.get("checked_at") else None
        if isinstance(left_ms, int) and left_ms > 0:
            out.append(Health(HealthState.COOLDOWN, checked, record.get("detail"), left_ms / 1000))
        elif record:
            out.append(Health(HealthState(record["state"]), checked, record.get("detail"), None))
        else:
            out.append(Health(HealthState.UNKNOWN, None, None, None))
    return value, out


_Answer = asyncio.Future[tuple[str | None, list[Health]]]


class SharedReads:
    """`states_and(cache, ids, key)` for the calls that ask in the same turn of the event loop, read in
    one round trip: calls arrive together under load, and a pipeline each costs more CPU than its
    commands. A call's read is still sent after it asked, so it sees every write made before."""

    def __init__(self, cache: Redis, key: str) -> None:
        self._cache = cache
        self._key = key
        self._asked: list[tuple[Sequence[uuid.UUID], _Answer]] = []
        self._sending: set[asyncio.Task[None]] = set()

    def states_and(self, deployment_ids: Sequence[uuid.UUID]) -> _Answer:
        loop = asyncio.get_running_loop()
        answer: _Answer = loop.create_future()
        if not self._asked:
            loop.call_soon(self._send)
        self._asked.append((deployment_ids, answer))
        return answer

    def _send(self) -> None:
        asked, self._asked = self._asked, []
        task = asyncio.create_task(self._read(asked))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _read(self, asked: list[tuple[Sequence[uuid.UUID], _Answer]]) -> None:
        ids = list(dict.fromkeys(i for wanted, _ in asked for i in wanted))
        try:
            value, found = await states_and(self._cache, ids, self._key)
        except Exception as exc:
            for _, answer in asked:
                if not answer.done():
                    answer.set_exception(exc)
            return
        except asyncio.CancelledError:
            for _, answer in asked:
                answer.cancel()
            raise
        by_id = dict(zip(ids, found, strict=True))
        for wanted, answer in asked:
            if not answer.done():
                answer.set_result((value, [by_id[i] for i in wanted]))


def health_read(deployment: Deployment, health: Health) -> HealthRead:
    return HealthRead(
        deployment_id=deployment.id,
        name=deployment.name,
        state=health.state,
        checked_at=health.checked_at,
        detail=health.detail,
        cooldown_seconds=health.cooldown_seconds,
    )


# --- background checks ---


def probe_url(provider: Provider) -> str:
    base = provider.base_url
    return base + ("/v1/models" if provider.kind == ProviderKind.ANTHROPIC.value else "/models")


async def probe(client: httpx.AsyncClient, provider: Provider) -> str | None:
    """None when the provider answers; else why not. Probed without a key (the checker acts for no
    user, and keys are read for a user): any answer below 500, a 401 included, shows it is up."""
    try:
        response = await client.get(probe_url(provider))
    except httpx.HTTPError as exc:
        return f"unreachable: {type(exc).__name__}"
    if response.status_code >= 500:
        return f"answered {response.status_code}"
    return None


async def check_once(runtime: Runtime, client: httpx.AsyncClient, settings: AiSettings) -> int:
    """Probe every deployment no other replica is probing this interval; returns how many."""
    cache = runtime.cache
    assert cache is not None, "ai needs redis"
    # Every org's deployments: the checker serves the whole platform, not one caller.
    async with runtime.sessions() as session:
        rows = (
            await session.execute(
                select(Deployment, Provider).join(Provider, Provider.id == Deployment.provider_id)
            )
        ).all()
    checked = 0
    interval_ms = int(settings.health_interval_seconds * 1000)
    for deployment, provider in rows:
        if not await cache.set(f"ai:health-lock:{deployment.id}", "1", px=interval_ms, nx=True):
            continue
        problem = await probe(client, provider)
        ttl = settings.health_interval_seconds * HEALTH_TTL_FACTOR
        if problem is None:
            await mark(cache, deployment.id, HealthState.HEALTHY, None, ttl=ttl)
        else:
            await mark(cache, deployment.id, HealthState.UNHEALTHY, problem, ttl=ttl)
        checked += 1
    return checked


async def checker(runtime: Runtime) -> None:
    """The background task: probes deployments every interval until the process stops."""
    settings = runtime.config(AiSettings)
    timeout = httpx.Timeout(settings.health_timeout_seconds)
    async with httpx.AsyncClient(timeout=timeout) as client:
        while True:
            try:
                await check_once(runtime, client, settings)
            except Exception:
                log.exception("deployment health check failed")
            await asyncio.sleep(settings.health_interval_seconds)
