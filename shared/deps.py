"""Typed dependencies on what the process runtime opened: a route names what it needs (`CacheDep`,
`BusDep`, `ClientsDep`, its own settings) and never reaches into `request.app.state` itself.
The request's database session is `shared.db.SessionDep`. Dependencies are coroutines even when they
never wait: FastAPI runs a plain function in its thread pool, a thread hop per request."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from redis.asyncio import Redis

from coder.shared.errors import Unavailable, answers
from coder.shared.events.bus import Bus
from coder.shared.http import ServiceClients
from coder.shared.runtime import Runtime
from coder.shared.settings import TargetSettings

S = TypeVar("S", bound=TargetSettings)


async def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(_runtime)]


@answers(503)
async def _cache(runtime: RuntimeDep) -> Redis:
    if runtime.cache is None:
        raise Unavailable("the cache is not open in this process")
    return runtime.cache


@answers(503)
async def _bus(runtime: RuntimeDep) -> Bus:
    if runtime.bus is None:
        raise Unavailable("the event bus is not open in this process")
    return runtime.bus


async def _clients(runtime: RuntimeDep) -> ServiceClients:
    return runtime.clients


CacheDep = Annotated[Redis, Depends(_cache)]
BusDep = Annotated[Bus, Depends(_bus)]
ClientsDep = Annotated[ServiceClients, Depends(_clients)]


def settings_of(kind: type[S]) -> Callable[[Runtime], Awaitable[S]]:
    """The dependency giving a target its own settings, typed:
    `SecretsSettingsDep = Annotated[SecretsSettings, Depends(settings_of(SecretsSettings))]`."""

    async def dependency(runtime: RuntimeDep) -> S:
        return runtime.config(kind)

    return dependency
