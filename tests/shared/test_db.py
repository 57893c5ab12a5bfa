"""Database errors keep stored values out of the logs: statement parameters (hidden by the engine) and
PostgreSQL's DETAIL, which echoes the refused row (dropped by the log formatter)."""

from __future__ import annotations

import logging
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from types import SimpleNamespace

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import DateTime, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from coder.shared import db
from coder.shared.errors import Problem, install_problem_handlers
from coder.shared.telemetry import json_formatter

HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$bm90LWEtcmVhbC1oYXNo"


async def test_a_refused_insert_logs_no_stored_values(database_url: str) -> None:
    engine = db.create_engine(database_url, pool_size=1)
    email = f"leak-{uuid.uuid4().hex[:8]}@example.com"
    # No `email_verified`: a NOT NULL violation, whose DETAIL lists the whole row.
    insert = text(
        "INSERT INTO gateway_user (id, email, name, password_hash) VALUES (:id, :email, 'x', :hash)"
    )
    try:
        async with engine.connect() as conn:
            with pytest.raises(IntegrityError) as failed:
                await conn.execute(insert, {"id": uuid.uuid4(), "email": email, "hash": HASH})
            await conn.rollback()
    finally:
        await engine.dispose()
    assert "parameters hidden" in str(failed.value)
    record = logging.LogRecord("t", logging.ERROR, __file__, 1, "insert failed", None, sys.exc_info())
    record.exc_info = (type(failed.value), failed.value, failed.value.__traceback__)
    logged = json_formatter().format(record)
    assert "gateway_user" in logged and "not-null constraint" in logged
    assert "$argon2" not in logged and email not in logged


@pytest.fixture
async def probe_app(database_url: str) -> AsyncIterator[tuple[FastAPI, AsyncEngine]]:
    """A bare app whose routes write a row and then refuse, with the real session dependency."""
    engine = db.create_engine(database_url, pool_size=2)
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE probe_refusal (note text PRIMARY KEY)"))
    app = FastAPI()
    app.state.runtime = SimpleNamespace(sessions=async_sessionmaker(engine, expire_on_commit=False))
    install_problem_handlers(app)

    @app.post("/refuse")
    async def refuse(session: db.SessionDep, note: str, commit: bool) -> None:
        await session.execute(text("INSERT INTO probe_refusal VALUES (:note)"), {"note": note})
        raise Problem("refused", status=402, slug="refused", commit=commit)

    try:
        yield app, engine
    finally:
        async with engine.begin() as conn:
            await conn.execute(text("DROP TABLE probe_refusal"))
        await engine.dispose()


@pytest.mark.parametrize("commit", [True, False])
async def test_a_problem_commits_the_request_only_when_it_says_so(
    probe_app: tuple[FastAPI, AsyncEngine], commit: bool
) -> None:
    app, engine = probe_app
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://probe") as client:
        response = await client.post("/refuse", params={"note": "kept", "commit": commit})
    assert response.status_code == 402
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("/refused")
    async with engine.connect() as conn:
        rows = (await conn.execute(text("SELECT note FROM probe_refusal"))).scalars().all()
    assert rows == (["kept"] if commit else [])


def test_one_class_statement_gives_a_target_its_base_and_its_event_tables() -> None:
    class Base(db.TargetBase, DeclarativeBase, target="probe"):
        pass

    class Thing(Base):
        __tablename__ = "probe_thing"
        id: Mapped[int] = mapped_column(primary_key=True)
        at: Mapped[datetime]

    assert Base.metadata.info == {"target": "probe"}
    assert set(Base.metadata.tables) == {"probe_thing", "probe_outbox", "probe_inbox"}
    assert Base.events.outbox.name == "probe_outbox"
    at = Thing.__table__.c.at.type
    assert isinstance(at, DateTime) and at.timezone  # the shared type map: timestamptz
    assert (
        Base.metadata.tables["probe_thing"].primary_key.name == "probe_pk_probe_thing"
    )  # the target's naming convention

    class Quiet(db.TargetBase, DeclarativeBase, target="quiet", events=False):
        pass

    assert not Quiet.metadata.tables
    assert not hasattr(Quiet, "events")

    # DeclarativeBase reads the metadata when it sets a base up: it must come after the mixin.
    with pytest.raises(TypeError, match="TargetBase, DeclarativeBase"):

        class Wrong(DeclarativeBase, db.TargetBase, target="wrong"):
            pass


async def test_an_idle_connection_that_died_is_replaced_before_use(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pooled connection whose server side ended (a database restart, an idle timeout) is pinged
    when it is taken again after sitting idle, and replaced: the statement runs on a new one."""
    engine = db.create_engine(database_url, pool_size=1)
    pid = text("SELECT pg_backend_pid()")
    try:
        async with engine.connect() as other:
            # Beside the pooled connection: one more (max_overflow), closed when it is returned.
            async with engine.connect() as conn:
                first = (await conn.execute(pid)).scalar_one()
            await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
        monkeypatch.setattr(db, "IDLE_PING_SECONDS", 0.0)
        async with engine.connect() as conn:
            second = (await conn.execute(pid)).scalar_one()
    finally:
        await engine.dispose()
    assert second != first
