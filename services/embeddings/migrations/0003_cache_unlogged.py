"""cache: an unlogged table

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 01:45:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Rows a crash may lose (the server empties an unlogged table when it recovers): the texts are
    # embedded again. No WAL for a thousand rows per request, and their commit needs no WAL flush.
    op.execute("ALTER TABLE embeddings_cache SET UNLOGGED")


def downgrade() -> None:
    op.execute("ALTER TABLE embeddings_cache SET LOGGED")
