"""The resources of one process, opened and closed in dependency order by the app's lifespan.

One Runtime serves every target in the process: in `all` mode they share the engine, the cache and
the bus, and call each other in-process; with one target per process the same code uses the URLs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from redis.asyncio import BlockingConnectionPool, Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.types import ASGIApp

from coder.shared import db
from coder.shared.auth import REVOCATION_CACHE_SECONDS, RevocationList, TokenVerifier
from coder.shared.embedded import embedded_database_url
from coder.shared.events.bus import Bus, InProcessBus, RabbitBus
from coder.shared.events.outbox import WAKE_RELAY, EventTables
from coder.shared.events.relay import Relay, deliverer
from coder.shared.http import ServiceClients
from coder.shared.settings import PlatformSettings, TargetSettings
from coder.shared.target import Dependency, Descriptor, Target, service_urls

log = logging.getLogger(__name__)

S = TypeVar("S", bound=TargetSettings)

# Redis connections per process, and how long a call waits for one when all are in use.
REDIS_CONNECTIONS = 100
REDIS_WAIT_SECONDS = 10.0
# How long each close, and the background tasks together, may take when the process stops.
STOP_SECONDS = 10.0


class Runtime:
    def __init__(
        self,
        settings: PlatformSettings,
        targets: Mapping[str, Target],
        known_targets: Mapping[str, Descriptor],
        target_settings: Iterable[TargetSettings] = (),
    ) -> None:
        self.settings = settings
        self.targets = dict(targets)
        # Every target's description, served here or not: what `require` reads a caller's grants from.
        self.descriptors = {**known_targets, **{name: t.descriptor for name, t in targets.items()}}
        # Given, not read here: the entry point reads the environment (runner/process.py), tests
        # pass values. A target left without its settings fails before anything is opened.
        self.target_settings: dict[type[TargetSettings], TargetSettings] = {
            type(s): s for s in target_settings
        }
        missing = [
            t.name
            for t in targets.values()
            if t.settings is not None and t.settings not in self.target_settings
        ]
        if missing:
            raise ValueError(f"no settings given for {', '.join(missing)}")
        self.local_apps: dict[str, ASGIApp] = {}
        self.service_urls = service_urls(
            {name: t.port for name, t in known_targets.items()}, given=settings.service_urls
        )
        # The process's /metrics app (shared/metrics.py) for each target it serves, and where the
        # others' answer: observability reads every target's, in-process or over HTTP.
        self.metrics_apps: dict[str, ASGIApp] = {}
        self.metrics = ServiceClients(
            service_urls(dict.fromkeys(known_targets, settings.metrics_port), given=settings.metrics_urls),
            self.metrics_apps,
        )
        self.engine: AsyncEngine | None = None
        self._sessions: async_sessionmaker[AsyncSession] | None = None
        self.cache: Redis | None = None
        self.bus: Bus | None = None
        self.relay: Relay | None = None
        self.clients = ServiceClients(
            self.service_urls, self.local_apps, workload_secrets=settings.workload_secrets
        )
        self.verifier: TokenVerifier | None = None
        # The gateway's revocation list, read by every target where Redis is at hand.
        self.revocations: RevocationList | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._opened = contextlib.AsyncExitStack()
        # Closers registered by targets' setup, run first on stop.
        self.on_stop: list[Callable[[], Awaitable[None]]] = []

    def config(self, kind: type[S]) -> S:
        value = self.target_settings[kind]
        assert isinstance(value, kind)
        return value

    @property
    def needs(self) -> set[Dependency]:
        return {need for t in self.targets.values() for need in t.needs}

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]:
        if self._sessions is None:
            raise RuntimeError("the database is not open in this process")
        return self._sessions

    async def start(self) -> None:
        """Open what the targets need; if any step fails, close what was opened before raising."""
        async with contextlib.AsyncExitStack() as opened:
            await self._open(opened)
            # Everything opened; stop() closes it, in the reverse order.
            self._opened = opened.pop_all()

    async def _open(self, opened: contextlib.AsyncExitStack) -> None:
        opened.push_async_callback(self.clients.close)
        opened.push_async_callback(self.metrics.close)
        needs = self.needs
        if Dependency.POSTGRES in needs:
            url = self.settings.database_url
            if url is None:
                url = await asyncio.to_thread(embedded_database_url, Path(self.settings.data_dir))
            self.engine = engine = db.create_engine(url)
            opened.push_async_callback(engine.dispose)
            self._sessions = async_sessionmaker(
                self.engine, expire_on_commit=False, info={WAKE_RELAY: self._wake_relay}
            )
        if Dependency.REDIS in needs:
            self.cache = cache = await self._open_cache()
            opened.push_async_callback(cache.aclose)
            # Fail open like the gateway's default: a Redis outage must not refuse every call the
            # gateway already admitted; the gateway's own check is where that choice is a setting.
            self.revocations = RevocationList(cache, fail_open=True, cache_seconds=REVOCATION_CACHE_SECONDS)
        if Dependency.RABBITMQ in needs:
            self.bus = bus = self._open_bus()
            opened.push_async_callback(bus.close)
            await bus.start()
        self.verifier = self._open_verifier()
        opened.push_async_callback(self._cancel_tasks)
        if self.bus is not None and self._sessions is not None:
            await self._start_events(self.bus, self._sessions)
        for target in self.targets.values():
            for work in target.background:
                self._spawn(work(self), f"{target.name}:{getattr(work, '__name__', 'task')}")

    async def _open_cache(self) -> Redis:
        if self.settings.redis_url:
            # A burst beyond the pool (200 WebSocket handshakes at once) waits for a connection
            # instead of failing: redis-py's default pool raises once 100 are in use.
            pool = BlockingConnectionPool.from_url(
                self.settings.redis_url,
                decode_responses=True,
                health_check_interval=30,
                socket_connect_timeout=5,
                max_connections=REDIS_CONNECTIONS,
                timeout=REDIS_WAIT_SECONDS,
            )
            return Redis.from_pool(pool)
        try:
            import fakeredis
        except ModuleNotFoundError:
            raise RuntimeError(
                "REDIS_URL is not set, and the in-process cache is not installed here (the `embedded` "
                "dependency group of a development install): set REDIS_URL"
            ) from None

        log.info("no REDIS_URL: using the in-process cache")
        return fakeredis.FakeAsyncRedis(
            decode_responses=True,
            connection_pool_class=BlockingConnectionPool,
            max_connections=REDIS_CONNECTIONS,
            timeout=REDIS_WAIT_SECONDS,
        )

    def _open_bus(self) -> Bus:
        limit = self.settings.event_delivery_limit
        if self.settings.amqp_url:
            return RabbitBus(self.settings.amqp_url, delivery_limit=limit)
        log.info("no AMQP_URL: using the in-process event bus")
        return InProcessBus(delivery_limit=limit)

    def _open_verifier(self) -> TokenVerifier:
        s = self.settings
        document = s.jwks_document()
        fetch = None
        if document is None:

            async def fetch() -> dict[str, Any]:
                if s.jwks_url:
                    import httpx

                    async with httpx.AsyncClient(timeout=10) as client:
                        response = await client.get(s.jwks_url)
                else:
                    response = await self.clients.client("gateway").get("/.well-known/jwks.json")
                response.raise_for_status()
                result: dict[str, Any] = response.json()
                return result

        return TokenVerifier(issuer=s.token_issuer, audience=s.token_audience, jwks=document, fetch=fetch)

    async def _start_events(self, bus: Bus, sessions: async_sessionmaker[AsyncSession]) -> None:
        publishers = [t.events for t in self.targets.values() if t.events is not None]
        if publishers:
            self.relay = Relay(sessions, bus, publishers, poll_seconds=self.settings.outbox_poll_seconds)
            self._spawn(self.relay.run(), "outbox-relay")
        for target in self.targets.values():
            if target.consumes:
                if target.events is None:
                    raise RuntimeError(f"{target.name} consumes events but declares no inbox (events=)")
                await bus.consume(
                    target.name,
                    list(target.consumes),
                    deliverer(
                        sessions,
                        target.events,
                        dict(target.consumes),
                        cache=self.cache,
                        clients=self.clients,
                        batch=target.consume_batch,
                    ),
                )

    def _wake_relay(self, tables: EventTables | None = None) -> None:
        if self.relay is not None:
            self.relay.wake(tables)

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(_log_crash)
        self._tasks.append(task)

    async def stop(self) -> None:
        # A stop never hangs: a close that does not finish in STOP_SECONDS is cancelled and named in
        # the log, and the rest is closed after it.
        for close in reversed(self.on_stop):
            try:
                await asyncio.wait_for(close(), STOP_SECONDS)
            except TimeoutError:
                log.error("a close did not finish in time", extra={"close": _name(close), "s": STOP_SECONDS})
        await self._opened.aclose()

    async def _cancel_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            _, stuck = await asyncio.wait(self._tasks, timeout=STOP_SECONDS)
            for task in stuck:
                log.error("a background task ignored its cancellation", extra={"task": task.get_name()})
        self._tasks.clear()

    async def readiness(self) -> dict[str, str]:
        """Each dependency this process needs -> "ok" or why it failed."""
        checks: dict[str, str] = {}
        if self.engine is not None:
            checks["postgres"] = await _check(db.ping(self.engine))
        if self.cache is not None:
            checks["redis"] = await _check(self.cache.ping())
        if self.bus is not None:
            checks["rabbitmq"] = "ok" if self.bus.is_ready() else "not connected"
        return checks


async def _check(awaitable: Any) -> str:
    try:
        await asyncio.wait_for(awaitable, timeout=2.0)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"[:200]
    return "ok"


def _name(close: Callable[[], Awaitable[None]]) -> str:
    owner = getattr(close, "__self__", None)
    return f"{type(owner).__qualname__}.{close.__name__}" if owner is not None else repr(close)


def _log_crash(task: asyncio.Task[Any]) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        if (exc := task.exception()) is not None:
            log.error("background task crashed", exc_info=exc, extra={"task": task.get_name()})
