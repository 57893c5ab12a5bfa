"""Alembic, per target: each target keeps its revisions in its own `migrations/` folder and its own
version table (`<target>_alembic_version`); this package holds the one shared environment."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from coder.shared.target import Target

ENVIRONMENT = Path(__file__).resolve().parent


def alembic_config(target: Target, connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(ENVIRONMENT))
    config.set_main_option("version_locations", str(target.migrations_dir))
    config.set_main_option("path_separator", "os")
    config.attributes["target"] = target
    config.attributes["connection"] = connection
    return config


async def upgrade(engine: AsyncEngine, targets: list[Target], revision: str = "head") -> None:
    """Bring each target's tables to `revision`, one transaction per migration."""
    for target in targets:
        if target.metadata is None or not target.migrations_dir.is_dir():
            continue
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade, target, revision)


def _upgrade(connection: Connection, target: Target, revision: str) -> None:
    command.upgrade(alembic_config(target, connection), revision)


async def revision(engine: AsyncEngine, target: Target, message: str) -> None:
    """Autogenerate the next revision of `target` from the difference between its models and the DB."""
    target.migrations_dir.mkdir(exist_ok=True)
    async with engine.begin() as conn:
        await conn.run_sync(
            lambda sync: command.revision(alembic_config(target, sync), message=message, autogenerate=True)
        )
