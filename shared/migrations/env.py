"""Alembic environment shared by every target; migrations.py passes the target and the connection."""

from __future__ import annotations

from typing import Any

from alembic import context

from coder.shared.migrations.ops import use_event_table_operations
from coder.shared.target import Target

config = context.config
target: Target = config.attributes["target"]
prefix = f"{target.name}_"


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    # A target sees only its own tables: others' are invisible to autogenerate, never dropped.
    if type_ == "table":
        return bool(name and name.startswith(prefix))
    return True


context.configure(
    connection=config.attributes["connection"],
    target_metadata=target.metadata,
    version_table=f"{target.name}_alembic_version",
    include_name=include_name,
    compare_type=True,
    transaction_per_migration=True,
    process_revision_directives=lambda _context, _revision, directives: use_event_table_operations(
        target.name, directives
    ),
)
with context.begin_transaction():
    context.run_migrations()
