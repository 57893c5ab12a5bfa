"""Migration operations every target shares.

An operation here is frozen once a migration uses it: it states the DDL explicitly instead of deriving
it from the live models, so an old revision creates tomorrow exactly what it created the day it was
written. A change to the event tables is a new operation (`create_event_tables_v2`, or an alter in the
target's next revision), never an edit of this one; tests/shared/migrations compares every target's
migrated schema with its models, so a model that drifts from these tables fails there.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from alembic.autogenerate import renderers
from alembic.autogenerate.api import AutogenContext
from alembic.operations.ops import DowngradeOps, MigrateOperation, MigrationScript, OpContainer, UpgradeOps
from sqlalchemy.dialects import postgresql


def create_event_tables(target: str) -> None:
    """Create `<target>_outbox` and `<target>_inbox` as shared.events.EventTables declares them."""
    op.create_table(
        f"{target}_outbox",
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("routing_key", sa.String(length=200), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f(f"{target}_pk_{target}_outbox")),
        sa.UniqueConstraint("event_id", name=op.f(f"{target}_uq_{target}_outbox_event_id")),
    )
    op.create_table(
        f"{target}_inbox",
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("event_type", sa.String(length=200), nullable=False),
        sa.Column("handled_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f(f"{target}_pk_{target}_inbox")),
    )
    op.create_index(
        op.f(f"{target}_ix_{target}_inbox_handled_at"), f"{target}_inbox", ["handled_at"], unique=False
    )


def drop_event_tables(target: str) -> None:
    op.drop_index(op.f(f"{target}_ix_{target}_inbox_handled_at"), table_name=f"{target}_inbox")
    op.drop_table(f"{target}_inbox")
    op.drop_table(f"{target}_outbox")


# Autogenerate writes the two calls above instead of copying the event tables' DDL into a revision.


class CreateEventTablesOp(MigrateOperation):
    def __init__(self, target: str) -> None:
        self.target = target

    def reverse(self) -> DropEventTablesOp:
        return DropEventTablesOp(self.target)


class DropEventTablesOp(MigrateOperation):
    def __init__(self, target: str) -> None:
        self.target = target

    def reverse(self) -> CreateEventTablesOp:
        return CreateEventTablesOp(self.target)


@renderers.dispatch_for(CreateEventTablesOp)
def _render_create(autogen_context: AutogenContext, operation: CreateEventTablesOp) -> str:
    autogen_context.imports.add("from coder.shared.migrations.ops import create_event_tables")
    return f"create_event_tables({operation.target!r})"


@renderers.dispatch_for(DropEventTablesOp)
def _render_drop(autogen_context: AutogenContext, operation: DropEventTablesOp) -> str:
    autogen_context.imports.add("from coder.shared.migrations.ops import drop_event_tables")
    return f"drop_event_tables({operation.target!r})"


def use_event_table_operations(target: str, directives: list[MigrationScript]) -> None:
    """Replace autogenerate's DDL for `<target>_outbox` / `<target>_inbox` by the shared operations."""
    tables = {f"{target}_outbox", f"{target}_inbox"}

    def others(container: OpContainer) -> list[MigrateOperation]:
        return [each for each in container.ops if getattr(each, "table_name", None) not in tables]

    for script in directives:
        upgrade, downgrade = script.upgrade_ops, script.downgrade_ops
        if isinstance(upgrade, UpgradeOps) and len(others(upgrade)) < len(upgrade.ops):
            upgrade.ops = [*others(upgrade), CreateEventTablesOp(target)]
        if isinstance(downgrade, DowngradeOps) and len(others(downgrade)) < len(downgrade.ops):
            downgrade.ops = [DropEventTablesOp(target), *others(downgrade)]
