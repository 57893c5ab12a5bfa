"""Alembic environment shared by every target; migrations.py passes the target and the connection."""

from __future__ import annotations

from typing import Any

from alembic import context

from coder.shared.migrations import Progress
from coder.shared.migrations.ops import use_event_table_operations
from coder.shared.target import Target

config = context.config
target: Target = config.attributes["target"]
progress: Progress | None = config.attributes.get("progress")
prefix = f"{target.name}_"


def report(ctx: Any, step: Any, heads: Any, run_args: Any) -> None:
    # A downgrade step names the revision it undoes, as an upgrade step names the one it applies.
    if progress is not None:
        direction = "upgrade" if step.is_upgrade else "downgrade"
        progress(target.name, direction, step.up_revision_id, step.up_revision.doc)


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
    on_version_apply=report,
    process_revision_directives=lambda _context, _revision, directives: use_event_table_operations(
        target.name, directives
    ),
)
with context.begin_transaction():
    context.run_migrations()
