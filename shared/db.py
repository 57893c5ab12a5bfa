"""PostgreSQL through SQLAlchemy 2 async (asyncpg): engines, one transaction per request, table naming.

Every target owns only tables prefixed with its name; `target_metadata()` gives it a MetaData whose
naming convention keeps constraint and index names under that prefix too.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any, ClassVar

from fastapi import Depends, Request
from sqlalchemy import DateTime, MetaData, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InvalidatePoolError
from sqlalchemy.ext import asyncio as sa_asyncio
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from coder.shared.errors import Problem
from coder.shared.events.outbox import EventTables

# A pooled connection idle longer than this is pinged before use (see _ping_when_idle).
IDLE_PING_SECONDS = 5.0
_IDLE_SINCE = "coder_idle_since"

# Every timestamp is stored with its time zone (`timestamptz`).
TYPE_ANNOTATION_MAP: dict[Any, Any] = {datetime: DateTime(timezone=True)}


def target_metadata(target: str) -> MetaData:
    return MetaData(
        naming_convention={
            "ix": f"{target}_ix_%(table_name)s_%(column_0_N_name)s",
            "uq": f"{target}_uq_%(table_name)s_%(column_0_N_name)s",
            "ck": f"{target}_ck_%(table_name)s_%(constraint_name)s",
            "fk": f"{target}_fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": f"{target}_pk_%(table_name)s",
        },
        info={"target": target},
    )


class TargetBase:
    """Mixed in ahead of DeclarativeBase, makes a target's declarative base in one statement:

        class Base(TargetBase, DeclarativeBase, target="secrets"):
            pass  # Base.events: secrets' outbox and inbox

    The base gets `target_metadata(target)`, the shared `TYPE_ANNOTATION_MAP` and, unless
    `events=False` (a target that neither publishes nor consumes), `events`: its EventTables on that
    metadata. A mixin with a class keyword rather than a function returning a class, because mypy
    accepts a class statement as a base of the mapped classes and refuses a variable.
    """

    metadata: ClassVar[MetaData]
    type_annotation_map: ClassVar[dict[Any, Any]] = TYPE_ANNOTATION_MAP
    events: ClassVar[EventTables]

    def __init_subclass__(cls, *, target: str | None = None, events: bool = True, **kw: Any) -> None:
        if target is not None:
            # DeclarativeBase reads `metadata` when it sets the base up, in its own __init_subclass__,
            # which must therefore run after this one.
            if cls.__bases__[:2] != (TargetBase, DeclarativeBase):
                raise TypeError(
                    f"{cls.__name__}: write class {cls.__name__}(TargetBase, DeclarativeBase, target=...)"
                )
            cls.metadata = target_metadata(target)
            if events:
                cls.events = EventTables(cls.metadata)
        super().__init_subclass__(**kw)


def async_url(url: str) -> str:
    """Accept the usual `postgres://` / `postgresql://` spellings and pick the asyncpg driver."""
    parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


def make_url_for_database(url: str, database: str) -> str:
    return make_url(url).set(database=database).render_as_string(hide_password=False)


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    # Looked up at the call: OpenTelemetry's SQLAlchemy instrumentation (telemetry.configure_tracing)
    # wraps the module's function, and an engine made through the wrapper gets statement spans.
    engine = sa_asyncio.create_async_engine(
        async_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=1800,
        # The connection used last is used next: its prepared statements and type codecs are warm, and
        # the rest sit idle (pinged when next used, see _ping_when_idle) instead of each in turn
        # preparing every statement again.
        pool_use_lifo=True,
        # Errors and logs name the statement but never its values: they hold password hashes, token
        # digests and secret data.
        hide_parameters=True,
    )
    _ping_when_idle(engine)
    return engine


def _ping_when_idle(engine: AsyncEngine) -> None:
    """A pooled connection that sat idle longer than IDLE_PING_SECONDS is pinged as it is checked out,
    and a dead one invalidates the pool (the database restarted: every older connection is replaced).
    `pool_pre_ping` would ping at every checkout, three round trips each (BEGIN, `;`, ROLLBACK) on
    asyncpg: a busy process's connections never sit idle, and one that died in use is caught by
    SQLAlchemy's disconnect handling the same way."""

    @event.listens_for(engine.sync_engine, "checkin")
    def checked_in(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def checked_out(dbapi_connection: Any, record: ConnectionPoolEntry, proxy: PoolProxiedConnection) -> None:
        idle_since = record.info.get(_IDLE_SINCE)
        if idle_since is None or time.monotonic() - idle_since < IDLE_PING_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as error:
            raise InvalidatePoolError(f"a pooled connection is dead: {error!r}") from error


@asynccontextmanager
async def transaction(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session whose work commits when the block ends and rolls back if it raises."""
    async with factory() as session, session.begin():
        yield session


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


async def _request_session(request: Request) -> AsyncIterator[AsyncSession]:
    # One transaction per request: services only flush; the commit happens here, right after the
    # handler returns and before the response is sent (scope="function"), so a failed commit is an
    # error the client sees. Outbox rows added during the request commit with the data they describe.
    # A `Problem` rolls the work back, unless it says `commit=True`: a refusal that must leave a
    # trace (its event, the session it ended) commits that trace, then answers the problem.
    runtime = request.app.state.runtime
    async with runtime.sessions() as session, session.begin() as work:
        try:
            yield session
        except Problem as problem:
            if problem.commit:
                await work.commit()
            raise


SessionDep = Annotated[AsyncSession, Depends(_request_session, scope="function")]


async def _autocommit_connection(request: Request) -> AsyncIterator[AsyncConnection]:
    # For a route whose write is one statement, atomic by itself: each statement commits on its own,
    # two round trips (BEGIN, COMMIT) fewer than a session. Nothing commits with it: no outbox row.
    engine = request.app.state.runtime.engine
    if engine is None:
        raise RuntimeError("the database is not open in this process")
    async with engine.connect() as connection:
        yield await connection.execution_options(isolation_level="AUTOCOMMIT")


AutocommitDep = Annotated[AsyncConnection, Depends(_autocommit_connection, scope="function")]


async def _read_session(request: Request) -> AsyncIterator[AsyncSession]:
    # For a route that only reads (a search): a session over an autocommit connection, each statement
    # its own snapshot, two round trips (BEGIN, COMMIT) fewer than SessionDep. Nothing it adds is
    # written: it is never flushed nor committed.
    async for connection in _autocommit_connection(request):
        async with request.app.state.runtime.sessions(bind=connection) as session:
            yield session


ReadSessionDep = Annotated[AsyncSession, Depends(_read_session, scope="function")]
