"""Alembic, per target: each target keeps its revisions in its own `migrations/` folder and its own
version table (`<target>_alembic_version`); this package holds the one shared environment."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from coder.shared.target import Target

ENVIRONMENT = Path(__file__).resolve().parent

# Called once per migration applied: (target name, "upgrade"/"downgrade", revision id, its message).
Progress = Callable[[str, str, str, str], None]


def alembic_config(
    target: Target, connection: Connection | None = None, progress: Progress | None = None
) -> Config:
    config = Config()
    config.set_main_option("script_location", str(ENVIRONMENT))
    config.set_main_option("version_locations", str(target.migrations_dir))
    config.set_main_option("path_separator", "os")
    config.attributes["target"] = target
    config.attributes["connection"] = connection
    config.attributes["progress"] = progress
    return config


def migrated(target: Target) -> bool:
    return target.metadata is not None and target.migrations_dir.is_dir()


async def upgrade(
    engine: AsyncEngine, targets: list[Target], revision: str = "head", progress: Progress | None = None
) -> None:
    """Bring each target's tables to `revision`, one transaction per migration."""
    for target in targets:
        if migrated(target):
            async with engine.begin() as conn:
                await conn.run_sync(_upgrade, target, revision, progress)


def _upgrade(connection: Connection, target: Target, revision: str, progress: Progress | None) -> None:
    command.upgrade(alembic_config(target, connection, progress), revision)


async def move(engine: AsyncEngine, target: Target, revision: str, progress: Progress | None = None) -> None:
    """Bring one target's tables to `revision`: up or down (a rollback), whichever way it lies.

    `revision` is a revision id of the target, `head` or `base` (no tables)."""
    async with engine.begin() as conn:
        await conn.run_sync(_move, target, revision, progress)


def _move(connection: Connection, target: Target, revision: str, progress: Progress | None) -> None:
    config = alembic_config(target, connection, progress)
    script = ScriptDirectory.from_config(config)
    if revision not in ("head", "base"):
        script.get_revision(revision)  # raises alembic's "Can't locate revision" for an unknown id
    current = MigrationContext.configure(
        connection, opts={"version_table": f"{target.name}_alembic_version"}
    ).get_current_revision()
    below = {r.revision for r in script.iterate_revisions(current, "base")} if current else set()
    if revision == "base" or (revision in below and revision != current):
        command.downgrade(config, revision)
    else:
        command.upgrade(config, revision)


async def revision(engine: AsyncEngine, target: Target, message: str) -> None:
    """Autogenerate the next revision of `target` from the difference between its models and the DB."""
    target.migrations_dir.mkdir(exist_ok=True)
    async with engine.begin() as conn:
        await conn.run_sync(
            lambda sync: command.revision(alembic_config(target, sync), message=message, autogenerate=True)
        )
