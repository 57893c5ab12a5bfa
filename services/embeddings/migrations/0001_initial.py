"""initial tables

Revision ID: 0001
Revises:
Create Date: 2026-12-02 05:42:37.914454
"""

from collections.abc import Sequence

import pgvector.sqlalchemy
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from coder.shared.migrations.ops import create_event_tables, drop_event_tables

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # pgvector: shipped with the embedded PostgreSQL, installed on the server otherwise; the migration
    # role must be allowed to create it (or it exists already).
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    op.create_table(
        "embeddings_cache",
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("dimensions", sa.SmallInteger(), nullable=False),
        sa.Column("sha256", sa.LargeBinary(length=32), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=False),
        sa.Column("tokens", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint(
            "org_id", "model", "dimensions", "sha256", name=op.f("embeddings_pk_embeddings_cache")
        ),
    )
    op.create_table(
        "embeddings_collection",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.String(length=1000), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("dimensions", sa.SmallInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("embeddings_pk_embeddings_collection")),
        sa.UniqueConstraint("org_id", "name", name=op.f("embeddings_uq_embeddings_collection_org_id_name")),
    )
    op.create_table(
        "embeddings_item",
        sa.Column("collection_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("metadata", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("dimensions", sa.SmallInteger(), nullable=False),
        sa.Column("embedding", pgvector.sqlalchemy.vector.VECTOR(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["collection_id"],
            ["embeddings_collection.id"],
            name=op.f("embeddings_fk_embeddings_item_collection_id_embeddings_collection"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("collection_id", "id", name=op.f("embeddings_pk_embeddings_item")),
    )
    op.create_index(
        "embeddings_ix_item_hnsw_1024",
        "embeddings_item",
        [sa.literal_column("(embedding::vector(1024)) vector_cosine_ops")],
        unique=False,
        postgresql_using="hnsw",
        postgresql_where=sa.text("dimensions = 1024"),
    )
    op.create_index(
        "embeddings_ix_item_hnsw_128",
        "embeddings_item",
        [sa.literal_column("(embedding::vector(128)) vector_cosine_ops")],
        unique=False,
        postgresql_using="hnsw",
        postgresql_where=sa.text("dimensions = 128"),
    )
    op.create_index(
        "embeddings_ix_item_hnsw_1536",
        "embeddings_item",
        [sa.literal_column("(embedding::vector(1536)) vector_cosine_ops")],
        unique=False,
        postgresql_using="hnsw",
        postgresql_where=sa.text("dimensions = 1536"),
    )
    op.create_index(
        "embeddings_ix_item_hnsw_256",
        "embeddings_item",
        [sa.literal_column("(embedding::vector(256)) vector_cosine_ops")],
        unique=False,
        postgresql_using="hnsw",
        postgresql_where=sa.text("dimensions = 256"),
    )
    op.create_index(
        "embeddings_ix_item_hnsw_384",
        "embeddings_item",
        [sa.literal_column("(embedding::vector(384)) vector_cosine_ops")],
        unique=False,
        postgresql_using="hnsw",
        postgresql_where=sa.text("dimensions = 384"),
    )
    op.create_index(
        "embeddings_ix_item_hnsw_512",
        "embeddings_item",
        [sa.literal_column("(embedding::vector(512)) vector_cosine_ops")],
        unique=False,
        postgresql_using="hnsw",
        postgresql_where=sa.text("dimensions = 512"),
    )
    op.create_index(
        "embeddings_ix_item_hnsw_64",
        "embeddings_item",
        [sa.literal_column("(embedding::vector(64)) vector_cosine_ops")],
        unique=False,
        postgresql_using="hnsw",
        postgresql_where=sa.text("dimensions = 64"),
    )
    op.create_index(
        "embeddings_ix_item_hnsw_768",
        "embeddings_item",
        [sa.literal_column("(embedding::vector(768)) vector_cosine_ops")],
        unique=False,
        postgresql_using="hnsw",
        postgresql_where=sa.text("dimensions = 768"),
    )
    create_event_tables("embeddings")
    # ### end Alembic commands ###


def downgrade() -> None:
    # ### commands auto generated by Alembic - please adjust! ###
    drop_event_tables("embeddings")
    op.drop_index(
        "embeddings_ix_item_hnsw_768",
        table_name="embeddings_item",
        postgresql_using="hnsw",
        postgresql_where=sa.text("dimensions = 768"),
    )
    op.drop_index(
        "embeddings_ix_item_hnsw_64",
        table_name="embeddings_item",
        postgresql_using="hnsw",
        postgresql_where=sa.text("dimensions = 64"),
    )
    op.drop_index(
        "embeddings_ix_item_hnsw_512",
        table_name="embeddings_item",
        postgresql_using="hnsw",
        postgresql_where=sa.text("dimensions = 512"),
    )
    op.drop_index(
        "embeddings_ix_item_hnsw_384",
        table_name="embeddings_item",
        postgresql_using="hnsw",
        postgresql_where=sa.text("dimensions = 384"),
    )
    op.drop_index(
        "embeddings_ix_item_hnsw_256",
        table_name="embeddings_item",
        postgresql_using="hnsw",
        postgresql_where=sa.text("dimensions = 256"),
    )
    op.drop_index(
        "embeddings_ix_item_hnsw_1536",
        table_name="embeddings_item",
        postgresql_using="hnsw",
        postgresql_where=sa.text("dimensions = 1536"),
    )
    op.drop_index(
        "embeddings_ix_item_hnsw_128",
        table_name="embeddings_item",
        postgresql_using="hnsw",
        postgresql_where=sa.text("dimensions = 128"),
    )
    op.drop_index(
        "embeddings_ix_item_hnsw_1024",
        table_name="embeddings_item",
        postgresql_using="hnsw",
        postgresql_where=sa.text("dimensions = 1024"),
    )
    op.drop_table("embeddings_item")
    op.drop_table("embeddings_collection")
    op.drop_table("embeddings_cache")
    # ### end Alembic commands ###
