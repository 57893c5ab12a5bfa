"""Databases of a test run's own on one PostgreSQL server: created, migrated to head, dropped."""

from __future__ import annotations

import uuid

from sqlalchemy import make_url, text

from coder.runner import registry
from coder.shared import db, migrations


async def _admin(server_url: str, sql: str) -> None:
    engine = db.create_engine(db.make_url_for_database(server_url, "postgres"), pool_size=1)
    try:
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(sql))
    finally:
        await engine.dispose()


async def create_database(server_url: str, prefix: str) -> str:
    """A new database `<prefix>_<random>` on the server of `server_url`, every target migrated to
    head; returns its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    await _admin(server_url, f'CREATE DATABASE "{name}"')
    url = db.make_url_for_database(server_url, name)
    engine = db.create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            await conn.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
            await conn.commit()
        await migrations.upgrade(engine, list(registry.resolve("all").values()))
    finally:
        await engine.dispose()
    return url


async def drop_database(url: str) -> None:
    """Drops the database `url` names, closing whatever connections are left on it."""
    name = make_url(url).database
    await _admin(url, f'DROP DATABASE "{name}" WITH (FORCE)')
