"""HNSW indexes over half-precision vectors with a denser graph (m 32, ef_construction 128)

Half the index (a 256-dimension collection of 100,000 vectors: 79 MB instead of 130, at m 16) for
the same neighbours found, and a denser graph finds at ef_search 200 more of them (95%) than the
old one did at 400 (92%): bench knowledge.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 18:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SIZES = (64, 128, 256, 384, 512, 768, 1024, 1536)


def _create(size: int, kind: str, **with_: int) -> None:
    op.create_index(
        f"embeddings_ix_item_hnsw_{size}",
        "embeddings_item",
        [sa.literal_column(f"(embedding::{kind}({size})) {kind}_cosine_ops")],
        unique=False,
        postgresql_using="hnsw",
        postgresql_with=with_,
        postgresql_where=sa.text(f"dimensions = {size}"),
    )


def upgrade() -> None:
    for size in SIZES:
        op.drop_index(f"embeddings_ix_item_hnsw_{size}", table_name="embeddings_item")
        _create(size, "halfvec", m=32, ef_construction=128)


def downgrade() -> None:
    for size in SIZES:
        op.drop_index(f"embeddings_ix_item_hnsw_{size}", table_name="embeddings_item")
        _create(size, "vector")
