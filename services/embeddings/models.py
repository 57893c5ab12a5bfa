import uuid
from datetime import datetime
from typing import Any

from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    ForeignKey,
    Index,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from coder.shared.db import TargetBase

# A collection's vectors have one of these sizes, each with its own HNSW index (pgvector indexes
# one size per index: the column holds any size, each index covers the rows of one). 2000 is the
# largest size an HNSW index over `vector` takes.
INDEXED_DIMENSIONS = (64, 128, 256, 384, 512, 768, 1024, 1536)


class Base(TargetBase, DeclarativeBase, target="embeddings"):
    """The embeddings target's tables; `Base.events` is its outbox and inbox."""


class Collection(Base):
    """A named set of vectors of one model and size, searched by cosine similarity."""

    __tablename__ = "embeddings_collection"
    __table_args__ = (UniqueConstraint("org_id", "name"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    org_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(String(1000), default="")
    model: Mapped[str] = mapped_column(String(200))
    dimensions: Mapped[int] = mapped_column(SmallInteger)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


def _hnsw(dimensions: int) -> Index:
    return Index(
        f"embeddings_ix_item_hnsw_{dimensions}",
        text(f"(embedding::vector({dimensions})) vector_cosine_ops"),
        postgresql_using="hnsw",
        postgresql_where=text(f"dimensions = {dimensions}"),
    )


class Item(Base):
    """One vector of a collection, with the text it came from (if any) and its metadata."""

    __tablename__ = "embeddings_item"
    __table_args__ = tuple(_hnsw(d) for d in INDEXED_DIMENSIONS)

    collection_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("embeddings_collection.id", ondelete="CASCADE"), primary_key=True
    )
    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64))
    text: Mapped[str | None] = mapped_column(Text)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSONB, default=dict)
    # The collection's size, copied so each row falls under the partial index of its size.
    dimensions: Mapped[int] = mapped_column(SmallInteger)
    embedding: Mapped[Any] = mapped_column(Vector())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class CacheEntry(Base):
    """A text's vector under one model and size, keyed by the text's SHA-256: the same text is never
    embedded twice. Per org, like every row: no org learns which texts another embedded.

    Bounded: `last_used_at` is when a request last wrote or read the row (refreshed at most every
    `service.TOUCH_AFTER`), and `service.prune_cache` drops the rows unused for longer than
    `cache_max_age_days` and, beyond `cache_max_rows`, the least recently used ones.

    Unlogged (migration 0003): no WAL is written for its rows, and a crash empties it (those texts
    are embedded again); nor is it copied to standbys, which start with an empty cache."""

    __tablename__ = "embeddings_cache"
    __table_args__ = (Index("embeddings_ix_cache_last_used_at", "last_used_at"), {"prefixes": ["UNLOGGED"]})

    org_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    dimensions: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    sha256: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    # Little-endian float32 bytes: never searched, so no `vector` (whose text form costs more to
    # write and read than the model takes to compute it).
    embedding: Mapped[bytes] = mapped_column(LargeBinary)
    tokens: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    last_used_at: Mapped[datetime] = mapped_column(server_default=func.now())
