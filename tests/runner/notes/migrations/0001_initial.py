"""notes: initial tables

Revision ID: 0001
Revises:
Create Date: 2026-12-02 04:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from coder.shared.migrations.ops import create_event_tables, drop_event_tables

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "notes_note",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("notes_pk_notes_note")),
    )
    op.create_index(
        op.f("notes_ix_notes_note_org_id_created_at_id"), "notes_note", ["org_id", "created_at", "id"]
    )
    create_event_tables("notes")


def downgrade() -> None:
    drop_event_tables("notes")
    op.drop_index(op.f("notes_ix_notes_note_org_id_created_at_id"), table_name="notes_note")
    op.drop_table("notes_note")
