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
