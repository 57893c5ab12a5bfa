"""cache eviction: when each cache row was last used

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 11:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "embeddings_cache",
        sa.Column(
            "last_used_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
    )
    op.create_index("embeddings_ix_cache_last_used_at", "embeddings_cache", ["last_used_at"])


def downgrade() -> None:
    op.drop_index("embeddings_ix_cache_last_used_at", table_name="embeddings_cache")
    op.drop_column("embeddings_cache", "last_used_at")
