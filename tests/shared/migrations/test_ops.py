"""Every target's migrations build exactly the schema its models declare, event tables included
(created by the shared operation, declared by shared.events.EventTables)."""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection

from coder.runner import registry
from coder.shared import db
from coder.shared.target import Target

TARGETS = [target for target in registry.resolve("all").values() if target.metadata is not None]


def _diff(connection: Connection, target: Target) -> list[Any]:
    prefix = f"{target.name}_"

    def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
        return type_ != "table" or bool(
            name and name.startswith(prefix) and name != f"{prefix}alembic_version"
        )

    context = MigrationContext.configure(
        connection, opts={"include_name": include_name, "compare_type": True, "compare_server_default": True}
    )
    assert target.metadata is not None
    return compare_metadata(context, target.metadata)


@pytest.mark.parametrize("target", TARGETS, ids=[target.name for target in TARGETS])
async def test_the_migrated_schema_is_the_models(database_url: str, target: Target) -> None:
    engine = db.create_engine(database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(_diff, target)
    finally:
        await engine.dispose()
    assert diff == []


def test_the_event_tables_come_from_the_shared_operation() -> None:
    for target in TARGETS:
        if target.events is None:
            continue
        source = (target.migrations_dir / "0001_initial.py").read_text()
        assert (
            f"create_event_tables({target.name!r})" in source
            or f'create_event_tables("{target.name}")' in source
        )
        assert f'"{target.name}_outbox"' not in source
